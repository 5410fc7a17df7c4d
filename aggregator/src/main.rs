//! `meshmon-aggregator` binary: command-line entry point.
//!
//! Role: parses the command line and runs a subcommand: `serve` (the aggregator), `demo`
//! (aggregator + agent + synthetic app on one machine), `aggregate` (batch mode over a
//! JSON-lines file). Configuration precedence: TOML file < `MESHMON_*` env < flags.
//! Touches the files and sockets named by its configuration.

mod demo;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use meshmon_aggregator::batch_mode::{AggregateOptions, aggregate};
use meshmon_aggregator::config::{AggregatorConfig, StoreKind};
use meshmon_aggregator::engine::{
    DimensionField, DimensionSpec, EngineConfig, InvalidReason, Limits, Nanos, TagDimensions, WindowSpec,
    time::parse_duration,
};
use meshmon_aggregator::server;

/// meshmon aggregator: exact per-window statistics (max, min, avg, last, sum, count) of metric
/// records in event time, for the whole fleet, each cluster, each node and each tag.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the aggregator: gRPC ingest for agents, window engine, embedded store, HTTP API,
    /// Prometheus /metrics and the built-in page with drill-down.
    ///
    /// Settings come from --config (TOML; see aggregator/meshmon.example.toml), then the
    /// environment (MESHMON_GRPC_LISTEN, MESHMON_HTTP_LISTEN, MESHMON_DATA_DIR, MESHMON_WINDOW,
    /// MESHMON_SHARDS, MESHMON_RETENTION, MESHMON_STORE_KIND, MESHMON_HBASE_THRIFT_ADDRESS,
    /// MESHMON_HBASE_TABLE, MESHMON_KAFKA_BROKERS, MESHMON_KAFKA_INPUT_TOPIC,
    /// MESHMON_KAFKA_GROUP_ID), then these flags. Secrets only from the environment or files:
    /// MESHMON_KAFKA_SASL_PASSWORD or kafka.sasl_password_file, MESHMON_INFLUXDB_TOKEN or
    /// influxdb.token_file.
    ///
    /// Raw records (the drill-down behind every point) are kept where store.kind says:
    /// "embedded" (default, in the data directory) or "hbase" — an HBase table over the Thrift1
    /// API, configured in [store.hbase]: thrift_address (host:port, default 127.0.0.1:9090),
    /// table (meshmon_raw), column_family (r), create_table (true: create when missing; the
    /// family and the row-key layout of store.bucket_size / store.salt_buckets are checked on
    /// every start), connections (4 for writes + 4 for drill-downs), scan_parallelism (4
    /// connections per drill-down), write_batch_rows and scan_batch_rows (1000),
    /// connect_timeout (5s), timeout (30s), retries (10) with
    /// retry_backoff (100ms, doubling) up to retry_backoff_max (10s). A write still failing
    /// after the retries stops serve with a non-zero exit (fail-stop). Aggregates, listings
    /// and dead letters stay in the embedded store (docs/HBASE.md).
    ///
    /// With [kafka] brokers set, the input is the Kafka topic instead of gRPC ingest, with window
    /// state and offsets checkpointed to checkpoint.path (docs/KAFKA.md); checkpoints wait until
    /// HBase acknowledged the raw rows before them. With [influxdb] url set, aggregates are also
    /// written to InfluxDB (docs/INFLUXDB.md).
    Serve(ServeArgs),
    /// One command, whole pipeline: the aggregator on embedded defaults, an in-process agent
    /// with the system plugin, and a synthetic shop app pushing business metrics; prints the
    /// page's URL. Stop with Ctrl-C.
    Demo(DemoArgs),
    /// Batch mode: aggregate a file of JSON lines and write the final aggregates as CSV.
    ///
    /// Each input line: {"metric":"cpu","value":0.5,"time":<epoch ms>,"cluster":"c1","node":"n1",
    /// "tags":{"env":"prod"}}; "value" may be a decimal string ("19.99") for exact sums.
    /// Output columns: dimension_kind, metric, dimension, window_start_ms, window_end_ms, max,
    /// min, avg, last, sum, count.
    Aggregate(AggregateArgs),
    /// Kafka mode: rebuild the aggregates and raw records of a time range from the input topic,
    /// idempotently (every write is keyed: the same values are written again).
    ///
    /// Reads the [kafka], [engine] and [store] settings of --config. Reads every partition from
    /// the offset of time FROM minus (allowed lateness + out-of-orderness) to the end of the log
    /// (as of the start), in event-time order through a fresh engine, and
    /// writes only windows wholly inside [FROM, TO) and records with event times inside it — to
    /// the embedded store (stop `serve` first: the store file is single-writer, or use
    /// --data-dir for another store) and to the output topic. Progress is drawn on stderr.
    /// Not available with store.kind = "hbase" yet.
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// TOML configuration file with a [kafka] section.
    #[arg(long)]
    config: PathBuf,
    /// Start of the range, RFC 3339 (e.g. 2026-11-21T08:00:00Z).
    #[arg(long)]
    from: String,
    /// End of the range, RFC 3339 [default: now minus (window + allowed lateness + out-of-orderness)].
    #[arg(long)]
    to: Option<String>,
    /// Directory of the embedded store to write [default: store.data_dir of --config].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not write aggregate updates to the output topic.
    #[arg(long)]
    no_output_topic: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The engine settings shared by every mode.
