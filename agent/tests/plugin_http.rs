//! The http plugin against a real HTTP server started by the test (`meshmon_tests::http_stub`).
//!
//! Role: builds the plugin through `BuildPlugin::build` and checks what `collect` reports for
//! answers the stub scripts: body match and mismatch, unexpected and expected statuses,
//! redirects followed or not, basic and bearer authentication from secret files and the
//! environment, HEAD and POST with headers, the body bound, a hanging server, and a closed port
//! (all values, never a plugin failure). The stub stops when dropped, also on failure. Touches
//! loopback sockets and a temporary directory only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PluginCtx as Ctx, plugin_ctx as ctx};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use meshmon_agent::plugins::http::{HttpAuth, HttpSettings, METRIC_NAMES, Method, base64};
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, PluginSettings, SecretRef};
use meshmon_agent::record::double_value;
use meshmon_proto::v1::Record;
use meshmon_tests::http_stub::{HttpStub, StubRequest, StubResponse};

const PAGE: &str = "<html>shop status=green</html>";

fn route(req: &StubRequest) -> StubResponse {
    let path = req.path.as_str();
    match path {
        "/ok" => StubResponse::new(200, PAGE),
        "/fail" => StubResponse::new(503, "down for maintenance"),
        "/moved" => StubResponse::new(302, "").header("Location", "/ok"),
        "/loop" => StubResponse::new(302, "").header("Location", "/loop"),
        "/big" => {
            let mut body = "x".repeat(100_000);
            body.push_str("needle");
            StubResponse::new(200, body)
        }
        "/slow" => StubResponse::hang(),
        "/echo" => StubResponse::new(
            200,
            format!(
                "{} {} x-probe={}",
                req.method,
                String::from_utf8_lossy(&req.body),
                req.header("x-probe").unwrap_or("-")
            ),
        ),
        "/basic" => {
            let expected = format!("Basic {}", base64(b"monitor:s3cret"));
            if req.header("authorization") == Some(expected.as_str()) {
                StubResponse::new(200, "welcome")
            } else {
                StubResponse::new(401, "who are you").header("WWW-Authenticate", "Basic realm=\"x\"")
            }
        }
        "/env-basic" => {
            let home = std::env::var("HOME").unwrap_or_default();
            let expected = format!("Basic {}", base64(format!("monitor:{home}").as_bytes()));
            StubResponse::new(if req.header("authorization") == Some(expected.as_str()) { 200 } else { 401 }, "")
        }
        "/bearer" => {
            let ok = req.header("authorization") == Some("Bearer tok-123");
            StubResponse::new(if ok { 200 } else { 403 }, "")
        }
        _ => StubResponse::new(404, "not found"),
    }
}

/// metric → (value, tags) of one collection.
async fn probe(c: &Ctx, settings: HttpSettings) -> BTreeMap<String, (f64, BTreeMap<String, String>)> {
    settings.validate("plugins.http[0]").expect("valid settings");
    let mut plugin = settings.build("web", &c.ctx).expect("builds");
    let records: Vec<Record> = plugin.collect(SystemTime::now()).await.expect("a probe never fails the plugin");
    let known: std::collections::BTreeSet<&str> = METRIC_NAMES.iter().copied().collect();
    records
        .into_iter()
        .map(|r| {
            assert!(known.contains(r.metric.as_str()), "undocumented {}", r.metric);
            assert_eq!(r.tags.get("url"), Some(&settings.url), "url tag");
            let tags = r.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (r.metric.clone(), (double_value(&r).expect("double"), tags))
        })
        .collect()
}

fn get(url: String) -> HttpSettings {
    HttpSettings { url, ..HttpSettings::default() }
}

fn error_of(v: &BTreeMap<String, (f64, BTreeMap<String, String>)>) -> Option<&str> {
    v["http.up"].1.get("error").map(String::as_str)
}

