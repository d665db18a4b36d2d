//! The receiving side of a change: streaming the partitions this node
//! gains, and deleting those it no longer replicates once the change ends
//! (see the modules `rebalance` and `transfer`).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::transfer::{self, Cursor, State};
use super::{safety, Rebalance};
use crate::membership::MemberView;
use ringkv_core::error::{Error, Result};
use ringkv_core::membership::detector::Liveness;
use ringkv_core::ring::Layout;
use ringkv_core::version::{NodeId, VersionSet};
use ringkv_storage::{Cf, WriteBatch};

/// Keys deleted per batch when letting go of a partition.
const RETIRE_BATCH: usize = 1024;

/// How often a sync checks that its peers are still believed alive. A
/// Merkle exchange gives a peer a minute or more to scan; a peer that
/// stops answering meanwhile (a paused process) is given up on as soon as
/// the failure detector says so, and waited for like any down replica.
const PEER_WATCH: Duration = Duration::from_millis(200);

impl Rebalance {
    /// What this node knows of `node`, for the rules of `safety`.
    pub(super) fn seen(&self, members: &[MemberView], node: NodeId) -> safety::Seen {
        let entry = members.iter().find(|m| m.info.id == node);
        safety::Seen {
            alive: self.cluster.is_alive(node),
            status: entry.map(|m| m.info.status),
            wiped: entry.is_some_and(|old| {
                members.iter().any(|m| {
                    m.info.id != node
                        && m.info.address == old.info.address
                        && m.liveness == Liveness::Alive
                })
            }),
            layout_version: entry.map_or(0, |m| m.info.layout_version),
        }
    }

    /// The members that have not yet shown they hold `layout` and are
    /// waited for (`safety`, rule 4).
    pub(super) fn unacknowledged(&self, layout: &Layout) -> Vec<NodeId> {
        let members = self.cluster.members();
        safety::unacknowledged(layout, |n| self.seen(&members, n))
    }

