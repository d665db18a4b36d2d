//! The Merkle summary of one partition: pure hashing, no I/O.
//!
//! Two replicas of a partition agree when they hold the same keys with the
//! same stored state. Comparing that key by key means shipping every key;
//! a Merkle summary lets them compare a few kilobytes instead and descend
//! only where they differ.
//!
//! # Shape
//!
//! The tree has two levels, which is all a partition needs:
//!
//! - [`LEAVES`] leaf buckets (256). A key falls in the bucket given by the
//!   top [`LEAF_BITS`] bits of its *key hash*, xxh3-64 with
//!   [`KEY_HASH_SEED`]. That seed differs from the ring's, so the bits that
//!   choose the partition (the ring hash's top bits, equal for every key of
//!   a partition) do not also choose the bucket: keys spread evenly over
//!   the buckets of every partition.
//! - The *root*, xxh3-64 of the leaves in order ([`root_of`]).
//!
//! Each key contributes an *entry hash*, xxh3-64 of (key hash ‖ digest)
//! ([`entry_hash`]), where the *digest* is xxh3-64 of the key's stored
//! encoding ([`state_digest`]). The version set encoding is canonical (one
//! state, one byte string), so equal states have equal digests on every
//! node without decoding anything. A leaf is the wrapping sum of its
//! entries: addition commutes, so the leaf does not depend on the order
//! keys are visited in, and unlike XOR two entries never cancel.
//!
//! A 64-bit digest of 0 is reserved for "absent" ([`ABSENT`]): the
//! `KeyDigests` RPC answers 0 for a key a replica does not hold, and
//! [`state_digest`] never returns it.
//!
//! # Why two levels and no stored tree
//!
//! The summary is rebuilt by scanning the partition whenever an exchange
//! needs it (see `scan.rs` for the measured cost) instead of being kept up
//! to date on every write: the write path stays untouched, a crash can
//! never leave a stale tree behind, and with 256 leaves per partition a
//! peer learns exactly which 1/256 of the partition to list. A deeper tree
//! would only pay off if the leaves themselves were too large to exchange,
//! and the leaf listing is already bounded by the reply budget
//! ([`DigestCollector`]).
//!
//! Every constant here is part of the wire protocol between replicas:
//! nodes that disagree on one of them see every partition as different.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use twox_hash::XxHash3_64;

/// A replica's Merkle summary of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleSummary {
    /// Hash of the leaves: equal roots mean equal partitions.
    pub root: u64,
    /// One hash per leaf bucket.
    pub leaves: Vec<u64>,
    /// Keys in the partition (tombstoned ones included).
    pub keys: u64,
}

/// Bits of the key hash that select a key's leaf.
pub const LEAF_BITS: u32 = 8;

/// Leaf buckets per partition: 2^[`LEAF_BITS`].
pub const LEAVES: usize = 1 << LEAF_BITS;

/// Seed of the key hash that picks a key's leaf; distinct from the ring's
/// seed so leaves split each partition evenly.
pub const KEY_HASH_SEED: u64 = 0x7269_6e67_6b76_ae01;

/// Seed of the digest of a key's stored state.
pub const DIGEST_SEED: u64 = 0x7269_6e67_6b76_ae02;

/// Seed of the hash that combines a key with its digest into a leaf entry.
pub const ENTRY_SEED: u64 = 0x7269_6e67_6b76_ae03;

/// Seed of the root hash over the leaves.
pub const ROOT_SEED: u64 = 0x7269_6e67_6b76_ae04;

/// The digest that means "this replica does not hold the key".
pub const ABSENT: u64 = 0;

/// Bytes a (key, digest) pair is charged in a reply beyond its key: the
/// digest and protobuf framing, rounded up.
pub const ENTRY_OVERHEAD_BYTES: usize = 16;

/// Digest of a key's stored encoding; never [`ABSENT`].
pub fn state_digest(encoded: &[u8]) -> u64 {
    match XxHash3_64::oneshot_with_seed(DIGEST_SEED, encoded) {
        // One value in 2^64 is remapped so that 0 keeps meaning "absent".
        ABSENT => 1,
        digest => digest,
    }
}

/// The key hash: selects the leaf and feeds the entry hash.
pub fn key_hash(key: &[u8]) -> u64 {
    XxHash3_64::oneshot_with_seed(KEY_HASH_SEED, key)
}

