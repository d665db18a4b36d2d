//! Each checker catches the bug it exists for: a run whose nodes carry a
//! deliberately injected bug (`debug.inject_bug`, refused unless
//! `debug.fault_injection` is on) must make that checker report it.
//!
//! A run with no bug injected passes the same checkers
//! (`campaign.rs`), so what these see is the bug, not the harness.
//!
//! Needs root (network namespaces, iptables, tmpfs), as the campaign does.

use std::time::Duration;

use ringkv_verify::check::Rule;
use ringkv_verify::history::Workload;
use ringkv_verify::nemesis::{Family, Fault};
use ringkv_verify::net::Partition;
use ringkv_verify::run::{run, RunReport, RunSpec};
use ringkv_verify::workload::WorkloadSpec;

/// Runs `seed` with `bug` injected on every node, only `workload`'s
/// processes, and `families` of faults.
async fn run_with_bug(
    bug: &str,
    workload: Workload,
    families: Vec<Family>,
    extra_env: &[(&str, &str)],
) -> RunReport {
    run_with_bug_and(bug, workload, families, extra_env, |_| {}).await
}

/// [`run_with_bug`], with `adjust` applied to the run's spec last.
async fn run_with_bug_and(
    bug: &str,
    workload: Workload,
    families: Vec<Family>,
    extra_env: &[(&str, &str)],
    adjust: impl FnOnce(&mut RunSpec),
) -> RunReport {
    // RINGKV_MUTATION_OUT keeps the runs' files (with RINGKV_KEEP_HISTORY,
    // every history) for a look afterwards.
    let out = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("RINGKV_MUTATION_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| out.path().to_path_buf());
    let mut spec = RunSpec::standard(Duration::from_secs(30), families, &dir);
    spec.cluster.spares = 0;
    spec.cluster
        .env
        .push(("RINGKV__DEBUG__INJECT_BUG".into(), bug.into()));
    for (k, v) in extra_env {
        spec.cluster.env.push((k.to_string(), v.to_string()));
    }
    spec.converge_within = Duration::from_secs(60);
    let only = |n: usize, w: Workload| if w == workload { n } else { 0 };
    spec.workload = WorkloadSpec {
        once: only(3, Workload::Once),
        register: only(4, Workload::Register),
        set: only(4, Workload::Set),
        delete: only(4, Workload::Delete),
        ..WorkloadSpec::default()
    };
    adjust(&mut spec);
    let report = run(&spec, 42).await.expect("the run finished");
    println!("{report}\n{}", report.check);
    report
}

fn count(report: &RunReport, workload: Workload, rule: Rule) -> usize {
    report.check.workload(workload).map_or(0, |w| w.count(rule))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_once_checker_catches_acknowledged_writes_that_were_never_stored() {
    let report = run_with_bug("lose_every_tenth_write", Workload::Once, vec![], &[]).await;
    assert!(
        count(&report, Workload::Once, Rule::Lost) > 0,
        "no lost write reported:\n{}",
        report.check
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_checker_catches_a_merge_that_collapses_siblings() {
    let report = run_with_bug(
        "merge_collapses_siblings",
        Workload::Set,
        vec![Family::Network],
        &[],
    )
    .await;
    assert!(
        count(&report, Workload::Set, Rule::Lost) > 0,
        "no lost element reported:\n{}",
        report.check
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_register_checker_catches_a_quorum_read_answered_by_one_replica() {
    let report = run_with_bug(
        "read_from_one_replica",
        Workload::Register,
        vec![Family::Network],
        &[],
    )
    .await;
    assert!(
        count(&report, Workload::Register, Rule::StaleRead) > 0,
        "no stale read reported:\n{}",
        report.check
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delete_checker_catches_a_purge_that_ignores_one_replica() {
    // A short grace, so purges happen within the run (hints must expire
    // before the grace ends, as configuration demands), and partitions
    // that outlast it: the replica the purge skips must miss a delete and
    // stay cut off until the others have purged it.
    let report = run_with_bug_and(
        "purge_ignores_one_replica",
        Workload::Delete,
        vec![Family::Network],
        &[
            ("RINGKV__REPAIR__TOMBSTONE_GRACE_MS", "3000"),
            ("RINGKV__HANDOFF__MAX_AGE_MS", "2000"),
        ],
        |spec| {
            // Three members, so every key has every node as a replica,
            // and each node isolated in turn for longer than the grace:
            // whichever replica a key's purge skips is cut off once.
            spec.cluster.members = 3;
            spec.duration = Duration::from_secs(40);
            spec.nemesis.max_active = 1;
            spec.nemesis.fault_for = (Duration::from_secs(10), Duration::from_secs(10));
            spec.nemesis.script = (0..3)
                .map(|n| Fault::Partition(Partition::Isolated(n)))
                .collect();
        },
    )
    .await;
    assert!(
        count(&report, Workload::Delete, Rule::Resurrected) > 0,
        "no resurrected key reported:\n{}",
        report.check
    );
}
