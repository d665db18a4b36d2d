//! What a failed write tells its client, and a node whose storage failed.
//!
//! ringkv answers a write it could not complete with one of two promises:
//! UNAVAILABLE ("refused before anything was applied: retry freely") or
//! DEADLINE_EXCEEDED ("the outcome is unknown: it may have been applied").
//! These tests break writes on real processes at the points where the two
//! used to be confused, and check the code through the client library and
//! the CLI's exit code (3 refused, 4 indeterminate):
//!
//! - a write forwarded by a non-replica whose coordinator dies after the
//!   request was sent (SIGSTOP, send, SIGKILL) is indeterminate, while a
//!   forward refused at connect stays UNAVAILABLE and leaves nothing;
//! - a write the coordinator applied locally but could not get to W
//!   replicas is indeterminate (and is indeed on the coordinator), while
//!   one refused because too few replicas are believed alive is on no node.
//!
//! The storage tests arm the test fault point (`Admin.SetFaults` with
//! `fail_next_wal_sync`, honoured only with `debug.fault_injection`) and
//! check that after the failed WAL sync the node acknowledges no write,
//! reports NOT_SERVING through `grpc.health.v1.Health`, shows
//! `ringkv_storage_failed 1`, still serves reads, and writes again once
//! restarted. Under `storage.sync = always` the failing sync is a write's
//! own; under `periodic` it is the background fsync.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringkv_client::{Error, Level, PutOptions, RequestOptions};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_tests::metrics::{metric_samples, metrics_page};
use ringkv_tests::{
    cli, keys_in, partition_of, put_opts, signal, wait_stopped, ServerProcess, TestCluster,
};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Server-side timeout of the forwarded put: far longer than the test
/// waits before killing the coordinator, so only the kill can end it.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the forwarded put is left hanging on the stopped coordinator
/// before the kill, so that it has certainly been sent.
const HANG_BEFORE_KILL: Duration = Duration::from_millis(500);

/// Bound on any single awaited answer in these tests.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Attempts at a write that the coordinator applies but cannot replicate
/// to W; an attempt can instead be refused up front when the coordinator
/// already believes the cut-off replica down.
const SHORT_OF_W_ATTEMPTS: usize = 10;

/// Pause between those attempts: long enough for gossip to bring a fresh
/// heartbeat of the cut-off replica, so the coordinator tries it again.
const SHORT_OF_W_PAUSE: Duration = Duration::from_secs(1);

/// Writes tried after the storage failed; every one must be refused.
const WRITES_AFTER_FAILURE: usize = 20;

/// How long the storage may take to report the failure after the fault
/// point was armed (the periodic fsync runs every 100 ms).
const FAILURE_SEEN_WITHIN: Duration = Duration::from_secs(10);

/// Pause between two probes while waiting for the failure to show.
const PROBE_PAUSE: Duration = Duration::from_millis(50);

fn put_with_timeout(level: Level, timeout: Duration) -> PutOptions {
    PutOptions {
        consistency: RequestOptions {
            level: Some(level),
            sloppy: None,
            timeout: Some(timeout),
        },
        ..PutOptions::default()
    }
}

