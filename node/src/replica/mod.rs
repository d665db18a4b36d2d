//! The local half of every request: applying and reading one key's versions
//! on this node.
//!
//! A replica owns nothing but its storage engine. Each change is an atomic
//! read-merge-write of one key: the stored [`VersionSet`] is read and
//! decoded, the write or the incoming versions are merged in, and the result
//! is written back, all under the node's one storage [`writer`]'s turn: by
//! its thread, which applies changes in the order they were queued, or
//! (under `sync = periodic`, when the thread is idle) by the request
//! itself. Two writers of the same key therefore never lose each other's
//! versions, and everything queued together goes to storage in one batch.
//!
//! **Bounded key state.** Every state a replica stores fits within
//! `limits.max_key_state_bytes` (encoded), and so within one internal
//! message. Where the new state is computed, the limit is applied:
//!
//! * a write ([`Replica::apply_write`]) that would leave the key larger is
//!   refused with [`Error::KeyStateTooLarge`] before anything is stored or
//!   acknowledged. A write whose context covers the siblings (or a blind
//!   write) replaces them, so it always fits: that is how a client resolves
//!   a full key. The client's context is pruned first: entries naming a
//!   node that is neither in the key's vector nor a known member are
//!   dropped, so fabricated node ids never reach the stored vector, which
//!   therefore holds only nodes of the cluster;
//! * a merge ([`Replica::merge_group`]: replication, read repair, hints,
//!   anti-entropy, transfers) that would pass it collapses the oldest
//!   siblings by HLC, the rule of the sibling cap
//!   ([`VersionSet::fit_within`]); this can only happen when two
//!   coordinators each accepted a large sibling concurrently. A merge that
//!   still does not fit (only a state stored before the limit existed) is
//!   refused for that key alone.
//!
//! **Injected bug.** With `debug.inject_bug = merge_collapses_siblings`
//! (tests of the verification harness only), every merge here keeps just
//! the newest sibling by HLC and still covers every dot it saw, so the
//! concurrent writes it drops are lost for good on every replica that
//! merges this state ([`Replica::with_injected_bug`]).
//!
//! Every change of a key's stored versions (write, merge, tombstone purge)
//! is a job for the node's one storage [`writer`], whose thread applies
//! everything queued as one group and stores it in one batch; a request
//! that finds it idle may apply its own job in its place. Only the holder
//! of the writer's turn doing read-merge-write is what makes each change
//! atomic per key.
//! Reads that memory answers (memtables, block cache) run where they are
//! asked; reads that need the disk, and scans, run on tokio's blocking pool,
//! so the async runtime never stalls behind the disk.

pub mod clock;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::InjectBug;
use crate::metrics::RegisteredCounter;
use ringkv_core::error::{Error, Result};
use ringkv_core::ring;
use ringkv_core::version::{NodeId, Value, VersionSet, VersionVector, WriteOutcome};
use ringkv_storage::{data_key, partition_range, split_data_key, Cf, Engine, WriteBatch};

use clock::NodeClock;
use writer::{Job, Rules, Work, Writer};

pub use crate::config::DEFAULT_MAX_CLOCK_OFFSET_MS;

/// The only clock read of the write path, fed into the pure
/// [`HybridClock`](ringkv_core::version::HybridClock); shared, so lower layers
/// import it from `ringkv-common` rather than from here.
pub use ringkv_common::wall_clock_ms;

/// A write to apply as coordinator.
#[derive(Debug, Clone)]
pub struct LocalWrite {
    pub key: Bytes,
    /// The client's context; `None` is a blind overwrite.
    pub context: Option<VersionVector>,
    pub value: Value,
    /// Unix ms after which the value expires.
    pub expires_at_ms: Option<u64>,
    /// The cluster's members as this node knows them (those that left
    /// included). A context entry naming neither one of them nor a node
    /// already in the key's vector is dropped before the write: no such
    /// node ever wrote a version of the key, so the entry covers nothing
    /// real, and keeping it would let clients grow the stored vector
    /// without bound.
    pub members: Vec<NodeId>,
}

