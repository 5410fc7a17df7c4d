//! Wire-level round trips and exactness checks for the meshmon schema.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use meshmon_proto::convert::MAX_NANOS;
use meshmon_proto::v1::{
    AckStatus, AggregatePoint, BatchAck, Decimal, Dimension, DimensionKind, Number, RawRecord, Record, RecordBatch,
    Stats, Tumbling, WindowSpec, number, record, window_spec,
};
use meshmon_proto::{
    Duration, PACKAGE, TimeError, Timestamp, duration_to_nanos, nanos_to_duration, nanos_to_timestamp,
    timestamp_to_nanos,
};
use proptest::prelude::*;
use prost::Message;

fn sample_batch() -> RecordBatch {
    let mut tags = HashMap::new();
    tags.insert("region".to_owned(), "eu-west".to_owned());
    tags.insert("disk".to_owned(), "/dev/sda1".to_owned());
    RecordBatch {
        agent_id: "agent-7".to_owned(),
        sequence: 42,
        sent_at: Some(nanos_to_timestamp(1_700_000_000_123_456_789)),
        records: vec![
            Record {
                metric: "cpu.usage".to_owned(),
                value: Some(record::Value::DoubleValue(0.731)),
                event_time: Some(nanos_to_timestamp(1_700_000_000_000_000_001)),
                cluster: "c1".to_owned(),
                node: "n1".to_owned(),
                tags: tags.clone(),
                raw: None,
            },
            Record {
                metric: "billing.amount".to_owned(),
                value: Some(record::Value::DecimalValue("-12345.000000001".parse().unwrap())),
                event_time: Some(nanos_to_timestamp(-1)),
                cluster: String::new(),
                node: "n2".to_owned(),
                tags,
                raw: Some(b"2024-01-01T00:00:00Z charge -12345.000000001 EUR\n\xff".to_vec()),
            },
            Record {
                metric: "empty.raw".to_owned(),
                value: Some(record::Value::DoubleValue(f64::MIN_POSITIVE)),
                event_time: Some(nanos_to_timestamp(i64::MIN)),
                raw: Some(Vec::new()),
                ..Record::default()
            },
        ],
    }
}

#[test]
fn package_name() {
    assert_eq!(PACKAGE, "meshmon.v1");
}

#[test]
fn record_batch_roundtrip() {
    let batch = sample_batch();
    let bytes = batch.encode_to_vec();
    let decoded = RecordBatch::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, batch);
    // `optional bytes`: present-but-empty stays distinguishable from absent.
    assert_eq!(decoded.records[2].raw, Some(Vec::new()));
    assert_eq!(decoded.records[0].raw, None);
    // Length-delimited framing round-trips too.
    let framed = batch.encode_length_delimited_to_vec();
    assert_eq!(RecordBatch::decode_length_delimited(framed.as_slice()).unwrap(), batch);
}

#[test]
fn other_messages_roundtrip() {
    let ack = BatchAck {
        agent_id: "agent-7".to_owned(),
        sequence: u64::MAX,
        status: AckStatus::Duplicate as i32,
        accepted: 3,
        invalid: 1,
        message: "already stored".to_owned(),
    };
    let back = BatchAck::decode(ack.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, ack);
    assert_eq!(back.status(), AckStatus::Duplicate);
    assert_eq!(AckStatus::Rejected.as_str_name(), "ACK_STATUS_REJECTED");
    assert_eq!(DimensionKind::from_str_name("DIMENSION_KIND_SET"), Some(DimensionKind::Set));

    let d = |units, nanos| Decimal { units, nanos };
    let raw = RawRecord {
        agent_id: "a".to_owned(),
        sequence: 1,
        index: 2,
        record: sample_batch().records.into_iter().nth(1),
    };
    assert_eq!(RawRecord::decode(raw.encode_to_vec().as_slice()).unwrap(), raw);

    let point = AggregatePoint {
        window_start: Some(nanos_to_timestamp(0)),
        window_end: Some(nanos_to_timestamp(60_000_000_000)),
        stats: Some(Stats {
            max: Some(Number::from_decimal(d(3, 0))),
            min: Some(Number::from_decimal(d(-3, -5))),
            avg: Some(Number::from_f64(0.1)),
            last: Some(Number::from(d(0, 7))),
            sum: Some(Number::from(-0.0)),
            count: 9,
        }),
        revision: 2,
    };
    assert_eq!(AggregatePoint::decode(point.encode_to_vec().as_slice()).unwrap(), point);

    let dim = Dimension { kind: DimensionKind::Tag as i32, names: vec!["k".to_owned()], values: vec!["v".to_owned()] };
    assert_eq!(Dimension::decode(dim.encode_to_vec().as_slice()).unwrap(), dim);
    let window = WindowSpec {
        kind: Some(window_spec::Kind::Tumbling(Tumbling {
            size: Some(nanos_to_duration(60_000_000_000)),
            offset: None,
        })),
    };
    assert_eq!(WindowSpec::decode(window.encode_to_vec().as_slice()).unwrap(), window);
}

