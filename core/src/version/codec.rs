//! Byte encodings of version vectors (the client's opaque context) and of
//! version sets (what storage holds and replicas exchange), plus the
//! anti-entropy digest.
//!
//! Both encodings are hand-written rather than protobuf so that decoding can
//! be exact: protobuf skips unknown fields and accepts any field order, so
//! trailing garbage and duplicated fields would decode "successfully". Here
//! every state has exactly one encoding (varints must be minimal, entries
//! sorted), so `encode(decode(b)) == b` for every accepted `b`, and any
//! other byte string is an error, never a panic.
//!
//! Context, format 1:
//! ```text
//! 0x01  varint n (<= MAX_CONTEXT_ENTRIES)  n * (node: u64 LE, counter: varint >= 1)
//! ```
//! Version set, format 1:
//! ```text
//! 0x01  context entries as above (no entry limit)  varint m  m * version
//! version = varint node_index   index of the dot's node among the context entries
//!           varint counter      1..=that entry's counter (so the dot is covered)
//!           u64 LE timestamp
//!           u8 flags            bit 0 tombstone, bit 1 has expiry; others zero
//!           [varint expires_at_ms]        if bit 1
//!           [varint len, len bytes value] unless bit 0
//! ```
//! Versions are strictly ascending by dot. Referencing the node by index
//! saves 7 bytes per version and makes "every dot is covered" checkable
//! while reading.

use bytes::Bytes;
use ringkv_common::bytes::{put_varint, varint_len, ByteReader, DecodeError};
use twox_hash::XxHash3_64;

use super::clock::Timestamp;
use super::dot::{Dot, NodeId, VersionVector};
use super::set::{Value, Version, VersionSet};
use crate::error::{Error, Result};

/// Format byte of [`VersionVector::encode_context`]; bump on any change.
pub const CONTEXT_FORMAT_VERSION: u8 = 1;

/// Format byte of [`VersionSet::encode`]; bump on any change, and keep
/// decoding old formats (they are on disk).
pub const SET_FORMAT_VERSION: u8 = 1;

/// Most entries a client context may carry. Real contexts have one entry per
/// node that ever coordinated a write to the key; the limit only stops a
/// client from making a node allocate and merge an arbitrary vector.
pub const MAX_CONTEXT_ENTRIES: usize = 1024;

/// Seed of [`VersionSet::digest`]. Part of the anti-entropy protocol: nodes
/// compare digests, so it must never change.
const DIGEST_SEED: u64 = 0x7269_6e67_6b76_6476; // "ringkvdv"

const FLAG_TOMBSTONE: u8 = 1 << 0;
const FLAG_EXPIRY: u8 = 1 << 1;
const KNOWN_FLAGS: u8 = FLAG_TOMBSTONE | FLAG_EXPIRY;

impl VersionVector {
    /// The opaque context handed to clients: the format byte, then the
    /// entries. Clients pass it back unchanged with their next write.
    pub fn encode_context(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.len() * 10);
        out.push(CONTEXT_FORMAT_VERSION);
        put_vector(&mut out, self);
        out
    }

    /// Decodes a client context. Any deviation from exactly what
    /// [`encode_context`](Self::encode_context) produces (empty input,
    /// unknown format, truncation, trailing bytes, zero counters, unsorted
    /// or duplicate nodes, more than [`MAX_CONTEXT_ENTRIES`] entries) is
    /// [`Error::MalformedContext`].
    pub fn decode_context(bytes: &[u8]) -> Result<VersionVector> {
        let mut r = Reader::new(bytes, Error::MalformedContext);
        r.format(CONTEXT_FORMAT_VERSION)?;
        let entries = r.vector(Some(MAX_CONTEXT_ENTRIES))?;
        r.finish()?;
        Ok(entries.into_iter().collect())
    }
}

