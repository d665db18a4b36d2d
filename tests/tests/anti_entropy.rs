//! Anti-entropy on real processes, with hints turned off
//! (`handoff.max_bytes_per_target = 1` refuses every hint) so that nothing
//! but the Merkle exchange can bring a replica up to date:
//!
//! - a triggered repair pulls what this node missed *and* pushes what a
//!   peer missed, after which the replicas' Merkle roots are equal;
//! - the periodic worker does the same without being asked;
//! - listings too big for one reply are fetched over several rounds, and a
//!   single leaf too big for one reply is sampled until it converges;
//! - tombstones stay while any replica is unreachable, and go once every
//!   replica holds them.

use std::time::{Duration, Instant};

use ringkv_client::{Level, RequestOptions};
use ringkv_tests::{missing_on, partition_of, put_opts, value_of, TestCluster, CONVERGE_TIMEOUT};

/// Environment that leaves anti-entropy as the only way to catch up.
const NO_HINTS: (&str, &str) = ("RINGKV__HANDOFF__MAX_BYTES_PER_TARGET", "1");

/// The partition the tests write into (any would do).
const PARTITION: u32 = 5;

/// Seed of the hash that picks a key's Merkle leaf, as the nodes use it
/// (`repair::merkle::KEY_HASH_SEED`): lets a test pile keys into one leaf.
const LEAF_HASH_SEED: u64 = 0x7269_6e67_6b76_ae01;

/// A key's Merkle leaf, computed as the nodes do (256 leaves).
fn leaf_of(key: &[u8]) -> u32 {
    (twox_hash::XxHash3_64::oneshot_with_seed(LEAF_HASH_SEED, key) >> 56) as u32
}

/// `count` keys of [`PARTITION`] named `prefix-i`.
async fn keys_in(cluster: &TestCluster, prefix: &str, count: usize) -> Vec<String> {
    let layout = cluster.client().layout().await.unwrap();
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| partition_of(k.as_bytes(), layout.partitions, layout.hash_seed) == PARTITION)
        .take(count)
        .collect()
}

/// Node indices of [`PARTITION`]'s replicas, in preference order.
async fn replicas(cluster: &TestCluster) -> Vec<usize> {
    let layout = cluster.client().layout().await.unwrap();
    layout.assignments[PARTITION as usize]
        .replicas
        .iter()
        .map(|id| cluster.index_of(id).unwrap())
        .collect()
}

/// Cuts node `i` off from every other node.
async fn isolate(cluster: &mut TestCluster, i: usize) {
    for other in (0..cluster.nodes.len()).filter(|o| *o != i) {
        cluster.cut(i, other).await.unwrap();
    }
}

/// Heals every cut and waits until every node sees every other alive.
async fn heal(cluster: &mut TestCluster) {
    cluster.heal().await.unwrap();
    for a in 0..cluster.nodes.len() {
        for b in (0..cluster.nodes.len()).filter(|b| *b != a) {
            cluster.wait_liveness(a, b, "alive").await.unwrap();
        }
    }
}

/// Writes `value-of-KEY` to each key through node `via`, with W=2.
async fn write_via(cluster: &TestCluster, via: usize, keys: &[String]) {
    let client = cluster.client_via(via);
    for key in keys {
        client
            .put(key.clone(), value_of(key), put_opts(Level::Count(2), false))
            .await
            .unwrap();
    }
}

