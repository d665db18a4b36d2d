//! Durability: acknowledged writes survive SIGKILL and SIGTERM, on one
//! node and on a whole cluster killed mid-load under each sync mode.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_client::{Client, Level, PutOptions, RequestOptions};
use ringkv_tests::{put_opts, ServerProcess, TestCluster};
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

/// Writers running against the cluster at once.
const WRITERS: usize = 16;

/// Acknowledged writes (all writers together) before every node is killed.
const ACKED_BEFORE_KILL: usize = 600;

/// Each writer's most writes, and the longest the load may run: the kill
/// comes long before either in a healthy run.
const WRITES_PER_WRITER: usize = 1_000;
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// What one writer had acknowledged when the cluster died.
#[derive(Default)]
struct Acked {
    /// Keys written once each.
    once: Vec<String>,
    /// The writer's own overwritten key: the last counter acknowledged.
    hot: Option<u64>,
}

/// One writer: a new key, then the next counter on its own key with the
/// context of its previous write (so each supersedes the last), until the
/// first failure (the kill) or its bound.
async fn writer(client: Arc<Client>, w: usize, acked: Arc<Mutex<Acked>>, total: Arc<Semaphore>) {
    let mut context = None;
    for n in 0..WRITES_PER_WRITER as u64 {
        let key = format!("once-{w}-{n}");
        if client
            .put(
                key.clone(),
                value_of(n as usize),
                put_opts(Level::Quorum, true),
            )
            .await
            .is_err()
        {
            return;
        }
        acked.lock().unwrap().once.push(key);
        total.add_permits(1);
        let opts = PutOptions {
            context: context.take(),
            ..put_opts(Level::Quorum, true)
        };
        match client.put(format!("hot-{w}"), n.to_string(), opts).await {
            Ok(put) => {
                context = Some(put.context);
                acked.lock().unwrap().hot = Some(n);
            }
            Err(_) => return,
        }
    }
}

/// Three nodes, N = 3, strict QUORUM writes from 16 writers; once 600 are
/// acknowledged every node gets SIGKILL at once, with writes in flight.
/// After a restart every acknowledged write reads back at QUORUM, and no
/// overwritten key shows a value older than its last acknowledged one.
async fn acknowledged_writes_survive_sigkill_of_every_node(sync: &str) {
    let mut cluster = TestCluster::start_with_env(3, &[], &[("RINGKV__STORAGE__SYNC", sync)])
        .await
        .unwrap();
    let client = Arc::new(cluster.client());
    let total = Arc::new(Semaphore::new(0));
    let acked: Vec<_> = (0..WRITERS)
        .map(|_| Arc::new(Mutex::new(Acked::default())))
        .collect();
    let writers: Vec<_> = acked
        .iter()
        .enumerate()
        .map(|(w, acked)| tokio::spawn(writer(client.clone(), w, acked.clone(), total.clone())))
        .collect();
    tokio::time::timeout(LOAD_LIMIT, total.acquire_many(ACKED_BEFORE_KILL as u32))
        .await
        .expect("the cluster acknowledged 600 writes in time")
        .unwrap()
        .forget();
    for node in &mut cluster.nodes {
        node.kill();
    }
    for w in writers {
        tokio::time::timeout(LOAD_LIMIT, w)
            .await
            .expect("every writer stops at its first failure")
            .unwrap();
    }

    for node in &mut cluster.nodes {
        node.restart().await.unwrap();
    }
    cluster.wait_converged().await.unwrap();
    let client = cluster.client();
    let read = RequestOptions::level(Level::Quorum);
    let (mut once, mut lost) = (0, Vec::new());
    for (w, acked) in acked.iter().enumerate() {
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        for key in acked.once {
            once += 1;
            let n: usize = key.rsplit('-').next().unwrap().parse().unwrap();
            let got = client.get(key.clone(), read, false).await.unwrap();
            if got.value().map(|v| v.as_ref()) != Some(value_of(n).as_bytes()) {
                lost.push(format!("{key}: {:?}", got.siblings));
            }
        }
        let Some(last) = acked.hot else { continue };
        let got = client.get(format!("hot-{w}"), read, false).await.unwrap();
        let counters: Vec<u64> = got
            .siblings
            .iter()
            .map(|s| std::str::from_utf8(&s.value).unwrap().parse().unwrap())
            .collect();
        if counters.is_empty() || counters.iter().any(|&c| c < last) {
            lost.push(format!("hot-{w}: acknowledged {last}, read {counters:?}"));
        }
    }
    println!("sync = {sync}: {once} keys written once and {WRITERS} overwritten keys checked after SIGKILL of every node");
    assert!(
        once >= ACKED_BEFORE_KILL / 2,
        "only {once} single writes acknowledged"
    );
    assert!(
        lost.is_empty(),
        "sync = {sync}: {} acknowledged writes lost or superseded by older ones after SIGKILL: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_killed_mid_load_keeps_every_acknowledged_write_with_sync_always() {
    acknowledged_writes_survive_sigkill_of_every_node("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_killed_mid_load_keeps_every_acknowledged_write_with_sync_periodic() {
    acknowledged_writes_survive_sigkill_of_every_node("periodic").await;
}
