//! Retirement on one node, in process on the memory engine: a layout that
//! says this node no longer replicates a partition does not by itself make
//! it delete anything (`safety`, rule 2). Transfers and hand-overs between
//! nodes run over gRPC and are covered by `tests/tests/safety_transfer.rs`.

use std::sync::Arc;

use bytes::Bytes;

use super::Rebalance;
use crate::config::Config;
use crate::membership::testing::lone_cluster;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::repair::Repair;
use crate::replica::{LocalWrite, Replica};
use ringkv_core::ring::{Layout, MemberSpec};
use ringkv_core::version::{NodeId, Value};
use ringkv_storage::{Engine, MemoryEngine};

/// Node 1 alone in its cluster, with `keys` keys written.
async fn lone_node_with_data(keys: u32) -> (Arc<Rebalance>, Arc<Replica>, Arc<Cluster>) {
    let config = Arc::new(Config::default());
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let id = NodeId(1);
    let replica = Arc::new(
        Replica::new(
            id,
            engine.clone(),
            config.cluster.partitions,
            config.limits.max_siblings,
        )
        .unwrap(),
    );
    let metrics = Metrics::new();
    let cluster = lone_cluster(id, config.clone(), engine, Arc::default());
    cluster.maybe_bootstrap();
    assert_eq!(cluster.layout().unwrap().version(), 1);
    let repair = Repair::new(
        replica.clone(),
        cluster.clone(),
        config.clone(),
        metrics.clone(),
    );
    let rebalance =
        Rebalance::new(replica.clone(), cluster.clone(), repair, config, metrics).unwrap();
    for i in 0..keys {
        replica
            .apply_write(LocalWrite {
                key: key(i),
                context: None,
                value: Value::Data(Bytes::from_static(b"v")),
                expires_at_ms: None,
                members: Vec::new(),
            })
            .await
            .unwrap();
    }
    (rebalance, replica, cluster)
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key-{i:06}"))
}

async fn held(replica: &Replica, keys: u32) -> u32 {
    let mut n = 0;
    for i in 0..keys {
        if replica.read(key(i)).await.unwrap().is_some() {
            n += 1;
        }
    }
    n
}

/// A settled layout arrives in which node 1 replicates nothing, by a jump
/// (no transition this node saw) and naming replicas it cannot reach:
/// nothing may be deleted, since none of them has confirmed holding what
/// node 1 holds. The code before the hand-over deleted everything here.
#[tokio::test]
async fn a_layout_alone_never_deletes_data() {
    const KEYS: u32 = 300;
    let (rebalance, replica, cluster) = lone_node_with_data(KEYS).await;
    let v1 = cluster.layout().unwrap();
    let others: Vec<MemberSpec> = [2, 3, 4]
        .iter()
        .map(|&id| MemberSpec {
            id: NodeId(id),
            zone: String::new(),
            weight: 1,
        })
        .collect();
    let jumped = Layout::compute(&others, 3, v1.partitions(), Some(&v1)).unwrap();
    assert!(!jumped.in_transition() && !jumped.contains(NodeId(1)));
    assert!(cluster.install_layout(jumped.clone()).unwrap());
    for _ in 0..3 {
        rebalance.retire(&jumped).await.unwrap();
    }
    assert_eq!(held(&replica, KEYS).await, KEYS, "data deleted by a layout");
}
