//! The anti-entropy pass: compare each partition with its other replicas
//! and exchange the keys that differ.
//!
//! A pass takes one snapshot of the layout and walks the partitions this
//! node replicates in order. Per partition it scans once (summary, and
//! purge candidates when this node drives the purge), then runs one
//! exchange per other replica believed alive:
//!
//! 1. fetch the peer's summary; equal leaves end the exchange;
//! 2. ask for the peer's (key, digest) listing of the differing leaves;
//!    the leaves whose listing recomputes the peer's leaf hash are
//!    *complete* and compared in both directions; a leaf that came back
//!    sampled (too big for one reply) or changed meanwhile is *partial*
//!    and only the keys listed are compared; leaves left out of the reply
//!    are asked for again, so every round settles at least one leaf;
//! 3. repair every differing key: read the peer's versions, merge them
//!    here, and send the merge back when the peer lacked something.
//!
//! Both directions are repaired by whichever replica runs its pass first;
//! the other finds equal roots. Everything is a merge, so an exchange cut
//! short (peer gone, shutdown) leaves nothing half done that the next pass
//! cannot finish.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use super::merkle::{differing_leaves, leaf_of, leaf_value, ABSENT, LEAVES};
use super::{no_layout, MerkleSummary, Repair, RepairReport};
use ringkv_common::wall_clock_ms;
use ringkv_core::error::{Error, Result};
use ringkv_core::ring::Layout;
use ringkv_core::version::NodeId;
use ringkv_peer::{KeyDigest, PeerError};

/// Keys repaired at once with one peer: enough to hide round trips,
/// few enough not to crowd out foreground requests on either node.
const REPAIR_CONCURRENCY: usize = 8;

/// What one exchange with one peer found.
#[derive(Debug, Default)]
struct Exchanged {
    /// The peer's summary differed from ours.
    differed: bool,
    /// Keys where either side changed.
    repaired: u64,
    /// Keys whose repair failed, and the first failure.
    failed: u64,
    first_failure: Option<Error>,
}

impl Repair {
    /// One pass over `only` or over every partition this node replicates.
    pub(super) async fn pass(&self, only: Option<u32>) -> Result<RepairReport> {
        let layout = self.cluster.layout().ok_or_else(no_layout)?;
        let me = self.cluster.me();
        let partitions = match only {
            Some(p) => {
                self.check_partition(p)?;
                let replicas = layout.replicas(p);
                if !replicas.contains(&me) {
                    let names: Vec<String> = replicas.iter().map(|n| n.to_string()).collect();
                    return Err(Error::FailedPrecondition(format!(
                        "this node does not replicate partition {p}; start the repair on one of its replicas ({})",
                        names.join(", ")
                    )));
                }
                vec![p]
            }
            None => layout.partitions_of(me),
        };
        let started = Instant::now();
        let mut report = RepairReport::default();
        for partition in partitions {
            let before = report.clone();
            self.repair_partition(&layout, partition, &mut report).await;
            self.record_partition(&before, &report);
        }
        self.record_pass(started.elapsed());
        Ok(report)
    }

    /// Brings this node's copy of `partition` level with each of `peers`
    /// (both directions, no purge): the last step of a partition transfer,
    /// which streamed from one old replica and must also hold what only the
    /// others have, and the hand-over before a node deletes a partition it
    /// no longer replicates. Every peer counts: one that is not believed
    /// alive, or whose exchange fails, is an error naming it, never
    /// skipped (see `rebalance::safety`). Returns the keys repaired.
    pub async fn sync_partition(&self, partition: u32, peers: &[NodeId]) -> Result<u64> {
        self.check_partition(partition)?;
        let me = self.cluster.me();
        let survey = self.survey(partition, None).await?;
        let mut repaired = 0;
        for &peer in peers.iter().filter(|n| **n != me) {
            if !self.cluster.is_alive(peer) {
                return Err(Error::Internal(format!(
                    "partition {partition}: {peer} is down or not answering; it may hold writes no other replica has, so the sync waits for it"
                )));
            }
            let x = self.exchange(partition, &survey.summary, peer).await?;
            if let Some(e) = x.first_failure {
                return Err(e);
            }
            repaired += x.repaired;
        }
        Ok(repaired)
    }

