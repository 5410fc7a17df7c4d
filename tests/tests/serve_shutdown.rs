//! `meshmon-aggregator serve` stops on SIGTERM even while an agent keeps its ingest stream open
//! (agents always do): it drains for a bounded time, flushes, and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use meshmon_tests::{Aggregator, LogsOnFailure};

#[test]
fn sigterm_with_an_open_ingest_connection_exits_after_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::start(dir.path(), "").unwrap();
    let mut logs = LogsOnFailure::default();
    logs.add(&agg.proc);
    // An idle client connection, as an agent between batches holds one.
    let conn = TcpStream::connect(agg.grpc).unwrap();
    let started = Instant::now();
    let status = agg.proc.terminate(Duration::from_secs(30)).unwrap();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    let log = agg.proc.log_text();
    assert!(log.contains("closing their streams"), "the drain was cut short, and says so:\n{log}");
    assert!(log.contains("pipeline flushed"), "shards flushed before exit:\n{log}");
    assert!(took >= Duration::from_secs(4), "exited before the drain ({took:?}): was the connection open?");
    drop(conn);
}
