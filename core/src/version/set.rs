//! [`VersionSet`]: a key's stored state as a dotted version vector set, and
//! the two operations that change it, write and merge.

use std::cmp::Ordering;

use bytes::Bytes;

use super::clock::Timestamp;
use super::dot::{Dot, VersionVector};
use super::NodeId;

/// What a version says about its key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Value {
    /// The value a client put.
    Data(Bytes),
    /// A delete. Kept as a version (not as the absence of one) so that it
    /// supersedes, through merges, the versions it deleted on replicas that
    /// have not heard of the delete yet.
    Tombstone,
}

/// One write: a value (or tombstone) named by its dot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Version {
    /// Names the write; unique among every version of the key.
    pub dot: Dot,
    /// HLC time of the write, used to order siblings for `resolve = LWW`,
    /// to pick which siblings the cap collapses, and for TTL bookkeeping.
    pub timestamp: Timestamp,
    pub value: Value,
    /// Unix ms after which the value reads as absent (TTL); None = never.
    pub expires_at_ms: Option<u64>,
}

impl Version {
    pub fn is_tombstone(&self) -> bool {
        matches!(self.value, Value::Tombstone)
    }

    /// Whether a read at `now_ms` returns this version: it holds data and
    /// has not expired. A version expires *at* `expires_at_ms`, so a TTL of
    /// `t` ms written at `w` is readable for exactly `[w, w + t)`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// The read-side order of versions: by HLC time, ties (which only
    /// happen across nodes) broken by dot so every replica agrees.
    fn age_key(&self) -> (Timestamp, Dot) {
        (self.timestamp, self.dot)
    }
}

/// Result of [`VersionSet::write`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WriteOutcome {
    /// The dot given to the new version; the client's next context covers it.
    pub dot: Dot,
    /// How many older siblings the cap collapsed (for the metric).
    pub collapsed: usize,
}

/// A key's stored state: the causal context plus the concurrent versions
/// (siblings), each with its own dot. See the module docs for the model and
/// its invariants; every method here preserves them.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct VersionSet {
    /// Every dot this state accounts for: each is either held in `versions`
    /// or was superseded by something held (or seen by a client who wrote).
    context: VersionVector,
    /// The siblings, sorted by dot, no two with the same dot, every dot
    /// covered by `context`.
    versions: Vec<Version>,
}

impl VersionSet {
    pub fn new() -> Self {
        VersionSet::default()
    }

    /// Assembles a set from parts the codec has already validated against
    /// the invariants.
    pub(super) fn from_validated(context: VersionVector, versions: Vec<Version>) -> Self {
        VersionSet { context, versions }
    }

    /// The causal context. A client that reads this key gets the context of
    /// the merged replies back (encoded) and passes it to its next write so
    /// that write supersedes exactly what the client saw.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// All versions, tombstones and expired ones included, sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// No versions at all (tombstones count as versions): nothing was ever
    /// written, as far as this state knows.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// DVV sync: afterwards `self` is the join of both states.
    ///
    /// A version of `self` survives if `other` holds the same dot or has
    /// never seen it (`other`'s context does not cover it); a version of
    /// `other` survives if `self` has never seen it. A version dropped here
    /// was therefore seen *and superseded* by the other side. The contexts
    /// join pointwise.
    ///
    /// Commutative, associative and idempotent, so replicas converge
    /// whatever the order of exchanges. It never applies the sibling cap:
    /// capping is a local decision of the coordinator, and doing it inside
    /// merge would break those laws.
    pub fn merge(&mut self, other: &VersionSet) {
        let mine = std::mem::take(&mut self.versions);
        let theirs = &other.versions;
        let mut kept = Vec::with_capacity(mine.len() + theirs.len());
        for v in mine {
            match theirs.binary_search_by(|o| o.dot.cmp(&v.dot)) {
                Ok(i) => match theirs.get(i) {
                    Some(o) if newer_content(o, &v) => kept.push(o.clone()),
                    _ => kept.push(v),
                },
                Err(_) if !other.context.covers(&v.dot) => kept.push(v),
                Err(_) => {}
            }
        }
        // A dot of `other` not covered by our context cannot be one we hold
        // (we cover all we hold), so this adds no duplicates.
        kept.extend(
            theirs
                .iter()
                .filter(|o| !self.context.covers(&o.dot))
                .cloned(),
        );
        kept.sort_unstable_by_key(|v| v.dot);
        self.versions = kept;
        self.context.merge(&other.context);
    }

