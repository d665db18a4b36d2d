//! When data may be let go of: the rules that keep a cluster change from
//! losing an acknowledged write. Pure: the I/O that applies them is in
//! `receive.rs`.
//!
//! A write acknowledged with W of N sits on W replicas, not on all of
//! them: the others may have missed it (down, paused, cut off) and get it
//! later from a hint or from anti-entropy. So during a change no single
//! replica is known to hold everything, and three rules follow.
//!
//! 1. **A transfer ends with a sync against every old replica.** The new
//!    replica streams the partition from one old replica, then runs a
//!    Merkle exchange with each of the others. An old replica that is down
//!    or paused may hold writes nobody else has, so the transfer *waits*
//!    for it rather than skipping it ([`sync_plan`]). The only old replicas
//!    not waited for are those that are *gone*: dead, no longer a member
//!    of the layout, and not draining (`leaving`). That is a node an
//!    operator removed (`ringkv cluster remove`), or the old id of a node
//!    whose data directory was wiped and which came back under a new id
//!    (its data is gone with its disk; the survivors hold every write it
//!    acknowledged with W ≥ 2). A member that is known to be wiped (a fresh
//!    node runs at its address) is gone too, even before it is replaced.
//!    A gone node that turns out alive is synced like any other.
//! 2. **A layout alone never deletes data.** A node drops a partition it no
//!    longer replicates only after it has itself synced that partition
//!    with every replica the settled layout names for it (the hand-over,
//!    [`hand_over_targets`]): each of them then holds everything this node
//!    holds. A replica that is down is waited for. So a layout that arrives
//!    by a jump of versions, or without this node having seen the
//!    transition, can delay a deletion but never make one unsafe.
//! 3. **A change that leaves a partition with nobody holding its data is
//!    refused** (`Layout::partitions_without_source`): when every old
//!    replica of a partition is removed at once, no new replica has
//!    anyone to stream from.
//!
//! 4. **A change starts streaming, and ends, only once every member has
//!    seen it.** Gossip spreads a layout node by node, so the layout before
//!    a change and the one that ends it could otherwise be in use at once:
//!    a node still on the old one writes to the old set only, while a node
//!    on the retired one reads the new set only, and R + W > N promises
//!    nothing across them. So a new replica starts its transfers only
//!    once every member gossips that it holds the transition (from then on
//!    every write reaches the old set and the new one, so the final sync
//!    against the old replicas misses none), and the claimant retires the
//!    change only then too ([`unacknowledged`]). Members that are gone, as
//!    in rule 1, are not waited for. Any two consecutive layouts share a
//!    replica set that reads and writes both need a quorum in
//!    (`ring::layout::transition`). Cost: a member that is down or cut off
//!    holds a change until it is back, as it already holds the transfers
//!    it is an old replica of.
//!
//! Until its transfer is done a new replica never makes a quorum alone:
//! every read and write needs its quorum in the old set as well as in the
//! new one, so a node that is still receiving never stands in for a
//! replica that holds the data; this holds for a wiped node's replacement
//! too, which goes through the same transition (`Layout::replacing`).

use std::collections::BTreeSet;

use ringkv_core::membership::state::Status;
use ringkv_core::ring::Layout;
use ringkv_core::version::NodeId;

/// What a receiver does about one old replica before its transfer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldReplica {
    /// Reachable: sync with it.
    Sync,
    /// Down or paused, and it may hold acknowledged writes: wait for it.
    Wait,
    /// Removed, or a wiped node's old id: its data cannot come back.
    Gone,
}

/// What this node knows of an old replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Believed alive by the failure detector.
    pub alive: bool,
    /// The status it last gossiped; `None` when never heard of.
    pub status: Option<Status>,
    /// Another node now runs at its address: it lost its data directory
    /// and came back under a new id, so nothing can come back from it.
    pub wiped: bool,
    /// The highest layout version it gossiped that it holds.
    pub layout_version: u64,
}

