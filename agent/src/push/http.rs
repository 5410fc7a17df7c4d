//! HTTP server: `POST /v1/records` (JSON lines push) and `GET /metrics` (Prometheus).
//!
//! Role: a small hyper HTTP/1.1 server. `POST /v1/records` parses the body (`jsonl.rs`),
//! enqueues every valid line **all or nothing** and answers
//! `200 {"accepted":N,"rejected":M,"errors":[{"line":k,"error":"..."}]}`; when the queue is full
//! it answers `503` with `Retry-After` and enqueues nothing (so a retry cannot double count),
//! `413` for bodies over `max_body_bytes`. `GET /metrics` serves the self-metrics and
//! `GET /healthz` answers `ok`; `GET /v1/plugins` lists every plugin instance's health as JSON
//! (`plugins/health.rs`). The same code serves the separate metrics listener with pushes
//! disabled. On shutdown it stops accepting connections and lets open requests finish (5 s at
//! most). Touches only its listening socket.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::jsonl::parse_body;
use super::shutting_down;
use crate::batcher::SubmitError;
use crate::ingress::Ingress;
use crate::metrics::PushApi;
use crate::record::now_timestamp;

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// How long open connections get to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What one HTTP server serves.
#[derive(Debug)]
pub struct HttpState {
    ingress: Arc<Ingress>,
    max_body_bytes: usize,
    accept_pushes: bool,
    shutdown: watch::Receiver<bool>,
}

impl HttpState {
    /// The push + metrics server (`accept_pushes`) or the metrics-only server.
    pub fn new(
        ingress: Arc<Ingress>,
        max_body_bytes: usize,
        accept_pushes: bool,
        shutdown: watch::Receiver<bool>,
    ) -> HttpState {
        HttpState { ingress, max_body_bytes, accept_pushes, shutdown }
    }
}

/// Serves HTTP on `listener` until shutdown; then lets open requests finish.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let st = state.clone();
                    let service = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            debug!("http connection ended with an error: {e}");
                        }
                    });
                }
                Err(e) => {
                    state.ingress.metrics().warn_limited("http_accept", &format!("http accept failed: {e}"));
                    // Back off briefly so that e.g. a full file-descriptor table does not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutting_down(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        warn!("http connections still open {DRAIN:?} after shutdown; closing them");
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", format!("{value}\n"))
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

fn unavailable(message: &str) -> Reply {
    let mut r = error_reply(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_SECONDS));
    r
}

async fn handle(st: &HttpState, req: Request<Incoming>) -> Reply {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::POST, "/v1/records") if st.accept_pushes => push(st, req).await,
        (_, "/v1/records") if st.accept_pushes => {
            let mut r = error_reply(StatusCode::METHOD_NOT_ALLOWED, "use POST /v1/records with JSON lines");
            r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            r
        }
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", st.ingress.metrics().render_prometheus())
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        (&Method::GET, "/v1/plugins") => {
            reply(StatusCode::OK, "application/json", st.ingress.metrics().plugins().render_json())
        }
        _ => error_reply(
            StatusCode::NOT_FOUND,
            if st.accept_pushes {
                "not found: this server answers POST /v1/records, GET /metrics, GET /v1/plugins and GET /healthz"
            } else {
                "not found: this server answers GET /metrics, GET /v1/plugins and GET /healthz"
            },
        ),
    }
}

async fn push(st: &HttpState, req: Request<Incoming>) -> Reply {
    if *st.shutdown.borrow() {
        return unavailable(
            "meshmon-agent is shutting down; nothing was accepted, send to another agent or retry later",
        );
    }
    let too_large = || {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {} bytes; nothing was accepted, send smaller parts", st.max_body_bytes),
        )
    };
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > st.max_body_bytes as u64) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), st.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(e) => return error_reply(StatusCode::BAD_REQUEST, &format!("cannot read the request body: {e}")),
    };
    let parsed = parse_body(&body, now_timestamp());
    drop(body);
    let accepted = parsed.records.len();
    match st.ingress.try_enqueue(PushApi::Http, parsed.records) {
        Ok(_) => {
            if let Some(first) = parsed.errors.first() {
                st.ingress.invalid(
                    parsed.rejected,
                    &format!("refused malformed HTTP lines (first: line {}: {})", first.line, first.error),
                );
            }
            json_reply(
                StatusCode::OK,
                &json!({ "accepted": accepted, "rejected": parsed.rejected, "errors": parsed.errors }),
            )
        }
        Err(e @ SubmitError::QueueFull { .. }) => {
            unavailable(&format!("{e}; nothing of this request was accepted, retry it after the Retry-After delay"))
        }
        Err(e @ SubmitError::TooLarge { .. }) => error_reply(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        Err(SubmitError::Closed) => {
            unavailable("meshmon-agent is shutting down; nothing was accepted, send to another agent or retry later")
        }
        Err(e @ SubmitError::Sequence(_)) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
