//! Where each member can be reached: published by membership as gossip
//! brings addresses, read by a network that needs them (gRPC).

use std::collections::HashMap;
use std::sync::RwLock;

use ringkv_core::version::NodeId;

#[derive(Default)]
pub struct AddressBook {
    addresses: RwLock<HashMap<NodeId, String>>,
}

impl AddressBook {
    pub fn get(&self, node: NodeId) -> Option<String> {
        self.addresses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }

    /// Records `node`'s address, if it changed.
    pub fn set(&self, node: NodeId, address: &str) {
        if self.get(node).as_deref() == Some(address) {
            return;
        }
        self.addresses
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, address.to_string());
    }
}
