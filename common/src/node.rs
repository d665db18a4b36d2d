//! Node identities.
//!
//! A node's id names it in dots, version vectors, layouts, hints and every
//! admin answer; the server creates and stores it, the client and the CLI
//! print and parse it, so its text form is defined once, here.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Lowercase hex digits, indexed by nibble.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A node's permanent random identity.
///
/// Created on first start and stored in the data directory (by the server
/// wiring). Being random rather than configured means two nodes can never
/// be handed the same id by mistake, and a node whose data directory was
/// wiped comes back with a new id, so it can never reissue a dot that some
/// replica already holds with different contents.
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
        out.push_str(self.hex().as_str());
    }

    fn hex(self) -> Hex {
        let mut digits = [0u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            let nibble = (self.0 >> (60 - 4 * i)) & 0xf;
            *digit = HEX_DIGITS[nibble as usize];
        }
        Hex(digits)
    }
}

/// A node id's 16 hex digits, on the stack.
struct Hex([u8; 16]);

impl Hex {
    fn as_str(&self) -> &str {
        // ASCII by construction, so the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for NodeId {
    /// 16 lowercase hex digits: fixed width so ids line up in logs and CLI
    /// tables, and the form [`FromStr`] parses back.
    ///
    /// Written from the digits [`push_hex`](Self::push_hex) uses: the
    /// integer formatting machinery was a visible share of a request that
    /// names its replicas in the reply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.hex().as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
