//! The local half of every request: applying and reading one key's versions
//! on this node.
//!
//! A replica owns nothing but its storage engine. Each operation is an
//! atomic read-merge-write of one key: the key's stripe lock is taken, the
//! stored [`VersionSet`] is read and decoded, the write or the incoming
//! versions are merged in, and the result is written back before the lock is
//! released. Two writers of the same key therefore never lose each other's
//! versions, while different keys proceed in parallel.
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
//! All storage work runs on tokio's blocking pool (RocksDB calls may fsync),
//! so the async runtime never stalls behind the disk. The stripe locks are
//! plain `std` mutexes held only inside those blocking closures.

pub mod clock;
mod locks;

use std::collections::HashMap;
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
use locks::KeyLocks;

/// Number of lock stripes for read-merge-write; enough that unrelated keys
/// rarely share one, small enough to allocate up front.
const LOCK_STRIPES: usize = 4096;

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
    node_id: NodeId,
    engine: Arc<dyn Engine>,
    /// Q, to compute each key's partition prefix.
    partitions: u32,
    /// Sibling cap applied after every write and merge.
    max_siblings: usize,
    /// `limits.max_key_state_bytes`: no write may leave a key's encoded
    /// state larger; merges collapse siblings to stay within it.
    max_state_bytes: usize,
    locks: Arc<KeyLocks>,
    /// Issues every version's timestamp (and so its dot's counter floor):
    /// above everything seen, and never twice for this node id.
    clock: Arc<NodeClock>,
    /// Dots found held by two states with different contents (see
    /// [`VersionSet::conflicting_dots`]); should stay 0.
    dot_conflicts: Arc<AtomicU64>,
    /// `debug.inject_bug`: only `merge_collapses_siblings` changes what a
    /// replica does.
    inject_bug: InjectBug,
}

impl Replica {
    pub fn new(
        node_id: NodeId,
        engine: Arc<dyn Engine>,
        partitions: u32,
        max_siblings: usize,
    ) -> Self {
        Self {
            node_id,
            // No start margin: a replica built without a server (tests,
            // tools) has no earlier run whose timestamps it could repeat.
            clock: Arc::new(NodeClock::new(
                engine.clone(),
                DEFAULT_MAX_CLOCK_OFFSET_MS,
                wall_clock_ms(),
                0,
            )),
            engine,
            partitions,
            max_siblings,
            max_state_bytes: default_max_state_bytes(),
            locks: Arc::new(KeyLocks::new(LOCK_STRIPES)),
            dot_conflicts: Arc::new(AtomicU64::new(0)),
            inject_bug: InjectBug::None,
        }
    }

    /// Sets `debug.inject_bug`. With `merge_collapses_siblings`, every
    /// merge ([`Self::merge_group`], so replication, read repair, hints,
    /// anti-entropy and transfers) collapses the merged state to its newest
    /// sibling, as a sibling cap of one would, without counting it: the
    /// lost-update bug of last-writer-wins stores, for tests of the
    /// verification harness. Local writes are untouched.
    pub fn with_injected_bug(mut self, bug: InjectBug) -> Self {
        self.inject_bug = bug;
        self
    }

    /// Sets `clock.max_offset_ms`: how far ahead of this node's wall clock
    /// a timestamp from a peer or a client may be. Also the start margin:
    /// this run issues no timestamp until that long after now, so none can
    /// repeat one of an earlier run of this node id (see [`clock`]).
    pub fn with_max_clock_offset(mut self, max_offset_ms: u64) -> Self {
        self.clock = Arc::new(NodeClock::new(
            self.engine.clone(),
            max_offset_ms,
            wall_clock_ms(),
            max_offset_ms,
        ));
        self
    }

    /// The node's clock: for checking what peers and clients send.
    pub fn clock(&self) -> &NodeClock {
        &self.clock
    }

    /// Refuses a version set from a peer that a replica must not merge:
    /// timestamps or counters beyond `clock.max_offset_ms` ahead of this
    /// node's clock. Every path that merges a peer's versions checks this
    /// first, item by item, so one bad item fails alone.
    pub fn check_incoming(&self, set: &VersionSet) -> Result<()> {
        self.clock.check(set, wall_clock_ms())
    }

    /// Dots found held by two states with different contents so far.
    pub fn dot_conflicts(&self) -> u64 {
        self.dot_conflicts.load(Ordering::Relaxed)
    }

