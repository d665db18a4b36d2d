//! Version sets (`VersionSet::decode`): what storage holds for every key,
//! what replicas send each other (replicate, hints, reads, transfers) and
//! what a hint wraps.
//!
//! Asserts, for an accepted input: it re-encodes to exactly the input and
//! `encoded_len` agrees; its versions are sorted by dot and each dot is
//! covered by the context; merging it with itself changes nothing; capping
//! it (`enforce_cap`, `fit_within`) keeps a state that still round-trips;
//! reads (`visible`, `lww`) do not panic and see only what the set holds.
//! A refused input is `Error::Corrupt`, never a panic. For two accepted
//! sets (input split by `split_pair`): merge is commutative and
//! idempotent, descends from both contexts, keeps only versions that one
//! side held, and its result round-trips through the codec.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::error::Error;
use ringkv_core::version::VersionSet;
use ringkv_fuzz::split_pair;

/// Decodes and checks one set; `None` when the bytes were refused.
fn check(bytes: &[u8]) -> Option<VersionSet> {
    let set = match VersionSet::decode(bytes) {
        Ok(set) => set,
        Err(Error::Corrupt(_)) => return None,
        Err(other) => panic!("a bad version set must be Corrupt, not {other:?}"),
    };
    assert_eq!(set.encode(), bytes, "re-encoding changed the bytes");
    assert_eq!(set.encoded_len(), bytes.len());
    assert_well_formed(&set);
    assert_eq!(set.merged(&set), set, "merging with itself changed the set");

    for now in [0, 1 << 40, u64::MAX] {
        let visible = set.visible(now);
        assert!(visible.iter().all(|v| set.versions().contains(v)));
        assert_eq!(set.lww(now).is_some(), !visible.is_empty());
    }
    let mut capped = set.clone();
    let dropped = capped.enforce_cap(1);
    assert_eq!(capped.versions().len() + dropped, set.versions().len());
    round_trips(&capped);
    let mut fitted = set.clone();
    fitted.fit_within(bytes.len() / 2);
    round_trips(&fitted);
    Some(set)
}

/// Sorted, distinct dots, each covered by the context.
fn assert_well_formed(set: &VersionSet) {
    for pair in set.versions().windows(2) {
        assert!(pair[0].dot < pair[1].dot, "versions out of order");
    }
    for v in set.versions() {
        assert!(set.context().covers(&v.dot), "dot {} not covered", v.dot);
    }
}

fn round_trips(set: &VersionSet) {
    assert_well_formed(set);
    let bytes = set.encode();
    assert_eq!(set.encoded_len(), bytes.len());
    let back = VersionSet::decode(&bytes).expect("a state built by merge or cap decodes");
    assert_eq!(&back, set);
    assert_eq!(back.digest(), set.digest());
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((a, b)) = split_pair(data) else {
        return;
    };
    let (Some(a), Some(b)) = (check(a), check(b)) else {
        return;
    };
    let ab = a.merged(&b);
    let ba = b.merged(&a);
    assert_eq!(ab, ba, "merge is not commutative");
    assert_eq!(ab.digest(), ba.digest());
    assert_eq!(ab.merged(&a), ab, "merge is not idempotent");
    assert_eq!(ab.merged(&b), ab, "merge is not idempotent");
    assert!(ab.context().descends(a.context()) && ab.context().descends(b.context()));
    for v in ab.versions() {
        assert!(a.versions().contains(v) || b.versions().contains(v));
    }
    round_trips(&ab);
});
