//! Checkpoints: window state and source offsets, saved together, atomically.
//!
//! Role: a [`Checkpoint`] is one consistent cut of the pipeline — the engine snapshot (gate:
//! dedup and watermarks; shards: window state) taken after exactly the input messages before
//! `offsets` were processed, and after every output they caused was durably written. The
//! [`CheckpointStore`] keeps the latest one in a redb file, replaced in one transaction, so a
//! crash at any moment leaves either the old or the new checkpoint, never a mix. On start the
//! pipeline restores the engine from it and the source seeks to its offsets; the replay from
//! there rewrites identical keyed values (exactly-once results without broker transactions).
//! Touches the checkpoint file only.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::engine::Nanos;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoint");
const META: &str = "meta";
const ENGINE: &str = "engine";

/// The next input offset of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// Partition.
    pub partition: i32,
    /// The first offset not yet processed.
    pub offset: i64,
}

/// Everything but the engine state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Increases by one per checkpoint written.
    pub id: u64,
    /// Wall-clock time it was taken (ns since the epoch).
    pub created: Nanos,
    /// The input topic the offsets belong to.
    pub topic: String,
    /// Next offset per partition.
    pub offsets: Vec<PartitionOffset>,
    /// The global watermark at the cut.
    pub watermark: Nanos,
}

/// A consistent cut: metadata plus the encoded engine snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offsets and bookkeeping.
    pub meta: CheckpointMeta,
    /// `EngineSnapshot::encode` output.
    pub engine: Vec<u8>,
}

/// The checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// redb failed.
    #[error("checkpoint file {path}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The stored metadata is not readable.
    #[error("checkpoint file {path}: unreadable metadata: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The latest checkpoint, in a redb file.
#[derive(Debug)]
pub struct CheckpointStore {
    db: Database,
    path: PathBuf,
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoint file at `path`.
    pub fn open(path: &Path) -> Result<CheckpointStore, CheckpointError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
        }
        let db = Database::create(path).map_err(|e| err(path, e))?;
        Ok(CheckpointStore { db, path: path.to_owned() })
    }

    /// The latest checkpoint, if one was ever written.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let txn = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&self.path, e)),
        };
        let meta = table.get(META).map_err(|e| err(&self.path, e))?;
        let engine = table.get(ENGINE).map_err(|e| err(&self.path, e))?;
        let (Some(meta), Some(engine)) = (meta, engine) else { return Ok(None) };
        let meta: CheckpointMeta = serde_json::from_slice(meta.value())
            .map_err(|e| CheckpointError::Corrupt { path: self.path.clone(), message: e.to_string() })?;
        Ok(Some(Checkpoint { meta, engine: engine.value().to_vec() }))
    }

    /// Replaces the stored checkpoint with `checkpoint` in one durable transaction; returns
    /// the bytes written.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<usize, CheckpointError> {
        let meta = serde_json::to_vec(&checkpoint.meta)
            .map_err(|e| CheckpointError::Corrupt { path: self.path.clone(), message: e.to_string() })?;
        let txn = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| err(&self.path, e))?;
            table.insert(META, meta.as_slice()).map_err(|e| err(&self.path, e))?;
            table.insert(ENGINE, checkpoint.engine.as_slice()).map_err(|e| err(&self.path, e))?;
        }
        txn.commit().map_err(|e| err(&self.path, e))?;
        Ok(meta.len() + checkpoint.engine.len())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Store { path: path.to_owned(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn saves_replaces_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/checkpoint.redb");
        let store = CheckpointStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut c = Checkpoint {
            meta: CheckpointMeta {
                id: 1,
                created: 5,
                topic: "t".into(),
                offsets: vec![PartitionOffset { partition: 0, offset: 7 }],
                watermark: 3,
            },
            engine: vec![1, 2, 3],
        };
        store.save(&c).unwrap();
        c.meta.id = 2;
        c.engine = vec![9; 1000];
        store.save(&c).unwrap();
        drop(store);
        let reopened = CheckpointStore::open(&path).unwrap();
        assert_eq!(reopened.load().unwrap(), Some(c));
    }
}