#[derive(Args, Debug)]
struct EngineArgs {
    /// Window: tumbling:SIZE[+OFFSET], sliding:SIZE/SLIDE[+OFFSET] or session:GAP.
    #[arg(long, default_value = "tumbling:10s")]
    window: WindowSpec,
    /// Bounded out-of-orderness: the watermark trails the newest event time by this.
    #[arg(long, default_value = "5s", value_parser = duration)]
    out_of_orderness: Nanos,
    /// After a window fired, records this late still correct it; later ones are rejected as late.
    #[arg(long, default_value = "60s", value_parser = duration)]
    allowed_lateness: Nanos,
    /// Tag dimensions: "all", "none", or a comma-separated list of tag keys.
    #[arg(long, default_value = "all")]
    tags: String,
    /// A dimension set, e.g. "cluster,region" (repeatable): one series per value combination.
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Most live series; records that would create more are rejected (cardinality_limit).
    #[arg(long, default_value_t = 2_000_000)]
    max_series: usize,
    /// Spread series over this many shards (by metric); results do not depend on it.
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

#[derive(Args, Debug)]
struct AggregateArgs {
    /// Input file of JSON lines ("-" for standard input).
    #[arg(long)]
    input: PathBuf,
    /// Output CSV file ("-" for standard output).
    #[arg(long)]
    output: PathBuf,
    /// Also write rejected lines (malformed, invalid, late) with line number and reason here.
    #[arg(long)]
    rejects: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC ingest address for agents [default: 127.0.0.1:7700].
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// HTTP address: JSON API, /metrics, the page [default: 127.0.0.1:7780].
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./meshmon-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Window: tumbling:SIZE[+OFFSET], sliding:SIZE/SLIDE[+OFFSET] or session:GAP [default: tumbling:10s].
    #[arg(long)]
    window: Option<WindowSpec>,
    /// Window shard threads; 0 = one per core [default: 0].
    #[arg(long)]
    shards: Option<usize>,
    /// Where raw records are kept: embedded or hbase [default: embedded].
    #[arg(long, value_name = "KIND")]
    store_kind: Option<StoreKind>,
    /// HBase Thrift1 server (host:port) keeping raw records with --store-kind hbase
    /// [default: 127.0.0.1:9090].
    #[arg(long, value_name = "HOST:PORT")]
    hbase_thrift_address: Option<String>,
    /// HBase table of raw records [default: meshmon_raw].
    #[arg(long, value_name = "TABLE")]
    hbase_table: Option<String>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// HTTP address of the page.
    #[arg(long, default_value = "127.0.0.1:7780")]
    http_listen: SocketAddr,
    /// Keep the demo's data here instead of a new temp directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How often the agent's system plugin samples.
    #[arg(long, default_value = "5s", value_parser = duration)]
    system_interval: Nanos,
}

fn duration(text: &str) -> Result<Nanos, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

impl EngineArgs {
    fn config(&self) -> anyhow::Result<EngineConfig> {
        let tags = match self.tags.as_str() {
            "all" => TagDimensions::All,
            "none" => TagDimensions::None,
            keys => TagDimensions::Only(keys.split(',').map(str::trim).map(String::from).collect()),
        };
        let sets = self
            .sets
            .iter()
            .map(|set| set.split(',').map(|f| f.trim().parse::<DimensionField>()).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        let config = EngineConfig {
            window: self.window,
            out_of_orderness: self.out_of_orderness,
            allowed_lateness: self.allowed_lateness,
            dimensions: DimensionSpec { tags, sets, ..DimensionSpec::default() },
            limits: Limits { max_series: self.max_series, ..Limits::default() },
            ..EngineConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

fn run_aggregate(args: &AggregateArgs) -> anyhow::Result<()> {
    let mut config = args.engine.config()?;
    // History has no wall clock: no bounds relative to "now", no idle inputs.
    config.limits.max_future = None;
    config.limits.max_past = None;
    config.idle_timeout = None;
    let options = AggregateOptions { config, shards: args.engine.shards, batch_lines: 4_096 };
    let input: Box<dyn std::io::BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening input {}", args.input.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let mut output: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let file = File::create(&args.output).with_context(|| format!("creating output {}", args.output.display()))?;
        Box::new(BufWriter::new(file))
    };
    let mut rejects = match &args.rejects {
        Some(path) => Some(BufWriter::new(
            File::create(path).with_context(|| format!("creating rejects file {}", path.display()))?,
        )),
        None => None,
    };
    let started = Instant::now();
    let summary = aggregate(input, &mut output, rejects.as_mut().map(|w| w as &mut dyn Write), &options)?;
    if let Some(w) = rejects.as_mut() {
        w.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    let c = &summary.counters;
    eprintln!(
        "read {} lines in {secs:.2} s ({:.0} lines/s): {} accepted, {} late, {} invalid, {} malformed; {} aggregate rows",
        summary.lines,
        summary.lines as f64 / secs.max(1e-9),
        c.accepted,
        c.late_dropped,
        c.invalid_total(),
        summary.malformed,
        summary.rows
    );
    for reason in InvalidReason::ALL {
        let n = c.invalid[reason.index()];
        if n > 0 {
            eprintln!("  invalid {reason}: {n}");
        }
    }
    Ok(())
}

fn serve_config(args: &ServeArgs) -> anyhow::Result<AggregatorConfig> {
    let mut config = match &args.config {
        Some(path) => AggregatorConfig::from_file(path)?,
        None => AggregatorConfig::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(a) = args.grpc_listen {
        config.listen.grpc = a;
    }
    if let Some(a) = args.http_listen {
        config.listen.http = a;
    }
    if let Some(d) = &args.data_dir {
        config.store.data_dir = d.clone();
    }
    if let Some(w) = args.window {
        config.engine.window = w;
    }
    if let Some(n) = args.shards {
        config.engine.shards = n;
    }
    if let Some(k) = args.store_kind {
        config.store.kind = k;
    }
    if let Some(a) = &args.hbase_thrift_address {
        config.store.hbase.thrift_address = a.clone();
    }
    if let Some(t) = &args.hbase_table {
        config.store.hbase.table = t.clone();
    }
    config.pipeline_config()?;
    Ok(config)
}

fn run_serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = serve_config(args)?;
    actix_rt::System::new().block_on(async move {
        let mut running = server::start(&config).await?;
        match running.grpc_addr {
            Some(grpc) => println!("meshmon aggregator: gRPC ingest {grpc}, HTTP http://{}/", running.http_addr),
            None => println!(
                "meshmon aggregator: Kafka input {} (topic {}), HTTP http://{}/",
                config.kafka.brokers, config.kafka.input_topic, running.http_addr
            ),
        }
        let failure = tokio::select! {
            () = server::shutdown_signal() => None,
            e = running.failed() => Some(e),
        };
        tracing::info!("shutting down");
        let stopped = running.stop_checked().await;
        match failure {
            // Fail-stop: a restart resumes from the last checkpoint and rewrites identical values.
            Some(e) => Err(anyhow::anyhow!("{e}")),
            None => stopped.map_err(|e| anyhow::anyhow!("stopping: {e}")),
        }
    })
}

fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    use meshmon_aggregator::kafka::replay::{ReplayRange, replay, window_span};
    use meshmon_aggregator::kafka::{KafkaMetrics, OutputProducer};
    use meshmon_aggregator::rfc3339::parse_rfc3339;
    use meshmon_aggregator::store::EmbeddedStore;
    let mut config = AggregatorConfig::from_file(&args.config)?;
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(dir) = &args.data_dir {
        config.store.data_dir = dir.clone();
    }
    anyhow::ensure!(config.kafka.enabled(), "{}: replay needs a [kafka] section with brokers", args.config.display());
    anyhow::ensure!(
        config.store.kind == StoreKind::Embedded,
        "{}: replay writes raw records to the embedded store only; with store.kind = \"hbase\" it is not supported yet",
        args.config.display()
    );
    config.kafka.validate()?;
    let pipeline = config.pipeline_config()?;
    let from = parse_rfc3339(&args.from).context("--from")?;
    let to = match &args.to {
        Some(t) => parse_rfc3339(t).context("--to")?,
        None => {
            let e = &pipeline.engine;
            let settle = window_span(e.window).saturating_add(e.allowed_lateness).saturating_add(e.out_of_orderness);
            let now = Nanos::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos())?;
            now.saturating_sub(settle)
        }
    };
    std::fs::create_dir_all(&config.store.data_dir)
        .with_context(|| format!("creating {}", config.store.data_dir.display()))?;
    let store = EmbeddedStore::open(&pipeline.store_path, pipeline.store)
        .with_context(|| format!("opening the store {} (is `serve` running on it?)", pipeline.store_path.display()))?;
    let producer = if args.no_output_topic || config.kafka.output_topic.is_empty() {
        None
    } else {
        Some(std::sync::Arc::new(OutputProducer::new(&config.kafka, std::sync::Arc::new(KafkaMetrics::default()))?))
    };
    let started = Instant::now();
    let report =
        replay(&config.kafka, &pipeline.engine, &ReplayRange { from, to }, &store, producer.as_ref(), !args.quiet)?;
    println!(
        "replayed {} messages ({} undecodable) in {:.1} s: wrote {} aggregate changes, {} raw records, {} dead letters",
        report.messages,
        report.undecodable,
        started.elapsed().as_secs_f64(),
        report.aggregates,
        report.raw,
        report.dead_letters
    );
    Ok(())
}

fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    let options = demo::DemoOptions {
        http: args.http_listen,
        data_dir: args.data_dir.clone(),
        system_interval: std::time::Duration::from_nanos(u64::try_from(args.system_interval).unwrap_or(5_000_000_000)),
    };
    actix_rt::System::new().block_on(demo::run(options))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Demo(args) => run_demo(args),
        Command::Aggregate(args) => run_aggregate(args),
        Command::Replay(args) => run_replay(args),
    }
}
