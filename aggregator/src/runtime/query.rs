//! `meshmon.v1.Query`: the drill-down service over gRPC.
//!
//! Role: answers `ListMetrics` and `Aggregates` from the pipeline's [`EmbeddedStore`] and
//! `RawRecords` from the configured [`RawStore`] (the embedded store or HBase) — the same
//! reads as the HTTP `/api/metrics`, `/api/aggregates` and `/api/raw`, with the same pagination
//! tokens — converting between the wire types and the engine's (`kafka/aggregate_update.rs`
//! has the engine → wire direction). Every embedded-store read runs on tokio's blocking pool.
//! A bad request is `INVALID_ARGUMENT` naming the field, an unreachable HBase `UNAVAILABLE`,
//! another store failure `INTERNAL`; no input panics. Touches the stores (reads only).

use std::str::FromStr;
use std::sync::Arc;

use meshmon_proto::v1::query_server::Query;
use meshmon_proto::v1::{self, Decimal};
use meshmon_proto::{duration_to_nanos, nanos_to_timestamp, timestamp_to_nanos};
use tonic::{Request, Response, Status};

use crate::engine::time::{MAX_EVENT_TIME, MIN_EVENT_TIME, align_down};
use crate::engine::{Dimension, DimensionField, Nanos, Value, Window, WindowSpec};
use crate::http::{DEFAULT_RAW_PAGE_SIZE, MAX_RAW_PAGE_SIZE};
use crate::kafka::aggregate_update::{stats_to_proto, window_spec_to_proto};
use crate::store::{DrillDown, EmbeddedStore, RawRecordView, RawStore, StoreError, StoredPoint};

/// The `meshmon.v1.Query` service of one pipeline.
#[derive(Debug, Clone)]
pub struct QueryService {
    store: Arc<EmbeddedStore>,
    /// Where raw records are drilled down into.
    raw: RawStore,
    /// The window spec the engine runs with (a request naming it gets it exactly).
    window: WindowSpec,
    /// The engine's allowed lateness (decides which raw records are behind a point).
    allowed_lateness: Nanos,
}

impl QueryService {
    /// The service over `store` (also for raw records), for an engine running `window` with
    /// `allowed_lateness`.
    pub fn new(store: Arc<EmbeddedStore>, window: WindowSpec, allowed_lateness: Nanos) -> QueryService {
        let raw = RawStore::Embedded(store.clone());
        QueryService { store, raw, window, allowed_lateness }
    }

    /// This service reading raw records from `raw` (the configured raw store).
    pub fn with_raw_store(mut self, raw: RawStore) -> QueryService {
        self.raw = raw;
        self
    }

    /// The engine window spec a request names: the configured one when the request names it
    /// (so a sliding offset, which the wire form lacks, is kept), else the wire spec itself.
    fn window_spec(&self, field: &str, w: Option<&v1::WindowSpec>) -> Result<WindowSpec, Status> {
        let w = w.ok_or_else(|| bad(format!("{field}: required")))?;
        if *w == window_spec_to_proto(&self.window) {
            return Ok(self.window);
        }
        window_spec_from_proto(field, w)
    }

    /// Runs a store read on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&EmbeddedStore) -> Result<T, Status> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("store read did not complete: {e}")))?
    }
}

fn bad(message: String) -> Status {
    Status::invalid_argument(message)
}

fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::InvalidPageToken(why) => bad(format!("page_token: {why}")),
        e if e.is_transient() => Status::unavailable(format!("store: {e}")),
        e => Status::internal(format!("store: {e}")),
    }
}

/// The metric of a request: non-empty.
fn metric(m: String) -> Result<String, Status> {
    if m.is_empty() {
        return Err(bad("metric: required (non-empty)".into()));
    }
    Ok(m)
}

