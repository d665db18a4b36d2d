//! The stored and gossiped form of a layout.
//!
//! Format 1:
//! ```text
//! 0x01
//! varint version          >= 1
//! varint partitions       Q, a power of two <= MAX_LAYOUT_PARTITIONS
//! varint replication      N, 1..=min(MAX_LAYOUT_REPLICATION, members)
//! varint members          1..=MAX_LAYOUT_MEMBERS
//! members × (u64 LE id, varint weight >= 1, varint zone length, zone UTF-8)
//!                         strictly ascending by id
//! Q × N × varint index    member index, N distinct per partition
//! u64 LE checksum         xxh3-64 (seed LAYOUT_CHECKSUM_SEED) of all the above
//! ```
//!
//! Format 2, a layout in transition (see `transition`):
//! ```text
//! 0x02
//! varint length           of the target layout's format-1 encoding
//! target layout           format 1, its own checksum included
//! previous layout         format 1, the rest of the bytes
//! u64 LE checksum         xxh3-64 (seed LAYOUT_CHECKSUM_SEED) of all the above
//! ```
//! A settled layout without a cluster id is written as format 1.
//!
//! Format 3, a layout with its cluster id (every layout since cluster ids;
//! formats 1 and 2 are still decoded, with no id, for data directories
//! from before them):
//! ```text
//! 0x03
//! u128 LE cluster id      nonzero
//! layout                  format 1 or 2, its own checksum included
//! u64 LE checksum         xxh3-64 (seed LAYOUT_CHECKSUM_SEED) of all the above
//! ```
//!
//! Every state has one encoding (minimal varints, sorted members), so
//! `encode(decode(b)) == b` for every accepted `b`. The checksum matters
//! because a flipped member index would otherwise decode into a valid but
//! different layout, and layouts are passed from node to node.

use ringkv_common::bytes::{put_varint, ByteReader, DecodeError};
use twox_hash::XxHash3_64;

use super::{Layout, MemberSpec, MAX_LAYOUT_MEMBERS, MAX_LAYOUT_PARTITIONS, MAX_ZONE_LEN};
use crate::error::{Error, Result};
use crate::ring::ClusterId;
use crate::version::NodeId;

/// Format byte of [`Layout::encode`]; bump on any change and keep decoding
/// old formats (layouts are stored).
pub const LAYOUT_FORMAT_VERSION: u8 = 1;

/// Format byte of a layout in transition: two format-1 layouts.
const TRANSITION_FORMAT_VERSION: u8 = 2;

/// Format byte of a layout stamped with its cluster id: the id, then a
/// format-1 or format-2 layout.
pub const CLUSTER_FORMAT_VERSION: u8 = 3;

/// Bytes of a cluster id in format 3.
const CLUSTER_ID_LEN: usize = 16;

/// Seed of the trailing checksum. Part of the format; public so that tools
/// which frame layout bytes by hand (the fuzz targets) can seal them.
pub const LAYOUT_CHECKSUM_SEED: u64 = 0x7269_6e67_6b76_6c79; // "ringkvly"

const CHECKSUM_LEN: usize = 8;

