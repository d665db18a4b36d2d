//! `ringkv-server health`: the probe container health checks and
//! Kubernetes' exec probes run. Readiness is SERVING, which a node reports
//! once it holds a layout; liveness is any answer.

use std::process::Command;

use anyhow::Result;
use ringkv_tests::{free_port, server_binary, ServerProcess, TestCluster};

/// Runs the probe against a peer address; returns its exit code and what
/// it printed.
fn health(peer: &str, live: bool) -> (i32, String) {
    let mut cmd = Command::new(server_binary());
    cmd.args(["health", "--address", peer, "--timeout-ms", "2000"]);
    if live {
        cmd.arg("--live");
    }
    let out = cmd.output().expect("run ringkv-server health");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_tells_a_ready_node_from_a_live_one() -> Result<()> {
    // A node waiting for a second member holds no layout: live, not ready.
    let dir = tempfile::tempdir()?;
    let peer = format!("127.0.0.1:{}", free_port());
    let mut waiting = ServerProcess::start_on(
        &dir.path().join("waiting"),
        &format!("127.0.0.1:{}", free_port()),
        &peer,
        &["--bootstrap-expect", "2"],
        &[],
    )?;
    waiting.wait_ready().await?;
    let (code, text) = health(&peer, false);
    assert_eq!(code, 1, "readiness of a node with no layout: {text}");
    assert!(text.contains("NOT_SERVING"), "{text}");
    let (code, text) = health(&peer, true);
    assert_eq!(code, 0, "liveness of a node with no layout: {text}");

    // A node in a formed cluster is ready.
    let cluster = TestCluster::start(1, &[]).await?;
    let (code, text) = health(&cluster.peer_endpoints()[0], false);
    assert_eq!(code, 0, "readiness of a formed node: {text}");
    assert!(text.contains(": SERVING"), "{text}");

    // A stopped node cannot be asked at all.
    let status = waiting.terminate()?;
    assert!(status.success(), "{status}");
    let (code, text) = health(&peer, true);
    assert_eq!(code, 2, "liveness of a stopped node: {text}");
    Ok(())
}
