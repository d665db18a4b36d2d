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
