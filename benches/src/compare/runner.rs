//! The [`Runner`]: one system after another, each measured run preloaded,
//! warmed up and measured with the CPU counters read around it, its
//! figures appended as a [`Row`]; a system that fails leaves rows that
//! say why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::procs::{cpu_seconds, load_average};
use super::{
    base_config, Op, Row, Runner, Spec, System, CLUSTER, ECHO, ETCD, SECURE_SINGLE, SINGLE, STORAGE,
};
use crate::config::Target as TargetKind;
use crate::report::{OpReport, Report};
use crate::target::Target;
use crate::workload::Load;

impl Runner<'_> {
    /// Runs one system; a failure becomes rows with an error, and the
    /// comparison goes on with the next system.
    pub(super) async fn system(&mut self, system: System) {
        let result = match system {
            System::Echo => self.echo().await,
            System::Storage => self.storage().await,
            System::Single => self.single().await,
            System::Cluster => self.cluster().await,
            System::Secure => self.secure().await,
            System::Etcd => self.etcd().await,
        };
        if let Err(e) = result {
            eprintln!("ringkv-bench compare: {system:?}: {e:#}");
            let label = match system {
                System::Echo => ECHO,
                System::Storage => STORAGE,
                System::Single => SINGLE,
                System::Cluster => CLUSTER,
                System::Secure => SECURE_SINGLE,
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
