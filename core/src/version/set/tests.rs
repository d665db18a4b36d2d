//! Unit tests of version sets: merges, conflicts, contexts and caps.

use super::*;

const A: NodeId = NodeId(0xa);
const B: NodeId = NodeId(0xb);
const CAP: usize = 32;

fn data(s: &str) -> Value {
    Value::Data(Bytes::copy_from_slice(s.as_bytes()))
}

/// A raw timestamp: small numbers keep the counters these tests expect
/// (a dot's counter is at least its timestamp) while ordering the same.
fn ts(n: u64) -> Timestamp {
    Timestamp(n)
}

fn values(set: &VersionSet, now: u64) -> Vec<Value> {
    set.visible(now)
        .into_iter()
        .map(|v| v.value.clone())
        .collect()
}

#[test]
fn blind_overwrite_leaves_one_version() {
    let mut s = VersionSet::new();
    let first = s.write(A, None, ts(1), data("a"), None, CAP);
    assert_eq!(first.dot, Dot::new(A, 1));
    let second = s.write(A, None, ts(2), data("b"), None, CAP);
    assert_eq!(second.dot, Dot::new(A, 2));
    assert_eq!(s.versions().len(), 1);
    assert_eq!(values(&s, 0), [data("b")]);
    assert_eq!(s.context().get(A), 2);
}

#[test]
fn concurrent_writes_with_the_same_context_become_siblings() {
    let mut base = VersionSet::new();
    base.write(A, None, ts(1), data("v0"), None, CAP);
    let ctx = base.context().clone();
    let mut at_a = base.clone();
    let mut at_b = base.clone();
    at_a.write(A, Some(&ctx), ts(2), data("from a"), None, CAP);
    at_b.write(B, Some(&ctx), ts(3), data("from b"), None, CAP);
    let merged = at_a.merged(&at_b);
    assert_eq!(merged, at_b.merged(&at_a));
    assert_eq!(values(&merged, 0), [data("from a"), data("from b")]);
    assert_eq!(merged.lww(0).unwrap().value, data("from b"));
}

#[test]
fn same_coordinator_keeps_concurrent_writes_apart() {
    // Two clients read the same state and both write through A: the
    // second write did not see the first, so both stay.
    let mut s = VersionSet::new();
    s.write(A, None, ts(1), data("v0"), None, CAP);
    let ctx = s.context().clone();
    s.write(A, Some(&ctx), ts(2), data("x"), None, CAP);
    s.write(A, Some(&ctx), ts(3), data("y"), None, CAP);
    assert_eq!(values(&s, 0), [data("x"), data("y")]);
}

#[test]
fn write_with_merged_context_resolves_siblings() {
    let mut at_a = VersionSet::new();
    at_a.write(A, Some(&VersionVector::new()), ts(1), data("a"), None, CAP);
    let mut at_b = VersionSet::new();
    at_b.write(B, Some(&VersionVector::new()), ts(2), data("b"), None, CAP);
    let read = at_a.merged(&at_b);
    assert_eq!(read.visible(0).len(), 2);
    // The client resolves through A, which has not received B's sibling.
    let out = at_a.write(A, Some(read.context()), ts(3), data("c"), None, CAP);
    // The counter is at least the write's timestamp.
    assert_eq!(out.dot, Dot::new(A, 3));
    assert!(!read.context().covers(&out.dot));
    assert_eq!(values(&at_a, 0), [data("c")]);
    // When B's state arrives, its sibling is recognised as superseded.
    at_a.merge(&at_b);
    assert_eq!(values(&at_a, 0), [data("c")]);
    at_b.merge(&at_a);
    assert_eq!(at_a, at_b);
}

#[test]
fn delete_hides_the_value() {
    let mut s = VersionSet::new();
    s.write(A, None, ts(1), data("a"), None, CAP);
    let ctx = s.context().clone();
    s.write(A, Some(&ctx), ts(2), Value::Tombstone, None, CAP);
    assert!(s.visible(0).is_empty());
    assert!(s.lww(0).is_none());
    assert!(!s.is_empty(), "the tombstone is still a version");
    assert!(s.all_tombstones());
    assert!(s.versions()[0].is_tombstone());
}