    /// The replica's safety counters, for the metrics endpoint.
    pub fn counters(&self) -> Vec<RegisteredCounter> {
        vec![
            RegisteredCounter {
                name: "ringkv_dot_conflicts_total",
                help: "Dots received with contents other than the ones held for them (a dot issued twice: one write lost). Should stay 0.",
                value: self.dot_conflicts.clone(),
            },
            RegisteredCounter {
                name: "ringkv_clock_refusals_total",
                help: "Versions or contexts refused for timestamps or counters beyond clock.max_offset_ms ahead.",
                value: self.clock.refused_counter(),
            },
        ]
    }

    /// Sets the key state limit (`limits.max_key_state_bytes`).
    pub fn with_max_state_bytes(mut self, max_state_bytes: usize) -> Self {
        self.max_state_bytes = max_state_bytes;
        self
    }

    /// The key state limit this replica enforces.
    pub fn max_state_bytes(&self) -> usize {
        self.max_state_bytes
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
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
    /// theirs run at once instead of one after the other. The key's lock is
    /// held until the write is stored, so no other write of the key comes
    /// between. `ready` is not called when the write is refused before
    /// that (a context from the future, a key state over the limit).
    pub async fn apply_write_then<F>(&self, write: LocalWrite, ready: F) -> Result<()>
    where
        F: FnOnce(Applied, &[u8]) + Send + 'static,
    {
        let stored_key = data_key(self.partition_of(&write.key), &write.key);
        let engine = self.engine.clone();
        let locks = self.locks.clone();
        let clock = self.clock.clone();
        let node = self.node_id;
        let cap = self.max_siblings;
        let max_state = self.max_state_bytes;
        tokio::task::spawn_blocking(move || {
            let _guard = locks.lock(&stored_key);
            let mut state = read_state(engine.as_ref(), &stored_key)?;
            // Entries of nodes that never wrote this key and are not members
            // cover nothing: dropped, they can never grow the stored vector.
            let client_context = write.context.map(|mut seen| {
                seen.retain(|n| {
                    n == node || state.context().get(n) > 0 || write.members.contains(&n)
                });
                seen
            });
            let wall = wall_clock_ms();
            if let Some(context) = &client_context {
                clock.check_counters(context, wall)?;
            }
            if let Some(seen) = state.max_timestamp() {
                clock.observe(seen, wall);
            }
            // The new dot's counter is at least `timestamp`, which this node
            // never issues twice (`clock`): a key purged here, or a stored
            // state older than what the other replicas hold (a restored
            // backup, a lost WAL tail), cannot make it reuse a dot that
            // another replica covers and would then drop.
            let timestamp = clock.issue(&wall_clock_ms)?;
            let what = match write.value {
                Value::Data(_) => "put refused: the key would hold",
                Value::Tombstone => "delete refused: the key would hold",
            };
            let outcome = state.write(
                node,
                client_context.as_ref(),
                timestamp,
                write.value,
                write.expires_at_ms,
                cap,
            );
            let encoded = state.encode();
            if encoded.len() > max_state {
                return Err(Error::KeyStateTooLarge {
                    what: what.to_string(),
                    siblings: state.versions().len(),
                    bytes: encoded.len(),
                    limit: max_state,
                });
            }
            ready(Applied { state, outcome }, &encoded);
            let mut batch = WriteBatch::new();
            batch.put(Cf::Data, stored_key, encoded);
            engine.write(batch)
        })
        .await?
    }

    /// Merges versions received from another node (replication, read
    /// repair, hint delivery).
    pub async fn merge(&self, key: Bytes, incoming: VersionSet) -> Result<Merged> {
        self.merge_group(vec![(key, incoming)])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("a merge of one key produced no outcome".into()))?
    }

