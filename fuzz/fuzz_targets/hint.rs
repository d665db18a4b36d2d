//! Stored hints (`ringkv_node::handoff`): the value (`decode_hint`: format
//! byte, stored-at time, version set) and the key (`split_hint_key`:
//! target id, partition, user key) that a fallback reads back from its
//! `hints` column family, at start-up and on every delivery round.
//!
//! Asserts: an accepted value re-encodes (`encode_hint`) to exactly the
//! input; a refused one is `Error::Corrupt`, never a panic. An accepted
//! key is rebuilt by `hint_key` from its parts; a refused key is
//! `Error::Corrupt` and shorter than target and partition (12 bytes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::error::Error;
use ringkv_node::handoff::{decode_hint, encode_hint, hint_key, split_hint_key};

fuzz_target!(|data: &[u8]| {
    match decode_hint(data) {
        Ok((stored_at_ms, state)) => {
            assert_eq!(
                encode_hint(stored_at_ms, &state),
                data,
                "re-encoding changed the bytes"
            );
        }
        Err(Error::Corrupt(_)) => {}
        Err(other) => panic!("a bad hint must be Corrupt, not {other:?}"),
    }
    match split_hint_key(data) {
        Ok((target, key)) => {
            let partition = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
            assert_eq!(hint_key(target, partition, &key), data);
        }
        Err(Error::Corrupt(_)) => assert!(data.len() < 12),
        Err(other) => panic!("a bad hint key must be Corrupt, not {other:?}"),
    }
});
