//! The [`Runner`]: one repetition, the systems in its order, each measured
//! run preloaded, warmed up and measured with the CPU counters read around
//! it, its figures kept as a [`Row`]; a system that fails leaves a row
//! that says why, and the repetition goes on with the next system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::machine::{load_average, MachineTicks};
use super::procs::cpu_seconds;
use super::row::{
    durability, Op, Row, Spec, CLUSTER, ECHO, ETCD, SECURE_SINGLE, SINGLE, SIX, STORAGE,
};
use super::stats::{fill_ratios, summarize};
use super::{base_config, CompareArgs, Run, System};
use crate::config::Target as TargetKind;
use crate::report::{OpReport, Report};
use crate::target::Target;
use crate::workload::Load;

/// Runs one repetition per order in `orders` at `concurrency`, with the
/// work directories under `work`, and summarises them.
pub(super) async fn repetitions(
    args: &CompareArgs,
    seed: u64,
    concurrency: usize,
    orders: &[Vec<System>],
    work: &Path,
) -> Run {
    let started = Instant::now();
    let load_before = load_average();
    let mut reps = Vec::with_capacity(orders.len());
    for (i, order) in orders.iter().enumerate() {
        let names: Vec<String> = order.iter().map(|s| s.name()).collect();
        eprintln!(
            "ringkv-bench compare: concurrency {concurrency}, repetition {} of {}: {}",
            i + 1,
            orders.len(),
            names.join(", ")
        );
        let mut runner = Runner {
            args,
            seed,
            concurrency,
            rep: i + 1,
            turn: 0,
            work: work.join(format!("c{concurrency}-rep{}", i + 1)),
            rows: Vec::new(),
            current: (ECHO, Op::Put, None),
        };
        for &system in order {
            runner.system(system).await;
        }
        // Every server of the repetition is stopped by now; its data
        // (etcd preallocates 64 MB per member) is not needed again.
        let _ = std::fs::remove_dir_all(&runner.work);
        let mut rows = runner.rows;
        fill_ratios(&mut rows);
        reps.push(rows);
    }
    Run {
        concurrency,
        orders: orders.to_vec(),
        load_average: (load_before, load_average()),
        elapsed_s: started.elapsed().as_secs_f64(),
        rows: summarize(&reps),
        reps,
    }
}

/// Runs the systems of one repetition, one after the other.
pub(super) struct Runner<'a> {
    pub(super) args: &'a CompareArgs,
    seed: u64,
    pub(super) concurrency: usize,
    /// The repetition, from 1.
    rep: usize,
    /// The running system's place in the repetition's order, from 1.
    turn: usize,
    /// The repetition's work directory; each system gets a subdirectory.
    work: PathBuf,
    /// What the repetition measured so far.
    rows: Vec<Row>,
    /// The row being started or measured (label, operation, open-loop
    /// rate): what a failure is reported as.
    current: (&'static str, Op, Option<f64>),
}

/// CPU counters read around a measured phase.
struct Counters {
    server: f64,
    client: f64,
    machine: MachineTicks,
}

impl Counters {
    fn read(server_pids: &[u32]) -> Result<Counters> {
        Ok(Counters {
            server: cpu_seconds(server_pids)?,
            client: cpu_seconds(&[std::process::id()])?,
            machine: MachineTicks::read()?,
        })
    }
}

impl Runner<'_> {
    /// Runs one system; a failure becomes a row with an error.
    pub(super) async fn system(&mut self, system: System) {
        self.turn += 1;
        self.begin(match system {
            System::Echo => ECHO,
            System::Storage => STORAGE,
            System::Single => SINGLE,
            System::Cluster => CLUSTER,
            System::Six => SIX,
            System::Secure => SECURE_SINGLE,
            System::Etcd => ETCD,
        });
        let result = match system {
            System::Echo => self.echo().await,
            System::Storage => self.storage().await,
            System::Single => self.single().await,
            System::Cluster => self.cluster().await,
            System::Six => self.six().await,
            System::Secure => self.secure().await,
            System::Etcd => self.etcd().await,
        };
        if let Err(e) = result {
            let (label, op, target_rate) = self.current;
            eprintln!("ringkv-bench compare: {label} {}: {e:#}", op.label());
            let mut row = Row::failed(label, op, self.rep, self.turn, &e);
            row.target_rate = target_rate;
            self.rows.push(row);
        }
    }

    /// Names the row a failure from here on is reported as, until the next
    /// measurement starts: call before starting a fresh server set.
    pub(super) fn begin(&mut self, label: &'static str) {
        self.current = (label, Op::Put, None);
    }

    pub(super) fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    pub(super) fn note(&self, what: &str) {
        eprintln!("ringkv-bench compare: {what}");
    }

    /// Preloads (when asked), warms up, then measures one run, reading
    /// the CPU counters around the measured phase only. Returns the run's
    /// throughput.
    pub(super) async fn measure(
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
            read_level,
        } = spec;
        self.current = (system, op, target_rate);
        let mut config = base_config(self.args, self.seed, self.concurrency, kind, op);
        config.preload = preload;
        config.target_rate = target_rate;
        if read_level.is_some() {
            config.read_level = read_level;
        }
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
        let before = Counters::read(server_pids)?;
        let measurement = load.run_phases(Duration::ZERO, self.args.duration).await?;
        let after = Counters::read(server_pids)?;
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
        let per_op = |cpu_s: f64| (figures.ops > 0).then(|| cpu_s * 1e6 / figures.ops as f64);
        let ops_per_sec = figures.ops_per_sec;
        let row = Row {
            system,
            op,
            rep: self.rep,
            turn: self.turn,
            target_rate,
            durability: durability(system),
            ops_per_sec: Some(ops_per_sec),
            p50_us: figures.latency_us.as_ref().map(|l| l.p50),
            p99_us: figures.latency_us.as_ref().map(|l| l.p99),
            errors: figures.errors + report.cut_off,
            vs_echo: None,
            vs_etcd: None,
            server_cpu_us_per_op: per_op(after.server - before.server),
            machine_cpu_us_per_op: per_op(before.machine.busy_seconds_until(after.machine)),
            client_cpu_us_per_op: per_op(after.client - before.client),
            steal_share: before.machine.steal_share_until(after.machine),
            load_average: load_average(),
            error: None,
            report: Some(report),
        };
        self.rows.push(row);
        Ok(ops_per_sec)
    }

    /// A closed-loop run of every op in `ops` against one target, the
    /// first preloaded when `preload`.
    pub(super) async fn measure_ops(
        &mut self,
        system: &'static str,
        kind: TargetKind,
        ops: &[Op],
        preload: bool,
        target: &Arc<Target>,
        pids: &[u32],
    ) -> Result<()> {
        for (i, &op) in ops.iter().enumerate() {
            let spec = Spec::new(system, op, kind);
            let spec = if preload && i == 0 {
                spec.preloaded()
            } else {
                spec
            };
            self.measure(spec, target, pids).await?;
        }
        Ok(())
    }

    /// With `--half-load`: workloads A and C closed-loop, then open-loop at
    /// half the throughput the closed loop reached.
    pub(super) async fn half_load(
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
                target_rate,
                ..Spec::new(system, op, TargetKind::Ringkv)
            };
            let max = self.measure(spec(None), target, pids).await?;
            if max > 0.0 {
                self.measure(spec(Some(max / 2.0)), target, pids).await?;
            }
        }
        Ok(())
    }
}
