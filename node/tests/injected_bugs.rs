//! The bugs `debug.inject_bug` injects, each shown to happen in a
//! simulated cluster (see `simulation.rs`) when switched on, and the same
//! scenario shown sound when it is off. The verification harness relies
//! on them to prove that each of its checkers catches the bug it exists
//! for; these tests make sure the bugs are really there to be caught.
//! `RINGKV_SIM_SEED=<n>` replays one seed.

// The kit is shared with `simulation.rs`; this file uses part of it.
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use bytes::Bytes;
use ringkv_core::version::NodeId;
use ringkv_node::config::{Config, InjectBug};
use ringkv_node::coordinator::{
    DeleteCommand, GetCommand, GetReply, Level, RequestConsistency, Resolve,
};
use sim::{base_config, Sim, PATIENCE};

/// The scenario's seed: fixed, unless `RINGKV_SIM_SEED` names another.
fn seed(fixed: u64) -> u64 {
    std::env::var("RINGKV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fixed)
}

/// The simulation's configuration for `n` nodes, every one running `bug`.
fn config_with(n: usize, bug: InjectBug) -> Config {
    let mut config = base_config(n);
    config.debug.fault_injection = true;
    config.debug.inject_bug = bug;
    config
}

/// Everything but `i`.
fn others(sim: &Sim, i: usize) -> Vec<NodeId> {
    sim.ids()
        .into_iter()
        .filter(|id| *id != sim.nodes[i].id)
        .collect()
}

fn consistency(level: Level, sloppy: bool) -> RequestConsistency {
    RequestConsistency {
        level: Some(level),
        sloppy: Some(sloppy),
        timeout: None,
    }
}

/// How many nodes hold anything (a tombstone included) for `key`.
async fn holders(sim: &Sim, key: &str) -> usize {
    let mut held = 0;
    for i in 0..sim.nodes.len() {
        held += usize::from(sim.local(i, key).await.is_some());
    }
    held
}

/// Waits (in simulated time) until whether node `i` holds anything for
/// `key` is `held`.
async fn wait_held(sim: &Sim, i: usize, key: &str, held: bool) {
    let started = tokio::time::Instant::now();
    while sim.local(i, key).await.is_some() != held {
        assert!(
            started.elapsed() < PATIENCE,
            "seed {}: node {i} still {} {key}",
            sim.seed,
            if held { "lacks" } else { "holds" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete(sim: &Sim, via: usize, key: &str, level: Level, sloppy: bool) {
    sim.nodes[via]
        .parts
        .coordinator
        .delete(DeleteCommand {
            key: Bytes::copy_from_slice(key.as_bytes()),
            context: None,
            consistency: consistency(level, sloppy),
        })
        .await
        .unwrap_or_else(|e| panic!("seed {}: delete {key}: {e}", sim.seed));
}

/// `lose_every_tenth_write`: of the puts and deletes one node
/// coordinates, every tenth is acknowledged by all three replicas, says
/// its reply, and is on none of them.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lose_every_tenth_write_acknowledges_writes_no_node_holds() {
    let seed = seed(41);
    for bug in [InjectBug::None, InjectBug::LoseEveryTenthWrite] {
        let sim = Sim::start(3, seed, config_with(3, bug)).await;
        let mut lost = Vec::new();
        for i in 0..20 {
            let key = format!("write-{i}");
            let reply = sim
                .put(0, &key, "v", Level::All, false)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: put {key}: {e}"));
            assert_eq!(reply.meta.replicas.len(), 3, "seed {seed}: {bug:?}");
            match holders(&sim, &key).await {
                0 => lost.push(i),
                held => assert_eq!(held, 3, "seed {seed}: {bug:?}: {key}"),
            }
        }
        // Deletes count among the writes: the tenth of these (the 30th
        // write) is lost, and its key keeps its value.
        let deleted: Vec<usize> = (0..9).chain([10]).collect();
        for i in &deleted {
            delete(&sim, 0, &format!("write-{i}"), Level::All, false).await;
        }
        let mut live = Vec::new();
        for i in &deleted {
            if !sim
                .get(0, &format!("write-{i}"), Level::All)
                .await
                .is_empty()
            {
                live.push(*i);
            }
        }
        let (want_lost, want_live) = match bug {
            InjectBug::None => (vec![], vec![]),
            _ => (vec![9, 19], vec![10]),
        };
        assert_eq!(lost, want_lost, "seed {seed}: {bug:?}: puts lost");
        assert_eq!(live, want_live, "seed {seed}: {bug:?}: deletes lost");
        sim.stop().await;
    }
}

/// `merge_collapses_siblings`: two concurrent writes through two
/// coordinators (both after the same version), both acknowledged by every
/// replica, end as one value everywhere instead of two siblings.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn merge_collapses_siblings_loses_a_concurrent_write() {
    let seed = seed(42);
    for (bug, survivors) in [(InjectBug::None, 2), (InjectBug::MergeCollapsesSiblings, 1)] {
        let sim = Sim::start(3, seed, config_with(3, bug)).await;
        let key = "contended";
        // Both made after the same version and neither after the other:
        // concurrent by causality, whatever order the replicas see them in.
        let seen = sim
            .put(2, key, "base", Level::All, false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: {e}"))
            .context;
        let (a, b) = tokio::join!(
            sim.put_after(0, key, "from-0", Some(seen.clone()), Level::All, true),
            sim.put_after(1, key, "from-1", Some(seen), Level::All, true),
        );
        a.unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: {e}"));
        b.unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: {e}"));
        // Read repair and anti-entropy have had time to run.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..3 {
            let values = sim.get(i, key, Level::All).await;
            assert_eq!(values.len(), survivors, "seed {seed}: {bug:?}: {values:?}");
        }
        sim.stop().await;
    }
}

/// `read_from_one_replica`: a replica that missed a quorum write
/// coordinates a quorum read and answers from itself alone (its peers'
/// answers are slower), while the reply meta says two were required.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn read_from_one_replica_misses_a_quorum_write() {
    let seed = seed(43);
    for bug in [InjectBug::None, InjectBug::ReadFromOneReplica] {
        let mut config = config_with(3, bug);
        config.repair.anti_entropy = false;
        config.handoff.interval_ms = 3_600_000;
        let sim = Sim::start(3, seed, config).await;
        let key = "register";
        sim.net.partition(&[sim.nodes[2].id], &others(&sim, 2));
        sim.put(0, key, "v1", Level::Quorum, false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: put: {e}"));
        sim.net.heal();
        sim.wait_converged().await;
        assert!(sim.local(2, key).await.is_none(), "seed {seed}: {bug:?}");

        sim.net
            .set_delay(Duration::from_millis(20), Duration::from_millis(40));
        let reply: GetReply = sim.nodes[2]
            .parts
            .coordinator
            .get(GetCommand {
                key: Bytes::from_static(b"register"),
                consistency: consistency(Level::Quorum, true),
                resolve: Resolve::AllSiblings,
            })
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: get: {e}"));
        assert_eq!(reply.meta.required, 2, "seed {seed}: {bug:?}");
        let (answered, found) = match bug {
            InjectBug::None => (2, 1),
            _ => (1, 0),
        };
        assert_eq!(reply.meta.replicas.len(), answered, "seed {seed}: {bug:?}");
        assert_eq!(reply.siblings.len(), found, "seed {seed}: {bug:?}");
        sim.stop().await;
    }
}

/// `purge_ignores_one_replica`: a delete that the partition's last replica
/// missed (it was cut off) is purged on the other two; once the cut heals,
/// anti-entropy brings the deleted value back from that replica. Without
/// the bug the purge waits for the replica, which gets the tombstone, and
/// the key stays deleted.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn purge_ignores_one_replica_brings_a_deleted_key_back() {
    let seed = seed(44);
    for bug in [InjectBug::None, InjectBug::PurgeIgnoresOneReplica] {
        let mut config = config_with(3, bug);
        config.repair.tombstone_grace_ms = 0;
        config.handoff.interval_ms = 3_600_000;
        let sim = Sim::start(3, seed, config).await;
        let key = "deleted";
        let replicas: Vec<usize> = sim
            .replicas_of(key)
            .iter()
            .map(|id| sim.index_of(*id))
            .collect();
        let (driver, skipped) = (replicas[0], replicas[2]);
        sim.put(driver, key, "old", Level::All, false)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {bug:?}: put: {e}"));
        sim.net
            .partition(&[sim.nodes[skipped].id], &others(&sim, skipped));
        delete(&sim, driver, key, Level::Quorum, false).await;

        match bug {
            InjectBug::None => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                assert_eq!(holders(&sim, key).await, 3, "seed {seed}: purged early");
                sim.net.heal();
                for i in 0..3 {
                    wait_held(&sim, i, key, false).await;
                }
                assert!(sim.get(driver, key, Level::All).await.is_empty());
            }
            _ => {
                wait_held(&sim, driver, key, false).await;
                wait_held(&sim, replicas[1], key, false).await;
                sim.net.heal();
                wait_held(&sim, driver, key, true).await;
                assert_eq!(
                    sim.get(driver, key, Level::All).await,
                    vec!["old"],
                    "seed {seed}: the deleted value is back"
                );
            }
        }
        sim.stop().await;
    }
}
