//! Fault injection on a real cluster: a workload that records what the
//! cluster acknowledged, a driver that breaks one node at a time, and a
//! checker that proves every acknowledged write survived.
//!
//! # The contract under test
//!
//! ringkv acknowledges a write only once W replicas (or, with a sloppy
//! quorum, fallbacks holding hints for them) have it in their write-ahead
//! log. After the faults are over and the cluster has healed, hinted
//! handoff and anti-entropy must bring every acknowledged write to every
//! replica of its partition. So the checker demands, for each
//! acknowledged write:
//!
//! - it is held by every replica the layout names for its partition
//!   (`Admin.LocalGet` on each, before any read could repair it);
//! - a read with R = ALL returns it;
//! - it is on at least one node at all: a write that is on no node is
//!   **lost**, the worst outcome, counted apart from the two above.
//!
//! Writes that failed are of two kinds. A **refused** write (`UNAVAILABLE`)
//! was turned away before anything was applied (too few replicas believed
//! alive, a forward that could not connect, a node that cannot coordinate
//! now): it must be on **no** node, and the checker demands that. An
//! **indeterminate** one (`DEADLINE_EXCEEDED`, a broken connection, our
//! own client-side timeout) may have been applied on some replicas, even
//! on W of them without the answer reaching us: it may or may not be
//! present, both are legal, and it is counted apart, never as
//! acknowledged and never as lost. Other failures (e.g. `INTERNAL`) are
//! only counted.
//!
//! Every write goes to a key never written before, with a value derived
//! from the key. No write supersedes another, so "the acknowledged value
//! is among the stored versions" is the whole check, and a key holding
//! more than one sibling shows that something invented a version.
//!
//! # The faults
//!
//! SIGKILL then a restart on the same data directory; SIGSTOP then
//! SIGCONT (a node that hangs with its connections open, the case that
//! exercises timeouts rather than refused connections); a network cut
//! between two nodes, both directions, through the test fault switch; and
//! a wipe of one node's data directory before its restart. With N = 3 the
//! driver never has two nodes faulty at once: each fault is healed and
//! the cluster seen converged (same layout, everyone alive) before the
//! next starts, so a quorum stays possible and failures are the faults'
//! doing, not an outage.
//!
//! The schedule (which fault, which nodes, how long, the pauses between)
//! comes from a seeded generator: the seed is printed, and
//! `RINGKV_FAULT_SEED=<seed>` replays the same schedule. The interleaving
//! with the writes still depends on timing, so a replay is the same
//! storm, not the same execution.
//!
//! # Convergence
//!
//! After the last fault is healed the writers stop, hints must drain, and
//! then the replicas of every partition must report equal Merkle roots
//! (`Admin.MerkleRoots`) with only the background anti-entropy worker
//! running (`repair.interval_ms` is shortened for the run). The time from
//! the last heal to equal roots is the convergence time. An explicit
//! `Admin.StartRepair` on every node follows, whose count of repaired keys
//! shows whether anything was left for it.
//!
//! With hints delivered, replicas are usually equal by the time hints have
//! drained, and anti-entropy has little to do. A run with
//! [`HINTS_EXPIRE_AT_ONCE`] drops every hint instead, so whatever a
//! replica missed during a fault only anti-entropy can bring back: that
//! run measures anti-entropy on its own.

mod check;
mod converge;
mod nemesis;
mod report;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::secure::Secure;
use crate::TestCluster;
use converge::{wait_hints_drained, wait_replicas_agree};
use workload::WRITE_HARD_LIMIT;

pub use check::{check, refused_but_present, Verdict};
pub use converge::{partitions_differing, repair_everywhere};
pub use nemesis::{inject, seed_from_env, Fault, FaultKind, Rng, SEED_ENV};
pub use report::Report;
pub use workload::{Ledger, Workload, WRITE_TIMEOUT};

/// Pause between anti-entropy passes on the nodes of a fault run: short,
/// so convergence after the last heal is measured in seconds, not in the
/// default minute.
pub const REPAIR_INTERVAL_MS: &str = "1000";

/// Writes before the first fault, so the cluster holds data to lose.
const WARM_UP: Duration = Duration::from_secs(1);

/// A mixed-fault run: what to inject, for how long, and what to demand.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub nodes: usize,
    pub writers: usize,
    /// Faults keep coming until at least this long has passed...
    pub run_for: Duration,
    /// ...and at least this many faults were injected...
    pub min_faults: usize,
    /// ...but the run fails if both take longer than this.
    pub max_run: Duration,
    /// Kinds the schedule draws from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// Each fault lasts between these.
    pub fault_for: (Duration, Duration),
    /// Quiet time after each recovery, between these.
    pub gap: (Duration, Duration),
    /// Replicas must agree within this of the last heal.
    pub converge_within: Duration,
    /// Extra environment for every node (e.g. [`HINTS_EXPIRE_AT_ONCE`]).
    pub env: Vec<(&'static str, &'static str)>,
    /// Run on a secured cluster (TLS, mutual TLS, maybe tokens). With
    /// tokens the fault switch is off, so `kinds` must not hold cuts.
    pub secure: Option<Secure>,
}

