//! Keys of the embedded store's tables other than `raw` (whose key is `row_key.rs`).
//!
//! Role: order-preserving encodings (built from `keybytes.rs`) of
//! - aggregate points: `metric:str | dimension | window spec text:str | window start:i64`;
//! - the retention index of points: `window start:i64 | aggregate key`;
//! - dimension values seen per metric: `metric:str | dimension`;
//! - clusters seen per (metric, node), used to narrow node drill-downs:
//!   `metric:str | node:str | cluster:str`;
//! - dead letters: `arrival:i64 | agent:str | sequence:u64 | index:u32`.
//!
//! A dimension is `kind:u8` (0 fleet, 1 cluster, 2 node, 3 tag, 4 set) followed by its strings;
//! a set is `0x01 | field:str | value:str` per pair, closed by `0x00`. Pure: touches nothing but
//! `keybytes.rs`.

use std::sync::Arc;

use super::keybytes::{KeyError, KeyReader, put_i64, put_str, put_u32, put_u64};
use crate::engine::{Dimension, Nanos, RecordIdRef, WindowSpec};

const DIM_FLEET: u8 = 0;
const DIM_CLUSTER: u8 = 1;
const DIM_NODE: u8 = 2;
const DIM_TAG: u8 = 3;
const DIM_SET: u8 = 4;
const SET_PAIR: u8 = 1;
const SET_END: u8 = 0;

/// Appends the encoding of a dimension value.
pub fn put_dimension(out: &mut Vec<u8>, d: &Dimension) {
    match d {
        Dimension::Fleet => out.push(DIM_FLEET),
        Dimension::Cluster(c) => {
            out.push(DIM_CLUSTER);
            put_str(out, c);
        }
        Dimension::Node(n) => {
            out.push(DIM_NODE);
            put_str(out, n);
        }
        Dimension::Tag { key, value } => {
            out.push(DIM_TAG);
            put_str(out, key);
            put_str(out, value);
        }
        Dimension::Set(pairs) => {
            out.push(DIM_SET);
            for (k, v) in pairs.iter() {
                out.push(SET_PAIR);
                put_str(out, k);
                put_str(out, v);
            }
            out.push(SET_END);
        }
    }
}

/// Reads a dimension value.
pub fn get_dimension(r: &mut KeyReader<'_>) -> Result<Dimension, KeyError> {
    let s = |r: &mut KeyReader<'_>, f| r.str(f).map(Arc::<str>::from);
    Ok(match r.u8("dimension kind")? {
        DIM_FLEET => Dimension::Fleet,
        DIM_CLUSTER => Dimension::Cluster(s(r, "cluster")?),
        DIM_NODE => Dimension::Node(s(r, "node")?),
        DIM_TAG => Dimension::Tag { key: s(r, "tag key")?, value: s(r, "tag value")? },
        DIM_SET => {
            let mut pairs = Vec::new();
            loop {
                match r.u8("set pair")? {
                    SET_PAIR => pairs.push((s(r, "set field")?, s(r, "set value")?)),
                    SET_END => break,
                    tag => return Err(KeyError::UnknownTag { field: "set pair", tag }),
                }
            }
            Dimension::Set(pairs.into())
        }
        tag => return Err(KeyError::UnknownTag { field: "dimension kind", tag }),
    })
}

/// The key prefix of every point of one series under one window spec.
pub fn series_prefix(metric: &str, dimension: &Dimension, spec: &WindowSpec) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + metric.len());
    put_str(&mut out, metric);
    put_dimension(&mut out, dimension);
    put_str(&mut out, &spec.to_string());
    out
}

/// The key of one point: the series prefix plus the window start.
pub fn point_key(series_prefix: &[u8], window_start: Nanos) -> Vec<u8> {
    let mut out = Vec::with_capacity(series_prefix.len() + 8);
    out.extend_from_slice(series_prefix);
    put_i64(&mut out, window_start);
    out
}