#[tokio::test]
async fn up_status_latency_size_and_body_match() {
    let c = ctx();
    let stub = HttpStub::start(route).await.expect("stub");
    let v = probe(&c, HttpSettings { body_match: Some("status=(green|yellow)".into()), ..get(stub.url("/ok")) }).await;
    assert_eq!(v["http.up"].0, 1.0);
    assert_eq!(error_of(&v), None);
    assert_eq!(v["http.status_code"].0, 200.0);
    assert_eq!(v["http.body_match"].0, 1.0);
    assert_eq!(v["http.content_length_bytes"].0, PAGE.len() as f64);
    assert!(v["http.response_seconds"].0 > 0.0);

    let v = probe(&c, HttpSettings { body_match: Some("status=red".into()), ..get(stub.url("/ok")) }).await;
    assert_eq!((v["http.up"].0, error_of(&v)), (0.0, Some("body_match")));
    assert_eq!(v["http.body_match"].0, 0.0);
    assert_eq!(v["http.status_code"].0, 200.0);

    // Without body_match there is no http.body_match record.
    let v = probe(&c, get(stub.url("/ok"))).await;
    assert!(!v.contains_key("http.body_match"));
    assert_eq!(stub.requests().len(), 3);
    assert!(stub.requests().iter().all(|r| r.header("user-agent").is_some_and(|u| u.starts_with("meshmon-agent/"))));
}

#[tokio::test]
async fn statuses_redirects_and_methods() {
    let c = ctx();
    let stub = HttpStub::start(route).await.expect("stub");
    let v = probe(&c, get(stub.url("/fail"))).await;
    assert_eq!((v["http.up"].0, error_of(&v)), (0.0, Some("status")));
    assert_eq!(v["http.status_code"].0, 503.0);
    let v = probe(&c, HttpSettings { expected_status: vec!["503".into()], ..get(stub.url("/fail")) }).await;
    assert_eq!(v["http.up"].0, 1.0, "503 expected");
    let v = probe(&c, get(stub.url("/nowhere"))).await;
    assert_eq!((v["http.up"].0, v["http.status_code"].0), (0.0, 404.0));
    let v = probe(&c, HttpSettings { expected_status: vec!["4xx".into()], ..get(stub.url("/nowhere")) }).await;
    assert_eq!(v["http.up"].0, 1.0, "class 4xx");

    let v = probe(&c, get(stub.url("/moved"))).await;
    assert_eq!((v["http.up"].0, v["http.status_code"].0), (1.0, 200.0), "redirect followed");
    let v = probe(&c, HttpSettings { follow_redirects: false, ..get(stub.url("/moved")) }).await;
    assert_eq!((v["http.up"].0, v["http.status_code"].0), (1.0, 302.0), "3xx is up by default");
    let v = probe(
        &c,
        HttpSettings { follow_redirects: false, expected_status: vec!["200".into()], ..get(stub.url("/moved")) },
    )
    .await;
    assert_eq!((v["http.up"].0, error_of(&v)), (0.0, Some("status")));
    let v = probe(&c, get(stub.url("/loop"))).await;
    assert_eq!((v["http.up"].0, error_of(&v)), (0.0, Some("redirect")));

    let v = probe(&c, HttpSettings { method: Method::Head, ..get(stub.url("/ok")) }).await;
    assert_eq!((v["http.up"].0, v["http.status_code"].0), (1.0, 200.0));
    assert_eq!(v["http.content_length_bytes"].0, PAGE.len() as f64, "from the header");
    let v = probe(
        &c,
        HttpSettings {
            method: Method::Post,
            body: Some("ping=1".into()),
            headers: [("X-Probe".to_owned(), "yes".to_owned())].into(),
            body_match: Some("^POST ping=1 x-probe=yes$".into()),
            ..get(stub.url("/echo"))
        },
    )
    .await;
    assert_eq!(v["http.body_match"].0, 1.0, "method, body and header arrived");
    let methods: Vec<String> = stub.requests().iter().map(|r| r.method.clone()).collect();
    assert!(methods.contains(&"HEAD".to_owned()) && methods.contains(&"POST".to_owned()));
}

