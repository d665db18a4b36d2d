//! Durability of a single node: acknowledged writes survive SIGKILL and
//! SIGTERM.

use std::sync::Arc;

use ringkv_client::{Level, PutOptions, RequestOptions};
use ringkv_tests::ServerProcess;
use tokio::sync::Semaphore;

/// Keys written before the kill.
const KEYS: usize = 10_000;

/// Requests in flight at once.
const CONCURRENCY: usize = 32;

fn value_of(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 97))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("node"), &[]).unwrap();
    server.wait_ready().await.unwrap();

    let client = Arc::new(server.client());
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let client = client.clone();
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let opts = PutOptions {
                consistency: RequestOptions::level(Level::All),
                ..PutOptions::default()
            };
            client.put(format!("key-{i}"), value_of(i), opts).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .unwrap()
            .unwrap_or_else(|e| panic!("put key-{i} failed: {e}"));
    }

    // Every write above was acknowledged. SIGKILL gives the node no chance
    // to flush: only what the write-ahead log already holds survives.
    server.kill();
    server.restart().await.unwrap();

    let client = Arc::new(server.client());
    let mut reads = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let client = client.clone();
        let permit = permits.clone().acquire_owned().await.unwrap();
        reads.push(tokio::spawn(async move {
            let _permit = permit;
            client
                .get(format!("key-{i}"), RequestOptions::level(Level::All), false)
                .await
        }));
    }
    let mut missing = Vec::new();
    for (i, t) in reads.into_iter().enumerate() {
        let got = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("get key-{i} failed: {e}"));
        match got.value() {
            Some(v) if v.as_ref() == value_of(i).as_bytes() => {}
            other => missing.push((i, other.cloned())),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {KEYS} acknowledged writes lost or wrong after SIGKILL, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("node"), &[]).unwrap();
    server.wait_ready().await.unwrap();
    let client = server.client();
    client
        .put("k", "before-term", PutOptions::default())
        .await
        .unwrap();
    drop(client);

    let status = server.terminate().unwrap();
    assert!(status.success(), "graceful stop exited with {status}");
    assert!(server.log().contains("node stopped"), "{}", server.log());

    server.restart().await.unwrap();
    let got = server
        .client()
        .get("k", RequestOptions::default(), false)
        .await
        .unwrap();
    assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"before-term"[..]));
}

#[tokio::test]
async fn node_id_is_kept_across_restarts_and_generation_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("node"), &[]).unwrap();
    server.wait_ready().await.unwrap();
    let before = server.client().node_status(0).await.unwrap();
    server.restart().await.unwrap();
    let after = server.client().node_status(0).await.unwrap();
    assert_eq!(before.node_id, after.node_id);
    assert_eq!(after.generation, before.generation + 1);
}