    /// Exchanges one partition with each of its other live replicas, then
    /// purges its old tombstones if this node drives that.
    async fn repair_partition(&self, layout: &Layout, partition: u32, report: &mut RepairReport) {
        if layout.is_moving(partition) {
            // The transfer of a moving partition syncs it; a purge now could
            // delete a tombstone that an old replica still streams a value
            // under.
            self.count("partitions_moving", 1);
            return;
        }
        report.partitions += 1;
        let me = self.cluster.me();
        let replicas = layout.replicas(partition);
        // The first replica drives the purge: with every replica required
        // alive for a purge, it is always available when one can happen.
        let purge_before = (replicas.first() == Some(&me))
            .then(|| wall_clock_ms().saturating_sub(self.config.repair.tombstone_grace_ms));
        let survey = match self.survey(partition, purge_before).await {
            Ok(survey) => survey,
            Err(e) => {
                self.note_error(report, format!("partition {partition}: local scan: {e}"));
                return;
            }
        };
        let mut differing = false;
        for &peer in replicas.iter().filter(|n| **n != me) {
            if !self.cluster.is_alive(peer) {
                self.count("peers_skipped", 1);
                continue;
            }
            match self.exchange(partition, &survey.summary, peer).await {
                Ok(x) => {
                    differing |= x.differed;
                    report.keys_repaired += x.repaired;
                    if let Some(e) = x.first_failure {
                        self.note_error(
                            report,
                            format!(
                                "partition {partition} with {peer}: {} keys not repaired, first: {e}",
                                x.failed
                            ),
                        );
                    }
                }
                Err(e) => {
                    differing = true;
                    self.note_error(report, format!("partition {partition} with {peer}: {e}"));
                }
            }
        }
        if differing {
            report.partitions_differing += 1;
        }
        if !survey.candidates.is_empty() {
            let _serial = self.purge_lock.lock().await;
            self.purge_partition(layout, partition, survey.candidates, report)
                .await;
        }
    }

    /// Compares this node's partition with one peer's and repairs what
    /// differs, in both directions.
    async fn exchange(
        &self,
        partition: u32,
        mine: &MerkleSummary,
        peer: NodeId,
    ) -> Result<Exchanged> {
        let peers = self.cluster.peers();
        let theirs = peers
            .merkle_leaves(peer, partition, self.scan_timeout(mine.keys))
            .await
            .map_err(|e| peer_error(peer, "Merkle leaves", e))?;
        if theirs.leaves.len() != LEAVES {
            return Err(Error::Corrupt(format!(
                "{peer} sent {} Merkle leaves, expected {LEAVES}",
                theirs.leaves.len()
            )));
        }
        let mut pending = differing_leaves(&mine.leaves, &theirs.leaves);
        let mut outcome = Exchanged {
            differed: !pending.is_empty(),
            ..Exchanged::default()
        };
        let listing_timeout = self.scan_timeout(mine.keys.max(theirs.keys));
        while !pending.is_empty() {
            let listing = peers
                .key_digests(
                    peer,
                    partition,
                    pending.clone(),
                    Vec::new(),
                    listing_timeout,
                )
                .await
                .map_err(|e| peer_error(peer, "key digests", e))?;
            let theirs_by_leaf = self.group_by_leaf(partition, &pending, listing);
            // Complete: the listing recomputes the leaf the peer reported
            // (an empty leaf included). Partial: listed, but not all of it.
            let complete: BTreeSet<u32> = pending
                .iter()
                .copied()
                .filter(|leaf| {
                    let listed = theirs_by_leaf.get(leaf).map_or(&[][..], Vec::as_slice);
                    leaf_value(listed.iter().map(|(k, d)| (k.as_ref(), *d)))
                        == theirs.leaves[*leaf as usize]
                })
                .collect();
            let partial: BTreeSet<u32> = theirs_by_leaf
                .keys()
                .copied()
                .filter(|leaf| !complete.contains(leaf))
                .collect();
            if complete.is_empty() && partial.is_empty() {
                return Err(Error::Internal(format!(
                    "{peer} listed none of the {} leaves asked for",
                    pending.len()
                )));
            }
            let settled: Vec<u32> = complete.union(&partial).copied().collect();
            let local = self.leaf_digests(partition, &settled, usize::MAX).await?;
            let keys = keys_to_repair(&local, &theirs_by_leaf, &complete);
            self.repair_keys(peer, keys, &mut outcome).await;
            pending.retain(|leaf| !complete.contains(leaf) && !partial.contains(leaf));
        }
        Ok(outcome)
    }

    /// The peer's listing by leaf, keeping only pairs this node asked for
    /// and would accept: a key of the right partition and size, in a leaf
    /// that was asked for, with a real digest.
    fn group_by_leaf(
        &self,
        partition: u32,
        asked: &[u32],
        listing: Vec<KeyDigest>,
    ) -> BTreeMap<u32, Vec<(Bytes, u64)>> {
        let mut by_leaf: BTreeMap<u32, Vec<(Bytes, u64)>> = BTreeMap::new();
        for KeyDigest { key, digest } in listing {
            if digest == ABSENT
                || !self.valid_key(&key)
                || self.replica.partition_of(&key) != partition
            {
                continue;
            }
            let leaf = leaf_of(&key);
            if asked.binary_search(&leaf).is_ok() {
                by_leaf.entry(leaf).or_default().push((key, digest));
            }
        }
        by_leaf
    }