    /// [`merge`](Self::merge) without modifying either input.
    pub fn merged(&self, other: &VersionSet) -> VersionSet {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Applies a write coordinated by `node`.
    ///
    /// - With `client_context` (from an earlier read), the write supersedes
    ///   exactly the versions that context covers and stays a sibling of the
    ///   rest. The client context is also joined into the set's context:
    ///   the client saw those dots, so versions with them that this
    ///   coordinator has not received yet are superseded too and are dropped
    ///   when they arrive by merge (as in Riak's `dvvset:update/3`). Contexts
    ///   must therefore come from a read of the *same key*; a context from
    ///   elsewhere can hide concurrent writes.
    /// - Without one (a blind overwrite), it supersedes every version this
    ///   coordinator holds, so plain overwrites never create siblings.
    ///
    /// The new dot's counter is the larger of the write's HLC `timestamp`
    /// (as a number) and one past every counter for `node` that this state
    /// or the client has seen (taken after joining the client context).
    /// Either bound alone keeps the dot out of every context that existed
    /// before *on this state*; the timestamp bound also keeps it out of
    /// every context anywhere, because `node` issues each HLC timestamp
    /// once (the replica's clock persists a floor ahead of use, see
    /// `replica::clock`). That is what makes a node whose disk went back in
    /// time (a restored backup, a lost WAL tail) still issue fresh dots:
    /// its stored counters are old, its clock is not. Finally the sibling
    /// cap is enforced, never dropping the new version itself (an
    /// acknowledged write must be readable).
    ///
    /// Callers refuse contexts whose counters lie beyond any issued
    /// timestamp (`replica::clock::NodeClock::check_counters`), so the
    /// `+ 1` cannot saturate onto a dot already held.
    pub fn write(
        &mut self,
        node: NodeId,
        client_context: Option<&VersionVector>,
        timestamp: Timestamp,
        value: Value,
        expires_at_ms: Option<u64>,
        max_siblings: usize,
    ) -> WriteOutcome {
        match client_context {
            Some(seen) => {
                self.versions.retain(|v| !seen.covers(&v.dot));
                self.context.merge(seen);
            }
            None => self.versions.clear(),
        }
        let dot = Dot {
            node,
            counter: self.context.get(node).saturating_add(1).max(timestamp.0),
        };
        // Only a forged context holding u64::MAX can make the counter
        // saturate onto a held dot (callers refuse such contexts);
        // replacing it keeps dots unique within this state regardless.
        self.versions.retain(|v| v.dot != dot);
        self.context.insert(node, dot.counter);
        let at = self.versions.partition_point(|v| v.dot < dot);
        self.versions.insert(
            at,
            Version {
                dot,
                timestamp,
                value,
                expires_at_ms,
            },
        );
        let collapsed = self.collapse_oldest(max_siblings, Some(dot));
        WriteOutcome { dot, collapsed }
    }

    /// If more than `max_siblings` versions are held, drops the oldest by
    /// (timestamp, dot) until `max_siblings` remain. Their dots stay covered
    /// by the context, so every replica that merges this state treats them
    /// as superseded. Returns how many were dropped. A cap of 0 is treated as
    /// 1: a key never loses all its versions to the cap.
    pub fn enforce_cap(&mut self, max_siblings: usize) -> usize {
        self.collapse_oldest(max_siblings, None)
    }

    /// Keeps the encoded state within `max_bytes`
    /// (`limits.max_key_state_bytes`) by the rule of the sibling cap: drops
    /// the oldest versions by (timestamp, dot) until it fits or one version
    /// is left. Their dots stay covered by the context, so every replica
    /// that merges this state treats them as superseded, and replicas that
    /// merged the same versions in any order converge. Used after merges
    /// (two coordinators each accepted a large sibling concurrently); a
    /// write that would pass the limit is refused instead, before it is
    /// acknowledged. Returns how many versions were dropped; the state may
    /// still exceed `max_bytes` when its last version or its vector alone
    /// does (the caller checks [`encoded_len`](Self::encoded_len)).
    pub fn fit_within(&mut self, max_bytes: usize) -> usize {
        let mut size = self.encoded_len();
        if size <= max_bytes {
            return 0;
        }
        let mut by_age: Vec<(Timestamp, Dot)> =
            self.versions.iter().map(Version::age_key).collect();
        by_age.sort_unstable();
        let mut dropped = 0;
        for (_, dot) in by_age {
            if size <= max_bytes || self.versions.len() <= 1 {
                break;
            }
            self.versions.retain(|v| v.dot != dot);
            dropped += 1;
            size = self.encoded_len();
        }
        dropped
    }

    /// The cap, sparing `keep` (the version a write just added).
    fn collapse_oldest(&mut self, max_siblings: usize, keep: Option<Dot>) -> usize {
        let max = max_siblings.max(1);
        let excess = self.versions.len().saturating_sub(max);
        if excess == 0 {
            return 0;
        }
        let mut by_age: Vec<(Timestamp, Dot)> = self
            .versions
            .iter()
            .filter(|v| Some(v.dot) != keep)
            .map(Version::age_key)
            .collect();
        by_age.sort_unstable();
        let mut doomed: Vec<Dot> = by_age.into_iter().take(excess).map(|(_, d)| d).collect();
        doomed.sort_unstable();
        let before = self.versions.len();
        self.versions
            .retain(|v| doomed.binary_search(&v.dot).is_err());
        before - self.versions.len()
    }

    /// The versions a read returns at `now_ms`: data that has not expired,
    /// oldest first by (timestamp, dot).
    pub fn visible(&self, now_ms: u64) -> Vec<&Version> {
        let mut live: Vec<&Version> = self.versions.iter().filter(|v| v.is_live(now_ms)).collect();
        live.sort_unstable_by_key(|v| v.age_key());
        live
    }

    /// The visible version with the greatest (timestamp, dot): the answer
    /// for `resolve = LWW`. None when nothing is visible.
    pub fn lww(&self, now_ms: u64) -> Option<&Version> {
        self.versions
            .iter()
            .filter(|v| v.is_live(now_ms))
            .max_by_key(|v| v.age_key())
    }

    /// The largest timestamp held, to feed [`HybridClock::observe`] so the
    /// next local write orders after everything this key already holds.
    ///
    /// [`HybridClock::observe`]: super::HybridClock::observe
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        self.versions.iter().map(|v| v.timestamp).max()
    }

