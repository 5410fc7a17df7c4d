//! Consistent, logical snapshots of the window engine, for exactly-once checkpoints.
//!
//! Role: a runtime that checkpoints engine state together with its source offsets, and after a
//! crash restores it and replays from those offsets, gets the same results as if it had never
//! stopped — the engine is deterministic and a snapshot holds everything its future outputs
//! depend on. Snapshots are *logical*: series are named by their [`SeriesKey`] (metric and
//! dimension text) and agents by their id text, never by the dense ids and interned codes the
//! engine uses internally (those are rebuilt on restore, and no result depends on them). So a
//! snapshot does not depend on the shard count: [`split_shards`] re-routes its series by
//! [`shard_of`] for any number of shards.
//!
//! This module defines the snapshot types ([`EngineSnapshot`] = [`GateSnapshot`] + one
//! [`ShardSnapshot`] per shard), the configuration [`ConfigFingerprint`] a snapshot must be
//! restored under, the errors ([`RestoreError`], [`SnapshotError`]) and the byte encoding
//! (`postcard` behind a header with magic bytes, a format version, the payload length and a
//! CRC-32, so a truncated or corrupt snapshot is a clear error, never a panic). Taking and
//! restoring the parts is done by `snapshot`/`restore` methods next to the state they touch:
//! [`IngestGate`](super::IngestGate) (deduper, watermark tracker), [`ShardEngine`](super::ShardEngine)
//! (series registry, agent table, pane or session state, series reaper) and
//! [`WindowEngine`](super::WindowEngine). Touches no other state; no I/O.
//!
//! What is not persisted (all of it rebuilt or irrelevant to any output): series ids, interned
//! string and tuple ids, agent indices, the free-id list, reaper entries and timer-heap entries
//! that no longer name a live series, scratch buffers and per-batch caches. Counters are kept as
//! totals; after a restore into another shard count, the shard counters are summed into shard 0.
//! The watermark inputs' `last_active` is stored but, on restore, replaced by the restore time
//! (see `docs/SEMANTICS.md`, "Checkpoints and restore").

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{ConfigError, DimensionSpec, EngineConfig, TagDimensions};
use super::counters::EngineCounters;
use super::dimension::SeriesKey;
use super::record::Value;
use super::shard_of;
use super::stats::Totals;
use super::time::{DurationText, MAX_DURATION, MAX_EVENT_TIME, Nanos};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Magic bytes that open an encoded snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"MMENGSNP";

/// Header: magic, format version (u32 LE), payload length (u64 LE), CRC-32 of the payload (u32 LE).
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// Largest magnitude of a time a restored window state may hold: valid event times plus one
/// window or gap. Sums of such a time and a few configured durations never overflow.
const STATE_TIME_LIMIT: Nanos = MAX_EVENT_TIME + 2 * MAX_DURATION;

/// The whole engine's state between two batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// Format version ([`SNAPSHOT_VERSION`]).
    pub version: u32,
    /// Dedup, watermark tracking and gate counters.
    pub gate: GateSnapshot,
    /// One per shard of the engine that took it (any number can be restored from them).
    pub shards: Vec<ShardSnapshot>,
}

/// The state of an [`IngestGate`](super::IngestGate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateSnapshot {
    /// The latest processing time the gate had seen.
    pub now: Nanos,
    /// Deduper state per agent, sorted by agent.
    pub agents: Vec<AgentSequences>,
    /// Sequence numbers the deduper gave up on.
    pub gaps_abandoned: u64,
    /// Watermark tracker state per input, sorted by input.
    pub inputs: Vec<InputSnapshot>,
    /// The global watermark.
    pub watermark: Nanos,
    /// Batches, duplicates, records in and invalid records.
    #[serde(with = "counters_serde")]
    pub counters: EngineCounters,
}

/// The batch sequences the deduper remembers for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSequences {
    /// The agent id.
    pub agent: String,
    /// Every sequence in `1..=contiguous` was delivered.
    pub contiguous: u64,
    /// Sequences delivered above `contiguous + 1`, ascending.
    pub above: Vec<u64>,
}

