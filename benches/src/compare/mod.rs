//! `ringkv-bench compare`: ringkv beside its physical limits and beside
//! etcd, measured in one run on one machine.
//!
//! Absolute figures from a shared virtual machine mean little: the same
//! command gives results up to 2× apart minutes later. A ratio between two
//! figures taken minutes apart on the same machine, with the same load
//! generator, key count, value size and concurrency, is far steadier. So
//! this mode measures, one after the other:
//!
//! 1. **the RPC ceiling**: a tonic echo server in its own process
//!    ([`crate::echo`]): a unary round trip carrying the same bytes as a
//!    put or get and doing nothing else;
//! 2. **the storage ceiling**: ringkv's RocksDB engine in this process,
//!    put and get through the `Engine` trait from the blocking pool
//!    (`sync = periodic`, and `always` for puts);
//! 3. **one ringkv node** (`ringkv-server`, RocksDB, `sync = periodic`);
//! 4. **three ringkv nodes**, N = 3, R = W = QUORUM: with partition-aware
//!    routing (the client sends each request to a replica), then through
//!    one node only (no routing: that node coordinates every request, or
//!    forwards it when it holds no replica of the key), then a fresh
//!    cluster with `storage.sync = always` for puts;
//! 5. **secured ringkv**, one node and three nodes as in 3 and 4, with TLS
//!    on the client port, mutual TLS between the nodes and a bearer token
//!    on every request (docs/security.md), puts and gets: the cost of
//!    security, read against rows 3 and 4 of the same run;
//! 6. **three etcd members** (Debian's `etcd-server`), linearizable ranges
//!    and puts, which etcd always fsyncs on a majority.
//!
//! With `--half-load`, one node and the routed three-node cluster also run
//! YCSB workloads A and C closed-loop (their maximum throughput here), then
//! open-loop at half that rate: the p99 a client sees when the system is
//! half busy, with latency timed from each request's scheduled start.
//!
//! Each system starts fresh, on free loopback ports, with its data under a
//! temporary directory, and is stopped before the next one starts, so
//! they never compete with each other for the CPUs. For each: every key is written once
//! (not measured), then a put run (100% blind overwrites) and a get run
//! (100% reads), each after its own warm-up. The table gives ops/s, p50
//! and p99, throughput as a ratio to the echo ceiling and to etcd for the
//! same operation, and CPU seconds per 1 000 operations summed over the
//! system's server processes (for the in-process engine: this whole
//! process, generator included), plus the generator's own CPU.

mod procs;
mod runner;
mod setup;
mod systems;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use ringkv_client::Level;
use serde::Serialize;

use crate::config::{
    Config, Distribution, Mix, Output, StorageSync, Target as TargetKind, Workload,
    DEFAULT_ZIPF_THETA,
};
use crate::report::Report;
use procs::load_average;
use table::{fill_ratios, table};

/// Nodes of the ringkv cluster and members of the etcd cluster.
const CLUSTER_SIZE: usize = 3;

/// Prefix of the benchmark's keys in every system.
const KEY_PREFIX: &str = "ringkv-bench/";

/// The systems `compare` can run, in the order it runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// tonic echo server: the RPC ceiling.
    Echo,
    /// ringkv's RocksDB engine in process: the storage ceiling.
    Storage,
    /// One ringkv node.
    Single,
    /// Three ringkv nodes, N=3, R=W=QUORUM (periodic, via one node, always).
    Cluster,
    /// One and three ringkv nodes with TLS, mutual TLS and tokens.
    Secure,
    /// Three etcd members.
    Etcd,
}

const ALL_SYSTEMS: [System; 6] = [
    System::Echo,
    System::Storage,
    System::Single,
    System::Cluster,
    System::Secure,
    System::Etcd,
];

/// Options of `ringkv-bench compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Keys in every system (each written once before measuring).
    #[arg(long, default_value_t = 20_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Requests in flight (closed-loop clients), the same for every system.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured time of each put or get run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded load before each measured run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Seed of keys and values [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Systems to run, comma separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<System>,
    /// The ringkv-server binary [default: next to this one].
    #[arg(long, env = "RINGKV_SERVER_BIN")]
    server_bin: Option<PathBuf>,
    /// The etcd binary (Debian package etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Where data directories and logs go [default: a temporary directory,
    /// removed at the end].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Show a progress line on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Also run workloads A and C on one node and three nodes, closed-loop
    /// and then open-loop at half the closed-loop throughput.
    #[arg(long)]
    half_load: bool,
}

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    /// 100% blind overwrites of preloaded keys.
    Put,
    /// 100% reads of preloaded keys.
    Get,
    /// YCSB workload A (50% reads, 50% updates), latency over both.
    A,
    /// YCSB workload C (100% reads).
    C,
}

impl Op {
    fn mix(self) -> Mix {
        match self {
            Op::Put => Mix::reads(0.0),
            Op::Get | Op::C => Mix::reads(1.0),
            Op::A => Mix::reads(0.5),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::A => "A",
            Op::C => "C",
        }
    }
}

/// One measured run of the comparison.
struct Spec {
    /// The row's label.
    system: &'static str,
    op: Op,
    kind: TargetKind,
    /// Write every key once first.
    preload: bool,
    /// Open loop at this rate; `None` for closed loop.
    target_rate: Option<f64>,
}