/// The leaf bucket of a key, from its key hash.
pub fn leaf_of_hash(key_hash: u64) -> u32 {
    // The top LEAF_BITS bits always fit a u32.
    (key_hash >> (u64::BITS - LEAF_BITS)) as u32
}

/// The leaf bucket of a key.
pub fn leaf_of(key: &[u8]) -> u32 {
    leaf_of_hash(key_hash(key))
}

/// One key's contribution to its leaf.
pub fn entry_hash(key_hash: u64, digest: u64) -> u64 {
    let mut input = [0u8; 16];
    input[..8].copy_from_slice(&key_hash.to_le_bytes());
    input[8..].copy_from_slice(&digest.to_le_bytes());
    XxHash3_64::oneshot_with_seed(ENTRY_SEED, &input)
}

/// The root over a full set of leaves.
pub fn root_of(leaves: &[u64]) -> u64 {
    let bytes: Vec<u8> = leaves.iter().flat_map(|l| l.to_le_bytes()).collect();
    XxHash3_64::oneshot_with_seed(ROOT_SEED, &bytes)
}

/// The value a leaf holding exactly these (key, digest) pairs has: lets a
/// node check that a peer's listing of a leaf is complete by comparing it
/// with the leaf value the peer reported.
pub fn leaf_value<'a>(entries: impl IntoIterator<Item = (&'a [u8], u64)>) -> u64 {
    entries
        .into_iter()
        .map(|(key, digest)| entry_hash(key_hash(key), digest))
        .fold(0u64, u64::wrapping_add)
}

/// The leaves where two summaries differ, ascending. Summaries with a
/// different number of leaves are treated as differing everywhere.
pub fn differing_leaves(mine: &[u64], theirs: &[u64]) -> Vec<u32> {
    if mine.len() != theirs.len() {
        return (0..LEAVES as u32).collect();
    }
    mine.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u32)
        .collect()
}

/// Accumulates a partition's summary as its keys are visited, in any order.
#[derive(Clone, Debug)]
pub struct TreeBuilder {
    leaves: Vec<u64>,
    keys: u64,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        Self {
            leaves: vec![0; LEAVES],
            keys: 0,
        }
    }
}

impl TreeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one key with the digest of its stored state.
    pub fn add(&mut self, key: &[u8], digest: u64) {
        let hash = key_hash(key);
        let leaf = &mut self.leaves[leaf_of_hash(hash) as usize];
        *leaf = leaf.wrapping_add(entry_hash(hash, digest));
        self.keys += 1;
    }

    pub fn finish(self) -> MerkleSummary {
        MerkleSummary {
            root: root_of(&self.leaves),
            leaves: self.leaves,
            keys: self.keys,
        }
    }
}

/// One (key, digest) pair held by a [`DigestCollector`], ordered by a rank
/// drawn per request so that an oversized leaf is sampled differently each
/// time.
#[derive(Debug, PartialEq, Eq)]
struct Ranked {
    rank: u64,
    key: Bytes,
    digest: u64,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.rank, &self.key).cmp(&(other.rank, &other.key))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Collects the (key, digest) pairs of the requested leaves of a partition
/// while it is scanned, keeping the answer within a byte budget so it fits
/// one gRPC message.
///
/// When everything does not fit, the answer is a prefix of the requested
/// leaves in ascending order, each leaf complete: the highest leaves are
/// dropped whole. The asker recognises a complete leaf by recomputing its
/// value ([`leaf_value`]) and asks again for the rest. When even the lowest
/// leaf alone does not fit, it is *sampled*: only the pairs with the
/// smallest ranks are kept, ranks being a hash seeded per request, so
/// successive exchanges see different parts of that leaf and still make
/// progress. Memory stays bounded by the budget either way.
#[derive(Debug)]
pub struct DigestCollector {
    /// Reply size limit in bytes (keys plus [`ENTRY_OVERHEAD_BYTES`] each).
    budget: usize,
    /// Which leaves were asked for.
    wanted: Vec<bool>,
    /// Leaves at or above this were dropped to fit the budget and are no
    /// longer collected.
    cutoff: u32,
    /// The pairs kept so far, per leaf.
    leaves: BTreeMap<u32, BinaryHeap<Ranked>>,
    /// Bytes charged for the pairs kept.
    bytes: usize,
    /// Seed of the ranks, chosen per request.
    rank_seed: u64,
}