impl Layout {
    /// The stored and gossiped bytes: format byte [`LAYOUT_FORMAT_VERSION`]
    /// first, checksum last (see the module `codec`).
    pub fn encode(&self) -> Vec<u8> {
        let Some(cluster) = self.cluster else {
            return self.encode_unstamped();
        };
        let inner = self.encode_unstamped();
        let mut out = Vec::with_capacity(1 + CLUSTER_ID_LEN + inner.len() + CHECKSUM_LEN);
        out.push(CLUSTER_FORMAT_VERSION);
        out.extend_from_slice(&cluster.to_bytes());
        out.extend_from_slice(&inner);
        let checksum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Formats 1 and 2: the layout without its cluster id.
    fn encode_unstamped(&self) -> Vec<u8> {
        let Some(previous) = &self.previous else {
            return self.encode_settled();
        };
        let target = self.encode_settled();
        let mut out = Vec::with_capacity(16 + target.len() * 2);
        out.push(TRANSITION_FORMAT_VERSION);
        put_varint(&mut out, target.len() as u64);
        out.extend_from_slice(&target);
        out.extend_from_slice(&previous.encode_settled());
        let checksum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Format 1: the layout without its previous one.
    fn encode_settled(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.members.len() * 16 + self.replicas.len());
        out.push(LAYOUT_FORMAT_VERSION);
        put_varint(&mut out, self.version);
        put_varint(&mut out, u64::from(self.partitions));
        put_varint(&mut out, u64::from(self.replication));
        put_varint(&mut out, self.members.len() as u64);
        for m in &self.members {
            out.extend_from_slice(&m.id.0.to_le_bytes());
            put_varint(&mut out, u64::from(m.weight));
            put_varint(&mut out, m.zone.len() as u64);
            out.extend_from_slice(m.zone.as_bytes());
        }
        for id in &self.replicas {
            let index = self.member_index(*id).unwrap_or(0);
            put_varint(&mut out, index as u64);
        }
        let checksum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Decodes [`encode`](Self::encode) bytes. Anything else (empty input,
    /// unknown format, checksum mismatch, truncation, trailing bytes,
    /// non-minimal varints, unsorted members, a bad Q or N, a partition
    /// without N distinct members) is [`Error::Corrupt`]; never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Layout> {
        if bytes.first() == Some(&CLUSTER_FORMAT_VERSION) {
            return Self::decode_stamped(bytes);
        }
        Self::decode_unstamped(bytes)
    }

    /// Formats 1 and 2.
    fn decode_unstamped(bytes: &[u8]) -> Result<Layout> {
        if bytes.first() == Some(&TRANSITION_FORMAT_VERSION) {
            return Self::decode_transition(bytes);
        }
        Self::decode_settled(bytes)
    }

    /// Format 3: a cluster id, then a format-1 or -2 layout.
    fn decode_stamped(bytes: &[u8]) -> Result<Layout> {
        let mut r = Reader::after_format(bytes);
        r.end_at_checksum()?;
        let id = r.take(CLUSTER_ID_LEN, "cluster id")?;
        let cluster =
            ClusterId::from_bytes(id).map_err(|e| Error::Corrupt(format!("layout: {e}")))?;
        let inner = r.rest();
        if inner.first() == Some(&CLUSTER_FORMAT_VERSION) {
            return Err(r.error("a cluster id inside a cluster id".to_string()));
        }
        Ok(Self::decode_unstamped(inner)?.with_cluster_id(cluster))
    }

    fn decode_transition(bytes: &[u8]) -> Result<Layout> {
        let mut r = Reader::after_format(bytes);
        r.end_at_checksum()?;
        let len = r.varint("target length")?;
        let target = r.take(
            usize::try_from(len).map_err(|_| r.error(format!("target of {len} bytes")))?,
            "target layout",
        )?;
        let previous = r.rest();
        let target = Self::decode_settled(target)?;
        let previous = Self::decode_settled(previous)?;
        target
            .with_previous(&previous)
            .map_err(|e| Error::Corrupt(format!("layout: {e}")))
    }

    fn decode_settled(bytes: &[u8]) -> Result<Layout> {
        let mut r = Reader::new(bytes);
        if bytes.is_empty() {
            return Err(Error::Corrupt("layout: empty".to_string()));
        }
        let format = r.u8("format version")?;
        if format != LAYOUT_FORMAT_VERSION {
            return Err(r.error(format!(
                "unknown format version {format} (expected {LAYOUT_FORMAT_VERSION})"
            )));
        }
        r.end_at_checksum()?;

        let version = r.varint("version")?;
        let partitions = r.varint("partitions")?;
        if partitions == 0
            || !partitions.is_power_of_two()
            || partitions > u64::from(MAX_LAYOUT_PARTITIONS)
        {
            return Err(r.error(format!("{partitions} partitions")));
        }
        let replication = r.varint("replication")?;
        let count = r.varint("member count")?;
        if count == 0 || count > MAX_LAYOUT_MEMBERS as u64 {
            return Err(r.error(format!("{count} members")));
        }
        if replication == 0 || replication > count {
            return Err(r.error(format!("replication {replication} with {count} members")));
        }
        let mut members: Vec<MemberSpec> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = NodeId(r.u64_le("member id")?);
            let weight = r.varint("weight")?;
            let weight = u32::try_from(weight)
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| r.error(format!("member {id}: weight {weight}")))?;
            let len = r.varint("zone length")?;
            if len > MAX_ZONE_LEN as u64 {
                return Err(r.error(format!("member {id}: zone of {len} bytes")));
            }
            let zone = std::str::from_utf8(r.take(len as usize, "zone")?)
                .map_err(|_| r.error(format!("member {id}: zone is not UTF-8")))?
                .to_string();
            if members.last().is_some_and(|last| last.id >= id) {
                return Err(r.error(format!("member {id} duplicated or out of order")));
            }
            members.push(MemberSpec { id, zone, weight });
        }
        // Each entry takes at least one byte: check before allocating.
        let entries = partitions * replication;
        if entries > r.remaining() as u64 {
            return Err(r.error(format!("truncated: {entries} replica entries")));
        }
        let mut replicas = Vec::with_capacity(entries as usize);
        for _ in 0..entries {
            let index = r.varint("replica")?;
            let member = usize::try_from(index)
                .ok()
                .and_then(|i| members.get(i))
                .ok_or_else(|| r.error(format!("replica index {index} out of range")))?;
            replicas.push(member.id);
        }
        if r.remaining() != 0 {
            return Err(r.error(format!("{} trailing bytes", r.remaining())));
        }
        let layout = Layout {
            version,
            partitions: partitions as u32,
            replication: u32::try_from(replication).unwrap_or(u32::MAX),
            members,
            replicas,
            previous: None,
            cluster: None,
        };
        layout
            .check()
            .map_err(|e| Error::Corrupt(format!("layout: {e}")))?;
        Ok(layout)
    }
}

