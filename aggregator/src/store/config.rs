//! Embedded store configuration.
//!
//! Role: [`StoreConfig`] — the row-key layout settings (bucket size, salt buckets), which are
//! fixed for the life of a store file, and the retention, which may change at any open — and
//! its validation. Touches nothing else.

use super::error::StoreError;
use super::row_key::RowKeyLayout;
use crate::engine::Nanos;
use crate::engine::time::{MAX_DURATION, NANOS_PER_SEC};

/// How the embedded store lays out and keeps data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Raw rows are grouped by event time aligned down to this (default 60 s). Part of the key
    /// layout: a store refuses to open with a different value than it was created with.
    pub bucket_size: Nanos,
    /// Raw rows are spread over this many salts, 1..=255 (default 16). Part of the key layout.
    pub salt_buckets: u8,
    /// Raw rows, aggregate points and dead letters older than this are deleted by
    /// [`crate::store::EmbeddedStore::enforce_retention`] (default 7 days).
    pub retention: Nanos,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { bucket_size: 60 * NANOS_PER_SEC, salt_buckets: 16, retention: 7 * 86_400 * NANOS_PER_SEC }
    }
}

impl StoreConfig {
    /// The row-key layout, or why the settings are out of range.
    pub fn layout(&self) -> Result<RowKeyLayout, StoreError> {
        if !(0..=MAX_DURATION).contains(&self.retention) {
            return Err(StoreError::Config(format!("retention out of range: {} ns", self.retention)));
        }
        if self.bucket_size > MAX_DURATION {
            return Err(StoreError::Config(format!("bucket size out of range: {} ns", self.bucket_size)));
        }
        RowKeyLayout::new(self.bucket_size, self.salt_buckets).map_err(|e| StoreError::Config(e.to_string()))
    }
}
