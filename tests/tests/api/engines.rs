//! The memory engine, and concurrent writers on the default one.

use super::*;

#[tokio::test]
async fn memory_engine_serves_and_forgets_on_restart() {
    let mut node = start(&["--engine", "memory"]).await;
    assert_eq!(node.node_status().await.storage_engine, "memory");
    node.put(put_req("k", "in memory")).await.unwrap();
    assert_eq!(node.values("k").await, vec!["in memory"]);

    node.server.restart().await.unwrap();
    let channel = connect(&node.server.grpc).await;
    node.kv = KvClient::new(channel.clone());
    node.admin = AdminClient::new(channel);
    assert_eq!(node.node_status().await.storage_engine, "memory");
    assert!(
        !node.get(get_req("k")).await.unwrap().found,
        "the memory engine keeps nothing across restarts"
    );
    assert!(!node.local_get(b"k").await.unwrap().found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_all_succeed_and_one_key_keeps_one_sibling() {
    const KEYS: usize = 200;
    const WRITERS: usize = 50;
    let node = start(&[]).await;

    let tasks: Vec<_> = (0..KEYS)
        .map(|i| {
            let mut kv = node.kv.clone();
            tokio::spawn(async move {
                kv.put(put_req(format!("key-{i}"), format!("value-{i}")))
                    .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .unwrap()
            .unwrap_or_else(|s| panic!("put key-{i}: {s:?}"));
    }

    let tasks: Vec<_> = (0..WRITERS)
        .map(|j| {
            let mut kv = node.kv.clone();
            tokio::spawn(async move { kv.put(put_req("hot", format!("writer-{j}"))).await })
        })
        .collect();
    for (j, t) in tasks.into_iter().enumerate() {
        t.await
            .unwrap()
            .unwrap_or_else(|s| panic!("put hot by writer-{j}: {s:?}"));
    }

    let hot = node.values("hot").await;
    assert_eq!(
        hot.len(),
        1,
        "blind puts to one key must leave one sibling: {hot:?}"
    );
    let writers: Vec<String> = (0..WRITERS).map(|j| format!("writer-{j}")).collect();
    assert!(writers.contains(&hot[0]), "{hot:?}");
    assert_eq!(node.local_get(b"hot").await.unwrap().versions.len(), 1);

    for i in 0..KEYS {
        assert_eq!(
            node.values(&format!("key-{i}")).await,
            vec![format!("value-{i}")]
        );
    }
}
