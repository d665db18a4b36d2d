//! Sealing layout bytes with their checksums, so the fuzzer can reach the
//! structural checks of `Layout::decode`.
//!
//! Every layout encoding ends in an xxh3 checksum (and a transition or a
//! stamped layout nests encodings that end in their own). A mutated input
//! almost never carries a matching checksum, so fed raw, the fuzzer would
//! only ever test the checksum comparison. The layout target therefore
//! also feeds the decoder [`seal`]ed bytes: the fuzzer's input is read as
//! a layout *without* its checksums, and `seal` appends each one where the
//! format puts it (see the format in `ringkv_core::ring::layout`'s codec):
//!
//! ```text
//! 0x03 id[16] inner   ->  0x03 id seal(inner) sum
//! 0x02 varint len target[len] previous
//!                     ->  0x02 varint(len + 8) seal1(target) seal1(previous) sum
//! anything else       ->  body sum
//! ```
//!
//! This only frames bytes; what is inside each frame is left exactly as
//! the fuzzer wrote it. [`unseal`] strips the checksums again, to turn real
//! encodings into seeds.

use ringkv_common::bytes::{put_varint, ByteReader};
use ringkv_core::ring::LAYOUT_CHECKSUM_SEED;
use twox_hash::XxHash3_64;

const CLUSTER_FORMAT: u8 = 3;
const TRANSITION_FORMAT: u8 = 2;
const CLUSTER_ID_LEN: usize = 16;
const CHECKSUM_LEN: usize = 8;

/// Appends the checksum of `body`.
fn sum(mut body: Vec<u8>) -> Vec<u8> {
    let checksum = XxHash3_64::oneshot_with_seed(LAYOUT_CHECKSUM_SEED, &body);
    body.extend_from_slice(&checksum.to_le_bytes());
    body
}

/// `unsealed` with every checksum the layout format expects added.
pub fn seal(unsealed: &[u8]) -> Vec<u8> {
    match unsealed.first() {
        Some(&CLUSTER_FORMAT) if unsealed.len() >= 1 + CLUSTER_ID_LEN => {
            let (head, inner) = unsealed.split_at(1 + CLUSTER_ID_LEN);
            let mut out = head.to_vec();
            out.extend_from_slice(&seal(inner));
            sum(out)
        }
        Some(&TRANSITION_FORMAT) => seal_transition(unsealed).unwrap_or_else(|| {
            // A length that does not fit: leave the frame to the decoder.
            sum(unsealed.to_vec())
        }),
        _ => sum(unsealed.to_vec()),
    }
}

fn seal_transition(unsealed: &[u8]) -> Option<Vec<u8>> {
    let mut r = ByteReader::new(unsealed);
    r.u8("format").ok()?;
    let len = r.varint("target length").ok()?;
    let target = r.take(len, "target").ok()?;
    let previous = r.rest();
    let target = sum(target.to_vec());
    let mut out = vec![TRANSITION_FORMAT];
    put_varint(&mut out, u64::try_from(target.len()).ok()?);
    out.extend_from_slice(&target);
    out.extend_from_slice(&sum(previous.to_vec()));
    Some(sum(out))
}

/// A real encoding with its checksums removed: `seal(&unseal(b)) == b` for
/// every `b` that `Layout::encode` produces.
pub fn unseal(sealed: &[u8]) -> Vec<u8> {
    let body = &sealed[..sealed.len().saturating_sub(CHECKSUM_LEN)];
    match body.first() {
        Some(&CLUSTER_FORMAT) if body.len() >= 1 + CLUSTER_ID_LEN => {
            let (head, inner) = body.split_at(1 + CLUSTER_ID_LEN);
            let mut out = head.to_vec();
            out.extend_from_slice(&unseal(inner));
            out
        }
        Some(&TRANSITION_FORMAT) => {
            let mut r = ByteReader::new(body);
            let parts = (|| {
                r.u8("format").ok()?;
                let len = r.varint("target length").ok()?;
                let target = r.take(len, "target").ok()?;
                Some((target, r.rest()))
            })();
            let Some((target, previous)) = parts else {
                return body.to_vec();
            };
            let target = unseal(target);
            let mut out = vec![TRANSITION_FORMAT];
            put_varint(&mut out, target.len() as u64);
            out.extend_from_slice(&target);
            out.extend_from_slice(&unseal(previous));
            out
        }
        _ => body.to_vec(),
    }
}