/// Classifies an old replica `node` of a change towards `target`.
pub fn classify(target: &Layout, node: NodeId, seen: Seen) -> OldReplica {
    if seen.alive {
        return OldReplica::Sync;
    }
    if seen.wiped {
        return OldReplica::Gone;
    }
    if target.contains(node) || seen.status == Some(Status::Leaving) {
        return OldReplica::Wait;
    }
    OldReplica::Gone
}

/// The old replicas of `partition` a receiver (`me`) syncs with, waits
/// for, and skips as gone, under `layout` (in transition).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub sync: Vec<NodeId>,
    pub wait: Vec<NodeId>,
    pub gone: Vec<NodeId>,
}

/// Sorts the old replicas of `partition` by [`classify`]; `view` tells
/// what this node knows of each. Empty outside a transition.
pub fn sync_plan(
    layout: &Layout,
    partition: u32,
    me: NodeId,
    view: impl Fn(NodeId) -> Seen,
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let Some(previous) = layout.previous() else {
        return plan;
    };
    for &node in previous.replicas(partition) {
        if node == me {
            continue;
        }
        match classify(layout, node, view(node)) {
            OldReplica::Sync => plan.sync.push(node),
            OldReplica::Wait => plan.wait.push(node),
            OldReplica::Gone => plan.gone.push(node),
        }
    }
    plan
}

/// The members of the change `layout` (in the old layout or the new one)
/// that have not yet shown that they hold it, and are not gone: rule 4
/// waits for them before transfers start and before the change retires.
/// Empty outside a transition.
pub fn unacknowledged(layout: &Layout, view: impl Fn(NodeId) -> Seen) -> Vec<NodeId> {
    let Some(previous) = layout.previous() else {
        return Vec::new();
    };
    let members: BTreeSet<NodeId> = layout
        .members()
        .iter()
        .chain(previous.members())
        .map(|m| m.id)
        .collect();
    members
        .into_iter()
        .filter(|&node| {
            let seen = view(node);
            seen.layout_version < layout.version()
                && classify(layout, node, seen) != OldReplica::Gone
        })
        .collect()
}

/// `ids` as a comma-separated list, for messages.
pub fn listed(ids: &[NodeId]) -> String {
    let names: Vec<String> = ids.iter().map(|n| n.to_string()).collect();
    names.join(", ")
}