#[test]
fn delete_of_a_concurrent_sibling_leaves_the_other() {
    let mut s = VersionSet::new();
    s.write(A, Some(&VersionVector::new()), ts(1), data("a"), None, CAP);
    let saw_a = s.context().clone();
    s.write(A, Some(&VersionVector::new()), ts(2), data("b"), None, CAP);
    s.write(A, Some(&saw_a), ts(3), Value::Tombstone, None, CAP);
    assert_eq!(values(&s, 0), [data("b")]);
    assert!(!s.all_tombstones());
}

#[test]
fn ttl_hides_at_and_after_expiry() {
    let mut s = VersionSet::new();
    s.write(A, None, ts(1_000), data("a"), Some(1_500), CAP);
    assert_eq!(values(&s, 1_499), [data("a")]);
    assert!(s.visible(1_500).is_empty());
    assert!(s.visible(9_999).is_empty());
    assert!(s.lww(1_500).is_none());
    assert!(!s.all_tombstones(), "expired data is not a tombstone");
}

#[test]
fn cap_collapses_the_oldest_and_reports_it() {
    let mut s = VersionSet::new();
    let empty = VersionVector::new();
    let mut last = None;
    for i in 0..5u64 {
        let out = s.write(A, Some(&empty), ts(10 - i), data(&i.to_string()), None, 3);
        assert_eq!(out.collapsed, usize::from(i >= 3));
        last = Some(out.dot);
    }
    // Timestamps ran backwards (the first write set the counter to 10),
    // yet each write survived its own cap.
    let last = last.unwrap();
    assert_eq!(last, Dot::new(A, 14));
    assert_eq!(s.versions().len(), 3);
    assert!(s.versions().iter().any(|v| v.dot == last));
    assert_eq!(values(&s, 0), [data("4"), data("1"), data("0")]);
    // Collapsed dots stay in the context: they count as superseded.
    assert_eq!(s.context().get(A), 14);
    assert_eq!(s.enforce_cap(1), 2);
    assert_eq!(values(&s, 0), [data("0")]);
    assert_eq!(s.enforce_cap(0), 0, "a cap of 0 still keeps one");
    assert_eq!(s.enforce_cap(5), 0);
}

#[test]
fn encoded_len_matches_the_encoding() {
    let empty = VersionVector::new();
    let mut s = VersionSet::new();
    assert_eq!(s.encoded_len(), s.encode().len());
    s.write(A, Some(&empty), ts(1), data("a"), Some(1 << 40), CAP);
    s.write(B, Some(&empty), ts(2), Value::Tombstone, None, CAP);
    let big = Value::Data(Bytes::from(vec![7u8; 300]));
    let forged: VersionVector = [(NodeId(u64::MAX), 1 << 60)].into_iter().collect();
    s.write(A, Some(&forged), ts(3), big, None, CAP);
    assert_eq!(s.encoded_len(), s.encode().len());
}

#[test]
fn fit_within_drops_the_oldest_until_the_state_fits() {
    let empty = VersionVector::new();
    let value = |c: u8| Value::Data(Bytes::from(vec![c; 1000]));
    let mut s = VersionSet::new();
    s.write(A, Some(&empty), ts(3), value(b'a'), None, CAP);
    s.write(B, Some(&empty), ts(1), value(b'b'), None, CAP);
    s.write(A, Some(&empty), ts(2), value(b'c'), None, CAP);
    let whole = s.encoded_len();
    assert_eq!(s.clone().fit_within(whole), 0, "a state that fits is kept");
    let mut two = s.clone();
    assert_eq!(two.fit_within(whole - 1), 1);
    assert!(two.encoded_len() < whole - 1);
    // The oldest by timestamp (b, at 1) went; its dot stays covered.
    assert_eq!(values(&two, 0), [value(b'c'), value(b'a')]);
    assert_eq!(s.merged(&two), two, "what was dropped does not come back");
    let mut one = s.clone();
    assert_eq!(one.fit_within(1), 2, "the newest version is always kept");
    assert_eq!(values(&one, 0), [value(b'a')]);
    assert!(
        one.encoded_len() > 1,
        "the caller sees it still does not fit"
    );
}

