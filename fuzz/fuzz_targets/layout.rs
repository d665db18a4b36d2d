//! Layouts (`Layout::decode`): stored in every node's `meta` column
//! family, gossiped (`Internal.GetLayout`) and pushed on commit.
//!
//! Every input is decoded twice: as it is (mostly exercising the checksum
//! and framing checks) and sealed (`ringkv_fuzz::layout_seal`: the input
//! read as a layout without its checksums, which are added where the
//! format expects them, so mutations reach the structural checks).
//!
//! Asserts, for an accepted input: it re-encodes to exactly the input and
//! decodes back to an equal layout; every partition has `replication`
//! distinct replicas, all members; each preference list starts with them
//! and names every member exactly once; read and write sets are not empty; a transition retires into a layout
//! that round-trips too. A refused input is `Error::Corrupt`, never a
//! panic. The 16 bytes of a cluster id (`ClusterId::from_bytes`) are
//! checked too: accepted exactly when 16 bytes and not zero.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::error::Error;
use ringkv_core::ring::{ClusterId, Layout};
use ringkv_fuzz::layout_seal::seal;

/// At most this many partitions are queried per layout: a layout may have
/// 65 536, and querying each would make every run slow.
const QUERIED_PARTITIONS: u32 = 64;

fn check(bytes: &[u8]) {
    let layout = match Layout::decode(bytes) {
        Ok(layout) => layout,
        Err(Error::Corrupt(_)) => return,
        Err(other) => panic!("a bad layout must be Corrupt, not {other:?}"),
    };
    assert_eq!(layout.encode(), bytes, "re-encoding changed the bytes");
    let back = Layout::decode(bytes).expect("decodes twice");
    assert_eq!(back, layout);
    query(&layout);
    if let Some(previous) = layout.previous() {
        assert_eq!(previous.partitions(), layout.partitions());
        assert!(previous.version() < layout.version());
        query(previous);
        if let Ok(retired) = layout.retired() {
            assert!(!retired.in_transition());
            let bytes = retired.encode();
            assert_eq!(
                Layout::decode(&bytes).expect("a retired layout decodes"),
                retired
            );
        }
    }
}

fn query(layout: &Layout) {
    let n = layout.replication() as usize;
    let q = layout.partitions();
    assert!(q.is_power_of_two());
    let step = (q / QUERIED_PARTITIONS).max(1);
    for p in (0..q).step_by(step as usize) {
        let row = layout.replicas(p);
        assert_eq!(row.len(), n);
        for (i, id) in row.iter().enumerate() {
            assert!(layout.contains(*id));
            assert!(!row[..i].contains(id), "partition {p}: {id} twice");
        }
        let preference = layout.preference_list(p);
        assert_eq!(
            &preference[..n],
            row,
            "the preference list starts with the replicas"
        );
        let mut distinct: Vec<_> = preference.iter().map(|id| id.0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut members: Vec<_> = layout.members().iter().map(|m| m.id.0).collect();
        members.sort_unstable();
        assert_eq!(
            distinct, members,
            "every member once in the preference list"
        );
        assert_eq!(preference.len(), members.len());
        assert!(!layout.coordinators(p).is_empty());
        for set in layout.quorum_sets(p) {
            assert!(!set.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&seal(data));
    if let Some(id) = data.get(..16) {
        match ClusterId::from_bytes(id) {
            Ok(cluster) => assert_eq!(cluster.to_bytes(), id),
            Err(_) => assert!(id.iter().all(|&b| b == 0)),
        }
    }
});