/// Starts a cluster for fault runs: fast anti-entropy on top of the
/// harness's fast gossip, handoff and fault switch, plus `extra_env` for
/// every node.
pub async fn start_cluster(nodes: usize, extra_env: &[(&str, &str)]) -> Result<TestCluster> {
    start_cluster_secured(nodes, extra_env, None).await
}

/// [`start_cluster`], secured as `secure` says.
pub async fn start_cluster_secured(
    nodes: usize,
    extra_env: &[(&str, &str)],
    secure: Option<Secure>,
) -> Result<TestCluster> {
    let mut env = vec![("RINGKV__REPAIR__INTERVAL_MS", REPAIR_INTERVAL_MS)];
    env.extend_from_slice(extra_env);
    match secure {
        Some(secure) => TestCluster::start_secured(nodes, &[], &env, secure).await,
        None => TestCluster::start_with_env(nodes, &[], &env).await,
    }
}

/// Node settings under which every hint is dropped instead of delivered
/// (`handoff.max_age_ms` of 1 ms): replicas that missed writes can then
/// catch up only through anti-entropy, which a run with these settings
/// measures on its own.
pub const HINTS_EXPIRE_AT_ONCE: &[(&str, &str)] = &[("RINGKV__HANDOFF__MAX_AGE_MS", "1")];

/// Runs `scenario` with the schedule of `seed` on a fresh cluster and
/// reports what happened. Errors only when the harness itself could not
/// proceed (a node would not restart, an admin call failed); contract
/// violations are in [`Report::problems`].
pub async fn run(scenario: &Scenario, seed: u64) -> Result<Report> {
    println!(
        "fault run: seed {seed} (replay with {SEED_ENV}={seed}), node settings {:?}",
        scenario.env
    );
    let mut rng = Rng::new(seed);
    if scenario.secure.is_some_and(|s| s.auth) && scenario.kinds.contains(&FaultKind::Cut) {
        bail!("network cuts use the fault switch, which a node with auth enabled does not have");
    }
    let mut cluster = start_cluster_secured(scenario.nodes, &scenario.env, scenario.secure).await?;
    let started = Instant::now();
    let writers_deadline = started + scenario.max_run + WRITE_HARD_LIMIT;
    let workload = Workload::start(&cluster, scenario.writers, writers_deadline);
    tokio::time::sleep(WARM_UP).await;

    let mut report = Report {
        seed,
        converge_within: scenario.converge_within,
        ..Report::default()
    };
    let mut last_heal = Instant::now();
    let mut injected = 0;
    while started.elapsed() < scenario.run_for || injected < scenario.min_faults {
        if started.elapsed() > scenario.max_run {
            bail!(
                "only {injected} of {} faults injected within {:?}",
                scenario.min_faults,
                scenario.max_run
            );
        }
        let fault = Fault::draw(
            &mut rng,
            &scenario.kinds,
            scenario.nodes,
            scenario.fault_for,
        );
        println!(
            "[{:>6.1?}] fault {}: {fault}",
            started.elapsed(),
            injected + 1
        );
        last_heal = inject(&mut cluster, &fault).await?;
        *report.faults.entry(fault.kind()).or_default() += 1;
        injected += 1;
        tokio::time::sleep(rng.between(scenario.gap.0, scenario.gap.1)).await;
    }
    report.ledger = workload.stop().await?;
    report.ran_for = started.elapsed();
    println!(
        "[{:>6.1?}] writers stopped: {} acknowledged",
        started.elapsed(),
        report.ledger.acknowledged.len()
    );

    let drained = wait_hints_drained(&cluster).await;
    report.hints_drained_after = drained.is_ok().then(|| last_heal.elapsed());
    drained?;
    report.differing_after_hints = partitions_differing(&cluster).await.ok();
    match wait_replicas_agree(&cluster, last_heal, scenario.converge_within).await {
        Ok(took) => report.converged_after = Some(took),
        Err(e) => report.convergence_error = Some(format!("{e:#}")),
    }
    match repair_everywhere(&cluster).await {
        Ok((repaired, errors)) => {
            report.repaired_by_explicit_repair = Some(repaired);
            report.repair_errors = errors;
        }
        Err(e) => report.repair_errors = vec![format!("{e:#}")],
    }
    report.verdict = check(&cluster, &report.ledger.acknowledged).await?;
    report.verdict.refused_but_present =
        refused_but_present(&cluster, &report.ledger.refused).await?;
    println!("{report}");
    Ok(report)
}
