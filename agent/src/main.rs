//! `meshmon-agent` binary: parses the configuration, runs the agent, and on SIGTERM or Ctrl-C
//! flushes it.
//!
//! Role: entry point only — flags/environment/file via `cli.rs`, logging to stderr through
//! `tracing-subscriber` (filter from `--log` / `MESHMON_AGENT_LOG`, default `info`), a two-worker
//! tokio runtime, then [`meshmon_agent::Agent`]. Exit status: 0 after a complete flush, 1 on a
//! start-up error, 2 on a command-line error (clap), 3 when the shutdown timeout left batches
//! undelivered or a second signal cut the flush short. Touches what the agent touches, plus
//! stdout (`--print-config`, `--print-addresses`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use meshmon_agent::cli::Cli;
use meshmon_agent::{Agent, BoundAddresses};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Exit status when batches were left undelivered.
const EXIT_UNDELIVERED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(cli.log.as_deref().unwrap_or("info")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("meshmon-agent: invalid --log filter: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("meshmon-agent")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.load_config().context("configuration")?;
    if cli.print_config {
        let text = config.to_toml().context("printing the configuration")?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    // Install the handlers before anyone can learn our addresses and signal us.
    let mut signals = Signals::new().context("installing signal handlers")?;
    let handle = Agent::start(config).await.context("starting the agent")?;
    if cli.print_addresses {
        print_addresses(handle.addresses()).context("printing the addresses")?;
    }
    let signal = signals.next().await;
    info!("{signal} received");
    let shutdown = handle.shutdown();
    tokio::pin!(shutdown);
    let report = tokio::select! {
        report = &mut shutdown => report,
        second = signals.next() => {
            warn!("{second} received during shutdown: exiting without waiting for the flush");
            return Ok(ExitCode::from(EXIT_UNDELIVERED));
        }
    };
    Ok(if report.is_complete() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_UNDELIVERED) })
}

fn print_addresses(a: BoundAddresses) -> std::io::Result<()> {
    let line = serde_json::json!({
        "grpc": a.grpc.to_string(),
        "http": a.http.to_string(),
        "metrics": a.metrics.to_string(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// SIGTERM and Ctrl-C (SIGINT).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            Ok(Signals { term })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => "Ctrl-C (SIGINT)",
                    Err(_) => std::future::pending().await,
                },
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