/// The retention-index key of a point: its window start, then its key.
pub fn point_index_key(window_start: Nanos, point_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(point_key.len() + 8);
    put_i64(&mut out, window_start);
    out.extend_from_slice(point_key);
    out
}

/// Splits a retention-index key into (window start, point key).
pub fn split_point_index_key(key: &[u8]) -> Result<(Nanos, &[u8]), KeyError> {
    let start = KeyReader::new(key).i64("window start")?;
    Ok((start, key.get(8..).unwrap_or_default()))
}

/// The key of one dimension value seen for `metric` (the prefix alone lists them all).
pub fn dimension_key(metric: &str, dimension: Option<&Dimension>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + metric.len());
    put_str(&mut out, metric);
    if let Some(d) = dimension {
        put_dimension(&mut out, d);
    }
    out
}

/// Reads the dimension back from a [`dimension_key`].
pub fn decode_dimension_key(key: &[u8]) -> Result<(String, Dimension), KeyError> {
    let mut r = KeyReader::new(key);
    let metric = r.str("metric")?;
    let dimension = get_dimension(&mut r)?;
    r.finish()?;
    Ok((metric, dimension))
}

/// The key recording that `node` reported `metric` under `cluster` (without `cluster`: the
/// prefix of every cluster of that node).
pub fn node_cluster_key(metric: &str, node: &str, cluster: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + metric.len() + node.len());
    put_str(&mut out, metric);
    put_str(&mut out, node);
    if let Some(c) = cluster {
        put_str(&mut out, c);
    }
    out
}

/// The cluster of a [`node_cluster_key`].
pub fn decode_node_cluster_key(key: &[u8]) -> Result<String, KeyError> {
    let mut r = KeyReader::new(key);
    r.str("metric")?;
    r.str("node")?;
    let cluster = r.str("cluster")?;
    r.finish()?;
    Ok(cluster)
}

/// The key of one dead letter.
pub fn dead_letter_key(arrival: Nanos, id: RecordIdRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + id.agent.len());
    put_i64(&mut out, arrival);
    put_str(&mut out, id.agent);
    put_u64(&mut out, id.sequence);
    put_u32(&mut out, id.index);
    out
}

/// The start of the dead-letter keys at or after `arrival`.
pub fn dead_letter_bound(arrival: Nanos) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    put_i64(&mut out, arrival);
    out
}

/// Reads (arrival, agent, sequence, index) back from a [`dead_letter_key`].
pub fn decode_dead_letter_key(key: &[u8]) -> Result<(Nanos, String, u64, u32), KeyError> {
    let mut r = KeyReader::new(key);
    let out = (r.i64("arrival")?, r.str("agent")?, r.u64("sequence")?, r.u32("index")?);
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_round_trip() {
        let dims = [
            Dimension::Fleet,
            Dimension::Cluster("c\0".into()),
            Dimension::Node("".into()),
            Dimension::Tag { key: "k".into(), value: "v\0x".into() },
            Dimension::Set(vec![("cluster".into(), "c1".into()), ("region".into(), "eu".into())].into()),
            Dimension::Set(Vec::new().into()),
        ];
        for d in dims {
            let key = dimension_key("m\0", Some(&d));
            assert_eq!(decode_dimension_key(&key), Ok(("m\0".to_string(), d)));
        }
        assert!(decode_dimension_key(&[b'm', 0, 1, 9]).is_err());
        assert!(decode_dimension_key(&[b'm', 0, 1, DIM_SET, 7]).is_err());
    }

    #[test]
    fn point_keys_sort_by_window_start_within_a_series() {
        let spec = WindowSpec::Tumbling { size: 10, offset: 0 };
        let p = series_prefix("m", &Dimension::Fleet, &spec);
        assert!(point_key(&p, -5) < point_key(&p, 3));
        let k = point_key(&p, 3);
        let idx = point_index_key(3, &k);
        assert_eq!(split_point_index_key(&idx), Ok((3, k.as_slice())));
    }
}
