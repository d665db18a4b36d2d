use super::*;
use ringkv_storage::MemoryEngine;

fn replica() -> Replica {
    Replica::new(NodeId(7), Arc::new(MemoryEngine::new()), 256, 4).unwrap()
}

pub(super) fn data(v: &str) -> Value {
    Value::Data(Bytes::from(v.to_string()))
}

pub(super) fn write(key: &str, value: &str, context: Option<VersionVector>) -> LocalWrite {
    LocalWrite {
        key: Bytes::from(key.to_string()),
        context,
        value: data(value),
        expires_at_ms: None,
        members: Vec::new(),
    }
}

#[tokio::test]
async fn blind_overwrites_leave_one_version() {
    let r = replica();
    r.apply_write(write("k", "a", None)).await.unwrap();
    let applied = r.apply_write(write("k", "b", None)).await.unwrap();
    assert_eq!(applied.state.versions().len(), 1);
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert_eq!(stored, applied.state);
    assert_eq!(stored.versions()[0].value, data("b"));
}

#[tokio::test]
async fn concurrent_writes_with_the_same_context_become_siblings() {
    let r = replica();
    let first = r.apply_write(write("k", "a", None)).await.unwrap();
    let ctx = first.state.context().clone();
    r.apply_write(write("k", "b", Some(ctx.clone())))
        .await
        .unwrap();
    let both = r.apply_write(write("k", "c", Some(ctx))).await.unwrap();
    assert_eq!(both.state.versions().len(), 2);
}

#[tokio::test]
async fn merge_reports_change_only_when_state_moves() {
    let a = replica();
    let b = Replica::new(NodeId(9), Arc::new(MemoryEngine::new()), 256, 4).unwrap();
    let applied = a.apply_write(write("k", "a", None)).await.unwrap();
    let first = b
        .merge(Bytes::from("k"), applied.state.clone())
        .await
        .unwrap();
    assert!(first.changed);
    let again = b
        .merge(Bytes::from("k"), applied.state.clone())
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.state, applied.state);
}

