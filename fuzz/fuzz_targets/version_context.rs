//! The client's opaque context (`VersionVector::decode_context`), which
//! every put and delete carries from the network.
//!
//! Asserts: an accepted context re-encodes to exactly the input bytes and
//! holds at most `MAX_CONTEXT_ENTRIES` entries, all with counters >= 1;
//! anything else is `Error::MalformedContext` (never a panic, never
//! another error). Two accepted contexts also obey the vector laws the
//! write path relies on: merge is commutative and idempotent, and the
//! merge descends from both.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::error::Error;
use ringkv_core::version::{VersionVector, MAX_CONTEXT_ENTRIES};
use ringkv_fuzz::split_pair;

fn check(bytes: &[u8]) -> Option<VersionVector> {
    match VersionVector::decode_context(bytes) {
        Ok(vv) => {
            assert_eq!(vv.encode_context(), bytes, "re-encoding changed the bytes");
            assert!(vv.len() <= MAX_CONTEXT_ENTRIES);
            assert!(vv.iter().all(|(_, counter)| counter >= 1));
            Some(vv)
        }
        Err(Error::MalformedContext(_)) => None,
        Err(other) => panic!("a bad context must be MalformedContext, not {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((a, b)) = split_pair(data) else {
        return;
    };
    let (Some(a), Some(b)) = (check(a), check(b)) else {
        return;
    };
    let mut ab = a.clone();
    ab.merge(&b);
    let mut ba = b.clone();
    ba.merge(&a);
    assert_eq!(ab, ba, "merge is not commutative");
    assert!(ab.descends(&a) && ab.descends(&b));
    let mut again = ab.clone();
    again.merge(&b);
    assert_eq!(again, ab, "merge is not idempotent");
});