/// The replicas a node that no longer replicates `partition` under the
/// settled `layout` must sync it with before deleting its copy: all of
/// them (a node is never one of them when this is asked).
pub fn hand_over_targets(layout: &Layout, partition: u32, me: NodeId) -> Vec<NodeId> {
    layout
        .replicas(partition)
        .iter()
        .copied()
        .filter(|n| *n != me)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::ring::MemberSpec;

    fn seen(alive: bool, status: Status) -> Seen {
        Seen {
            alive,
            status: Some(status),
            ..Seen::default()
        }
    }

    fn members(ids: &[u64]) -> Vec<MemberSpec> {
        ids.iter()
            .map(|&id| MemberSpec {
                id: NodeId(id),
                zone: "z".into(),
                weight: 1,
            })
            .collect()
    }

    /// 1, 2, 3 and a fourth node joining.
    fn join() -> Layout {
        let v1 = Layout::compute(&members(&[1, 2, 3]), 3, 64, None).unwrap();
        Layout::compute(&members(&[1, 2, 3, 4]), 3, 64, Some(&v1))
            .unwrap()
            .with_previous(&v1)
            .unwrap()
    }

    #[test]
    fn a_paused_member_is_waited_for_not_skipped() {
        let v2 = join();
        let p = v2.partitions_of(NodeId(4))[0];
        // Node 3 is paused: dead as far as the detector can tell.
        let plan = sync_plan(&v2, p, NodeId(4), |n| seen(n != NodeId(3), Status::Up));
        assert_eq!(plan.wait, vec![NodeId(3)]);
        assert!(!plan.sync.contains(&NodeId(3)) && plan.gone.is_empty());
        assert_eq!(plan.sync.len(), 2);
        // Every old replica alive: sync with all of them.
        let plan = sync_plan(&v2, p, NodeId(4), |_| seen(true, Status::Up));
        assert_eq!(plan.sync, v2.previous().unwrap().replicas(p).to_vec());
        // Outside a transition there is nothing to do.
        let settled = v2.retired().unwrap();
        assert_eq!(
            sync_plan(&settled, p, NodeId(4), |_| seen(true, Status::Up)),
            SyncPlan::default()
        );
    }

    #[test]
    fn only_removed_or_wiped_ids_are_gone() {
        let v1 = Layout::compute(&members(&[1, 2, 3]), 3, 64, None).unwrap();
        // A wiped node 3 replaced by 9: its old id is dead and no member.
        let fresh = MemberSpec {
            id: NodeId(9),
            zone: "z".into(),
            weight: 1,
        };
        let v2 = v1.replacing(NodeId(3), fresh, 3).unwrap();
        assert_eq!(
            classify(&v2, NodeId(3), seen(false, Status::Up)),
            OldReplica::Gone
        );
        let p = v2.partitions_of(NodeId(9))[0];
        let plan = sync_plan(&v2, p, NodeId(9), |n| seen(n != NodeId(3), Status::Up));
        assert_eq!(plan.gone, vec![NodeId(3)]);
        assert_eq!(plan.sync.len(), 2);
        assert!(plan.wait.is_empty());
        // A draining node that stopped is waited for: it holds data and
        // nobody removed it.
        assert_eq!(
            classify(&v2, NodeId(3), seen(false, Status::Leaving)),
            OldReplica::Wait
        );
        // A member is waited for, whatever it gossiped...
        assert_eq!(classify(&v2, NodeId(1), Seen::default()), OldReplica::Wait);
        // ...unless a fresh node runs at its address: it was wiped too.
        let wiped = Seen {
            wiped: true,
            ..seen(false, Status::Up)
        };
        assert_eq!(classify(&v2, NodeId(1), wiped), OldReplica::Gone);
        // Anyone alive is synced, even a removed node that came back.
        assert_eq!(
            classify(&v2, NodeId(3), seen(true, Status::Up)),
            OldReplica::Sync
        );
    }

    #[test]
    fn a_change_waits_for_every_member_to_hold_it_except_gone_ones() {
        let v2 = join();
        let holds = |version: u64| Seen {
            layout_version: version,
            ..seen(true, Status::Up)
        };
        // Everyone, the joiner included, holds v2 or newer.
        assert!(unacknowledged(&v2, |_| holds(v2.version())).is_empty());
        assert!(unacknowledged(&v2, |_| holds(v2.version() + 1)).is_empty());
        // A member still on v1 is waited for, alive or not...
        let behind = |n: NodeId| {
            if n == NodeId(2) {
                Seen {
                    alive: false,
                    ..holds(1)
                }
            } else {
                holds(v2.version())
            }
        };
        assert_eq!(unacknowledged(&v2, behind), vec![NodeId(2)]);
        // ...and so is the joiner, which is no member of v1.
        let joiner_behind = |n: NodeId| holds(if n == NodeId(4) { 0 } else { v2.version() });
        assert_eq!(unacknowledged(&v2, joiner_behind), vec![NodeId(4)]);
        // A wiped node's old id is gone: never waited for.
        let v1 = v2.previous().unwrap().clone();
        let fresh = MemberSpec {
            id: NodeId(9),
            zone: "z".into(),
            weight: 1,
        };
        let replaced = v1.replacing(NodeId(3), fresh, 3).unwrap();
        let old_dead = |n: NodeId| {
            if n == NodeId(3) {
                Seen {
                    alive: false,
                    ..holds(1)
                }
            } else {
                holds(replaced.version())
            }
        };
        assert!(unacknowledged(&replaced, old_dead).is_empty());
        // Outside a transition nothing is waited for.
        assert!(unacknowledged(&v2.retired().unwrap(), |_| holds(0)).is_empty());
    }

    #[test]
    fn a_hand_over_goes_to_every_new_replica() {
        let v3 = join().retired().unwrap();
        let v1 = join().previous().unwrap().clone();
        for p in 0..64 {
            for &old in v1.replicas(p) {
                if v3.replicas(p).contains(&old) {
                    continue;
                }
                assert_eq!(hand_over_targets(&v3, p, old), v3.replicas(p).to_vec());
            }
        }
    }
}
