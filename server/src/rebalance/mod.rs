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
//! 3. **Transfers.** Every node that gains a partition streams it from an
//!    old replica ([`transfer`]), throttled by `transfer.max_rate`,
//!    resumable after a restart of either side, and reports through gossip
//!    when all of its partitions are in. Meanwhile writes go to the old and
//!    the new replicas (a quorum in each) and reads to the old ones.
//! 4. **Retirement.** When every receiver reports done, the claimant
//!    publishes the same rows without `previous`. Each node then deletes
//!    the partitions it no longer replicates, and a node that left and owns
//!    nothing declares itself `left`.
//!
//! A node refuses replica traffic for partitions it does not hold in its
//! own layout ([`Rebalance::check_write`], [`Rebalance::check_read`]), so
//! a coordinator still routing with an older layout gets a retryable error
//! rather than an answer from a replica that has let go of the data.

pub mod plan;
mod throttle;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::membership::detector::Liveness;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::repair::Repair;
use crate::replica::Replica;
use crate::ring::Layout;
use crate::server::Shutdown;
use crate::storage::{Cf, WriteBatch};
use crate::transport::is_unreachable;
use crate::version::{NodeId, VersionSet};
use crate::worker::{WorkerHandle, WorkerState};

use plan::{Candidate, Change, Move, Staged};
use throttle::Throttle;
use transfer::{Cursor, Progress, Registry, State};

/// `meta` key of the removals staged at the claimant (node ids, 8 bytes
/// big-endian each).
const REMOVED_KEY: &[u8] = b"removed";

/// Keys deleted per batch when letting go of a partition.
const RETIRE_BATCH: usize = 1024;

/// Gossip rounds a joiner must have been seen before an automatic commit,
/// so that nodes started together join in one change.
const AUTO_JOIN_SETTLE_ROUNDS: u32 = 3;

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
}

impl Rebalance {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        repair: Arc<Repair>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        let removed = match replica.engine().get(Cf::Meta, REMOVED_KEY)? {
            None => BTreeSet::new(),
            Some(bytes) => decode_ids(&bytes)?,
        };
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

    /// Refuses replica writes for a partition this node does not hold in
    /// its layout (it retired it, or has not learnt it gains it).
    pub fn check_write(&self, partition: u32) -> Result<()> {
        let Some(layout) = self.cluster.layout() else {
            return Ok(());
        };
        if layout.holds(self.me(), partition) {
            return Ok(());
        }
        Err(self.not_held(&layout, partition))
    }

