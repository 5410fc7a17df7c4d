//! `HbaseActor`: the HBase raw store on an actix `SyncArbiter` thread.
//!
//! Role: the Thrift1 client is blocking, so it runs in a [`SyncContext`] actor — start N of
//! them with `SyncArbiter::start(n, move || HbaseActor::new(addr.clone(), config.clone()))`,
//! each with its own connection (dialled on first use, re-dialled after a broken one). It
//! answers [`WriteRaw`], [`WriteRawRange`] (a slice of rows shared with the sender, so the
//! store actor can split one batch over several connections without copying it) and
//! [`DrillDownQuery`]. Retries and their backoff happen inside the client, on this thread.
//! [`super::HbaseRaw`] is how the runtime uses it. Touches only its [`HbaseRawStore`].

use std::ops::Range;
use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};

use super::client::HbaseRawStore;
use super::error::HbaseError;
use super::metrics::HbaseMetrics;
use super::schema::HbaseConfig;
use crate::store::{DrillDown, RawPage, RawWrite};

/// Writes raw records (see [`HbaseRawStore::write_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRaw(pub Vec<RawWrite>);

impl Message for WriteRaw {
    type Result = Result<(), HbaseError>;
}

/// Writes `rows[range]` (see [`HbaseRawStore::write_raw`]); the rows are shared, not copied.
#[derive(Debug, Clone)]
pub struct WriteRawRange {
    /// The rows of one store batch.
    pub rows: Arc<Vec<RawWrite>>,
    /// The part this message writes (clamped to the rows).
    pub range: Range<usize>,
}

impl Message for WriteRawRange {
    type Result = Result<(), HbaseError>;
}

/// One drill-down page (see [`HbaseRawStore::drill_down`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DrillDownQuery {
    /// The point.
    pub query: DrillDown,
    /// Most records on the page.
    pub page_size: usize,
    /// The previous page's `next_page_token`, if any.
    pub page_token: Option<String>,
    /// For a node-only dimension: every cluster the node reported the metric under (see
    /// [`HbaseRawStore::drill_down_in`]); `None` scans every salt.
    pub node_clusters: Option<Vec<String>>,
}

impl Message for DrillDownQuery {
    type Result = Result<RawPage, HbaseError>;
}

/// A sync actor owning one HBase Thrift connection.
#[derive(Debug)]
pub struct HbaseActor {
    store: Result<HbaseRawStore, String>,
}

impl HbaseActor {
    /// An actor for the Thrift server at `addr`; it dials on its first message. An invalid
    /// `config` makes every message fail with [`HbaseError::Config`].
    pub fn new(addr: impl Into<String>, config: HbaseConfig) -> HbaseActor {
        HbaseActor::with_metrics(addr, config, Arc::default())
    }

    /// [`new`](Self::new), counting into `metrics`.
    pub fn with_metrics(addr: impl Into<String>, config: HbaseConfig, metrics: Arc<HbaseMetrics>) -> HbaseActor {
        HbaseActor {
            store: HbaseRawStore::lazy(addr, config).map(|s| s.with_metrics(metrics)).map_err(|e| match e {
                HbaseError::Config(why) => why,
                other => other.to_string(),
            }),
        }
    }

    /// An actor over an already connected store.
    pub fn with_store(store: HbaseRawStore) -> HbaseActor {
        HbaseActor { store: Ok(store) }
    }

    fn store(&mut self) -> Result<&mut HbaseRawStore, HbaseError> {
        self.store.as_mut().map_err(|e| HbaseError::Config(e.clone()))
    }
}

impl Actor for HbaseActor {
    type Context = SyncContext<Self>;
}

impl Handler<WriteRaw> for HbaseActor {
    type Result = Result<(), HbaseError>;

    fn handle(&mut self, msg: WriteRaw, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.write_raw(&msg.0)
    }
}

impl Handler<WriteRawRange> for HbaseActor {
    type Result = Result<(), HbaseError>;

    fn handle(&mut self, msg: WriteRawRange, _: &mut SyncContext<Self>) -> Self::Result {
        let end = msg.range.end.min(msg.rows.len());
        let rows = msg.rows.get(msg.range.start.min(end)..end).unwrap_or_default();
        self.store()?.write_raw(rows)
    }
}

impl Handler<DrillDownQuery> for HbaseActor {
    type Result = Result<RawPage, HbaseError>;

    fn handle(&mut self, msg: DrillDownQuery, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.drill_down_in(&msg.query, msg.page_size, msg.page_token.as_deref(), msg.node_clusters.as_deref())
    }
}