/// The engine form of a wire dimension, checked against the shape its kind requires.
pub fn dimension_from_proto(field: &str, d: Option<&v1::Dimension>) -> Result<Dimension, Status> {
    let d = d.ok_or_else(|| bad(format!("{field}: required")))?;
    let kind = v1::DimensionKind::try_from(d.kind)
        .map_err(|_| bad(format!("{field}.kind: unknown dimension kind {}", d.kind)))?;
    let (names, values) = (d.names.as_slice(), d.values.as_slice());
    let shape = |want_names: usize, what: &str| -> Result<(), Status> {
        if names.len() != want_names || values.len() != 1 {
            return Err(bad(format!(
                "{field}: a {} dimension has {what}; got {} names and {} values",
                kind.as_str_name(),
                names.len(),
                values.len()
            )));
        }
        if values[0].is_empty() {
            return Err(bad(format!("{field}.values[0]: must not be empty")));
        }
        Ok(())
    };
    Ok(match kind {
        v1::DimensionKind::Unspecified => {
            return Err(bad(format!("{field}.kind: DIMENSION_KIND_UNSPECIFIED; set FLEET, CLUSTER, NODE, TAG or SET")));
        }
        v1::DimensionKind::Fleet => {
            if !names.is_empty() || !values.is_empty() {
                return Err(bad(format!("{field}: a DIMENSION_KIND_FLEET dimension has no names and no values")));
            }
            Dimension::Fleet
        }
        v1::DimensionKind::Cluster => {
            shape(0, "no names and exactly one value (the cluster)")?;
            Dimension::Cluster(values[0].as_str().into())
        }
        v1::DimensionKind::Node => {
            shape(0, "no names and exactly one value (the node)")?;
            Dimension::Node(values[0].as_str().into())
        }
        v1::DimensionKind::Tag => {
            shape(1, "exactly one name (the tag key) and one value")?;
            if names[0].is_empty() {
                return Err(bad(format!("{field}.names[0]: must not be empty")));
            }
            Dimension::Tag { key: names[0].as_str().into(), value: values[0].as_str().into() }
        }
        v1::DimensionKind::Set => {
            if names.is_empty() || names.len() != values.len() {
                return Err(bad(format!(
                    "{field}: a DIMENSION_KIND_SET dimension has one or more names and as many values; got {} names and {} values",
                    names.len(),
                    values.len()
                )));
            }
            for (i, (n, v)) in names.iter().zip(values).enumerate() {
                DimensionField::from_str(n).map_err(|e| bad(format!("{field}.names[{i}]: {e}")))?;
                if v.is_empty() {
                    return Err(bad(format!("{field}.values[{i}]: must not be empty")));
                }
            }
            Dimension::Set(names.iter().zip(values).map(|(n, v)| (n.as_str().into(), v.as_str().into())).collect())
        }
    })
}

/// A positive duration field.
fn positive(field: &str, d: Option<&meshmon_proto::Duration>) -> Result<Nanos, Status> {
    let d = d.ok_or_else(|| bad(format!("{field}: required")))?;
    let n = duration_to_nanos(d).map_err(|e| bad(format!("{field}: {e}")))?;
    if n <= 0 {
        return Err(bad(format!("{field}: must be positive")));
    }
    Ok(n)
}

/// The engine form of a wire window spec (a sliding grid starts at the epoch).
pub fn window_spec_from_proto(field: &str, w: &v1::WindowSpec) -> Result<WindowSpec, Status> {
    use v1::window_spec::Kind;
    let spec = match &w.kind {
        None => return Err(bad(format!("{field}: no kind set (tumbling, sliding or session)"))),
        Some(Kind::Tumbling(t)) => {
            let size = positive(&format!("{field}.tumbling.size"), t.size.as_ref())?;
            let offset = match &t.offset {
                None => 0,
                Some(o) => duration_to_nanos(o).map_err(|e| bad(format!("{field}.tumbling.offset: {e}")))?,
            };
            WindowSpec::Tumbling { size, offset: offset.rem_euclid(size) }
        }
        Some(Kind::Sliding(s)) => {
            let size = positive(&format!("{field}.sliding.size"), s.size.as_ref())?;
            let slide = positive(&format!("{field}.sliding.slide"), s.slide.as_ref())?;
            WindowSpec::Sliding { size, slide, offset: 0 }
        }
        Some(Kind::Session(s)) => {
            WindowSpec::Session { gap: positive(&format!("{field}.session.gap"), s.gap.as_ref())? }
        }
    };
    Ok(spec)
}

