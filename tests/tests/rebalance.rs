//! Elastic clusters on real processes: growing
//! and shrinking under a continuous read/write load, removing a killed
//! node, resuming a transfer after its receiver was killed, the transfer
//! rate limit, and the balance and size of plans.
//!
//! Every test here starts its own cluster on loopback ports with
//! `cluster.partitions = 64` (16 for the resume test, whose partitions must
//! be large) and a low `transfer.max_rate`, so that a hand-over lasts
//! seconds and the load really runs through it. They take a lock so that
//! only one runs at a time: each is several processes, and timing (the
//! rate limit, a kill in the middle of a transfer) should not depend on
//! what the other tests do on a small machine.
//!
//! ```text
//! CARGO_TARGET_DIR=~/.cache/ringkv/target cargo test --release \
//!     -p ringkv-tests --test rebalance -- --nocapture
//! ```
//!
//! The harness for these (load, waits, checkers) is in
//! `tests/src/rebalance/`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringkv_client::{Error, Level};
use ringkv_proto::v1 as pb;
use ringkv_tests::rebalance::check::{
    as_expected, assert_no_problems, check_after_change, layout_problems, read_problems,
    share_problems, shares, summarize, wait_placement, DEAD_NODE_READ_ERRORS,
    HAND_OVER_READ_ERRORS, RETIRE_TIMEOUT,
};
use ringkv_tests::rebalance::load::{preload, Load, LoadSpec};
use ringkv_tests::rebalance::{
    cli_async, describe, layout_members, print_cli_transfers, scrape_counter, wait_settled,
    wait_transition, PARTITIONS,
};
use ringkv_tests::TestCluster;

/// One test at a time (see the module doc). A tokio mutex does not poison,
/// so a failed test does not fail the ones after it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a cluster change may take to settle here. The data is a few
/// MB at most, transferred at 0.5 MB/s; this is generous for a loaded
/// two-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a load may run at most, whatever happens.
const LOAD_DEADLINE: Duration = Duration::from_secs(240);

/// Load settings of the grow and shrink tests: two writers, one routing
/// by partition and one going through a fixed node.
fn load_spec(prefix: &str, via: usize) -> LoadSpec {
    LoadSpec {
        prefix: prefix.to_string(),
        writers: 2,
        max_per_writer: 3_000,
        value_bytes: 512,
        via,
    }
}

/// Rate limit of the grow and shrink tests, MB/s: with ~2 MB preloaded a
/// hand-over then lasts a few seconds, so the load meets it.
const CHANGE_RATE: &str = "0.5";

/// Keys preloaded before a change, and their size: the data the change
/// has to move.
const PRELOAD_KEYS: usize = 1_500;
const PRELOAD_VALUE_BYTES: usize = 1_000;

/// How long the load runs before a change starts and after it settled.
const LOAD_BEFORE: Duration = Duration::from_secs(1);
const LOAD_AFTER: Duration = Duration::from_secs(2);

fn base_env() -> Vec<(&'static str, &'static str)> {
    vec![("RINGKV__CLUSTER__PARTITIONS", PARTITIONS)]
}

