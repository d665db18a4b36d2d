//! Anti-entropy and tombstone purge on real processes: a replica whose
//! hints were lost catches up through anti-entropy alone, and deleted keys
//! never come back, before or after their tombstones are purged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_client::{Client, Level, RequestOptions};
use ringkv_tests::{keys_in, missing_on, put_opts, value_of, TestCluster};
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_alone_repairs_a_replica_whose_hints_died() {
    // No periodic pass: the test triggers anti-entropy itself.
    let env = [("RINGKV__REPAIR__INTERVAL_MS", "3600000")];
    let mut cluster = TestCluster::start_with_env(5, &[], &env).await.unwrap();
    let layout = cluster.client().layout().await.unwrap();
    let partition = 11;
    let replicas: Vec<usize> = layout.assignments[partition as usize]
        .replicas
        .iter()
        .map(|id| cluster.index_of(id).unwrap())
        .collect();
    let (a, c) = (replicas[0], replicas[2]);
    for other in (0..5).filter(|o| *o != a) {
        cluster.cut(a, other).await.unwrap();
    }
    let keys = keys_in(partition, layout.partitions, layout.hash_seed, "ae", 100);
    let via_c = cluster.client_via(c);
    for key in &keys {
        let put = via_c
            .put(key.clone(), value_of(key), put_opts(Level::Count(2), false))
            .await
            .unwrap();
        assert!(
            !put.meta.replicas.contains(&cluster.ids[a]),
            "{:?}",
            put.meta
        );
    }
    // The hints for `a` sit on a fallback; kill it before it can deliver.
    let mut holders = Vec::new();
    for i in 0..5 {
        if cluster.nodes[i]
            .client()
            .hints(0)
            .await
            .unwrap()
            .iter()
            .any(|q| q.keys > 0)
        {
            holders.push(i);
        }
    }
    assert!(
        !holders.is_empty(),
        "no node holds hints for the cut-off replica"
    );
    for h in &holders {
        assert!(
            !replicas.contains(h) || *h == c,
            "hint holder {h} is a replica"
        );
        cluster.nodes[*h].kill();
    }
    cluster.heal().await.unwrap();
    for observer in replicas.iter().filter(|r| **r != a) {
        cluster.wait_liveness(*observer, a, "alive").await.unwrap();
    }
    assert_eq!(missing_on(&cluster, a, &keys).await.len(), keys.len());

    let report = cluster.nodes[a]
        .client()
        .repair(0, Some(partition))
        .await
        .unwrap();
    assert!(report.keys_repaired >= keys.len() as u64, "{report:?}");
    let missing = missing_on(&cluster, a, &keys).await;
    assert!(
        missing.is_empty(),
        "still missing after anti-entropy: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_stay_deleted_through_handoff_and_purge() {
    const KEYS: usize = 1_000;
    const GRACE_MS: u64 = 6_000;
    let grace = GRACE_MS.to_string();
    let env = [
        ("RINGKV__REPAIR__INTERVAL_MS", "3600000"),
        ("RINGKV__HANDOFF__MAX_AGE_MS", "5000"),
        ("RINGKV__REPAIR__TOMBSTONE_GRACE_MS", grace.as_str()),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("gone-{i}")).collect();
    let client = Arc::new(cluster.client());
    for key in &keys {
        client
            .put(key.clone(), "alive", put_opts(Level::All, false))
            .await
            .unwrap();
    }

    cluster.nodes[2].kill();
    let survivors = Arc::new(Client::new(&cluster.endpoints()[..2]).unwrap());
    let permits = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for key in keys.clone() {
        let c = survivors.clone();
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            c.delete(key, None, RequestOptions::level(Level::Count(2)))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let deleted_at = Instant::now();
    let not_found = |c: Arc<Client>, keys: Vec<String>, level: Level| async move {
        for key in keys {
            let got = c
                .get(key.clone(), RequestOptions::level(level), false)
                .await
                .unwrap();
            assert!(
                !got.found(),
                "{key} reads as present again: {:?}",
                got.siblings
            );
        }
    };
    not_found(survivors.clone(), keys.clone(), Level::Quorum).await;

    cluster.nodes[2].restart().await.unwrap();
    cluster.wait_liveness(0, 2, "alive").await.unwrap();
    not_found(client.clone(), keys.clone(), Level::All).await;
    cluster.wait_no_hints().await.unwrap();

    // Past the grace period, anti-entropy purges tombstones every replica holds.
    let wait = Duration::from_millis(GRACE_MS + 500).saturating_sub(deleted_at.elapsed());
    tokio::time::sleep(wait).await;
    let mut purged = 0;
    for i in 0..3 {
        purged += cluster.nodes[i]
            .client()
            .repair(0, None)
            .await
            .unwrap()
            .tombstones_purged;
    }
    assert!(purged > 0, "no tombstone was purged");
    for i in 0..3 {
        let node = cluster.nodes[i].client();
        for key in &keys {
            let copy = node.local_get(0, key.clone()).await.unwrap();
            assert!(
                !copy.found,
                "node {i} still stores {key}: {:?}",
                copy.versions
            );
        }
    }
    not_found(client.clone(), keys.clone(), Level::All).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_replaced_and_refilled_without_old_versions() {
    let env = [("RINGKV__REPAIR__INTERVAL_MS", "3600000")];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let client = cluster.client();
    let keys: Vec<String> = (0..300).map(|i| format!("wiped-{i}")).collect();
    for key in &keys {
        client
            .put(key.clone(), "old", put_opts(Level::All, false))
            .await
            .unwrap();
    }
    // Half the keys get a newer value: the old one must never resurface.
    let latest = |i: usize| if i.is_multiple_of(2) { "new" } else { "old" };
    for key in keys.iter().step_by(2) {
        client
            .put(key.clone(), "new", put_opts(Level::All, false))
            .await
            .unwrap();
    }

    let old_id = cluster.ids[2].clone();
    cluster.nodes[2].kill();
    std::fs::remove_dir_all(&cluster.nodes[2].data_dir).unwrap();
    cluster.nodes[2].restart().await.unwrap();
    let new_id = cluster.nodes[2]
        .client()
        .node_status(0)
        .await
        .unwrap()
        .node_id;
    assert_ne!(new_id, old_id, "a wiped node must come back with a new id");
    cluster.ids[2] = new_id.clone();

    // The cluster replaces the dead id by the new node at its address,
    // through a transfer of the old id's partitions that ends settled.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for node in &cluster.nodes {
            let layout = node.client().layout().await.unwrap();
            let members: Vec<_> = layout
                .assignments
                .iter()
                .flat_map(|a| a.replicas.iter())
                .collect();
            all &= members.contains(&&new_id)
                && !members.contains(&&old_id)
                && layout.previous_version == 0;
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wiped node was not placed in the layout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The replacement's transfer refilled it: a repair finds nothing left.
    let report = cluster.nodes[2].client().repair(0, None).await.unwrap();
    assert_eq!(report.keys_repaired, 0, "{report:?}");
    let node2 = cluster.nodes[2].client();
    for (i, key) in keys.iter().enumerate() {
        let copy = node2.local_get(0, key.clone()).await.unwrap();
        let values: Vec<&[u8]> = copy.versions.iter().map(|v| v.value.as_ref()).collect();
        assert_eq!(
            values,
            vec![latest(i).as_bytes()],
            "{key} on the refilled node"
        );
        let got = client
            .get(key.clone(), RequestOptions::level(Level::All), false)
            .await
            .unwrap();
        let read: Vec<&[u8]> = got.siblings.iter().map(|s| s.value.as_ref()).collect();
        assert_eq!(read, vec![latest(i).as_bytes()], "{key} read with R=ALL");
    }
}
