//! The cluster id: which cluster a layout, a gossip message or an internal
//! call belongs to.
//!
//! `cluster.name` is a label people choose, and two clusters left at the
//! default share it. The id is 128 random bits drawn once, when the first
//! layout of a cluster is computed (bootstrap), and carried from then on by
//! every layout computed from it. Every member stores it; a node that holds
//! one refuses layouts, gossip and calls that carry another, so a node of
//! one cluster that is pointed at another (a wrong seed, a reused address)
//! never takes that cluster's layout and never deletes its own data for it.
//!
//! Pure: no I/O. Where the id is kept and checked is the transport's
//! identity (`peer::identity`) and membership's business.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Hex digits of the text form: 128 bits.
const CLUSTER_ID_HEX_LEN: usize = 32;

/// A cluster's permanent random identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// A fresh random, nonzero id (zero is never issued, so an all-zero
    /// field is recognisably not an identity).
    pub fn random() -> ClusterId {
        loop {
            let id: u128 = rand::random();
            if id != 0 {
                return ClusterId(id);
            }
        }
    }

    /// The stored form: 16 bytes little-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// Reads [`to_bytes`](Self::to_bytes); anything but 16 bytes or the
    /// zero id is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterId, Error> {
        let raw: [u8; 16] = bytes.try_into().map_err(|_| {
            Error::Corrupt(format!("cluster id of {} bytes, expected 16", bytes.len()))
        })?;
        match u128::from_le_bytes(raw) {
            0 => Err(Error::Corrupt("cluster id is zero".to_string())),
            id => Ok(ClusterId(id)),
        }
    }
}

impl fmt::Display for ClusterId {
    /// 32 lowercase hex digits, the form [`FromStr`] parses back and the
    /// `x-ringkv-cluster` header carries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for ClusterId {
    type Err = Error;

    /// Exactly 32 hex digits (either case), not all zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = (s.len() == CLUSTER_ID_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten()
            .filter(|&id| id != 0);
        parsed.map(ClusterId).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "invalid cluster id {s:?}: expected {CLUSTER_ID_HEX_LEN} hex digits, not all zero"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes_round_trip() {
        for _ in 0..100 {
            let id = ClusterId::random();
            assert_ne!(id.0, 0);
            assert_eq!(id.to_string().len(), CLUSTER_ID_HEX_LEN);
            assert_eq!(id.to_string().parse::<ClusterId>().unwrap(), id);
            assert_eq!(ClusterId::from_bytes(&id.to_bytes()).unwrap(), id);
        }
        assert_eq!(
            ClusterId(0xab).to_string(),
            "000000000000000000000000000000ab"
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "ab",
            "00000000000000000000000000000000",
            "000000000000000000000000000000ag",
            "+00000000000000000000000000000ab",
            "000000000000000000000000000000abc",
        ] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad:?}");
        }
        assert!(ClusterId::from_bytes(&[1; 15]).is_err());
        assert!(ClusterId::from_bytes(&[0; 16]).is_err());
    }
}
