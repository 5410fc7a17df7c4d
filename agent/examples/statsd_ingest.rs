//! Ingest rate of the statsd plugin (lines per second).
//!
//! Role: a measurement, not a test. First folds prepared datagrams into the plugin's
//! aggregation in a loop on one thread (parse + aggregate, no sockets). Then starts the plugin's
//! UDP listener on `127.0.0.1:0` inside a Tokio runtime, sends the same datagrams from
//! `--senders` threads as fast as they go for `--seconds`, swaps the interval out every second
//! as the agent would (`collect`, records built), and reports lines sent, lines received and
//! processed per second, and the loss (datagrams the kernel dropped because the listener was
//! behind). The datagrams hold `--lines` lines each over `--names` series: a mix of counters
//! with sample rates, timers with a DogStatsD tag, gauges and sets. Touches loopback sockets.
//!
//!     cargo run --release -p meshmon-agent --example statsd_ingest -- --seconds 5 --senders 1
//!
//! Options: `--seconds S` (default 5), `--senders N` (default 1), `--lines L` per datagram
//! (default 20), `--names K` distinct series (default 200).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use meshmon_agent::metrics::Metrics;
use meshmon_agent::plugins::statsd::{Aggregator, Bounds, StatsdPlugin, StatsdSettings};
use meshmon_agent::plugins::{Plugin, PluginContext};
use meshmon_agent::record::double_value;

struct Options {
    seconds: u64,
    senders: usize,
    lines: usize,
    names: usize,
}

fn options() -> Options {
    let mut o = Options { seconds: 5, senders: 1, lines: 20, names: 200 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--senders" => o.senders = value.parse().expect("--senders N"),
            "--lines" => o.lines = value.parse().expect("--lines L"),
            "--names" => o.names = value.parse().expect("--names K"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// 64 different datagrams of `lines` lines over `names` series.
fn datagrams(lines: usize, names: usize) -> Vec<Vec<u8>> {
    let mut n = 0usize;
    (0..64)
        .map(|_| {
            let mut d = String::new();
            for _ in 0..lines {
                let series = n % names;
                let line = match n % 4 {
                    0 => format!("shop.orders.{series}:1|c|@0.5\n"),
                    1 => format!("shop.latency.{series}:{}.{}|ms|#route:checkout\n", n % 250, n % 10),
                    2 => format!("shop.queue.{series}:{}|g\n", n % 100),
                    _ => format!("shop.visitors.{series}:user{}|s\n", n % 1000),
                };
                d.push_str(&line);
                n += 1;
            }
            d.into_bytes()
        })
        .collect()
}

fn main() {
    let o = options();
    let payload = datagrams(o.lines, o.names);
    let lines_per = o.lines as f64;
    let bytes: usize = payload.iter().map(Vec::len).sum::<usize>() / payload.len();

    // 1. Parse + aggregate only, one thread.
    let bounds = Bounds { max_names: 100_000, max_values: 1_000, max_tags: 10 };
    let mut agg = Aggregator::new(bounds);
    let started = Instant::now();
    let mut folded = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        for d in &payload {
            agg.ingest(d);
        }
        folded += payload.len() as u64;
        if folded.is_multiple_of(64 * 100) {
            let _ = agg.take().records("stats", meshmon_agent::record::now_timestamp());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "aggregation only (one thread): {:.0} lines/s ({:.0} datagrams/s of {} lines, ~{bytes} bytes)",
        folded as f64 * lines_per / secs,
        folded as f64 / secs,
        o.lines
    );

    // 2. Through UDP into the running listener.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = PluginContext { state_dir: dir.path().to_owned(), shutdown, metrics: Arc::new(Metrics::new()) };
        let settings = StatsdSettings { listen: "127.0.0.1:0".into(), max_names: 100_000, ..StatsdSettings::default() };
        let mut plugin = StatsdPlugin::start(&settings, "bench", &ctx).expect("listener");
        let addr = plugin.local_addr();
        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..o.senders)
            .map(|_| {
                let (running, sent, payload) = (Arc::clone(&running), Arc::clone(&sent), payload.clone());
                std::thread::spawn(move || {
                    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                    s.connect(addr).expect("connect");
                    let mut i = 0usize;
                    while running.load(Ordering::Relaxed) {
                        if s.send(&payload[i % payload.len()]).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let mut received = 0.0;
        let mut records = 0usize;
        while started.elapsed() < Duration::from_secs(o.seconds) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let out = plugin.collect(SystemTime::now()).await.expect("collect");
            records += out.len();
            received += out.iter().filter(|r| r.metric == "statsd.lines").filter_map(double_value).sum::<f64>();
        }
        running.store(false, Ordering::Relaxed);
        for t in threads {
            t.join().expect("sender");
        }
        let secs = started.elapsed().as_secs_f64();
        // What arrived after the last swap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let out = plugin.collect(SystemTime::now()).await.expect("collect");
        records += out.len();
        received += out.iter().filter(|r| r.metric == "statsd.lines").filter_map(double_value).sum::<f64>();
        let sent_lines = sent.load(Ordering::Relaxed) as f64 * lines_per;
        println!(
            "UDP listener ({} sender threads, {} cores): sent {:.0} lines/s, received and aggregated {:.0} lines/s, \
             loss {:.1} % (kernel drops while the listener is behind), {records} records over {:.0} s",
            o.senders,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            sent_lines / secs,
            received / secs,
            if sent_lines > 0.0 { 100.0 * (1.0 - received / sent_lines) } else { 0.0 },
            secs
        );
    });
}
