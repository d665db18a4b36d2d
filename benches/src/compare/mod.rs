//! `ringkv-bench compare`: ringkv beside its physical limits and beside
//! etcd, measured on one machine, repeatedly, in a random order.
//!
//! Absolute figures from a shared virtual machine mean little: the same
//! command gives results up to 2× apart minutes later. So every figure is
//! measured several times (`--reps`, 5 by default), and every ratio is
//! taken between two figures of the same repetition, minutes apart, with
//! the same load generator, key count, value size and concurrency. Each
//! repetition runs every selected system once, in a random order drawn
//! from the printed seed ([`schedule`]), so a slow period of the machine
//! does not always fall on the same system. The table gives, per row, the
//! median over repetitions and the range (min–max); the JSON output keeps
//! every repetition's figures.
//!
//! The systems:
//!
//! 1. **the RPC ceiling**: tonic echo servers in their own processes
//!    ([`crate::echo`]), a unary round trip carrying the same bytes as a
//!    put or get and doing nothing else: one server, and three servers
//!    with the generator spreading requests over them in turn (the ceiling
//!    of a three-node cluster, whose client spreads requests over three
//!    nodes);
//! 2. **the storage ceiling**: ringkv's RocksDB engine in this process,
//!    put and get through the `Engine` trait from the blocking pool
//!    (`sync = periodic`, and `always` for puts);
//! 3. **one ringkv node** (`ringkv-server`, RocksDB, `sync = periodic`);
//! 4. **three ringkv nodes**, N = 3, R = W = QUORUM: with partition-aware
//!    routing, gets also with R = ONE, then through one node only (no
//!    routing: that node coordinates every request), then a fresh cluster
//!    with `storage.sync = always` for puts;
//! 5. **six ringkv nodes**, N = 3, R = W = QUORUM: routed, then every
//!    request through one node, which holds only half the keys and
//!    forwards the rest (the routing comparison: `--only six`);
//! 6. **secured ringkv**, one node and three nodes as in 3 and 4, with TLS
//!    on the client port, mutual TLS between the nodes and a bearer token
//!    on every request (docs/security.md);
//! 7. **three etcd members** (Debian's `etcd-server`): linearizable ranges
//!    and puts spread over the members; serializable ranges (a member
//!    answers from its own state, the counterpart of R = ONE); and every
//!    request sent to the leader, found with the `Maintenance.Status` call.
//!
//! With `--half-load`, one node and the routed three-node cluster also run
//! YCSB workloads A and C closed-loop, then open-loop at half that rate.
//! With `--sweep`, the whole comparison (all its repetitions) runs at each
//! listed concurrency, and a last table gives each row's best throughput
//! and where it was reached.
//!
//! Each system starts fresh, on free loopback ports, with its data under a
//! temporary directory, and is stopped before the next one starts, so
//! they never compete with each other for the CPUs. For each: every key is
//! written once (not measured), then a put run (100% blind overwrites) and
//! a get run (100% reads), each after its own warm-up. Around each
//! measured phase three CPU counters are read ([`runner`]): the system's
//! server processes, the whole machine (kernel work such as loopback
//! networking included), and this process, the load generator.

mod etcd;
mod machine;
mod procs;
mod row;
mod runner;
mod schedule;
mod setup;
mod stats;
mod systems;
mod table;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use ringkv_client::Level;
use serde::Serialize;

use crate::config::{
    Config, Distribution, Output, StorageSync, Target as TargetKind, Workload, DEFAULT_ZIPF_THETA,
};
use row::{Op, Row};
use stats::{Best, Summary};

/// Nodes of the ringkv cluster, members of the etcd cluster and servers of
/// the three-server echo ceiling.
const CLUSTER_SIZE: usize = 3;

/// Nodes of the routing row: N = 3 on twice as many nodes, so a node that
/// takes every request is a replica of only half the keys.
const ROUTING_SIZE: usize = 6;

/// Prefix of the benchmark's keys in every system.
const KEY_PREFIX: &str = "ringkv-bench/";

/// The systems `compare` can run; a repetition runs them in a random order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// tonic echo servers (one, then three): the RPC ceiling.
    Echo,
    /// ringkv's RocksDB engine in process: the storage ceiling.
    Storage,
    /// One ringkv node.
    Single,
    /// Three ringkv nodes, N=3, R=W=QUORUM (routed, R=ONE, via one node,
    /// always).
    Cluster,
    /// Six ringkv nodes, N=3, R=W=QUORUM: routed, then every request
    /// through one node (which is a replica of half the keys).
    Six,
    /// One and three ringkv nodes with TLS, mutual TLS and tokens.
    Secure,
    /// Three etcd members (round robin, serializable reads, leader only).
    Etcd,
}

