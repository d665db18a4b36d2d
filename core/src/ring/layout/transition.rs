//! Layouts in transition: what a committed change looks like while the
//! partitions it moves are being streamed.
//!
//! Committing a change publishes a layout whose rows are the *target*
//! replicas and which carries the layout it replaces as `previous`. While
//! it is in force, a partition whose replica set changed has two sets, and
//! every request needs its quorum **in each** ([`Layout::quorum_sets`]):
//!
//! * a write is acknowledged on W old replicas and on W new ones;
//! * a read waits for R old replicas and R new ones. The new replicas may
//!   not hold the partition yet, but the old quorum does, so the merged
//!   answer misses nothing; the new quorum is what a node that already
//!   holds the next, settled layout writes to.
//!
//! The old set coordinates ([`Layout::coordinators`]): it holds
//! everything, so a blind write supersedes what it should.
//!
//! Nodes learn a layout by gossip, one after the other, so two consecutive
//! layouts are always in use at once somewhere. Any two consecutive phases
//! of a change share a replica set both read and write in: settled (old
//! set) and in transition (both sets) share the old set; in transition and
//! retired (new set) share the new set. Settled and retired share none, so
//! they must never be in use at once: the claimant retires a change only
//! once every member has shown it holds the transition, and new replicas
//! start streaming only then (`rebalance::safety`, rule 4).
//!
//! A replica that gains a partition streams it from the old set
//! ([`Layout::incoming`]). When every gaining node reports its transfers
//! done, the claimant publishes [`Layout::retired`]: the same rows, no
//! `previous`, one version up. From then on the old replicas no longer own
//! the partitions they lost; each deletes one only after it has synced it
//! with every new replica (see `rebalance::safety`).
//!
//! A member whose data directory was lost comes back under a new id; it
//! takes the old id's place through the same kind of change
//! ([`Layout::replacing`]), so the empty node receives its partitions by
//! transfer and, until they are in, never makes a quorum alone: the old
//! set's quorum is needed beside it.

use std::collections::BTreeSet;

use super::{Layout, MemberSpec};
use crate::error::{Error, Result};
use crate::version::NodeId;

impl Layout {
    /// This layout as the target of a change from `previous`, whose sets
    /// keep taking part in every request until the transfers finish. A `previous` that is
    /// itself in transition contributes its target rows.
    pub fn with_previous(mut self, previous: &Layout) -> Result<Layout> {
        if previous.partitions != self.partitions || previous.version >= self.version {
            return Err(Error::FailedPrecondition(format!(
                "layout v{} cannot follow v{} ({} and {} partitions)",
                self.version, previous.version, self.partitions, previous.partitions
            )));
        }
        if let (Some(mine), Some(theirs)) = (self.cluster, previous.cluster) {
            if mine != theirs {
                return Err(Error::FailedPrecondition(format!(
                    "layout v{} of cluster {mine} cannot follow v{} of cluster {theirs}",
                    self.version, previous.version
                )));
            }
        }
        let mut previous = previous.clone();
        previous.previous = None;
        // The pair's cluster id is the target's; the inner layout carries
        // none, so a transition has exactly one encoding.
        self.cluster = self.cluster.or(previous.cluster.take());
        previous.cluster = None;
        self.previous = Some(Box::new(previous));
        Ok(self)
    }

    /// The layout being replaced, while this one's transfers run.
    pub fn previous(&self) -> Option<&Layout> {
        self.previous.as_deref()
    }

    /// Whether a change is still being streamed.
    pub fn in_transition(&self) -> bool {
        self.previous.is_some()
    }

    /// Whether `partition`'s replica set differs from the previous layout's.
    pub fn is_moving(&self, partition: u32) -> bool {
        match &self.previous {
            None => false,
            Some(prev) => {
                let (old, new) = (prev.replicas(partition), self.replicas(partition));
                old.len() != new.len() || new.iter().any(|n| !old.contains(n))
            }
        }
    }

    /// The replicas that coordinate requests for `partition`: the old set
    /// while the partition moves, since it holds everything.
    pub fn coordinators(&self, partition: u32) -> &[NodeId] {
        match &self.previous {
            Some(prev) if self.is_moving(partition) => prev.replicas(partition),
            _ => self.replicas(partition),
        }
    }

