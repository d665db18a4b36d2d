//! What rebalancing stores in the `meta` column family and reads back after
//! a restart: a transfer's cursor (`transfer::Cursor::decode`: format byte,
//! flags, byte and key counts, last key) and the staged removals
//! (`rebalance::decode_ids`: node ids, 8 bytes each).
//!
//! Asserts: an accepted cursor re-encodes to exactly the input and decodes
//! back to an equal cursor; a refused one is `Error::Corrupt`, never a
//! panic. Staged removals decode
//! exactly when the length is a multiple of 8, to at most one id per 8
//! bytes, and their canonical encoding decodes back to the same set.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::error::Error;
use ringkv_node::rebalance::transfer::Cursor;
use ringkv_node::rebalance::{decode_ids, encode_ids};

fuzz_target!(|data: &[u8]| {
    match Cursor::decode(data) {
        Ok(cursor) => {
            assert_eq!(cursor.encode(), data, "re-encoding changed the bytes");
            assert_eq!(
                Cursor::decode(&cursor.encode()).expect("decodes twice"),
                cursor
            );
        }
        Err(Error::Corrupt(_)) => {}
        Err(other) => panic!("a bad cursor must be Corrupt, not {other:?}"),
    }
    match decode_ids(data) {
        Ok(ids) => {
            assert!(data.len().is_multiple_of(8));
            assert!(ids.len() <= data.len() / 8);
            let canonical = encode_ids(&ids);
            assert_eq!(decode_ids(&canonical).expect("canonical ids decode"), ids);
            assert!(canonical.len() <= data.len());
        }
        Err(Error::Corrupt(_)) => assert!(!data.len().is_multiple_of(8)),
        Err(other) => panic!("bad staged removals must be Corrupt, not {other:?}"),
    }
});