/// The watermark tracker's state of one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSnapshot {
    /// The input (partition or connection) name.
    pub input: String,
    /// Greatest valid event time seen (`WATERMARK_NONE` before the first).
    pub max_event: Nanos,
    /// Processing time of its latest batch. Informational: a restore resets it to the
    /// restore time (a restart counts as activity).
    pub last_active: Nanos,
}

/// What a snapshot's window state was built under; a restore refuses a configuration that
/// differs (the state would mean something else). Human-readable so a mismatch can be named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFingerprint {
    /// The window spec, as text (`tumbling:10s+0`, `sliding:1m/10s`, `session:30s`).
    pub window: String,
    /// The allowed lateness in nanoseconds.
    pub allowed_lateness: Nanos,
    /// The dimension spec, as canonical text.
    pub dimensions: String,
}

impl ConfigFingerprint {
    /// The fingerprint of `config`.
    pub fn of(config: &EngineConfig) -> ConfigFingerprint {
        ConfigFingerprint {
            window: config.window.to_string(),
            allowed_lateness: config.allowed_lateness,
            dimensions: dimensions_text(&config.dimensions),
        }
    }

    /// The first setting that differs from `other`, as (name, this value, other value).
    fn difference(&self, other: &ConfigFingerprint) -> Option<(&'static str, String, String)> {
        if self.window != other.window {
            return Some(("window", self.window.clone(), other.window.clone()));
        }
        if self.allowed_lateness != other.allowed_lateness {
            let text = |n: Nanos| DurationText(n).to_string();
            return Some(("allowed lateness", text(self.allowed_lateness), text(other.allowed_lateness)));
        }
        if self.dimensions != other.dimensions {
            return Some(("dimensions", self.dimensions.clone(), other.dimensions.clone()));
        }
        None
    }

    /// `Ok` when a snapshot taken under `self` may be restored under `config` (fingerprint
    /// `current`).
    pub(crate) fn check(&self, current: &ConfigFingerprint) -> Result<(), RestoreError> {
        match self.difference(current) {
            None => Ok(()),
            Some((setting, snapshot, config)) => Err(RestoreError::ConfigMismatch { setting, snapshot, config }),
        }
    }
}

fn dimensions_text(spec: &DimensionSpec) -> String {
    let tags = match &spec.tags {
        TagDimensions::All => "all".to_owned(),
        TagDimensions::None => "none".to_owned(),
        TagDimensions::Only(keys) => format!("only[{}]", keys.join(",")),
    };
    let sets: Vec<String> = spec
        .sets
        .iter()
        .map(|set| format!("[{}]", set.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    format!("fleet={} cluster={} node={} tags={tags} sets=[{}]", spec.fleet, spec.cluster, spec.node, sets.join(","))
}

/// The state of one [`ShardEngine`](super::ShardEngine) (or a part of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    /// The configuration its window state was built under.
    pub fingerprint: ConfigFingerprint,
    /// The watermark the shard had advanced to (the same for every shard of an engine).
    pub watermark: Nanos,
    /// Accepted, late and cardinality-refused records and emissions of the shard.
    #[serde(with = "counters_serde")]
    pub counters: EngineCounters,
    /// Every live series — including series whose state is empty and that wait to be
    /// released — in no particular order.
    pub series: Vec<SeriesSnapshot>,
}

/// One live series and its window state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    /// The series (metric and dimension, as in results).
    #[serde(with = "series_key_serde")]
    pub key: SeriesKey,
    /// Its window state.
    pub state: SeriesState,
    /// The series reaper's queue entries for this series: the watermarks at which its state
    /// was found empty (it is released once the watermark is `series_ttl` past one of them and
    /// it is still empty), ascending.
    pub reap_since: Vec<Nanos>,
}