#[test]
fn collapsed_siblings_do_not_come_back_by_merge() {
    let empty = VersionVector::new();
    let mut a = VersionSet::new();
    a.write(A, Some(&empty), ts(1), data("old"), None, CAP);
    let mut b = VersionSet::new();
    b.write(B, Some(&empty), ts(2), data("new"), None, CAP);
    let mut capped = a.merged(&b);
    assert_eq!(capped.enforce_cap(1), 1);
    assert_eq!(capped.merged(&a), capped);
    assert_eq!(capped.merged(&b), capped);
}

#[test]
fn merge_is_idempotent_and_keeps_unseen_versions() {
    let mut a = VersionSet::new();
    a.write(A, None, ts(1), data("a"), None, CAP);
    let mut newer = a.clone();
    newer.write(B, Some(a.context()), ts(2), data("b"), None, CAP);
    assert_eq!(a.merged(&a), a);
    assert_eq!(a.merged(&newer), newer, "a's version was superseded");
    assert_eq!(newer.merged(&a), newer);
    assert_eq!(VersionSet::new().merged(&a), a);
}

#[test]
fn same_dot_with_different_contents_merges_deterministically() {
    let mut a = VersionSet::new();
    a.write(A, None, ts(1), data("x"), None, CAP);
    let mut b = VersionSet::new();
    b.write(A, None, ts(2), data("y"), None, CAP);
    let ab = a.merged(&b);
    assert_eq!(ab, b.merged(&a));
    assert_eq!(values(&ab, 0), [data("y")]);
}

#[test]
fn a_write_onto_a_stale_state_gets_a_dot_no_newer_state_covers() {
    // A's copy of the key went back in time (a restored backup): it
    // holds v1 while the other replicas hold v3, written by A later.
    let mut at_a = VersionSet::new();
    at_a.write(A, None, ts(100), data("v1"), None, CAP);
    let mut elsewhere = at_a.clone();
    elsewhere.write(A, None, ts(200), data("v2"), None, CAP);
    elsewhere.write(A, None, ts(300), data("v3"), None, CAP);
    // A's clock did not go back, so its next write is stamped later.
    let v4 = at_a.write(A, None, ts(400), data("v4"), None, CAP);
    assert!(!elsewhere.context().covers(&v4.dot), "{v4:?} reused");
    let mut merged = elsewhere.clone();
    merged.merge(&at_a);
    assert_eq!(values(&merged, 0), vec![data("v4")]);
    assert_eq!(merged.conflicting_dots(&at_a), 0);
}

#[test]
fn conflicting_dots_counts_one_dot_with_two_contents() {
    let mut one = VersionSet::new();
    one.write(A, None, ts(5), data("x"), None, CAP);
    let mut other = VersionSet::new();
    other.write(A, None, ts(5), data("y"), None, CAP);
    assert_eq!(one.conflicting_dots(&other), 1);
    assert_eq!(one.conflicting_dots(&one.clone()), 0);
}

#[test]
fn forged_saturated_context_keeps_dots_unique() {
    let forged: VersionVector = [(A, u64::MAX)].into_iter().collect();
    let mut s = VersionSet::new();
    s.write(A, Some(&forged), ts(1), data("a"), None, CAP);
    s.write(A, Some(&VersionVector::new()), ts(2), data("b"), None, CAP);
    assert_eq!(s.versions().len(), 1);
    assert_eq!(values(&s, 0), [data("b")]);
}

#[test]
fn max_timestamp_and_lww_order() {
    let empty = VersionVector::new();
    let mut s = VersionSet::new();
    assert_eq!(s.max_timestamp(), None);
    s.write(B, Some(&empty), ts(7), data("b"), None, CAP);
    s.write(A, Some(&empty), ts(7), data("a"), None, CAP);
    s.write(A, Some(&empty), ts(3), data("old"), None, CAP);
    assert_eq!(s.max_timestamp(), Some(ts(7)));
    // Equal timestamps: the greater dot (node B) wins.
    assert_eq!(s.lww(0).unwrap().value, data("b"));
    assert_eq!(values(&s, 0), [data("old"), data("a"), data("b")]);
}
