//! Errors of the HBase raw store.
//!
//! Role: [`HbaseError`] — connection failures, errors the Thrift server reports (`IOError`,
//! `IllegalArgument`, `AlreadyExists`: the server's message is kept), transport and protocol
//! failures, malformed responses, corrupt stored rows and bad page tokens (as the embedded
//! store reports them, [`StoreError`]), a table that is missing or laid out differently,
//! writes that failed after every retry, and configuration problems; and which of them are
//! transient (worth a retry). Touches nothing else.

use hbase_thrift::hbase::{AlreadyExists, IOError, IllegalArgument};

use crate::store::StoreError;

/// Why an HBase store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HbaseError {
    /// The TCP connection to the Thrift server could not be made.
    #[error("cannot connect to the HBase Thrift server at {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server answered the call with an error (HBase `IOError`, `IllegalArgument` or
    /// `AlreadyExists`).
    #[error("HBase Thrift server failed {op}: {kind}: {message}")]
    Server {
        /// The Thrift1 call, e.g. `mutateRows`.
        op: &'static str,
        /// The exception type the server sent.
        kind: &'static str,
        /// The server's message.
        message: String,
        /// The server's retry hint (`IOError.canRetry`).
        can_retry: bool,
    },
    /// The call failed in transport or protocol (connection lost, timeout, garbled reply).
    /// The connection is dropped and re-opened by the next call.
    #[error("HBase Thrift call {op} failed: {source}")]
    Thrift {
        /// The Thrift1 call.
        op: &'static str,
        /// The Thrift error.
        source: thrift::Error,
    },
    /// The server's reply broke the protocol contract (a scanned row without the value column,
    /// out of order or outside the scanned range).
    #[error("malformed HBase {op} response: {why}")]
    Malformed {
        /// The Thrift1 call.
        op: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A stored row did not decode, or a page token was not issued for this drill-down.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting is out of range.
    #[error("invalid HBase store configuration: {0}")]
    Config(String),
    /// The raw-record table is missing (and may not be created), lacks the column family, or
    /// was written with another row-key layout.
    #[error("HBase table {table}: {why}")]
    Table {
        /// The table.
        table: String,
        /// What is wrong, and what to do.
        why: String,
    },
    /// A write failed transiently on every attempt.
    #[error("HBase {op} failed {attempts} times, giving up: {last}")]
    Exhausted {
        /// The Thrift1 call.
        op: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<HbaseError>,
    },
    /// The store's actors are gone (shutting down).
    #[error("HBase store actor unavailable: {0}")]
    Stopped(String),
}

impl HbaseError {
    /// Classifies a failed Thrift call.
    pub(crate) fn call(op: &'static str, e: thrift::Error) -> HbaseError {
        if let thrift::Error::User(user) = &e {
            if let Some(io) = user.downcast_ref::<IOError>() {
                return HbaseError::Server {
                    op,
                    kind: "IOError",
                    message: io.message.clone().unwrap_or_default(),
                    can_retry: io.can_retry.unwrap_or(false),
                };
            }
            if let Some(ia) = user.downcast_ref::<IllegalArgument>() {
                let message = ia.message.clone().unwrap_or_default();
                return HbaseError::Server { op, kind: "IllegalArgument", message, can_retry: false };
            }
            if let Some(ae) = user.downcast_ref::<AlreadyExists>() {
                let message = ae.message.clone().unwrap_or_default();
                return HbaseError::Server { op, kind: "AlreadyExists", message, can_retry: false };
            }
        }
        HbaseError::Thrift { op, source: e }
    }

    /// True when the failure may pass by itself, so the same call is worth trying again: the
    /// server could not be reached, the connection broke or timed out, or the server sent an
    /// `IOError` marked retryable (e.g. a region in transition).
    pub fn is_transient(&self) -> bool {
        match self {
            HbaseError::Connect { .. } => true,
            HbaseError::Thrift { source, .. } => {
                matches!(source, thrift::Error::Transport(_) | thrift::Error::Protocol(_))
            }
            HbaseError::Server { can_retry, .. } => *can_retry,
            HbaseError::Exhausted { .. }
            | HbaseError::Malformed { .. }
            | HbaseError::Store(_)
            | HbaseError::Config(_)
            | HbaseError::Table { .. }
            | HbaseError::Stopped(_) => false,
        }
    }

    /// True when the connection can no longer be trusted (the stream may be mid-message) and
    /// must be re-opened before the next call.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(self, HbaseError::Thrift { .. } | HbaseError::Malformed { .. })
    }
}