/// The window state of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SeriesState {
    /// Tumbling and sliding windows.
    Panes {
        /// Pane accumulators, ascending by pane start.
        panes: Vec<PaneSnapshot>,
        /// Windows fired and not yet purged, with their next revision.
        fired: Vec<FiredWindow>,
        /// Starts of fired windows that received records since the last `advance` (they
        /// re-fire as corrections on the next one). Empty between batches.
        pending_corrections: Vec<Nanos>,
    },
    /// Session windows.
    Sessions {
        /// Live sessions, ascending by start, pairwise disjoint.
        sessions: Vec<SessionSnapshot>,
        /// Stored session keys superseded by merges since the last `advance`, to retract on the
        /// next one. Empty between batches.
        pending_retractions: Vec<Nanos>,
        /// When the series next needs attention (a session ends, or its state may be freed).
        next_timer: Option<Nanos>,
        /// Received records since the last `advance`. False between batches.
        dirty: bool,
    },
}

/// One pane of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaneSnapshot {
    /// Pane start.
    pub start: Nanos,
    /// Its statistics.
    pub acc: AccSnapshot,
}

/// A window that fired and may still be corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredWindow {
    /// Window start.
    pub start: Nanos,
    /// Revision of its next emission.
    pub next_revision: u32,
}

/// One session of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// First instant (the earliest record).
    pub start: Nanos,
    /// First instant after it (the latest record plus the gap).
    pub end: Nanos,
    /// Its statistics.
    pub acc: AccSnapshot,
    /// The start under which its result is currently stored, if any.
    pub emitted: Option<Nanos>,
    /// Revision of its next emission.
    pub revision: u32,
    /// Received records since its last emission.
    pub changed: bool,
}

/// An accumulator: totals and the `last` record with its identity (agent as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccSnapshot {
    /// Count, sums, min and max.
    pub totals: Totals,
    /// Value of the `last` record.
    pub last: Value,
    /// Its event time.
    pub last_time: Nanos,
    /// Its agent id.
    #[serde(with = "arc_str_serde")]
    pub last_agent: Arc<str>,
    /// Its batch sequence.
    pub last_sequence: u64,
    /// Its index in the batch.
    pub last_index: u32,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The configuration itself is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The snapshot was written by another format version.
    #[error("snapshot format version {found} is not supported (this build reads version {supported})")]
    Version {
        /// The snapshot's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The snapshot's window state was built under another configuration.
    #[error(
        "snapshot does not match the configuration: {setting} is `{snapshot}` in the snapshot but `{config}` in \
         the configuration (window spec, allowed lateness and dimensions must stay as they were when the snapshot \
         was taken; to change them, start from an empty state)"
    )]
    ConfigMismatch {
        /// The setting that differs.
        setting: &'static str,
        /// Its value in the snapshot.
        snapshot: String,
        /// Its value in the configuration.
        config: String,
    },
    /// The snapshot holds more live series than the configuration allows.
    #[error("snapshot holds {series} live series but the configuration allows {limit} (raise limits.max_series)")]
    SeriesLimit {
        /// Series in the snapshot (or in the part restored into one shard).
        series: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Shard snapshots to be merged were taken at different watermarks (not one consistent cut).
    #[error("shard snapshots disagree on the watermark ({first} vs {other}): not one consistent snapshot")]
    WatermarkMismatch {
        /// The first part's watermark.
        first: Nanos,
        /// A differing part's watermark.
        other: Nanos,
    },
    /// No shard snapshot was given.
    #[error("no shard snapshot to restore from")]
    NoShards,
    /// The snapshot's content is inconsistent (it was not written by the engine).
    #[error("inconsistent snapshot: {0}")]
    Invalid(String),
}

/// Why bytes could not be decoded into an [`EngineSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the header, or than the payload length the header announces.
    #[error("snapshot truncated: {found} bytes, expected {expected}")]
    Truncated {
        /// Bytes expected.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// More bytes than the header announces.
    #[error("snapshot has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Bytes past the payload.
        extra: u64,
    },
    /// The bytes are not an engine snapshot.
    #[error("not an engine snapshot (bad magic bytes)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("snapshot format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The payload's checksum does not match: the bytes were corrupted.
    #[error("snapshot corrupt: CRC-32 {found:#010x} does not match the header's {expected:#010x}")]
    Checksum {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the payload.
        found: u32,
    },
    /// The payload does not decode.
    #[error("snapshot payload malformed: {0}")]
    Malformed(String),
}

