//! Failure handling on real processes: sloppy quorums with fallbacks,
//! hinted handoff after a node comes back.

use std::collections::BTreeSet;
use std::sync::Arc;

use ringkv_client::{Client, Error, Level};
use ringkv_tests::{keys_in, missing_on, put_opts, value_of, TestCluster};
use tokio::sync::Semaphore;

/// Writes `keys` concurrently; panics on any failure.
async fn write_all(client: Arc<Client>, keys: &[String], level: Level) {
    let permits = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for key in keys {
        let client = client.clone();
        let key = key.clone();
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            client
                .put(key.clone(), value_of(&key), put_opts(level, false))
                .await
                .map_err(|e| format!("{key}: {e}"))
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_receives_its_hints() {
    let mut cluster = TestCluster::start(3, &[]).await.unwrap();
    cluster.nodes[2].kill();
    let keys: Vec<String> = (0..2_000).map(|i| format!("handoff-{i}")).collect();
    let client = Arc::new(Client::new(&cluster.endpoints()[..2]).unwrap());
    write_all(client, &keys, Level::Count(2)).await;
    // Every node replicates every key, so no fallback exists: the
    // coordinators keep the hints for node 2 themselves.
    assert!(cluster.hints_pending().await.unwrap() > 0);

    cluster.nodes[2].restart().await.unwrap();
    let took = cluster.wait_no_hints().await.unwrap();
    let missing = missing_on(&cluster, 2, &keys).await;
    assert!(
        missing.is_empty(),
        "{} keys missing on the restarted node after hints drained in {took:?}, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_writes_use_fallbacks_and_strict_writes_refuse_them() {
    let mut cluster = TestCluster::start(5, &[]).await.unwrap();
    let layout = cluster.client().layout().await.unwrap();
    let partition = 7;
    let replicas = &layout.assignments[partition as usize].replicas;
    let idx: Vec<usize> = replicas
        .iter()
        .map(|id| cluster.index_of(id).unwrap())
        .collect();
    let (a, b, c) = (idx[0], idx[1], idx[2]);
    for other in 0..5 {
        if other != a && other != b {
            cluster.cut(a, other).await.unwrap();
            cluster.cut(b, other).await.unwrap();
        }
    }
    cluster.cut(a, b).await.unwrap();

    let keys = keys_in(partition, layout.partitions, layout.hash_seed, "sloppy", 50);
    let via_c = cluster.client_via(c);
    let cut_off: BTreeSet<String> = [cluster.ids[a].clone(), cluster.ids[b].clone()].into();
    for key in &keys {
        let put = via_c
            .put(key.clone(), value_of(key), put_opts(Level::Count(2), false))
            .await
            .unwrap_or_else(|e| panic!("sloppy put of {key}: {e}"));
        assert!(!put.meta.fallbacks.is_empty(), "{:?}", put.meta);
        for (fallback, stands_in_for) in &put.meta.fallbacks {
            assert!(cut_off.contains(stands_in_for), "{:?}", put.meta);
            assert!(!replicas.contains(fallback), "{:?}", put.meta);
        }
    }
    // A strict write counts only the key's own replicas: with two of them
    // cut off it fails (it may still have been applied on the coordinator).
    let strict_key = keys_in(partition, layout.partitions, layout.hash_seed, "strict", 1).remove(0);
    let err = via_c
        .put(strict_key, "strict", put_opts(Level::Count(2), true))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "strict put gave {err:?}"
    );

    cluster.heal().await.unwrap();
    cluster.wait_no_hints().await.unwrap();
    for i in [a, b, c] {
        let missing = missing_on(&cluster, i, &keys).await;
        assert!(missing.is_empty(), "node {i} misses {missing:?}");
    }
    // Nothing lands outside the key's own replicas.
    for i in (0..5).filter(|i| !idx.contains(i)) {
        let client = cluster.nodes[i].client();
        for key in &keys {
            assert!(!client.local_get(0, key.clone()).await.unwrap().found);
        }
    }
}

/// A node told to stop hands its hints on before it exits: in a rolling
/// restart, the node restarted just before must not stay behind until
/// this one is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_hands_its_hints_on() {
    // Delivery rounds an hour apart (the first runs at start, before any
    // hint exists): only the hand-over at stop can deliver these hints.
    let mut cluster =
        TestCluster::start_with_env(3, &[], &[("RINGKV__HANDOFF__INTERVAL_MS", "3600000")])
            .await
            .unwrap();
    cluster.nodes[2].kill();
    let keys: Vec<String> = (0..300).map(|i| format!("hand-over-{i}")).collect();
    let client = Arc::new(Client::new(&cluster.endpoints()[..2]).unwrap());
    write_all(client, &keys, Level::Count(2)).await;
    let held = cluster.hints_pending().await.unwrap();
    assert!(held > 0, "no hints for the killed node");

    cluster.nodes[2].restart().await.unwrap();
    for observer in 0..2 {
        cluster.wait_liveness(observer, 2, "alive").await.unwrap();
    }
    assert_eq!(
        cluster.hints_pending().await.unwrap(),
        held,
        "hints were delivered before the stop: the test proves nothing"
    );
    for i in 0..2 {
        let status = cluster.nodes[i].terminate().unwrap();
        assert!(status.success(), "node {i} exited with {status}");
    }
    let missing = missing_on(&cluster, 2, &keys).await;
    assert!(
        missing.is_empty(),
        "{} keys missing on node 2 after the others stopped, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    for i in 0..2 {
        assert!(
            cluster.nodes[i].log().contains("hints handed on"),
            "node {i} logged no hand-over:\n{}",
            cluster.nodes[i].log()
        );
    }
}
