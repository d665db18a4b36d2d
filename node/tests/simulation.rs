//! Multi-node behaviour in one process: every scenario runs a cluster of
//! simulated nodes (memory storage, the in-memory network, simulated time)
//! and prints its seed. `RINGKV_SIM_SEED=<n>` replays one seed.

mod sim;

use std::sync::Arc;
use std::time::Duration;

use ringkv_node::coordinator::Level;
use ringkv_storage::MemoryEngine;
use sim::gate::GatedEngine;
use sim::{base_config, Sim};

/// The scenario's seed: fixed, unless `RINGKV_SIM_SEED` names another.
fn seed(fixed: u64) -> u64 {
    std::env::var("RINGKV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fixed)
}

/// A key replicated on both `victim` and `coordinator`: found by trying
/// names in order.
fn key_replicated_on(sim: &Sim, victim: usize, coordinator: usize) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| {
            let replicas = sim.replicas_of(k);
            replicas.contains(&sim.nodes[victim].id)
                && replicas.contains(&sim.nodes[coordinator].id)
        })
        .expect("some key")
}

/// Everything but `i`.
fn others(sim: &Sim, i: usize) -> Vec<ringkv_core::version::NodeId> {
    sim.ids()
        .into_iter()
        .filter(|id| *id != sim.nodes[i].id)
        .collect()
}

/// A write taken by a fallback while its replica is cut off reaches the
/// replica by hinted handoff once the partition heals (anti-entropy off,
/// so nothing else could bring it).
///
/// With `convict`, the partition outlasts the other nodes' belief that
/// the cut replica is alive and a hint delivery attempt after that, so
/// delivery also meets a target it believes down.
async fn hinted_handoff_run(seed: u64, convict: bool) -> (u64, u64) {
    let mut config = base_config(4);
    config.repair.anti_entropy = false;
    let sim = Sim::start(4, seed, config).await;
    let key = key_replicated_on(&sim, 1, 0);
    let victim = sim.index_of(
        *sim.replicas_of(&key)
            .iter()
            .find(|id| **id != sim.nodes[0].id)
            .expect("another replica"),
    );
    sim.net
        .partition(&[sim.nodes[victim].id], &others(&sim, victim));
    sim.put(0, &key, "while-cut", Level::Quorum, true)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: put: {e}"));
    assert!(
        sim.local_values(victim, &key).await.is_empty(),
        "seed {seed}: the cut replica got the write directly"
    );
    if convict {
        let cut = sim.nodes[victim].id;
        sim.wait_for("the cut replica believed down", |sim| {
            sim.nodes
                .iter()
                .filter(|n| n.id != cut)
                .all(|n| !n.parts.cluster.is_alive(cut))
        })
        .await;
        // Their metrics pages count it among the members, not the live ones.
        sim.wait_for("the members gauges to show the cut replica down", |sim| {
            sim.nodes.iter().filter(|n| n.id != cut).all(|n| {
                let page = n.parts.metrics.render(n.engine.as_ref());
                page.contains("\nringkv_members 4\n") && page.contains("\nringkv_members_alive 3\n")
            })
        })
        .await;
        // Longer than a delivery attempt's timeout, so attempts started
        // while the replica was still believed alive have ended.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    sim.net.heal();
    sim.wait_for_values(victim, &key, &["while-cut"]).await;
    let delivered = sim
        .nodes
        .iter()
        .map(|n| n.worker_counter("hint-delivery", "delivered"))
        .sum();
    let lost = sim.net.counts().lost;
    sim.stop().await;
    (delivered, lost)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_replica_cut_off_gets_the_write_by_hinted_handoff_on_heal() {
    let seed = seed(11);
    let (delivered, lost) = hinted_handoff_run(seed, false).await;
    assert!(delivered >= 1, "seed {seed}: no hint was delivered");
    assert!(lost >= 1, "seed {seed}: the partition lost no message");
}

/// Hints for a replica every other node believes down are kept until it
/// is back, then delivered.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hints_for_a_replica_believed_down_wait_until_it_is_back() {
    let seed = seed(17);
    let (delivered, _) = hinted_handoff_run(seed, true).await;
    assert!(delivered >= 1, "seed {seed}: no hint was delivered");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_seed_replays_exactly() {
    let seed = seed(12);
    let first = hinted_handoff_run(seed, false).await;
    let again = hinted_handoff_run(seed, false).await;
    assert_eq!(first, again, "seed {seed} did not replay");
}

/// A replica that missed a write (strict quorum, hints never delivered,
/// no anti-entropy) is brought up to date by the read that finds it behind.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn read_repair_brings_a_stale_replica_up_to_date() {
    let seed = seed(13);
    let mut config = base_config(3);
    config.repair.anti_entropy = false;
    config.handoff.interval_ms = 3_600_000;
    let sim = Sim::start(3, seed, config).await;
    let key = "read-repaired";
    sim.net.partition(&[sim.nodes[2].id], &others(&sim, 2));
    sim.put(0, key, "v1", Level::Quorum, false)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: put: {e}"));
    sim.net.heal();
    sim.wait_converged().await;
    assert!(sim.local_values(2, key).await.is_empty(), "seed {seed}");
    assert_eq!(sim.get(0, key, Level::All).await, vec!["v1"], "seed {seed}");
    sim.wait_for_values(2, key, &["v1"]).await;
    sim.stop().await;
}

/// Keys written while a replica was partitioned reach it by anti-entropy
/// alone (hints are never delivered).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn anti_entropy_converges_replicas_after_a_partition() {
    let seed = seed(14);
    let mut config = base_config(3);
    config.handoff.interval_ms = 3_600_000;
    let sim = Sim::start(3, seed, config).await;
    sim.net.partition(&[sim.nodes[2].id], &others(&sim, 2));
    let keys: Vec<String> = (0..40).map(|i| format!("ae-{i}")).collect();
    for key in &keys {
        sim.put(0, key, "during", Level::Quorum, false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: put {key}: {e}"));
    }
    sim.net.heal();
    for key in &keys {
        sim.wait_for_values(2, key, &["during"]).await;
    }
    sim.stop().await;
}

/// Two writes of one key through two coordinators, each made after the
/// same earlier version and neither after the other, are concurrent: both
/// survive, as siblings, on every replica, and the version both saw is
/// gone. (Blind writes would be concurrent only when neither coordinator
/// had received the other's before its own: a blind write supersedes
/// everything its coordinator holds.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrent_writes_through_two_coordinators_become_siblings() {
    let seed = seed(15);
    let sim = Sim::start(3, seed, base_config(3)).await;
    let key = "contended";
    let seen = sim
        .put(2, key, "base", Level::All, false)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
        .context;
    let (a, b) = tokio::join!(
        sim.put_after(0, key, "from-0", Some(seen.clone()), Level::All, true),
        sim.put_after(1, key, "from-1", Some(seen), Level::All, true),
    );
    a.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    b.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for i in 0..3 {
        assert_eq!(
            sim.get(i, key, Level::All).await,
            vec!["from-0", "from-1"],
            "seed {seed}: node {i}"
        );
    }
    sim.stop().await;
}