#[tokio::test]
async fn merge_group_equals_one_merge_per_entry() {
    // Two concurrent writes of "k" (siblings) and one of "j", made on
    // three coordinators, arrive at a replica in one group.
    let coordinators: Vec<Replica> = (1..=3)
        .map(|n| Replica::new(NodeId(n), Arc::new(MemoryEngine::new()), 256, 4).unwrap())
        .collect();
    let k1 = coordinators[0]
        .apply_write(write("k", "a", None))
        .await
        .unwrap();
    let k2 = coordinators[1]
        .apply_write(write("k", "b", None))
        .await
        .unwrap();
    let j = coordinators[2]
        .apply_write(write("j", "c", None))
        .await
        .unwrap();
    let group = vec![
        (Bytes::from("k"), k1.state.clone()),
        (Bytes::from("j"), j.state.clone()),
        (Bytes::from("k"), k2.state.clone()),
        (Bytes::from("j"), j.state.clone()),
    ];

    let grouped = replica();
    let merged = grouped.merge_group(group.clone()).await.unwrap();
    let one_by_one = replica();
    for (key, state) in group {
        one_by_one.merge(key, state).await.unwrap();
    }

    let merged: Vec<Merged> = merged.into_iter().map(Result::unwrap).collect();
    let changed: Vec<bool> = merged.iter().map(|m| m.changed).collect();
    assert_eq!(changed, vec![true, true, true, false]);
    assert_eq!(merged[2].state.versions().len(), 2, "k keeps both writes");
    for key in ["k", "j"] {
        let got = grouped.read(Bytes::from(key)).await.unwrap();
        let want = one_by_one.read(Bytes::from(key)).await.unwrap();
        assert_eq!(got, want, "{key}");
        assert!(got.is_some());
    }
    assert_eq!(
        grouped
            .merge_many(vec![(Bytes::from("j"), j.state)])
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn parallel_writers_to_one_key_lose_nothing() {
    let r = Arc::new(replica());
    let base = r.apply_write(write("k", "base", None)).await.unwrap();
    let ctx = base.state.context().clone();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let r = r.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            r.apply_write(write("k", &format!("v{i}"), Some(ctx)))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    // Four writes from the same context are concurrent: all four survive.
    assert_eq!(stored.versions().len(), 4);
}

#[tokio::test]
async fn corrupt_stored_bytes_are_an_error_not_a_panic() {
    let engine = Arc::new(MemoryEngine::new());
    let r = Replica::new(NodeId(7), engine.clone(), 256, 4).unwrap();
    let key = data_key(r.partition_of(b"k"), b"k");
    let mut batch = WriteBatch::new();
    batch.put(Cf::Data, key, vec![0xff, 0x00, 0x13]);
    engine.write(batch).unwrap();
    assert!(matches!(
        r.read(Bytes::from("k")).await,
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        r.apply_write(write("k", "a", None)).await,
        Err(Error::Corrupt(_))
    ));
}

/// A replica whose keys may hold at most `max_state` bytes.
fn limited(node: u64, max_state: usize) -> Replica {
    Replica::new(NodeId(node), Arc::new(MemoryEngine::new()), 256, 32)
        .unwrap()
        .with_max_state_bytes(max_state)
}

fn big(c: u8, len: usize) -> Value {
    Value::Data(Bytes::from(vec![c; len]))
}

#[tokio::test]
async fn a_write_past_the_key_state_limit_is_refused_and_a_covering_one_is_not() {
    let r = limited(7, 1500);
    let first = r.apply_write(write("k", "base", None)).await.unwrap();
    let ctx = first.state.context().clone();
    let mut twin = write("k", "", Some(ctx.clone()));
    twin.value = big(b'a', 800);
    r.apply_write(twin.clone()).await.unwrap();
    // The second write from the same context would keep both 800-byte
    // siblings: refused, and nothing of it is stored.
    twin.value = big(b'b', 800);
    let err = r.apply_write(twin).await.unwrap_err();
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert_eq!(
        stored.versions().len(),
        1,
        "the refused write left no trace"
    );
    match &err {
        Error::KeyStateTooLarge {
            siblings, bytes, ..
        } => {
            assert_eq!(*siblings, 2);
            assert!(*bytes > 1500);
        }
        other => panic!("expected KeyStateTooLarge, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("2 sibling(s)"), "{text}");
    assert!(text.contains("context"), "{text}");
    assert_eq!(err.code(), ringkv_core::error::Code::ResourceExhausted);
    // A write with the context of a read replaces the sibling: allowed.
    let mut resolve = write("k", "", Some(stored.context().clone()));
    resolve.value = big(b'c', 1000);
    let applied = r.apply_write(resolve).await.unwrap();
    assert_eq!(applied.state.versions().len(), 1);
    assert!(applied.state.encoded_len() <= 1500);
}

#[tokio::test]
async fn a_merge_past_the_key_state_limit_keeps_the_newest_siblings() {
    // Two coordinators each accepted an 800-byte sibling; a replica that
    // merges both keeps the newer one within the limit, and so does any
    // other order of merging.
    let (a, b) = (limited(1, 1500), limited(2, 1500));
    let mut wa = write("k", "", Some(VersionVector::new()));
    wa.value = big(b'a', 800);
    let from_a = a.apply_write(wa).await.unwrap().state;
    let mut wb = write("k", "", Some(VersionVector::new()));
    wb.value = big(b'b', 800);
    let from_b = b.apply_write(wb).await.unwrap().state;
    let replica = limited(3, 1500);
    replica
        .merge(Bytes::from("k"), from_a.clone())
        .await
        .unwrap();
    let merged = replica
        .merge(Bytes::from("k"), from_b.clone())
        .await
        .unwrap();
    assert_eq!(merged.collapsed, 1);
    assert!(merged.state.encoded_len() <= 1500);
    assert_eq!(merged.state.versions().len(), 1);
    assert_eq!(
        merged.state.versions()[0].value,
        big(b'b', 800),
        "the newer write stays"
    );
    let other_order = limited(4, 1500);
    other_order.merge(Bytes::from("k"), from_b).await.unwrap();
    let again = other_order.merge(Bytes::from("k"), from_a).await.unwrap();
    assert_eq!(again.state, merged.state, "replicas converge");
}

#[tokio::test]
async fn context_entries_of_unknown_nodes_never_reach_the_stored_vector() {
    let r = limited(7, 1 << 20);
    let member = NodeId(8);
    for round in 0..50u64 {
        let mut ctx: VersionVector = (0..1024u64)
            .map(|i| (NodeId(1_000_000 + round * 1024 + i), 5))
            .collect();
        ctx.insert(member, 3);
        let mut w = write("k", &format!("v{round}"), Some(ctx));
        w.members = vec![NodeId(7), member];
        r.apply_write(w).await.unwrap();
    }
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    let nodes: Vec<NodeId> = stored.context().iter().map(|(n, _)| n).collect();
    assert_eq!(nodes, vec![NodeId(7), member], "only members remain");
    assert_eq!(stored.context().get(member), 3, "a member's entry is kept");
}

/// `debug.inject_bug = merge_collapses_siblings`: two concurrent writes
/// merged into a replica stay siblings as designed; with the bug only the
/// newer survives, its vector still covers the other's dot (so merging the
/// lost write again does not bring it back), and nothing counts it.
#[tokio::test]
async fn merge_keeps_concurrent_siblings_unless_the_collapse_bug_is_injected() {
    let older = Replica::new(NodeId(1), Arc::new(MemoryEngine::new()), 256, 4)
        .unwrap()
        .apply_write(write("k", "older", None))
        .await
        .unwrap()
        .state;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let newer = Replica::new(NodeId(2), Arc::new(MemoryEngine::new()), 256, 4)
        .unwrap()
        .apply_write(write("k", "newer", None))
        .await
        .unwrap()
        .state;
    let dots: Vec<_> = older
        .versions()
        .iter()
        .chain(newer.versions())
        .map(|v| v.dot)
        .collect();
    let values = |state: &VersionSet| -> Vec<Value> {
        state.versions().iter().map(|v| v.value.clone()).collect()
    };

    for (bug, kept) in [
        (InjectBug::None, vec![data("older"), data("newer")]),
        (InjectBug::MergeCollapsesSiblings, vec![data("newer")]),
    ] {
        let r = replica().with_injected_bug(bug);
        r.merge(Bytes::from("k"), older.clone()).await.unwrap();
        let merged = r.merge(Bytes::from("k"), newer.clone()).await.unwrap();
        assert_eq!(values(&merged.state), kept, "{bug:?}");
        assert_eq!(merged.collapsed, 0, "{bug:?}: the collapse is silent");
        assert!(
            dots.iter().all(|d| merged.state.context().covers(d)),
            "{bug:?}: the vector covers every dot seen"
        );
        let again = r.merge(Bytes::from("k"), older.clone()).await.unwrap();
        assert_eq!(values(&again.state), kept, "{bug:?}");
        let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
        assert_eq!(stored, again.state, "{bug:?}");
    }
}

/// The collapse bug changes merges only: a coordinator's own writes from
/// one context still become siblings.
#[tokio::test]
async fn the_collapse_bug_leaves_local_writes_alone() {
    let r = replica().with_injected_bug(InjectBug::MergeCollapsesSiblings);
    let first = r.apply_write(write("k", "a", None)).await.unwrap();
    let ctx = first.state.context().clone();
    r.apply_write(write("k", "b", Some(ctx.clone())))
        .await
        .unwrap();
    let both = r.apply_write(write("k", "c", Some(ctx))).await.unwrap();
    assert_eq!(both.state.versions().len(), 2);
}

fn disk_reads(r: &Replica) -> u64 {
    r.counters()
        .into_iter()
        .find(|c| c.name == "ringkv_storage_disk_reads_total")
        .map(|c| c.value.load(Ordering::Relaxed))
        .unwrap()
}

/// A read that memory can answer is answered where it is asked; one that
/// needs the disk (a reopened node, the value only in a table file) goes
/// to the blocking pool and still reads the value.
#[tokio::test]
async fn reads_use_the_disk_only_for_what_memory_does_not_hold() {
    let dir = tempfile::TempDir::new().unwrap();
    let options = ringkv_storage::StorageOptions::default();
    let written = {
        let engine = Arc::new(ringkv_storage::RocksEngine::open(dir.path(), &options).unwrap());
        let r = Replica::new(NodeId(7), engine, 256, 4).unwrap();
        let written = r.apply_write(write("k", "a", None)).await.unwrap().state;
        assert_eq!(
            r.read(Bytes::from("k")).await.unwrap(),
            Some(written.clone())
        );
        assert_eq!(disk_reads(&r), 0, "just written: in the memtable");
        r.flush().await.unwrap();
        written
    };
    let engine = Arc::new(ringkv_storage::RocksEngine::open(dir.path(), &options).unwrap());
    let r = Replica::new(NodeId(7), engine, 256, 4).unwrap();
    assert_eq!(
        r.read(Bytes::from("k")).await.unwrap(),
        Some(written.clone())
    );
    assert_eq!(disk_reads(&r), 1);
    let again = r.read_group(vec![Bytes::from("k")]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].as_ref().unwrap().is_some());
    assert_eq!(disk_reads(&r), 1, "now in the block cache");
}
