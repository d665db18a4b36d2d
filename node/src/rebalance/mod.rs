//! Cluster changes: plans, commits, partition transfers and the retirement
//! of old replicas.
//!
//! # The life of a change
//!
//! 1. **Staging.** Joins, leaves and new weights are read off gossip, and
//!    removals of dead nodes are kept by the *claimant* (the lowest live
//!    layout member; see [`Cluster::claimant`]), which is where `plan`,
//!    `commit` and `remove` run, whichever node the operator asked.
//! 2. **Commit.** The claimant computes the next layout from the staged
//!    members and the current layout (so as little as possible moves) and
//!    publishes it with the current layout attached as `previous` (see
//!    `ring::layout::transition`). A commit names the layout version its
//!    plan was made against; a stale or concurrent commit, or one while a
//!    change is still transferring, is refused with FAILED_PRECONDITION, so
//!    no change is ever applied twice. With `cluster.auto_join`, the
//!    claimant commits by itself when the only staged changes are such
//!    joins, once the joiners have been seen for a few gossip rounds.
//! 3. **Transfers.** Once every member gossips that it holds the change,
//!    every node that gains a partition streams it from an old replica
//!    ([`transfer`]), throttled by `transfer.max_rate`, resumable after a
//!    restart of either side, then syncs it with every old replica
//!    (waiting for one that is down or paused), and reports through gossip
//!    when all of its partitions are in. Meanwhile reads and writes go to
//!    the old and the new replicas and need a quorum in each.
//! 4. **Retirement.** When every receiver reports done and every member
//!    holds the change, the claimant publishes the same rows without
//!    `previous`. Each node then hands
//!    over and deletes the partitions it no longer replicates, and a node
//!    that left and owns nothing declares itself `left`.
//!
//! [`safety`] states the rules that keep every step from losing an
//! acknowledged write: what a transfer waits for, when a node may delete,
//! and which changes are refused.
//!
//! A node refuses replica traffic for partitions it does not hold in its
//! own layout ([`Rebalance::check_held`]), so
//! a coordinator still routing with an older layout gets a retryable error
//! rather than an answer from a replica that has let go of the data.

mod changes;
// The stored list of staged removals, public for the fuzz targets.
pub use changes::{decode_ids, encode_ids};
pub use ringkv_core::plan;
mod receive;
pub mod safety;
#[cfg(test)]
mod tests;
mod throttle;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::{JoinError, JoinSet};
use tracing::warn;

use crate::config::Config;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::repair::Repair;
use crate::replica::Replica;
use crate::worker::{Step, Worker, WorkerHandle};
use ringkv_core::error::{Error, Result};
use ringkv_core::ring::Layout;
use ringkv_core::version::NodeId;

use plan::{Change, Move};
use throttle::Throttle;
use transfer::{Progress, Registry};

/// A plan: the layout the staged changes would publish and what it moves.
#[derive(Debug)]
pub struct PlanView {
    pub current: Arc<Layout>,
    pub changes: Vec<Change>,
    /// `None` when nothing is staged.
    pub next: Option<Layout>,
    /// Each copy with its estimated bytes.
    pub moves: Vec<(Move, u64)>,
    pub minimum_moves: usize,
    /// Why it cannot be committed now.
    pub blocked: Option<String>,
}

/// What a commit published.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub version: u64,
    pub moves: usize,
}

/// Cluster changes on this node: the claimant's duties, and the transfers
/// this node receives.
pub struct Rebalance {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    repair: Arc<Repair>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    registry: Registry,
    throttle: Mutex<Throttle>,
    /// Removals staged here (meaningful on the claimant).
    removed: Mutex<BTreeSet<NodeId>>,
    /// Serializes commits.
    commit_lock: tokio::sync::Mutex<()>,
    /// When the claimant first saw each auto-joiner.
    joiners_seen: Mutex<BTreeMap<NodeId, Instant>>,
    /// Layout version whose unowned partitions were deleted here.
    retired_version: AtomicU64,
    /// The partitions last reported kept for want of a hand-over, so the
    /// retry at every tick logs only changes.
    kept_note: Mutex<String>,
}