/// What applying a write produced.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The key's whole version set after the write (sent to the other replicas).
    pub state: VersionSet,
    pub outcome: WriteOutcome,
}

/// What merging incoming versions produced.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The key's version set after the merge.
    pub state: VersionSet,
    /// Whether the stored state changed (the replica was behind).
    pub changed: bool,
    /// Versions dropped by the sibling cap or by the key state limit.
    pub collapsed: usize,
}

/// The key state limit of a node that was given none: the configured
/// default.
fn default_max_state_bytes() -> usize {
    crate::config::LimitsConfig::default().max_key_state_bytes
}

/// This node's storage of keys, with per-key atomic updates.
pub struct Replica {
    engine: Arc<dyn Engine>,
    /// Q, to compute each key's partition prefix.
    partitions: u32,
    /// What every write and merge applies (node id, clock, sibling cap, key
    /// state limit); handed to the writer with each job.
    rules: Arc<Rules>,
    /// The one thread that changes stored keys.
    writer: Writer,
    /// Lookups that memory could not answer and that went to the blocking
    /// pool to wait on the disk.
    disk_reads: Arc<AtomicU64>,
}

impl Replica {
    /// Fails only when the writer thread cannot be started.
    pub fn new(
        node_id: NodeId,
        engine: Arc<dyn Engine>,
        partitions: u32,
        max_siblings: usize,
    ) -> Result<Self> {
        Ok(Self {
            rules: Arc::new(Rules {
                node: node_id,
                // No start margin: a replica built without a server (tests,
                // tools) has no earlier run whose timestamps it could repeat.
                clock: Arc::new(NodeClock::new(
                    engine.clone(),
                    DEFAULT_MAX_CLOCK_OFFSET_MS,
                    wall_clock_ms(),
                    0,
                )),
                max_siblings,
                max_state_bytes: default_max_state_bytes(),
                dot_conflicts: Arc::new(AtomicU64::new(0)),
                collapse_siblings: false,
            }),
            writer: Writer::start(engine.clone())?,
            engine,
            partitions,
            disk_reads: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Sets `debug.inject_bug`. With `merge_collapses_siblings`, every
    /// merge ([`Self::merge_group`], so replication, read repair, hints,
    /// anti-entropy and transfers) collapses the merged state to its newest
    /// sibling, as a sibling cap of one would, without counting it: the
    /// lost-update bug of last-writer-wins stores, for tests of the
    /// verification harness. Local writes are untouched.
    pub fn with_injected_bug(mut self, bug: InjectBug) -> Self {
        Arc::make_mut(&mut self.rules).collapse_siblings = bug == InjectBug::MergeCollapsesSiblings;
        self
    }

    /// Sets `clock.max_offset_ms`: how far ahead of this node's wall clock
    /// a timestamp from a peer or a client may be. Also the start margin:
    /// this run issues no timestamp until that long after now, so none can
    /// repeat one of an earlier run of this node id (see [`clock`]).
    pub fn with_max_clock_offset(mut self, max_offset_ms: u64) -> Self {
        Arc::make_mut(&mut self.rules).clock = Arc::new(NodeClock::new(
            self.engine.clone(),
            max_offset_ms,
            wall_clock_ms(),
            max_offset_ms,
        ));
        self
    }

    /// The node's clock: for checking what peers and clients send.
    pub fn clock(&self) -> &NodeClock {
        &self.rules.clock
    }

    /// Refuses a version set from a peer that a replica must not merge:
    /// timestamps or counters beyond `clock.max_offset_ms` ahead of this
    /// node's clock. Every path that merges a peer's versions checks this
    /// first, item by item, so one bad item fails alone.
    pub fn check_incoming(&self, set: &VersionSet) -> Result<()> {
        self.rules.clock.check(set, wall_clock_ms())
    }

    /// Dots found held by two states with different contents so far.
    pub fn dot_conflicts(&self) -> u64 {
        self.rules.dot_conflicts.load(Ordering::Relaxed)
    }

    /// The replica's safety counters, for the metrics endpoint.
    pub fn counters(&self) -> Vec<RegisteredCounter> {
        vec![
            RegisteredCounter {
                name: "ringkv_dot_conflicts_total",
                help: "Dots received with contents other than the ones held for them (a dot issued twice: one write lost). Should stay 0.",
                value: self.rules.dot_conflicts.clone(),
            },
            RegisteredCounter {
                name: "ringkv_clock_refusals_total",
                help: "Versions or contexts refused for timestamps or counters beyond clock.max_offset_ms ahead.",
                value: self.rules.clock.refused_counter(),
            },
            RegisteredCounter {
                name: "ringkv_storage_disk_reads_total",
                help: "Key lookups memory (memtables, block cache) could not answer, which waited on the disk on a blocking thread; the rest are answered without a thread hand-over.",
                value: self.disk_reads.clone(),
            },
            RegisteredCounter {
                name: "ringkv_storage_write_groups_total",
                help: "Batches the storage writer has written: each is one WAL write (and under sync = always one fsync) for every change queued while the one before was stored.",
                value: self.writer.counters.groups.clone(),
            },
            RegisteredCounter {
                name: "ringkv_storage_write_jobs_total",
                help: "Changes (writes, merges, purges) the storage writer has applied; divided by ringkv_storage_write_groups_total, how many one WAL write carries.",
                value: self.writer.counters.jobs.clone(),
            },
            RegisteredCounter {
                name: "ringkv_storage_caller_writes_total",
                help: "Of ringkv_storage_write_jobs_total, the changes their own request applied, as a group of one, because the writer was idle (sync = periodic or never, keys in memory): no hand-over to the writer thread.",
                value: self.writer.counters.by_caller.clone(),
            },
        ]
    }

    /// Sets the key state limit (`limits.max_key_state_bytes`).
    pub fn with_max_state_bytes(mut self, max_state_bytes: usize) -> Self {
        Arc::make_mut(&mut self.rules).max_state_bytes = max_state_bytes;
        self
    }

    /// The key state limit this replica enforces.
    pub fn max_state_bytes(&self) -> usize {
        self.rules.max_state_bytes
    }

    pub fn node_id(&self) -> NodeId {
        self.rules.node
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        ring::partition_of(key, self.partitions)
    }

    /// Applies a write coordinated by this node: a new dot from this node,
    /// superseding what the context covers.
    pub async fn apply_write(&self, write: LocalWrite) -> Result<Applied> {
        let (tx, applied) = tokio::sync::oneshot::channel();
        self.apply_write_then(write, move |done, _| {
            let _ = tx.send(done);
        })
        .await?;
        applied
            .await
            .map_err(|_| Error::Internal("a stored write left no state".into()))
    }

    /// [`Self::apply_write`], handing `ready` the new state and its
    /// encoding as soon as they are computed, before they go to storage
    /// (under `storage.sync = always`, before the fsync). The coordinator
    /// sends them to the other replicas from there, so its own sync and
    /// theirs run at once instead of one after the other. No other change
    /// of the key is computed before this one is stored (the writer applies
    /// changes in order), so none comes between. `ready` is not called when the write is refused before
    /// that (a context from the future, a key state over the limit).
    pub async fn apply_write_then<F>(&self, write: LocalWrite, ready: F) -> Result<()>
    where
        F: FnOnce(Applied, &[u8]) + Send + 'static,
    {
        let stored_key = data_key(self.partition_of(&write.key), &write.key);
        let (done, stored) = tokio::sync::oneshot::channel();
        self.submit(Work::Write {
            stored_key,
            write,
            ready: Box::new(ready),
            done,
        })?;
        stored.await.map_err(|_| writer_lost())?
    }

    /// Queues a change for the writer thread.
    fn submit(&self, work: Work) -> Result<()> {
        self.writer.submit(Job {
            rules: self.rules.clone(),
            work,
        })
    }

    /// Merges versions received from another node (replication, read
    /// repair, hint delivery).
    pub async fn merge(&self, key: Bytes, incoming: VersionSet) -> Result<Merged> {
        self.merge_group(vec![(key, incoming)])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("a merge of one key produced no outcome".into()))?
    }

    /// Merges versions received for many keys as one job of the writer, so
    /// all of them (and whatever else is queued with them) go to storage in
    /// one batch: one WAL append, and with `storage.sync = always` one
    /// fsync. A key that appears twice merges both. Returns each entry's
    /// outcome, in order; a storage failure fails the whole group, and then
    /// nothing of it was written. A merged state past the key state limit
    /// loses its oldest siblings ([`VersionSet::fit_within`]); one that
    /// still would grow past it, or whose stored value does not decode, is
    /// that entry's error alone, and its key is left as it was.
    pub async fn merge_group(
        &self,
        entries: Vec<(Bytes, VersionSet)>,
    ) -> Result<Vec<Result<Merged>>> {
        let entries: Vec<(Vec<u8>, VersionSet)> = entries
            .into_iter()
            .map(|(key, set)| (data_key(self.partition_of(&key), &key), set))
            .collect();
        if let Some(seen) = entries.iter().filter_map(|(_, s)| s.max_timestamp()).max() {
            self.rules.clock.observe(seen, wall_clock_ms());
        }
        let (done, merged) = tokio::sync::oneshot::channel();
        self.submit(Work::Merge { entries, done })?;
        merged.await.map_err(|_| writer_lost())?
    }

    /// This node's stored versions of a key (tombstones included), or
    /// `None` when it holds nothing.
    pub async fn read(&self, key: Bytes) -> Result<Option<VersionSet>> {
        let stored = self.read_stored(vec![key]).await?.pop().flatten();
        let state = decode_state(stored.as_deref())?;
        Ok((!state.is_empty()).then_some(state))
    }

    /// The stored versions of many keys in one lookup: for each key, its
    /// encoded version set as stored (`None` when this node holds nothing),
    /// or the error of a stored value that does not decode. The bytes are
    /// checked by decoding them but returned as stored (the encoding is
    /// canonical), so a read sent on to a peer is not encoded again.
    pub async fn read_group(&self, keys: Vec<Bytes>) -> Result<Vec<Result<Option<Vec<u8>>>>> {
        let stored = self.read_stored(keys).await?;
        Ok(stored
            .into_iter()
            .map(|bytes| {
                let state = decode_state(bytes.as_deref())?;
                Ok(bytes.filter(|_| !state.is_empty()))
            })
            .collect())
    }

    /// Makes everything written so far durable (shutdown).
    pub async fn flush(&self) -> Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush()).await?
    }
}