impl EngineSnapshot {
    /// The snapshot as bytes: header (magic, version, payload length, CRC-32) + `postcard`
    /// payload.
    ///
    /// Serializing these types into memory cannot fail (every sequence has a known length and
    /// no value refuses to serialize); should a future change make it fail, the frame carries
    /// an empty payload, which [`decode`](Self::decode) reports as malformed — never a panic.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_LEN + 64 + self.series_count() * 120);
        header.resize(HEADER_LEN, 0);
        let mut out = postcard::serialize_with_flavor(self, VecFlavor(header)).unwrap_or_else(|_| {
            debug_assert!(false, "engine snapshot failed to serialize");
            vec![0u8; HEADER_LEN]
        });
        let payload = out.get(HEADER_LEN..).unwrap_or_default();
        let crc = crc32fast::hash(payload);
        let len = payload.len() as u64;
        out[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        out[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&len.to_le_bytes());
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes bytes written by [`encode`](Self::encode); any truncation, corruption or foreign
    /// input is an error.
    pub fn decode(bytes: &[u8]) -> Result<EngineSnapshot, SnapshotError> {
        let truncated = |expected: u64| SnapshotError::Truncated { expected, found: bytes.len() as u64 };
        let (header, payload) = bytes.split_at_checked(HEADER_LEN).ok_or_else(|| truncated(HEADER_LEN as u64))?;
        let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or_default();
        if field(0..8) != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let u32_at = |at: usize| field(at..at + 4).try_into().map(u32::from_le_bytes).unwrap_or_default();
        let version = u32_at(8);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version, supported: SNAPSHOT_VERSION });
        }
        let len = field(12..20).try_into().map(u64::from_le_bytes).unwrap_or_default();
        let expected = u32_at(20);
        let found_len = payload.len() as u64;
        if found_len < len {
            return Err(truncated((HEADER_LEN as u64).saturating_add(len)));
        }
        if found_len > len {
            return Err(SnapshotError::TrailingBytes { extra: found_len - len });
        }
        let found = crc32fast::hash(payload);
        if found != expected {
            return Err(SnapshotError::Checksum { expected, found });
        }
        let (snapshot, rest): (EngineSnapshot, &[u8]) =
            postcard::take_from_bytes(payload).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SnapshotError::Malformed(format!("{} bytes after the snapshot", rest.len())));
        }
        if snapshot.version != version {
            return Err(SnapshotError::Malformed(format!(
                "payload version {} differs from header version {version}",
                snapshot.version
            )));
        }
        Ok(snapshot)
    }

    /// Live series over all shards.
    pub fn series_count(&self) -> usize {
        self.shards.iter().map(|s| s.series.len()).sum()
    }
}

/// Splits shard snapshots (any number, e.g. all of an engine's) for an engine of `shards`
/// shards: entry `i` holds, for every given part, the part's series that shard `i` owns
/// (routed by [`shard_of`] their metric), ready for [`ShardEngine::restore`]. Every entry gets
/// one (possibly empty) sub-part per given part, so each shard can check that all parts agree
/// on configuration and watermark. Counters are totals: a part's counters go with its sub-part
/// for shard 0.
///
/// [`ShardEngine::restore`]: super::ShardEngine::restore
pub fn split_shards(parts: Vec<ShardSnapshot>, shards: usize) -> Vec<Vec<ShardSnapshot>> {
    let n = shards.max(1);
    let mut out: Vec<Vec<ShardSnapshot>> = (0..n).map(|_| Vec::with_capacity(parts.len())).collect();
    for part in parts {
        let owner: Vec<usize> = part.series.iter().map(|s| shard_of(&s.key.metric, n)).collect();
        let mut sizes = vec![0usize; n];
        for &i in &owner {
            sizes[i] += 1;
        }
        let mut split: Vec<ShardSnapshot> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ShardSnapshot {
                fingerprint: part.fingerprint.clone(),
                watermark: part.watermark,
                counters: if i == 0 { part.counters.clone() } else { EngineCounters::default() },
                series: Vec::with_capacity(size),
            })
            .collect();
        for (series, i) in part.series.into_iter().zip(owner) {
            split[i].series.push(series);
        }
        for (entry, sub) in out.iter_mut().zip(split) {
            entry.push(sub);
        }
    }
    out
}