/// Node `i`'s Merkle root of [`PARTITION`].
async fn root_on(cluster: &TestCluster, i: usize) -> u64 {
    let roots = cluster.nodes[i].client().merkle_roots(0).await.unwrap();
    roots
        .iter()
        .find(|r| r.partition == PARTITION)
        .map(|r| r.root)
        .expect("a replica reports a root for its partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_repair_pulls_and_pushes_until_roots_agree() {
    // No periodic pass: only the triggered one may repair.
    let env = [("RINGKV__REPAIR__INTERVAL_MS", "3600000"), NO_HINTS];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let r = replicas(&cluster).await;
    let (a, b, c) = (r[0], r[1], r[2]);

    // `a` misses the first keys, `b` the second ones; `c` has all.
    let missed_by_a = keys_in(&cluster, "pull", 50).await;
    let missed_by_b = keys_in(&cluster, "push", 50).await;
    isolate(&mut cluster, a).await;
    write_via(&cluster, b, &missed_by_a).await;
    heal(&mut cluster).await;
    isolate(&mut cluster, b).await;
    write_via(&cluster, a, &missed_by_b).await;
    heal(&mut cluster).await;
    assert_eq!(missing_on(&cluster, a, &missed_by_a).await, missed_by_a);
    assert_eq!(missing_on(&cluster, b, &missed_by_b).await, missed_by_b);
    assert_ne!(root_on(&cluster, a).await, root_on(&cluster, b).await);

    let report = cluster.nodes[a]
        .client()
        .repair(0, Some(PARTITION))
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.partitions, 1, "{report:?}");
    assert_eq!(report.partitions_differing, 1, "{report:?}");
    assert_eq!(report.keys_repaired, 100, "{report:?}");

    let all: Vec<String> = missed_by_a.iter().chain(&missed_by_b).cloned().collect();
    for i in [a, b, c] {
        assert!(missing_on(&cluster, i, &all).await.is_empty(), "node {i}");
    }
    let root = root_on(&cluster, a).await;
    assert_eq!(root_on(&cluster, b).await, root);
    assert_eq!(root_on(&cluster, c).await, root);

    // A second pass finds nothing to do.
    let again = cluster.nodes[b]
        .client()
        .repair(0, Some(PARTITION))
        .await
        .unwrap();
    assert_eq!(
        (again.partitions_differing, again.keys_repaired),
        (0, 0),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_converges_replicas_by_itself() {
    let env = [("RINGKV__REPAIR__INTERVAL_MS", "300"), NO_HINTS];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let r = replicas(&cluster).await;
    let (a, b) = (r[0], r[1]);
    let keys = keys_in(&cluster, "worker", 40).await;
    isolate(&mut cluster, a).await;
    write_via(&cluster, b, &keys).await;
    heal(&mut cluster).await;

    // Whichever replica's worker gets there first repairs node `a` and
    // counts the keys; then every replica reports the same root.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut repaired = 0;
        for i in &r {
            let workers = cluster.nodes[*i].client().workers(0).await.unwrap();
            let worker = workers
                .iter()
                .find(|w| w.name == "anti-entropy")
                .expect("an anti-entropy worker");
            repaired += worker.counters.get("keys_repaired").copied().unwrap_or(0);
        }
        let mut roots = Vec::new();
        for i in &r {
            roots.push(root_on(&cluster, *i).await);
        }
        let missing = missing_on(&cluster, a, &keys).await;
        if missing.is_empty()
            && repaired >= keys.len() as u64
            && roots.iter().all(|x| *x == roots[0])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged: node {a} misses {} keys, {repaired} repaired, roots {roots:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_listings_take_several_rounds_and_big_leaves_are_sampled() {
    // Small messages: a listing reply holds about 45 KB, i.e. about 44
    // keys of 1000 bytes. The message limit follows the key state limit
    // (here the smallest 4 KiB values allow).
    let env = [
        ("RINGKV__REPAIR__INTERVAL_MS", "3600000"),
        ("RINGKV__LIMITS__MAX_VALUE_BYTES", "4096"),
        ("RINGKV__LIMITS__MAX_KEY_STATE_BYTES", "20480"),
        NO_HINTS,
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let layout = cluster.client().layout().await.unwrap();
    let r = replicas(&cluster).await;
    let (a, b) = (r[0], r[1]);
    let long_key = |prefix: &str, i: usize| format!("{prefix}-{i}-{}", "x".repeat(1000));
    let in_partition =
        |k: &String| partition_of(k.as_bytes(), layout.partitions, layout.hash_seed) == PARTITION;
    // 200 keys spread over the leaves: several rounds of whole leaves.
    let spread: Vec<String> = (0..)
        .map(|i| long_key("spread", i))
        .filter(in_partition)
        .take(200)
        .collect();
    // 60 keys in one leaf: that leaf alone exceeds a reply.
    let crowded: Vec<String> = (0..)
        .map(|i| long_key("crowded", i))
        .filter(|k| in_partition(k) && leaf_of(k.as_bytes()) == 200)
        .take(60)
        .collect();
    let all: Vec<String> = spread.iter().chain(&crowded).cloned().collect();
    isolate(&mut cluster, a).await;
    write_via(&cluster, b, &all).await;
    heal(&mut cluster).await;

    let first = cluster.nodes[a]
        .client()
        .repair(0, Some(PARTITION))
        .await
        .unwrap();
    assert!(first.errors.is_empty(), "{first:?}");
    assert!(missing_on(&cluster, a, &spread).await.is_empty());
    let mut passes = 1;
    loop {
        let missing = missing_on(&cluster, a, &crowded).await;
        if missing.is_empty() {
            break;
        }
        assert!(
            passes < 30,
            "{} crowded keys still missing after {passes} passes",
            missing.len()
        );
        let report = cluster.nodes[a]
            .client()
            .repair(0, Some(PARTITION))
            .await
            .unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        passes += 1;
    }
    assert!(
        passes > 1,
        "a leaf bigger than a reply was listed in one go"
    );
    let root = root_on(&cluster, a).await;
    assert_eq!(root_on(&cluster, b).await, root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_stay_until_every_replica_holds_them() {
    const GRACE_MS: u64 = 1_000;
    let grace = GRACE_MS.to_string();
    let env = [
        ("RINGKV__REPAIR__INTERVAL_MS", "3600000"),
        ("RINGKV__HANDOFF__MAX_AGE_MS", "500"),
        ("RINGKV__REPAIR__TOMBSTONE_GRACE_MS", grace.as_str()),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let r = replicas(&cluster).await;
    let keys = keys_in(&cluster, "gone", 30).await;
    let client = cluster.client();
    for key in &keys {
        client
            .put(key.clone(), "doomed", put_opts(Level::All, false))
            .await
            .unwrap();
        client
            .delete(key.clone(), None, RequestOptions::level(Level::All))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 200)).await;

    // One replica unreachable: its copy could still be older, so the
    // tombstones must stay on the others.
    let out = r[2];
    isolate(&mut cluster, out).await;
    for i in r.iter().filter(|i| **i != out) {
        cluster.wait_liveness(*i, out, "dead").await.unwrap();
    }
    for i in r.iter().filter(|i| **i != out) {
        let report = cluster.nodes[*i]
            .client()
            .repair(0, Some(PARTITION))
            .await
            .unwrap();
        assert_eq!(report.tombstones_purged, 0, "{report:?}");
        for key in &keys {
            let copy = cluster.nodes[*i]
                .client()
                .local_get(0, key.clone())
                .await
                .unwrap();
            assert!(copy.found, "node {i} purged {key} with a replica down");
        }
    }

    // All replicas back: the first replica drives the purge everywhere.
    heal(&mut cluster).await;
    let report = cluster.nodes[r[0]]
        .client()
        .repair(0, Some(PARTITION))
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.tombstones_purged, keys.len() as u64, "{report:?}");
    for i in &r {
        for key in &keys {
            let copy = cluster.nodes[*i]
                .client()
                .local_get(0, key.clone())
                .await
                .unwrap();
            assert!(!copy.found, "node {i} still stores {key}");
        }
    }
    for key in &keys {
        let got = client
            .get(key.clone(), RequestOptions::level(Level::All), false)
            .await
            .unwrap();
        assert!(!got.found(), "{key} came back: {:?}", got.siblings);
    }
}
