//! A minimal Redis client: RESP2 commands and replies over one TCP connection.
//!
//! Role: [`Conn::open`] connects (bounded by `connect_timeout`) and authenticates with `AUTH`
//! when a password is configured; [`Conn::command`] sends one command and reads its reply,
//! bounded by `read_timeout` and by [`MAX_BULK`] / [`MAX_LINE`] bytes, so a hanging or hostile
//! server can neither block a collection nor make it allocate without limit. Only the reply
//! types the plugin needs are understood (simple string, error, integer, bulk string); anything
//! else is a protocol error. Touches one TCP connection.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::kafka::config::Secret;
use crate::plugins::{ErrorReason, PluginError};

/// Longest reply header line accepted (type byte, length or short text, CRLF).
pub const MAX_LINE: usize = 64 * 1024;
/// Largest bulk reply accepted (`INFO` is a few KiB; thousands of databases stay far below).
pub const MAX_BULK: usize = 4 * 1024 * 1024;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$n` followed by `n` bytes; `None` for the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
}

/// Whether an error reply is about credentials or permissions.
fn is_auth_error(message: &str) -> bool {
    let code = message.split_whitespace().next().unwrap_or_default();
    matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
        || message.contains("invalid password")
        || message.contains("invalid username-password")
        || message.starts_with("ERR AUTH")
}

/// The [`PluginError`] for an error reply to `command`.
pub fn error_reply(command: &str, message: &str) -> PluginError {
    let reason = if command.eq_ignore_ascii_case("AUTH") || is_auth_error(message) {
        ErrorReason::Auth
    } else {
        ErrorReason::Protocol
    };
    PluginError::new(reason, format!("{command} refused: {message}"))
}

/// Encodes `args` as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply from `r`.
///
/// # Errors
/// [`PluginError`]: `unreachable` when the connection ends, `protocol` on a malformed or
/// oversized reply, `io` on other read errors.
pub async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, PluginError> {
    let line = read_line(r).await?;
    let (kind, rest) = line.split_first().ok_or_else(|| PluginError::protocol("empty reply line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Simple(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => {
            let n = std::str::from_utf8(rest).ok().and_then(|s| s.parse::<i64>().ok());
            n.map(Reply::Integer).ok_or_else(|| PluginError::protocol(format!("bad integer reply {:?}", text())))
        }
        b'$' => {
            let n = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| PluginError::protocol(format!("bad bulk length {:?}", text())))?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > MAX_BULK {
                return Err(PluginError::protocol(format!(
                    "bulk reply of {n} bytes exceeds the {MAX_BULK}-byte limit"
                )));
            }
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf).await.map_err(read_error)?;
            if !buf.ends_with(b"\r\n") {
                return Err(PluginError::protocol("bulk reply not terminated by CRLF"));
            }
            buf.truncate(n);
            Ok(Reply::Bulk(Some(buf)))
        }
        other => Err(PluginError::protocol(format!("unexpected reply type {:?}", char::from(*other)))),
    }
}

/// One CRLF-terminated line without the CRLF, at most [`MAX_LINE`] bytes.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, PluginError> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
    let n = (&mut *r).take(limit).read_until(b'\n', &mut line).await.map_err(read_error)?;
    if n == 0 {
        return Err(PluginError::unreachable("connection closed by the server"));
    }
    if !line.ends_with(b"\r\n") {
        return if line.len() >= MAX_LINE {
            Err(PluginError::protocol(format!("reply line longer than {MAX_LINE} bytes")))
        } else {
            Err(PluginError::unreachable("connection closed by the server in the middle of a reply"))
        };
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_error(e: std::io::Error) -> PluginError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => PluginError::unreachable(format!("connection lost: {e}")),
        _ => PluginError::io(format!("reading from the server: {e}")),
    }
}

/// An open, authenticated connection.
#[derive(Debug)]
pub struct Conn {
    stream: BufReader<TcpStream>,
    read_timeout: Duration,
}

impl Conn {
    /// Connects to `address` and authenticates when `password` is set.
    ///
    /// # Errors
    /// [`PluginError`]: `unreachable` when no connection can be made, `auth` when the
    /// credentials are refused, `timeout` when the server does not answer within
    /// `read_timeout`.
    pub async fn open(
        address: &str,
        username: Option<&str>,
        password: Option<&Secret>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Conn, PluginError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(PluginError::unreachable(format!("cannot connect to {address}: {e}"))),
            Err(_) => {
                return Err(PluginError::unreachable(format!("no connection to {address} within {connect_timeout:?}")));
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn { stream: BufReader::with_capacity(16 * 1024, stream), read_timeout };
        if let Some(password) = password {
            let pw = password.expose().as_bytes();
            let reply = match username {
                Some(user) => conn.command(&[b"AUTH", user.as_bytes(), pw]).await?,
                None => conn.command(&[b"AUTH", pw]).await?,
            };
            match reply {
                Reply::Simple(_) => {}
                Reply::Error(e) => return Err(error_reply("AUTH", &e)),
                other => return Err(PluginError::protocol(format!("unexpected reply to AUTH: {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply (an error reply is a [`Reply::Error`], not an
    /// `Err`).
    ///
    /// # Errors
    /// [`PluginError`]: `timeout` when no complete reply came within `read_timeout`, else as
    /// [`read_reply`].
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, PluginError> {
        let request = encode(args);
        let read_timeout = self.read_timeout;
        let exchange = async {
            self.stream.get_mut().write_all(&request).await.map_err(read_error)?;
            read_reply(&mut self.stream).await
        };
        match tokio::time::timeout(read_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::new(
                ErrorReason::Timeout,
                format!(
                    "no reply to {} within {:?}",
                    String::from_utf8_lossy(args.first().copied().unwrap_or_default()),
                    read_timeout
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, PluginError> {
        let mut r = BufReader::new(bytes);
        read_reply(&mut r).await
    }

    #[tokio::test]
    async fn replies_parse_and_bad_ones_are_protocol_errors() {
        assert_eq!(parse(b"+OK\r\n").await.unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse(b"-WRONGPASS no\r\n").await.unwrap(), Reply::Error("WRONGPASS no".into()));
        assert_eq!(parse(b":-7\r\n").await.unwrap(), Reply::Integer(-7));
        assert_eq!(parse(b"$5\r\nab\r\nc\r\n").await.unwrap(), Reply::Bulk(Some(b"ab\r\nc".to_vec())));
        assert_eq!(parse(b"$-1\r\n").await.unwrap(), Reply::Bulk(None));
        for bad in [&b"*1\r\n:1\r\n"[..], b"$x\r\n", b"$3\r\nabcde", b":1.5\r\n", b"\r\n"] {
            assert_eq!(parse(bad).await.unwrap_err().reason, ErrorReason::Protocol, "{bad:?}");
        }
        let huge = format!("${}\r\n", MAX_BULK + 1);
        assert_eq!(parse(huge.as_bytes()).await.unwrap_err().reason, ErrorReason::Protocol);
        let long = vec![b'+'; MAX_LINE + 10];
        assert_eq!(parse(&long).await.unwrap_err().reason, ErrorReason::Protocol);
        assert_eq!(parse(b"").await.unwrap_err().reason, ErrorReason::Unreachable);
        assert_eq!(parse(b"$10\r\nabc").await.unwrap_err().reason, ErrorReason::Unreachable);
        assert_eq!(parse(b"+OK").await.unwrap_err().reason, ErrorReason::Unreachable);
    }

    #[test]
    fn commands_encode_as_bulk_arrays_and_auth_errors_are_recognised() {
        assert_eq!(encode(&[b"AUTH", b"u", b"p w"]), b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n");
        assert_eq!(error_reply("INFO", "NOAUTH Authentication required.").reason, ErrorReason::Auth);
        assert_eq!(error_reply("INFO", "NOPERM this user has no permissions").reason, ErrorReason::Auth);
        assert_eq!(error_reply("AUTH", "ERR whatever").reason, ErrorReason::Auth);
        assert_eq!(error_reply("INFO", "ERR unknown command").reason, ErrorReason::Protocol);
    }
}
