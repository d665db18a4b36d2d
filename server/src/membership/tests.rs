//! Cluster construction.

use super::*;
use crate::metrics::Metrics;
use crate::peer::memory::MemoryNetwork;
use crate::peer::ClusterIdentity;
use crate::storage::MemoryEngine;

#[test]
fn a_node_can_address_itself() {
    // A hint readdressed to a partition's new replicas may go to the
    // node that holds it: without its own address that send failed
    // forever and the hint was never delivered.
    let id = NodeId(7);
    let me = MemberInfo {
        id,
        name: "n7".into(),
        address: "127.0.0.1:1".into(),
        peer_address: "127.0.0.1:2".into(),
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
    let peers = Arc::new(Peers::new(
        id,
        MemoryNetwork::new(0),
        Arc::new(ClusterIdentity::new(Metrics::new())),
        Arc::default(),
    ));
    let addresses = Arc::new(AddressBook::default());
    let engine = Arc::new(MemoryEngine::new());
    let _cluster = Cluster::new(
        me,
        Arc::new(Config::default()),
        engine,
        peers,
        addresses.clone(),
    )
    .unwrap();
    assert_eq!(addresses.get(id).as_deref(), Some("127.0.0.1:2"));
}
