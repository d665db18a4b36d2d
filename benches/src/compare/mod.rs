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
//! 5. **three etcd members** (Debian's `etcd-server`), linearizable ranges
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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use ringkv_client::{Client, Level, RequestOptions};
use serde::Serialize;

use crate::config::{
    Config, Distribution, Mix, Output, StorageSync, Target as TargetKind, Workload,
    DEFAULT_ZIPF_THETA,
};
use crate::echo::EchoClient;
use crate::etcd::EtcdKv;
use crate::report::{OpReport, Report};
use crate::target::{StorageTarget, Target};
use crate::workload::Load;
use procs::{cpu_seconds, find_program, free_port, load_average, spawn};
use ringkv_tests::Process;

/// How long a started system may take to answer before the run gives up
/// on it (a 3-node cluster forms within a few gossip rounds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between readiness probes.
const READY_POLL: Duration = Duration::from_millis(100);

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
    /// Three etcd members.
    Etcd,
}

const ALL_SYSTEMS: [System; 5] = [
    System::Echo,
    System::Storage,
    System::Single,
    System::Cluster,
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

impl Runner<'_> {
    /// Runs one system; a failure becomes rows with an error, and the
    /// comparison goes on with the next system.
    async fn system(&mut self, system: System) {
        let result = match system {
            System::Echo => self.echo().await,
            System::Storage => self.storage().await,
            System::Single => self.single().await,
            System::Cluster => self.cluster().await,
            System::Etcd => self.etcd().await,
        };
        if let Err(e) = result {
            eprintln!("ringkv-bench compare: {system:?}: {e:#}");
            let label = match system {
                System::Echo => ECHO,
                System::Storage => STORAGE,
                System::Single => SINGLE,
                System::Cluster => CLUSTER,
                System::Etcd => ETCD,
            };
            // Rows already measured for this system stay; a failure before
            // the first measurement gets one row per operation.
            if !self.rows.iter().any(|r| r.system == label) {
                for op in [Op::Put, Op::Get] {
                    self.rows.push(Row::failed(label, op, &e));
                }
            }
        }
    }

    fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    fn note(&self, what: &str) {
        eprintln!("ringkv-bench compare: {what}");
    }

    async fn echo(&mut self) -> Result<()> {
        let dir = self.dir("echo")?;
        let exe = std::env::current_exe().context("finding ringkv-bench's own path")?;
        let address = format!("127.0.0.1:{}", free_port()?);
        self.note(&format!("starting the echo server on {address}"));
        let mut server = spawn(
            "echo server",
            &exe,
            &["echo-server".into(), "--listen".into(), address.clone()],
            &dir.join("echo.log"),
        )?;
        let client = EchoClient::new(std::slice::from_ref(&address), self.args.value_size)?;
        wait_until(&mut [&mut server], "the echo server", || async {
            client
                .get(bytes::Bytes::from_static(b"probe"))
                .await
                .is_ok()
        })
        .await?;
        let target = Arc::new(Target::Echo(client));
        let pids: Vec<u32> = server.pid().into_iter().collect();
        // Nothing to preload: the echo server stores nothing.
        self.measure(
            Spec {
                system: ECHO,
                op: Op::Put,
                kind: TargetKind::Echo,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.measure(
            Spec {
                system: ECHO,
                op: Op::Get,
                kind: TargetKind::Echo,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        Ok(())
    }

    async fn storage(&mut self) -> Result<()> {
        let me = [std::process::id()];
        for (label, sync) in [
            (STORAGE, StorageSync::Periodic),
            (STORAGE_ALWAYS, StorageSync::Always),
        ] {
            self.note(&format!("opening RocksDB in process, sync {sync:?}"));
            let dir = self.dir(&format!("rocksdb-{sync:?}").to_lowercase())?;
            let target = Arc::new(Target::Storage(StorageTarget::open(
                Some(&dir),
                sync.mode(),
            )?));
            self.measure(
                Spec {
                    system: label,
                    op: Op::Put,
                    kind: TargetKind::Storage,
                    preload: true,
                    target_rate: None,
                },
                &target,
                &me,
            )
            .await?;
            // Sync changes only writes; reads are measured once.
            if sync == StorageSync::Periodic {
                self.measure(
                    Spec {
                        system: label,
                        op: Op::Get,
                        kind: TargetKind::Storage,
                        preload: false,
                        target_rate: None,
                    },
                    &target,
                    &me,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn single(&mut self) -> Result<()> {
        let dir = self.dir("single")?;
        let mut nodes = start_ringkv(self.args, &dir, 1, "periodic")?;
        let endpoints: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
        wait_ringkv(&mut nodes, &endpoints).await?;
        let target = Arc::new(ringkv_target(&endpoints, true)?);
        let pids: Vec<u32> = nodes.iter().filter_map(|n| n.proc.pid()).collect();
        self.measure(
            Spec {
                system: SINGLE,
                op: Op::Put,
                kind: TargetKind::Ringkv,
                preload: true,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.measure(
            Spec {
                system: SINGLE,
                op: Op::Get,
                kind: TargetKind::Ringkv,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.half_load(SINGLE, &target, &pids).await?;
        Ok(())
    }

    async fn cluster(&mut self) -> Result<()> {
        {
            let dir = self.dir("cluster")?;
            let mut nodes = start_ringkv(self.args, &dir, CLUSTER_SIZE, "periodic")?;
            let endpoints: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
            wait_ringkv(&mut nodes, &endpoints).await?;
            let pids: Vec<u32> = nodes.iter().filter_map(|n| n.proc.pid()).collect();
            let routed = Arc::new(ringkv_target(&endpoints, true)?);
            self.measure(
                Spec {
                    system: CLUSTER,
                    op: Op::Put,
                    kind: TargetKind::Ringkv,
                    preload: true,
                    target_rate: None,
                },
                &routed,
                &pids,
            )
            .await?;
            self.measure(
                Spec {
                    system: CLUSTER,
                    op: Op::Get,
                    kind: TargetKind::Ringkv,
                    preload: false,
                    target_rate: None,
                },
                &routed,
                &pids,
            )
            .await?;
            self.half_load(CLUSTER, &routed, &pids).await?;
            // The same cluster with every request sent to node 1, which
            // coordinates or forwards it.
            let via_one = Arc::new(ringkv_target(&endpoints[..1], false)?);
            for op in [Op::Put, Op::Get] {
                self.measure(
                    Spec {
                        system: CLUSTER_ONE_NODE,
                        op,
                        kind: TargetKind::Ringkv,
                        preload: false,
                        target_rate: None,
                    },
                    &via_one,
                    &pids,
                )
                .await?;
            }
        }
        // A fresh cluster whose replicas fsync before acknowledging, the
        // counterpart of etcd's puts.
        let dir = self.dir("cluster-always")?;
        let mut nodes = start_ringkv(self.args, &dir, CLUSTER_SIZE, "always")?;
        let endpoints: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
        wait_ringkv(&mut nodes, &endpoints).await?;
        let pids: Vec<u32> = nodes.iter().filter_map(|n| n.proc.pid()).collect();
        let target = Arc::new(ringkv_target(&endpoints, true)?);
        self.measure(
            Spec {
                system: CLUSTER_ALWAYS,
                op: Op::Put,
                kind: TargetKind::Ringkv,
                preload: true,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        Ok(())
    }

    async fn etcd(&mut self) -> Result<()> {
        let Some(etcd) = find_program(&self.args.etcd_bin) else {
            bail!(
                "{} not found: install Debian's etcd-server (benches/compare.sh does) or pass --etcd-bin",
                self.args.etcd_bin.display()
            );
        };
        let dir = self.dir("etcd")?;
        let members: Vec<(String, u16, u16)> = (0..CLUSTER_SIZE)
            .map(|i| Ok((format!("m{i}"), free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial_cluster = members
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = Vec::new();
        for (name, client, peer) in &members {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args: Vec<String> = [
                "--name",
                name,
                "--data-dir",
                &dir.join(name).display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "ringkv-bench",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            procs.push(spawn(
                &format!("etcd {name}"),
                &etcd,
                &args,
                &dir.join(format!("{name}.log")),
            )?);
        }
        self.note(&format!("started {} etcd members", procs.len()));
        let endpoints: Vec<String> = members
            .iter()
            .map(|(_, client, _)| format!("127.0.0.1:{client}"))
            .collect();
        let kv = EtcdKv::new(&endpoints)?;
        let mut refs: Vec<&mut Process> = procs.iter_mut().collect();
        let (members, probe_kv) = (endpoints.len(), &kv);
        wait_until(&mut refs, "the etcd cluster", move || async move {
            for i in 0..members {
                let probe = crate::etcd::pb::RangeRequest {
                    key: bytes::Bytes::from_static(b"ringkv-bench-probe"),
                    ..Default::default()
                };
                if probe_kv.member(i).range(probe).await.is_err() {
                    return false;
                }
            }
            true
        })
        .await?;
        let pids: Vec<u32> = procs.iter().filter_map(Process::pid).collect();
        let target = Arc::new(Target::Etcd(kv));
        self.measure(
            Spec {
                system: ETCD,
                op: Op::Put,
                kind: TargetKind::Etcd,
                preload: true,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.measure(
            Spec {
                system: ETCD,
                op: Op::Get,
                kind: TargetKind::Etcd,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        Ok(())
    }

    /// Preloads (when asked), warms up, then measures one run, reading
    /// the CPU counters around the measured phase only. Returns the run's
    /// throughput.
    async fn measure(
        &mut self,
        spec: Spec,
        target: &Arc<Target>,
        server_pids: &[u32],
    ) -> Result<f64> {
        let Spec {
            system,
            op,
            kind,
            preload,
            target_rate,
        } = spec;
        let mut config = base_config(self.args, self.seed, kind, op);
        config.preload = preload;
        config.target_rate = target_rate;
        let load = Load::new(Arc::clone(target), config.clone());
        let preloaded = if preload {
            self.note(&format!("{system}: writing {} keys", self.args.keys));
            let report = load.preload().await?;
            if report.written < report.keys {
                bail!(
                    "{system}: the preload wrote {} of {} keys ({} errors: {:?})",
                    report.written,
                    report.keys,
                    report.errors,
                    report.errors_by_kind
                );
            }
            Some(report)
        } else {
            None
        };
        match target_rate {
            Some(rate) => self.note(&format!("{system}: measuring {op:?} at {rate:.0} ops/s")),
            None => self.note(&format!("{system}: measuring {op:?}")),
        }
        if !self.args.warmup.is_zero() {
            load.run_phases(Duration::ZERO, self.args.warmup).await?;
        }
        let me = [std::process::id()];
        let (server_before, client_before) = (cpu_seconds(server_pids)?, cpu_seconds(&me)?);
        let measurement = load.run_phases(Duration::ZERO, self.args.duration).await?;
        let (server_after, client_after) = (cpu_seconds(server_pids)?, cpu_seconds(&me)?);
        let report = Report::new(config, preloaded, &measurement);
        let combined;
        let figures: &OpReport = match op {
            Op::Put => &report.writes,
            Op::Get => &report.reads,
            Op::A | Op::C => {
                combined = OpReport::new(&measurement.tally.combined()?, measurement.elapsed);
                &combined
            }
        };
        let per_1k = |cpu: f64| (figures.ops > 0).then(|| cpu / figures.ops as f64 * 1_000.0);
        let ops_per_sec = figures.ops_per_sec;
        let row = Row {
            system,
            op,
            target_rate,
            ops_per_sec: Some(ops_per_sec),
            p50_us: figures.latency_us.as_ref().map(|l| l.p50),
            p99_us: figures.latency_us.as_ref().map(|l| l.p99),
            errors: figures.errors + report.cut_off,
            vs_tonic: None,
            vs_etcd: None,
            server_cpu_s_per_1k: per_1k(server_after - server_before),
            client_cpu_s_per_1k: per_1k(client_after - client_before),
            load_average: load_average(),
            error: None,
            report: Some(report),
        };
        self.rows.push(row);
        Ok(ops_per_sec)
    }

    /// With `--half-load`: workloads A and C closed-loop, then open-loop at
    /// half the throughput the closed loop reached.
    async fn half_load(
        &mut self,
        system: &'static str,
        target: &Arc<Target>,
        pids: &[u32],
    ) -> Result<()> {
        if !self.args.half_load {
            return Ok(());
        }
        for op in [Op::A, Op::C] {
            let spec = |target_rate| Spec {
                system,
                op,
                kind: TargetKind::Ringkv,
                preload: false,
                target_rate,
            };
            let max = self.measure(spec(None), target, pids).await?;
            if max > 0.0 {
                self.measure(spec(Some(max / 2.0)), target, pids).await?;
            }
        }
        Ok(())
    }
}

/// A ringkv node started by `compare`.
struct Node {
    proc: Process,
    grpc: String,
}

/// Starts `n` ringkv nodes that form one cluster, with `storage.sync` =
/// `sync`, their data and logs under `dir`.
fn start_ringkv(args: &CompareArgs, dir: &Path, n: usize, sync: &str) -> Result<Vec<Node>> {
    let server = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding ringkv-bench's own path")?
            .with_file_name("ringkv-server"),
    };
    if !server.is_file() {
        bail!(
            "{} not found: build it with cargo build --release -p ringkv-server, or pass --server-bin",
            server.display()
        );
    }
    let addresses: Vec<(String, String)> = (0..n)
        .map(|_| {
            Ok((
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
            ))
        })
        .collect::<Result<_>>()?;
    let seeds = addresses
        .iter()
        .map(|(grpc, _)| grpc.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::with_capacity(n);
    for (i, (grpc, metrics)) in addresses.into_iter().enumerate() {
        let name = format!("node{}", i + 1);
        let mut node_args: Vec<String> = [
            "--name",
            &name,
            "--listen",
            &grpc,
            "--metrics-listen",
            &metrics,
            "--data-dir",
            &dir.join(&name).display().to_string(),
            "--sync",
            sync,
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if n > 1 {
            node_args.extend([
                "--seeds".to_string(),
                seeds.clone(),
                "--bootstrap-expect".to_string(),
                n.to_string(),
            ]);
        }
        let proc = spawn(
            &format!("ringkv {name}"),
            &server,
            &node_args,
            &dir.join(format!("{name}.log")),
        )?;
        nodes.push(Node { proc, grpc });
    }
    eprintln!(
        "ringkv-bench compare: started {n} ringkv node(s), sync {sync}, on {}",
        seeds
    );
    Ok(nodes)
}

/// Waits until every node holds a layout in which every member is alive.
async fn wait_ringkv(nodes: &mut [Node], endpoints: &[String]) -> Result<()> {
    let mut procs: Vec<&mut Process> = nodes.iter_mut().map(|n| &mut n.proc).collect();
    wait_until(&mut procs, "the ringkv nodes", move || async move {
        for endpoint in endpoints {
            let Ok(client) = Client::new(std::slice::from_ref(endpoint)) else {
                return false;
            };
            let Ok(layout) = client.layout().await else {
                return false;
            };
            let alive = layout
                .members
                .iter()
                .filter(|m| m.liveness == "alive")
                .count();
            if layout.version == 0 || alive != endpoints.len() {
                return false;
            }
        }
        true
    })
    .await
}

fn ringkv_target(endpoints: &[String], routing: bool) -> Result<Target> {
    let level = RequestOptions::level(Level::Quorum);
    Ok(Target::Ringkv {
        client: Client::new(endpoints)?.with_routing(routing),
        read: level,
        write: level,
    })
}

/// Polls `ready` until it holds, failing early (with the log) when one of
/// `procs` exits, or after [`READY_TIMEOUT`].
async fn wait_until<F, Fut>(procs: &mut [&mut Process], what: &str, ready: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for proc in procs.iter_mut() {
            proc.check_running()?;
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.log_tail()).collect();
            bail!(
                "{what} did not become ready within {READY_TIMEOUT:?}; logs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Fills the ratio columns: each row against the echo row and the etcd row
/// of the same operation.
fn fill_ratios(rows: &mut [Row]) {
    let find = |rows: &[Row], system: &str, op: Op| {
        rows.iter()
            .find(|r| r.system == system && r.op == op)
            .and_then(|r| r.ops_per_sec)
            .filter(|&ops| ops > 0.0)
    };
    let bases: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .map(|r| (find(rows, ECHO, r.op), find(rows, ETCD, r.op)))
        .collect();
    for (row, (echo, etcd)) in rows.iter_mut().zip(bases) {
        if let Some(ops) = row.ops_per_sec {
            row.vs_tonic = echo.map(|e| ops / e);
            row.vs_etcd = etcd.map(|e| ops / e);
        }
    }
}

/// The comparison as a table for people.
fn table(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |l| format!("{l:.1}"));
    let _ = writeln!(
        out,
        "ringkv-bench compare: {} clients, {} keys, {} B values, {:.0} s measured after {:.0} s warm-up per row; \
         {} CPUs, load average {} -> {}, seed {}\n",
        c.concurrency,
        c.keys,
        c.value_size,
        c.duration_s,
        c.warmup_s,
        c.cpus,
        load(c.load_average.0),
        load(c.load_average.1),
        c.seed,
    );
    let _ = writeln!(
        out,
        "{:<28} {:<5} {:>9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>11} {:>11} {:>5}",
        "system",
        "op",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "x tonic",
        "x etcd",
        "server CPU",
        "client CPU",
        "load"
    );
    let _ = writeln!(
        out,
        "{:<28} {:<5} {:>9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>11} {:>11} {:>5}",
        "", "", "", "", "", "", "", "", "s/1k ops", "s/1k ops", "avg"
    );
    let opt = |v: Option<f64>, precision: usize| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.precision$}"))
    };
    let ms = |us: Option<u64>| opt(us.map(|us| us as f64 / 1_000.0), 2);
    for r in &c.rows {
        let op = match r.target_rate {
            Some(_) => format!("{}@50%", r.op.label()),
            None => r.op.label().to_string(),
        };
        if let Some(error) = &r.error {
            let first_line = error.lines().next().unwrap_or_default();
            let _ = writeln!(out, "{:<28} {op:<5} failed: {first_line}", r.system);
            continue;
        }
        let _ = writeln!(
            out,
            "{:<28} {op:<5} {:>9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>11} {:>11} {:>5}",
            r.system,
            opt(r.ops_per_sec, 0),
            ms(r.p50_us),
            ms(r.p99_us),
            r.errors,
            opt(r.vs_tonic, 2),
            opt(r.vs_etcd, 2),
            opt(r.server_cpu_s_per_1k, 3),
            opt(r.client_cpu_s_per_1k, 3),
            opt(r.load_average, 1),
        );
    }
    let _ = writeln!(
        out,
        "\nx tonic / x etcd: throughput divided by the echo server's / etcd's for the same operation. \
         server CPU: the system's server processes (for RocksDB in process: this whole process, \
         generator included); client CPU: this load generator; load avg: the machine's 1-minute load \
         average when the row's run ended."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &'static str, op: Op, ops: f64) -> Row {
        let mut row = Row::failed(system, op, &anyhow::anyhow!("placeholder"));
        row.error = None;
        row.ops_per_sec = Some(ops);
        row
    }

    #[test]
    fn ratios_compare_the_same_operation() {
        let mut rows = vec![
            row(ECHO, Op::Put, 10_000.0),
            row(ECHO, Op::Get, 20_000.0),
            row(CLUSTER, Op::Put, 4_000.0),
            row(CLUSTER, Op::Get, 5_000.0),
            row(ETCD, Op::Put, 1_000.0),
            Row::failed(ETCD, Op::Get, &anyhow::anyhow!("etcd not found")),
        ];
        fill_ratios(&mut rows);
        assert_eq!(rows[2].vs_tonic, Some(0.4));
        assert_eq!(rows[3].vs_tonic, Some(0.25));
        assert_eq!(rows[2].vs_etcd, Some(4.0));
        // No etcd get figure, so no ratio to it; a failed row gets none.
        assert_eq!(rows[3].vs_etcd, None);
        assert_eq!(rows[5].vs_tonic, None);
        let text = table(&Comparison {
            keys: 1,
            value_size: 1,
            concurrency: 1,
            duration_s: 1.0,
            warmup_s: 0.0,
            seed: 1,
            cpus: 2,
            load_average: (None, None),
            elapsed_s: 1.0,
            rows,
        });
        assert!(text.contains("failed: etcd not found"), "{text}");
    }
}
