//! The hint delivery worker.
//!
//! Every `handoff.interval_ms`: for each target this node holds hints for
//! and the failure detector sees alive, send its hints in batches of
//! `handoff.batch_size` (a few in flight at once), delete each one the
//! target acknowledged, and stop that target's round at its first failure.
//! Delivery is paced to `handoff.max_rate` hints per second over all
//! targets, so a node coming back is not flooded. Hints older than
//! `handoff.max_age_ms` are dropped instead of delivered.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::time::{Interval, MissedTickBehavior};

use super::{Hint, HintStore};
use crate::config::Config;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::worker::{Step, Worker, WorkerHandle};
use ringkv_common::wall_clock_ms;
use ringkv_core::version::NodeId;
use ringkv_peer::Failure;

/// Hints of one batch sent at once.
const IN_FLIGHT: usize = 16;

/// Everything the worker needs.
pub struct Delivery {
    pub store: Arc<HintStore>,
    pub cluster: Arc<Cluster>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

/// The "hint-delivery" worker: a delivery round every
/// `handoff.interval_ms` (the first at once).
pub struct DeliveryWorker {
    d: Delivery,
    handle: Arc<WorkerHandle>,
    /// A round that runs late delays the next tick rather than bunching
    /// ticks up.
    interval: Interval,
}

impl DeliveryWorker {
    pub fn new(d: Delivery, handle: Arc<WorkerHandle>) -> Self {
        let mut interval =
            tokio::time::interval(Duration::from_millis(d.config.handoff.interval_ms));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            d,
            handle,
            interval,
        }
    }
}

impl Worker for DeliveryWorker {
    /// One round over every target this node holds hints for; a target
    /// that fails is recorded and skipped, never failing the round.
    async fn work(&mut self) -> crate::Result<Step> {
        let (d, handle) = (&self.d, &self.handle);
        for (target, _) in d.store.queues() {
            if let Err(e) = deliver_to(d, target, handle).await {
                handle.error(format!("delivering hints to {target}: {e}"));
            }
        }
        let pending: u64 = d.store.queues().iter().map(|(_, q)| q.keys).sum();
        handle.set("pending", pending);
        Ok(Step::Idle)
    }

    async fn wait(&mut self) {
        self.interval.tick().await;
    }
}

impl Delivery {
    /// The last delivery round of a stopping node, after its workers
    /// stopped: every live target gets its hints now, within `limit`, so
    /// a rolling restart does not leave a replica behind until this node
    /// is back. What cannot be delivered (the target is down, or time ran
    /// out) stays on disk for the next start. Returns (delivered, left).
    pub async fn hand_over(&self, limit: Duration) -> (u64, u64) {
        let handle = WorkerHandle::new("hint-hand-over");
        let round = async {
            for (target, _) in self.store.queues() {
                if let Err(e) = deliver_to(self, target, &handle).await {
                    handle.error(format!("handing hints on to {target}: {e}"));
                }
            }
        };
        let _ = tokio::time::timeout(limit, round).await;
        let left = self.store.queues().iter().map(|(_, q)| q.keys).sum();
        (
            handle.counter("delivered") + handle.counter("readdressed"),
            left,
        )
    }
}

/// Delivers (or expires) one target's hints, batch after batch, until the
/// queue is empty or the target fails.
async fn deliver_to(d: &Delivery, target: NodeId, handle: &WorkerHandle) -> crate::Result<()> {
    let max_age = d.config.handoff.max_age_ms;
    let timeout = Duration::from_millis(d.config.handoff.replica_timeout_ms.max(1000));
    loop {
        let alive = d.cluster.is_alive(target);
        let batch = d.store.batch(target, d.config.handoff.batch_size).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let now = wall_clock_ms();
        let (expired, fresh): (Vec<Hint>, Vec<Hint>) = batch
            .into_iter()
            .partition(|h| now.saturating_sub(h.stored_at_ms) > max_age);
        for hint in &expired {
            if d.store.remove_if_unchanged(target, hint).await? {
                d.metrics.hints_dropped(1);
                handle.add("dropped", 1);
            }
        }
        // Hints for a node that no longer holds the key's partition (it left
        // or was removed) go to the partition's current replicas instead.
        let layout = d.cluster.layout();
        let (orphaned, fresh): (Vec<Hint>, Vec<Hint>) = fresh.into_iter().partition(|h| {
            layout.as_ref().is_some_and(|l| {
                !l.holds(
                    target,
                    ringkv_core::ring::partition_of(&h.key, l.partitions()),
                )
            })
        });
        if !orphaned.is_empty() {
            let count = orphaned.len();
            let mut moved = 0;
            for hint in orphaned {
                if readdress(d, &hint, timeout).await
                    && d.store.remove_if_unchanged(target, &hint).await?
                {
                    moved += 1;
                }
            }
            d.metrics.hints_delivered(moved);
            handle.add("readdressed", moved);
            if (moved as usize) < count {
                return Ok(());
            }
        }
        if !alive {
            return Ok(());
        }
        if fresh.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let count = fresh.len();
        let results: Vec<Sent> = stream::iter(fresh)
            .map(|hint| {
                async move {
                    let sent = d
                        .cluster
                        .peers()
                        .replicate(target, hint.key.clone(), hint.state.encode().into(), timeout)
                        .await;
                    match sent {
                        Ok(()) => match d.store.remove_if_unchanged(target, &hint).await {
                            Ok(_) => Sent::Delivered,
                            Err(_) => Sent::Failed,
                        },
                        // A hint too large for any message (kept before the
                        // key state limit existed) would be retried forever
                        // and hold back the hints behind it: it is dropped
                        // and reported; anti-entropy repairs the replica.
                        Err(e) if e.failure == Failure::TooLarge => {
                            tracing::warn!(%target, "dropping a hint too large to deliver: {}", e.message);
                            match d.store.remove_if_unchanged(target, &hint).await {
                                Ok(_) => Sent::Dropped,
                                Err(_) => Sent::Failed,
                            }
                        }
                        // The failure detector heard of an unreachable target.
                        Err(_) => Sent::Failed,
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let delivered = results.iter().filter(|r| **r == Sent::Delivered).count();
        let dropped = results.iter().filter(|r| **r == Sent::Dropped).count();
        d.metrics.hints_delivered(delivered as u64);
        handle.add("delivered", delivered as u64);
        d.metrics.hints_dropped(dropped as u64);
        handle.add("dropped", dropped as u64);
        let delivered = delivered + dropped;
        // Pace to max_rate hints per second.
        let budget = Duration::from_secs_f64(count as f64 / d.config.handoff.max_rate as f64);
        if let Some(rest) = budget.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        if delivered < count {
            return Ok(());
        }
    }
}

/// What became of one hint sent to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// The target stored it; the hint is gone.
    Delivered,
    /// It could never be sent; the hint is gone.
    Dropped,
    /// Kept for the next round.
    Failed,
}

/// Delivers a hint whose target no longer holds the key's partition to every
/// replica that holds it now; true when all of them stored it.
async fn readdress(d: &Delivery, hint: &Hint, timeout: Duration) -> bool {
    let Some(layout) = d.cluster.layout() else {
        return false;
    };
    let partition = ringkv_core::ring::partition_of(&hint.key, layout.partitions());
    let encoded = bytes::Bytes::from(hint.state.encode());
    for node in layout.request_replicas(partition) {
        let sent = d
            .cluster
            .peers()
            .replicate(node, hint.key.clone(), encoded.clone(), timeout)
            .await;
        if sent.is_err() {
            return false;
        }
    }
    true
}