    /// Starts the transfers of `layout` this node still needs, and reports
    /// when all are done. Nothing starts before every member holds the
    /// layout (`safety`, rule 4).
    pub(super) async fn receive(
        self: &Arc<Self>,
        layout: &Arc<Layout>,
        tasks: &mut JoinSet<(u64, u32, Result<()>)>,
        running: &mut BTreeSet<(u64, u32)>,
    ) -> Result<()> {
        let version = layout.version();
        let incoming = layout.incoming(self.me());
        for (partition, sources) in &incoming {
            if self.registry.get(version, *partition).is_none() {
                let stored = self.load_cursor(version, *partition).await?;
                let estimate = self.estimate(sources);
                self.registry.update(version, *partition, |p| {
                    p.from = sources.first().copied();
                    p.estimated_bytes = estimate;
                    if let Some(c) = stored.filter(|c| c.done) {
                        p.bytes = c.bytes;
                        p.keys = c.keys;
                        p.state = State::Done;
                    }
                });
            }
        }
        let waiting = match running.is_empty() {
            true => self.unacknowledged(layout),
            false => Vec::new(),
        };
        let why = (!waiting.is_empty()).then(|| {
            format!(
                "waiting for {} to hold layout v{version}: until every member sends its writes to the new replicas too, a transfer could miss some",
                safety::listed(&waiting)
            )
        });
        let mut all_done = true;
        for (partition, sources) in incoming {
            if self
                .registry
                .get(version, partition)
                .is_some_and(|p| p.state == State::Done)
            {
                continue;
            }
            all_done = false;
            if let Some(why) = &why {
                self.registry
                    .update(version, partition, |p| p.last_error = why.clone());
                continue;
            }
            if running.contains(&(version, partition))
                || self.streaming(running) >= self.config.transfer.concurrency
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

    /// Running transfers that take one of the `transfer.concurrency`
    /// slots: those still streaming. One that has streamed and is syncing
    /// may wait a long time for an old replica that is down or paused, and
    /// must not hold back the partitions queued behind it.
    fn streaming(&self, running: &BTreeSet<(u64, u32)>) -> usize {
        running
            .iter()
            .filter(|(v, p)| {
                self.registry
                    .get(*v, *p)
                    .is_none_or(|t| t.state != State::Syncing)
            })
            .count()
    }

    pub(super) fn estimate(&self, sources: &[NodeId]) -> u64 {
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

    pub(super) async fn load_cursor(&self, version: u64, partition: u32) -> Result<Option<Cursor>> {
        let engine = self.replica.engine().clone();
        tokio::task::spawn_blocking(move || Cursor::load(engine.as_ref(), version, partition))
            .await?
    }

    pub(super) async fn store_cursor(
        &self,
        cursor: &Cursor,
        version: u64,
        partition: u32,
    ) -> Result<()> {
        let engine = self.replica.engine().clone();
        let cursor = cursor.clone();
        tokio::task::spawn_blocking(move || cursor.store(engine.as_ref(), version, partition))
            .await?
    }

    /// Streams one partition from the old replicas, resuming from the
    /// stored cursor, then syncs it with every live old replica.
    pub(super) async fn transfer(
        &self,
        version: u64,
        partition: u32,
        sources: Vec<NodeId>,
    ) -> Result<()> {
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
            let Some(source) = self.pick_source(&sources) else {
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
                .peers()
                .fetch_partition(
                    source,
                    partition,
                    cursor.after.clone(),
                    self.config
                        .transfer
                        .chunk_bytes
                        .min(self.config.limits.max_message_bytes() / 2),
                    timeout,
                )
                .await;
            let chunk = match fetched {
                Ok(chunk) => chunk,
                Err(e) => {
                    self.note(version, partition, &format!("fetching from {source}: {e}"));
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            let mut bytes = 0u64;
            // The cursor moves past every key of the chunk, skipped ones too.
            let chunk_last = chunk.entries.last().map(|(key, _)| key.clone());
            let mut entries = Vec::with_capacity(chunk.entries.len());
            for (key, versions) in chunk.entries {
                bytes += (key.len() + versions.len()) as u64;
                let set = VersionSet::decode(&versions).map_err(|err| {
                    Error::Corrupt(format!("partition {partition} from {source}: {err}"))
                })?;
                // A key whose clock is out of bounds is skipped (and counted
                // by the clock), never retried: it would stall the transfer.
                if let Err(err) = self.replica.check_incoming(&set) {
                    warn!(partition, %source, "skipping a transferred key: {err}");
                    continue;
                }
                entries.push((key, set));
            }
            let keys = entries.len() as u64;
            if let Some(last) = chunk_last {
                cursor.after = Some(last);
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
        self.sync_with_old_replicas(version, partition).await?;
        cursor.done = true;
        self.store_cursor(&cursor, version, partition).await?;
        self.registry.update(version, partition, |p| {
            p.state = State::Done;
            p.finished = Some(Instant::now());
            p.estimated_bytes = p.bytes;
            p.last_error.clear();
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

    /// The end of a transfer: a sync with every old replica of the
    /// partition that may hold acknowledged writes. One that is down or
    /// paused is waited for, never skipped; only removed nodes and wiped
    /// nodes' old ids are passed over (`safety::sync_plan`). Old replicas
    /// already synced are not asked again: every write acknowledged since
    /// the change began is on a quorum of the new set as well.
    async fn sync_with_old_replicas(&self, version: u64, partition: u32) -> Result<()> {
        let retry = Duration::from_millis(self.config.transfer.retry_ms);
        let mut synced: BTreeSet<NodeId> = BTreeSet::new();
        let mut warned = false;
        loop {
            self.check_current(version)?;
            let Some(layout) = self.cluster.layout() else {
                return Err(Error::FailedPrecondition("the layout is gone".into()));
            };
            let members = self.cluster.members();
            let plan = safety::sync_plan(&layout, partition, self.me(), |n| self.seen(&members, n));
            let mut failed = false;
            let unsynced: Vec<NodeId> = plan
                .sync
                .iter()
                .copied()
                .filter(|n| !synced.contains(n))
                .collect();
            for peer in unsynced {
                let peers = [peer];
                let sync = self.repair.sync_partition(partition, &peers);
                match self.while_alive(&peers, sync).await {
                    Ok(_) => {
                        synced.insert(peer);
                    }
                    Err(e) => {
                        self.note(
                            version,
                            partition,
                            &format!("syncing with old replica {peer}: {e}"),
                        );
                        failed = true;
                    }
                }
            }
            if !plan.wait.is_empty() {
                let why = format!(
                    "waiting for old replica {}: it is down or paused and may hold acknowledged writes no other replica has; the transfer ends once it answers",
                    safety::listed(&plan.wait)
                );
                // Shown by `ringkv cluster transfers`; logged once.
                if !warned {
                    warn!(partition, version, "transfer: {why}");
                    warned = true;
                }
                self.registry
                    .update(version, partition, |p| p.last_error = why);
            }
            if failed || !plan.wait.is_empty() {
                tokio::time::sleep(retry).await;
                continue;
            }
            if !plan.gone.is_empty() {
                info!(
                    partition,
                    version,
                    gone = ?plan.gone,
                    "not waiting for old replicas that were removed or lost their data"
                );
            }
            return Ok(());
        }
    }

    /// Runs `work` (a sync with `peers`) unless one of them stops being
    /// believed alive first; then fails, naming it. Abandoning a sync is
    /// safe at any point: everything it did was a merge.
    async fn while_alive<T>(
        &self,
        peers: &[NodeId],
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::pin!(work);
        let mut watch = tokio::time::interval(PEER_WATCH);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = watch.tick() => {
                    if let Some(down) = peers.iter().find(|p| !self.cluster.is_alive(**p)) {
                        return Err(Error::Internal(format!(
                            "{down} stopped answering during the sync; it is waited for"
                        )));
                    }
                }
            }
        }
    }

    pub(super) fn check_current(&self, version: u64) -> Result<()> {
        match self.cluster.layout() {
            Some(l) if l.version() == version => Ok(()),
            _ => Err(Error::FailedPrecondition(format!(
                "layout v{version} was replaced; its transfers stop"
            ))),
        }
    }

    /// The first old replica believed alive.
    pub(super) fn pick_source(&self, sources: &[NodeId]) -> Option<NodeId> {
        sources
            .iter()
            .copied()
            .find(|s| *s != self.me() && self.cluster.is_alive(*s))
    }

    pub(super) fn note(&self, version: u64, partition: u32, message: &str) {
        warn!(partition, version, "transfer: {message}");
        self.registry
            .update(version, partition, |p| p.last_error = message.to_string());
    }

    /// Deletes the partitions this node no longer replicates under the
    /// settled `layout`, each only after handing it over: a sync with every
    /// replica the layout names for it, so each of them holds everything
    /// this node holds (`safety`, rule 2). A partition whose replicas are
    /// not all reachable is kept and tried again at the next tick; the
    /// layout is marked retired here only once nothing is kept. Also drops
    /// the cursors of finished changes.
    pub(super) async fn retire(&self, layout: &Layout) -> Result<()> {
        let version = layout.version();
        if self.retired_version.load(Ordering::SeqCst) == version {
            return Ok(());
        }
        let me = self.me();
        let mut deleted = 0;
        let mut kept: Vec<String> = Vec::new();
        for partition in 0..layout.partitions() {
            if layout.replicas(partition).contains(&me) {
                continue;
            }
            if self
                .replica
                .scan_partition(partition, None, 1)
                .await?
                .is_empty()
            {
                continue;
            }
            let targets = safety::hand_over_targets(layout, partition, me);
            if let Some(down) = targets.iter().find(|n| !self.cluster.is_alive(**n)) {
                kept.push(format!("{partition} (replica {down} is down)"));
                continue;
            }
            self.check_current(version)?;
            let sync = self.repair.sync_partition(partition, &targets);
            if let Err(e) = self.while_alive(&targets, sync).await {
                kept.push(format!("{partition} ({e})"));
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
                "handed over and deleted the partitions this node no longer replicates"
            );
        }
        self.note_kept(version, &kept);
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
        if kept.is_empty() {
            self.retired_version.store(version, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Logs the partitions kept for want of a hand-over, when that list
    /// changes (retirement is retried every tick).
    fn note_kept(&self, version: u64, kept: &[String]) {
        let now = kept.join(", ");
        let mut last = self.kept_note.lock().unwrap_or_else(|p| p.into_inner());
        if *last != now {
            if !kept.is_empty() {
                warn!(
                    version,
                    "keeping partitions this node no longer replicates until every new replica has synced them: {now}"
                );
            }
            *last = now;
        }
    }
}