    /// How many dots both states hold with different contents. A dot names
    /// one write, so this is never above zero unless some node issued a
    /// dot twice (its disk went back in time without its clock floor, or a
    /// bug): merge still converges (see `newer_content`), but one of the
    /// two writes is lost, and the replica reports it.
    pub fn conflicting_dots(&self, other: &VersionSet) -> usize {
        self.versions
            .iter()
            .filter(|v| {
                other
                    .versions
                    .binary_search_by(|o| o.dot.cmp(&v.dot))
                    .ok()
                    .and_then(|i| other.versions.get(i))
                    .is_some_and(|o| content_cmp(o, v) != Ordering::Equal)
            })
            .count()
    }

    /// The largest dot counter or context entry held, for any node: checked
    /// against the clock bound on states that arrive from peers.
    pub fn max_counter(&self) -> u64 {
        let dots = self.versions.iter().map(|v| v.dot.counter);
        let context = self.context.iter().map(|(_, c)| c);
        dots.chain(context).max().unwrap_or(0)
    }

    /// True when every version is a tombstone: the whole key is deleted.
    /// Vacuously true for an empty set.
    pub fn all_tombstones(&self) -> bool {
        self.versions.iter().all(Version::is_tombstone)
    }
}

/// Whether `a` should replace `b` when both carry the same dot.
///
/// A dot names one write, so two replicas holding it normally hold equal
/// versions. Only a node that lost acknowledged data without changing its
/// id (e.g. unsynced WAL on power loss) can reissue a dot with other
/// contents; then any fixed total order keeps merge commutative and
/// associative, and "latest timestamp wins" is the least surprising one.
fn newer_content(a: &Version, b: &Version) -> bool {
    content_cmp(a, b) == Ordering::Greater
}

fn content_cmp(a: &Version, b: &Version) -> Ordering {
    fn payload(v: &Version) -> Option<&[u8]> {
        match &v.value {
            Value::Data(bytes) => Some(bytes),
            Value::Tombstone => None,
        }
    }
    (a.timestamp, a.expires_at_ms, payload(a)).cmp(&(b.timestamp, b.expires_at_ms, payload(b)))
}

#[cfg(test)]
mod tests;
