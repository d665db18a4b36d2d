//! Campaigns: many seeded runs, one line each, and a summary of the
//! faults injected and what the checkers found. Any run replays from its
//! seed (`ringkv-campaign run --seed S`): the same schedule of faults and
//! operations, though not the same interleaving, which timing decides.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::nemesis::Family;
use crate::run::{run as run_one, RunReport, RunSpec};

/// What a campaign runs.
#[derive(Clone, Debug)]
pub struct CampaignSpec {
    pub runs: u64,
    /// Run i has seed `first_seed + i`.
    pub first_seed: u64,
    pub duration: Duration,
    pub families: Vec<Family>,
    pub out: PathBuf,
}

/// Every run's report, or the error that stopped it.
#[derive(Default)]
pub struct Summary {
    pub runs: Vec<RunReport>,
    /// Runs the harness could not finish: (seed, error).
    pub errors: Vec<(u64, String)>,
}

impl Summary {
    /// No loss, no violation, every run converged and finished.
    pub fn clean(&self) -> bool {
        self.errors.is_empty() && self.runs.iter().all(|r| !r.failed())
    }

    pub fn faults(&self) -> usize {
        self.runs.iter().map(RunReport::faults_total).sum()
    }

    pub fn by_family(&self) -> BTreeMap<Family, usize> {
        let mut out = BTreeMap::new();
        for r in &self.runs {
            for (f, n) in &r.families {
                *out.entry(*f).or_default() += n;
            }
        }
        out
    }

    pub fn by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for r in &self.runs {
            for (k, n) in &r.faults {
                *out.entry(*k).or_default() += n;
            }
        }
        out
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sum = |g: fn(&RunReport) -> usize| self.runs.iter().map(g).sum::<usize>();
        writeln!(
            f,
            "== campaign summary: {} runs",
            self.runs.len() + self.errors.len()
        )?;
        writeln!(f, "faults injected: {}", self.faults())?;
        for (family, n) in self.by_family() {
            writeln!(f, "  {:<11} {n}", family.name())?;
        }
        for (kind, n) in self.by_kind() {
            writeln!(f, "    {kind:<24} {n}")?;
        }
        writeln!(
            f,
            "operations: ok {}  fail {}  info {}",
            sum(|r| r.ok),
            sum(|r| r.fail),
            sum(|r| r.info)
        )?;
        writeln!(f, "acknowledged writes lost: {}", sum(|r| r.check.lost()))?;
        writeln!(
            f,
            "checker violations: {}",
            sum(|r| r.check.violation_count())
        )?;
        let worst = self.runs.iter().filter_map(|r| r.converged_after).max();
        let unconverged = self
            .runs
            .iter()
            .filter(|r| r.convergence_error.is_some())
            .count();
        match worst {
            Some(w) => writeln!(
                f,
                "worst convergence after the last heal: {:.1}s ({unconverged} runs did not converge)",
                w.as_secs_f64()
            )?,
            None => writeln!(f, "no run converged")?,
        }
        for (seed, e) in &self.errors {
            writeln!(f, "run {seed} did not finish: {e}")?;
        }
        writeln!(
            f,
            "{}",
            if self.clean() {
                "CLEAN"
            } else {
                "PROBLEMS FOUND"
            }
        )
    }
}

/// Runs the campaign, printing each run's line as it ends and the summary.
pub async fn run(spec: &CampaignSpec) -> Result<Summary> {
    let mut summary = Summary::default();
    for i in 0..spec.runs {
        let seed = spec.first_seed + i;
        let run_spec = RunSpec::standard(spec.duration, spec.families.clone(), &spec.out);
        match run_one(&run_spec, seed).await {
            Ok(report) => {
                println!("{report}");
                if report.failed() {
                    println!("{}", report.check);
                    println!(
                        "history kept: {} (replay: ringkv-campaign run --seed {seed})",
                        report.history.display()
                    );
                }
                summary.runs.push(report);
            }
            Err(e) => {
                println!("seed {seed}: the run did not finish: {e:#}");
                summary.errors.push((seed, format!("{e:#}")));
            }
        }
    }
    println!("{summary}");
    Ok(summary)
}

/// A campaign binary finds `ringkv-server` next to itself unless
/// `RINGKV_SERVER_BIN` says otherwise.
pub fn point_at_sibling_binaries() {
    if std::env::var_os("RINGKV_SERVER_BIN").is_some() {
        return;
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_path_buf()))
    {
        let server = dir.join("ringkv-server");
        if server.exists() {
            // Set before any thread starts: main calls this first.
            std::env::set_var("RINGKV_SERVER_BIN", server);
        }
    }
}
