//! Dots and version vectors (node identities, [`NodeId`], are shared with
//! the client and live in `ringkv-common`): the causal vocabulary that
//! [`VersionSet`](super::VersionSet) is built from.

use std::collections::BTreeMap;
use std::fmt;

pub use ringkv_common::NodeId;

/// The name of one write: the coordinating node and that node's counter for
/// the key. Dots order by node, then counter; version sets keep their
/// versions in this order so merges and encodings are deterministic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Dot {
    /// The node that coordinated the write.
    pub node: NodeId,
    /// One past the highest counter for `node` the coordinator's state had
    /// seen; always at least 1.
    pub counter: u64,
}

impl Dot {
    /// Shorthand used mostly by tests and callers building dots by hand.
    pub fn new(node: NodeId, counter: u64) -> Dot {
        Dot { node, counter }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.node, self.counter)
    }
}

/// A causal context: for each node, the highest counter seen, standing for
/// all the dots `(node, 1..=counter)`.
///
/// Zero entries are never stored (a missing node already means 0), so two
/// vectors that cover the same dots are always `==` and encode identically.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        VersionVector(BTreeMap::new())
    }

    /// The highest counter seen for `node`; 0 when it never wrote.
    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// Whether the write named `dot` is accounted for by this context.
    pub fn covers(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(dot.node)
    }

    /// Pointwise maximum: afterwards this vector covers every dot that
    /// either vector covered.
    pub fn merge(&mut self, other: &VersionVector) {
        for (node, counter) in other.iter() {
            self.insert(node, counter);
        }
    }

    /// Whether this vector covers every dot `other` covers (`self >= other`
    /// pointwise). Equal vectors descend from each other.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .iter()
            .all(|(node, counter)| self.get(node) >= counter)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of nodes with a nonzero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Entries in ascending node order (the order the encodings use).
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().map(|(n, c)| (*n, *c))
    }

    /// Keeps only the entries of the nodes `keep` accepts. Dropping an
    /// entry forgets dots, so this is only for a client's context before it
    /// is used (entries naming nodes that never wrote), never for a stored
    /// vector.
    pub fn retain(&mut self, mut keep: impl FnMut(NodeId) -> bool) {
        self.0.retain(|node, _| keep(*node));
    }

    /// Raises `node`'s entry to `counter` if it is lower; never lowers it,
    /// because forgetting a dot would let a superseded version come back.
    /// A zero counter is a no-op.
    pub fn insert(&mut self, node: NodeId, counter: u64) {
        if counter == 0 {
            return;
        }
        let entry = self.0.entry(node).or_insert(0);
        *entry = (*entry).max(counter);
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (node, counter) in iter {
            vv.insert(node, counter);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        entries.iter().map(|&(n, c)| (NodeId(n), c)).collect()
    }

    #[test]
    fn get_covers_and_insert() {
        let mut v = vv(&[(1, 3)]);
        assert_eq!(v.get(NodeId(1)), 3);
        assert_eq!(v.get(NodeId(2)), 0);
        assert!(v.covers(&Dot::new(NodeId(1), 3)));
        assert!(!v.covers(&Dot::new(NodeId(1), 4)));
        assert!(!v.covers(&Dot::new(NodeId(2), 1)));
        v.insert(NodeId(1), 2);
        assert_eq!(v.get(NodeId(1)), 3, "insert never lowers");
        v.insert(NodeId(2), 0);
        assert_eq!(v.len(), 1, "zero entries are not stored");
        v.insert(NodeId(2), 5);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [(NodeId(1), 3), (NodeId(2), 5)]
        );
    }

    #[test]
    fn merge_is_pointwise_max_and_descends_follows() {
        let a = vv(&[(1, 3), (2, 1)]);
        let b = vv(&[(2, 4), (3, 1)]);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, vv(&[(1, 3), (2, 4), (3, 1)]));
        assert!(m.descends(&a) && m.descends(&b) && m.descends(&m));
        assert!(!a.descends(&b) && !b.descends(&a));
        assert!(a.descends(&VersionVector::new()));
        assert!(!VersionVector::new().descends(&a));
        assert!(VersionVector::new().is_empty());
    }
}
