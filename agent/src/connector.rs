//! The TCP connection to the aggregator: no Nagle delay on our side, no delayed ACKs either.
//!
//! Role: [`QuickAckConnector`] opens the sender's connection (`TCP_NODELAY`) and, after every
//! read, re-arms `TCP_QUICKACK`, which also sends at once an ACK the kernel was holding back.
//! Why: the aggregator answers with small writes (acks, HTTP/2 `WINDOW_UPDATE`s). A server with
//! Nagle's algorithm on (tonic's `serve_with_incoming` does not set `TCP_NODELAY`) holds each
//! small write until the previous one is ACKed — and when the agent has used up the HTTP/2 send
//! window it has no data to piggyback the ACK on, so the kernel delays it by up to 40 ms. The
//! agent then idles 40 ms per flow-control window (1 MiB with hyper's defaults): about 25 MB/s,
//! ~280 k records/s however fast both ends are. Touches only the socket it opens.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::codegen::{BoxFuture, Service};

/// Connects to `http://host:port` URIs (port 80 by default) with `TCP_NODELAY` and quick ACKs.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuickAckConnector;

impl Service<Uri> for QuickAckConnector {
    type Response = TokioIo<QuickAckStream>;
    type Error = io::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host =
                uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let stream = TcpStream::connect((host, port))
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("tcp connect error: {e}")))?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(QuickAckStream(stream)))
        })
    }
}

/// A TCP stream that ACKs what it reads at once.
#[derive(Debug)]
pub struct QuickAckStream(TcpStream);

impl AsyncRead for QuickAckStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.0).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            quick_ack(&this.0);
        }
        read
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Sends a pending ACK now and leaves delayed-ACK ("pingpong") mode. Best effort: without it the
/// connection still works, only slower.
#[cfg(target_os = "linux")]
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// `TCP_QUICKACK` is Linux-only.
#[cfg(not(target_os = "linux"))]
fn quick_ack(_stream: &TcpStream) {}