    /// Refuses replica reads unless this node is a read replica of the
    /// partition, or a new replica whose transfer of it is done.
    pub fn check_read(&self, partition: u32) -> Result<()> {
        let Some(layout) = self.cluster.layout() else {
            return Ok(());
        };
        let me = self.me();
        if layout.read_replicas(partition).contains(&me) {
            return Ok(());
        }
        if layout.replicas(partition).contains(&me)
            && self
                .registry
                .get(layout.version(), partition)
                .is_some_and(|p| p.state == State::Done)
        {
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
        const PAGE: usize = 256;
        let mut entries = Vec::new();
        let mut size = 0;
        let mut cursor = after;
        let done = loop {
            let page = self
                .replica
                .scan_partition(partition, cursor.clone(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            for (key, value) in page {
                size += key.len() + value.len();
                cursor = Some(key.clone());
                entries.push((key, value));
                if size >= max_bytes {
                    break;
                }
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

    // ---- staging, plan, commit -------------------------------------------

    /// Stages the removal of a dead member (runs on the claimant).
    pub fn remove(&self, node: NodeId) -> Result<String> {
        let layout = self.layout()?;
        if !layout.contains(node) {
            return Err(Error::FailedPrecondition(format!(
                "{node} is not a member of layout v{}; `ringkv cluster layout` lists the members",
                layout.version()
            )));
        }
        if node == self.me() {
            return Err(Error::FailedPrecondition(
                "a node cannot remove itself; use `ringkv cluster leave` to drain it".into(),
            ));
        }
        if self.cluster.liveness(node) != Liveness::Dead {
            return Err(Error::FailedPrecondition(format!(
                "{node} is not dead as seen from the claimant {}; drain a running node with `ringkv cluster leave {node}`, or stop it and wait until it shows dead",
                self.me()
            )));
        }
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        removed.insert(node);
        self.store_removed(&removed)?;
        Ok(format!(
            "removal of {node} staged; run `ringkv cluster plan`, then `ringkv cluster commit`"
        ))
    }

    fn store_removed(&self, removed: &BTreeSet<NodeId>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, REMOVED_KEY, encode_ids(removed));
        self.replica.engine().write(batch)
    }

    /// The changes staged against `layout`.
    fn staged(&self, layout: &Layout) -> Staged {
        let candidates: Vec<Candidate> = self
            .cluster
            .members()
            .into_iter()
            .map(|m| Candidate {
                id: m.info.id,
                name: m.info.name,
                address: m.info.address,
                zone: m.info.zone,
                weight: m.info.weight,
                status: m.info.status,
                join: m.info.join,
                alive: m.liveness == Liveness::Alive,
            })
            .collect();
        let removed = self
            .removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        plan::stage(layout, &candidates, &removed)
    }

    /// What a commit now would publish (answers `Admin.Plan`).
    pub fn plan(&self) -> Result<PlanView> {
        let current = self.layout()?;
        let staged = self.staged(&current);
        let blocked = self.blocked(&current);
        let next = if staged.changes.is_empty() || current.in_transition() {
            None
        } else {
            Some(self.compute(&staged, &current)?)
        };
        let (moves, minimum_moves) = match &next {
            None => (Vec::new(), 0),
            Some(next) => {
                let estimates = self.partition_sizes(&current);
                let moves = plan::moves(&current, next, |n| self.cluster.is_alive(n))
                    .into_iter()
                    .map(|m| {
                        let bytes = estimates.get(&m.from).copied().unwrap_or(0);
                        (m, bytes)
                    })
                    .collect();
                (moves, next.minimum_moves_from(&current))
            }
        };
        let blocked = blocked.or_else(|| {
            staged
                .changes
                .is_empty()
                .then(|| "nothing is staged".to_string())
        });
        Ok(PlanView {
            current,
            changes: staged.changes,
            next,
            moves,
            minimum_moves,
            blocked,
        })
    }

    fn compute(&self, staged: &Staged, current: &Layout) -> Result<Layout> {
        if staged.members.is_empty() {
            return Err(Error::FailedPrecondition(
                "the staged changes would leave no member; keep at least one node".into(),
            ));
        }
        Layout::compute(
            &staged.members,
            self.config.cluster.replication,
            self.config.cluster.partitions,
            Some(current),
        )
    }

    /// Why no change can be committed now, if so.
    fn blocked(&self, layout: &Layout) -> Option<String> {
        if !layout.in_transition() {
            return None;
        }
        let receivers = layout.receivers();
        let done = self.receivers_done(layout);
        Some(format!(
            "layout v{} is still being transferred ({done} of {} receiving nodes done); watch `ringkv cluster transfers`, then plan again",
            layout.version(),
            receivers.len()
        ))
    }

    fn receivers_done(&self, layout: &Layout) -> usize {
        let members = self.cluster.members();
        layout
            .receivers()
            .iter()
            .filter(|r| {
                members
                    .iter()
                    .any(|m| m.info.id == **r && m.info.transfers_done >= layout.version())
            })
            .count()
    }

    /// Average bytes per partition replica of each member, from the sizes
    /// they gossip.
    fn partition_sizes(&self, layout: &Layout) -> BTreeMap<NodeId, u64> {
        let counts = layout.replica_counts();
        self.cluster
            .members()
            .into_iter()
            .map(|m| {
                let held = counts.get(&m.info.id).copied().unwrap_or(0).max(1) as u64;
                (m.info.id, m.info.storage_bytes / held)
            })
            .collect()
    }

    /// Publishes the staged changes (answers `Admin.Commit` on the
    /// claimant). `expected` is the layout version the plan was made
    /// against.
    pub async fn commit(&self, expected: u64) -> Result<Committed> {
        let _serial = self.commit_lock.lock().await;
        let current = self.layout()?;
        if self.cluster.claimant() != Some(self.me()) {
            return Err(Error::FailedPrecondition(format!(
                "node {} is not the claimant; send the commit to {}",
                self.me(),
                self.cluster
                    .claimant()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "the lowest live member".into())
            )));
        }
        if let Some(why) = self.blocked(&current) {
            return Err(Error::FailedPrecondition(why));
        }
        if current.version() != expected {
            return Err(Error::FailedPrecondition(format!(
                "stale plan: it was made against layout v{expected}, the cluster is at v{}; run `ringkv cluster plan` again",
                current.version()
            )));
        }
        let staged = self.staged(&current);
        if staged.changes.is_empty() {
            return Err(Error::FailedPrecondition(
                "nothing is staged: start a node with seeds (or `ringkv cluster join`), `leave`, `remove`, or change a weight first".into(),
            ));
        }
        let next = self.compute(&staged, &current)?;
        let moves = next.moves_from(&current);
        let next = if moves == 0 {
            next
        } else {
            next.with_previous(&current)?
        };
        let version = next.version();
        for change in &staged.changes {
            info!(%change, version, "committing");
        }
        self.cluster.install_layout(next)?;
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        for change in &staged.changes {
            if let Change::Remove(node) = change {
                removed.remove(node);
            }
        }
        self.store_removed(&removed)?;
        info!(version, moves, "layout committed");
        Ok(Committed { version, moves })
    }

    // ---- progress -------------------------------------------------------------

    /// The transfers this node receives, for the current layout.
    pub fn transfers(&self) -> Vec<Progress> {
        self.registry.list()
    }

    // ---- the worker -------------------------------------------------------------

    /// Receives partitions, retires old ones and, on the claimant, finishes
    /// changes and commits automatic joins; until shutdown.
    pub async fn run(self: Arc<Self>, handle: Arc<WorkerHandle>, mut shutdown: Shutdown) {
        let tick = Duration::from_millis((self.config.gossip.interval_ms / 2).clamp(50, 500));
        let mut tasks: JoinSet<(u64, u32, Result<()>)> = JoinSet::new();
        let mut running: BTreeSet<(u64, u32)> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    tasks.abort_all();
                    return;
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((version, partition, result)) = joined {
                        running.remove(&(version, partition));
                        match result {
                            Ok(()) => handle.add("transfers_done", 1),
                            Err(e) => handle.error(format!("transfer of partition {partition} (layout v{version}): {e}")),
                        }
                    }
                    // A slot is free: start the next transfer at once.
                }
                _ = tokio::time::sleep(tick) => {}
            }
            handle.set_state(WorkerState::Active);
            if let Err(e) = self.step(&mut tasks, &mut running).await {
                handle.error(e.to_string());
            }
            handle.set("transfers_running", running.len() as u64);
            handle.set("bytes_received", self.metrics.transfer_bytes());
            handle.set_state(WorkerState::Idle);
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

    /// Starts the transfers of `layout` this node still needs, and reports
    /// when all are done.
    async fn receive(
        self: &Arc<Self>,
        layout: &Arc<Layout>,
        tasks: &mut JoinSet<(u64, u32, Result<()>)>,
        running: &mut BTreeSet<(u64, u32)>,
    ) -> Result<()> {
        let version = layout.version();
        let mut all_done = true;
        for (partition, sources) in layout.incoming(self.me()) {
            if self.registry.get(version, partition).is_none() {
                let stored = self.load_cursor(version, partition).await?;
                let estimate = self.estimate(&sources);
                self.registry.update(version, partition, |p| {
                    p.from = sources.first().copied();
                    p.estimated_bytes = estimate;
                    if let Some(c) = stored.filter(|c| c.done) {
                        p.bytes = c.bytes;
                        p.keys = c.keys;
                        p.state = State::Done;
                    }
                });
            }
            if self
                .registry
                .get(version, partition)
                .is_some_and(|p| p.state == State::Done)
            {
                continue;
            }
            all_done = false;
            if running.contains(&(version, partition))
                || running.len() >= self.config.transfer.concurrency
            {
                continue;
            }
            running.insert((version, partition));
            let this = self.clone();
            tasks.spawn(async move {
                let result = this.transfer(version, partition, sources).await;
                (version, partition, result)
            });
        }
        if all_done {
            self.cluster.set_transfers_done(version);
        }
        Ok(())
    }

    fn estimate(&self, sources: &[NodeId]) -> u64 {
        let Some(layout) = self.cluster.layout() else {
            return 0;
        };
        let sizes = self.partition_sizes(layout.previous().unwrap_or(&layout));
        sources
            .iter()
            .filter_map(|s| sizes.get(s).copied())
            .max()
            .unwrap_or(0)
    }

    async fn load_cursor(&self, version: u64, partition: u32) -> Result<Option<Cursor>> {
        let engine = self.replica.engine().clone();
        tokio::task::spawn_blocking(move || Cursor::load(engine.as_ref(), version, partition))
            .await?
    }

    async fn store_cursor(&self, cursor: &Cursor, version: u64, partition: u32) -> Result<()> {
        let engine = self.replica.engine().clone();
        let cursor = cursor.clone();
        tokio::task::spawn_blocking(move || cursor.store(engine.as_ref(), version, partition))
            .await?
    }

    /// Streams one partition from the old replicas, resuming from the
    /// stored cursor, then syncs it with every live old replica.
    async fn transfer(&self, version: u64, partition: u32, sources: Vec<NodeId>) -> Result<()> {
        let mut cursor = self
            .load_cursor(version, partition)
            .await?
            .unwrap_or_default();
        let started = Instant::now();
        self.registry.update(version, partition, |p| {
            p.state = State::Streaming;
            p.bytes = cursor.bytes;
            p.keys = cursor.keys;
            p.resumed_from_bytes = cursor.bytes;
            p.started = Some(started);
            p.finished = None;
        });
        if cursor.bytes > 0 {
            info!(
                partition,
                version,
                bytes = cursor.bytes,
                keys = cursor.keys,
                "resuming partition transfer"
            );
        }
        let retry = Duration::from_millis(self.config.transfer.retry_ms);
        let timeout = self
            .config
            .limits
            .request_timeout()
            .max(Duration::from_secs(10));
        while !cursor.streamed {
            self.check_current(version)?;
            let Some((source, address)) = self.pick_source(&sources) else {
                self.note(
                    version,
                    partition,
                    "no old replica of the partition is alive; waiting",
                );
                tokio::time::sleep(retry).await;
                continue;
            };
            let fetched = self
                .cluster
                .transport
                .fetch_partition(
                    source,
                    &address,
                    partition,
                    cursor.after.clone(),
                    self.config.transfer.chunk_bytes,
                    timeout,
                )
                .await;
            let chunk = match fetched {
                Ok(chunk) => chunk,
                Err(status) => {
                    if is_unreachable(&status) {
                        self.cluster.rpc_failed(source);
                    }
                    self.note(
                        version,
                        partition,
                        &format!("fetching from {source}: {}", status.message()),
                    );
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            let mut bytes = 0u64;
            let mut entries = Vec::with_capacity(chunk.entries.len());
            for e in chunk.entries {
                bytes += (e.key.len() + e.version_set.len()) as u64;
                let set = VersionSet::decode(&e.version_set).map_err(|err| {
                    Error::Corrupt(format!("partition {partition} from {source}: {err}"))
                })?;
                entries.push((e.key, set));
            }
            let keys = entries.len() as u64;
            if let Some((last, _)) = entries.last() {
                cursor.after = Some(last.clone());
            }
            self.replica.merge_many(entries).await?;
            cursor.bytes += bytes;
            cursor.keys += keys;
            cursor.streamed = chunk.done;
            self.store_cursor(&cursor, version, partition).await?;
            self.metrics.transferred(bytes, keys);
            self.registry.update(version, partition, |p| {
                p.from = Some(source);
                p.bytes = cursor.bytes;
                p.keys = cursor.keys;
                p.estimated_bytes = chunk.estimated_bytes.max(cursor.bytes);
                p.last_error.clear();
            });
            let wait = self
                .throttle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .book(bytes, tokio::time::Instant::now());
            tokio::time::sleep(wait).await;
        }
        self.registry
            .update(version, partition, |p| p.state = State::Syncing);
        loop {
            self.check_current(version)?;
            match self.repair.sync_partition(partition, &sources).await {
                Ok(_) => break,
                Err(e) => {
                    self.note(
                        version,
                        partition,
                        &format!("syncing with old replicas: {e}"),
                    );
                    tokio::time::sleep(retry).await;
                }
            }
        }
        cursor.done = true;
        self.store_cursor(&cursor, version, partition).await?;
        self.registry.update(version, partition, |p| {
            p.state = State::Done;
            p.finished = Some(Instant::now());
            p.estimated_bytes = p.bytes;
        });
        info!(
            partition,
            version,
            bytes = cursor.bytes,
            keys = cursor.keys,
            "partition transfer done"
        );
        Ok(())
    }

    fn check_current(&self, version: u64) -> Result<()> {
        match self.cluster.layout() {
            Some(l) if l.version() == version => Ok(()),
            _ => Err(Error::FailedPrecondition(format!(
                "layout v{version} was replaced; its transfers stop"
            ))),
        }
    }

    /// The first old replica believed alive, with its address.
    fn pick_source(&self, sources: &[NodeId]) -> Option<(NodeId, String)> {
        sources
            .iter()
            .filter(|s| **s != self.me() && self.cluster.is_alive(**s))
            .find_map(|s| self.cluster.address_of(*s).map(|a| (*s, a)))
    }

    fn note(&self, version: u64, partition: u32, message: &str) {
        warn!(partition, version, "transfer: {message}");
        self.registry
            .update(version, partition, |p| p.last_error = message.to_string());
    }

    /// Deletes the partitions this node no longer replicates (once per
    /// settled layout), and the cursors of finished changes.
    async fn retire(&self, layout: &Layout) -> Result<()> {
        let version = layout.version();
        if self.retired_version.load(Ordering::SeqCst) == version {
            return Ok(());
        }
        let me = self.me();
        let mut deleted = 0;
        for partition in 0..layout.partitions() {
            if layout.replicas(partition).contains(&me) {
                continue;
            }
            loop {
                self.check_current(version)?;
                let n = self
                    .replica
                    .delete_partition_chunk(partition, RETIRE_BATCH)
                    .await?;
                deleted += n;
                if n == 0 {
                    break;
                }
            }
        }
        if deleted > 0 {
            info!(
                version,
                keys = deleted,
                "deleted the partitions this node no longer replicates"
            );
        }
        let engine = self.replica.engine().clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut end = transfer::CURSOR_PREFIX.to_vec();
            end.extend_from_slice(&version.to_be_bytes());
            let old = engine.scan(Cf::Meta, transfer::CURSOR_PREFIX, Some(&end), 1_000_000)?;
            if !old.is_empty() {
                let mut batch = WriteBatch::new();
                for (key, _) in old {
                    batch.delete(Cf::Meta, key);
                }
                engine.write(batch)?;
            }
            Ok(())
        })
        .await??;
        self.registry.retain_from(version);
        self.retired_version.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// On the claimant: ends a change whose transfers are all done, or
    /// commits automatic joins.
    async fn claimant_duties(&self, layout: &Arc<Layout>) -> Result<()> {
        if self.cluster.claimant() != Some(self.me()) {
            self.joiners_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            return Ok(());
        }
        if layout.in_transition() {
            if self.receivers_done(layout) == layout.receivers().len() {
                let next = layout.retired()?;
                info!(
                    version = next.version(),
                    "every transfer of layout v{} is done; retiring the old replicas",
                    layout.version()
                );
                self.cluster.install_layout(next)?;
            }
            return Ok(());
        }
        let staged = self.staged(layout);
        let joiners: Vec<NodeId> = staged.changes.iter().map(Change::node).collect();
        if !self.settled(staged.only_auto_joins(), &joiners) {
            return Ok(());
        }
        match self.commit(layout.version()).await {
            Ok(c) => info!(
                version = c.version,
                moves = c.moves,
                joiners = joiners.len(),
                "auto_join: committed the nodes that asked to join"
            ),
            // Another commit got there first; the next tick sees its layout.
            Err(Error::FailedPrecondition(why)) => info!("auto_join commit skipped: {why}"),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl Rebalance {
    /// Whether the automatic joiners have all been seen long enough to
    /// commit them together; forgets them when there are none.
    fn settled(&self, only_auto_joins: bool, joiners: &[NodeId]) -> bool {
        let mut seen = self.joiners_seen.lock().unwrap_or_else(|p| p.into_inner());
        if !only_auto_joins {
            seen.clear();
            return false;
        }
        let now = Instant::now();
        let settle =
            Duration::from_millis(self.config.gossip.interval_ms) * AUTO_JOIN_SETTLE_ROUNDS;
        seen.retain(|id, _| joiners.contains(id));
        for id in joiners {
            seen.entry(*id).or_insert(now);
        }
        seen.values().all(|t| now.duration_since(*t) >= settle)
    }
}

fn encode_ids(ids: &BTreeSet<NodeId>) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0.to_be_bytes()).collect()
}

fn decode_ids(bytes: &[u8]) -> Result<BTreeSet<NodeId>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::Corrupt(format!(
            "staged removals: {} bytes is not a list of node ids",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            NodeId(u64::from_be_bytes(b))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_removals_round_trip() {
        let ids: BTreeSet<NodeId> = [NodeId(1), NodeId(u64::MAX), NodeId(42)].into();
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert!(decode_ids(&[1, 2, 3]).is_err());
        assert!(decode_ids(&[]).unwrap().is_empty());
    }
}
