//! Generated record streams shared by the engine's property tests (`oracle.rs`,
//! `checkpoint.rs`): records with disorder, past-lateness and absurd event times, NaN values,
//! invalid tags; batches from several inputs and agents, re-sent batches and ticks.
//! Each test builds its own scenario around these steps. Touches nothing.
#![allow(dead_code)]

use meshmon_aggregator::engine::{Nanos, Record, Value, WindowSpec};
use proptest::prelude::*;

/// First processing time of a stream.
pub const T0: Nanos = 1_000;
/// The engine's `max_future` in these tests: event times further ahead are invalid.
pub const MAX_FUTURE: Nanos = 30;

#[derive(Debug, Clone)]
pub struct GenRecord {
    pub metric: u8,
    pub cluster: u8,
    pub node: u8,
    pub tags: u8,
    pub value: GenValue,
    /// Event time relative to processing time.
    pub offset: i64,
    /// Copy cluster, node and tags from the previous record of the batch (as agents do).
    pub same_context: bool,
    /// Carry a tag whose value holds a newline (an invalid context).
    pub bad_tag: bool,
}

#[derive(Debug, Clone)]
pub enum GenValue {
    Float(i32),
    Tenth(i32),
    Decimal(i64),
    Nan,
}

#[derive(Debug, Clone)]
pub enum Step {
    Batch { input: u8, agent: u8, advance: u8, records: Vec<GenRecord> },
    Resend { back: u8, advance: u8 },
    Tick { advance: u8 },
}

pub fn window_strategy() -> impl Strategy<Value = WindowSpec> {
    prop_oneof![
        (1i64..12, 0i64..12).prop_map(|(size, off)| WindowSpec::Tumbling { size, offset: off % size }),
        (1i64..5, 1i64..4, 0i64..12).prop_map(|(slide, k, off)| WindowSpec::Sliding {
            size: slide * k,
            slide,
            offset: off % slide
        }),
        (2i64..7, 1i64..4, 0i64..12).prop_map(|(size, slide, off)| {
            let slide = slide.min(size);
            WindowSpec::Sliding { size, slide, offset: off % slide }
        }),
        (1i64..8).prop_map(|gap| WindowSpec::Session { gap }),
    ]
}

pub fn record_strategy() -> impl Strategy<Value = GenRecord> {
    let value = prop_oneof![
        6 => (-40i32..40).prop_map(GenValue::Float),
        2 => (-40i32..40).prop_map(GenValue::Tenth),
        3 => (-3_000_000_000i64..3_000_000_000).prop_map(GenValue::Decimal),
        1 => Just(GenValue::Nan),
    ];
    let offset = prop_oneof![
        12 => -12i64..=2,
        2 => -40i64..=-12,
        1 => Just(MAX_FUTURE + 1),
        1 => Just(i64::MAX / 2),
    ];
    (0u8..20, 0u8..3, 0u8..4, 0u8..8, value, offset, prop::bool::weighted(0.6), prop::bool::weighted(0.03)).prop_map(
        |(metric, cluster, node, tags, value, offset, same_context, bad_tag)| GenRecord {
            metric,
            cluster,
            node,
            tags,
            value,
            offset,
            same_context,
            bad_tag,
        },
    )
}

pub fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..3, 0u8..3, 0u8..4, prop::collection::vec(record_strategy(), 0..7))
            .prop_map(|(input, agent, advance, records)| Step::Batch { input, agent, advance, records }),
        1 => (0u8..6, 0u8..3).prop_map(|(back, advance)| Step::Resend { back, advance }),
        2 => (0u8..12).prop_map(|advance| Step::Tick { advance }),
    ]
}

/// The engine record of `g` at processing time `now`, its metric one of `metrics` names.
pub fn make_record(g: &GenRecord, now: Nanos, metrics: u8) -> Record {
    let value = match g.value {
        GenValue::Float(v) => Value::Float(f64::from(v) * 0.5),
        GenValue::Tenth(v) => Value::Float(f64::from(v) * 0.1),
        GenValue::Decimal(n) => Value::Decimal(i128::from(n)),
        GenValue::Nan => Value::Float(f64::NAN),
    };
    let mut tags = Vec::new();
    if g.tags & 1 != 0 {
        tags.push(("env".to_string(), if g.node.is_multiple_of(2) { "prod" } else { "dev" }.to_string()));
    }
    if g.tags & 2 != 0 {
        tags.push(("region".to_string(), format!("r{}", g.cluster % 2)));
    }
    if g.tags & 4 != 0 {
        tags.push(("rack".to_string(), format!("k{}", g.node)));
    }
    if g.bad_tag {
        tags.push(("note".to_string(), "two\nlines".to_string()));
    }
    Record {
        metric: if g.metric == 19 { String::new() } else { format!("m{}", g.metric % metrics) },
        value,
        time: now.saturating_add(g.offset),
        cluster: ["c0", "c1", ""][g.cluster as usize].to_string(),
        node: format!("n{}", g.node),
        tags,
    }
}
