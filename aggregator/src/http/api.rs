//! The JSON API handlers, `/healthz` and `/metrics`.
//!
//! Role: one small async handler per route (table in `mod.rs`): parse the query (`params.rs`),
//! read the embedded store on actix's blocking pool (raw records: the configured raw store),
//! shape the answer (`json.rs`). Every failure is an [`ApiError`] (a JSON 4xx/5xx). Touches
//! the stores (reads only), the runtime metrics (reads only) and the wall clock (default time
//! ranges when no watermark is known).

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::json;

use super::dimension_key;
use super::error::ApiError;
use super::json::{DeadLetterView, DimensionView, PointView, RecordView};
use super::params::{QueryParams, TimeRange, ms_to_ns, ns_to_ms};
use super::{
    DEFAULT_DEAD_LETTER_LIMIT, DEFAULT_RAW_PAGE_SIZE, DEFAULT_SPAN_MS, HttpState, MAX_DEAD_LETTER_LIMIT, MAX_POINTS,
    MAX_RAW_PAGE_SIZE,
};
use crate::engine::time::{DurationText, MAX_EVENT_TIME, MIN_EVENT_TIME, NANOS_PER_MILLI, align_down};
use crate::engine::{Dimension, Nanos, WATERMARK_END, WATERMARK_NONE, Window, WindowSpec};
use crate::runtime::clock::now_nanos;
use crate::runtime::metrics::RuntimeMetrics;
use crate::store::{DrillDown, EmbeddedStore, StoreError};

/// Registers `/healthz`, `/metrics` and the `/api` scope (unknown `/api` routes get a JSON 404).
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/metrics", web::get().to(prometheus)).service(
        web::scope("/api")
            .route("/config", web::get().to(config))
            .route("/metrics", web::get().to(metrics))
            .route("/dimensions", web::get().to(dimensions))
            .route("/aggregates", web::get().to(aggregates))
            .route("/raw", web::get().to(raw))
            .route("/dead_letters", web::get().to(dead_letters))
            .default_service(web::to(not_found)),
    );
}

type ApiResult = Result<HttpResponse, ApiError>;

/// 200 with a JSON body that is never cached.
fn ok_json(body: &impl Serialize) -> ApiResult {
    let text = serde_json::to_string(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("application/json").insert_header((CACHE_CONTROL, "no-store")).body(text))
}

/// Runs a store read on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    web::block(f).await.map_err(|e| ApiError::Internal(format!("store read did not complete: {e}")))?
}

/// The watermark as epoch ms, if one is known (neither "nothing yet" nor "end of input").
fn watermark_ms(metrics: &RuntimeMetrics) -> Option<i64> {
    let wm = metrics.watermark();
    (wm != WATERMARK_NONE && wm != WATERMARK_END).then(|| ns_to_ms(wm))
}

/// What default time ranges end at: the watermark, or now.
fn anchor_ms(state: &HttpState) -> i64 {
    watermark_ms(&state.metrics).unwrap_or_else(|| ns_to_ms(now_nanos()))
}

async fn healthz(state: web::Data<HttpState>) -> ApiResult {
    ok_json(&json!({
        "status": "ok",
        "watermark_ms": watermark_ms(&state.metrics),
        "series": state.metrics.series(),
    }))
}

