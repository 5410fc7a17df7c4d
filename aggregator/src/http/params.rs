//! Query-string parameters of the API: parsing and checking, with clear errors.
//!
//! Role: [`QueryParams`] reads a query string once (a repeated parameter is refused) and
//! hands out typed values — the metric, a dimension key ([`super::dimension_key`]), epoch
//! milliseconds, bounded counts — each failing with a 400 [`ApiError`] that names the
//! parameter. [`TimeRange`] resolves `from`/`to` with their defaults. Millisecond ↔ nanosecond
//! conversions live here too. Pure: touches nothing else (the caller passes "now").

use actix_web::web;

use super::dimension_key;
use super::error::ApiError;
use crate::engine::{Dimension, Nanos, time::NANOS_PER_MILLI};

/// The parsed query string of one request.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses a URL query string (`a=1&b=x%20y`). Repeating a parameter is an error.
    pub fn parse(query: &str) -> Result<QueryParams, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| ApiError::bad(format!("malformed query string: {e}")))?
            .into_inner();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad(format!("parameter {name:?} is given more than once")));
            }
        }
        Ok(QueryParams { pairs })
    }

    /// The raw text of a parameter; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// The raw text of a parameter that must be present.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::bad(format!("missing required parameter {name:?}")))
    }

    /// The `metric` parameter (required).
    pub fn metric(&self) -> Result<String, ApiError> {
        self.required("metric").map(str::to_owned)
    }

    /// The `dimension` parameter as a dimension key text; absent means the fleet.
    pub fn dimension(&self) -> Result<Dimension, ApiError> {
        match self.get("dimension") {
            None => Ok(Dimension::Fleet),
            Some(text) => {
                dimension_key::parse(text).map_err(|e| ApiError::bad(format!("parameter \"dimension\": {e}")))
            }
        }
    }

    /// An integer number of epoch milliseconds, if given.
    pub fn millis(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|text| {
                text.parse::<i64>().map_err(|_| {
                    ApiError::bad(format!(
                        "parameter {name:?}: expected an integer of epoch milliseconds, got {text:?}"
                    ))
                })
            })
            .transpose()
    }

    /// A count in `1..=max`, `default` when absent.
    pub fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        let out_of_range =
            || ApiError::bad(format!("parameter {name:?} must be an integer from 1 to {max}, got {text:?}"));
        match text.parse::<u64>() {
            Ok(n) if n >= 1 && n <= max as u64 => usize::try_from(n).map_err(|_| out_of_range()),
            _ => Err(out_of_range()),
        }
    }
}

/// Epoch milliseconds → nanoseconds, refusing instants outside the nanosecond range.
pub fn ms_to_ns(name: &str, ms: i64) -> Result<Nanos, ApiError> {
    ms.checked_mul(NANOS_PER_MILLI).ok_or_else(|| {
        ApiError::bad(format!("parameter {name:?}: {ms} ms is outside the representable range (years 1678 to 2262)"))
    })
}

/// Nanoseconds → epoch milliseconds, rounded down.
pub fn ns_to_ms(ns: Nanos) -> i64 {
    ns.div_euclid(NANOS_PER_MILLI)
}

/// A resolved `[from, to)` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start, epoch milliseconds.
    pub from_ms: i64,
    /// Exclusive end, epoch milliseconds.
    pub to_ms: i64,
    /// `from_ms` in nanoseconds.
    pub from: Nanos,
    /// `to_ms` in nanoseconds.
    pub to: Nanos,
}

impl TimeRange {
    /// `[from, to)` from the `from` and `to` parameters. Defaults: `to` = `from + span` when
    /// only `from` is given, else `anchor_ms + 1` (so the anchor instant is included); `from`
    /// = `to − span`. `from > to` is an error; `from == to` is an empty range.
    pub fn resolve(params: &QueryParams, anchor_ms: i64, span_ms: i64) -> Result<TimeRange, ApiError> {
        let from = params.millis("from")?;
        let to_ms = match (params.millis("to")?, from) {
            (Some(to), _) => to,
            (None, Some(from)) => from.saturating_add(span_ms),
            (None, None) => anchor_ms.saturating_add(1),
        };
        let from_ms = from.unwrap_or_else(|| to_ms.saturating_sub(span_ms));
        if from_ms > to_ms {
            return Err(ApiError::bad(format!("\"from\" ({from_ms}) must not be after \"to\" ({to_ms})")));
        }
        Ok(TimeRange { from_ms, to_ms, from: ms_to_ns("from", from_ms)?, to: ms_to_ns("to", to_ms)? })
    }
}