impl VersionSet {
    /// The stored and replicated encoding (format byte first).
    pub fn encode(&self) -> Vec<u8> {
        let payload: usize = self.versions().iter().map(|v| payload(v).len()).sum();
        let mut out = Vec::with_capacity(4 + self.context().len() * 10 + payload);
        out.push(SET_FORMAT_VERSION);
        put_vector(&mut out, self.context());
        put_varint(&mut out, len_u64(self.versions().len()));
        let nodes: Vec<NodeId> = self.context().iter().map(|(n, _)| n).collect();
        for v in self.versions() {
            // The invariant puts every dot's node in the context; the
            // fallback index could only appear if it were broken, and the
            // decoder would then reject the bytes rather than misread them.
            let index = nodes.binary_search(&v.dot.node).unwrap_or(nodes.len());
            put_varint(&mut out, len_u64(index));
            put_varint(&mut out, v.dot.counter);
            out.extend_from_slice(&v.timestamp.0.to_le_bytes());
            let mut flags = 0;
            if v.is_tombstone() {
                flags |= FLAG_TOMBSTONE;
            }
            if v.expires_at_ms.is_some() {
                flags |= FLAG_EXPIRY;
            }
            out.push(flags);
            if let Some(at) = v.expires_at_ms {
                put_varint(&mut out, at);
            }
            if let Value::Data(bytes) = &v.value {
                put_varint(&mut out, len_u64(bytes.len()));
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    /// `self.encode().len()`, computed without encoding: what the key's
    /// state costs against `limits.max_key_state_bytes`, and what it takes
    /// in storage and in an internal message.
    pub fn encoded_len(&self) -> usize {
        let vector: usize = self
            .context()
            .iter()
            .map(|(_, counter)| 8 + varint_len(counter))
            .sum();
        let nodes: Vec<NodeId> = self.context().iter().map(|(n, _)| n).collect();
        let versions: usize = self
            .versions()
            .iter()
            .map(|v| {
                let index = nodes.binary_search(&v.dot.node).unwrap_or(nodes.len());
                let expiry = v.expires_at_ms.map_or(0, varint_len);
                let value = match &v.value {
                    Value::Data(bytes) => varint_len(len_u64(bytes.len())) + bytes.len(),
                    Value::Tombstone => 0,
                };
                varint_len(len_u64(index)) + varint_len(v.dot.counter) + 8 + 1 + expiry + value
            })
            .sum();
        1 + varint_len(len_u64(self.context().len()))
            + vector
            + varint_len(len_u64(self.versions().len()))
            + versions
    }

    /// Decodes stored bytes, checking every invariant; anything else is
    /// [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<VersionSet> {
        let mut r = Reader::new(bytes, Error::Corrupt);
        r.format(SET_FORMAT_VERSION)?;
        let entries = r.vector(None)?;
        let count = r.varint("version count")?;
        let mut versions: Vec<Version> = Vec::new();
        for _ in 0..count {
            let index = r.varint("dot node index")?;
            let (node, max_counter) = usize::try_from(index)
                .ok()
                .and_then(|i| entries.get(i).copied())
                .ok_or_else(|| r.error(format!("dot node index {index} is not in the context")))?;
            let counter = r.varint("dot counter")?;
            let dot = Dot { node, counter };
            if counter == 0 || counter > max_counter {
                return Err(r.error(format!("dot {dot} is not covered by the context")));
            }
            if let Some(prev) = versions.last() {
                if prev.dot >= dot {
                    return Err(r.error(format!("dot {dot} duplicated or out of order")));
                }
            }
            let timestamp = Timestamp(r.u64_le("timestamp")?);
            let flags = r.u8("flags")?;
            if flags & !KNOWN_FLAGS != 0 {
                return Err(r.error(format!("unknown version flags {flags:#04x}")));
            }
            let expires_at_ms = if flags & FLAG_EXPIRY != 0 {
                Some(r.varint("expiry")?)
            } else {
                None
            };
            let value = if flags & FLAG_TOMBSTONE != 0 {
                Value::Tombstone
            } else {
                let len = r.varint("value length")?;
                Value::Data(Bytes::copy_from_slice(r.take(len, "value")?))
            };
            versions.push(Version {
                dot,
                timestamp,
                value,
                expires_at_ms,
            });
        }
        r.finish()?;
        Ok(VersionSet::from_validated(
            entries.into_iter().collect(),
            versions,
        ))
    }

    /// A stable 64-bit digest of the state: equal states give equal
    /// digests on every node and every release, so anti-entropy can compare
    /// Merkle leaves without shipping values. It hashes the context, each
    /// version's dot, timestamp, expiry and kind, and a hash of its value
    /// (fixed-width fields, so no two states share an input).
    pub fn digest(&self) -> u64 {
        let mut buf =
            Vec::with_capacity(8 + self.context().len() * 16 + self.versions().len() * 41);
        buf.extend_from_slice(&len_u64(self.context().len()).to_le_bytes());
        for (node, counter) in self.context().iter() {
            buf.extend_from_slice(&node.0.to_le_bytes());
            buf.extend_from_slice(&counter.to_le_bytes());
        }
        for v in self.versions() {
            buf.extend_from_slice(&v.dot.node.0.to_le_bytes());
            buf.extend_from_slice(&v.dot.counter.to_le_bytes());
            buf.extend_from_slice(&v.timestamp.0.to_le_bytes());
            let kind = u8::from(v.is_tombstone()) | (u8::from(v.expires_at_ms.is_some()) << 1);
            buf.push(kind);
            buf.extend_from_slice(&v.expires_at_ms.unwrap_or(0).to_le_bytes());
            let value_hash = XxHash3_64::oneshot_with_seed(DIGEST_SEED, payload(v));
            buf.extend_from_slice(&value_hash.to_le_bytes());
        }
        XxHash3_64::oneshot_with_seed(DIGEST_SEED, &buf)
    }
}

fn payload(v: &Version) -> &[u8] {
    match &v.value {
        Value::Data(bytes) => bytes,
        Value::Tombstone => &[],
    }
}

/// Lengths always fit: `usize` is at most 64 bits on supported targets.
fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn put_vector(out: &mut Vec<u8>, vv: &VersionVector) {
    put_varint(out, len_u64(vv.len()));
    for (node, counter) in vv.iter() {
        out.extend_from_slice(&node.0.to_le_bytes());
        put_varint(out, counter);
    }
}

/// A [`ByteReader`] whose errors become this module's: `error` picks the
/// variant (corrupt storage vs. malformed client context) so both decoders
/// share one reader.
struct Reader<'a> {
    inner: ByteReader<'a>,
    error: fn(String) -> Error,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], error: fn(String) -> Error) -> Self {
        Reader {
            inner: ByteReader::new(bytes),
            error,
        }
    }

    fn fail(&self, e: DecodeError) -> Error {
        (self.error)(e.to_string())
    }

    fn error(&self, msg: String) -> Error {
        self.fail(self.inner.error(msg))
    }

    fn format(&mut self, expected: u8) -> Result<()> {
        if self.inner.bytes().is_empty() {
            return Err((self.error)("empty".to_string()));
        }
        let found = self.u8("format version")?;
        if found != expected {
            return Err(self.error(format!(
                "unknown format version {found} (expected {expected})"
            )));
        }
        Ok(())
    }

    fn take(&mut self, len: u64, what: &str) -> Result<&'a [u8]> {
        self.inner.take(len, what).map_err(|e| self.fail(e))
    }

    #[inline]
    fn u8(&mut self, what: &str) -> Result<u8> {
        self.inner.u8(what).map_err(|e| self.fail(e))
    }

    fn u64_le(&mut self, what: &str) -> Result<u64> {
        self.inner.u64_le(what).map_err(|e| self.fail(e))
    }

    fn varint(&mut self, what: &str) -> Result<u64> {
        self.inner.varint(what).map_err(|e| self.fail(e))
    }

    /// Version vector entries, strictly ascending by node, counters >= 1.
    /// Returned as a vector (not a map) so the set decoder can resolve dot
    /// node indexes against it.
    fn vector(&mut self, max_entries: Option<usize>) -> Result<Vec<(NodeId, u64)>> {
        let n = self.varint("context length")?;
        if let Some(max) = max_entries {
            if n > len_u64(max) {
                return Err(self.error(format!("context has {n} entries (at most {max})")));
            }
        }
        let mut entries: Vec<(NodeId, u64)> = Vec::new();
        for _ in 0..n {
            let node = NodeId(self.u64_le("context node id")?);
            let counter = self.varint("context counter")?;
            if counter == 0 {
                return Err(self.error(format!("zero counter for node {node}")));
            }
            if let Some((prev, _)) = entries.last() {
                if *prev >= node {
                    return Err(self.error(format!("node {node} duplicated or out of order")));
                }
            }
            entries.push((node, counter));
        }
        Ok(entries)
    }

    fn finish(&self) -> Result<()> {
        self.inner.finish().map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(0xa);
    const B: NodeId = NodeId(0x0123_4567_89ab_cdef);

    fn sample() -> VersionSet {
        let empty = VersionVector::new();
        let mut s = VersionSet::new();
        s.write(
            A,
            Some(&empty),
            Timestamp::new(10, 1),
            Value::Tombstone,
            None,
            32,
        );
        let data = Value::Data(Bytes::from_static(b"hello"));
        s.write(B, Some(&empty), Timestamp::new(11, 0), data, Some(99), 32);
        let big = Value::Data(Bytes::from(vec![7u8; 300]));
        s.write(
            B,
            Some(&empty),
            Timestamp(u64::MAX),
            big,
            Some(u64::MAX),
            32,
        );
        s.write(
            A,
            Some(&empty),
            Timestamp(0),
            Value::Data(Bytes::new()),
            None,
            32,
        );
        s
    }

    fn is_corrupt(r: Result<VersionSet>) -> bool {
        matches!(r, Err(Error::Corrupt(_)))
    }

    fn is_malformed(r: Result<VersionVector>) -> bool {
        matches!(r, Err(Error::MalformedContext(_)))
    }

    #[test]
    fn context_round_trip() {
        let vv: VersionVector = [(A, 1), (B, 1 << 40), (NodeId(u64::MAX), 3)]
            .into_iter()
            .collect();
        let bytes = vv.encode_context();
        assert_eq!(bytes[0], CONTEXT_FORMAT_VERSION);
        assert_eq!(VersionVector::decode_context(&bytes).unwrap(), vv);
        let empty = VersionVector::new().encode_context();
        assert_eq!(empty, [1, 0]);
        assert_eq!(
            VersionVector::decode_context(&empty).unwrap(),
            VersionVector::new()
        );
    }

    #[test]
    fn context_decode_rejects_bad_input() {
        let good = [(A, 1), (B, 2)]
            .into_iter()
            .collect::<VersionVector>()
            .encode_context();
        for len in 0..good.len() {
            assert!(
                is_malformed(VersionVector::decode_context(&good[..len])),
                "prefix {len}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(is_malformed(VersionVector::decode_context(&trailing)));
        let mut wrong_format = good.clone();
        wrong_format[0] = 2;
        assert!(is_malformed(VersionVector::decode_context(&wrong_format)));

        let entry = |node: u64, counter: u8| {
            let mut e = node.to_le_bytes().to_vec();
            e.push(counter);
            e
        };
        let build = |entries: &[Vec<u8>]| {
            let mut b = vec![1, u8::try_from(entries.len()).unwrap()];
            entries.iter().for_each(|e| b.extend_from_slice(e));
            b
        };
        assert!(VersionVector::decode_context(&build(&[entry(1, 1), entry(2, 1)])).is_ok());
        assert!(is_malformed(VersionVector::decode_context(&build(&[
            entry(1, 0)
        ]))));
        let dup = build(&[entry(1, 1), entry(1, 2)]);
        assert!(is_malformed(VersionVector::decode_context(&dup)));
        let unsorted = build(&[entry(2, 1), entry(1, 1)]);
        assert!(is_malformed(VersionVector::decode_context(&unsorted)));
    }

    #[test]
    fn context_entry_limit() {
        let at_limit: VersionVector = (1..=MAX_CONTEXT_ENTRIES as u64)
            .map(|n| (NodeId(n), 1))
            .collect();
        assert!(VersionVector::decode_context(&at_limit.encode_context()).is_ok());
        let mut over = at_limit.clone();
        over.insert(NodeId(u64::MAX), 1);
        assert!(is_malformed(VersionVector::decode_context(
            &over.encode_context()
        )));
        // A huge claimed length fails on the count, before any allocation.
        let mut huge = vec![1];
        put_varint(&mut huge, u64::MAX);
        assert!(is_malformed(VersionVector::decode_context(&huge)));
    }

    #[test]
    fn set_round_trip() {
        for s in [VersionSet::new(), sample()] {
            let bytes = s.encode();
            assert_eq!(bytes[0], SET_FORMAT_VERSION);
            let back = VersionSet::decode(&bytes).unwrap();
            assert_eq!(back, s);
            assert_eq!(back.encode(), bytes);
            assert_eq!(back.digest(), s.digest());
        }
    }

    #[test]
    fn set_decode_rejects_every_prefix_and_trailing_bytes() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                is_corrupt(VersionSet::decode(&bytes[..len])),
                "prefix {len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(is_corrupt(VersionSet::decode(&trailing)));
        let mut wrong_format = bytes;
        wrong_format[0] = 0;
        assert!(is_corrupt(VersionSet::decode(&wrong_format)));
    }

    /// Hand-builds a one-node set `{node 5: ctx}` with the given versions,
    /// each `(index, counter, flags)` with no expiry and an empty value.
    fn raw_set(ctx: u8, versions: &[(u8, u8, u8)]) -> Vec<u8> {
        let mut b = vec![1, 1];
        b.extend_from_slice(&5u64.to_le_bytes());
        b.push(ctx);
        b.push(u8::try_from(versions.len()).unwrap());
        for &(index, counter, flags) in versions {
            b.extend_from_slice(&[index, counter]);
            b.extend_from_slice(&0u64.to_le_bytes());
            b.push(flags);
            if flags & FLAG_TOMBSTONE == 0 {
                b.push(0);
            }
        }
        b
    }

    #[test]
    fn set_decode_checks_the_invariants() {
        let ok = VersionSet::decode(&raw_set(3, &[(0, 1, 1), (0, 3, 0)])).unwrap();
        assert_eq!(ok.versions().len(), 2);
        assert_eq!(ok.versions()[1].dot, Dot::new(NodeId(5), 3));
        for (what, bytes) in [
            ("zero context counter", raw_set(0, &[])),
            ("dot not covered", raw_set(3, &[(0, 4, 0)])),
            ("zero dot counter", raw_set(3, &[(0, 0, 0)])),
            ("node index outside the context", raw_set(3, &[(1, 1, 0)])),
            ("duplicate dot", raw_set(3, &[(0, 2, 1), (0, 2, 1)])),
            ("unsorted dots", raw_set(3, &[(0, 2, 1), (0, 1, 1)])),
            ("unknown flags", raw_set(3, &[(0, 1, 4)])),
        ] {
            assert!(is_corrupt(VersionSet::decode(&bytes)), "{what}");
        }
        // A claimed value length beyond the input is an error, not an allocation.
        let mut long = raw_set(3, &[(0, 1, 0)]);
        long.pop();
        put_varint(&mut long, u64::MAX);
        assert!(is_corrupt(VersionSet::decode(&long)));
    }

    #[test]
    fn digest_tells_states_apart() {
        let s = sample();
        let mut t = s.clone();
        t.enforce_cap(3);
        assert_ne!(s.digest(), t.digest());
        let mut u = VersionSet::new();
        u.write(
            A,
            None,
            Timestamp(1),
            Value::Data(Bytes::from_static(b"x")),
            None,
            1,
        );
        let mut w = VersionSet::new();
        w.write(
            A,
            None,
            Timestamp(1),
            Value::Data(Bytes::from_static(b"y")),
            None,
            1,
        );
        assert_ne!(u.digest(), w.digest());
        assert_eq!(VersionSet::new().digest(), VersionSet::new().digest());
        // Pinned: the digest is part of the anti-entropy protocol, so a
        // change here means nodes of different releases disagree.
        assert_eq!(u.digest(), 263_786_602_292_451_144);
    }
}