/// Grow 3 → 5 while two clients write and read continuously (N = 3,
/// QUORUM): no acknowledged write is lost, reads fail only with retryable
/// errors, and afterwards every key is on exactly its final replicas (old
/// copies deleted), with each node's share of replicas within ±10% of its
/// weight share. The two new nodes have weight 2, so the weights matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_from_three_to_five_nodes_under_load_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    assert_eq!(layout_members(&before).len(), 3, "{}", describe(&before));
    let preloaded = preload(
        &cluster.client(),
        "grow-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();

    let load = Load::start(
        &cluster,
        &load_spec("grow", 0),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    // Both start before either is ready, so auto_join can take them in
    // one change (it waits a few gossip rounds for that).
    let weight2 = [("RINGKV__NODE__WEIGHT", "2")];
    let a = cluster.spawn_node(&weight2).unwrap();
    let b = cluster.spawn_node(&weight2).unwrap();
    cluster.wait_node_ready(a).await.unwrap();
    cluster.wait_node_ready(b).await.unwrap();
    let change_started = Instant::now();
    if let Some(l) = wait_transition(&cluster, before.version, Duration::from_secs(30)).await {
        load.set_in_transition(true);
        println!(
            "[{:>5.1?}] auto_join committed: {}",
            started.elapsed(),
            describe(&l)
        );
        // Let the transfers get going, so the CLI has progress to show.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        print_cli_transfers(&cluster.nodes[0].grpc).await;
    }
    let settled = wait_settled(&cluster, before.version, 5, Some(&load), SETTLE_TIMEOUT).await;
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        }
    };
    println!(
        "[{:>5.1?}] settled {:.1?} after the new nodes were up (in transition for {:.1?}): {}",
        started.elapsed(),
        change_started.elapsed(),
        settled.transition_lasted,
        describe(&settled.layout)
    );
    println!("shares: {}", shares(&settled.layout));
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");

    let mut problems = Vec::new();
    let members: BTreeSet<String> = cluster.ids.iter().cloned().collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        HAND_OVER_READ_ERRORS,
        &mut problems,
    )
    .await;
    for m in &settled.layout.members {
        if m.status != "up" {
            problems.push(format!(
                "member {} has status {:?}, not up",
                m.node_id, m.status
            ));
        }
    }
    for i in [a, b] {
        let received = cluster.nodes[i]
            .client()
            .transfers(0)
            .await
            .unwrap()
            .bytes_received;
        let metric = scrape_counter(&cluster.nodes[i].metrics, "ringkv_transfer_bytes_total");
        println!("node {i} received {received} bytes by transfers (metric: {metric:?})");
        if received == 0 {
            problems.push(format!("new node {i} reports no transferred bytes"));
        }
        match metric {
            Ok(v) if v as u64 == received => {}
            other => problems.push(format!(
                "node {i}: ringkv_transfer_bytes_total is {other:?}, Transfers says {received}"
            )),
        }
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// Shrink 5 → 3 with `leave` under the same load: the leaving nodes are
/// drained by `ringkv cluster commit --wait`, end with status `left`
/// owning nothing, hold no data, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_from_five_to_three_with_leave_under_load_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let cluster = TestCluster::start_with_env(5, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    assert_eq!(layout_members(&before).len(), 5, "{}", describe(&before));
    // The lowest id is the claimant, which then drains itself; and the
    // highest. Ids are fixed-width hex, so string order is numeric order.
    let mut by_id: Vec<usize> = (0..5).collect();
    by_id.sort_by(|x, y| cluster.ids[*x].cmp(&cluster.ids[*y]));
    let leavers = [by_id[0], by_id[4]];
    let stayers: Vec<usize> = (0..5).filter(|i| !leavers.contains(i)).collect();
    println!(
        "leaving: nodes {leavers:?} ({}, {}), staying: {stayers:?}",
        cluster.ids[leavers[0]], cluster.ids[leavers[1]]
    );
    let preloaded = preload(
        &cluster.client(),
        "shrink-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();

    let load = Load::start(
        &cluster,
        &load_spec("shrink", stayers[0]),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    let admin = &cluster.nodes[stayers[0]].grpc;
    // One leave through the CLI, one through the library; both name a
    // node other than the one asked, which forwards to it.
    let out = cli_async(
        admin,
        &["cluster", "leave", cluster.ids[leavers[0]].as_str()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    println!(
        "$ ringkv cluster leave {}\n{}{}",
        cluster.ids[leavers[0]],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "leave failed: {out:?}");
    cluster.nodes[stayers[1]]
        .client()
        .leave(Some(cluster.ids[leavers[1]].as_str()))
        .await
        .unwrap();

    // The leaves reach the claimant by gossip.
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let plan = cluster.nodes[stayers[0]].client().plan().await.unwrap();
        if plan.changes.len() == 2 {
            break plan;
        }
        assert!(
            Instant::now() < deadline,
            "the plan does not show both leaves: {:?}",
            plan.changes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "plan: {:?}, {} moves (minimum {})",
        plan.changes,
        plan.moves.len(),
        plan.minimum_moves
    );
    let leaver_ids: BTreeSet<&String> = leavers.iter().map(|i| &cluster.ids[*i]).collect();
    assert!(
        plan.moves.iter().all(|m| !leaver_ids.contains(&m.to)),
        "a leaving node gains partitions: {:?}",
        plan.moves
    );

    let commit = tokio::spawn({
        let admin = admin.clone();
        async move {
            cli_async(
                &admin,
                &["cluster", "commit", "--wait"],
                SETTLE_TIMEOUT + Duration::from_secs(30),
            )
            .await
        }
    });
    let settled = wait_settled(&cluster, before.version, 3, Some(&load), SETTLE_TIMEOUT).await;
    let commit = commit.await.unwrap();
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}"), format!("commit: {commit:?}")]);
            unreachable!()
        }
    };
    let mut problems = Vec::new();
    match &commit {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            println!(
                "$ ringkv cluster commit --wait (exit {:?})\n{stdout}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() || !stdout.contains("in force") {
                problems.push(format!(
                    "`ringkv cluster commit --wait` did not end well: {out:?}"
                ));
            }
        }
        Err(e) => problems.push(format!("`ringkv cluster commit --wait`: {e:#}")),
    }
    println!(
        "[{:>5.1?}] settled (in transition for {:.1?}): {}",
        started.elapsed(),
        settled.transition_lasted,
        describe(&settled.layout)
    );
    println!("shares: {}", shares(&settled.layout));
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");

    // The leavers declare themselves `left` once they see the settled
    // layout; the others learn it by gossip.
    let deadline = Instant::now() + Duration::from_secs(30);
    let observer = cluster.nodes[stayers[0]].client();
    let left = loop {
        let members = observer.members().await.unwrap();
        let left: Vec<&pb::Member> = members
            .iter()
            .filter(|m| leaver_ids.contains(&m.node_id))
            .collect();
        if (left.len() == 2 && left.iter().all(|m| m.status == "left")) || Instant::now() > deadline
        {
            break left.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for m in &left {
        println!(
            "leaver {}: status {}, liveness {}, partitions owned {}",
            m.node_id, m.status, m.liveness, m.partitions_owned
        );
        if m.status != "left" || m.partitions_owned != 0 {
            problems.push(format!(
                "leaver {} has status {:?} and owns {} partitions; expected left and 0",
                m.node_id, m.status, m.partitions_owned
            ));
        }
    }
    if left.len() != 2 {
        problems.push(format!(
            "the members list shows {} of the 2 leavers",
            left.len()
        ));
    }
    let members: BTreeSet<String> = stayers.iter().map(|i| cluster.ids[*i].clone()).collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        HAND_OVER_READ_ERRORS,
        &mut problems,
    )
    .await;
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// `remove` of a SIGKILLed node: the survivors re-replicate its
/// partitions among themselves, so every partition has N = 3 replicas
/// again, and no acknowledged write (before the kill, or while the node
/// was down and being removed) is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_killed_node_restores_three_replicas_and_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let mut cluster = TestCluster::start_with_env(4, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    // The claimant (lowest id) is the victim: its duties must pass on.
    let victim = (0..4).min_by_key(|i| cluster.ids[*i].clone()).unwrap();
    let survivors: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    let victim_id = cluster.ids[victim].clone();
    let preloaded = preload(
        &cluster.client(),
        "remove-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();

    // A live node cannot be removed: it must leave.
    let refused = cluster.client().remove(&victim_id).await;
    assert!(
        matches!(refused, Err(Error::FailedPrecondition(_))),
        "removing a live node: {refused:?}"
    );

    let load = Load::start(
        &cluster,
        &load_spec("remove", survivors[0]),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    cluster.nodes[victim].kill();
    println!(
        "[{:>5.1?}] killed node {victim} ({victim_id})",
        started.elapsed()
    );
    for &s in &survivors {
        cluster.wait_liveness(s, victim, "dead").await.unwrap();
    }
    println!("[{:>5.1?}] the survivors see it dead", started.elapsed());
    let admin = cluster.nodes[survivors[0]].grpc.clone();
    let out = cli_async(
        &admin,
        &["cluster", "remove", victim_id.as_str()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    println!(
        "$ ringkv cluster remove {victim_id}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "remove failed: {out:?}");
    let survivor = cluster.nodes[survivors[1]].client();
    let plan = survivor.plan().await.unwrap();
    println!(
        "plan: {:?}, {} moves (minimum {}), blocked {:?}",
        plan.changes,
        plan.moves.len(),
        plan.minimum_moves,
        plan.blocked
    );
    assert!(
        plan.changes.iter().any(|c| c.contains("remove")),
        "{plan:?}"
    );
    assert!(
        !plan.moves.is_empty(),
        "removing a node moves nothing: {plan:?}"
    );
    assert!(
        plan.moves
            .iter()
            .all(|m| m.from != victim_id && m.to != victim_id),
        "a move involves the dead node: {:?}",
        plan.moves
    );
    let committed = survivor.commit(plan.current_version).await.unwrap();
    println!(
        "[{:>5.1?}] committed v{} with {} moves",
        started.elapsed(),
        committed.version,
        committed.moves
    );
    load.set_in_transition(true);
    let settled = wait_settled(&cluster, before.version, 3, Some(&load), SETTLE_TIMEOUT).await;
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        }
    };
    println!(
        "[{:>5.1?}] settled (in transition for {:.1?}): {}",
        started.elapsed(),
        settled.transition_lasted,
        describe(&settled.layout)
    );
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");

    let mut problems = Vec::new();
    let members: BTreeSet<String> = survivors.iter().map(|i| cluster.ids[*i].clone()).collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        DEAD_NODE_READ_ERRORS,
        &mut problems,
    )
    .await;
    // N regained: every replica of every key answers an R = ALL read.
    let mut keys = as_expected(&preloaded);
    keys.extend(report.acknowledged());
    let all = read_problems(&cluster.client(), &keys, Level::All).await;
    problems.extend(summarize("R=ALL reads after the removal", &all));
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// One snapshot of a node's transfers for one layout version.
#[derive(Debug, Default)]
struct Snapshot {
    /// partition → (state, bytes, resumed_from_bytes)
    transfers: BTreeMap<u32, (String, u64, u64)>,
    bytes_received: u64,
}

impl Snapshot {
    fn of(resp: &pb::TransfersResponse, version: u64) -> Snapshot {
        Snapshot {
            transfers: resp
                .transfers
                .iter()
                .filter(|t| t.layout_version == version)
                .map(|t| {
                    (
                        t.partition,
                        (t.state.clone(), t.bytes, t.resumed_from_bytes),
                    )
                })
                .collect(),
            bytes_received: resp.bytes_received,
        }
    }

    fn total(&self) -> u64 {
        self.transfers.values().map(|(_, b, _)| *b).sum()
    }

    fn all_done(&self) -> bool {
        !self.transfers.is_empty() && self.transfers.values().all(|(s, _, _)| s == "done")
    }
}

/// Kill the receiving node in the middle of a transfer and restart it on
/// the same data directory: the partitions it was streaming resume from
/// the bytes they had (not from zero), the restarted process receives
/// fewer bytes than the change transferred in all, and the change
/// completes with every key on its final replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_resumes_where_it_stopped_after_the_receiver_is_killed() {
    /// Bytes the receiver must have in before it is killed: about a
    /// fifth of what it receives in all.
    const KILL_AFTER_BYTES: u64 = 400_000;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // Few, large partitions and small chunks: each partition takes
    // seconds at this rate and streams in many chunks, so a kill lands
    // in the middle of one.
    let env = [
        ("RINGKV__CLUSTER__PARTITIONS", "16"),
        ("RINGKV__TRANSFER__MAX_RATE", "0.25"),
        ("RINGKV__TRANSFER__CHUNK_BYTES", "16384"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    let preloaded = preload(&cluster.client(), "resume", 2_500, 1_000, 16)
        .await
        .unwrap();
    let new = cluster.add_node(&[]).await.unwrap();
    let receiver = cluster.nodes[new].client();

    // Wait until a good part of the data is in (so that starting over
    // would show plainly in the byte counts) and some partition is
    // part-way through streaming.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (version, at_kill) = loop {
        let resp = receiver.transfers(0).await.unwrap();
        if resp.in_transition && resp.layout_version > before.version {
            let snap = Snapshot::of(&resp, resp.layout_version);
            let streaming = snap
                .transfers
                .values()
                .any(|(state, bytes, _)| state == "streaming" && *bytes > 0);
            if streaming && snap.total() >= KILL_AFTER_BYTES {
                break (resp.layout_version, snap);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no transfer to node {new} was seen streaming: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.nodes[new].kill();
    let midway: BTreeMap<u32, u64> = at_kill
        .transfers
        .iter()
        .filter(|(_, (state, bytes, _))| state != "done" && *bytes > 0)
        .map(|(p, (_, bytes, _))| (*p, *bytes))
        .collect();
    println!(
        "[{:>5.1?}] killed the receiver during layout v{version}: {} bytes in, partitions part-way {midway:?}, {} of {} done",
        started.elapsed(),
        at_kill.total(),
        at_kill.transfers.values().filter(|(s, _, _)| s == "done").count(),
        at_kill.transfers.len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[new].restart().await.unwrap();
    println!("[{:>5.1?}] restarted the receiver", started.elapsed());

    // Follow the restarted receiver until its transfers of this version
    // are all done.
    let receiver = cluster.nodes[new].client();
    let mut resumed: BTreeMap<u32, u64> = BTreeMap::new();
    // The latest snapshot in which every partition that had bytes in at
    // the kill has been taken up again (a queued one reports no bytes
    // yet): from then on its bytes count what was kept.
    let mut covering: Option<Snapshot> = None;
    let mut last = Snapshot::default();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        let resp = receiver.transfers(0).await.unwrap();
        if resp.layout_version != version {
            break;
        }
        let snap = Snapshot::of(&resp, version);
        for (p, (state, _, from)) in &snap.transfers {
            if midway.contains_key(p) && state != "queued" {
                resumed.entry(*p).or_insert(*from);
            }
        }
        let taken_up = at_kill
            .transfers
            .iter()
            .filter(|(_, (_, bytes, _))| *bytes > 0)
            .all(|(p, _)| snap.transfers.get(p).is_some_and(|(s, _, _)| s != "queued"));
        let all_done = snap.all_done();
        if taken_up {
            covering = Some(snap);
        } else {
            last = snap;
        }
        if all_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = wait_settled(&cluster, before.version, 4, None, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|e| {
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        });
    println!(
        "[{:>5.1?}] settled: {}",
        started.elapsed(),
        describe(&settled.layout)
    );

    let mut problems = Vec::new();
    println!("resumed from (partition → bytes at restart): {resumed:?}");
    for (p, bytes_at_kill) in &midway {
        match resumed.get(p) {
            Some(from) if *from >= *bytes_at_kill && *from > 0 => {}
            Some(from) => problems.push(format!(
                "partition {p} had {bytes_at_kill} bytes in at the kill but resumed from {from}"
            )),
            None => problems.push(format!(
                "partition {p} (part-way at the kill) was not seen running again after the restart"
            )),
        }
    }
    match &covering {
        Some(snap) => {
            let done = snap.transfers.values().filter(|(s, _, _)| s == "done").count();
            println!(
                "after the restart ({done} of {} partitions done at the last look): {} bytes received by this process; {} bytes transferred for v{version} in all ({} before the kill)",
                snap.transfers.len(),
                snap.bytes_received,
                snap.total(),
                at_kill.total()
            );
            if snap.bytes_received == 0 {
                problems.push("the restarted receiver received nothing".into());
            }
            // Only what was missing is fetched again: the bytes this
            // process received and the bytes in before the kill add up to
            // no more than the total.
            if snap.bytes_received + at_kill.total() > snap.total() {
                problems.push(format!(
                    "the restarted receiver fetched {} bytes, but {} were in before the kill and the total is {}: it started over",
                    snap.bytes_received,
                    at_kill.total(),
                    snap.total()
                ));
            }
        }
        None => problems.push(format!(
            "the partitions in progress at the kill were never all seen taken up again; last: {last:?}"
        )),
    }
    problems.extend(summarize(
        "layout",
        &layout_problems(&settled.layout, &cluster.ids.iter().cloned().collect()),
    ));
    let keys = as_expected(&preloaded);
    let unreadable = read_problems(&cluster.client(), &keys, Level::Quorum).await;
    problems.extend(summarize("reads", &unreadable));
    match wait_placement(&cluster, &settled.layout, &keys, RETIRE_TIMEOUT).await {
        Ok((misplaced, _)) => problems.extend(summarize("placement", &misplaced)),
        Err(e) => problems.push(format!("placement check failed: {e:#}")),
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// `transfer.max_rate` holds: the bytes a joining node receives, sampled
/// while its transfers run, come in at no more than 10% above the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_keep_within_ten_percent_of_the_rate_limit() {
    /// The limit, MB/s (10^6 bytes).
    const LIMIT_MB: f64 = 0.5;
    /// Window the measurement must at least cover.
    const MIN_WINDOW: Duration = Duration::from_secs(4);
    /// Shortest stretch the rate is also held to. Each of the
    /// `transfer.concurrency` (2) transfers may have one chunk (64 KiB)
    /// in beyond what the rate has paid for, so over 4 s the limit may be
    /// exceeded by up to ~6.5% without any fault.
    const SUB_WINDOW: Duration = Duration::from_secs(4);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let limit = LIMIT_MB.to_string();
    let env = [
        ("RINGKV__CLUSTER__PARTITIONS", PARTITIONS),
        ("RINGKV__TRANSFER__MAX_RATE", limit.as_str()),
        ("RINGKV__TRANSFER__CHUNK_BYTES", "65536"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    // ~4 MB of keys and versions; a fourth node receives ~3/4 of it.
    preload(&cluster.client(), "rate", 4_000, 1_000, 16)
        .await
        .unwrap();
    let new = cluster.add_node(&[]).await.unwrap();
    let receiver = cluster.nodes[new].client();

    // Each reading happened somewhere between sending the request and
    // getting the answer; a stretch between two readings is taken as the
    // longest it can have been, so a slow answer never makes a rate look
    // faster than it was.
    struct Sample {
        sent: Instant,
        answered: Instant,
        bytes: u64,
    }
    let rate_between = |a: &Sample, b: &Sample| {
        let span = b.answered - a.sent;
        ((b.bytes - a.bytes) as f64 / span.as_secs_f64(), span)
    };
    let mut samples: Vec<Sample> = Vec::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let sent = Instant::now();
        let resp = receiver.transfers(0).await.unwrap();
        samples.push(Sample {
            sent,
            answered: Instant::now(),
            bytes: resp.bytes_received,
        });
        let layout = receiver.layout().await.unwrap();
        if layout.version > before.version && layout.previous_version == 0 {
            break;
        }
        assert!(
            sent < deadline,
            "the join did not settle: {}",
            describe(&layout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = samples.last().map(|s| s.bytes).unwrap_or(0);
    // From the first sample with bytes in to the first that shows them all.
    let Some(first) = samples.iter().position(|s| s.bytes > 0) else {
        panic!("no bytes were transferred");
    };
    let last = samples
        .iter()
        .position(|s| s.bytes == total)
        .expect("the last sample has the total");
    let (rate, window) = rate_between(&samples[first], &samples[last]);
    let limit_bytes = LIMIT_MB * 1e6;
    // The rate must hold throughout, not only on average: the fastest
    // stretch of at least SUB_WINDOW between the same bounds.
    let running = &samples[first..=last];
    let mut fastest = (0.0f64, Duration::ZERO);
    for (i, a) in running.iter().enumerate() {
        for b in &running[i + 1..] {
            let (r, span) = rate_between(a, b);
            if span >= SUB_WINDOW && r > fastest.0 {
                fastest = (r, span);
            }
        }
    }
    println!(
        "[{:>5.1?}] received {total} bytes; measured {:.3} MB/s over {window:.1?} ({} samples), limit {LIMIT_MB} MB/s ({:.1}% of it); fastest stretch of at least {SUB_WINDOW:?}: {:.3} MB/s over {:.1?}",
        started.elapsed(),
        rate / 1e6,
        samples.len(),
        100.0 * rate / limit_bytes,
        fastest.0 / 1e6,
        fastest.1
    );
    let metric =
        scrape_counter(&cluster.nodes[new].metrics, "ringkv_transfer_bytes_total").unwrap();
    assert_eq!(
        metric as u64, total,
        "ringkv_transfer_bytes_total disagrees with Transfers.bytes_received"
    );
    assert!(
        window >= MIN_WINDOW,
        "the transfer took {window:?}, too short to measure a rate; preload more"
    );
    assert!(
        rate <= 1.10 * limit_bytes,
        "measured {:.3} MB/s, more than 10% above the limit {LIMIT_MB} MB/s",
        rate / 1e6
    );
    assert!(
        fastest.0 <= 1.10 * limit_bytes,
        "{:.3} MB/s over {:.1?}: more than 10% above the limit {LIMIT_MB} MB/s",
        fastest.0 / 1e6,
        fastest.1
    );
    // The limit, not something else, is what bounds the rate.
    assert!(
        rate >= 0.3 * limit_bytes,
        "measured only {:.3} MB/s against a limit of {LIMIT_MB} MB/s",
        rate / 1e6
    );
}

/// A plan that adds one node copies at most 1.2x the minimum number of
/// partition replicas and says so (`ringkv cluster plan`); with
/// `cluster.auto_join = false` the node waits for `join`; stale and
/// concurrent commits are refused with FAILED_PRECONDITION and a change
/// is never applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_adding_one_node_moves_at_most_1_2x_the_minimum() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with_env(3, &[], &base_env())
        .await
        .unwrap();
    let before = cluster.client().layout().await.unwrap();
    preload(&cluster.client(), "plan", 300, 1_000, 16)
        .await
        .unwrap();
    let new = cluster
        .add_node(&[("RINGKV__CLUSTER__AUTO_JOIN", "false")])
        .await
        .unwrap();
    let new_id = cluster.ids[new].clone();
    // Through an old node: the new one is not a member yet.
    let client = cluster.nodes[0].client();

    // Without auto_join nothing happens by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = client.plan().await.unwrap();
    assert!(idle.changes.is_empty(), "staged without join: {idle:?}");
    assert_eq!(client.layout().await.unwrap().version, before.version);
    let nothing = client.commit(before.version).await;
    assert!(
        matches!(nothing, Err(Error::FailedPrecondition(_))),
        "commit with nothing staged: {nothing:?}"
    );

    let message = cluster.nodes[new]
        .client()
        .join(0, &cluster.nodes[0].peer)
        .await
        .unwrap();
    println!("join: {message}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let plan = client.plan().await.unwrap();
        if !plan.changes.is_empty() {
            break plan;
        }
        assert!(Instant::now() < deadline, "the join was never staged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = cli_async(
        &cluster.nodes[0].grpc,
        &["cluster", "plan"],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "$ ringkv cluster plan\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("minimum possible"),
        "{out:?}"
    );
    let out = cli_async(
        &cluster.nodes[1].grpc,
        &["--output", "json", "cluster", "plan"],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --output json is not JSON ({e}): {out:?}"));

    assert_eq!(plan.current_version, before.version);
    assert!(plan.blocked.is_empty(), "{plan:?}");
    assert_eq!(plan.changes.len(), 1, "{plan:?}");
    assert!(plan.minimum_moves > 0, "{plan:?}");
    let ratio = plan.moves.len() as f64 / plan.minimum_moves as f64;
    println!(
        "plan moves {} partition replicas, minimum {}: {ratio:.2}x",
        plan.moves.len(),
        plan.minimum_moves
    );
    assert!(
        plan.moves.len() as f64 <= 1.2 * plan.minimum_moves as f64,
        "the plan moves {} replicas, more than 1.2x the minimum {}",
        plan.moves.len(),
        plan.minimum_moves
    );
    assert!(
        plan.moves.iter().all(|m| m.to == new_id),
        "adding a node moves replicas between old nodes: {:?}",
        plan.moves
    );
    assert_eq!(json["move_count"], plan.moves.len(), "{json}");
    assert_eq!(json["minimum_moves"], plan.minimum_moves, "{json}");
    for m in &plan.members {
        let deviation = (f64::from(m.replicas_after) - m.target_share) / m.target_share;
        assert!(
            deviation.abs() <= 0.10,
            "{} would hold {} replicas against a share of {:.1}",
            m.node_id,
            m.replicas_after,
            m.target_share
        );
    }

    // A stale plan is refused.
    let stale = client.commit(before.version + 1).await;
    assert!(
        matches!(stale, Err(Error::FailedPrecondition(_))),
        "stale commit: {stale:?}"
    );
    // Two commits of the same plan at once, through different nodes:
    // exactly one is applied.
    let (c0, c1) = (cluster.nodes[0].client(), cluster.nodes[2].client());
    let (r0, r1) = tokio::join!(
        c0.commit(plan.current_version),
        c1.commit(plan.current_version)
    );
    println!("concurrent commits: {r0:?} / {r1:?}");
    let applied: Vec<&pb::CommitResponse> = [&r0, &r1].into_iter().flatten().collect();
    assert_eq!(applied.len(), 1, "{r0:?} / {r1:?}");
    for r in [&r0, &r1] {
        if let Err(e) = r {
            assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        }
    }
    let committed = *applied[0];
    assert_eq!(committed.version, before.version + 1);
    assert_eq!(committed.moves as usize, plan.moves.len());
    // Committing the same plan again is stale.
    let again = client.commit(plan.current_version).await;
    assert!(
        matches!(again, Err(Error::FailedPrecondition(_))),
        "second commit: {again:?}"
    );

    let settled = wait_settled(&cluster, before.version, 4, None, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|e| {
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        });
    println!(
        "settled: {}; shares: {}",
        describe(&settled.layout),
        shares(&settled.layout)
    );
    assert_eq!(
        settled.layout.version,
        committed.version + 1,
        "one change, retired once"
    );
    // The layout in force is the plan: the same replicas moved.
    let old: BTreeMap<u32, &Vec<String>> = before
        .assignments
        .iter()
        .map(|a| (a.partition, &a.replicas))
        .collect();
    let mut moved = BTreeSet::new();
    for a in &settled.layout.assignments {
        for r in &a.replicas {
            if !old.get(&a.partition).is_some_and(|o| o.contains(r)) {
                moved.insert((a.partition, r.clone()));
            }
        }
    }
    let planned: BTreeSet<(u32, String)> = plan
        .moves
        .iter()
        .map(|m| (m.partition, m.to.clone()))
        .collect();
    assert_eq!(moved, planned, "the layout in force is not the plan");
    let problems = share_problems(&settled.layout);
    assert!(problems.is_empty(), "{problems:?}");
    let done = client.commit(settled.layout.version).await;
    assert!(
        matches!(done, Err(Error::FailedPrecondition(_))),
        "commit after the change, with nothing staged: {done:?}"
    );
}
