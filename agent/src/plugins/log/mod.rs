//! Log plugin: tails file globs, counts regex rules and sends the matched lines as raw records.
//!
//! Role: every collection expands the `paths` globs again (new files are picked up), reads what
//! was appended to each file since the last collection — at most `max_read_bytes_per_collection`
//! over all files, the rest next time — and turns it into records: per-collection counts
//! (`log.lines`, `log.matches` per rule, rotations, truncations, …) and, for every line (or
//! multi-line event) a rule matches, one `log.match` record whose `raw` is the line, for
//! drill-down. Rotation (rename + new file, copytruncate, truncation) loses no line: see
//! `tail.rs`; lines and events: `reader.rs`. The plugin is lossless: the runner waits for queue
//! room rather than dropping its records, and read positions advance only in
//! [`Plugin::enqueued`], once the records of the collection are in the agent's queue — a
//! collection abandoned (timeout) or not enqueued is read again. Positions are saved to
//! `state_dir/plugins/<name>/positions.json` (`positions.rs`), so a restart resumes where the
//! last enqueued collection ended: no line is read twice, none is skipped. Records enqueued but
//! not yet delivered when the agent is killed are lost unless the Kafka spool holds them (the
//! in-memory queue is not durable). Blocking file I/O runs on tokio's blocking pool; positions
//! are written by one thread per instance. Touches the matched files (read-only), their
//! directories (listing) and its positions file.

mod config;
mod positions;
mod reader;
mod tail;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use meshmon_proto::v1::Record;

pub use config::{LogRule, LogSettings, MultilineSettings, StartAt};

use self::config::Compiled;
use self::positions::Saver;
use self::reader::{Output, ReadError};
use self::tail::{State, Totals};
use crate::metrics::Metrics;
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "log.lines",
    "log.bytes_read",
    "log.matches",
    "log.match",
    "log.rotations",
    "log.truncations",
    "log.lines_truncated",
    "log.files",
    "log.files_skipped",
    "log.lag_bytes",
    "log.file_errors",
    "log.position_save_errors",
];

/// The collector of one `[[plugins.log]]` instance.
#[derive(Debug)]
pub struct LogPlugin {
    name: String,
    cfg: Arc<Compiled>,
    /// The committed state: what the records enqueued so far cover.
    state: Arc<State>,
    /// The state after the last successful collection and its time, committed by `enqueued`.
    next: Option<(State, SystemTime)>,
    /// The saved cursors last handed to the saver (unchanged ones are not written again).
    last_saved: Option<Vec<tail::SavedFile>>,
    saver: Saver,
    metrics: Arc<Metrics>,
}

/// Sets the flag when dropped: tells the blocking work of an abandoned collection to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl LogPlugin {
    fn records(&self, out: Output, totals: Totals, save_errors: u64) -> Vec<Record> {
        let ts = out.ts;
        let tagged = |metric: &str, v: u64| -> Record {
            #[allow(clippy::cast_precision_loss)] // counts are far below 2^53
            let mut r = double_record(metric, v as f64, ts);
            r.tags.insert("plugin".to_owned(), self.name.clone());
            r
        };
        let mut records = Vec::with_capacity(out.records.len() + 12 + self.cfg.rules.len());
        records.push(tagged("log.lines", out.lines));
        records.push(tagged("log.bytes_read", out.bytes_read));
        for (rule, n) in self.cfg.rules.iter().zip(&out.rule_matches) {
            let mut r = tagged("log.matches", *n);
            r.tags.insert("rule".to_owned(), rule.name.clone());
            records.push(r);
        }
        records.push(tagged("log.rotations", out.rotations));
        records.push(tagged("log.truncations", out.truncations));
        records.push(tagged("log.lines_truncated", out.lines_truncated));
        records.push(tagged("log.files", totals.files));
        records.push(tagged("log.files_skipped", out.files_skipped));
        records.push(tagged("log.lag_bytes", totals.lag_bytes));
        records.push(tagged("log.file_errors", out.file_errors));
        records.push(tagged("log.position_save_errors", save_errors));
        records.extend(out.records);
        records
    }
}

impl Plugin for LogPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        // A collection that was not enqueued is forgotten: this one starts from the committed state.
        self.next = None;
        Box::pin(async move {
            let cfg = self.cfg.clone();
            let prev = self.state.clone();
            let name = self.name.clone();
            let cancel = Arc::new(AtomicBool::new(false));
            let _guard = CancelOnDrop(cancel.clone());
            let task = tokio::task::spawn_blocking(move || {
                let mut out = Output::new(&name, timestamp_of(at), cfg.rules.len());
                tail::collect(&cfg, &prev, at, &mut out, &cancel).map(|(next, totals)| (next, totals, out))
            });
            let (next, totals, out) = match task.await {
                Ok(Ok(done)) => done,
                Ok(Err(ReadError::Cancelled)) => {
                    return Err(PluginError::new(ErrorReason::Other, "collection abandoned"));
                }
                Ok(Err(ReadError::Io(e))) => return Err(PluginError::io(e)),
                Err(e) => return Err(PluginError::new(ErrorReason::Other, format!("log collection failed: {e}"))),
            };
            if !out.errors.is_empty() && self.metrics.log_allowed("log_plugin_files") {
                tracing::warn!(plugin = %self.name, errors = out.file_errors, "log files could not be read: {}", out.errors.join("; "));
            }
            if out.file_errors > 0 && totals.files == 0 {
                return Err(PluginError::io(format!(
                    "no matched file could be read ({} errors): {}",
                    out.file_errors,
                    out.errors.join("; ")
                )));
            }
            let save_errors = self.saver.take_errors();
            let records = self.records(out, totals, save_errors);
            self.next = Some((next, at));
            Ok(records)
        })
    }

    fn lossless(&self) -> bool {
        true
    }

    fn enqueued(&mut self) {
        let Some((next, at)) = self.next.take() else { return };
        let saved = next.saved();
        self.state = Arc::new(next);
        if self.last_saved.as_ref() != Some(&saved) {
            self.saver.save(positions::encode(&saved, at));
            self.last_saved = Some(saved);
        }
    }
}

impl BuildPlugin for LogSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        let cfg = self
            .compile(&format!("plugins.log {name:?}"))
            .map_err(|e| PluginError::new(ErrorReason::Other, e.to_string()))?;
        let path = ctx.plugin_dir(name)?.join(positions::FILE_NAME);
        let (state, last_saved) = match positions::load(&path) {
            Ok(Some((files, saved_at))) => (State::restored(files.clone(), saved_at), Some(files)),
            Ok(None) => (State::fresh(), None),
            Err(e) => {
                let bad = path.with_extension("json.bad");
                tracing::warn!(plugin = %name, "{e}; starting without saved positions (the file is kept as {})", bad.display());
                let _ = std::fs::rename(&path, &bad);
                (State::fresh(), None)
            }
        };
        let saver = Saver::start(path, name, ctx.metrics.clone())
            .map_err(|e| PluginError::io(format!("cannot start the positions writer: {e}")))?;
        tracing::debug!(plugin = %name, positions = %saver.path().display(), "log plugin built");
        Ok(Box::new(LogPlugin {
            name: name.to_owned(),
            cfg: Arc::new(cfg),
            state: Arc::new(state),
            next: None,
            last_saved,
            saver,
            metrics: ctx.metrics.clone(),
        }))
    }
}
