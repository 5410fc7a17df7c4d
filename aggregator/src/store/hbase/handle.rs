//! `HbaseRaw`: the HBase raw store as the running aggregator uses it.
//!
//! Role: [`HbaseSetup`] is what `[store.hbase]` configures (Thrift address, table layout and
//! retry policy, connections, create-or-check); [`HbaseSetup::open_table`] prepares the table
//! before anything is written. [`HbaseRaw::start`] starts two pools of [`HbaseActor`]s on
//! actix `SyncArbiter`s — `connections` writers and `connections` readers, so a write held up
//! by retries never blocks drill-downs — sharing one [`HbaseMetrics`]. [`HbaseRaw::write`]
//! splits a store batch's raw rows into at most `connections` parts of at least
//! `write_batch_rows` rows, writes them in parallel and resolves once the server acknowledged
//! every row (or one part failed for good); [`HbaseRaw::drill_down`] serves one page on a
//! reader. Must run inside an actix system. Touches the Thrift connections (through its
//! actors) and the metrics.

use std::sync::Arc;

use actix::{Addr, SyncArbiter};

use super::actor::{DrillDownQuery, HbaseActor, WriteRawRange};
use super::client::{HbaseRawStore, TableReport};
use super::error::HbaseError;
use super::metrics::HbaseMetrics;
use super::schema::HbaseConfig;
use crate::store::{DrillDown, RawPage, RawWrite};

/// How the running aggregator uses HBase for raw records (`[store.hbase]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaseSetup {
    /// The Thrift1 server, `host:port`.
    pub address: String,
    /// Table, family, layout, batch sizes, timeouts, retries.
    pub config: HbaseConfig,
    /// Connections (threads) for writes, and as many for drill-downs.
    pub connections: usize,
    /// Create the table when it is missing (otherwise a missing table is an error).
    pub create_table: bool,
}

impl HbaseSetup {
    /// Connects once and opens the table: creates it when missing and allowed, checks the
    /// column family and the recorded row-key layout. Blocking.
    pub fn open_table(&self) -> Result<TableReport, HbaseError> {
        HbaseRawStore::connect(&self.address, self.config.clone())?.open_table(self.create_table)
    }
}

/// The running HBase raw store: pools of Thrift connections on `SyncArbiter` threads.
#[derive(Debug, Clone)]
pub struct HbaseRaw {
    writers: Addr<HbaseActor>,
    readers: Addr<HbaseActor>,
    connections: usize,
    min_part: usize,
    metrics: Arc<HbaseMetrics>,
    address: String,
}

impl HbaseRaw {
    /// Starts the connection pools (they dial on first use). Must run inside an actix system.
    pub fn start(setup: &HbaseSetup) -> Result<HbaseRaw, HbaseError> {
        setup.config.validate()?;
        if setup.connections == 0 {
            return Err(HbaseError::Config("connections must be at least 1".to_owned()));
        }
        let metrics = Arc::new(HbaseMetrics::default());
        let pool = || {
            let (address, config, metrics) = (setup.address.clone(), setup.config.clone(), metrics.clone());
            SyncArbiter::start(setup.connections, move || {
                HbaseActor::with_metrics(address.clone(), config.clone(), metrics.clone())
            })
        };
        Ok(HbaseRaw {
            writers: pool(),
            readers: pool(),
            connections: setup.connections,
            min_part: setup.config.write_batch_rows,
            metrics,
            address: setup.address.clone(),
        })
    }

    /// The Thrift server's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The shared metrics of every connection.
    pub fn metrics(&self) -> &Arc<HbaseMetrics> {
        &self.metrics
    }

    /// Writes `rows`, in parallel parts over the writer connections; resolves when every part
    /// is acknowledged (or, after all parts finished, with the first part's failure).
    pub async fn write(&self, rows: Arc<Vec<RawWrite>>) -> Result<(), HbaseError> {
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        let part = n.div_ceil(self.connections).max(self.min_part);
        let sends = (0..n)
            .step_by(part)
            .map(|start| self.writers.send(WriteRawRange { rows: rows.clone(), range: start..(start + part).min(n) }));
        let results = futures_util::future::join_all(sends).await;
        for r in results {
            r.map_err(|e| HbaseError::Stopped(e.to_string()))??;
        }
        Ok(())
    }

    /// One drill-down page (see [`HbaseRawStore::drill_down_in`]) on a reader connection.
    pub async fn drill_down(
        &self,
        query: DrillDown,
        page_size: usize,
        page_token: Option<String>,
        node_clusters: Option<Vec<String>>,
    ) -> Result<RawPage, HbaseError> {
        self.readers
            .send(DrillDownQuery { query, page_size, page_token, node_clusters })
            .await
            .map_err(|e| HbaseError::Stopped(e.to_string()))?
    }
}
