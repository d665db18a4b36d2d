//! Partition-aware routing: the client learns the layout from any node
//! and sends each request to a replica of its key first.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringkv_common::partition_of_seeded;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;

use crate::nodes::{Node, Route};
use crate::{Client, ReplyMeta, Result, DEFAULT_CLIENT_DEADLINE};

/// How keys map to replicas, learned from a node (Admin.Layout).
pub(crate) struct Routing {
    version: u64,
    partitions: u32,
    hash_seed: u64,
    /// Per partition, the replicas in preference order.
    replicas: Vec<Vec<Arc<Node>>>,
}

impl Routing {
    /// The replicas of `partition`, in preference order.
    pub(crate) fn replicas(&self, partition: usize) -> Option<&[Arc<Node>]> {
        self.replicas.get(partition).map(Vec::as_slice)
    }

    /// A layout of `replicas.len()` partitions.
    #[cfg(test)]
    pub(crate) fn for_test(replicas: Vec<Vec<Arc<Node>>>) -> Self {
        Self {
            version: 1,
            partitions: replicas.len() as u32,
            hash_seed: 0,
            replicas,
        }
    }
}

/// How long a client keeps using a layout before it asks again, even when
/// no reply said it changed.
const LAYOUT_REFRESH: Duration = Duration::from_secs(30);

impl Client {
    /// The layout version the client routes with (0: none yet).
    pub fn layout_version(&self) -> u64 {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.version)
            .unwrap_or(0)
    }

    /// Fetches the layout from the first endpoint that answers.
    pub async fn refresh_layout(&self) -> Result<()> {
        *self
            .routing_fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let resp = self
            .with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| async move {
                AdminClient::new(ch).layout(pb::LayoutRequest {}).await
            })
            .await?;
        if resp.version == 0 || resp.partitions == 0 || !resp.partitions.is_power_of_two() {
            return Ok(());
        }
        let address: std::collections::HashMap<&str, &str> = resp
            .members
            .iter()
            .map(|m| (m.node_id.as_str(), m.address.as_str()))
            .collect();
        let mut replicas = vec![Vec::new(); resp.partitions as usize];
        // While a change is transferred, the previous layout's replicas
        // coordinate (they hold everything); route there.
        let assignments = if resp.previous_assignments.is_empty() {
            &resp.assignments
        } else {
            &resp.previous_assignments
        };
        for a in assignments {
            if let Some(slot) = replicas.get_mut(a.partition as usize) {
                *slot = a
                    .replicas
                    .iter()
                    .filter_map(|id| address.get(id.as_str()).map(|a| self.nodes.get(a)))
                    .collect();
            }
        }
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Routing {
            version: resp.version,
            partitions: resp.partitions,
            hash_seed: resp.hash_seed,
            replicas,
        }));
        self.routing_stale.store(false, Ordering::Relaxed);
        // The previous layout's nodes that are in neither this one nor the
        // endpoints close their connections.
        self.nodes.prune();
        Ok(())
    }

    /// Refreshes the layout when it is missing, stale or old; failures
    /// only mean requests go through the endpoints.
    pub(crate) async fn ensure_routing(&self) {
        if !self.routing_enabled {
            return;
        }
        let due = match *self
            .routing_fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            None => true,
            Some(at) => {
                at.elapsed() > LAYOUT_REFRESH
                    || (self.routing_stale.load(Ordering::Relaxed)
                        && at.elapsed() > Duration::from_millis(200))
            }
        };
        if due {
            let _ = self.refresh_layout().await;
        }
    }

    /// Notes the layout version a reply was routed with.
    pub(crate) fn saw_layout(&self, meta: &ReplyMeta) {
        if meta.layout_version > self.layout_version() {
            self.routing_stale.store(true, Ordering::Relaxed);
        }
    }

    /// Where a request for `key` may go (see [`Route::nodes`]): its
    /// replicas first when routing knows them, then the endpoints from a
    /// rotating start.
    pub(crate) fn route(&self, key: Option<&[u8]>) -> Route {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let (Some(key), true) = (key, self.routing_enabled) else {
            return Route {
                routing: None,
                partition: 0,
                start,
            };
        };
        let routing = self
            .routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let partition = routing.as_ref().map_or(0, |r| {
            partition_of_seeded(key, r.partitions, r.hash_seed) as usize
        });
        Route {
            routing,
            partition,
            start,
        }
    }
}
