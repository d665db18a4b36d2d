//! Cluster construction.

use super::testing::lone_cluster;
use super::*;
use ringkv_storage::MemoryEngine;

#[test]
fn a_node_can_address_itself() {
    // A hint readdressed to a partition's new replicas may go to the
    // node that holds it: without its own address that send failed
    // forever and the hint was never delivered.
    let id = NodeId(7);
    let addresses = Arc::new(AddressBook::default());
    let _cluster = lone_cluster(
        id,
        Arc::new(Config::default()),
        Arc::new(MemoryEngine::new()),
        addresses.clone(),
    );
    assert_eq!(addresses.get(id).as_deref(), Some("127.0.0.1:2"));
}

#[test]
fn an_entry_seen_for_the_first_time_is_not_a_heartbeat() {
    // A node that just started learns every entry afresh, those of nodes
    // that left long ago included. Counted as heartbeats, they showed such
    // ghosts alive, and the lowest live member once replaced a member that
    // was restarting by a node that had left from the same address.
    let cluster = lone_cluster(
        NodeId(7),
        Arc::new(Config::default()),
        Arc::new(MemoryEngine::new()),
        Arc::default(),
    );
    let entry = |id: u64, heartbeat: u64, status: Status| MemberInfo {
        id: NodeId(id),
        name: format!("n{id}"),
        address: format!("10.0.0.{id}:7379"),
        peer_address: format!("10.0.0.{id}:7380"),
        zone: String::new(),
        weight: 1,
        generation: 3,
        heartbeat,
        status,
        layout_version: 2,
        transfers_done: 0,
        join: JoinMode::None,
        storage_bytes: 0,
    };
    let gossip = |entries| Gossip {
        cluster_name: Config::default().cluster.name,
        digests: Vec::new(),
        entries,
    };
    let left = entry(1, 40, Status::Left);
    let running = entry(2, 40, Status::Up);
    cluster
        .handle_gossip(gossip(vec![left.clone(), running]), None, None)
        .unwrap();
    assert!(!cluster.is_alive(NodeId(1)), "a node that left shows alive");
    assert!(
        !cluster.is_alive(NodeId(2)),
        "first sight counted as a heartbeat"
    );
    // The running node advances its entry: that is a heartbeat. The
    // ghost's entry, relayed again unchanged, is not.
    cluster
        .handle_gossip(gossip(vec![left, entry(2, 41, Status::Up)]), None, None)
        .unwrap();
    assert!(cluster.is_alive(NodeId(2)));
    assert!(!cluster.is_alive(NodeId(1)));
}
