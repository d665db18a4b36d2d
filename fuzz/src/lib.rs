//! Helpers shared by ringkv's fuzz targets (`fuzz_targets/`) and by the
//! seed generator (`src/bin/seed_corpus.rs`).
//!
//! Each target feeds libFuzzer's bytes to one decoder and asserts what must
//! hold of every input: an accepted input re-encodes to exactly the same
//! bytes (every format here has one encoding per state), what it decoded
//! into behaves (its queries and merges do not panic and keep the format's
//! invariants), and a refused input is an error of the right kind, never a
//! panic. Nothing here decodes: the decoders under test are the crates'
//! own.

pub mod layout_seal;

/// Splits `[u16 BE length of a][a][b]` into `a` and `b`, for targets that
/// need two decoded values (merge laws). `None` when the length prefix
/// points past the input.
pub fn split_pair(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// The inverse of [`split_pair`], for seeds.
pub fn join_pair(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = u16::try_from(a.len()).expect("seed part under 64 KiB");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let joined = join_pair(b"ab", b"cde");
        assert_eq!(split_pair(&joined), Some((&b"ab"[..], &b"cde"[..])));
        assert_eq!(split_pair(&[0, 3, 1]), None);
        assert_eq!(split_pair(&[0]), None);
    }
}
