//! Round-trip tests of the stored value formats (`store::codec`).
//!
//! Role: aggregate points, raw row values and dead letters read back bit-for-bit — exact
//! decimals at the `i128` extremes, doubles by their bits (−0.0, subnormals, extremes; never
//! NaN: the engine refuses it) — and truncated, extended or garbage bytes are errors, never
//! panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshmon_aggregator::engine::stats::Totals;
use meshmon_aggregator::engine::{Record, RecordId, Stats, Value};
use meshmon_aggregator::store::{DeadLetterValue, RawRowKey, RawRowValue, decode_point, encode_point};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>().prop_filter("engine values are never NaN", |f| !f.is_nan()).prop_map(Value::Float),
        prop_oneof![Just(-0.0f64), Just(f64::MIN_POSITIVE / 4.0), Just(f64::MAX), Just(f64::MIN)]
            .prop_map(Value::Float),
        any::<i128>().prop_map(Value::Decimal),
        prop_oneof![Just(i128::MIN), Just(i128::MAX), Just(0i128), Just(1i128), Just(-100_000_000i128)]
            .prop_map(Value::Decimal),
    ]
}

/// Values compared by their exact representation (bits for doubles).
fn same(a: Value, b: Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Decimal(x), Value::Decimal(y)) => x == y,
        _ => false,
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), Just(String::new()), Just("a\0b".to_string())]
}

fn tags() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..4)
}

fn stats() -> impl Strategy<Value = Stats> {
    (
        (any::<u64>(), any::<u64>(), any::<f64>().prop_filter("no NaN", |f| !f.is_nan()), any::<i128>()),
        (value(), value(), value()),
        (any::<i64>(), text(), any::<u64>(), any::<u32>()),
    )
        .prop_map(
            |((count, float_count, float_sum, decimal_sum), (min, max, last), (last_time, agent, sequence, index))| {
                Stats {
                    totals: Totals { count, float_count, float_sum, decimal_sum, min, max },
                    last,
                    last_time,
                    last_id: RecordId { agent: agent.into(), sequence, index },
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn points_round_trip_exactly(s in stats(), start in any::<i64>(), end in any::<i64>(), revision in any::<u32>()) {
        let bytes = encode_point(end, &s, revision);
        let p = decode_point(start, &bytes).unwrap();
        prop_assert_eq!((p.window.start, p.window.end, p.revision), (start, end, revision));
        let (a, b) = (&p.stats.totals, &s.totals);
        prop_assert_eq!((a.count, a.float_count, a.decimal_sum), (b.count, b.float_count, b.decimal_sum));
        prop_assert_eq!(a.float_sum.to_bits(), b.float_sum.to_bits());
        prop_assert!(same(a.min, b.min) && same(a.max, b.max) && same(p.stats.last, s.last));
        prop_assert_eq!((p.stats.last_time, &p.stats.last_id), (s.last_time, &s.last_id));
        for n in 0..bytes.len() {
            prop_assert!(decode_point(start, &bytes[..n]).is_err(), "truncated at {}", n);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(decode_point(start, &longer).is_err());
    }

    #[test]
    fn raw_rows_round_trip(v in value(), t in tags(), raw in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        watermark in any::<i64>()) {
        let bytes = RawRowValue::encode(v, &t, raw.as_deref(), watermark);
        let got = RawRowValue::decode(&bytes).unwrap();
        prop_assert!(same(got.value, v));
        prop_assert_eq!((&got.tags, &got.raw, got.watermark), (&t, &raw, watermark));
        prop_assert_eq!(RawRowValue::decode_watermark(&bytes), Ok(watermark));
        for n in 0..bytes.len() {
            prop_assert!(RawRowValue::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn dead_letters_round_trip(reason in text(), metric in text(), v in value(), time in any::<i64>(),
        cluster in text(), node in text(), t in tags(), raw in prop::option::of(prop::collection::vec(any::<u8>(), 0..40))) {
        let record = Record { metric, value: v, time, cluster, node, tags: t };
        let bytes = DeadLetterValue::encode(&reason, &record, raw.as_deref());
        let got = DeadLetterValue::decode(&bytes).unwrap();
        prop_assert!(same(got.record.value, v));
        prop_assert_eq!((&got.reason, &got.raw), (&reason, &raw));
        prop_assert_eq!((&got.record.metric, got.record.time, &got.record.cluster, &got.record.node, &got.record.tags),
            (&record.metric, record.time, &record.cluster, &record.node, &record.tags));
    }

    #[test]
    fn garbage_is_an_error_or_a_value_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_point(0, &bytes);
        let _ = RawRowValue::decode(&bytes);
        let _ = DeadLetterValue::decode(&bytes);
    }
}

#[test]
fn a_raw_row_joins_its_key_back_into_the_record() {
    let key = RawRowKey {
        salt: 3,
        metric: "cpu".into(),
        bucket: 60,
        cluster: "c".into(),
        node: "n".into(),
        time: 61,
        agent: "a\0".into(),
        sequence: 9,
        index: 2,
    };
    let tags = vec![("env".to_string(), "prod".to_string())];
    let bytes = RawRowValue::encode(Value::Decimal(1_500_000_001), &tags, Some(b"line"), -7);
    let view = RawRowValue::decode(&bytes).unwrap().into_view(key);
    assert_eq!(view.id, RecordId { agent: "a\0".into(), sequence: 9, index: 2 });
    assert_eq!(
        view.record,
        Record {
            metric: "cpu".into(),
            value: Value::Decimal(1_500_000_001),
            time: 61,
            cluster: "c".into(),
            node: "n".into(),
            tags
        }
    );
    assert_eq!((view.raw.as_deref(), view.watermark), (Some(b"line".as_slice()), -7));
}

#[test]
fn unknown_versions_are_refused() {
    let mut bytes = RawRowValue::encode(Value::Float(1.0), &[], None, 0);
    bytes[0] = 2;
    assert!(RawRowValue::decode(&bytes).unwrap_err().to_string().contains("version 2"));
}