#[tokio::test]
async fn basic_and_bearer_authentication_from_secrets() {
    let c = ctx();
    let stub = HttpStub::start(route).await.expect("stub");
    let pw = c.dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("write");
    let basic = |file: std::path::PathBuf| HttpAuth {
        username: Some("monitor".into()),
        password: SecretRef { env: None, file: Some(file) },
        ..HttpAuth::default()
    };
    let v = probe(&c, HttpSettings { auth: basic(pw.clone()), ..get(stub.url("/basic")) }).await;
    assert_eq!((v["http.up"].0, v["http.status_code"].0), (1.0, 200.0));
    let wrong = c.dir.path().join("wrong");
    std::fs::write(&wrong, "guess").expect("write");
    let v = probe(&c, HttpSettings { auth: basic(wrong), ..get(stub.url("/basic")) }).await;
    assert_eq!((v["http.up"].0, v["http.status_code"].0, error_of(&v)), (0.0, 401.0, Some("status")));
    let v = probe(&c, get(stub.url("/basic"))).await;
    assert_eq!(v["http.status_code"].0, 401.0, "no credentials");

    // A secret from the environment (HOME is set for every test run).
    let env = HttpAuth {
        username: Some("monitor".into()),
        password: SecretRef { env: Some("HOME".into()), file: None },
        ..HttpAuth::default()
    };
    let v = probe(&c, HttpSettings { auth: env, ..get(stub.url("/env-basic")) }).await;
    assert_eq!(v["http.status_code"].0, 200.0);

    let token = c.dir.path().join("token");
    std::fs::write(&token, "tok-123\n").expect("write");
    let bearer = HttpAuth { bearer_token: SecretRef { env: None, file: Some(token) }, ..HttpAuth::default() };
    let v = probe(&c, HttpSettings { auth: bearer, ..get(stub.url("/bearer")) }).await;
    assert_eq!(v["http.status_code"].0, 200.0);

    // An unreadable secret stops the build, naming the problem.
    let missing = HttpAuth {
        bearer_token: SecretRef { env: None, file: Some(c.dir.path().join("nope")) },
        ..HttpAuth::default()
    };
    let Err(e) = HttpSettings { auth: missing, ..get(stub.url("/bearer")) }.build("web", &c.ctx) else {
        panic!("built without its secret");
    };
    assert_eq!(e.reason, ErrorReason::Io);
    assert!(e.message.contains("nope"), "{}", e.message);
}

#[tokio::test]
async fn body_bound_hanging_server_and_closed_port_are_values() {
    let c = ctx();
    let stub = HttpStub::start(route).await.expect("stub");
    // Only max_body_bytes are read: the needle at the end is not seen; the size is the header's.
    let v =
        probe(&c, HttpSettings { body_match: Some("needle".into()), max_body_bytes: 1000, ..get(stub.url("/big")) })
            .await;
    assert_eq!((v["http.up"].0, error_of(&v), v["http.body_match"].0), (0.0, Some("body_match"), 0.0));
    assert_eq!(v["http.content_length_bytes"].0, 100_006.0);
    let v = probe(&c, HttpSettings { body_match: Some("needle".into()), ..get(stub.url("/big")) }).await;
    assert_eq!(v["http.up"].0, 1.0, "the whole body fits the default bound");

    let v = probe(&c, HttpSettings { request_timeout: Duration::from_millis(300), ..get(stub.url("/slow")) }).await;
    assert_eq!((v["http.up"].0, error_of(&v)), (0.0, Some("timeout")));
    assert!(!v.contains_key("http.status_code"));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let v = probe(&c, get(format!("http://{closed}/health"))).await;
    assert_eq!((v["http.up"].0, error_of(&v)), (0.0, Some("connect")));
    assert_eq!(v.len(), 1, "only http.up when nothing answered");
}