/// Sums counters of parts into a whole, saturating (restored counters are input).
pub(crate) fn add_counters(total: &mut EngineCounters, part: &EngineCounters) {
    let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
    add(&mut total.batches, part.batches);
    add(&mut total.duplicate_batches, part.duplicate_batches);
    add(&mut total.duplicate_records, part.duplicate_records);
    add(&mut total.records_in, part.records_in);
    add(&mut total.accepted, part.accepted);
    add(&mut total.late_dropped, part.late_dropped);
    add(&mut total.late_partial, part.late_partial);
    for (mine, theirs) in total.invalid.iter_mut().zip(part.invalid) {
        add(mine, theirs);
    }
    add(&mut total.results, part.results);
    add(&mut total.corrections, part.corrections);
    add(&mut total.retractions, part.retractions);
}

/// Checks that a restored time is within the range window state can hold.
pub(crate) fn check_time(t: Nanos, what: &str) -> Result<(), RestoreError> {
    if (-STATE_TIME_LIMIT..=STATE_TIME_LIMIT).contains(&t) {
        Ok(())
    } else {
        Err(RestoreError::Invalid(format!("{what} {t} out of range")))
    }
}

/// Largest count or counter a restored snapshot may hold — far beyond anything an engine
/// reaches, and far enough from `u64::MAX` that counting on never overflows.
const COUNT_LIMIT: u64 = 1 << 62;

/// Checks restored counters (they keep counting after the restore).
pub(crate) fn check_counters(c: &EngineCounters) -> Result<(), RestoreError> {
    let all = [
        c.batches,
        c.duplicate_batches,
        c.duplicate_records,
        c.records_in,
        c.accepted,
        c.late_dropped,
        c.late_partial,
        c.results,
        c.corrections,
        c.retractions,
    ];
    if all.iter().chain(&c.invalid).all(|&n| n <= COUNT_LIMIT) {
        Ok(())
    } else {
        Err(RestoreError::Invalid("counter out of range".into()))
    }
}

impl AccSnapshot {
    /// Checks what accumulating on relies on: at least one record, counts in range.
    pub(crate) fn check(&self, key: &SeriesKey) -> Result<(), RestoreError> {
        let t = &self.totals;
        if t.count == 0 || t.count > COUNT_LIMIT || t.float_count > t.count {
            return Err(invalid(key, format_args!("accumulator counts {} ({} doubles)", t.count, t.float_count)));
        }
        Ok(())
    }
}

/// Checks a restored revision (emitting increments it).
pub(crate) fn check_revision(key: &SeriesKey, revision: u32) -> Result<(), RestoreError> {
    if revision < u32::MAX { Ok(()) } else { Err(invalid(key, "revision out of range")) }
}

/// An inconsistency in a restored series' state.
pub(crate) fn invalid(key: &SeriesKey, what: impl fmt::Display) -> RestoreError {
    RestoreError::Invalid(format!("series {key}: {what}"))
}

/// A `postcard` output that appends to a `Vec` (after the header), pushing bytes directly.
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Serde for `Arc<str>` as a plain string.
mod arc_str_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

