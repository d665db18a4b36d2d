//! Hinted handoff: writes kept by a fallback for a replica that could not
//! take them, and delivered once it is back.
//!
//! When a replica of a key is believed down, fails, or does not answer
//! within `handoff.replica_timeout_ms`, the coordinator sends the key's
//! version set to the next fallback of the key's preference list, marked
//! with the replica it stands in for. The fallback stores it in the `hints`
//! column family before it acknowledges (so a hint survives a restart of
//! the fallback), merged with any hint it already holds for that key and
//! replica. When no fallback exists (every member already replicates the
//! key) the coordinator keeps the hint itself; such a hint never counts
//! toward W.
//!
//! The delivery worker ([`deliver::DeliveryWorker`]) sends each target's hints in
//! batches once the failure detector sees the target alive, rate-limited
//! by `handoff.max_rate`, and deletes each hint when the target
//! acknowledges it, unless it changed meanwhile (a newer write merged in).
//!
//! Bounds: per target, at most `handoff.max_bytes_per_target` bytes; a
//! hint that would pass it is refused, and the coordinator tries the next
//! fallback (or fails the write's extra ack). Hints older than
//! `handoff.max_age_ms` are dropped; anti-entropy repairs what they held.
//! Stored, delivered, dropped and pending hints are counted in metrics.

pub mod deliver;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::metrics::Metrics;
use ringkv_common::wall_clock_ms;
use ringkv_core::error::{Error, Result};
use ringkv_core::version::{NodeId, VersionSet};
use ringkv_storage::{data_key, split_data_key, Cf, Engine, WriteBatch};

/// First byte of a stored hint value.
const HINT_FORMAT: u8 = 1;

/// Keys read per scan when counting hints at start-up.
const SCAN_PAGE: usize = 1024;

/// One stored hint.
#[derive(Clone, Debug)]
pub struct Hint {
    pub key: Bytes,
    pub state: VersionSet,
    /// The stored bytes, to delete the hint only if it did not change.
    pub raw: Vec<u8>,
    pub stored_at_ms: u64,
}

/// Hints held for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub keys: u64,
    pub bytes: u64,
}

/// The hints this node keeps for other nodes.
pub struct HintStore {
    engine: Arc<dyn Engine>,
    partitions: u32,
    max_bytes_per_target: u64,
    /// `limits.max_key_state_bytes`: a hint merged with the one already
    /// held for its key collapses its oldest siblings to stay within it,
    /// as a replica's merge does, so every hint can be delivered in one
    /// message.
    max_state_bytes: usize,
    /// Per-target totals, kept in memory and rebuilt at start.
    queues: Mutex<BTreeMap<NodeId, QueueStats>>,
    /// Serialises read-merge-write of hints (hint traffic is light).
    write_lock: Arc<Mutex<()>>,
    metrics: Arc<Metrics>,
}

/// The `hints` column family key of a hint: target id (8 bytes BE), then
/// the key's data key (partition, user key). Public, with its inverse
/// [`split_hint_key`], for the fuzz targets.
pub fn hint_key(target: NodeId, partition: u32, key: &[u8]) -> Vec<u8> {
    let mut out = target.0.to_be_bytes().to_vec();
    out.extend_from_slice(&data_key(partition, key));
    out
}

