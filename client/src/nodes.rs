//! The nodes a client talks to, each with its connection opened once and
//! kept, and the order a request tries them in.
//!
//! A request's path touches no allocator and no map: the layout holds, per
//! partition, the replicas' [`Node`]s themselves; the endpoints are
//! [`Node`]s too; a request walks its key's replicas and then the endpoints
//! ([`Route::nodes`]) and takes the connection its node keeps. Only a
//! request that meets a suspect node sets it aside in a list of its own
//! ([`Order`]), to try it last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::routing::Routing;
use crate::Conn;

/// A node the client sends to.
pub(crate) struct Node {
    pub(crate) address: String,
    /// The open connection; dropped after a transport failure, so the next
    /// request reconnects.
    conn: Mutex<Option<Conn>>,
    /// It failed a request and has not answered SERVING since
    /// (`suspects.rs`): requests try it last.
    suspect: AtomicBool,
}

impl Node {
    pub(crate) fn new(address: &str) -> Self {
        Self {
            address: address.to_string(),
            conn: Mutex::new(None),
            suspect: AtomicBool::new(false),
        }
    }

    /// The connection kept for this node, if one is open.
    pub(crate) fn conn(&self) -> Option<Conn> {
        self.lock().clone()
    }

    /// Keeps `conn` for the requests that follow.
    pub(crate) fn keep(&self, conn: Conn) {
        *self.lock() = Some(conn);
    }

    /// Drops the kept connection (it failed).
    pub(crate) fn forget(&self) {
        self.lock().take();
    }

    pub(crate) fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Acquire)
    }

    /// Marks the node suspect; false if it already was.
    pub(crate) fn mark_suspect(&self) -> bool {
        !self.suspect.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn clear_suspect(&self) {
        self.suspect.store(false, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every node the client knows, by address, so the endpoints, the layout
/// and the admin calls share one connection per node.
#[derive(Default)]
pub(crate) struct Registry {
    nodes: Mutex<HashMap<String, Arc<Node>>>,
}

impl Registry {
    /// The node at `address`, added on first use.
    pub(crate) fn get(&self, address: &str) -> Arc<Node> {
        let mut nodes = self.lock();
        if let Some(node) = nodes.get(address) {
            return node.clone();
        }
        let node = Arc::new(Node::new(address));
        nodes.insert(address.to_string(), node.clone());
        node
    }

    /// Forgets the nodes nobody else holds (neither an endpoint nor a
    /// layout, nor a request on its way): a node that left the cluster
    /// does not keep its connection open.
    pub(crate) fn prune(&self) {
        self.lock().retain(|_, node| Arc::strong_count(node) > 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Node>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where one request may go: its key's replicas (with a layout), then the
/// endpoints from a rotating start.
pub(crate) struct Route {
    pub(crate) routing: Option<Arc<Routing>>,
    pub(crate) partition: usize,
    pub(crate) start: usize,
}

impl Route {
    /// The nodes in order, each once: the replicas, then the endpoints
    /// that are not replicas.
    pub(crate) fn nodes<'a>(
        &'a self,
        endpoints: &'a [Arc<Node>],
    ) -> impl Iterator<Item = &'a Arc<Node>> + 'a {
        let replicas: &[Arc<Node>] = self
            .routing
            .as_deref()
            .and_then(|r| r.replicas(self.partition))
            .unwrap_or(&[]);
        let n = endpoints.len();
        let rest = (0..n)
            .map(move |i| &endpoints[(self.start + i) % n])
            .filter(move |e| !replicas.iter().any(|r| Arc::ptr_eq(r, e)));
        replicas.iter().chain(rest)
    }
}

/// `nodes` with the suspects moved to the back, in their order: they are
/// still tried when nothing else answers. Allocates only once a suspect is
/// met.
pub(crate) struct Order<'a, I> {
    nodes: I,
    later: Vec<&'a Arc<Node>>,
    next_later: usize,
}

impl<'a, I: Iterator<Item = &'a Arc<Node>>> Order<'a, I> {
    pub(crate) fn new(nodes: I) -> Self {
        Self {
            nodes,
            later: Vec::new(),
            next_later: 0,
        }
    }
}

impl<'a, I: Iterator<Item = &'a Arc<Node>>> Iterator for Order<'a, I> {
    type Item = &'a Arc<Node>;

    fn next(&mut self) -> Option<&'a Arc<Node>> {
        for node in self.nodes.by_ref() {
            if !node.is_suspect() {
                return Some(node);
            }
            self.later.push(node);
        }
        let node = self.later.get(self.next_later)?;
        self.next_later += 1;
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(addresses: &[&str]) -> Vec<Arc<Node>> {
        addresses.iter().map(|a| Arc::new(Node::new(a))).collect()
    }

    fn addresses<'a>(nodes: impl Iterator<Item = &'a Arc<Node>>) -> Vec<&'a str> {
        nodes.map(|n| n.address.as_str()).collect()
    }

    #[test]
    fn suspects_go_last_in_their_order() {
        let all = nodes(&["a:1", "b:1", "c:1", "d:1"]);
        let mut order = Order::new(all.iter());
        assert_eq!(addresses(order.by_ref()), ["a:1", "b:1", "c:1", "d:1"]);
        assert_eq!(order.later.capacity(), 0, "allocated without a suspect");
        all[1].mark_suspect();
        all[3].mark_suspect();
        assert_eq!(
            addresses(Order::new(all.iter())),
            ["a:1", "c:1", "b:1", "d:1"]
        );
        all[1].clear_suspect();
        assert_eq!(
            addresses(Order::new(all.iter())),
            ["a:1", "b:1", "c:1", "d:1"]
        );
    }

    /// Without a layout the endpoints come in turn from the start; with
    /// one, the key's replicas come first and an endpoint that is also a
    /// replica is not tried twice.
    #[test]
    fn a_route_tries_replicas_then_the_other_endpoints_once_each() {
        let registry = Registry::default();
        let endpoints: Vec<_> = ["a:1", "b:1", "c:1"]
            .iter()
            .map(|a| registry.get(a))
            .collect();
        let route = |routing, start| Route {
            routing,
            partition: 1,
            start,
        };
        assert_eq!(
            addresses(route(None, 4).nodes(&endpoints)),
            ["b:1", "c:1", "a:1"]
        );
        let routing = Arc::new(Routing::for_test(vec![
            vec![registry.get("x:1")],
            vec![registry.get("c:1"), registry.get("x:1")],
        ]));
        assert_eq!(
            addresses(route(Some(routing), 0).nodes(&endpoints)),
            ["c:1", "x:1", "a:1", "b:1"]
        );
    }

    #[test]
    fn the_registry_shares_nodes_and_forgets_the_unused() {
        let registry = Registry::default();
        let held = registry.get("a:1");
        assert!(Arc::ptr_eq(&held, &registry.get("a:1")));
        drop(registry.get("b:1"));
        registry.prune();
        assert!(
            Arc::ptr_eq(&held, &registry.get("a:1")),
            "a held node was forgotten"
        );
        assert_eq!(registry.lock().len(), 1, "an unused node was kept");
    }
}
