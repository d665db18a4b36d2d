//! Node identities, dots and version vectors: the causal vocabulary that
//! [`VersionSet`](super::VersionSet) is built from.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Lowercase hex digits, indexed by nibble.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A node's permanent random identity.
///
/// Created on first start and stored in the data directory (by the server
/// wiring, not here). Being random rather than configured means two nodes
/// can never be handed the same id by mistake, and a node whose data
/// directory was wiped comes back with a new id, so it can never reissue a
/// dot that some replica already holds with different contents.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A fresh random, nonzero id. Zero is avoided so that an all-zero id
    /// file is recognisably not a real identity.
    pub fn random() -> NodeId {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return NodeId(id);
            }
        }
    }

    /// Appends what [`Display`](fmt::Display) writes (16 lowercase hex
    /// digits) without going through the formatting machinery: the
    /// coordinator names replicas this way several times per request, and
    /// `format!` with `{:016x}` was one of its larger own costs
    /// (docs/benchmarks.md, "Optimisations").
    pub fn push_hex(self, out: &mut String) {
        let mut digits = [0u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            let nibble = (self.0 >> (60 - 4 * i)) & 0xf;
            *digit = HEX_DIGITS[nibble as usize];
        }
        // ASCII by construction, so the fallback is never taken.
        out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    }
}

impl fmt::Display for NodeId {
    /// 16 lowercase hex digits: fixed width so ids line up in logs and CLI
    /// tables, and the form [`FromStr`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = Error;

    /// Parses exactly 16 hex digits (either case). Anything else, including
    /// a sign or surrounding whitespace, is rejected so that a damaged id
    /// file or a typo on the command line is noticed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!(
                "invalid node id {s:?}: expected 16 hex digits"
            )));
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|e| Error::InvalidArgument(format!("invalid node id {s:?}: {e}")))
    }
}

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
    fn node_id_display_and_parse_round_trip() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        for n in [
            0,
            1,
            0xf,
            0x10,
            u64::MAX,
            0x8000_0000_0000_0000,
            0x0123_4567_89ab_cdef,
        ] {
            let mut pushed = String::from("x");
            NodeId(n).push_hex(&mut pushed);
            assert_eq!(pushed, format!("x{n:016x}"));
            assert_eq!(pushed[1..], NodeId(n).to_string());
        }
        assert_eq!("00abcdef01234567".parse::<NodeId>().unwrap(), id);
        assert_eq!("00ABCDEF01234567".parse::<NodeId>().unwrap(), id);
        for _ in 0..100 {
            let id = NodeId::random();
            assert_ne!(id.0, 0);
            assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        }
    }

    #[test]
    fn node_id_parse_rejects_other_forms() {
        for bad in [
            "",
            "abc",
            "00abcdef0123456",
            "00abcdef012345678",
            "+0abcdef01234567",
            " 0abcdef01234567",
            "00abcdef0123456g",
            "0x00abcdef012345",
            "é0abcdef0123456",
        ] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
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
