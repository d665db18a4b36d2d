//! `ringkv-campaign`: runs seeded verification runs on a real cluster in
//! network namespaces and checks their histories.
//!
//! ```text
//! ringkv-campaign run --seed 7 --duration 60
//! ringkv-campaign campaign --runs 20 --seed 1000 --duration 60
//! ringkv-campaign check history-7.jsonl
//! ```
//!
//! Needs root (namespaces, iptables, tmpfs mounts). Exits 1 when any run
//! lost an acknowledged write, broke a checker's rule or did not converge.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use ringkv_verify::campaign::{self, CampaignSpec};
use ringkv_verify::nemesis::Family;
use ringkv_verify::{check, history};

#[derive(Parser)]
#[command(
    name = "ringkv-campaign",
    about = "ringkv verification runs and campaigns"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One run, replayable from its seed.
    Run {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        opts: Opts,
    },
    /// Many runs with consecutive seeds, and a summary.
    Campaign {
        #[arg(long, default_value_t = 10)]
        runs: u64,
        /// The first run's seed; run i has seed + i.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        opts: Opts,
    },
    /// Checks a history file again.
    Check { history: PathBuf },
}

#[derive(clap::Args)]
struct Opts {
    /// Seconds the nemesis works in each run.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Nemesis families, comma-separated: process, network, clock, disk,
    /// membership (default: all).
    #[arg(long, value_delimiter = ',')]
    nemesis: Vec<String>,
    /// Where histories and the logs of failed runs are kept.
    #[arg(long, default_value = "campaign-out")]
    out: PathBuf,
}

impl Opts {
    fn spec(&self, runs: u64, seed: u64) -> Result<CampaignSpec> {
        let families = if self.nemesis.is_empty() {
            Family::ALL.to_vec()
        } else {
            self.nemesis
                .iter()
                .map(|n| {
                    Family::parse(n).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown nemesis {n:?}: use process, network, clock, disk or membership"
                        )
                    })
                })
                .collect::<Result<_>>()?
        };
        Ok(CampaignSpec {
            runs,
            first_seed: seed,
            duration: Duration::from_secs(self.duration),
            families,
            out: self.out.clone(),
        })
    }
}

/// Runs the campaign; on SIGINT or SIGTERM, drops it instead, which stops
/// its node processes and removes their filesystems and network (as every
/// `Drop` of the harness does), and exits 130.
async fn until_stopped(spec: CampaignSpec) -> Result<campaign::Summary> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    // The campaign future is dropped when `select!` returns, before the
    // exit below.
    let finished = tokio::select! {
        summary = campaign::run(&spec) => Some(summary),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    match finished {
        Some(summary) => summary,
        None => {
            eprintln!(
                "ringkv-campaign: stopped by a signal; the run's nodes were stopped and removed"
            );
            std::process::exit(130)
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    campaign::point_at_sibling_binaries();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = match cli.command {
        Command::Run { seed, opts } => runtime.block_on(until_stopped(opts.spec(1, seed)?))?,
        Command::Campaign { runs, seed, opts } => {
            runtime.block_on(until_stopped(opts.spec(runs, seed)?))?
        }
        Command::Check { history: path } => {
            let ops = history::read(&path)?;
            let report = check::check(&ops)?;
            println!("{report}");
            if report.violation_count() > 0 {
                eprintln!("{} violations", report.violation_count());
                std::process::exit(1);
            }
            return Ok(());
        }
    };
    if !summary.clean() {
        std::process::exit(1);
    }
    Ok(())
}