/// A node that joins receives its partitions by transfer, and a restart
/// in the middle of the transfers does not lose or stall them.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_partition_transfer_survives_the_receiver_restarting() {
    let seed = seed(16);
    let mut config = base_config(3);
    config.transfer.max_rate = 200_000.0;
    config.transfer.chunk_bytes = 4_096;
    let mut sim = Sim::start(3, seed, config).await;
    let keys: Vec<String> = (0..300).map(|i| format!("moved-{i}")).collect();
    for key in &keys {
        sim.put(0, key, &format!("value-{key}"), Level::All, false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: put {key}: {e}"));
    }
    let new = sim.add_node().await;
    sim.wait_for("the join's transfers to start", |sim| {
        sim.nodes[new]
            .parts
            .cluster
            .layout()
            .is_some_and(|l| l.in_transition() && l.contains(sim.nodes[new].id))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.restart(new).await;
    sim.wait_for("the transfers to finish", |sim| {
        sim.nodes.iter().all(|n| {
            n.parts
                .cluster
                .layout()
                .is_some_and(|l| !l.in_transition() && l.contains(sim.nodes[new].id))
        })
    })
    .await;
    let owned: Vec<&String> = keys
        .iter()
        .filter(|k| sim.replicas_of(k).contains(&sim.nodes[new].id))
        .collect();
    assert!(!owned.is_empty(), "seed {seed}: the new node owns nothing");
    for key in owned {
        assert_eq!(
            sim.local_values(new, key).await,
            vec![format!("value-{key}")],
            "seed {seed}: {key} on the new node"
        );
    }
    for key in &keys {
        let via = sim.index_of(sim.replicas_of(key)[0]);
        assert_eq!(
            sim.get(via, key, Level::All).await,
            vec![format!("value-{key}")],
            "seed {seed}: {key}"
        );
    }
    sim.stop().await;
}

/// A change ends only once every member holds it (`rebalance::safety`,
/// rule 4): a node still on the layout before the change writes to the old
/// replica sets only, a node on the retired layout reads the new sets
/// only, and R + W > N promises nothing across the two. Here one member
/// cannot fetch layouts while its gossip and replication work, so it stays
/// behind: the join must neither stream nor retire until it catches up.
/// While the change is held, a read needs its quorum in the new set too.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_change_ends_only_once_every_member_holds_it() {
    let seed = seed(23);
    let mut sim = Sim::start(4, seed, base_config(4)).await;
    for i in 0..64 {
        let key = format!("before-{i}");
        let via = sim.index_of(sim.replicas_of(&key)[0]);
        sim.put(via, &key, "v", Level::All, false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: put {key}: {e}"));
    }
    let before = sim.nodes[0].parts.cluster.layout().expect("a layout");
    // Node 1 is the claimant (lowest id); node 4 lags.
    let lagging = 3;
    sim.net.mute(sim.nodes[lagging].id, "get_layout");
    let joiner = sim.add_node().await;
    let joiner_id = sim.nodes[joiner].id;
    sim.wait_for("the join to be committed", |sim| {
        sim.nodes[0]
            .parts
            .cluster
            .layout()
            .is_some_and(|l| l.in_transition() && l.contains(joiner_id))
    })
    .await;
    let change = sim.nodes[0].parts.cluster.layout().expect("a layout");
    let held_until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < held_until {
        let lagging_version = sim.nodes[lagging]
            .parts
            .cluster
            .layout()
            .map(|l| l.version());
        assert_eq!(
            lagging_version,
            Some(before.version()),
            "seed {seed}: the lagging node fetched a layout"
        );
        let now = sim.nodes[0].parts.cluster.layout().expect("a layout");
        assert_eq!(
            now.version(),
            change.version(),
            "seed {seed}: the change ended while node {} still held layout v{}",
            sim.nodes[lagging].id,
            before.version()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let streamed = sim.nodes[joiner].worker_counter("rebalance", "bytes_received");
    assert_eq!(
        streamed, 0,
        "seed {seed}: the joiner streamed before every member held the change"
    );
    let plan = sim.nodes[0].parts.rebalance.plan().expect("a plan");
    let blocked = plan.blocked.expect("the change blocks a commit");
    assert!(
        blocked.contains(&sim.nodes[lagging].id.to_string()),
        "seed {seed}: the refusal does not name the lagging node: {blocked}"
    );

    // A key that moves to the joiner, coordinated by an old replica that
    // holds the change: R = ALL waits for every replica of both sets.
    let partition_of = |key: &str| sim.nodes[0].parts.replica.partition_of(key.as_bytes());
    let key = (0..)
        .map(|i| format!("moving-{i}"))
        .find(|k| {
            let p = partition_of(k);
            change.is_moving(p) && !change.coordinators(p).contains(&sim.nodes[lagging].id)
        })
        .expect("a key moving to the joiner, away from the lagging node");
    let via = sim.index_of(change.coordinators(partition_of(&key))[0]);
    sim.put(via, &key, "during-the-change", Level::Quorum, false)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: put {key}: {e}"));
    let reply = sim.nodes[via]
        .parts
        .coordinator
        .get(ringkv_node::coordinator::GetCommand {
            key: bytes::Bytes::from(key.clone()),
            consistency: ringkv_node::coordinator::RequestConsistency {
                level: Some(Level::All),
                sloppy: Some(false),
                timeout: None,
            },
            resolve: ringkv_node::coordinator::Resolve::AllSiblings,
        })
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: get {key}: {e}"));
    assert!(
        reply.meta.replicas.contains(&joiner_id.to_string()),
        "seed {seed}: a read during the change did not ask the new replica: {:?}",
        reply.meta.replicas
    );

    sim.net.heal();
    sim.wait_for("the change to end on every node", |sim| {
        sim.nodes.iter().all(|n| {
            n.parts
                .cluster
                .layout()
                .is_some_and(|l| !l.in_transition() && l.contains(joiner_id))
        })
    })
    .await;
    assert_eq!(
        sim.get(via, &key, Level::All).await,
        vec!["during-the-change".to_string()],
        "seed {seed}: {key} after the change"
    );
    sim.stop().await;
}

/// The coordinator sends a write to the other replicas while its own write
/// is still going to storage (under `storage.sync = always` its fsync and
/// theirs then overlap), and counts itself toward W only once that write
/// is stored: a W = ALL put is not acknowledged while it waits.
///
/// Real time, not the paused clock: the held write blocks the node's
/// storage writer, a thread tokio does not know, and a paused clock would
/// run on while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_replicates_while_its_own_write_is_stored() {
    let seed = seed(24);
    let gate = Arc::new(GatedEngine::default());
    let held = gate.clone();
    let sim = Sim::start_with(3, seed, base_config(3), move |i| {
        if i == 0 {
            held.clone()
        } else {
            Arc::new(MemoryEngine::new())
        }
    })
    .await;
    let key = "overlapped";
    let held = gate.hold();
    let reply = {
        let put = sim.put(0, key, "v1", Level::All, false);
        tokio::pin!(put);
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                reply = &mut put => panic!(
                    "seed {seed}: the put returned while the coordinator's own write was held: {reply:?}"
                ),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if sim.local_values(1, key).await == ["v1"] && sim.local_values(2, key).await == ["v1"]
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "seed {seed}: the other replicas did not get the write while the coordinator's own was held"
            );
        }
        assert_eq!(
            gate.waiting(),
            1,
            "seed {seed}: the coordinator's write is not the one held"
        );
        assert!(sim.local_values(0, key).await.is_empty(), "seed {seed}");
        drop(held);
        put.await
            .unwrap_or_else(|e| panic!("seed {seed}: put: {e}"))
    };
    assert_eq!(
        reply.meta.replicas.len(),
        3,
        "seed {seed}: {:?}",
        reply.meta
    );
    assert_eq!(
        reply.meta.replicas[0],
        sim.nodes[0].id.to_string(),
        "seed {seed}"
    );
    assert_eq!(sim.local_values(0, key).await, ["v1"], "seed {seed}");
    sim.stop().await;
}
