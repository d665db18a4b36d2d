//! Cluster identity and gossip bounds on real processes (issue 11).
//!
//! * Two clusters left at the default `cluster.name`; one node of the
//!   first is restarted with a node of the second among its seeds. Before
//!   cluster ids, gossip installed the other cluster's (newer) layout and
//!   retirement deleted every key of the first cluster. Now each side
//!   refuses the other's gossip, logs the foreign cluster id, and keeps its
//!   members, layout and keys.
//! * One gossip entry claiming generation and heartbeat `u64::MAX` for a
//!   live node: before the bounds it froze that node's entry everywhere
//!   (nothing the node itself says can beat it) and the node went dead in
//!   everyone's view. Now it is refused, and the node stays alive with a
//!   sane generation and an advancing heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringkv_client::Level;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_tests::metrics::metrics_page;
use ringkv_tests::rebalance::wait_settled;
use ringkv_tests::{
    missing_on, put_opts, value_of, ServerProcess, TestCluster, TEST_GOSSIP_INTERVAL_MS,
};
use tonic::metadata::MetadataValue;

/// Keys written to each cluster.
const KEYS: usize = 50;

/// How long the misconfigured node runs beside the foreign cluster: the
/// issue's number (the old bug emptied the first cluster within 30 s).
const FOREIGN_WAIT: Duration = Duration::from_secs(60);

/// How long the B cluster may take to grow from two nodes to three.
const GROW_TIMEOUT: Duration = Duration::from_secs(90);

/// How long every node's view is watched after the poisoned gossip entry.
const POISON_WATCH: Duration = Duration::from_secs(10);

/// A generation this far up is impossible in a test run (one per start).
const SANE_GENERATION: u64 = 1_000;

fn keys(prefix: &str) -> Vec<String> {
    (0..KEYS).map(|i| format!("{prefix}-{i}")).collect()
}

