//! Deterministic synthetic fleets: record streams with realistic disorder, for benchmarks,
//! demos and tests.
//!
//! Role: generates batches as agents would send them — one agent per node, each batch a few
//! time points × every metric of that node, event times jittered backwards, arrival
//! (processing) time just after the batch's newest record, agents mapped onto a fixed number
//! of inputs (partitions). Same seed, same stream. Pure: no clock, no I/O.

use crate::engine::record::{Record, Value};
use crate::engine::time::{NANOS_PER_SEC, Nanos};

/// The shape of a synthetic fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetShape {
    /// Distinct metric names.
    pub metrics: usize,
    /// Distinct clusters (nodes are spread over them).
    pub clusters: usize,
    /// Distinct nodes; one agent each.
    pub nodes: usize,
    /// Values of the `env` tag (by node) and of the `region` tag (by cluster).
    pub tag_values: (usize, usize),
    /// Time points per batch (each point carries every metric).
    pub points_per_batch: usize,
    /// Event-time distance between points.
    pub interval: Nanos,
    /// Event times are moved back by up to this much (uniformly).
    pub jitter: Nanos,
    /// Inputs (partitions) the agents are spread over.
    pub inputs: usize,
    /// Event time of the first point.
    pub start: Nanos,
}

impl FleetShape {
    /// The benchmark reference shape: 20 metrics, 10 clusters, 1 000 nodes, 2 tags per record,
    /// event times jittered back up to 4 s, 5 points of 1 s per batch (100 records), 12 inputs.
    pub fn reference() -> FleetShape {
        FleetShape {
            metrics: 20,
            clusters: 10,
            nodes: 1_000,
            tag_values: (3, 5),
            points_per_batch: 5,
            interval: NANOS_PER_SEC,
            jitter: 4 * NANOS_PER_SEC,
            inputs: 12,
            start: 1_767_225_600 * NANOS_PER_SEC, // 2026-01-01T00:00:00Z
        }
    }

    /// Series this shape produces under fleet + cluster + node + 2 tag dimensions.
    pub fn series(&self) -> usize {
        self.metrics * (1 + self.clusters + self.nodes + self.tag_values.0 + self.tag_values.1)
    }
}

impl Default for FleetShape {
    fn default() -> Self {
        FleetShape::reference()
    }
}

/// One batch as an agent sends it.
#[derive(Debug, Clone)]
pub struct SynthBatch {
    /// The input (partition) it arrives on.
    pub input: String,
    /// The sending agent.
    pub agent: String,
    /// The agent's batch sequence number (from 1).
    pub sequence: u64,
    /// Processing time of its arrival.
    pub now: Nanos,
    /// The records.
    pub records: Vec<Record>,
}

/// A small deterministic PRNG (xorshift64*), enough for test data.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Generates at least `records` records (whole rounds) of `shape`.
pub fn generate(shape: &FleetShape, records: usize, seed: u64) -> Vec<SynthBatch> {
    let mut rng = XorShift::new(seed);
    let per_round = shape.nodes * shape.points_per_batch * shape.metrics;
    let rounds = records.div_ceil(per_round.max(1));
    let metric_names: Vec<String> = (0..shape.metrics).map(|m| format!("metric.{m:02}")).collect();
    let mut order: Vec<usize> = (0..shape.nodes).collect();
    let mut batches = Vec::with_capacity(rounds * shape.nodes);
    for round in 0..rounds {
        // Agents report in a different order every round.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let round_start = shape.start + (round * shape.points_per_batch) as Nanos * shape.interval;
        for &node in &order {
            let cluster = node % shape.clusters.max(1);
            let node_name = format!("node-{node:05}");
            let cluster_name = format!("cluster-{cluster:02}");
            let env = format!("env-{}", node % shape.tag_values.0.max(1));
            let region = format!("region-{}", cluster % shape.tag_values.1.max(1));
            let mut recs = Vec::with_capacity(shape.points_per_batch * shape.metrics);
            let mut newest = Nanos::MIN;
            for p in 0..shape.points_per_batch {
                let point = round_start + p as Nanos * shape.interval;
                for name in &metric_names {
                    let time = point - rng.below(shape.jitter.max(1) as u64) as Nanos;
                    newest = newest.max(time);
                    recs.push(Record {
                        metric: name.clone(),
                        value: Value::Float((rng.below(10_000) as f64) * 0.01),
                        time,
                        cluster: cluster_name.clone(),
                        node: node_name.clone(),
                        tags: vec![("env".into(), env.clone()), ("region".into(), region.clone())],
                    });
                }
            }
            batches.push(SynthBatch {
                input: format!("p{}", node % shape.inputs.max(1)),
                agent: node_name,
                sequence: round as u64 + 1,
                now: newest + shape.jitter + NANOS_PER_SEC,
                records: recs,
            });
        }
    }
    batches
}

/// `records` reference-fleet records starting `age` before `now`, as wire batches of
/// `batch_records`, one sequence of batches per stream (agent `bench-app-<stream>`): what the
/// throughput examples push over gRPC or produce to Kafka. Decimals are sent as 0.0 doubles.
pub fn wire_batches(
    records: usize,
    streams: usize,
    batch_records: usize,
    now: Nanos,
    age: Nanos,
) -> Vec<Vec<meshmon_proto::v1::RecordBatch>> {
    use meshmon_proto::v1;
    let shape = FleetShape { start: now - age, ..FleetShape::reference() };
    let all: Vec<v1::Record> = generate(&shape, records, 11)
        .into_iter()
        .flat_map(|b| b.records)
        .map(|r| v1::Record {
            metric: r.metric,
            value: Some(match r.value {
                Value::Float(v) => v1::record::Value::DoubleValue(v),
                Value::Decimal(_) => v1::record::Value::DoubleValue(0.0),
            }),
            event_time: Some(meshmon_proto::nanos_to_timestamp(r.time)),
            cluster: r.cluster,
            node: r.node,
            tags: r.tags.into_iter().collect(),
            raw: None,
        })
        .collect();
    let mut per_stream: Vec<Vec<v1::RecordBatch>> = vec![Vec::new(); streams.max(1)];
    for (i, chunk) in all.chunks(batch_records.max(1)).enumerate() {
        let s = i % per_stream.len();
        let sequence = per_stream[s].len() as u64 + 1;
        per_stream[s].push(v1::RecordBatch {
            agent_id: format!("bench-app-{s}"),
            sequence,
            sent_at: None,
            records: chunk.to_vec(),
        });
    }
    per_stream
}