impl System {
    /// The name `--only` takes.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

const ALL_SYSTEMS: [System; 7] = [
    System::Echo,
    System::Storage,
    System::Single,
    System::Cluster,
    System::Six,
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
    /// Run the whole comparison at each of these concurrencies, e.g.
    /// 1,8,32,128 (each with its own repetitions), instead of at
    /// --concurrency.
    #[arg(long, value_delimiter = ',', conflicts_with = "concurrency")]
    sweep: Vec<usize>,
    /// Repetitions: each runs every selected system once, in a random
    /// order; the table gives the median and range over them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Measured time of each put or get run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded load before each measured run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Seed of the order of systems in each repetition, and of keys and
    /// values [default: random, printed].
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
    /// Threads of every server process's runtime, the same for all:
    /// ringkv's `node.worker_threads`, the echo servers' tokio runtime,
    /// etcd's GOMAXPROCS [default 0: each its own default, one per CPU].
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
}

/// Every repetition at one concurrency.
#[derive(Serialize)]
struct Run {
    concurrency: usize,
    /// The order of the systems in each repetition.
    orders: Vec<Vec<System>>,
    /// 1-minute load average before and after.
    load_average: (Option<f64>, Option<f64>),
    elapsed_s: f64,
    /// The table: median and range over repetitions.
    rows: Vec<Summary>,
    /// Every repetition's own rows, with ratios and full reports.
    reps: Vec<Vec<Row>>,
}

/// The whole comparison; its JSON form is what `--output json` prints.
#[derive(Serialize)]
struct Comparison {
    /// The source tree's commit (`git rev-parse --short HEAD`), if known.
    commit: Option<String>,
    cpus: usize,
    /// 1-, 5- and 15-minute load averages at the start and at the end.
    load_average_start: Option<[f64; 3]>,
    load_average_end: Option<[f64; 3]>,
    keys: u64,
    value_size: usize,
    duration_s: f64,
    warmup_s: f64,
    reps: usize,
    seed: u64,
    systems: Vec<System>,
    concurrencies: Vec<usize>,
    /// Runtime threads of every server process; 0: each its default.
    worker_threads: usize,
    runs: Vec<Run>,
    /// Each closed-loop row's best median throughput over `concurrencies`.
    best: Vec<Best>,
    elapsed_s: f64,
}

/// Runs the comparison and prints it.
pub async fn run(args: CompareArgs) -> Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let concurrencies = if args.sweep.is_empty() {
        vec![args.concurrency]
    } else {
        args.sweep.clone()
    };
    // Validate the shared settings the way a load run would.
    for &concurrency in &concurrencies {
        base_config(&args, seed, concurrency, TargetKind::Echo, Op::Put).validate()?;
    }
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
    let reps = args.reps as usize;
    let mut comparison = Comparison {
        commit: machine::git_commit(),
        cpus: machine::cpus(),
        load_average_start: machine::load_averages(),
        load_average_end: None,
        keys: args.keys,
        value_size: args.value_size,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        reps,
        seed,
        systems: systems.clone(),
        concurrencies: concurrencies.clone(),
        worker_threads: args.worker_threads,
        runs: Vec::new(),
        best: Vec::new(),
        elapsed_s: 0.0,
    };
    let text = args.output == Output::Text;
    // The header goes out before the first run, so it describes the
    // machine as the run found it; with JSON, stdout is the JSON only.
    if text {
        print!("{}", table::header(&comparison));
        std::io::stdout().flush()?;
    } else {
        eprint!("{}", table::header(&comparison));
    }
    let orders = schedule::schedule(&systems, reps * concurrencies.len(), seed);
    let runs = async {
        for (&concurrency, orders) in concurrencies.iter().zip(orders.chunks(reps)) {
            let run = runner::repetitions(&args, seed, concurrency, orders, work.path()).await;
            if text {
                print!("{}", table::table(&run, reps));
                let _ = std::io::stdout().flush();
            }
            comparison.runs.push(run);
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
    comparison.best = stats::best(
        comparison
            .runs
            .iter()
            .map(|r| (r.concurrency, r.rows.as_slice())),
    );
    comparison.load_average_end = machine::load_averages();
    comparison.elapsed_s = started.elapsed().as_secs_f64();
    if text {
        print!("{}", table::footer(&comparison));
    } else {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    }
    let clean = comparison
        .runs
        .iter()
        .flat_map(|r| r.reps.iter().flatten())
        .all(|r| r.error.is_none() && r.errors == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The settings every measured run of the comparison shares.
fn base_config(
    args: &CompareArgs,
    seed: u64,
    concurrency: usize,
    target: TargetKind,
    op: Op,
) -> Config {
    let mix = op.mix();
    // ringkv runs name their levels: N=3, R=W=QUORUM (one node caps N at 1).
    let level = (target == TargetKind::Ringkv).then_some(Level::Quorum);
    Config {
        target,
        endpoints: Vec::new(),
        routing: true,
        data_dir: None,
        sync: StorageSync::Periodic,
        concurrency,
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
