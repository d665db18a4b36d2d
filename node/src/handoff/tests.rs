use super::*;
use ringkv_core::version::{HybridClock, Value};
use ringkv_storage::MemoryEngine;

fn store(max_bytes: u64) -> (Arc<HintStore>, Arc<dyn Engine>) {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let s = HintStore::open(engine.clone(), 256, max_bytes, Metrics::new()).unwrap();
    (Arc::new(s), engine)
}

fn state(node: u64, value: &str) -> VersionSet {
    let mut s = VersionSet::new();
    let ts = HybridClock::new().now(1_000);
    s.write(
        NodeId(node),
        None,
        ts,
        Value::Data(Bytes::from(value.to_string())),
        None,
        32,
    );
    s
}

#[tokio::test]
async fn hints_are_kept_per_target_and_merged_per_key() {
    let (s, _) = store(1 << 20);
    s.store(NodeId(1), Bytes::from("k"), state(9, "a"))
        .await
        .unwrap();
    s.store(NodeId(1), Bytes::from("k"), state(8, "b"))
        .await
        .unwrap();
    s.store(NodeId(2), Bytes::from("k"), state(9, "a"))
        .await
        .unwrap();
    let queues = s.queues();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[0].1.keys, 1);
    let hints = s.batch(NodeId(1), 10).await.unwrap();
    assert_eq!(hints.len(), 1);
    // Two concurrent writes from different coordinators: both kept.
    assert_eq!(hints[0].state.versions().len(), 2);
    assert_eq!(s.batch(NodeId(3), 10).await.unwrap().len(), 0);
}

#[tokio::test]
async fn a_hint_is_removed_only_if_unchanged() {
    let (s, _) = store(1 << 20);
    s.store(NodeId(1), Bytes::from("k"), state(9, "a"))
        .await
        .unwrap();
    let read = s.batch(NodeId(1), 10).await.unwrap().remove(0);
    s.store(NodeId(1), Bytes::from("k"), state(8, "b"))
        .await
        .unwrap();
    assert!(!s.remove_if_unchanged(NodeId(1), &read).await.unwrap());
    let again = s.batch(NodeId(1), 10).await.unwrap().remove(0);
    assert!(s.remove_if_unchanged(NodeId(1), &again).await.unwrap());
    assert!(s.queues().is_empty());
}

#[tokio::test]
async fn a_full_target_refuses_new_hints_but_others_still_accept() {
    // Room for one hint of `big` (with its encoding) but not two.
    let (s, _) = store(250);
    let big = "x".repeat(150);
    s.store(NodeId(1), Bytes::from("k1"), state(9, &big))
        .await
        .unwrap();
    let err = s
        .store(NodeId(1), Bytes::from("k2"), state(9, &big))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err}");
    s.store(NodeId(2), Bytes::from("k2"), state(9, "small"))
        .await
        .unwrap();
}

#[tokio::test]
async fn counts_survive_a_reopen() {
    let (s, engine) = store(1 << 20);
    for i in 0..5 {
        s.store(NodeId(4), Bytes::from(format!("k{i}")), state(9, "v"))
            .await
            .unwrap();
    }
    let reopened = HintStore::open(engine, 256, 1 << 20, Metrics::new()).unwrap();
    assert_eq!(reopened.queues(), s.queues());
    assert_eq!(reopened.queues()[0].1.keys, 5);
}

#[tokio::test]
async fn corrupt_hints_are_dropped_not_delivered() {
    let (s, engine) = store(1 << 20);
    let mut batch = WriteBatch::new();
    batch.put(
        Cf::Hints,
        hint_key(NodeId(5), 0, b"bad"),
        vec![HINT_FORMAT, 1, 2],
    );
    engine.write(batch).unwrap();
    assert!(s.batch(NodeId(5), 10).await.unwrap().is_empty());
    assert!(engine
        .get(Cf::Hints, &hint_key(NodeId(5), 0, b"bad"))
        .unwrap()
        .is_none());
}