impl Rebalance {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        repair: Arc<Repair>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        let removed = changes::load_removed(replica.engine().as_ref())?;
        Ok(Arc::new(Self {
            throttle: Mutex::new(Throttle::new(config.transfer.bytes_per_second())),
            replica,
            cluster,
            repair,
            config,
            metrics,
            registry: Registry::default(),
            removed: Mutex::new(removed),
            commit_lock: tokio::sync::Mutex::new(()),
            joiners_seen: Mutex::new(BTreeMap::new()),
            retired_version: AtomicU64::new(0),
            kept_note: Mutex::new(String::new()),
        }))
    }

    fn me(&self) -> NodeId {
        self.cluster.me()
    }

    fn layout(&self) -> Result<Arc<Layout>> {
        self.cluster.layout().ok_or_else(|| {
            Error::FailedPrecondition(
                "the cluster has no layout yet (it is still forming); nothing can change".into(),
            )
        })
    }

    // ---- ownership --------------------------------------------------------

    /// Refuses replica writes and reads for a partition this node does not
    /// hold in its layout (it retired it, or has not learnt it gains it). A
    /// new replica still receiving the partition does answer reads: while
    /// the partition moves a read needs its quorum in the old set as well,
    /// which holds everything, so the partial copy only adds to the merge.
    pub fn check_held(&self, partition: u32) -> Result<()> {
        let Some(layout) = self.cluster.layout() else {
            return Ok(());
        };
        if layout.holds(self.me(), partition) {
            return Ok(());
        }
        Err(self.not_held(&layout, partition))
    }

    fn not_held(&self, layout: &Layout, partition: u32) -> Error {
        Error::FailedPrecondition(format!(
            "node {} does not serve partition {partition} in layout v{}; the layout is changing, retry",
            self.me(),
            layout.version()
        ))
    }

    // ---- the source side of a transfer --------------------------------------

    /// The next chunk of `partition` after `after` (answers
    /// `Internal.FetchPartition`): (key, stored bytes) pairs up to about
    /// `max_bytes`, whether the partition ends there, and an estimate of
    /// the partition's size.
    pub async fn serve_chunk(
        &self,
        partition: u32,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> Result<(Vec<(Bytes, Vec<u8>)>, bool, u64)> {
        let q = self.config.cluster.partitions;
        if partition >= q {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} out of range: the cluster has {q}"
            )));
        }
        let max_bytes = max_bytes.clamp(1024, self.config.limits.max_message_bytes() / 2);
        let max_item = self.config.limits.max_item_bytes();
        const PAGE: usize = 256;
        let mut entries = Vec::new();
        let mut size = 0;
        let mut cursor = after;
        let done = 'chunk: loop {
            let page = self
                .replica
                .scan_partition(partition, cursor.clone(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            for (key, value) in page {
                let entry = key.len() + value.len();
                if entry > max_item {
                    // Stored before the key state limit existed: it cannot
                    // travel in any message. Skipped and reported, so the
                    // rest of the partition still moves.
                    warn!(
                        partition,
                        bytes = entry,
                        "a key too large for one message is left out of a transfer"
                    );
                    cursor = Some(key);
                    continue;
                }
                // A large entry goes in a chunk of its own rather than on
                // top of a full one, so a chunk never passes the message
                // limit: at most half of it plus one state.
                if !entries.is_empty() && size + entry > max_bytes {
                    break 'chunk false;
                }
                size += entry;
                cursor = Some(key.clone());
                entries.push((key, value));
            }
            if size >= max_bytes {
                break false;
            }
            if !full {
                break true;
            }
        };
        Ok((entries, done, self.partition_estimate()))
    }

    /// This node's average bytes per partition replica it holds.
    fn partition_estimate(&self) -> u64 {
        let held = self
            .cluster
            .layout()
            .map(|l| {
                let mut held = l.partitions_of(self.me()).len();
                if let Some(prev) = l.previous() {
                    held = held.max(prev.partitions_of(self.me()).len());
                }
                held
            })
            .unwrap_or(1)
            .max(1);
        self.replica.engine().approximate_size_bytes() / held as u64
    }

    // ---- progress -------------------------------------------------------------

    /// The transfers this node receives, for the current layout.
    pub fn transfers(&self) -> Vec<Progress> {
        self.registry.list()
    }

    // ---- the worker -------------------------------------------------------------

    /// The "rebalance" worker on this node.
    pub fn worker(self: Arc<Self>, handle: Arc<WorkerHandle>) -> RebalanceWorker {
        let tick = Duration::from_millis((self.config.gossip.interval_ms / 2).clamp(50, 500));
        RebalanceWorker {
            rebalance: self,
            handle,
            tick,
            tasks: JoinSet::new(),
            running: BTreeSet::new(),
        }
    }

    async fn step(
        self: &Arc<Self>,
        tasks: &mut JoinSet<(u64, u32, Result<()>)>,
        running: &mut BTreeSet<(u64, u32)>,
    ) -> Result<()> {
        let Some(layout) = self.cluster.layout() else {
            return Ok(());
        };
        let version = layout.version();
        if running.iter().any(|(v, _)| *v != version) {
            // The layout moved on (the change finished, or was replaced):
            // what was still streaming belongs to an older change.
            tasks.abort_all();
            running.clear();
        }
        if layout.in_transition() {
            self.receive(&layout, tasks, running).await?;
        } else {
            self.retire(&layout).await?;
        }
        self.claimant_duties(&layout).await
    }
}

/// The "rebalance" worker: receives partitions, retires old ones and, on
/// the claimant, finishes changes and commits automatic joins, at every
/// tick (half a gossip interval, 50 to 500 ms) and whenever a transfer
/// ends. Dropping it (at shutdown) aborts the transfers in flight; they
/// resume from their cursors at the next start.
pub struct RebalanceWorker {
    rebalance: Arc<Rebalance>,
    handle: Arc<WorkerHandle>,
    tick: Duration,
    /// The transfers streaming now, each ending with its (layout version,
    /// partition, outcome).
    tasks: JoinSet<(u64, u32, Result<()>)>,
    /// (layout version, partition) of each transfer in `tasks`.
    running: BTreeSet<(u64, u32)>,
}

impl Worker for RebalanceWorker {
    async fn work(&mut self) -> Result<Step> {
        let stepped = self
            .rebalance
            .step(&mut self.tasks, &mut self.running)
            .await;
        self.handle
            .set("transfers_running", self.running.len() as u64);
        self.handle
            .set("bytes_received", self.rebalance.metrics.transfer_bytes());
        stepped.map(|()| Step::Idle)
    }

    /// Until the next tick, or until a transfer ends (a slot is free: the
    /// next transfer starts at once).
    async fn wait(&mut self) {
        tokio::select! {
            Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => self.ended(joined),
            _ = tokio::time::sleep(self.tick) => {}
        }
    }
}

impl RebalanceWorker {
    /// Counts a transfer that ended. A failed transfer is an error the
    /// worker survives: the next step starts it again from its cursor.
    fn ended(&mut self, joined: std::result::Result<(u64, u32, Result<()>), JoinError>) {
        let Ok((version, partition, result)) = joined else {
            return;
        };
        self.running.remove(&(version, partition));
        match result {
            Ok(()) => self.handle.add("transfers_done", 1),
            Err(e) => self.handle.error(format!(
                "transfer of partition {partition} (layout v{version}): {e}"
            )),
        }
    }
}