/// An optional timestamp bound; `unset` when absent.
fn bound(field: &str, t: Option<&meshmon_proto::Timestamp>, unset: Nanos) -> Result<Nanos, Status> {
    t.map_or(Ok(unset), |t| timestamp_to_nanos(t).map_err(|e| bad(format!("{field}: {e}"))))
}

/// The wire form of a stored point.
fn point_to_proto(p: &StoredPoint) -> v1::AggregatePoint {
    v1::AggregatePoint {
        window_start: Some(nanos_to_timestamp(p.window.start)),
        window_end: Some(nanos_to_timestamp(p.window.end)),
        stats: Some(stats_to_proto(&p.stats)),
        revision: p.revision,
    }
}

/// The wire form of a stored raw record, with its identity (moved, not copied: a page can
/// hold 10 000 records).
fn raw_record_to_proto(v: RawRecordView) -> Result<v1::RawRecord, Status> {
    let r = v.record;
    let value = match r.value {
        Value::Float(f) => v1::record::Value::DoubleValue(f),
        Value::Decimal(n) => v1::record::Value::DecimalValue(
            Decimal::from_nano_units(n).map_err(|e| Status::internal(format!("stored decimal {n}e-9: {e}")))?,
        ),
    };
    Ok(v1::RawRecord {
        agent_id: v.id.agent.to_string(),
        sequence: v.id.sequence,
        index: v.id.index,
        record: Some(v1::Record {
            metric: r.metric,
            value: Some(value),
            event_time: Some(nanos_to_timestamp(r.time)),
            cluster: r.cluster,
            node: r.node,
            tags: r.tags.into_iter().collect(),
            raw: v.raw,
        }),
    })
}