/// Versions node `i` stores for `key` (tombstones included).
async fn stored_on(cluster: &TestCluster, i: usize, key: &str) -> usize {
    cluster.nodes[i]
        .client()
        .local_get(0, key.to_string())
        .await
        .unwrap_or_else(|e| panic!("Admin.LocalGet {key} on node {i}: {e}"))
        .versions
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_broken_after_sending_is_indeterminate_and_a_refused_one_is_not() {
    // N = 1 on three nodes: every key has one replica, and two nodes that
    // must forward its writes.
    let mut cluster = TestCluster::start_with_env(3, &[], &[("RINGKV__CLUSTER__REPLICATION", "1")])
        .await
        .unwrap();
    let layout = cluster.client().layout().await.unwrap();
    let partition = partition_of(b"forwarded", layout.partitions, layout.hash_seed);
    let coordinator = cluster
        .index_of(&layout.assignments[partition as usize].replicas[0])
        .unwrap();
    let forwarder = (coordinator + 1) % cluster.nodes.len();
    let keys = keys_in(
        partition,
        layout.partitions,
        layout.hash_seed,
        "forwarded",
        3,
    );
    let via_forwarder = std::sync::Arc::new(cluster.client_via(forwarder));
    let opts = put_with_timeout(Level::One, FORWARD_TIMEOUT);

    // The forward path works, and its channel to the coordinator is open.
    via_forwarder
        .put(keys[0].clone(), "v", opts.clone())
        .await
        .unwrap();

    // Stop the coordinator, send a write through the forwarder (it hangs
    // on the stopped process), then kill the coordinator: the connection
    // breaks after the write was sent.
    let pid = cluster.nodes[coordinator].pid().unwrap();
    signal(pid, libc::SIGSTOP);
    wait_stopped(pid, true).await.unwrap();
    let pending = {
        let client = via_forwarder.clone();
        let (key, opts) = (keys[1].clone(), opts.clone());
        tokio::spawn(async move { client.put(key, "v", opts).await })
    };
    tokio::time::sleep(HANG_BEFORE_KILL).await;
    if pending.is_finished() {
        panic!(
            "the forwarded put answered while its coordinator was stopped: {:?}",
            pending.await
        );
    }
    cluster.nodes[coordinator].kill();
    let err = tokio::time::timeout(ANSWER_WITHIN, pending)
        .await
        .expect("the forwarder answers once the coordinator is gone")
        .unwrap()
        .unwrap_err();
    println!("forward broken after sending: {err:?}");
    assert!(
        matches!(err, Error::Timeout(_)) && err.is_indeterminate(),
        "a forward broken after sending must be DEADLINE_EXCEEDED (indeterminate), got {err:?}"
    );
    assert!(
        err.to_string().contains("forwarding to coordinator"),
        "{err}"
    );

    // Back to a whole cluster; then kill the coordinator outright. The
    // forwarder still believes it alive for a moment, so the next forward
    // is refused at connect, or handed back unsent by the connection that
    // was closing as it queued (or, once the forwarder has noticed, not
    // attempted): nothing was sent, so UNAVAILABLE, and the key must be on
    // no node.
    cluster.nodes[coordinator].restart().await.unwrap();
    cluster.wait_converged().await.unwrap();
    cluster.nodes[coordinator].kill();
    let err = tokio::time::timeout(
        ANSWER_WITHIN,
        via_forwarder.put(keys[2].clone(), "v", opts.clone()),
    )
    .await
    .expect("a refused forward answers at once")
    .unwrap_err();
    println!("forward refused at connect: {err:?}");
    assert!(
        matches!(err, Error::Unavailable(_)) && !err.is_indeterminate(),
        "a forward that never left must stay UNAVAILABLE, got {err:?}"
    );
    cluster.nodes[coordinator].restart().await.unwrap();
    cluster.wait_converged().await.unwrap();
    for i in 0..cluster.nodes.len() {
        assert_eq!(stored_on(&cluster, i, &keys[2]).await, 0, "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_but_short_of_w_is_indeterminate_in_the_cli() {
    let cluster = TestCluster::start(3, &[]).await.unwrap();
    let layout = cluster.client().layout().await.unwrap();
    let partition = partition_of(b"short", layout.partitions, layout.hash_seed);
    let replicas = &layout.assignments[partition as usize].replicas;
    let coordinator = cluster.index_of(&replicas[0]).unwrap();
    let cut_off = cluster.index_of(&replicas[2]).unwrap();
    // The coordinator cannot send to one replica, which still gossips to
    // it and so keeps looking alive: a write at W = ALL is applied on the
    // coordinator and then fails to reach W.
    cluster.nodes[coordinator]
        .client()
        .set_faults(0, vec![cluster.ids[cut_off].clone()], Vec::new())
        .await
        .unwrap();
    let keys = keys_in(
        partition,
        layout.partitions,
        layout.hash_seed,
        "short",
        SHORT_OF_W_ATTEMPTS,
    );
    let endpoint = cluster.nodes[coordinator].grpc.clone();
    let mut outcomes = BTreeMap::new();
    let mut refused = Vec::new();
    for key in &keys {
        let out = {
            let (endpoint, key) = (endpoint.clone(), key.clone());
            tokio::task::spawn_blocking(move || cli(&endpoint, &["put", &key, "v", "-w", "all"]))
                .await
                .unwrap()
        };
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        println!("put {key}: exit {code:?}: {}", stderr.trim());
        *outcomes.entry(code).or_insert(0) += 1;
        match code {
            Some(4) => {
                assert!(stderr.contains("may"), "{stderr}");
                // Indeterminate indeed: the coordinator holds the write.
                assert_eq!(stored_on(&cluster, coordinator, key).await, 1, "{key}");
                break;
            }
            // Refused up front (the coordinator believed the replica down):
            // applied nowhere, checked below.
            Some(3) => refused.push(key.clone()),
            other => panic!("put at W = ALL with a replica cut off exited {other:?}: {stderr}"),
        }
        tokio::time::sleep(SHORT_OF_W_PAUSE).await;
    }
    assert_eq!(
        outcomes.get(&Some(4)),
        Some(&1),
        "no write applied short of W was reported indeterminate (exit 4): {outcomes:?}"
    );
    for key in &refused {
        for i in 0..cluster.nodes.len() {
            assert_eq!(
                stored_on(&cluster, i, key).await,
                0,
                "refused {key} on node {i}"
            );
        }
    }
}

/// A storage test's single node, its admin and health clients.
struct Node {
    server: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(sync: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut server = ServerProcess::start_with_env(
            &dir.path().join("node"),
            &[],
            &[
                ("RINGKV__DEBUG__FAULT_INJECTION", "true"),
                ("RINGKV__STORAGE__SYNC", sync),
            ],
        )
        .unwrap();
        server.wait_ready().await.unwrap();
        Node { server, _dir: dir }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn health(&self, service: &str) -> i32 {
        HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of {service:?}: {s:?}"))
            .into_inner()
            .status
    }

    async fn arm_storage_fault(&self) {
        AdminClient::new(self.channel().await)
            .set_faults(pb::SetFaultsRequest {
                fail_next_wal_sync: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// `ringkv_storage_failed` from the metrics endpoint.
    fn storage_failed_metric(&self) -> Option<f64> {
        metric_samples(&metrics_page(&self.server.metrics).unwrap())
            .get("ringkv_storage_failed")
            .copied()
    }
}

async fn a_failed_wal_sync_stops_acknowledgements(sync: &str) {
    let mut node = Node::start(sync).await;
    let client = node.server.client();
    let one = put_opts(Level::One, false);
    client.put("before", "kept", one.clone()).await.unwrap();
    assert_eq!(node.health("").await, ServingStatus::Serving as i32);
    assert_eq!(node.storage_failed_metric(), Some(0.0));

    // Arm the fault point, then write until the storage reports the
    // failure: under `always` the next write's own sync fails, under
    // `periodic` the background fsync within its interval.
    node.arm_storage_fault().await;
    let armed = Instant::now();
    let mut probes = 0;
    while node.health("").await == ServingStatus::Serving as i32 {
        assert!(
            armed.elapsed() < FAILURE_SEEN_WITHIN,
            "health still SERVING {FAILURE_SEEN_WITHIN:?} after the storage fault was armed ({sync})"
        );
        let result = client
            .put(format!("probe-{probes}"), "v", one.clone())
            .await;
        println!("probe {probes} ({sync}): {result:?}");
        probes += 1;
        tokio::time::sleep(PROBE_PAUSE).await;
    }
    for service in ["", "ringkv.v1.KV"] {
        assert_eq!(
            node.health(service).await,
            ServingStatus::NotServing as i32,
            "health of {service:?} ({sync})"
        );
    }
    assert_eq!(node.storage_failed_metric(), Some(1.0));
    assert!(
        node.server.log().contains("storage failed"),
        "no error logged:\n{}",
        node.server.log()
    );

    // Nothing is acknowledged any more, at W = 1 on the coordinator itself.
    for i in 0..WRITES_AFTER_FAILURE {
        let err = client
            .put(format!("after-{i}"), "v", one.clone())
            .await
            .expect_err("a write was acknowledged after the storage failed");
        assert!(
            matches!(err, Error::Unavailable(_)) && err.to_string().contains("restart"),
            "{err:?}"
        );
    }
    let err = client
        .delete("before", None, RequestOptions::level(Level::One))
        .await
        .expect_err("a delete was acknowledged after the storage failed");
    assert!(err.to_string().contains("storage failed"), "{err:?}");
    // Reads still work.
    let got = client
        .get("before", RequestOptions::level(Level::One), false)
        .await
        .unwrap();
    assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"kept"[..]));

    // A restart (after the disk was checked) brings writes back.
    node.server.restart().await.unwrap();
    assert_eq!(node.health("").await, ServingStatus::Serving as i32);
    let client = node.server.client();
    client.put("after-restart", "v", one).await.unwrap();
    let got = client
        .get("before", RequestOptions::level(Level::One), false)
        .await
        .unwrap();
    assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"kept"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_stops_acknowledgements_with_sync_always() {
    a_failed_wal_sync_stops_acknowledgements("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_stops_acknowledgements_with_sync_periodic() {
    a_failed_wal_sync_stops_acknowledgements("periodic").await;
}