async fn prometheus(state: web::Data<HttpState>) -> HttpResponse {
    let mut text = state.metrics.render();
    if let Some(hbase) = state.raw.hbase_metrics() {
        hbase.render(&mut text);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(text)
}

async fn not_found(req: HttpRequest) -> ApiResult {
    Err(ApiError::NotFound(format!("no API route {} {}", req.method(), req.path())))
}

fn ms(ns: Nanos) -> i64 {
    ns_to_ms(ns)
}

async fn config(state: web::Data<HttpState>) -> ApiResult {
    let e = &state.engine;
    let (size, slide, offset, gap) = match e.window {
        WindowSpec::Tumbling { size, offset } => (Some(size), Some(size), offset, None),
        WindowSpec::Sliding { size, slide, offset } => (Some(size), Some(slide), offset, None),
        WindowSpec::Session { gap } => (None, None, 0, Some(gap)),
    };
    ok_json(&json!({
        "window": e.window.to_string(),
        "window_kind": e.window.kind_name(),
        "window_size_ms": size.map(ms),
        "window_slide_ms": slide.map(ms),
        "window_offset_ms": ms(offset),
        "session_gap_ms": gap.map(ms),
        "allowed_lateness_ms": ms(e.allowed_lateness),
        "allowed_lateness": DurationText(e.allowed_lateness).to_string(),
        "out_of_orderness_ms": ms(e.out_of_orderness),
        "max_points": MAX_POINTS,
        "max_raw_page_size": MAX_RAW_PAGE_SIZE,
    }))
}

async fn metrics(state: web::Data<HttpState>) -> ApiResult {
    let store = state.store.clone();
    let names = blocking(move || Ok(store.list_metrics()?)).await?;
    ok_json(&json!({ "metrics": names }))
}

async fn dimensions(state: web::Data<HttpState>, req: HttpRequest) -> ApiResult {
    let p = QueryParams::parse(req.query_string())?;
    let metric = p.metric()?;
    let store = state.store.clone();
    let dims = blocking(move || Ok(store.list_dimensions(&metric)?)).await?;
    let views: Vec<DimensionView> = dims.iter().map(DimensionView::of).collect();
    ok_json(&json!({ "dimensions": views }))
}

async fn aggregates(state: web::Data<HttpState>, req: HttpRequest) -> ApiResult {
    let p = QueryParams::parse(req.query_string())?;
    let (metric, dimension) = (p.metric()?, p.dimension()?);
    let range = TimeRange::resolve(&p, anchor_ms(&state), DEFAULT_SPAN_MS)?;
    let spec = state.engine.window;
    let (store, m, d) = (state.store.clone(), metric.clone(), dimension.clone());
    let points = blocking(move || Ok(store.query_points(&m, &d, &spec, range.from, range.to)?)).await?;
    if points.len() > MAX_POINTS {
        return Err(ApiError::bad(format!(
            "[{}, {}) holds {} points of {spec} windows, more than the maximum of {MAX_POINTS}; narrow from/to",
            range.from_ms,
            range.to_ms,
            points.len()
        )));
    }
    let points: Vec<PointView> = points.iter().map(PointView::of).collect();
    ok_json(&json!({
        "metric": metric,
        "dimension": dimension_key::encode(&dimension),
        "window": spec.to_string(),
        "from": range.from_ms,
        "to": range.to_ms,
        "points": points,
    }))
}

/// The window of a point requested by its start (and, for sessions, end) in ms, with the
/// stored point's count: the stored point whose start falls in that millisecond wins; with
/// none stored, the window follows from the spec (a session needs `end`).
fn resolve_window(
    store: &EmbeddedStore,
    metric: &str,
    dimension: &Dimension,
    spec: &WindowSpec,
    (start_ms, start): (i64, Nanos),
    end: Option<Nanos>,
) -> Result<(Window, Option<u64>), ApiError> {
    let points = store.query_points(metric, dimension, spec, start, start.saturating_add(NANOS_PER_MILLI))?;
    match points.as_slice() {
        [p] => return Ok((p.window, Some(p.stats.count()))),
        [] => {}
        _ => {
            return Err(ApiError::bad(format!(
                "several {spec} points start within millisecond {start_ms}; they cannot be told apart by start"
            )));
        }
    }
    if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&start) {
        return Err(ApiError::bad(format!("start {start_ms} is outside the valid event-time range (1823 to 2116)")));
    }
    let not_a_start = || ApiError::bad(format!("start {start_ms} is not the start of a {spec} window"));
    let window = match *spec {
        WindowSpec::Tumbling { size, offset } => {
            if align_down(start, offset, size) != start {
                return Err(not_a_start());
            }
            Window { start, end: start.saturating_add(size) }
        }
        WindowSpec::Sliding { size, slide, offset } => {
            if align_down(start, offset, slide) != start {
                return Err(not_a_start());
            }
            Window { start, end: start.saturating_add(size) }
        }
        WindowSpec::Session { .. } => match end {
            Some(end) if end > start => Window { start, end },
            Some(_) => return Err(ApiError::bad("\"end\" must be after \"start\"")),
            None => {
                return Err(ApiError::bad(format!(
                    "no stored session starts at {start_ms}; pass end=<ms> to drill into a session window"
                )));
            }
        },
    };
    Ok((window, None))
}

async fn raw(state: web::Data<HttpState>, req: HttpRequest) -> ApiResult {
    let p = QueryParams::parse(req.query_string())?;
    let (metric, dimension) = (p.metric()?, p.dimension()?);
    let start_ms = p.millis("start")?.ok_or_else(|| ApiError::bad("missing required parameter \"start\""))?;
    let start = ms_to_ns("start", start_ms)?;
    let end = p.millis("end")?.map(|e| ms_to_ns("end", e)).transpose()?;
    let page_size = p.count("page_size", DEFAULT_RAW_PAGE_SIZE, MAX_RAW_PAGE_SIZE)?;
    let token = p.get("page_token").map(str::to_owned);
    let (store, spec, lateness) = (state.store.clone(), state.engine.window, state.engine.allowed_lateness);
    let (m, d) = (metric.clone(), dimension.clone());
    let (window, count) = blocking(move || resolve_window(&store, &m, &d, &spec, (start_ms, start), end)).await?;
    let query = DrillDown {
        metric: metric.clone(),
        dimension: dimension.clone(),
        window_spec: spec,
        window,
        allowed_lateness: lateness,
    };
    let page = state.raw.drill_down(query, page_size, token).await.map_err(|e| match e {
        StoreError::InvalidPageToken(why) => ApiError::bad(format!("parameter \"page_token\": {why}")),
        other => ApiError::Store(other),
    })?;
    let records: Vec<RecordView> = page.records.iter().map(RecordView::of_raw).collect();
    ok_json(&json!({
        "metric": metric,
        "dimension": dimension_key::encode(&dimension),
        "start": ms(window.start),
        "end": ms(window.end),
        "count_in_point": count,
        "records": records,
        "next_page_token": page.next_page_token,
    }))
}

async fn dead_letters(state: web::Data<HttpState>, req: HttpRequest) -> ApiResult {
    let p = QueryParams::parse(req.query_string())?;
    let range = TimeRange::resolve(&p, ns_to_ms(now_nanos()), DEFAULT_SPAN_MS)?;
    let limit = p.count("limit", DEFAULT_DEAD_LETTER_LIMIT, MAX_DEAD_LETTER_LIMIT)?;
    let store = state.store.clone();
    let mut letters = blocking(move || Ok(store.dead_letters(range.from, range.to, limit + 1)?)).await?;
    let truncated = letters.len() > limit;
    letters.truncate(limit);
    let views: Vec<DeadLetterView> = letters.iter().map(DeadLetterView::of).collect();
    ok_json(&json!({
        "from": range.from_ms,
        "to": range.to_ms,
        "dead_letters": views,
        "truncated": truncated,
    }))
}