/// A stored hint value: the format byte (1), the time it was stored (u64 BE,
/// for `handoff.max_age_ms`), then the version set.
pub fn encode_hint(stored_at_ms: u64, state: &VersionSet) -> Vec<u8> {
    let body = state.encode();
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(HINT_FORMAT);
    out.extend_from_slice(&stored_at_ms.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads [`encode_hint`] bytes; anything else is [`Error::Corrupt`].
pub fn decode_hint(raw: &[u8]) -> Result<(u64, VersionSet)> {
    if raw.len() < 9 || raw[0] != HINT_FORMAT {
        return Err(Error::Corrupt("hint header".into()));
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&raw[1..9]);
    Ok((u64::from_be_bytes(at), VersionSet::decode(&raw[9..])?))
}

/// The target and user key of a [`hint_key`]; [`Error::Corrupt`] when it
/// is too short to hold them.
pub fn split_hint_key(stored: &[u8]) -> Result<(NodeId, Bytes)> {
    if stored.len() < 8 {
        return Err(Error::Corrupt("hint key shorter than a node id".into()));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&stored[..8]);
    let (_, key) = split_data_key(&stored[8..])?;
    Ok((NodeId(u64::from_be_bytes(id)), Bytes::copy_from_slice(key)))
}

impl HintStore {
    /// Opens the store, counting the hints already on disk.
    pub fn open(
        engine: Arc<dyn Engine>,
        partitions: u32,
        max_bytes_per_target: u64,
        metrics: Arc<Metrics>,
    ) -> Result<HintStore> {
        let mut queues: BTreeMap<NodeId, QueueStats> = BTreeMap::new();
        let mut start = Vec::new();
        loop {
            let page = engine.scan(Cf::Hints, &start, None, SCAN_PAGE)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                if let Ok((target, _)) = split_hint_key(k) {
                    let q = queues.entry(target).or_default();
                    q.keys += 1;
                    q.bytes += (k.len() + v.len()) as u64;
                }
            }
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        let store = HintStore {
            engine,
            partitions,
            max_bytes_per_target,
            max_state_bytes: crate::config::LimitsConfig::default().max_key_state_bytes,
            queues: Mutex::new(queues),
            write_lock: Arc::new(Mutex::new(())),
            metrics,
        };
        store.publish_pending();
        Ok(store)
    }

    /// Sets the key state limit (`limits.max_key_state_bytes`).
    pub fn with_max_state_bytes(mut self, max_state_bytes: usize) -> Self {
        self.max_state_bytes = max_state_bytes;
        self
    }

    fn publish_pending(&self) {
        let pending = self.queues().iter().map(|(_, q)| q.keys).sum();
        self.metrics.hints_pending(pending);
    }

    /// Keeps `state` for `target`, merged with any hint already held for
    /// the key. Refused with `Overloaded` when the target's queue is full.
    pub async fn store(
        self: &Arc<Self>,
        target: NodeId,
        key: Bytes,
        state: VersionSet,
    ) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.store_blocking(target, &key, &state)).await??;
        self.metrics.hints_stored(1);
        self.publish_pending();
        Ok(())
    }

    fn store_blocking(&self, target: NodeId, key: &[u8], state: &VersionSet) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let stored_key = hint_key(
            target,
            ringkv_core::ring::partition_of(key, self.partitions),
            key,
        );
        let previous = self.engine.get(Cf::Hints, &stored_key)?;
        let (merged, old_len) = match &previous {
            Some(raw) => match decode_hint(raw) {
                Ok((_, old)) => {
                    let mut merged = old.merged(state);
                    let collapsed = merged.fit_within(self.max_state_bytes);
                    self.metrics.siblings_collapsed(collapsed);
                    (merged, (stored_key.len() + raw.len()) as u64)
                }
                // A corrupt hint is replaced by the new one.
                Err(_) => (state.clone(), (stored_key.len() + raw.len()) as u64),
            },
            None => (state.clone(), 0),
        };
        let value = encode_hint(wall_clock_ms(), &merged);
        let new_len = (stored_key.len() + value.len()) as u64;
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = queues.entry(target).or_default();
        let after = q.bytes.saturating_sub(old_len) + new_len;
        if after > self.max_bytes_per_target && new_len > old_len {
            return Err(Error::Overloaded(format!(
                "hint store for {target} is full ({} bytes, handoff.max_bytes_per_target = {})",
                q.bytes, self.max_bytes_per_target
            )));
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Hints, stored_key, value);
        self.engine.write(batch)?;
        q.bytes = after;
        if previous.is_none() {
            q.keys += 1;
        }
        Ok(())
    }

    /// Up to `limit` hints for `target`, in key order.
    pub async fn batch(self: &Arc<Self>, target: NodeId, limit: usize) -> Result<Vec<Hint>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let start = target.0.to_be_bytes().to_vec();
            let end = target.0.checked_add(1).map(|n| n.to_be_bytes().to_vec());
            let rows = this.engine.scan(Cf::Hints, &start, end.as_deref(), limit)?;
            let mut hints = Vec::with_capacity(rows.len());
            for (k, raw) in rows {
                match (split_hint_key(&k), decode_hint(&raw)) {
                    (Ok((_, key)), Ok((stored_at_ms, state))) => hints.push(Hint {
                        key,
                        state,
                        raw,
                        stored_at_ms,
                    }),
                    _ => {
                        tracing::warn!(%target, "dropping an undecodable hint");
                        this.remove_raw(target, &k, raw.len())?;
                        this.metrics.hints_dropped(1);
                    }
                }
            }
            Ok(hints)
        })
        .await?
    }

    /// Deletes a delivered or expired hint unless it changed since it was read.
    pub async fn remove_if_unchanged(
        self: &Arc<Self>,
        target: NodeId,
        hint: &Hint,
    ) -> Result<bool> {
        let this = self.clone();
        let stored_key = hint_key(
            target,
            ringkv_core::ring::partition_of(&hint.key, self.partitions),
            &hint.key,
        );
        let raw = hint.raw.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let _guard = this.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            match this.engine.get(Cf::Hints, &stored_key)? {
                Some(current) if current == raw => {
                    this.remove_raw(target, &stored_key, raw.len())?;
                    Ok::<_, Error>(true)
                }
                _ => Ok(false),
            }
        })
        .await??;
        self.publish_pending();
        Ok(removed)
    }

    fn remove_raw(&self, target: NodeId, stored_key: &[u8], value_len: usize) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(Cf::Hints, stored_key.to_vec());
        self.engine.write(batch)?;
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get_mut(&target) {
            q.keys = q.keys.saturating_sub(1);
            q.bytes = q
                .bytes
                .saturating_sub((stored_key.len() + value_len) as u64);
            if q.keys == 0 {
                queues.remove(&target);
            }
        }
        Ok(())
    }

    /// Targets with hints, and how much is held for each.
    pub fn queues(&self) -> Vec<(NodeId, QueueStats)> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, q)| (*n, *q))
            .collect()
    }
}

#[cfg(test)]
mod tests;
