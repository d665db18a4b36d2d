//! Tombstone purge: deleting a deleted key for good, once that is safe.
//!
//! A tombstone exists so that a replica still holding the old value learns,
//! by merging, that the value was deleted. Dropping it early lets the old
//! value come back (Cassandra's "zombie" after `gc_grace`). So a key is
//! purged only when all of the following hold:
//!
//! 1. every version it holds here is a tombstone, the newest older than
//!    `repair.tombstone_grace_ms` (which configuration keeps above the
//!    longest a hint may wait, so no delayed hint can still carry an old
//!    value);
//! 2. *every* replica of the partition in the current layout is alive and
//!    reports the identical digest for the key (`Internal.KeyDigests` with
//!    explicit keys), i.e. holds exactly the same tombstone state;
//! 3. each replica, when asked, still holds that digest: the check and
//!    the delete are one change of the node's storage writer, which makes
//!    every write and merge too ([`Replica::purge_tombstones`]), so a write
//!    that slipped in after step 2 keeps the key;
//! 4. every *other* member of the layout is alive too, and holds either
//!    nothing for the key or that same digest. A node that replicated the
//!    partition in an earlier layout keeps its copy until it has handed it
//!    over to the new replicas (`rebalance::safety`, rule 2), and that
//!    hand-over merges what it holds into them. Had it missed the delete
//!    (paused, cut off) it still holds the old value, and a hand-over after
//!    the purge would bring that value back. Which members still hold a
//!    partition is their own knowledge, so the driver asks them all (the
//!    verification campaign found this: seed 1000, a retiring replica
//!    paused for 31 s across a tombstone's 20 s grace). The cost: no purge
//!    while any member is down, only a delay of garbage collection.
//!
//! Only the partition's first replica drives this (see `exchange.rs`).
//! It asks the other replicas to purge first and purges its own copy
//! last. If any replica fails or refuses (its digest changed, or the call
//! failed and may or may not have applied), the driver keeps its copy and
//! sends its state back to the replicas it asked: a partial purge is
//! undone at once instead of waiting for the next exchange, so replicas
//! that already purged regain the key's causal history quickly.
//!
//! A new write to a key that a purge left nowhere does not reuse a dot:
//! its counter is at least its HLC timestamp (`VersionSet::write`), above
//! every dot the node issued before, so a replica still holding the old
//! tombstone takes it as new.
//!
//! **Injected bug.** With `debug.inject_bug = purge_ignores_one_replica`
//! (tests of the verification harness only), the driver leaves the last
//! other replica of the layout out of step 2 and out of the deletes: a
//! replica that missed the delete, or is down, keeps the old value, and
//! the next exchange brings the deleted key back everywhere.
//!
//! [`Replica::purge_tombstones`]: crate::replica::Replica::purge_tombstones

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::exchange::peer_error;
use super::merkle::{state_digest, ABSENT, ENTRY_OVERHEAD_BYTES};
use super::{Repair, RepairReport, MAX_EXPLICIT_KEYS};
use crate::config::InjectBug;
use ringkv_core::error::{Error, Result};
use ringkv_core::ring::Layout;
use ringkv_core::version::NodeId;
use ringkv_peer::KeyDigest;

impl Repair {
    /// Deletes the keys whose stored digest still matches and that hold only
    /// tombstones; returns the keys deleted. Pairs that could not match
    /// anything stored (bad key, [`ABSENT`] digest) are ignored.
    pub(super) async fn purge_local(&self, keys: Vec<(Bytes, u64)>) -> Result<Vec<Bytes>> {
        let keys: Vec<(Bytes, u64)> = keys
            .into_iter()
            .filter(|(key, digest)| *digest != ABSENT && self.valid_key(key))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.replica.purge_tombstones(keys, state_digest).await
    }

    /// Purges the partition's candidates on every replica, batch by batch.
    /// Does nothing unless every replica is alive.
    pub(super) async fn purge_partition(
        &self,
        layout: &Layout,
        partition: u32,
        candidates: Vec<(Bytes, u64)>,
        report: &mut RepairReport,
    ) {
        let me = self.cluster.me();
        // The injected bug: the last other replica is neither checked nor
        // asked to purge.
        let ignored = match self.config.debug.inject_bug {
            InjectBug::PurgeIgnoresOneReplica => {
                layout.replicas(partition).iter().rev().find(|n| **n != me)
            }
            _ => None,
        };
        let mut peers = Vec::new();
        for &node in layout.replicas(partition) {
            if node == me || Some(&node) == ignored {
                continue;
            }
            match node {
                node if self.cluster.is_alive(node) => peers.push(node),
                // A replica that is down may hold an older value the
                // tombstone must still delete: wait for it.
                _ => {
                    self.count("purges_deferred", candidates.len() as u64);
                    return;
                }
            }
        }
        // Rule 4: every other member, alive, is asked too.
        let mut others = Vec::new();
        for member in layout.members() {
            let node = member.id;
            if node == me || layout.replicas(partition).contains(&node) {
                continue;
            }
            if !self.cluster.is_alive(node) {
                self.count("purges_deferred", candidates.len() as u64);
                return;
            }
            others.push(node);
        }
        for batch in batches(candidates, self.reply_budget()) {
            match self.purge_batch(partition, &peers, &others, batch).await {
                Ok(purged) => report.tombstones_purged += purged,
                Err(e) => self.note_error(report, format!("partition {partition}: purge: {e}")),
            }
        }
    }