#[test]
fn decimal_sum_is_exact() {
    let a: Decimal = "0.1".parse().unwrap();
    let b: Decimal = "0.2".parse().unwrap();
    let sum = a.to_nano_units().unwrap() + b.to_nano_units().unwrap();
    let sum = Decimal::from_nano_units(sum).unwrap();
    assert_eq!(sum, "0.3".parse().unwrap());
    assert_eq!(sum, Decimal { units: 0, nanos: 300_000_000 });
    assert_eq!(sum.to_string(), "0.3");
    // Unlike binary floating point:
    assert_ne!(0.1_f64 + 0.2_f64, 0.3_f64);
}

#[test]
fn decimal_extremes_survive_the_wire_and_text() {
    for text in ["9223372036854775807.999999999", "-9223372036854775808.999999999", "0.000000001", "-0.000000001"] {
        let d: Decimal = text.parse().unwrap();
        let back = Decimal::decode(d.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.to_string(), text);
        let n = Number::from_decimal(d);
        let n_back = Number::decode(n.encode_to_vec().as_slice()).unwrap();
        assert_eq!(n_back.kind, Some(number::Kind::DecimalValue(d)));
    }
    let max: Decimal = "9223372036854775807.999999999".parse().unwrap();
    assert_eq!(max, Decimal { units: i64::MAX, nanos: MAX_NANOS });
    assert_eq!(max.to_nano_units().unwrap(), 9_223_372_036_854_775_807_999_999_999_i128);
}

#[test]
fn out_of_range_timestamps_are_errors() {
    let t = |seconds, nanos| Timestamp { seconds, nanos };
    assert_eq!(timestamp_to_nanos(&t(i64::MAX, 0)), Err(TimeError::OutOfRange));
    assert_eq!(timestamp_to_nanos(&t(0, -1)), Err(TimeError::NanosOutOfRange));
    // Exact edges of the i64-nanosecond range.
    assert_eq!(timestamp_to_nanos(&t(-9_223_372_037, 145_224_192)), Ok(i64::MIN));
    assert_eq!(timestamp_to_nanos(&t(-9_223_372_037, 145_224_191)), Err(TimeError::OutOfRange));
    assert_eq!(timestamp_to_nanos(&t(9_223_372_036, 854_775_807)), Ok(i64::MAX));
    assert_eq!(timestamp_to_nanos(&t(9_223_372_036, 854_775_808)), Err(TimeError::OutOfRange));
    // A timestamp that went over the wire is checked the same way.
    let wire = t(i64::MAX, 999_999_999).encode_to_vec();
    let decoded = Timestamp::decode(wire.as_slice()).unwrap();
    assert_eq!(timestamp_to_nanos(&decoded), Err(TimeError::OutOfRange));
    let d = Duration { seconds: i64::MIN, nanos: 0 };
    assert_eq!(duration_to_nanos(&d), Err(TimeError::OutOfRange));
}