    /// The replica sets a request (read or write) needs its quorum in: the
    /// partition's set, or the old and the new set while it moves.
    pub fn quorum_sets(&self, partition: u32) -> Vec<&[NodeId]> {
        match &self.previous {
            Some(prev) if self.is_moving(partition) => {
                vec![prev.replicas(partition), self.replicas(partition)]
            }
            _ => vec![self.replicas(partition)],
        }
    }

    /// Every node a request for `partition` goes to: the old set first (in
    /// its preference order), then the new replicas.
    pub fn request_replicas(&self, partition: u32) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for set in self.quorum_sets(partition) {
            for node in set {
                if !out.contains(node) {
                    out.push(*node);
                }
            }
        }
        out
    }

    /// Whether `node` holds `partition` now: in the old or the new set.
    pub fn holds(&self, node: NodeId, partition: u32) -> bool {
        self.quorum_sets(partition)
            .iter()
            .any(|s| s.contains(&node))
    }

    /// Partitions `node` gains in this change, each with the old replicas
    /// to stream it from (in preference order). Empty outside a transition.
    pub fn incoming(&self, node: NodeId) -> Vec<(u32, Vec<NodeId>)> {
        let Some(prev) = &self.previous else {
            return Vec::new();
        };
        (0..self.partitions)
            .filter(|&p| self.replicas(p).contains(&node) && !prev.replicas(p).contains(&node))
            .map(|p| (p, prev.replicas(p).to_vec()))
            .collect()
    }

    /// The nodes that gain at least one partition in this change.
    pub fn receivers(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        if let Some(prev) = &self.previous {
            for p in 0..self.partitions {
                for node in self.replicas(p) {
                    if !prev.replicas(p).contains(node) && !out.contains(node) {
                        out.push(*node);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The layout that ends the transition: the same rows, no previous
    /// layout, one version up. The old replicas then let go.
    pub fn retired(&self) -> Result<Layout> {
        let mut next = self.clone();
        next.previous = None;
        next.version = self
            .version
            .checked_add(1)
            .ok_or_else(|| Error::FailedPrecondition("layout version overflow".to_string()))?;
        Ok(next)
    }

    /// The change that puts `fresh` in the place of `old`: a member whose
    /// data directory was lost and which came back under a new id. The
    /// result is in transition from this layout, like any committed change:
    /// `fresh` streams `old`'s partitions from the surviving replicas, and a
    /// read or write needs its quorum in the old set (where `fresh` is not)
    /// and in the new one, so the empty node never stands in for a replica
    /// that held the data. `replication` is the
    /// configured N.
    pub fn replacing(&self, old: NodeId, fresh: MemberSpec, replication: u32) -> Result<Layout> {
        if self.in_transition() {
            return Err(Error::FailedPrecondition(format!(
                "layout v{} is still being transferred; a replacement waits for it",
                self.version
            )));
        }
        if !self.contains(old) || self.contains(fresh.id) {
            return Err(Error::FailedPrecondition(format!(
                "cannot replace {old} by {}: the first must be a member of layout v{} and the second not",
                fresh.id, self.version
            )));
        }
        let members: Vec<MemberSpec> = self
            .members
            .iter()
            .map(|m| {
                if m.id == old {
                    fresh.clone()
                } else {
                    m.clone()
                }
            })
            .collect();
        Layout::compute(&members, replication, self.partitions, Some(self))?.with_previous(self)
    }

    /// Partitions that this layout, as the target of a change from
    /// `previous`, would leave with no replica that ever held their data:
    /// every old replica is in `gone` (removed by an operator, or known to
    /// have lost its data), so no new replica has anyone to stream from. A
    /// change with any such partition is refused.
    pub fn partitions_without_source(
        &self,
        previous: &Layout,
        gone: &BTreeSet<NodeId>,
    ) -> Vec<u32> {
        (0..self.partitions.min(previous.partitions))
            .filter(|&p| {
                let old = previous.replicas(p);
                !old.is_empty()
                    && old
                        .iter()
                        .all(|n| gone.contains(n) && !self.replicas(p).contains(n))
            })
            .collect()
    }

    /// The fewest partition replicas any balanced layout over this layout's
    /// members must copy, coming from `previous`: what `plan` compares its
    /// copies with. It is the larger of what new shares force
    /// (Σ max(0, ⌊share⌋ − held before)) and the replicas of departed
    /// members, which must be re-created somewhere.
    pub fn minimum_moves_from(&self, previous: &Layout) -> usize {
        let held_before = previous.replica_counts();
        let held: Vec<usize> = self
            .members
            .iter()
            .map(|m| held_before.get(&m.id).copied().unwrap_or(0))
            .collect();
        let by_shares = super::targets::minimum_copies(
            &self.members,
            self.replication as usize,
            u64::from(self.partitions),
            &held,
        );
        let departed: usize = held_before
            .iter()
            .filter(|(id, _)| !self.contains(**id))
            .map(|(_, &c)| c)
            .sum();
        by_shares.max(departed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemberSpec;
    use super::*;

    fn members(ids: &[u64]) -> Vec<MemberSpec> {
        ids.iter()
            .map(|&id| MemberSpec {
                id: NodeId(id),
                zone: "z".into(),
                weight: 1,
            })
            .collect()
    }

    fn grown() -> (Layout, Layout) {
        let v1 = Layout::compute(&members(&[1, 2, 3]), 3, 64, None).unwrap();
        let v2 = Layout::compute(&members(&[1, 2, 3, 4]), 3, 64, Some(&v1))
            .unwrap()
            .with_previous(&v1)
            .unwrap();
        (v1, v2)
    }

    #[test]
    fn moving_partitions_are_coordinated_by_the_old_set_and_need_both() {
        let (v1, v2) = grown();
        let moving: Vec<u32> = (0..64).filter(|&p| v2.is_moving(p)).collect();
        assert!(!moving.is_empty() && moving.len() < 64);
        for p in 0..64 {
            assert_eq!(v2.coordinators(p), v1.replicas(p));
            let union = v2.request_replicas(p);
            for node in v1.replicas(p).iter().chain(v2.replicas(p)) {
                assert!(union.contains(node));
            }
            assert_eq!(v2.quorum_sets(p).len(), if v2.is_moving(p) { 2 } else { 1 });
        }
        let incoming = v2.incoming(NodeId(4));
        assert_eq!(incoming.len(), v2.partitions_of(NodeId(4)).len());
        for (p, sources) in incoming {
            assert!(v2.is_moving(p));
            assert_eq!(sources, v1.replicas(p));
        }
        assert_eq!(v2.receivers(), vec![NodeId(4)]);
    }

    #[test]
    fn retiring_drops_the_old_sets() {
        let (_, v2) = grown();
        let v3 = v2.retired().unwrap();
        assert_eq!(v3.version(), v2.version() + 1);
        assert!(!v3.in_transition());
        for p in 0..64 {
            assert_eq!(v3.coordinators(p), v2.replicas(p));
            assert_eq!(v3.quorum_sets(p).len(), 1);
        }
        assert!(v3.incoming(NodeId(4)).is_empty());
    }

    #[test]
    fn a_transition_survives_encoding() {
        let (_, v2) = grown();
        let decoded = Layout::decode(&v2.encode()).unwrap();
        assert_eq!(decoded, v2);
        assert!(decoded.in_transition());
        // A settled layout keeps the original format byte.
        let v3 = v2.retired().unwrap();
        assert_eq!(v3.encode()[0], 1);
        assert_eq!(Layout::decode(&v3.encode()).unwrap(), v3);
    }

    #[test]
    fn corrupt_transitions_are_refused() {
        let (_, v2) = grown();
        let bytes = v2.encode();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(Layout::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        assert!(Layout::decode(&flipped).is_err());
        // A previous layout must be older.
        let (v1, _) = grown();
        assert!(v1.clone().with_previous(&v1).is_err());
    }

    #[test]
    fn a_replacement_is_a_transition_the_fresh_node_never_makes_a_quorum_alone_in() {
        let v1 = Layout::compute(&members(&[1, 2, 3, 4]), 3, 64, None).unwrap();
        let fresh = MemberSpec {
            id: NodeId(9),
            zone: "z".into(),
            weight: 1,
        };
        let v2 = v1.replacing(NodeId(3), fresh.clone(), 3).unwrap();
        assert!(v2.in_transition());
        assert_eq!(v2.version(), v1.version() + 1);
        assert!(!v2.contains(NodeId(3)) && v2.contains(NodeId(9)));
        // The fresh node takes the old id's partitions and nothing else.
        assert_eq!(v2.partitions_of(NodeId(9)), v1.partitions_of(NodeId(3)));
        assert_eq!(v2.receivers(), vec![NodeId(9)]);
        for p in 0..64 {
            let old = v1.replicas(p);
            if !old.contains(&NodeId(3)) {
                assert!(!v2.is_moving(p));
                continue;
            }
            // The old set coordinates, where the empty node is not.
            assert_eq!(v2.coordinators(p), old);
            assert!(!v2.coordinators(p).contains(&NodeId(9)));
            // Requests: a quorum among the old replicas (the wiped id counts
            // as the failed replica it is) and among the new ones.
            assert_eq!(v2.quorum_sets(p), vec![old, v2.replicas(p)]);
            assert!(v2.holds(NodeId(9), p));
        }
        // It ends like any change.
        let v3 = v2.retired().unwrap();
        assert_eq!(v3.coordinators(v1.partitions_of(NodeId(3))[0]).len(), 3);
        // Only a settled layout, a member and a newcomer.
        assert!(v2.replacing(NodeId(1), fresh.clone(), 3).is_err());
        assert!(v1.replacing(NodeId(7), fresh.clone(), 3).is_err());
        let member = MemberSpec {
            id: NodeId(2),
            ..fresh
        };
        assert!(v1.replacing(NodeId(3), member, 3).is_err());
    }

    #[test]
    fn a_change_whose_old_replicas_are_all_gone_has_no_source() {
        let v1 = Layout::compute(&members(&[1, 2, 3, 4, 5]), 2, 64, None).unwrap();
        let next = Layout::compute(&members(&[1, 2, 3]), 2, 64, Some(&v1)).unwrap();
        // Removing one node of two replicas leaves a source everywhere.
        let one: BTreeSet<NodeId> = [NodeId(4)].into();
        let next_one = Layout::compute(&members(&[1, 2, 3, 5]), 2, 64, Some(&v1)).unwrap();
        assert!(next_one.partitions_without_source(&v1, &one).is_empty());
        // Removing both replicas of a partition leaves it without one.
        let both: BTreeSet<NodeId> = [NodeId(4), NodeId(5)].into();
        let orphans = next.partitions_without_source(&v1, &both);
        let expected: Vec<u32> = (0..64)
            .filter(|&p| v1.replicas(p).iter().all(|n| both.contains(n)))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(orphans, expected);
        // Leaving nodes are not gone: they stream their data away.
        assert!(next
            .partitions_without_source(&v1, &BTreeSet::new())
            .is_empty());
    }

    /// Gossip spreads a layout node by node, so a node on one layout can
    /// coordinate a write while another, one version behind or ahead,
    /// coordinates a read. Every such pair must share a replica set that
    /// both need a quorum in, or R + W > N promises nothing: a write
    /// acknowledged by a node that retired the change would be invisible
    /// to a read by a node still in it.
    #[test]
    fn consecutive_phases_of_a_change_share_a_quorum_set() {
        let (v1, v2) = grown();
        let v3 = v2.retired().unwrap();
        let phases = [&v1, &v2, &v3];
        let shared = |a: &Layout, b: &Layout, p: u32| {
            a.quorum_sets(p)
                .iter()
                .any(|set| b.quorum_sets(p).contains(set))
        };
        for pair in phases.windows(2) {
            for p in 0..64 {
                assert!(
                    shared(pair[0], pair[1], p),
                    "partition {p}: v{} and v{} share no quorum set",
                    pair[0].version(),
                    pair[1].version()
                );
            }
        }
        // Settled and retired share none where the partition moved: those
        // two must never be in use at once (the claimant's rule 4).
        let moved = (0..64).filter(|&p| v2.is_moving(p));
        assert!(moved.clone().count() > 0);
        for p in moved {
            assert!(!shared(&v1, &v3, p));
        }
    }

    #[test]
    fn minimum_moves_counts_the_new_members_share() {
        let (v1, v2) = grown();
        // 4 equal members of 64 × 3 replicas: the new one needs 48.
        assert_eq!(v2.minimum_moves_from(&v1), 48);
        let shrunk = Layout::compute(&members(&[1, 2, 3]), 3, 64, Some(&v2)).unwrap();
        assert_eq!(
            shrunk.minimum_moves_from(&v2),
            v2.replica_counts()[&NodeId(4)]
        );
    }
}
