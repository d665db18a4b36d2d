//! The test fault switch: which peers' traffic is cut.
//!
//! It exists only for tests: it is set through `Admin.SetFaults`, which a
//! node refuses unless `debug.fault_injection = true`. Cutting a node off
//! in one direction blocks this node's calls to it; in the other, this
//! node refuses its calls.

use std::collections::HashSet;
use std::sync::RwLock;

use ringkv_core::version::NodeId;

#[derive(Default)]
pub struct Faults {
    blocked_outgoing: RwLock<HashSet<NodeId>>,
    blocked_incoming: RwLock<HashSet<NodeId>>,
}

impl Faults {
    /// Replaces both block lists.
    pub fn set(&self, outgoing: HashSet<NodeId>, incoming: HashSet<NodeId>) {
        *self
            .blocked_outgoing
            .write()
            .unwrap_or_else(|p| p.into_inner()) = outgoing;
        *self
            .blocked_incoming
            .write()
            .unwrap_or_else(|p| p.into_inner()) = incoming;
    }

    pub fn blocks_outgoing(&self, to: NodeId) -> bool {
        self.blocked_outgoing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&to)
    }

    pub fn blocks_incoming(&self, from: NodeId) -> bool {
        self.blocked_incoming
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&from)
    }
}
