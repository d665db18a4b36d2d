//! A cluster view for unit tests: one node, alone on an empty in-memory
//! network.

use super::*;
use crate::metrics::Metrics;
use ringkv_peer::memory::MemoryNetwork;
use ringkv_peer::ClusterIdentity;

/// Node `id`'s view of a cluster it is alone in (not yet bootstrapped),
/// publishing addresses into `addresses`.
pub(crate) fn lone_cluster(
    id: NodeId,
    config: Arc<Config>,
    engine: Arc<dyn Engine>,
    addresses: Arc<AddressBook>,
) -> Arc<Cluster> {
    let me = MemberInfo {
        id,
        name: format!("n{id}"),
        address: "127.0.0.1:1".to_string(),
        peer_address: "127.0.0.1:2".to_string(),
        zone: String::new(),
        weight: 1,
        generation: 1,
        heartbeat: 0,
        status: Status::Joining,
        layout_version: 0,
        transfers_done: 0,
        join: JoinMode::None,
        storage_bytes: 0,
    };
    let metrics = Metrics::new();
    let peers = Arc::new(Peers::new(
        id,
        MemoryNetwork::new(0),
        Arc::new(ClusterIdentity::new(metrics.foreign_cluster_refusals())),
        Arc::default(),
    ));
    Cluster::new(me, config, engine, peers, addresses, metrics).expect("a lone cluster view")
}