/// One line of the table.
#[derive(Serialize)]
struct Row {
    system: &'static str,
    op: Op,
    /// Open-loop rate of the run (`--half-load` rows); `null` for closed loop.
    target_rate: Option<f64>,
    /// `null` when the run failed; see `error`.
    ops_per_sec: Option<f64>,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    errors: u64,
    /// ops/s ÷ the echo server's ops/s for the same operation.
    vs_tonic: Option<f64>,
    /// ops/s ÷ etcd's ops/s for the same operation.
    vs_etcd: Option<f64>,
    /// CPU seconds of the system's server processes per 1 000 operations.
    server_cpu_s_per_1k: Option<f64>,
    /// CPU seconds of this process (the load generator) per 1 000 operations.
    client_cpu_s_per_1k: Option<f64>,
    /// The machine's 1-minute load average when the measured run ended:
    /// how much else was competing for the CPUs.
    load_average: Option<f64>,
    /// Why the row has no figures.
    error: Option<String>,
    /// The full report of the run.
    report: Option<Report>,
}

impl Row {
    fn failed(system: &'static str, op: Op, error: &anyhow::Error) -> Row {
        Row {
            system,
            op,
            target_rate: None,
            ops_per_sec: None,
            p50_us: None,
            p99_us: None,
            errors: 0,
            vs_tonic: None,
            vs_etcd: None,
            server_cpu_s_per_1k: None,
            client_cpu_s_per_1k: None,
            load_average: None,
            error: Some(format!("{error:#}")),
            report: None,
        }
    }
}

/// The whole comparison; its JSON form is what `--output json` prints.
#[derive(Serialize)]
struct Comparison {
    keys: u64,
    value_size: usize,
    concurrency: usize,
    duration_s: f64,
    warmup_s: f64,
    seed: u64,
    cpus: usize,
    /// 1-minute load average before and after the run.
    load_average: (Option<f64>, Option<f64>),
    elapsed_s: f64,
    rows: Vec<Row>,
}

/// Labels of the rows, also the keys of the ratio columns.
const ECHO: &str = "tonic echo (RPC ceiling)";
const STORAGE: &str = "RocksDB in process, periodic";
const STORAGE_ALWAYS: &str = "RocksDB in process, always";
const SINGLE: &str = "ringkv 1 node";
const CLUSTER: &str = "ringkv 3 nodes";
const CLUSTER_ONE_NODE: &str = "ringkv 3 nodes, via 1 node";
const CLUSTER_ALWAYS: &str = "ringkv 3 nodes, always";
const SECURE_SINGLE: &str = "ringkv 1 node, TLS+mTLS+token";
const SECURE_CLUSTER: &str = "ringkv 3 nodes, TLS+mTLS+token";
const ETCD: &str = "etcd 3 members";

/// Runs the comparison and prints it.
pub async fn run(args: CompareArgs) -> Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(rand::random);
    // Validate the shared settings the way a load run would.
    base_config(&args, seed, TargetKind::Echo, Op::Put).validate()?;
    let systems: Vec<System> = if args.only.is_empty() {
        ALL_SYSTEMS.to_vec()
    } else {
        ALL_SYSTEMS
            .into_iter()
            .filter(|s| args.only.contains(s))
            .collect()
    };
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            tempfile::Builder::new()
                .prefix("ringkv-compare-")
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new().prefix("ringkv-compare-").tempdir(),
    }
    .context("creating the work directory")?;
    let started = Instant::now();
    let load_before = load_average();
    let mut rows = Vec::new();
    let runs = async {
        for system in systems {
            let mut runner = Runner {
                args: &args,
                seed,
                work: work.path(),
                rows: &mut rows,
            };
            runner.system(system).await;
        }
    };
    // On SIGINT or SIGTERM the runs are dropped, and with them every
    // server process they started (see `procs::spawn`).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        () = runs => {}
        _ = tokio::signal::ctrl_c() => bail!("interrupted; stopped the servers this run started"),
        _ = terminate.recv() => bail!("terminated; stopped the servers this run started"),
    }
    fill_ratios(&mut rows);
    let comparison = Comparison {
        keys: args.keys,
        value_size: args.value_size,
        concurrency: args.concurrency,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        seed,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average: (load_before, load_average()),
        elapsed_s: started.elapsed().as_secs_f64(),
        rows,
    };
    match args.output {
        Output::Text => print!("{}", table(&comparison)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&comparison)?),
    }
    let clean = comparison
        .rows
        .iter()
        .all(|r| r.error.is_none() && r.errors == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The settings every measured run of the comparison shares.
fn base_config(args: &CompareArgs, seed: u64, target: TargetKind, op: Op) -> Config {
    let mix = op.mix();
    // ringkv runs name their levels: N=3, R=W=QUORUM (one node caps N at 1).
    let level = (target == TargetKind::Ringkv).then_some(Level::Quorum);
    Config {
        target,
        endpoints: Vec::new(),
        routing: true,
        data_dir: None,
        sync: StorageSync::Periodic,
        concurrency: args.concurrency,
        keys: args.keys,
        value_size: args.value_size,
        read_ratio: mix.read,
        mix,
        workload: match op {
            Op::A => Some(Workload::A),
            Op::C => Some(Workload::C),
            Op::Put | Op::Get => None,
        },
        distribution: Distribution::Uniform,
        zipf_theta: DEFAULT_ZIPF_THETA,
        target_rate: None,
        read_level: level,
        write_level: level,
        timeout: None,
        duration: args.duration,
        warmup: args.warmup,
        max_ops: None,
        preload: true,
        insert_from: 0,
        smoke: false,
        key_prefix: KEY_PREFIX.to_string(),
        seed,
        output: args.output,
        progress: args.progress || std::io::IsTerminal::is_terminal(&std::io::stderr()),
    }
}

/// Runs the systems one by one, appending rows.
struct Runner<'a> {
    args: &'a CompareArgs,
    seed: u64,
    /// The run's work directory; each system gets a subdirectory.
    work: &'a Path,
    rows: &'a mut Vec<Row>,
}
