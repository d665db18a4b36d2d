//! The "gossip" worker: one gossip round every `gossip.interval_ms`
//! ([`Cluster::gossip_round`] is the round; the runner in `worker` owns the
//! loop and shutdown).

use std::sync::Arc;

use tokio::time::{Interval, MissedTickBehavior};

use super::detector::Liveness;
use super::Cluster;
use crate::worker::{Step, Worker, WorkerHandle};
use ringkv_core::error::Result;

/// Gossip rounds, with the member counts Admin shows.
pub struct GossipWorker {
    cluster: Arc<Cluster>,
    handle: Arc<WorkerHandle>,
    /// Ticks every `gossip.interval_ms`; the first tick is at once. A round
    /// that runs late delays the next tick rather than bunching ticks up.
    interval: Interval,
}

impl GossipWorker {
    pub fn new(cluster: Arc<Cluster>, handle: Arc<WorkerHandle>) -> Self {
        let mut interval = tokio::time::interval(cluster.config.gossip.interval());
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            cluster,
            handle,
            interval,
        }
    }
}

impl Worker for GossipWorker {
    async fn work(&mut self) -> Result<Step> {
        self.cluster.gossip_round().await;
        self.handle.add("rounds", 1);
        let members = self.cluster.members();
        let alive = members
            .iter()
            .filter(|m| m.liveness == Liveness::Alive)
            .count();
        self.handle.set("members", members.len() as u64);
        self.handle.set("alive", alive as u64);
        Ok(Step::Idle)
    }

    async fn wait(&mut self) {
        self.interval.tick().await;
    }
}
