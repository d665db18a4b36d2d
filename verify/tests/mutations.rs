//! Each checker catches the bug it exists for: a run whose nodes carry a
//! deliberately injected bug (`debug.inject_bug`, refused unless
//! `debug.fault_injection` is on) must make that checker report it.
//!
//! A run with no bug injected passes the same checkers
//! (`campaign.rs`), so what these see is the bug, not the harness.
//!
//! Needs root (network namespaces, iptables, tmpfs), as the campaign does.

use std::time::Duration;

use ringkv_client::{Level, RequestOptions};
use ringkv_verify::check::{self, Rule};
use ringkv_verify::cluster::{Cluster, ClusterSpec};
use ringkv_verify::history::Workload;
use ringkv_verify::history::{History, Kind, Op, F};
use ringkv_verify::nemesis::Family;
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

/// The purge bug needs one exact sequence, which a random schedule meets
/// only by luck: the replica the purge skips misses a delete, and stays
/// cut off until the others have purged the tombstone. So this test plays
/// it out directly, through the history and the delete checker as a run
/// does: a key written to all three replicas, the skipped replica
/// isolated, a read and a delete with its context, the grace waited out,
/// the heal, and the final read. The same scenario without the bug is
/// clean, so what the checker reports is the bug.
async fn purge_scenario(bug: &str) -> ringkv_verify::check::Report {
    let out = tempfile::tempdir().unwrap();
    let spec = ClusterSpec {
        members: 3,
        spares: 0,
        disk_mb: 64,
        env: vec![
            ("RINGKV__DEBUG__INJECT_BUG".into(), bug.into()),
            ("RINGKV__REPAIR__TOMBSTONE_GRACE_MS".into(), "2000".into()),
            ("RINGKV__HANDOFF__MAX_AGE_MS".into(), "1000".into()),
        ],
    };
    let mut cluster = Cluster::start(&spec, out.path()).await.unwrap();
    let history = History::in_memory();
    let key = "del-0-0";

    // The key's replicas in layout order: the first drives the purge, the
    // last other one is the one the bug skips.
    let layout = cluster.client().layout().await.unwrap();
    let partition = ringkv_tests::partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
    let replicas = &layout.assignments[partition as usize].replicas;
    let skipped = cluster.slot_of(replicas.last().unwrap()).unwrap();
    let driver = cluster.slot_of(&replicas[0]).unwrap();

    let all = RequestOptions {
        level: Some(Level::All),
        sloppy: Some(false),
        timeout: Some(Duration::from_secs(5)),
    };
    let via = cluster.nodes[driver].client();
    let mut put = Op::new(1, Workload::Delete, F::Put, key);
    put.value = Some("v1".into());
    let put = history.invoke(put);
    let opts = ringkv_client::PutOptions {
        consistency: all,
        ..Default::default()
    };
    via.put(key, "v1", opts).await.unwrap();
    history.complete(&put, Kind::Ok, |_| {});

    cluster
        .net
        .partition(&Partition::Isolated(skipped))
        .unwrap();
    let quorum = RequestOptions {
        level: Some(Level::Quorum),
        timeout: Some(Duration::from_secs(5)),
        ..RequestOptions::default()
    };
    let get = history.invoke(Op::new(2, Workload::Delete, F::Get, key));
    let read = via.get(key, quorum, false).await.unwrap();
    let seen = history.complete(&get, Kind::Ok, |op| op.values = Some(vec!["v1".into()]));
    assert_eq!(read.siblings.len(), 1);
    let mut delete = Op::new(2, Workload::Delete, F::Delete, key);
    delete.context_from = Some(seen.index);
    let delete = history.invoke(delete);
    via.delete(key, Some(read.context), quorum).await.unwrap();
    history.complete(&delete, Kind::Ok, |_| {});

    // Once the driver has convicted the isolated replica (before that its
    // anti-entropy waits on it), past the grace, with anti-entropy passes
    // (every second) to purge.
    let skipped_id = cluster.nodes[skipped].id.clone();
    let convicted = std::time::Instant::now();
    loop {
        let members = via.members().await.unwrap();
        if members
            .iter()
            .any(|m| m.node_id == skipped_id && m.liveness != "alive")
        {
            break;
        }
        assert!(
            convicted.elapsed() < Duration::from_secs(30),
            "never convicted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    // And a full pass now, as `ringkv repair` on the driver runs it.
    let pass = via.repair(0, None).await.unwrap();
    println!("repair on the driver while the replica is cut off: {pass:?}");
    if std::env::var_os("RINGKV_SHOW_LOGS").is_some() {
        println!("workers: {:?}", via.workers(0).await);
        for node in &cluster.nodes {
            println!(
                "before heal, node {}: {:?}",
                node.slot,
                node.client().local_get(0, key).await
            );
        }
    }
    // The cut-off replica restarts before the heal: requests the others
    // sent it during the partition sit in TCP send buffers and would
    // arrive, late, when packets flow again (the delete among them,
    // which would hide the bug); a restart resets those connections.
    cluster.nodes[skipped].kill();
    cluster.nodes[skipped].start().await.unwrap();
    cluster.net.heal().unwrap();
    cluster.wait_whole().await.unwrap();
    // Anti-entropy passes after the heal, then what the cluster kept.
    tokio::time::sleep(Duration::from_secs(5)).await;
    if std::env::var_os("RINGKV_SHOW_LOGS").is_some() {
        for node in &cluster.nodes {
            println!(
                "after heal, node {}: {:?}",
                node.slot,
                node.client().local_get(0, key).await
            );
        }
    }
    let mut last = Op::new(3, Workload::Delete, F::Get, key);
    last.last = true;
    let last = history.invoke(last);
    let kept = cluster.client().get(key, all, false).await.unwrap();
    history.complete(&last, Kind::Ok, |op| {
        op.values = Some(
            kept.siblings
                .iter()
                .map(|s| String::from_utf8_lossy(&s.value).into_owned())
                .collect(),
        )
    });
    let report = check::check(&history.ops()).unwrap();
    println!("{bug}: driver node {driver}, skipped node {skipped}\n{report}");
    if std::env::var_os("RINGKV_SHOW_LOGS").is_some() {
        for node in &cluster.nodes {
            println!(
                "--- node {}:\n{}",
                node.slot,
                std::fs::read_to_string(&node.log_path).unwrap_or_default()
            );
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delete_checker_catches_a_purge_that_ignores_one_replica() {
    let report = purge_scenario("purge_ignores_one_replica").await;
    let delete = report.workload(Workload::Delete).unwrap();
    assert!(
        delete.count(Rule::Resurrected) > 0,
        "no resurrected key reported:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_purge_bug_the_same_scenario_is_clean() {
    let report = purge_scenario("none").await;
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.workload(Workload::Delete).unwrap().deletes.ok, 1);
}
