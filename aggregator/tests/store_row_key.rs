//! Property tests of the raw-record row key (`store::row_key`).
//!
//! Role: for arbitrary keys — strings of any characters including NUL, any times, sequences
//! and indices — `decode(encode(k)) == k`, and the byte order of encoded keys equals the tuple
//! order of the keys; malformed bytes decode to an error, never a panic; the layout's salt,
//! buckets and scan ranges hold exactly the rows they promise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshmon_aggregator::engine::{Record, RecordIdRef, Value};
use meshmon_aggregator::store::{RawRowKey, RowKeyLayout};
use proptest::prelude::*;

/// Strings biased towards the bytes that matter to the escaping: NUL, 0x01, 0xFF-adjacent
/// code points, and ordinary text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop_oneof![Just('\0'), Just('\u{1}'), Just('a'), Just('\u{ff}'), Just('é')], 0..6)
            .prop_map(|cs| cs.into_iter().collect()),
        any::<String>(),
    ]
}

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), -3i64..3, Just(i64::MIN), Just(i64::MAX)]
}

fn key() -> impl Strategy<Value = RawRowKey> {
    (any::<u8>(), text(), time(), text(), text(), time(), text(), any::<u64>(), any::<u32>()).prop_map(
        |(salt, metric, bucket, cluster, node, time, agent, sequence, index)| RawRowKey {
            salt,
            metric,
            bucket,
            cluster,
            node,
            time,
            agent,
            sequence,
            index,
        },
    )
}

/// Two keys that share a random-length prefix of fields, so comparisons reach every field.
/// Copies one field from the second key into the first.
type CopyField<'a> = &'a dyn Fn(&mut RawRowKey, &RawRowKey);

fn key_pair() -> impl Strategy<Value = (RawRowKey, RawRowKey)> {
    (key(), key(), 0usize..10).prop_map(|(a, mut b, shared)| {
        let fields: [CopyField<'_>; 9] = [
            &|b, a| b.salt = a.salt,
            &|b, a| b.metric = a.metric.clone(),
            &|b, a| b.bucket = a.bucket,
            &|b, a| b.cluster = a.cluster.clone(),
            &|b, a| b.node = a.node.clone(),
            &|b, a| b.time = a.time,
            &|b, a| b.agent = a.agent.clone(),
            &|b, a| b.sequence = a.sequence,
            &|b, a| b.index = a.index,
        ];
        for f in fields.iter().take(shared) {
            f(&mut b, &a);
        }
        (a, b)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn decode_inverts_encode(k in key()) {
        prop_assert_eq!(RawRowKey::decode(&k.encode()), Ok(k));
    }

    #[test]
    fn byte_order_is_tuple_order((a, b) in key_pair()) {
        prop_assert_eq!(a.encode().cmp(&b.encode()), a.cmp(&b));
        prop_assert_eq!(RawRowKey::unsalted(&a.encode()).cmp(RawRowKey::unsalted(&b.encode())),
            (&a.metric, a.bucket, &a.cluster, &a.node, a.time, &a.agent, a.sequence, a.index)
                .cmp(&(&b.metric, b.bucket, &b.cluster, &b.node, b.time, &b.agent, b.sequence, b.index)));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(k) = RawRowKey::decode(&bytes) {
            prop_assert_eq!(k.encode(), bytes, "a decodable key has exactly one encoding");
        }
    }

    #[test]
    fn truncated_or_extended_keys_are_errors(k in key(), cut in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let bytes = k.encode();
        let n = cut.index(bytes.len());
        prop_assert!(RawRowKey::decode(&bytes[..n]).is_err());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(RawRowKey::decode(&longer).is_err());
    }

    #[test]
    fn time_ranges_hold_exactly_their_buckets(
        t in -1_000_000i64..1_000_000, from in -1_000_000i64..1_000_000, len in 1i64..500_000,
        size in 1i64..200_000, salts in 1u8..=32, metric in text(), other in text(),
    ) {
        let layout = RowKeyLayout::new(size, salts).unwrap();
        let record = Record { metric: metric.clone(), value: Value::Float(1.0), time: t, cluster: "c".into(),
            node: "n".into(), tags: Vec::new() };
        let k = layout.key(RecordIdRef { agent: "a", sequence: 1, index: 0 }, &record);
        prop_assert!(k.salt < salts);
        prop_assert!(k.bucket <= t && t < k.bucket + size);
        prop_assert_eq!(k.decode_time_check(), t);
        let mut direct = Vec::new();
        layout.encode_key(RecordIdRef { agent: "a", sequence: 1, index: 0 }, &record, &mut direct);
        prop_assert_eq!(&direct, &k.encode(), "encode_key writes the key's bytes");
        let (start, end) = layout.time_range(k.salt, &metric, from, from + len).unwrap();
        let bytes = k.encode();
        let in_range = start <= bytes && bytes < end;
        let overlaps = layout.buckets(from, from + len).any(|b| b == k.bucket);
        prop_assert_eq!(in_range, overlaps);
        if from <= t && t < from + len {
            prop_assert!(in_range, "a row inside the time range is inside the key range");
        }
        if other != metric {
            let mut o = k.clone();
            o.metric = other;
            let ob = o.encode();
            prop_assert!(!(start <= ob && ob < end), "rows of other metrics are outside");
        }
        let prefix = layout.bucket_prefix(k.salt, &metric, k.bucket);
        prop_assert!(bytes.starts_with(&prefix));
    }
}

trait DecodeTime {
    fn decode_time_check(&self) -> i64;
}

impl DecodeTime for RawRowKey {
    fn decode_time_check(&self) -> i64 {
        RawRowKey::decode_time(&self.encode()).unwrap()
    }
}

#[test]
fn salts_are_stable_and_spread() {
    let layout = RowKeyLayout::default();
    assert_eq!(layout.salt_buckets(), 16);
    assert_eq!(layout.salt("cpu", "c1", "n1"), layout.salt("cpu", "c1", "n1"));
    let salts: std::collections::BTreeSet<u8> =
        (0..200).map(|i| layout.salt("cpu", "c1", &format!("node-{i}"))).collect();
    assert_eq!(salts.len(), 16, "200 nodes reach every salt");
    // Pinned values: the salt is part of the stored key and must never change.
    assert_eq!(
        [layout.salt("cpu", "", ""), layout.salt("cpu.usage", "cluster-01", "node-00001")],
        [pinned("cpu", "", ""), pinned("cpu.usage", "cluster-01", "node-00001")]
    );
    assert!(RowKeyLayout::new(0, 4).is_err());
    assert!(RowKeyLayout::new(10, 0).is_err());
}

/// FNV-1a written out independently of the store, modulo 16.
fn pinned(m: &str, c: &str, n: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in m.bytes().chain([0xFF]).chain(c.bytes()).chain([0xFF]).chain(n.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 16) as u8
}

#[test]
fn buckets_cover_negative_times_and_the_ends_of_time() {
    let layout = RowKeyLayout::new(10, 1).unwrap();
    assert_eq!(layout.bucket(-1), -10);
    assert_eq!(layout.buckets(-15, 11).collect::<Vec<_>>(), [-20, -10, 0, 10]);
    assert_eq!(layout.buckets(5, 5).count(), 0);
    let last = layout.buckets(i64::MAX - 25, i64::MAX).collect::<Vec<_>>();
    assert_eq!(last.len(), 3);
    assert!(layout.time_range(0, "m", i64::MAX - 5, i64::MAX).is_some());
    assert!(layout.time_range(0, "m", i64::MIN, i64::MIN + 5).is_some());
    assert!(layout.time_range(0, "m", 5, 5).is_none());
}