#[test]
fn malformed_bytes_are_errors() {
    let bytes = sample_batch().encode_to_vec();
    // Every strict prefix that cuts a field short must fail, never panic.
    let mut failures = 0;
    for len in 0..bytes.len() {
        if RecordBatch::decode(&bytes[..len]).is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0);
    assert!(RecordBatch::decode(&bytes[..bytes.len() - 1]).is_err());
    // Garbage.
    for garbage in [
        &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        b"\x0a\xff\xff\xff\xff\x0f", // field 1, length way beyond the buffer
        b"\x07",                     // wire type 7 is invalid
        b"\x00",                     // field number 0 is invalid
        b"\x22\x03\x0a\x05abc",      // nested Record claims more than it has
        b"\x12\x01\x01",             // sequence (varint field) sent as bytes
    ] {
        assert!(RecordBatch::decode(garbage).is_err(), "{garbage:?}");
    }
    // Invalid UTF-8 in a string field.
    assert!(RecordBatch::decode(&b"\x0a\x02\xc3\x28"[..]).is_err());
}

fn valid_decimal() -> impl Strategy<Value = Decimal> {
    (any::<i64>(), 0..=MAX_NANOS, any::<bool>()).prop_map(|(units, mag, neg)| {
        let negative = units < 0 || (units == 0 && neg);
        Decimal { units, nanos: if negative { -mag } else { mag } }
    })
}

proptest! {
    #[test]
    fn prop_timestamp_nanos_roundtrip(n in any::<i64>()) {
        let ts = nanos_to_timestamp(n);
        prop_assert!((0..1_000_000_000).contains(&ts.nanos));
        prop_assert_eq!(timestamp_to_nanos(&ts), Ok(n));
        let wire = Timestamp::decode(ts.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(timestamp_to_nanos(&wire), Ok(n));
    }

    #[test]
    fn prop_timestamp_never_panics(seconds in any::<i64>(), nanos in any::<i32>()) {
        let ts = Timestamp { seconds, nanos };
        if let Ok(n) = timestamp_to_nanos(&ts) {
            prop_assert_eq!(nanos_to_timestamp(n), ts);
        }
    }

    #[test]
    fn prop_duration_nanos_roundtrip(n in any::<i64>()) {
        let d = nanos_to_duration(n);
        prop_assert!(d.nanos.abs() <= MAX_NANOS);
        prop_assert!(d.seconds == 0 || d.nanos == 0 || (d.seconds < 0) == (d.nanos < 0));
        prop_assert_eq!(duration_to_nanos(&d), Ok(n));
    }

    #[test]
    fn prop_decimal_nano_units_roundtrip(d in valid_decimal()) {
        let v = d.to_nano_units().unwrap();
        prop_assert_eq!(Decimal::from_nano_units(v), Ok(d));
        let wire = Decimal::decode(d.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(wire, d);
    }

    #[test]
    fn prop_decimal_text_roundtrip(d in valid_decimal()) {
        let text = d.to_string();
        prop_assert_eq!(text.parse::<Decimal>(), Ok(d));
        prop_assert!(!text.ends_with('0') || !text.contains('.'));
    }

    #[test]
    fn prop_decimal_any_fields_never_panic(units in any::<i64>(), nanos in any::<i32>()) {
        let d = Decimal { units, nanos };
        let _ = d.to_string();
        if let Ok(v) = d.to_nano_units() {
            prop_assert_eq!(Decimal::from_nano_units(v), Ok(d));
        }
    }

    #[test]
    fn prop_decimal_parse_never_panics(s in "[-+0-9.e ]{0,40}") {
        if let Ok(d) = s.parse::<Decimal>() {
            prop_assert!(d.validate().is_ok());
        }
    }

    #[test]
    fn prop_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = RecordBatch::decode(bytes.as_slice());
        let _ = BatchAck::decode(bytes.as_slice());
        let _ = Record::decode(bytes.as_slice());
    }
}