    /// Steps 2 and 3 of the module docs for one batch of candidates.
    async fn purge_batch(
        &self,
        partition: u32,
        peers: &[NodeId],
        others: &[NodeId],
        batch: Vec<(Bytes, u64)>,
    ) -> Result<u64> {
        // The key may have changed here since the scan found it.
        let keys: Vec<Bytes> = batch.iter().map(|(k, _)| k.clone()).collect();
        let current: HashMap<Bytes, u64> = self.stored_digests(keys).await?.into_iter().collect();
        let mut agreed: Vec<(Bytes, u64)> = batch
            .into_iter()
            .filter(|(key, digest)| current.get(key) == Some(digest))
            .collect();
        let calls = self.cluster.peers();
        let timeout = self.rpc_timeout();
        for peer in peers {
            if agreed.is_empty() {
                return Ok(0);
            }
            let keys = agreed.iter().map(|(k, _)| k.clone()).collect();
            let theirs: HashMap<Bytes, u64> = calls
                .key_digests(*peer, partition, Vec::new(), keys, timeout)
                .await
                .map_err(|e| peer_error(*peer, "key digests", e))?
                .into_iter()
                .map(|kd| (kd.key, kd.digest))
                .collect();
            agreed.retain(|(key, digest)| theirs.get(key) == Some(digest));
        }
        // Members that do not replicate the partition must hold nothing
        // for the key, or the same state (rule 4).
        for other in others {
            if agreed.is_empty() {
                return Ok(0);
            }
            let keys = agreed.iter().map(|(k, _)| k.clone()).collect();
            let theirs: HashMap<Bytes, u64> = calls
                .key_digests(*other, partition, Vec::new(), keys, timeout)
                .await
                .map_err(|e| peer_error(*other, "key digests", e))?
                .into_iter()
                .map(|kd| (kd.key, kd.digest))
                .collect();
            agreed.retain(
                |(key, digest)| matches!(theirs.get(key), Some(d) if *d == ABSENT || d == digest),
            );
        }
        if agreed.is_empty() {
            return Ok(0);
        }

        let to_purge: Vec<KeyDigest> = agreed
            .iter()
            .map(|(key, digest)| KeyDigest {
                key: key.clone(),
                digest: *digest,
            })
            .collect();
        let keys: Vec<Bytes> = agreed.iter().map(|(k, _)| k.clone()).collect();
        let mut asked: Vec<NodeId> = Vec::new();
        for peer in peers {
            asked.push(*peer);
            let failure = match calls.purge(*peer, to_purge.clone(), timeout).await {
                Ok(n) if n as usize == to_purge.len() => continue,
                Ok(n) => format!(
                    "{peer} purged {n} of {} keys (the others changed there)",
                    to_purge.len()
                ),
                Err(e) => peer_error(*peer, "purge", e).to_string(),
            };
            self.restore(&asked, &keys).await;
            return Err(Error::Internal(format!(
                "{failure}; this node kept its tombstones and sent them back"
            )));
        }

        let purged = self.purge_local(agreed).await?;
        if purged.len() < keys.len() {
            // Changed here since the agreement: the others must get the
            // new state back.
            let purged: HashSet<&Bytes> = purged.iter().collect();
            let kept: Vec<Bytes> = keys
                .iter()
                .filter(|k| !purged.contains(k))
                .cloned()
                .collect();
            self.restore(&asked, &kept).await;
        }
        Ok(purged.len() as u64)
    }

    /// Sends this node's state of `keys` to `peers`: undoes a partial purge.
    /// Failures are only logged; the next exchange repairs what is left.
    async fn restore(&self, peers: &[NodeId], keys: &[Bytes]) {
        let calls = self.cluster.peers();
        let timeout = self.rpc_timeout();
        for key in keys {
            let state = match self.replica.read(key.clone()).await {
                Ok(Some(state)) => state,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("restoring a key after a partial purge: {e}");
                    continue;
                }
            };
            let encoded = Bytes::from(state.encode());
            for peer in peers {
                if let Err(e) = calls
                    .replicate(*peer, key.clone(), encoded.clone(), timeout)
                    .await
                {
                    tracing::warn!(%peer, "restoring a key after a partial purge failed: {e}");
                }
            }
        }
        self.count("purges_undone", keys.len() as u64);
    }
}

/// Splits candidates into batches that fit one request: at most
/// [`MAX_EXPLICIT_KEYS`] keys and `budget` bytes.
fn batches(candidates: Vec<(Bytes, u64)>, budget: usize) -> Vec<Vec<(Bytes, u64)>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for (key, digest) in candidates {
        let cost = key.len() + ENTRY_OVERHEAD_BYTES;
        if !batch.is_empty() && (batch.len() == MAX_EXPLICIT_KEYS || bytes + cost > budget) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += cost;
        batch.push((key, digest));
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_bytes_and_counts() {
        let keys: Vec<(Bytes, u64)> = (0..100).map(|i| (Bytes::from(vec![b'k'; 84]), i)).collect();
        // 100 bytes per key: 10 per 1000-byte batch.
        let b = batches(keys.clone(), 1000);
        assert_eq!(b.len(), 10);
        assert!(b.iter().all(|x| x.len() == 10));
        let many: Vec<(Bytes, u64)> = (0..(MAX_EXPLICIT_KEYS as u64 + 1))
            .map(|i| (Bytes::from_static(b"k"), i))
            .collect();
        let b = batches(many, usize::MAX);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].len(), MAX_EXPLICIT_KEYS);
        // A key bigger than the budget still travels, alone.
        let b = batches(keys, 10);
        assert_eq!(b.len(), 100);
        assert!(batches(Vec::new(), 10).is_empty());
    }
}
