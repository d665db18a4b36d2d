//! Planning a cluster change: which members the next layout has, what
//! changed, and which partition replicas it copies. Pure: no I/O.
//!
//! The staged changes are not a separate list that could be lost or
//! disagree between nodes; they are read off the cluster as gossip shows it:
//!
//! * a live node outside the layout whose entry asks to join (`join` mode
//!   `auto` or `staged`) joins;
//! * a layout member whose status is `leaving` leaves;
//! * a member an operator removed (a dead node; kept by the claimant) is
//!   dropped;
//! * a member whose gossiped zone or weight differs from the layout's is
//!   re-placed with the new values.
//!
//! A fresh node at the address of a layout member is not a joiner: it is
//! that member's replacement after a wipe (see `membership`).

use std::collections::BTreeSet;
use std::fmt;

use crate::membership::state::{JoinMode, Status};
use crate::ring::{Layout, MemberSpec};
use crate::version::NodeId;

/// A node as the planner sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: NodeId,
    pub name: String,
    pub address: String,
    pub zone: String,
    pub weight: u32,
    pub status: Status,
    pub join: JoinMode,
    pub alive: bool,
}

/// One staged change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Join {
        node: NodeId,
        auto: bool,
    },
    Leave(NodeId),
    Remove(NodeId),
    Reweigh {
        node: NodeId,
        zone: (String, String),
        weight: (u32, u32),
    },
}

impl Change {
    pub fn node(&self) -> NodeId {
        match self {
            Change::Join { node, .. }
            | Change::Leave(node)
            | Change::Remove(node)
            | Change::Reweigh { node, .. } => *node,
        }
    }

    /// The word `plan` shows beside the member.
    pub fn label(&self) -> &'static str {
        match self {
            Change::Join { .. } => "joining",
            Change::Leave(_) => "leaving",
            Change::Remove(_) => "removed",
            Change::Reweigh { .. } => "reweighed",
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Join { node, auto: true } => write!(f, "join {node} (auto_join)"),
            Change::Join { node, auto: false } => write!(f, "join {node}"),
            Change::Leave(node) => write!(f, "leave {node} (drain its partitions)"),
            Change::Remove(node) => write!(f, "remove {node} (re-replicate from survivors)"),
            Change::Reweigh { node, zone, weight } => write!(
                f,
                "re-place {node}: zone {:?} -> {:?}, weight {} -> {}",
                zone.0, zone.1, weight.0, weight.1
            ),
        }
    }
}

/// The members of the next layout and what changed to get there.
#[derive(Clone, Debug, Default)]
pub struct Staged {
    pub members: Vec<MemberSpec>,
    pub changes: Vec<Change>,
}

impl Staged {
    /// Whether every change is a join asked for by `cluster.auto_join`,
    /// which the claimant commits without an operator.
    pub fn only_auto_joins(&self) -> bool {
        !self.changes.is_empty()
            && self
                .changes
                .iter()
                .all(|c| matches!(c, Change::Join { auto: true, .. }))
    }
}

/// Reads the staged changes off the layout and the gossiped candidates.
pub fn stage(layout: &Layout, candidates: &[Candidate], removed: &BTreeSet<NodeId>) -> Staged {
    let mut staged = Staged::default();
    let find = |id: NodeId| candidates.iter().find(|c| c.id == id);
    for m in layout.members() {
        if removed.contains(&m.id) {
            staged.changes.push(Change::Remove(m.id));
            continue;
        }
        let Some(c) = find(m.id) else {
            staged.members.push(m.clone());
            continue;
        };
        if c.status == Status::Leaving || c.status == Status::Left {
            staged.changes.push(Change::Leave(m.id));
            continue;
        }
        if c.zone != m.zone || c.weight != m.weight {
            staged.changes.push(Change::Reweigh {
                node: m.id,
                zone: (m.zone.clone(), c.zone.clone()),
                weight: (m.weight, c.weight),
            });
        }
        staged.members.push(MemberSpec {
            id: m.id,
            zone: c.zone.clone(),
            weight: c.weight.max(1),
        });
    }
    let member_addresses: Vec<&str> = layout
        .members()
        .iter()
        .filter_map(|m| find(m.id).map(|c| c.address.as_str()))
        .collect();
    for c in candidates {
        let asks = match c.join {
            JoinMode::None => false,
            JoinMode::Staged | JoinMode::Auto => true,
        };
        if layout.contains(c.id)
            || !asks
            || !c.alive
            || c.status != Status::Joining
            || member_addresses.contains(&c.address.as_str())
        {
            continue;
        }
        staged.changes.push(Change::Join {
            node: c.id,
            auto: c.join == JoinMode::Auto,
        });
        staged.members.push(MemberSpec {
            id: c.id,
            zone: c.zone.clone(),
            weight: c.weight.max(1),
        });
    }
    staged.members.sort();
    staged
}

/// One partition replica a change copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub partition: u32,
    /// The old replica the new one streams from first.
    pub from: NodeId,
    pub to: NodeId,
}