impl DigestCollector {
    /// A collector for `leaves` (out-of-range numbers are ignored).
    pub fn new(leaves: &[u32], budget: usize, rank_seed: u64) -> Self {
        let mut wanted = vec![false; LEAVES];
        for &leaf in leaves {
            if let Some(w) = wanted.get_mut(leaf as usize) {
                *w = true;
            }
        }
        Self {
            budget,
            wanted,
            cutoff: LEAVES as u32,
            leaves: BTreeMap::new(),
            bytes: 0,
            rank_seed,
        }
    }

    fn cost(key: &[u8]) -> usize {
        key.len() + ENTRY_OVERHEAD_BYTES
    }

    /// Offers one scanned key; kept if its leaf was asked for and fits.
    pub fn offer(&mut self, key: &Bytes, digest: u64) {
        let hash = key_hash(key);
        let leaf = leaf_of_hash(hash);
        if leaf >= self.cutoff || !self.wanted[leaf as usize] {
            return;
        }
        let rank = XxHash3_64::oneshot_with_seed(self.rank_seed, &hash.to_le_bytes());
        self.leaves.entry(leaf).or_default().push(Ranked {
            rank,
            key: key.clone(),
            digest,
        });
        self.bytes += Self::cost(key);
        while self.bytes > self.budget {
            if self.leaves.len() > 1 {
                if let Some((dropped, heap)) = self.leaves.pop_last() {
                    self.bytes -= heap.iter().map(|r| Self::cost(&r.key)).sum::<usize>();
                    self.cutoff = dropped;
                }
            } else if let Some(mut only) = self.leaves.first_entry() {
                match only.get_mut().pop() {
                    Some(r) => self.bytes -= Self::cost(&r.key),
                    None => break,
                }
            } else {
                break;
            }
        }
    }

