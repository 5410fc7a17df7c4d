//! A scripted HTTP/1.1 server on loopback for the agent's HTTP-speaking plugin tests.
//!
//! Role: [`HttpStub::start`] listens on `127.0.0.1:0` and answers every request with what the
//! test's handler returns for it (status, headers, body — or never answering, to test
//! timeouts), one request per connection (`Connection: close`), and keeps every request it
//! received for the test to inspect. Stops (listener and open connections) when dropped.
//! Touches one loopback port only. Uses only Tokio's `net` readiness API, no extra features.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request accepted (head and body).
const MAX_REQUEST: usize = 1024 * 1024;

/// A request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// Body (by `Content-Length`).
    pub body: Vec<u8>,
}

impl StubRequest {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the stub answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Content-Length` and `Connection: close` are added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Never answer (the connection stays open until the stub is dropped).
    pub hang: bool,
}

impl StubResponse {
    /// `status` with `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> StubResponse {
        StubResponse { status, headers: Vec::new(), body: body.into(), hang: false }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> StubResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// An answer that never comes.
    pub fn hang() -> StubResponse {
        StubResponse { status: 0, headers: Vec::new(), body: Vec::new(), hang: true }
    }
}

type Handler = dyn Fn(&StubRequest) -> StubResponse + Send + Sync;

/// The running stub.
#[derive(Debug)]
pub struct HttpStub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<StubRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Method, path and headers of a request head.
type Head = (String, String, Vec<(String, String)>);

fn parse_head(head: &str) -> Option<Head> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    Some((method, path, headers))
}

async fn serve(stream: TcpStream, handler: Arc<Handler>, requests: Arc<Mutex<Vec<StubRequest>>>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST || !matches!(read_some(&stream, &mut buf).await, Ok(n) if n > 0) {
            return;
        }
    };
    let Some((method, path, headers)) = parse_head(&String::from_utf8_lossy(&buf[..head_end])) else { return };
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    while buf.len() < head_end + 4 + length {
        if !matches!(read_some(&stream, &mut buf).await, Ok(n) if n > 0) {
            return;
        }
    }
    let body = buf[head_end + 4..head_end + 4 + length].to_vec();
    let request = StubRequest { method, path, headers, body };
    let response = handler(&request);
    requests.lock().unwrap_or_else(PoisonError::into_inner).push(request.clone());
    if response.hang {
        // Holds the connection open (until the stub is dropped and this task aborted).
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let mut out = format!("HTTP/1.1 {} Stub\r\n", response.status);
    for (k, v) in &response.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = if request.method == "HEAD" { &[][..] } else { &response.body[..] };
    out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", response.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let _ = write_all(&stream, &bytes).await;
}

impl HttpStub {
    /// Starts the stub answering with `handler`.
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub async fn start(
        handler: impl Fn(&StubRequest) -> StubResponse + Send + Sync + 'static,
    ) -> std::io::Result<HttpStub> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let kept = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                connections.spawn(serve(stream, Arc::clone(&handler), Arc::clone(&kept)));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(HttpStub { addr, requests, task })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request answered (or held) so far.
    pub fn requests(&self) -> Vec<StubRequest> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