/// The replicas `next` adds relative to `previous`, each with the first
/// live old replica as its source (the first old replica when none is
/// alive).
pub fn moves(previous: &Layout, next: &Layout, alive: impl Fn(NodeId) -> bool) -> Vec<Move> {
    let mut out = Vec::new();
    for p in 0..next.partitions() {
        let old = previous.replicas(p);
        let from = old
            .iter()
            .copied()
            .find(|n| alive(*n))
            .or_else(|| old.first().copied());
        let Some(from) = from else { continue };
        for &to in next.replicas(p) {
            if !old.contains(&to) {
                out.push(Move {
                    partition: p,
                    from,
                    to,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: u64, status: Status, join: JoinMode) -> Candidate {
        Candidate {
            id: NodeId(id),
            name: format!("n{id}"),
            address: format!("127.0.0.1:{}", 7000 + id),
            zone: "z".into(),
            weight: 1,
            status,
            join,
            alive: true,
        }
    }

    fn layout(ids: &[u64]) -> Layout {
        let members: Vec<MemberSpec> = ids
            .iter()
            .map(|&id| MemberSpec {
                id: NodeId(id),
                zone: "z".into(),
                weight: 1,
            })
            .collect();
        Layout::compute(&members, 3, 64, None).unwrap()
    }

    fn ids(staged: &Staged) -> Vec<u64> {
        staged.members.iter().map(|m| m.id.0).collect()
    }

    #[test]
    fn a_settled_cluster_stages_nothing() {
        let l = layout(&[1, 2, 3]);
        let c: Vec<_> = (1..=3)
            .map(|i| candidate(i, Status::Up, JoinMode::Auto))
            .collect();
        let staged = stage(&l, &c, &BTreeSet::new());
        assert!(staged.changes.is_empty());
        assert_eq!(ids(&staged), vec![1, 2, 3]);
        assert!(!staged.only_auto_joins());
    }

    #[test]
    fn joiners_leavers_and_removals_are_read_off_gossip() {
        let l = layout(&[1, 2, 3, 4]);
        let mut c: Vec<_> = (1..=4)
            .map(|i| candidate(i, Status::Up, JoinMode::Auto))
            .collect();
        c[1].status = Status::Leaving;
        c.push(candidate(5, Status::Joining, JoinMode::Auto));
        c.push(candidate(6, Status::Joining, JoinMode::Staged));
        // Does not ask to join, or is dead: not staged.
        c.push(candidate(7, Status::Joining, JoinMode::None));
        let mut dead = candidate(8, Status::Joining, JoinMode::Auto);
        dead.alive = false;
        c.push(dead);
        let removed: BTreeSet<NodeId> = [NodeId(4)].into();
        let staged = stage(&l, &c, &removed);
        assert_eq!(ids(&staged), vec![1, 3, 5, 6]);
        assert_eq!(
            staged.changes,
            vec![
                Change::Leave(NodeId(2)),
                Change::Remove(NodeId(4)),
                Change::Join {
                    node: NodeId(5),
                    auto: true
                },
                Change::Join {
                    node: NodeId(6),
                    auto: false
                },
            ]
        );
        assert!(!staged.only_auto_joins());
    }

    #[test]
    fn only_auto_joins_commit_themselves() {
        let l = layout(&[1, 2, 3]);
        let mut c: Vec<_> = (1..=3)
            .map(|i| candidate(i, Status::Up, JoinMode::Auto))
            .collect();
        c.push(candidate(4, Status::Joining, JoinMode::Auto));
        assert!(stage(&l, &c, &BTreeSet::new()).only_auto_joins());
        // A wiped member's replacement (same address) is not a joiner.
        let mut twin = candidate(5, Status::Joining, JoinMode::Auto);
        twin.address = c[0].address.clone();
        c.push(twin);
        assert_eq!(ids(&stage(&l, &c, &BTreeSet::new())), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_new_weight_or_zone_is_a_change() {
        let l = layout(&[1, 2, 3, 4]);
        let mut c: Vec<_> = (1..=4)
            .map(|i| candidate(i, Status::Up, JoinMode::Auto))
            .collect();
        c[3].weight = 3;
        let staged = stage(&l, &c, &BTreeSet::new());
        assert_eq!(staged.changes.len(), 1);
        assert_eq!(staged.members[3].weight, 3);
        let next = Layout::compute(&staged.members, 3, 64, Some(&l)).unwrap();
        assert!(next.replica_counts()[&NodeId(4)] > l.replica_counts()[&NodeId(4)]);
    }

    #[test]
    fn moves_name_a_live_source() {
        let v1 = layout(&[1, 2, 3]);
        let members: Vec<MemberSpec> = (1..=4)
            .map(|id| MemberSpec {
                id: NodeId(id),
                zone: "z".into(),
                weight: 1,
            })
            .collect();
        let v2 = Layout::compute(&members, 3, 64, Some(&v1)).unwrap();
        let all = moves(&v1, &v2, |_| true);
        assert_eq!(all.len(), v2.moves_from(&v1));
        assert!(all.iter().all(|m| m.to == NodeId(4)));
        for m in &all {
            assert_eq!(m.from, v1.replicas(m.partition)[0]);
        }
        let without_first = moves(&v1, &v2, |n| n != v1.replicas(0)[0]);
        for m in &without_first {
            assert_ne!(m.from, v1.replicas(0)[0]);
        }
    }
}
