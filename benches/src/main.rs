//! `ringkv-bench`: a YCSB-style load generator for ringkv, and the
//! yardsticks to read its figures against.
//!
//! It answers "how many requests per second does this cluster serve at
//! this concurrency, and how long does a client wait for each?" for the
//! YCSB core mixes (`--workload a|b|c|f|load`, see [`config`]), uniform or
//! zipfian keys ([`keys`]), at the consistency levels the caller picks,
//! closed-loop or at a fixed offered rate (`--target-rate`, see
//! [`workload`]). The report gives throughput, errors by kind, and
//! p50/p95/p99/p99.9/max latency per operation type, as a table or
//! (`--output json`) as a stable JSON object ([`report`]).
//!
//! Four ways to run it:
//!
//! - `ringkv-bench [options]`: one load run. It starts nothing; point it at
//!   nodes with `--endpoints` (or at etcd, an echo server or the in-process
//!   storage engine with `--target`, see [`target`]).
//! - `ringkv-bench compare`: the RPC ceiling, the storage ceiling, a
//!   single ringkv node, a 3-node ringkv cluster and a 3-member etcd
//!   cluster, all started by the tool, repeated (`--reps`, 5) in random
//!   order and printed as medians and ranges of ratios taken within each
//!   repetition ([`compare`]). `benches/compare.sh` builds and calls it.
//! - `ringkv-bench scale`: gossip and layout at up to 1,000 nodes, by
//!   simulation with the server's own membership and layout code
//!   ([`scale`]).
//! - `ringkv-bench echo-server --listen ADDR`: the echo service ([`echo`]),
//!   as `compare` starts it.
//!
//! `--smoke` is for CI: a one-second run over 200 preloaded keys that exits
//! non-zero when no request succeeded. The integration test
//! `tests/tests/bench_smoke.rs` runs it against a real node, with each
//! workload, so this tool cannot rot unnoticed.

mod compare;
mod config;
mod echo;
mod etcd;
mod keys;
mod progress;
mod report;
mod scale;
mod target;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ringkv_client::{Client, RequestOptions};

use crate::config::{Config, Output, RunArgs, Target as TargetKind};
use crate::echo::EchoClient;
use crate::etcd::EtcdKv;
use crate::report::Report;
use crate::target::{StorageTarget, Target};
use crate::workload::Load;

/// YCSB-style load generator for ringkv.
#[derive(Parser, Debug)]
#[command(name = "ringkv-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the RPC and storage ceilings, ringkv (1 and 3 nodes) and a
    /// 3-member etcd cluster, repeated in random order, and print the
    /// medians and ranges.
    Compare(compare::CompareArgs),
    /// Simulate gossip and compute layouts at 10 to 1,000 nodes, with the
    /// server's own membership and layout code, and print the figures.
    Scale(scale::ScaleArgs),
    /// Serve the echo service (the RPC ceiling) until SIGTERM or Ctrl-C.
    EchoServer {
        /// Address to listen on, e.g. 127.0.0.1:7400.
        #[arg(long)]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run).await,
        Some(Command::Compare(args)) => compare::run(args).await,
        Some(Command::EchoServer { listen }) => echo_server(&listen).await,
        Some(Command::Scale(args)) => scale::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringkv-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Connects to (or opens) what the run loads.
fn open_target(config: &Config) -> Result<Target> {
    Ok(match config.target {
        TargetKind::Ringkv => Target::Ringkv {
            client: Client::new(&config.endpoints)?.with_routing(config.routing),
            read: RequestOptions {
                level: config.read_level,
                sloppy: None,
                timeout: config.timeout,
            },
            write: RequestOptions {
                level: config.write_level,
                sloppy: None,
                timeout: config.timeout,
            },
        },
        TargetKind::Etcd => Target::Etcd(EtcdKv::new(&config.endpoints)?),
        TargetKind::Echo => Target::Echo(EchoClient::new(&config.endpoints, config.value_size)?),
        TargetKind::Storage => Target::Storage(StorageTarget::open(
            config.data_dir.as_deref(),
            config.sync.mode(),
        )?),
    })
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let config = Config::from_args(args)?;
    let reads = config.mix.read + config.mix.read_modify_write;
    if reads > 0.0 && !config.preload && config.target != TargetKind::Echo {
        eprintln!(
            "ringkv-bench: note: without --preload, reads of keys never written measure the not-found path"
        );
    }
    let load = Load::new(Arc::new(open_target(&config)?), config.clone());
    let preload = if config.preload {
        Some(load.preload().await?)
    } else {
        None
    };
    let measurement = load.run().await?;
    let report = Report::new(config, preload, &measurement);
    match report.config.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if !report.any_success() {
        eprintln!(
            "ringkv-bench: no request succeeded; is {} up?",
            report.config.target_label()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn echo_server(listen: &str) -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the echo server to {listen}"))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    echo::serve(listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