/// Serde for [`SeriesKey`] (its strings are `Arc<str>`): metric and dimension as plain text.
mod series_key_serde {
    use super::*;
    use crate::engine::dimension::Dimension;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize)]
    enum DimRef<'a> {
        Fleet,
        Cluster(&'a str),
        Node(&'a str),
        Tag { key: &'a str, value: &'a str },
        Set(Vec<(&'a str, &'a str)>),
    }

    #[derive(Deserialize)]
    enum DimOwned {
        Fleet,
        Cluster(String),
        Node(String),
        Tag { key: String, value: String },
        Set(Vec<(String, String)>),
    }

    pub fn serialize<S: Serializer>(key: &SeriesKey, s: S) -> Result<S::Ok, S::Error> {
        let dim = match &key.dimension {
            Dimension::Fleet => DimRef::Fleet,
            Dimension::Cluster(c) => DimRef::Cluster(c),
            Dimension::Node(n) => DimRef::Node(n),
            Dimension::Tag { key, value } => DimRef::Tag { key, value },
            Dimension::Set(pairs) => DimRef::Set(pairs.iter().map(|(k, v)| (&**k, &**v)).collect()),
        };
        (&*key.metric, dim).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SeriesKey, D::Error> {
        let (metric, dim) = <(String, DimOwned)>::deserialize(d)?;
        let arc = |s: String| -> Arc<str> { Arc::from(s) };
        let dimension = match dim {
            DimOwned::Fleet => Dimension::Fleet,
            DimOwned::Cluster(c) => Dimension::Cluster(arc(c)),
            DimOwned::Node(n) => Dimension::Node(arc(n)),
            DimOwned::Tag { key, value } => Dimension::Tag { key: arc(key), value: arc(value) },
            DimOwned::Set(pairs) => Dimension::Set(pairs.into_iter().map(|(k, v)| (arc(k), arc(v))).collect()),
        };
        Ok(SeriesKey { metric: arc(metric), dimension })
    }
}

/// Serde for [`EngineCounters`]: invalid records by reason *name* (stable), non-zero only, so
/// adding or reordering reasons keeps old snapshots readable.
mod counters_serde {
    use super::*;
    use crate::engine::validate::InvalidReason;
    use serde::{Deserializer, Serializer, de::Error};

    #[derive(Serialize, Deserialize)]
    struct Repr<'a> {
        batches: u64,
        duplicate_batches: u64,
        duplicate_records: u64,
        records_in: u64,
        accepted: u64,
        late_dropped: u64,
        late_partial: u64,
        #[serde(borrow)]
        invalid: Vec<(std::borrow::Cow<'a, str>, u64)>,
        results: u64,
        corrections: u64,
        retractions: u64,
    }

    pub fn serialize<S: Serializer>(c: &EngineCounters, s: S) -> Result<S::Ok, S::Error> {
        let invalid = InvalidReason::ALL
            .iter()
            .zip(c.invalid)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (std::borrow::Cow::Borrowed(r.as_str()), n))
            .collect();
        Repr {
            batches: c.batches,
            duplicate_batches: c.duplicate_batches,
            duplicate_records: c.duplicate_records,
            records_in: c.records_in,
            accepted: c.accepted,
            late_dropped: c.late_dropped,
            late_partial: c.late_partial,
            invalid,
            results: c.results,
            corrections: c.corrections,
            retractions: c.retractions,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EngineCounters, D::Error> {
        let r = Repr::deserialize(d)?;
        let mut c = EngineCounters {
            batches: r.batches,
            duplicate_batches: r.duplicate_batches,
            duplicate_records: r.duplicate_records,
            records_in: r.records_in,
            accepted: r.accepted,
            late_dropped: r.late_dropped,
            late_partial: r.late_partial,
            results: r.results,
            corrections: r.corrections,
            retractions: r.retractions,
            ..EngineCounters::default()
        };
        for (name, n) in r.invalid {
            let reason = InvalidReason::ALL
                .iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| D::Error::custom(format!("unknown invalid reason {name:?}")))?;
            let slot = &mut c.invalid[reason.index()];
            *slot = slot.saturating_add(n);
        }
        Ok(c)
    }
}