/// The bytes before the trailing checksum, once the checksum matches.
fn checked_body<'a>(r: &Reader<'a>) -> Result<&'a [u8]> {
    let bytes = r.inner.bytes();
    let Some(body_len) = bytes.len().checked_sub(CHECKSUM_LEN).filter(|&l| l >= 1) else {
        return Err(r.error("truncated checksum".to_string()));
    };
    let (body, sum) = bytes.split_at(body_len);
    let stored = u64::from_le_bytes(sum.try_into().unwrap_or([0; CHECKSUM_LEN]));
    if XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, body) != stored {
        return Err(Error::Corrupt("layout: checksum mismatch".to_string()));
    }
    Ok(body)
}

/// A [`ByteReader`] whose errors are corrupt layouts.
struct Reader<'a> {
    inner: ByteReader<'a>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            inner: ByteReader::new(bytes),
        }
    }

    /// A reader past the format byte, which the caller has already matched.
    fn after_format(bytes: &'a [u8]) -> Self {
        let mut r = Reader::new(bytes);
        let _ = r.inner.u8("format version");
        r
    }

    /// Checks the trailing checksum and stops reading before it.
    fn end_at_checksum(&mut self) -> Result<()> {
        let body = checked_body(self)?;
        self.inner.truncate(body.len());
        Ok(())
    }

    fn rest(&self) -> &'a [u8] {
        self.inner.rest()
    }

    fn fail(e: DecodeError) -> Error {
        Error::Corrupt(format!("layout: {e}"))
    }

    fn error(&self, msg: String) -> Error {
        Self::fail(self.inner.error(msg))
    }

    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.inner.take(len, what).map_err(Self::fail)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        self.inner.u8(what).map_err(Self::fail)
    }

    fn u64_le(&mut self, what: &str) -> Result<u64> {
        self.inner.u64_le(what).map_err(Self::fail)
    }

    fn varint(&mut self, what: &str) -> Result<u64> {
        self.inner.varint(what).map_err(Self::fail)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cluster;
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let layout = Layout::compute(&cluster(5, &[1, 2, 3, 4, 1, 1], 3), 3, 64, None).unwrap();
        let bytes = layout.encode();
        assert_eq!(bytes[0], LAYOUT_FORMAT_VERSION);
        let decoded = Layout::decode(&bytes).unwrap();
        assert_eq!(decoded, layout);
        assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn a_stamped_layout_round_trips_with_its_cluster_id() {
        let id = ClusterId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let v1 = Layout::compute(&cluster(5, &[1, 2, 3, 4, 1, 1], 3), 3, 64, None)
            .unwrap()
            .with_cluster_id(id);
        let bytes = v1.encode();
        assert_eq!(bytes[0], CLUSTER_FORMAT_VERSION);
        assert_eq!(&bytes[1..17], &id.to_bytes());
        let decoded = Layout::decode(&bytes).unwrap();
        assert_eq!(decoded.cluster_id(), Some(id));
        assert_eq!(decoded, v1);
        assert_eq!(decoded.encode(), bytes);

        // Every later layout inherits the id, a transition included.
        let members = cluster(6, &[1, 2, 3, 4, 1, 1], 3);
        let v2 = Layout::compute(&members, 3, 64, Some(&v1))
            .unwrap()
            .with_previous(&v1)
            .unwrap();
        assert_eq!(v2.cluster_id(), Some(id));
        assert_eq!(v2.previous().unwrap().cluster_id(), None);
        let bytes = v2.encode();
        assert_eq!(bytes[0], CLUSTER_FORMAT_VERSION);
        let decoded = Layout::decode(&bytes).unwrap();
        assert_eq!(decoded, v2);
        assert_eq!(decoded.encode(), bytes);
        assert_eq!(decoded.retired().unwrap().cluster_id(), Some(id));

        // A layout of another cluster cannot follow it.
        let other = Layout::compute(&members, 3, 64, Some(&v1))
            .unwrap()
            .with_cluster_id(ClusterId(7));
        assert!(other.with_previous(&v1).is_err());
    }

    #[test]
    fn old_formats_decode_without_a_cluster_id() {
        // Formats 1 and 2 as nodes from before cluster ids stored them.
        let v1 = Layout::compute(&cluster(5, &[1, 2, 3, 4, 1, 1], 3), 3, 64, None).unwrap();
        let old = v1.encode();
        assert_eq!(old[0], LAYOUT_FORMAT_VERSION);
        let decoded = Layout::decode(&old).unwrap();
        assert_eq!(decoded.cluster_id(), None);
        assert_eq!(decoded.encode(), old);
        let v2 = Layout::compute(&cluster(6, &[1, 2, 3, 4, 1, 1], 3), 3, 64, Some(&v1))
            .unwrap()
            .with_previous(&v1)
            .unwrap();
        let old = v2.encode();
        assert_eq!(old[0], TRANSITION_FORMAT_VERSION);
        assert_eq!(Layout::decode(&old).unwrap().cluster_id(), None);

        // Stamping a decoded old layout gives format 3 around the old bytes.
        let id = ClusterId(42);
        let stamped = decoded.with_cluster_id(id).encode();
        assert_eq!(stamped[0], CLUSTER_FORMAT_VERSION);
        assert_eq!(&stamped[17..stamped.len() - 8], &v1.encode()[..]);
    }

    #[test]
    fn damaged_stamped_layouts_are_refused() {
        let bytes = Layout::compute(&cluster(7, &[1; 4], 0), 2, 8, None)
            .unwrap()
            .with_cluster_id(ClusterId(99))
            .encode();
        for len in 0..bytes.len() {
            assert!(is_corrupt(Layout::decode(&bytes[..len])), "prefix of {len}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(is_corrupt(Layout::decode(&flipped)), "flip at {i}");
        }
        // A zero id, or a stamp inside a stamp, with valid checksums.
        let reseal = |mut body: Vec<u8>| {
            let sum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &body);
            body.extend_from_slice(&sum.to_le_bytes());
            body
        };
        let mut zero = bytes[..bytes.len() - 8].to_vec();
        zero[1..17].fill(0);
        assert!(is_corrupt(Layout::decode(&reseal(zero))));
        let mut nested = vec![CLUSTER_FORMAT_VERSION];
        nested.extend_from_slice(&ClusterId(5).to_bytes());
        nested.extend_from_slice(&bytes);
        assert!(is_corrupt(Layout::decode(&reseal(nested))));
    }

    fn is_corrupt(r: Result<Layout>) -> bool {
        matches!(r, Err(Error::Corrupt(_)))
    }

    #[test]
    fn decode_rejects_damaged_bytes() {
        let bytes = Layout::compute(&cluster(7, &[1; 4], 0), 2, 8, None)
            .unwrap()
            .encode();
        assert!(is_corrupt(Layout::decode(&[])));
        for len in 0..bytes.len() {
            assert!(is_corrupt(Layout::decode(&bytes[..len])), "prefix of {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(is_corrupt(Layout::decode(&longer)));
        let mut format = bytes.clone();
        format[0] = 2;
        assert!(is_corrupt(Layout::decode(&format)));
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(is_corrupt(Layout::decode(&flipped)), "flip at {i}");
        }
    }

    /// Encodes a layout by hand with a valid checksum, so the structural
    /// checks behind the checksum are exercised.
    fn raw(version: u64, q: u64, n: u64, members: &[(u64, u64, &[u8])], rows: &[u64]) -> Vec<u8> {
        let mut out = vec![LAYOUT_FORMAT_VERSION];
        for v in [version, q, n, members.len() as u64] {
            put_varint(&mut out, v);
        }
        for (id, weight, zone) in members {
            out.extend_from_slice(&id.to_le_bytes());
            put_varint(&mut out, *weight);
            put_varint(&mut out, zone.len() as u64);
            out.extend_from_slice(zone);
        }
        for &r in rows {
            put_varint(&mut out, r);
        }
        let sum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    #[test]
    fn decode_checks_the_invariants() {
        let two: &[(u64, u64, &[u8])] = &[(1, 1, b"a"), (2, 1, b"b")];
        let good = raw(1, 2, 2, two, &[0, 1, 1, 0]);
        let layout = Layout::decode(&good).unwrap();
        assert_eq!(layout.replicas(1), &[NodeId(2), NodeId(1)]);
        assert_eq!(layout.encode(), good);

        let bad = [
            raw(0, 2, 2, two, &[0, 1, 1, 0]),       // version 0
            raw(1, 3, 2, two, &[0, 1, 1, 0, 0, 1]), // Q not a power of two
            raw(1, 0, 2, two, &[]),                 // Q = 0
            raw(1, 2, 3, two, &[0, 1, 0, 1, 0, 1]), // N > members
            raw(1, 2, 0, two, &[]),                 // N = 0
            raw(1, 2, 2, two, &[0, 0, 1, 0]),       // duplicate replica
            raw(1, 2, 2, two, &[0, 2, 1, 0]),       // index out of range
            raw(1, 2, 2, two, &[0, 1, 1]),          // too few entries
            raw(1, 2, 2, two, &[0, 1, 1, 0, 0]),    // trailing entry
            raw(1, 2, 2, &[(2, 1, b"a"), (1, 1, b"b")], &[0, 1, 1, 0]), // unsorted
            raw(1, 2, 2, &[(1, 1, b"a"), (1, 1, b"b")], &[0, 1, 1, 0]), // duplicate id
            raw(1, 2, 2, &[(1, 0, b"a"), (2, 1, b"b")], &[0, 1, 1, 0]), // weight 0
            raw(1, 2, 2, &[(1, 1 << 32, b"a"), (2, 1, b"b")], &[0, 1, 1, 0]), // weight > u32
            raw(1, 2, 2, &[(1, 1, b"\xff"), (2, 1, b"b")], &[0, 1, 1, 0]), // not UTF-8
            raw(1, 2, 17, two, &[]),                // N > max
            raw(1, 1 << 17, 1, two, &[]),           // Q > max
        ];
        for (i, bytes) in bad.iter().enumerate() {
            assert!(is_corrupt(Layout::decode(bytes)), "case {i}");
        }
        // A non-minimal varint (version 1 as 0x81 0x00).
        let mut bytes = vec![LAYOUT_FORMAT_VERSION, 0x81, 0x00];
        bytes.extend_from_slice(&good[2..good.len() - 8]);
        let sum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        assert!(is_corrupt(Layout::decode(&bytes)));
    }
}