/// The window starting exactly at `start`: the stored point's, or (none stored) the one the
/// spec puts there; a session window must be stored.
fn resolve_window(
    store: &EmbeddedStore,
    metric: &str,
    dimension: &Dimension,
    spec: &WindowSpec,
    start: Nanos,
) -> Result<Window, Status> {
    let points = store.query_points(metric, dimension, spec, start, start.saturating_add(1)).map_err(store_error)?;
    if let Some(p) = points.first() {
        return Ok(p.window);
    }
    if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&start) {
        return Err(bad("window_start: outside the valid event-time range (1823 to 2116)".into()));
    }
    let not_a_start = || bad(format!("window_start: not the start of a {spec} window"));
    match *spec {
        WindowSpec::Tumbling { size, offset } => {
            if align_down(start, offset, size) != start {
                return Err(not_a_start());
            }
            Ok(Window { start, end: start.saturating_add(size) })
        }
        WindowSpec::Sliding { size, slide, offset } => {
            if align_down(start, offset, slide) != start {
                return Err(not_a_start());
            }
            Ok(Window { start, end: start.saturating_add(size) })
        }
        WindowSpec::Session { .. } => Err(bad("window_start: no stored session window starts there".into())),
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_metrics(
        &self,
        _request: Request<v1::ListMetricsRequest>,
    ) -> Result<Response<v1::ListMetricsResponse>, Status> {
        let metrics = self.blocking(|store| store.list_metrics().map_err(store_error)).await?;
        Ok(Response::new(v1::ListMetricsResponse { metrics }))
    }

    async fn aggregates(
        &self,
        request: Request<v1::AggregatesRequest>,
    ) -> Result<Response<v1::AggregatesResponse>, Status> {
        let r = request.into_inner();
        let metric = metric(r.metric)?;
        let dimension = dimension_from_proto("dimension", r.dimension.as_ref())?;
        let spec = self.window_spec("window", r.window.as_ref())?;
        let from = bound("from", r.from.as_ref(), Nanos::MIN)?;
        let to = bound("to", r.to.as_ref(), Nanos::MAX)?;
        let points = self
            .blocking(move |store| store.query_points(&metric, &dimension, &spec, from, to).map_err(store_error))
            .await?;
        // The same bound as `/api/aggregates`: one answer never carries an unbounded series.
        if points.len() > crate::http::MAX_POINTS {
            return Err(bad(format!(
                "from/to: the range holds {} points, more than the maximum of {}; narrow it",
                points.len(),
                crate::http::MAX_POINTS
            )));
        }
        Ok(Response::new(v1::AggregatesResponse { points: points.iter().map(point_to_proto).collect() }))
    }

    async fn raw_records(
        &self,
        request: Request<v1::RawRecordsRequest>,
    ) -> Result<Response<v1::RawRecordsResponse>, Status> {
        let r = request.into_inner();
        let metric = metric(r.metric)?;
        let dimension = dimension_from_proto("dimension", r.dimension.as_ref())?;
        let spec = self.window_spec("window", r.window.as_ref())?;
        let start = r.window_start.as_ref().ok_or_else(|| bad("window_start: required".into()))?;
        let start = timestamp_to_nanos(start).map_err(|e| bad(format!("window_start: {e}")))?;
        let page_size = match r.page_size {
            0 => DEFAULT_RAW_PAGE_SIZE,
            n => usize::try_from(n).unwrap_or(MAX_RAW_PAGE_SIZE).min(MAX_RAW_PAGE_SIZE),
        };
        let token = (!r.page_token.is_empty()).then_some(r.page_token);
        let lateness = self.allowed_lateness;
        let (m, d) = (metric.clone(), dimension.clone());
        let window = self.blocking(move |store| resolve_window(store, &m, &d, &spec, start)).await?;
        let query = DrillDown { metric, dimension, window_spec: spec, window, allowed_lateness: lateness };
        let page = self.raw.drill_down(query, page_size, token).await.map_err(store_error)?;
        let records = page.records.into_iter().map(raw_record_to_proto).collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(v1::RawRecordsResponse { records, next_page_token: page.next_page_token.unwrap_or_default() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(kind: v1::DimensionKind, names: &[&str], values: &[&str]) -> v1::Dimension {
        v1::Dimension {
            kind: kind as i32,
            names: names.iter().map(|s| (*s).into()).collect(),
            values: values.iter().map(|s| (*s).into()).collect(),
        }
    }

    #[test]
    fn dimensions_round_trip_and_bad_shapes_are_refused() {
        use crate::kafka::aggregate_update::dimension_to_proto;
        let ok = [
            Dimension::Fleet,
            Dimension::Cluster("c1".into()),
            Dimension::Node("n1".into()),
            Dimension::Tag { key: "env".into(), value: "prod".into() },
            Dimension::Set(vec![("cluster".into(), "c1".into()), ("env".into(), "prod".into())].into()),
        ];
        for d in ok {
            assert_eq!(dimension_from_proto("dimension", Some(&dimension_to_proto(&d))).ok(), Some(d));
        }
        let refused = [
            v1::Dimension { kind: 99, names: vec![], values: vec![] },
            dim(v1::DimensionKind::Unspecified, &[], &[]),
            dim(v1::DimensionKind::Fleet, &[], &["x"]),
            dim(v1::DimensionKind::Cluster, &[], &[]),
            dim(v1::DimensionKind::Node, &["k"], &["n"]),
            dim(v1::DimensionKind::Tag, &[], &["v"]),
            dim(v1::DimensionKind::Set, &["a", "b"], &["1"]),
            dim(v1::DimensionKind::Set, &[""], &["1"]),
        ];
        for d in refused {
            let e = dimension_from_proto("dimension", Some(&d)).err();
            assert_eq!(e.map(|s| s.code()), Some(tonic::Code::InvalidArgument), "{d:?}");
        }
        assert!(dimension_from_proto("dimension", None).is_err());
    }

    #[test]
    fn window_specs_round_trip_and_bad_ones_are_refused() {
        for spec in [
            WindowSpec::Tumbling { size: 10, offset: 3 },
            WindowSpec::Sliding { size: 10, slide: 5, offset: 0 },
            WindowSpec::Session { gap: 7 },
        ] {
            assert_eq!(window_spec_from_proto("window", &window_spec_to_proto(&spec)).ok(), Some(spec));
        }
        let none = v1::WindowSpec { kind: None };
        assert!(window_spec_from_proto("window", &none).is_err());
        let zero = v1::WindowSpec {
            kind: Some(v1::window_spec::Kind::Session(v1::Session { gap: Some(meshmon_proto::Duration::default()) })),
        };
        assert_eq!(window_spec_from_proto("window", &zero).err().map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    }
}
