//! `RawStore`: where the running aggregator keeps and reads raw records.
//!
//! Role: `store.kind` selects it — [`RawStore::Embedded`] (the default: the `raw` table of
//! the embedded redb store) or [`RawStore::Hbase`] (an HBase table over Thrift1, see
//! `store/hbase/`). Aggregates, listings and dead letters stay in the embedded store either
//! way. [`RawStore::drill_down`] serves one page of a point's raw records from whichever is
//! configured, with the same records, order and page tokens, so the HTTP `/api/raw` and gRPC
//! `RawRecords` handlers need not know which it is; for a node-only dimension the HBase path
//! first reads the node's clusters from the embedded `node_clusters` listing, as the embedded
//! drill-down does. Embedded reads run on tokio's blocking pool. Touches the stores (reads
//! only).

use std::sync::Arc;

use super::drilldown::Filter;
use super::drilldown::{DrillDown, RawPage};
use super::embedded::EmbeddedStore;
use super::error::StoreError;
use super::hbase::{HbaseMetrics, HbaseRaw};

/// The configured raw-record store.
#[derive(Debug, Clone)]
pub enum RawStore {
    /// The embedded store's `raw` table.
    Embedded(Arc<EmbeddedStore>),
    /// An HBase table over Thrift1; `listings` is the embedded store, whose `node_clusters`
    /// listing narrows node-only drill-downs.
    Hbase {
        /// The HBase store.
        hbase: HbaseRaw,
        /// The embedded store (listings).
        listings: Arc<EmbeddedStore>,
    },
}

impl RawStore {
    /// `"embedded"` or `"hbase"` (the `store.kind` value).
    pub fn kind(&self) -> &'static str {
        match self {
            RawStore::Embedded(_) => "embedded",
            RawStore::Hbase { .. } => "hbase",
        }
    }

    /// The HBase store's self-metrics, when it is the one.
    pub fn hbase_metrics(&self) -> Option<&Arc<HbaseMetrics>> {
        match self {
            RawStore::Embedded(_) => None,
            RawStore::Hbase { hbase, .. } => Some(hbase.metrics()),
        }
    }

    /// One page of exactly the raw records behind the point `query` (see
    /// [`EmbeddedStore::drill_down`]); the same answer from either store. A page token issued
    /// by one store is valid on the other.
    pub async fn drill_down(
        &self,
        query: DrillDown,
        page_size: usize,
        page_token: Option<String>,
    ) -> Result<RawPage, StoreError> {
        match self {
            RawStore::Embedded(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.drill_down(&query, page_size, page_token.as_deref()))
                    .await
                    .map_err(|e| StoreError::Aborted(e.to_string()))?
            }
            RawStore::Hbase { hbase, listings } => {
                // A node without its cluster: scan only the node's clusters, as the embedded
                // store does (the listing is committed with the points the rows are behind).
                let node_only = match Filter::new(&query).cluster_node() {
                    (None, Some(node)) => Some(node.to_owned()),
                    _ => None,
                };
                let clusters = match node_only {
                    Some(node) => {
                        let (listings, metric) = (listings.clone(), query.metric.clone());
                        let found = tokio::task::spawn_blocking(move || listings.node_clusters(&metric, &node))
                            .await
                            .map_err(|e| StoreError::Aborted(e.to_string()))??;
                        // No listing at all (rows written by another writer): scan every
                        // salt rather than find nothing.
                        Some(found).filter(|c| !c.is_empty())
                    }
                    None => None,
                };
                Ok(hbase.drill_down(query, page_size, page_token, clusters).await?)
            }
        }
    }
}
