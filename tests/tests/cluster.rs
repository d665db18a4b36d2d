//! The cluster on real processes: replication to N nodes, placement by the
//! layout, quorum behaviour with a node down, liveness after a restart,
//! and read repair after a network cut.

use std::collections::BTreeSet;
use std::time::Duration;

use ringkv_client::{Error, Level, PutOptions, RequestOptions};
use ringkv_tests::{partition_of, TestCluster};

fn put_opts(level: Level) -> PutOptions {
    PutOptions {
        consistency: RequestOptions::level(level),
        ..PutOptions::default()
    }
}

/// Node ids holding a live copy of `key`, by asking every node directly.
async fn holders(cluster: &TestCluster, key: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if node.pid().is_none() {
            continue;
        }
        let copy = node.client().local_get(0, key.to_string()).await.unwrap();
        if copy.found && copy.versions.iter().any(|v| !v.tombstone) {
            out.insert(cluster.ids[i].clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_to_all_and_write_one_is_read_with_all() {
    let cluster = TestCluster::start(3, &[]).await.unwrap();
    let client = cluster.client();

    let put = client
        .put("everywhere", "v-all", put_opts(Level::All))
        .await
        .unwrap();
    assert_eq!(put.meta.replicas.len(), 3, "{:?}", put.meta);
    assert_eq!(put.meta.replication, 3);
    assert!(!put.meta.replication_capped);
    for node in &cluster.nodes {
        let copy = node.client().local_get(0, "everywhere").await.unwrap();
        assert!(copy.found, "missing on {}", node.grpc);
        assert_eq!(copy.versions.len(), 1);
        assert_eq!(copy.versions[0].value.as_ref(), b"v-all");
    }

    client
        .put("weak", "v-one", put_opts(Level::One))
        .await
        .unwrap();
    let got = client
        .get("weak", RequestOptions::level(Level::All), false)
        .await
        .unwrap();
    assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"v-one"[..]));
    assert_eq!(got.meta.replicas.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_store_each_key_exactly_on_its_layout_replicas() {
    let cluster = TestCluster::start(5, &[]).await.unwrap();
    let client = cluster.client();
    let layout = client.layout().await.unwrap();
    assert_eq!(layout.replication, 3);
    // Half the writes go through node 0 without routing, so the ones for
    // keys node 0 does not replicate are forwarded to a replica.
    let via0 = cluster.client_via(0);
    const KEYS: usize = 1_000;
    for i in 0..KEYS {
        let c = if i % 2 == 0 { &client } else { &via0 };
        let put = c
            .put(format!("placed-{i}"), format!("v{i}"), put_opts(Level::All))
            .await
            .unwrap();
        let coordinator = put.meta.coordinator.clone();
        let key = format!("placed-{i}");
        let p = partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
        assert!(
            layout.assignments[p as usize]
                .replicas
                .contains(&coordinator),
            "key {key} coordinated by {coordinator}, not a replica"
        );
    }
    for i in 0..KEYS {
        let key = format!("placed-{i}");
        let p = partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
        let expected: BTreeSet<String> = layout.assignments[p as usize]
            .replicas
            .iter()
            .cloned()
            .collect();
        assert_eq!(expected.len(), 3);
        assert_eq!(
            holders(&cluster, &key).await,
            expected,
            "key {key} partition {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_survives_a_killed_node_and_all_names_the_missing_replica() {
    let mut cluster = TestCluster::start(3, &[]).await.unwrap();
    let dead_id = cluster.ids[2].clone();
    cluster.nodes[2].kill();
    let client = cluster.client();

    for i in 0..50 {
        client
            .put(format!("q-{i}"), "v", put_opts(Level::Quorum))
            .await
            .unwrap_or_else(|e| panic!("quorum put {i} with one node down: {e}"));
        let got = client
            .get(
                format!("q-{i}"),
                RequestOptions::level(Level::Quorum),
                false,
            )
            .await
            .unwrap();
        assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"v"[..]));
    }

    let err = client
        .put("needs-all", "v", put_opts(Level::All))
        .await
        .unwrap_err();
    match &err {
        Error::Unavailable(msg) | Error::Timeout(msg) => {
            assert!(
                msg.contains(&dead_id),
                "error does not name {dead_id}: {msg}"
            )
        }
        other => panic!("expected UNAVAILABLE or DEADLINE_EXCEEDED, got {other:?}"),
    }

    // The restarted node comes back with a higher generation; the others
    // must see it alive again well within the failure detector's window.
    cluster.nodes[2].restart().await.unwrap();
    for observer in 0..2 {
        let took = cluster.wait_liveness(observer, 2, "alive").await.unwrap();
        assert!(took < Duration::from_secs(20), "took {took:?}");
    }
    // And the restarted node sees the others: it counts an entry as alive
    // only once its heartbeat advances (a first sight is not a heartbeat),
    // and until then it refuses the writes it coordinates.
    for target in 0..2 {
        let took = cluster.wait_liveness(2, target, "alive").await.unwrap();
        assert!(took < Duration::from_secs(20), "took {took:?}");
    }
    client
        .put("needs-all", "v", put_opts(Level::All))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_brings_a_cut_off_replica_up_to_date() {
    // No room for hints: otherwise hinted handoff would bring node 2 up to
    // date right after the heal, before the read could repair it.
    let env = [
        ("RINGKV__HANDOFF__MAX_BYTES_PER_TARGET", "1"),
        ("RINGKV__REPAIR__ANTI_ENTROPY", "false"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    cluster.cut(2, 0).await.unwrap();
    cluster.cut(2, 1).await.unwrap();

    // Node 0 coordinates: node 2 cannot be reached, so only 0 and 1 ack.
    let via0 = cluster.client_via(0);
    let put = via0
        .put("repaired", "fresh", put_opts(Level::Quorum))
        .await
        .unwrap();
    assert_eq!(put.meta.replicas.len(), 2, "{:?}", put.meta);
    let stale = cluster.nodes[2]
        .client()
        .local_get(0, "repaired")
        .await
        .unwrap();
    assert!(!stale.found, "node 2 was cut off but holds the write");

    cluster.heal().await.unwrap();
    cluster.wait_liveness(0, 2, "alive").await.unwrap();

    let got = via0
        .get("repaired", RequestOptions::level(Level::All), false)
        .await
        .unwrap();
    assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"fresh"[..]));
    assert_eq!(got.meta.read_repaired, 1, "{:?}", got.meta);

    // Repair runs after the reply: poll the stale replica's own copy.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let copy = cluster.nodes[2]
            .client()
            .local_get(0, "repaired")
            .await
            .unwrap();
        if copy.found {
            assert_eq!(copy.versions[0].value.as_ref(), b"fresh");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 2 was not repaired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_through_one_node_and_reads_through_another() {
    let cluster = TestCluster::start(3, &[]).await.unwrap();
    for i in 0..20 {
        let key = format!("cli-{i}");
        let out = ringkv_tests::cli(&cluster.nodes[i % 3].grpc, &["put", &key, "from-cli"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = ringkv_tests::cli(
            &cluster.nodes[(i + 1) % 3].grpc,
            &["get", &key, "-r", "all"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from-cli\n");
    }
}