/// Partition scans and tombstone purge, for anti-entropy (`repair`).
///
/// These work on the stored encoding rather than on decoded sets: the
/// Merkle summaries hash the bytes exactly as stored (the encoding is
/// canonical, so equal states are equal bytes), and decoding every value of
/// a partition just to hash it again would double the cost of a scan.
impl Replica {
    /// Up to `limit` keys of `partition` in ascending key order, starting just
    /// after `after` (at the partition's first key when `None`), each with
    /// its encoded version set as stored. Anti-entropy walks a partition with
    /// it chunk by chunk, so no single blocking call holds a thread for long
    /// and the walk can be paced between chunks.
    pub async fn scan_partition(
        &self,
        partition: u32,
        after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Vec<u8>)>> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let (first, end) = partition_range(partition);
            let start = match &after {
                // The smallest stored key greater than `after` is `after ‖ 0`.
                Some(key) => {
                    let mut start = data_key(partition, key);
                    start.push(0);
                    start
                }
                None => first,
            };
            engine
                .scan(Cf::Data, &start, end.as_deref(), limit)?
                .into_iter()
                .map(|(stored, value)| {
                    let (_, user_key) = split_data_key(&stored)?;
                    Ok((Bytes::copy_from_slice(user_key), value))
                })
                .collect()
        })
        .await?
    }

    /// The stored encodings of `keys` (`None` where absent), in the order of
    /// `keys`, read in one batched lookup.
    ///
    /// A lookup that memory can answer (memtables, block cache) runs right
    /// here on the async runtime: it waits on no disk, so it cannot stall
    /// the runtime, and a round trip through the blocking pool would cost
    /// two thread hand-overs, more than the lookup. Only a lookup that needs
    /// the disk goes to the blocking pool.
    pub async fn read_stored(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Vec<u8>>>> {
        let stored: Vec<Vec<u8>> = keys
            .iter()
            .map(|key| data_key(self.partition_of(key), key))
            .collect();
        if let Some(values) = self.engine.multi_get_cached(Cf::Data, &stored)? {
            return Ok(values);
        }
        self.disk_reads.fetch_add(1, Ordering::Relaxed);
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.multi_get(Cf::Data, &stored)).await?
    }

    /// Deletes each key whose stored encoding still has the expected digest
    /// (`digest` is the caller's function of the stored bytes) and holds
    /// only tombstones; returns the keys deleted, in the order given.
    ///
    /// The check and the delete are a job of the writer, the thread that
    /// makes every write and merge, so a write that lands after the caller
    /// agreed on the digest with the other replicas changes the digest and
    /// the key is kept.
    pub async fn purge_tombstones(
        &self,
        keys: Vec<(Bytes, u64)>,
        digest: fn(&[u8]) -> u64,
    ) -> Result<Vec<Bytes>> {
        let targets: Vec<(Bytes, Vec<u8>, u64)> = keys
            .into_iter()
            .map(|(key, expected)| {
                let stored = data_key(self.partition_of(&key), &key);
                (key, stored, expected)
            })
            .collect();
        let (done, purged) = tokio::sync::oneshot::channel();
        self.submit(Work::Purge {
            targets,
            digest,
            done,
        })?;
        purged.await.map_err(|_| writer_lost())?
    }
}