    /// The pairs kept, by leaf.
    pub fn finish(self) -> Vec<(Bytes, u64)> {
        self.leaves
            .into_values()
            .flat_map(|heap| heap.into_iter().map(|r| (r.key, r.digest)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> Bytes {
        Bytes::from(format!("key-{i}"))
    }

    fn build(entries: &[(Bytes, u64)]) -> MerkleSummary {
        let mut tree = TreeBuilder::new();
        for (k, d) in entries {
            tree.add(k, *d);
        }
        tree.finish()
    }

    fn sample(n: u32) -> Vec<(Bytes, u64)> {
        (0..n)
            .map(|i| (key(i), state_digest(format!("state-{i}").as_bytes())))
            .collect()
    }

    #[test]
    fn empty_partition_has_zero_leaves_and_a_fixed_root() {
        let s = TreeBuilder::new().finish();
        assert_eq!(s.keys, 0);
        assert_eq!(s.leaves, vec![0; LEAVES]);
        assert_eq!(s.root, root_of(&[0; LEAVES]));
        assert_eq!(s, build(&[]));
        assert_ne!(s, build(&sample(1)));
    }

    #[test]
    fn one_changed_key_changes_exactly_its_leaf_and_the_root() {
        let entries = sample(2000);
        let before = build(&entries);
        let mut changed = entries.clone();
        changed[777].1 = state_digest(b"another state");
        let after = build(&changed);
        let diff = differing_leaves(&before.leaves, &after.leaves);
        assert_eq!(diff, vec![leaf_of(&entries[777].0)]);
        assert_ne!(before.root, after.root);
        assert_eq!(before.keys, after.keys);
    }

    #[test]
    fn a_missing_key_changes_exactly_its_leaf() {
        let entries = sample(500);
        let full = build(&entries);
        let short = build(&entries[1..]);
        assert_eq!(
            differing_leaves(&full.leaves, &short.leaves),
            vec![leaf_of(&entries[0].0)]
        );
        assert_eq!(short.keys, full.keys - 1);
    }

    #[test]
    fn keys_spread_over_all_leaves_within_one_partition() {
        // Keys of one ring partition share their ring-hash top bits; the
        // leaf hash must still spread them.
        let mut counts = vec![0u32; LEAVES];
        for k in (0..2_000_000u32).map(key) {
            if crate::ring::partition_of(&k, 256) == 17 {
                counts[leaf_of(&k) as usize] += 1;
            }
        }
        // About 30 keys per leaf expected; a correlated hash would leave
        // most leaves empty and a few full.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min >= 8 && *max <= 64, "min {min} max {max}");
    }

    #[test]
    fn digest_is_never_absent_and_tracks_content() {
        assert_ne!(state_digest(b""), ABSENT);
        assert_ne!(state_digest(b"a"), state_digest(b"b"));
        assert_eq!(state_digest(b"a"), state_digest(b"a"));
    }

    #[test]
    fn differing_leaves_of_mismatched_shapes_is_everything() {
        assert_eq!(differing_leaves(&[0; 3], &[0; 4]).len(), LEAVES);
        assert!(differing_leaves(&[1, 2], &[1, 2]).is_empty());
        assert_eq!(differing_leaves(&[1, 2, 3], &[1, 5, 3]), vec![1]);
    }

    #[test]
    fn leaf_value_matches_the_tree() {
        let entries = sample(3000);
        let tree = build(&entries);
        for leaf in [0u32, 5, 255] {
            let value = leaf_value(
                entries
                    .iter()
                    .filter(|(k, _)| leaf_of(k) == leaf)
                    .map(|(k, d)| (k.as_ref(), *d)),
            );
            assert_eq!(value, tree.leaves[leaf as usize]);
        }
    }

    fn leaves_in(pairs: &[(Bytes, u64)]) -> Vec<u32> {
        let mut leaves: Vec<u32> = pairs.iter().map(|(k, _)| leaf_of(k)).collect();
        leaves.dedup();
        leaves
    }

    #[test]
    fn collector_returns_only_the_leaves_asked_for() {
        let entries = sample(3000);
        let asked = [3u32, 40, 200];
        let mut c = DigestCollector::new(&asked, usize::MAX, 1);
        for (k, d) in &entries {
            c.offer(k, *d);
        }
        let got = c.finish();
        let expected = entries
            .iter()
            .filter(|(k, _)| asked.contains(&leaf_of(k)))
            .count();
        assert_eq!(got.len(), expected);
        assert_eq!(leaves_in(&got), asked);
    }

    #[test]
    fn collector_over_budget_keeps_a_prefix_of_whole_leaves() {
        let entries = sample(20_000);
        let tree = build(&entries);
        let all: Vec<u32> = (0..LEAVES as u32).collect();
        let budget = 4096;
        let mut c = DigestCollector::new(&all, budget, 7);
        // Offer in a scrambled order: the scan visits keys by key order,
        // not by leaf.
        for (k, d) in entries.iter().rev() {
            c.offer(k, *d);
        }
        let got = c.finish();
        let bytes: usize = got
            .iter()
            .map(|(k, _)| k.len() + ENTRY_OVERHEAD_BYTES)
            .sum();
        assert!(bytes <= budget);
        let leaves = leaves_in(&got);
        assert!(!leaves.is_empty());
        assert_eq!(leaves, (0..leaves.len() as u32).collect::<Vec<_>>());
        for leaf in leaves {
            let value = leaf_value(
                got.iter()
                    .filter(|(k, _)| leaf_of(k) == leaf)
                    .map(|(k, d)| (k.as_ref(), *d)),
            );
            assert_eq!(value, tree.leaves[leaf as usize], "leaf {leaf} incomplete");
        }
    }

    #[test]
    fn an_oversized_leaf_is_sampled_differently_per_request() {
        let entries = sample(20_000);
        let leaf = leaf_of(&entries[0].0);
        let in_leaf = entries.iter().filter(|(k, _)| leaf_of(k) == leaf).count();
        let budget = 10 * (12 + ENTRY_OVERHEAD_BYTES);
        let run = |seed| {
            let mut c = DigestCollector::new(&[leaf], budget, seed);
            for (k, d) in &entries {
                c.offer(k, *d);
            }
            c.finish()
        };
        let (a, b) = (run(1), run(2));
        assert!(!a.is_empty() && a.len() < in_leaf);
        assert!(a.iter().all(|(k, _)| leaf_of(k) == leaf));
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn summary_is_independent_of_visit_order(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..16), any::<u64>(), 0..200),
            seed in any::<u64>(),
        ) {
            let pairs: Vec<(Bytes, u64)> = entries
                .into_iter()
                .map(|(k, d)| (Bytes::from(k), d))
                .collect();
            let mut shuffled = pairs.clone();
            // A deterministic permutation driven by the seed.
            shuffled.sort_by_key(|(k, _)| XxHash3_64::oneshot_with_seed(seed, k));
            prop_assert_eq!(build(&pairs), build(&shuffled));
        }
    }
}