    /// Repairs `keys` with the peer, a few at a time.
    async fn repair_keys(&self, peer: NodeId, keys: Vec<Bytes>, outcome: &mut Exchanged) {
        let mut results =
            futures::stream::iter(keys.into_iter().map(|key| self.repair_key(peer, key)))
                .buffer_unordered(REPAIR_CONCURRENCY);
        while let Some(result) = results.next().await {
            match result {
                Ok(true) => outcome.repaired += 1,
                Ok(false) => {}
                // A key whose state cannot fit one message (stored before
                // the key state limit existed) would fail every pass and,
                // in a transfer's final sync, hold the transfer forever:
                // it is counted and skipped instead.
                Err(e) if is_too_large(&e) => {
                    tracing::warn!(%peer, "anti-entropy skips a key: {e}");
                    self.count("keys_too_large", 1);
                }
                Err(e) => {
                    outcome.failed += 1;
                    outcome.first_failure.get_or_insert(e);
                }
            }
        }
    }

    /// Brings one key to the merge of both replicas' versions. Returns
    /// whether either side changed.
    async fn repair_key(&self, peer: NodeId, key: Bytes) -> Result<bool> {
        // A repaired key costs at least a scanned one: charge it, so a
        // replica that missed everything is caught up at the budget's pace.
        let wait = self.charge(1);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let peers = self.cluster.peers();
        let timeout = self.rpc_timeout();
        let theirs = peers
            .read(peer, key.clone(), timeout)
            .await
            .map_err(|e| peer_error(peer, "local read", e))?;
        let (merged, changed_here) = match &theirs {
            Some(state) => {
                self.replica.check_incoming(state)?;
                let merged = self.replica.merge(key.clone(), state.clone()).await?;
                if merged.collapsed > 0 {
                    self.metrics.siblings_collapsed(merged.collapsed);
                }
                (Some(merged.state), merged.changed)
            }
            None => (self.replica.read(key.clone()).await?, false),
        };
        let mut pushed = false;
        if let Some(state) = merged {
            if !state.is_empty() && theirs.as_ref() != Some(&state) {
                peers
                    .replicate(peer, key, state.encode().into(), timeout)
                    .await
                    .map_err(|e| peer_error(peer, "replicate", e))?;
                pushed = true;
            }
        }
        Ok(changed_here || pushed)
    }
}

/// A failed call as an error naming the peer. (The peer layer told the
/// failure detector if the peer could not be reached; a scan that merely
/// ran out of time says nothing about the node's health and is not told.)
pub(super) fn peer_error(peer: NodeId, what: &str, e: PeerError) -> Error {
    Error::Internal(format!("{what} from {peer}: {e}"))
}

/// Whether a key's repair failed because its state is too large to send
/// or to store, rather than because of the peer.
fn is_too_large(e: &Error) -> bool {
    match e {
        Error::KeyStateTooLarge { .. } => true,
        Error::Internal(msg) => msg.contains(ringkv_peer::TOO_LARGE),
        _ => false,
    }
}

/// The keys to repair in the settled leaves: in complete leaves, every key
/// whose digest differs or that one side lacks; in partial leaves, only the
/// keys the peer listed whose digest differs here.
fn keys_to_repair(
    local: &[(Bytes, u64)],
    theirs_by_leaf: &BTreeMap<u32, Vec<(Bytes, u64)>>,
    complete: &BTreeSet<u32>,
) -> Vec<Bytes> {
    let mine: HashMap<&Bytes, u64> = local.iter().map(|(k, d)| (k, *d)).collect();
    let theirs: HashMap<&Bytes, u64> = theirs_by_leaf
        .values()
        .flatten()
        .map(|(k, d)| (k, *d))
        .collect();
    let mut keys: BTreeSet<Bytes> = BTreeSet::new();
    for (key, digest) in &theirs {
        if mine.get(key) != Some(digest) {
            keys.insert((*key).clone());
        }
    }
    for (key, digest) in local {
        if complete.contains(&leaf_of(key)) && theirs.get(key) != Some(digest) {
            keys.insert(key.clone());
        }
    }
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, d: u64) -> (Bytes, u64) {
        (Bytes::from(k.to_string()), d)
    }

    #[test]
    fn complete_leaves_compare_both_ways_partial_ones_only_what_was_listed() {
        let local = vec![
            pair("a", 1),
            pair("b", 2),
            pair("c", 3),
            pair("mine-only", 4),
        ];
        let theirs = vec![pair("a", 1), pair("b", 9), pair("theirs-only", 5)];
        let mut by_leaf: BTreeMap<u32, Vec<(Bytes, u64)>> = BTreeMap::new();
        for (k, d) in &theirs {
            by_leaf.entry(leaf_of(k)).or_default().push((k.clone(), *d));
        }
        let every_leaf: BTreeSet<u32> = (0..LEAVES as u32).collect();
        let all = keys_to_repair(&local, &by_leaf, &every_leaf);
        let names: Vec<&[u8]> = all.iter().map(|k| k.as_ref()).collect();
        assert_eq!(names, vec![&b"b"[..], b"c", b"mine-only", b"theirs-only"]);

        // With no complete leaf, keys only this node holds stay unknown.
        let partial_only = keys_to_repair(&local, &by_leaf, &BTreeSet::new());
        let names: Vec<&[u8]> = partial_only.iter().map(|k| k.as_ref()).collect();
        assert_eq!(names, vec![&b"b"[..], b"theirs-only"]);
    }
}