/// Partition transfers (`rebalance`): merging a received chunk, and letting
/// go of a partition this node no longer replicates.
impl Replica {
    /// Merges a chunk of received keys (partition transfers) with
    /// [`Self::merge_group`]. Returns how many keys changed here. A key
    /// refused alone (its state cannot fit the key state limit) is
    /// reported and skipped, so one key never stalls a transfer.
    pub async fn merge_many(&self, entries: Vec<(Bytes, VersionSet)>) -> Result<usize> {
        let keys: Vec<Bytes> = entries.iter().map(|(key, _)| key.clone()).collect();
        let merged = self.merge_group(entries).await?;
        let mut changed = 0;
        for (key, outcome) in keys.iter().zip(merged) {
            match outcome {
                Ok(m) => changed += usize::from(m.changed),
                Err(e) => tracing::warn!(
                    partition = self.partition_of(key),
                    "a received key is skipped: {e}"
                ),
            }
        }
        Ok(changed)
    }

    /// Deletes up to `limit` keys of `partition` (one batch); returns how
    /// many were deleted, 0 once the partition is empty here.
    pub async fn delete_partition_chunk(&self, partition: u32, limit: usize) -> Result<usize> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let (start, end) = partition_range(partition);
            let keys = engine.scan(Cf::Data, &start, end.as_deref(), limit)?;
            if keys.is_empty() {
                return Ok(0);
            }
            let mut batch = WriteBatch::new();
            for (key, _) in &keys {
                batch.delete(Cf::Data, key.clone());
            }
            engine.write(batch)?;
            Ok(keys.len())
        })
        .await?
    }
}

/// A stable hash of a stored key for logs: keys are never logged raw.
fn stored_key_hash(stored_key: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(stored_key)
}

/// The error of a change whose answer never came: the writer thread
/// panicked applying its group (logged there), and nothing of it was stored.
fn writer_lost() -> Error {
    Error::Internal("the storage writer failed on this change; nothing of it was stored".into())
}

/// Decodes a stored version set; `None` (no such key) is the empty set.
fn decode_state(stored: Option<&[u8]>) -> Result<VersionSet> {
    match stored {
        None => Ok(VersionSet::new()),
        Some(bytes) => VersionSet::decode(bytes).map_err(|e| match e {
            Error::Corrupt(msg) => Error::Corrupt(format!("stored versions of a key: {msg}")),
            other => other,
        }),
    }
}

#[cfg(test)]
mod tests;
