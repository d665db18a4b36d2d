//! One seeded run: a cluster, the workloads, the nemesis for a while,
//! then every fault healed, convergence awaited and timed, final reads,
//! and the checkers over the history.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ringkv_tests::faults::Rng;

use crate::check::{self, Report};
use crate::cluster::{Cluster, ClusterSpec};
use crate::history::{self, History, Kind};
use crate::nemesis::{Family, Nemesis, NemesisSpec};
use crate::workload::{final_reads, WorkloadSpec, Workloads};

/// Set (to anything) to keep every run's history, not only a failed one's.
pub const KEEP_HISTORY_ENV: &str = "RINGKV_KEEP_HISTORY";

/// Everything a run is made of; with its seed, it is the run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub cluster: ClusterSpec,
    pub workload: WorkloadSpec,
    pub nemesis: NemesisSpec,
    /// How long the nemesis works.
    pub duration: Duration,
    /// Replicas must agree within this of the last heal.
    pub converge_within: Duration,
    /// Where histories and node logs of runs are kept.
    pub out: PathBuf,
}

impl RunSpec {
    /// The standard run: 5 members and a spare, N = 3, every workload,
    /// every nemesis family, two faults at once at most.
    pub fn standard(duration: Duration, families: Vec<Family>, out: &Path) -> RunSpec {
        RunSpec {
            cluster: ClusterSpec {
                members: 5,
                spares: 1,
                disk_mb: 256,
                env: vec![("RINGKV__CLUSTER__PARTITIONS".into(), "64".into())],
            },
            workload: WorkloadSpec::default(),
            nemesis: NemesisSpec {
                families,
                max_active: 2,
                fault_for: (Duration::from_millis(500), Duration::from_millis(3_000)),
                gap: (Duration::from_millis(100), Duration::from_millis(600)),
                script: Vec::new(),
            },
            duration,
            converge_within: Duration::from_secs(120),
            out: out.to_path_buf(),
        }
    }
}

/// What a run did and found.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Faults injected, by family.
    pub families: BTreeMap<Family, usize>,
    /// Completions by kind over the whole history.
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    pub check: Report,
    /// From the last heal to replicas agreeing.
    pub converged_after: Option<Duration>,
    pub convergence_error: Option<String>,
    pub history: PathBuf,
    pub ran_for: Duration,
}

impl RunReport {
    pub fn faults_total(&self) -> usize {
        self.faults.values().sum()
    }

    /// Whether the run found anything wrong.
    pub fn failed(&self) -> bool {
        self.check.violation_count() > 0 || self.convergence_error.is_some()
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {:>20}  faults {:>3}  ok {:>6}  fail {:>5}  info {:>5}  lost {:>3}  violations {:>3}  converged {}",
            self.seed,
            self.faults_total(),
            self.ok,
            self.fail,
            self.info,
            self.check.lost(),
            self.check.violation_count(),
            match (&self.converged_after, &self.convergence_error) {
                (Some(d), _) => format!("{:.1}s", d.as_secs_f64()),
                (None, Some(e)) => format!("NO ({e})"),
                (None, None) => "?".into(),
            }
        )
    }
}

/// Runs `spec` with the schedule of `seed`.
pub async fn run(spec: &RunSpec, seed: u64) -> Result<RunReport> {
    std::fs::create_dir_all(&spec.out)?;
    let history_path = spec.out.join(format!("history-{seed}.jsonl"));
    let history = History::create(&history_path)?;
    let mut cluster = Cluster::start(&spec.cluster, &spec.out)
        .await
        .context("starting the cluster")?;
    println!(
        "run {seed}: {} members in network namespaces, files in {}",
        spec.cluster.members,
        cluster.dir().display()
    );
    // A run that stops half-way (a heal that never completes, a cluster
    // never whole again) keeps its node logs too.
    let ran = drive(spec, seed, &mut cluster, &history, &history_path).await;
    match &ran {
        Ok(report) if !report.failed() && std::env::var_os(KEEP_HISTORY_ENV).is_none() => {
            // Keep what a failed run leaves; a clean run's history is only
            // its counts.
            let _ = std::fs::remove_file(&report.history);
        }
        _ => keep_logs(&cluster, &spec.out, seed),
    }
    ran
}

/// The run itself, once the cluster is up: workloads and faults, the heal,
/// the final reads and the check.
async fn drive(
    spec: &RunSpec,
    seed: u64,
    cluster: &mut Cluster,
    history: &History,
    history_path: &Path,
) -> Result<RunReport> {
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.clone()).collect();
    let started = Instant::now();
    let hard_stop = started + spec.duration + Duration::from_secs(600);
    let workloads = Workloads::start(&spec.workload, &endpoints, history, seed, hard_stop)?;
    let mut nemesis = Nemesis::new(spec.nemesis.clone(), Rng::new(seed), cluster, history);
    println!("run {seed}: disk faults hit node {}", nemesis.disk_victim);

    while started.elapsed() < spec.duration {
        let pause = nemesis.step(cluster, started).await?;
        tokio::time::sleep(pause).await;
    }
    nemesis.heal_all(cluster).await?;
    let last_heal = Instant::now();
    println!("[{:>6.1?}] every fault healed", started.elapsed());
    let touched = workloads.stop().await;

    cluster
        .wait_whole()
        .await
        .context("the cluster was not whole after the heal")?;
    let (converged_after, convergence_error) =
        match cluster.wait_converged(spec.converge_within).await {
            Ok(_) => {
                nemesis.close_windows();
                (Some(last_heal.elapsed()), None)
            }
            Err(e) => (None, Some(format!("{e:#}"))),
        };
    final_reads(&cluster.client(), history, &touched).await?;

    let ops = history::read(history_path)?;
    let check = check::check(&ops)?;
    let mut report = RunReport {
        seed,
        faults: BTreeMap::new(),
        families: BTreeMap::new(),
        ok: ops.iter().filter(|o| o.kind == Kind::Ok).count(),
        fail: ops.iter().filter(|o| o.kind == Kind::Fail).count(),
        info: ops.iter().filter(|o| o.kind == Kind::Info).count(),
        check,
        converged_after,
        convergence_error,
        history: history_path.to_path_buf(),
        ran_for: started.elapsed(),
    };
    for (_, fault) in &nemesis.log {
        *report.faults.entry(fault.kind()).or_default() += 1;
        *report.families.entry(fault.family()).or_default() += 1;
    }
    Ok(report)
}

/// Copies the node logs of a failed run next to its history.
fn keep_logs(cluster: &Cluster, out: &Path, seed: u64) {
    for node in &cluster.nodes {
        let to = out.join(format!("run-{seed}-node{}.log", node.slot));
        let _ = std::fs::copy(&node.log_path, to);
    }
}