    /// Merges versions received for many keys as one group commit: the
    /// keys' stripe locks are taken together (in stripe order, each once,
    /// so two groups cannot deadlock and a key never waits on itself), the
    /// stored states are read in one lookup, and every changed state goes
    /// to storage in one batch: one WAL append, and with `storage.sync =
    /// always` one fsync, for the whole group. A key that appears twice
    /// merges both. Returns each entry's outcome, in order; a storage
    /// failure fails the whole group, and then nothing of it was written.
    /// A merged state past the key state limit loses its oldest siblings
    /// ([`VersionSet::fit_within`]); one that still would grow past it is
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
            self.clock.observe(seen, wall_clock_ms());
        }
        let engine = self.engine.clone();
        let locks = self.locks.clone();
        let cap = self.max_siblings;
        let conflicts = self.dot_conflicts.clone();
        let max_state = self.max_state_bytes;
        let collapse_siblings = self.inject_bug == InjectBug::MergeCollapsesSiblings;
        tokio::task::spawn_blocking(move || {
            let _guards = locks.lock_all(entries.iter().map(|(key, _)| key.as_slice()));
            let stored_keys: Vec<Vec<u8>> = entries.iter().map(|(key, _)| key.clone()).collect();
            let stored = engine.multi_get(Cf::Data, &stored_keys)?;
            // States as this group leaves them, for keys it changed.
            let mut updated: HashMap<Vec<u8>, VersionSet> = HashMap::new();
            let mut merged = Vec::with_capacity(entries.len());
            for ((stored_key, incoming), bytes) in entries.into_iter().zip(stored) {
                let current = match updated.get(&stored_key) {
                    Some(state) => state.clone(),
                    None => decode_state(bytes.as_deref())?,
                };
                let conflicting = current.conflicting_dots(&incoming);
                if conflicting > 0 {
                    conflicts.fetch_add(conflicting as u64, Ordering::Relaxed);
                    tracing::error!(
                        key_hash = stored_key_hash(&stored_key),
                        conflicting,
                        "a dot arrived with contents other than the ones held for it: some node issued a dot twice, and one of the two writes is lost"
                    );
                }
                let mut state = current.merged(&incoming);
                if collapse_siblings {
                    // The injected bug: silent, so not counted as collapsed.
                    state.enforce_cap(1);
                }
                let collapsed = state.enforce_cap(cap) + state.fit_within(max_state);
                let size = state.encoded_len();
                if size > max_state && size > current.encoded_len() {
                    merged.push(Err(Error::KeyStateTooLarge {
                        what: "merge refused: the key would hold".to_string(),
                        siblings: state.versions().len(),
                        bytes: size,
                        limit: max_state,
                    }));
                    continue;
                }
                let changed = state != current;
                if changed {
                    updated.insert(stored_key, state.clone());
                }
                merged.push(Ok(Merged {
                    state,
                    changed,
                    collapsed,
                }));
            }
            if !updated.is_empty() {
                let mut batch = WriteBatch::new();
                for (stored_key, state) in updated {
                    batch.put(Cf::Data, stored_key, state.encode());
                }
                engine.write(batch)?;
            }
            Ok(merged)
        })
        .await?
    }

    /// This node's stored versions of a key (tombstones included), or
    /// `None` when it holds nothing.
    pub async fn read(&self, key: Bytes) -> Result<Option<VersionSet>> {
        let stored_key = data_key(self.partition_of(&key), &key);
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let state = read_state(engine.as_ref(), &stored_key)?;
            Ok((!state.is_empty()).then_some(state))
        })
        .await?
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
    pub async fn read_stored(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Vec<u8>>>> {
        let stored: Vec<Vec<u8>> = keys
            .iter()
            .map(|key| data_key(self.partition_of(key), key))
            .collect();
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.multi_get(Cf::Data, &stored)).await?
    }

    /// Deletes each key whose stored encoding still has the expected digest
    /// (`digest` is the caller's function of the stored bytes) and holds
    /// only tombstones; returns the keys deleted, in the order given.
    ///
    /// The check and the delete happen under the key's stripe lock, the
    /// same lock every write and merge takes, so a write that lands after
    /// the caller agreed on the digest with the other replicas changes the
    /// digest and the key is kept. Keys are handled one at a time, each with
    /// its own lock and write: taking several stripes at once could deadlock
    /// on a stripe shared by two keys.
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
        let engine = self.engine.clone();
        let locks = self.locks.clone();
        tokio::task::spawn_blocking(move || {
            let mut purged = Vec::new();
            for (key, stored_key, expected) in targets {
                let _guard = locks.lock(&stored_key);
                let Some(bytes) = engine.get(Cf::Data, &stored_key)? else {
                    continue;
                };
                if digest(&bytes) != expected {
                    continue;
                }
                // A value that no longer decodes is left for an operator,
                // never deleted on the strength of a digest alone.
                match VersionSet::decode(&bytes) {
                    Ok(state) if !state.is_empty() && state.all_tombstones() => {}
                    _ => continue,
                }
                let mut batch = WriteBatch::new();
                batch.delete(Cf::Data, stored_key);
                engine.write(batch)?;
                purged.push(key);
            }
            Ok(purged)
        })
        .await?
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

/// Reads and decodes a stored version set; a missing key is the empty set.
fn read_state(engine: &dyn Engine, stored_key: &[u8]) -> Result<VersionSet> {
    decode_state(engine.get(Cf::Data, stored_key)?.as_deref())
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
