//! The short campaign CI runs: seeded runs of every workload under every
//! nemesis (process, network, clock, disk, membership) on five nodes in
//! network namespaces, which must lose no acknowledged write, break no
//! checker rule and converge. And the
//! network itself: a partition made with iptables is a black hole.
//!
//! The long campaign, for the record, is `scripts/campaign.sh`;
//! `docs/reliability.md` has its table. Needs root.

use std::time::{Duration, Instant};

use ringkv_verify::campaign::{self, CampaignSpec};
use ringkv_verify::cluster::{Cluster, ClusterSpec};
use ringkv_verify::nemesis::Family;
use ringkv_verify::net::Partition;

/// Seed of the first CI run; `RINGKV_CAMPAIGN_SEED` picks another.
fn first_seed() -> u64 {
    std::env::var("RINGKV_CAMPAIGN_SEED")
        .ok()
        .map(|s| s.parse().expect("RINGKV_CAMPAIGN_SEED is a u64"))
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_campaign_loses_nothing_and_breaks_no_rule() {
    let out = tempfile::tempdir().unwrap();
    // Every nemesis family: process, network, clock, disk, membership.
    let spec = CampaignSpec {
        runs: 2,
        first_seed: first_seed(),
        duration: Duration::from_secs(40),
        families: Family::ALL.to_vec(),
        out: out.path().to_path_buf(),
    };
    let summary = campaign::run(&spec).await.unwrap();
    assert!(summary.faults() >= 20, "only {} faults", summary.faults());
    assert!(summary.clean(), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_is_cut_off_silently_and_comes_back_after_the_heal() {
    let out = tempfile::tempdir().unwrap();
    let spec = ClusterSpec {
        members: 3,
        spares: 0,
        disk_mb: 64,
        env: Vec::new(),
    };
    let mut cluster = Cluster::start(&spec, out.path()).await.unwrap();
    let isolated_id = cluster.nodes[0].id.clone();
    cluster.net.partition(&Partition::Isolated(0)).unwrap();

    // The others stop hearing node 0 (no refusal tells them: only the
    // failure detector does)...
    let observer = cluster.nodes[1].client();
    let started = Instant::now();
    loop {
        let members = observer.members().await.unwrap();
        let seen = members.iter().find(|m| m.node_id == isolated_id).unwrap();
        if seen.liveness != "alive" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 0 still alive to node 1 behind the partition"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...while the harness, outside the partition, still reaches node 0.
    cluster.nodes[0].client().node_status(0).await.unwrap();
    // A connection from node 1 to node 0's peer port hangs (`timeout`
    // exits 124) rather than being refused (bash exits 1).
    let connect = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            cluster.net.namespace(1),
            "timeout",
            "2",
            "bash",
            "-c",
        ])
        .arg(format!("echo > /dev/tcp/{}/7380", cluster.net.ip(0)))
        .status()
        .unwrap();
    assert_eq!(connect.code(), Some(124), "not a black hole: {connect:?}");

    cluster.net.heal().unwrap();
    cluster.wait_whole().await.unwrap();
}