async fn write_all(cluster: &TestCluster, keys: &[String]) {
    let client = cluster.client();
    for key in keys {
        client
            .put(key.clone(), value_of(key), put_opts(Level::All, false))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
}

async fn cluster_id(node: &ServerProcess) -> String {
    let id = node.client().node_status(0).await.unwrap().cluster_id;
    assert_eq!(id.len(), 32, "a cluster id of 32 hex digits: {id:?}");
    id
}

/// Every key must be stored on each of the cluster's running nodes (N = 3
/// on three nodes) and readable with R = ALL through the cluster.
async fn assert_holds_all(name: &str, cluster: &TestCluster, keys: &[String]) {
    for i in 0..cluster.nodes.len() {
        let missing = missing_on(cluster, i, keys).await;
        assert!(
            missing.is_empty(),
            "cluster {name}: node {i} lost {} of {} keys: {missing:?}",
            missing.len(),
            keys.len()
        );
    }
    let client = cluster.client();
    for key in keys {
        let got = client
            .get(
                key.clone(),
                ringkv_client::RequestOptions::level(Level::All),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("cluster {name}: get {key}: {e}"));
        assert_eq!(
            got.value().map(|v| v.as_ref()),
            Some(value_of(key).as_bytes()),
            "cluster {name}: {key}"
        );
    }
}

/// No node of `cluster` lists a member outside `own`.
async fn assert_no_foreign_members(name: &str, cluster: &TestCluster, own: &BTreeSet<String>) {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let members = node.client().members().await.unwrap();
        let listed: BTreeSet<String> = members.into_iter().map(|m| m.node_id).collect();
        let foreign: Vec<&String> = listed.difference(own).collect();
        assert!(
            foreign.is_empty(),
            "cluster {name}: node {i} lists foreign members {foreign:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_seeded_with_another_cluster_keeps_its_cluster_and_its_keys() {
    let mut a = TestCluster::start(3, &[]).await.unwrap();
    let mut b = TestCluster::start(2, &[]).await.unwrap();
    let a_keys = keys("a");
    let b_keys = keys("b");
    write_all(&a, &a_keys).await;

    // B grows 2 → 3 so its layout version passes A's: the old bug installs
    // the higher version whatever cluster it comes from.
    b.add_node(&[]).await.unwrap();
    let settled = wait_settled(&b, 1, 3, None, GROW_TIMEOUT).await.unwrap();
    write_all(&b, &b_keys).await;
    let a_version = a.client().layout().await.unwrap().version;
    assert!(
        settled.layout.version > a_version,
        "B's layout v{} must be newer than A's v{a_version}",
        settled.layout.version
    );

    let a_id = cluster_id(&a.nodes[0]).await;
    let b_id = cluster_id(&b.nodes[0]).await;
    assert_ne!(a_id, b_id);
    for node in a.nodes.iter().skip(1) {
        assert_eq!(cluster_id(node).await, a_id);
    }
    for node in b.nodes.iter().skip(1) {
        assert_eq!(cluster_id(node).await, b_id);
    }
    let a_members: BTreeSet<String> = a.ids.iter().cloned().collect();
    let b_members: BTreeSet<String> = b.ids.iter().cloned().collect();

    // Restart A's node 0 with B's node 0 among its seeds, as an operator
    // copying the wrong seed list would.
    let data_dir = a.nodes[0].data_dir.clone();
    let grpc = a.nodes[0].grpc.clone();
    let peer = a.nodes[0].peer.clone();
    a.nodes[0].kill();
    let seeds = format!("{},{}", a.peer_endpoints().join(","), b.nodes[0].peer);
    let interval = TEST_GOSSIP_INTERVAL_MS.to_string();
    let env = [
        ("RINGKV__GOSSIP__INTERVAL_MS", interval.as_str()),
        ("RINGKV__DEBUG__FAULT_INJECTION", "true"),
        ("RINGKV__HANDOFF__INTERVAL_MS", "200"),
    ];
    a.nodes[0] = ServerProcess::start_on(
        &data_dir,
        &grpc,
        &peer,
        &["--seeds", &seeds, "--bootstrap-expect", "3"],
        &env,
    )
    .unwrap();
    a.nodes[0].wait_ready().await.unwrap();
    assert_eq!(
        cluster_id(&a.nodes[0]).await,
        a_id,
        "the id survives a restart"
    );

    // Nothing converges here: the point is that nothing changes, so the
    // whole time is waited, checking along the way that no layout moved.
    let started = Instant::now();
    while started.elapsed() < FOREIGN_WAIT {
        for (name, cluster, version) in [("A", &a, a_version), ("B", &b, settled.layout.version)] {
            for (i, node) in cluster.nodes.iter().enumerate() {
                let layout = node.client().layout().await.unwrap();
                assert_eq!(
                    layout.version,
                    version,
                    "cluster {name}: node {i} moved to layout v{} after {:?}",
                    layout.version,
                    started.elapsed()
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    assert_holds_all("A", &a, &a_keys).await;
    assert_holds_all("B", &b, &b_keys).await;
    assert_no_foreign_members("A", &a, &a_members).await;
    assert_no_foreign_members("B", &b, &b_members).await;

    // The misconfigured node logs B's id (its gossip answered as
    // foreign), and B's seed logs A's (it refused that gossip).
    let log = a.nodes[0].log();
    assert!(
        log.contains(&format!("foreign_cluster={b_id}")),
        "A's node 0 should log the refused cluster {b_id}:\n{}",
        tail(&log)
    );
    let log = b.nodes[0].log();
    assert!(
        log.contains(&format!("foreign_cluster={a_id}")),
        "B's node 0 should log the refused cluster {a_id}:\n{}",
        tail(&log)
    );
    // Rate-limited: a refusal per gossip round (5 a second for a minute)
    // gives only a handful of lines.
    let lines = log.matches("foreign_cluster=").count();
    assert!(
        (1..=20).contains(&lines),
        "{lines} refusal lines in a minute"
    );
    let metrics = metrics_page(&b.nodes[0].metrics).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ringkv_foreign_cluster_refusals_total ") && !l.ends_with(" 0")),
        "refusals counted:\n{metrics}"
    );
}

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossiped_generation_of_u64_max_is_refused_and_the_node_stays_alive() {
    let cluster = TestCluster::start(3, &[]).await.unwrap();
    let status = cluster.nodes[0].client().node_status(0).await.unwrap();
    let members = cluster.nodes[0].client().members().await.unwrap();
    let poisoned = |target: usize| {
        let m = members
            .iter()
            .find(|m| m.node_id == cluster.ids[target])
            .expect("a member");
        pb::MemberEntry {
            id: m.node_id.clone(),
            name: m.name.clone(),
            address: m.address.clone(),
            zone: m.zone.clone(),
            weight: m.weight,
            generation: u64::MAX,
            heartbeat: u64::MAX,
            status: m.status.clone(),
            layout_version: m.layout_version,
            transfers_done: 0,
            join: String::new(),
            storage_bytes: 0,
            peer_address: String::new(),
        }
    };
    // Sent to node 0: an entry about node 1 (a live peer) and one about
    // node 0 itself, with the cluster's own name and id so that nothing
    // but the bounds can refuse them.
    let request = pb::GossipRequest {
        cluster_name: status.cluster_name.clone(),
        digests: Vec::new(),
        entries: vec![poisoned(1), poisoned(0)],
    };
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert(
        "x-ringkv-cluster",
        MetadataValue::try_from(status.cluster_id.as_str()).unwrap(),
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nodes[0].peer))
            .unwrap()
            .connect()
            .await
            .unwrap();
    InternalClient::new(channel)
        .gossip(request)
        .await
        .expect("the gossip call itself is answered");

    // Every node, for a while: nodes 0 and 1 alive, sane generations,
    // heartbeats that keep advancing.
    let mut first: BTreeMap<(usize, String), u64> = BTreeMap::new();
    let mut last: BTreeMap<(usize, String), u64> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < POISON_WATCH {
        for (i, node) in cluster.nodes.iter().enumerate() {
            let members = node.client().members().await.unwrap();
            for target in [0, 1] {
                let id = &cluster.ids[target];
                let m = members
                    .iter()
                    .find(|m| &m.node_id == id)
                    .unwrap_or_else(|| panic!("node {i} lost member {target}"));
                assert!(
                    m.generation < SANE_GENERATION,
                    "node {i} sees node {target} at generation {} after {:?}",
                    m.generation,
                    started.elapsed()
                );
                assert_eq!(
                    m.liveness,
                    "alive",
                    "node {i} sees node {target} {} after {:?}",
                    m.liveness,
                    started.elapsed()
                );
                first.entry((i, id.clone())).or_insert(m.heartbeat);
                last.insert((i, id.clone()), m.heartbeat);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (key, beat) in &last {
        assert!(
            *beat > first[key],
            "node {} saw no heartbeat of {} advance: {} → {beat}",
            key.0,
            key.1,
            first[key]
        );
    }
    let metrics = metrics_page(&cluster.nodes[0].metrics).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ringkv_gossip_entries_refused_total ") && !l.ends_with(" 0")),
        "refused entries counted:\n{metrics}"
    );
}
