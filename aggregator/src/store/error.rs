//! Errors of the embedded store.
//!
//! Role: [`StoreError`], the one error type of the store's public API: database failures
//! (wrapping `redb::Error`), corrupt stored bytes, bad page tokens, configuration problems,
//! and failures of the HBase raw store when it is the configured one (an [`HbaseError`]
//! that is a plain store error — a corrupt row, a bad token — converts to that error, so
//! callers handle both stores alike). Touches nothing else.

use super::hbase::HbaseError;
use super::keybytes::KeyError;
use super::wire::CodecError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, a lock, a corrupt file, …).
    #[error("embedded store database error: {0}")]
    Database(#[from] redb::Error),
    /// A stored key did not decode.
    #[error("corrupt key in table {table}: {source}")]
    CorruptKey {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        source: KeyError,
    },
    /// A stored value did not decode.
    #[error("corrupt value in table {table}: {source}")]
    CorruptValue {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        source: CodecError,
    },
    /// A drill-down page token was not issued for this query.
    #[error("invalid page token: {0}")]
    InvalidPageToken(String),
    /// A setting is out of range.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The HBase raw store failed (connection, server error, retries exhausted, …).
    #[error("HBase raw store: {0}")]
    Hbase(Box<HbaseError>),
    /// A read was abandoned before it completed (its thread panicked or the server stops).
    #[error("store read did not complete: {0}")]
    Aborted(String),
    /// The store file was created with another row-key layout.
    #[error("store was created with {stored}, but is opened with {configured}; the row-key layout cannot change")]
    LayoutMismatch {
        /// The layout in the file.
        stored: String,
        /// The layout asked for.
        configured: String,
    },
}

impl StoreError {
    /// True when retrying later may succeed: the HBase raw store is unreachable or busy.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Hbase(e) if e.is_transient())
    }
}

impl From<HbaseError> for StoreError {
    fn from(e: HbaseError) -> StoreError {
        match e {
            HbaseError::Store(inner) => inner,
            other => StoreError::Hbase(Box::new(other)),
        }
    }
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Database(redb::Error::from(e))
            }
        }
    )*};
}

via_redb_error!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Maps a key decoding error to a [`StoreError`] naming the table.
pub(crate) fn corrupt_key(table: &'static str) -> impl Fn(KeyError) -> StoreError {
    move |source| StoreError::CorruptKey { table, source }
}

/// Maps a value decoding error to a [`StoreError`] naming the table.
pub(crate) fn corrupt_value(table: &'static str) -> impl Fn(CodecError) -> StoreError {
    move |source| StoreError::CorruptValue { table, source }
}
