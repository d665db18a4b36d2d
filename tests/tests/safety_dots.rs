//! Dots are never issued twice, whatever happened to a node's disk, and a
//! peer's clock cannot be pushed to the end of time.
//!
//! Each scenario is an event an operator can cause without doing anything
//! wrong: restoring a node's data directory from a backup, a machine crash
//! that loses the unsynced tail of the write-ahead log (`storage.sync =
//! periodic`), and a peer (or a forged message) sending versions stamped
//! far in the future. Before ringkv derived dot counters from its clock, the
//! first two made a node reuse a dot, and the replicas that already covered
//! it silently dropped a later W=ALL write.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use ringkv_client::{Client, Level, PutOptions, RequestOptions};
use ringkv_core::version::{NodeId, Timestamp, Value, VersionSet};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_tests::metrics::metrics_page;
use ringkv_tests::{signal, TestCluster};

/// The key every scenario overwrites.
const KEY: &str = "dots:k";

/// How long after the last write the replicas may take to agree.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A client that sends everything to node `i` of `cluster` and lets it
/// coordinate (every node replicates every key with 3 nodes and N = 3).
fn through(cluster: &TestCluster, i: usize) -> Client {
    Client::new(&[cluster.nodes[i].grpc.as_str()])
        .unwrap()
        .with_routing(false)
}

async fn put_all(client: &Client, value: &str) -> Result<()> {
    let opts = PutOptions {
        consistency: RequestOptions::level(Level::All),
        ..PutOptions::default()
    };
    client
        .put(KEY, value.to_string(), opts)
        .await
        .with_context(|| format!("put {KEY}={value} at W=ALL"))?;
    Ok(())
}

/// Copies a data directory the way an operator's backup would (`cp -a`).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// Puts the backup `copy` back in place of `dir`.
fn restore_dir(copy: &Path, dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir)?;
    copy_dir(copy, dir)
}

/// Reads the key at R=ALL through every node until each answers exactly
/// `expected` (read repair and anti-entropy may take a moment), or fails
/// with what the nodes answered.
async fn assert_everyone_reads(cluster: &TestCluster, expected: &str) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut answers = Vec::new();
        for i in 0..cluster.nodes.len() {
            let got = through(cluster, i)
                .get(KEY, RequestOptions::level(Level::All), false)
                .await;
            answers.push(match got {
                Ok(r) => r
                    .siblings
                    .iter()
                    .map(|s| String::from_utf8_lossy(&s.value).into_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
                Err(e) => format!("error: {e}"),
            });
        }
        if answers.iter().all(|a| a == expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("R=ALL reads through each node answered {answers:?}, expected {expected:?} from all");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_after_restoring_a_backup_is_not_lost() {
    let mut cluster = TestCluster::start(3, &[]).await.unwrap();
    let a = through(&cluster, 0);
    put_all(&a, "v1").await.unwrap();

    // A clean stop, a backup of A's data directory, and A back in service.
    let dir = cluster.nodes[0].data_dir.clone();
    let backup = dir.with_extension("backup");
    cluster.nodes[0].terminate().unwrap();
    copy_dir(&dir, &backup).unwrap();
    cluster.nodes[0].restart().await.unwrap();
    cluster.wait_converged().await.unwrap();
    put_all(&a, "v2").await.unwrap();
    put_all(&a, "v3").await.unwrap();

    // The operator restores the backup: A's stored state of the key is v1
    // again, while the other replicas hold v3.
    cluster.nodes[0].terminate().unwrap();
    restore_dir(&backup, &dir).unwrap();
    cluster.nodes[0].restart().await.unwrap();
    cluster.wait_converged().await.unwrap();
    put_all(&a, "v4").await.unwrap();

    assert_everyone_reads(&cluster, "v4").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_after_losing_the_unsynced_wal_tail_is_not_lost() {
    // `periodic` is the default; named here because it is the point.
    let mut cluster = TestCluster::start(3, &["--sync", "periodic"])
        .await
        .unwrap();
    let a = through(&cluster, 0);
    put_all(&a, "v1").await.unwrap();

    // A crash-consistent image of A's disk at this instant: with the process
    // frozen, the copy holds exactly what a machine crash right now could
    // leave behind at best. Restoring it after a SIGKILL is a crash that
    // lost everything A wrote after this point (the WAL tail).
    let dir = cluster.nodes[0].data_dir.clone();
    let image = dir.with_extension("crash-image");
    let pid = cluster.nodes[0].pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let copied = copy_dir(&dir, &image);
    signal(pid, libc::SIGCONT);
    copied.unwrap();
    put_all(&a, "v2").await.unwrap();
    put_all(&a, "v3").await.unwrap();

    cluster.nodes[0].kill();
    restore_dir(&image, &dir).unwrap();
    cluster.nodes[0].restart().await.unwrap();
    cluster.wait_converged().await.unwrap();
    put_all(&a, "v4").await.unwrap();

    assert_everyone_reads(&cluster, "v4").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicate_stamped_at_the_end_of_time_is_refused() {
    let cluster = TestCluster::start(3, &[]).await.unwrap();

    // What a peer with a broken clock (or a forged message) would send to
    // node B: a version of the key stamped u64::MAX, from a made-up node.
    let mut poisoned = VersionSet::new();
    poisoned.write(
        NodeId(0x00ba_d0c1_0c00_0001),
        None,
        Timestamp(u64::MAX),
        Value::Data(Bytes::from_static(b"from the end of time")),
        None,
        32,
    );
    let mut internal = InternalClient::connect(format!("http://{}", cluster.nodes[1].peer))
        .await
        .unwrap();
    let refused = internal
        .replicate(pb::ReplicateRequest {
            key: Bytes::from_static(KEY.as_bytes()),
            version_set: poisoned.encode().into(),
            from: cluster.ids[2].clone(),
            hint_for: String::new(),
        })
        .await;
    let status = refused.expect_err("a version stamped u64::MAX was accepted");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("clock.max_offset_ms"),
        "{status:?}"
    );

    // Later overwrites, coordinated by A, read back as the last written
    // value, not as the largest timestamp ever seen.
    let a = through(&cluster, 0);
    for v in ["v1", "v2", "v3"] {
        put_all(&a, v).await.unwrap();
    }
    assert_everyone_reads(&cluster, "v3").await.unwrap();
    for i in 0..3 {
        let lww = through(&cluster, i)
            .get(KEY, RequestOptions::level(Level::All), true)
            .await
            .unwrap();
        assert_eq!(lww.value().map(|v| v.as_ref()), Some(&b"v3"[..]));
    }
    let metrics = metrics_page(&cluster.nodes[1].metrics).unwrap();
    assert!(
        metrics.contains("ringkv_clock_refusals_total 1"),
        "the refusal is not counted:\n{metrics}"
    );
}
