//! The load generator still works: `ringkv-bench --smoke` against a real
//! node writes and reads without a single error.
//!
//! `ringkv-bench` is only run by people, occasionally, so nothing else would
//! notice when a change to the client or the server breaks it. This test
//! starts one node (memory engine: the point is the tool, not the disk),
//! runs the binary in smoke mode with JSON output, and checks the counts.
//! It asserts no timings: the machine running tests is shared and noisy,
//! and figures belong in `docs/benchmarks.md`.
//!
//! The binary is found like the others (`target/<profile>/ringkv-bench`,
//! override with `RINGKV_BENCH_BIN`); build it first with
//! `cargo build --release --bins`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ringkv_tests::ServerProcess;
use serde_json::Value;

/// Upper bound on the whole smoke run: preload of 200 keys, one second of
/// load and the tool's drain deadline fit in a fraction of it.
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `ringkv-bench` binary under test.
fn bench_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RINGKV_BENCH_BIN") {
        return PathBuf::from(path);
    }
    // current_exe = target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .join("ringkv-bench")
}

/// The figure at `path` (e.g. `["reads", "ops"]`) as an integer.
fn count(report: &Value, path: &[&str]) -> u64 {
    let mut v = report;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("report has no integer at {path:?}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_reads_and_writes_without_errors() {
    let binary = bench_binary();
    assert!(
        binary.exists(),
        "{} not found: build it with cargo build --release --bins",
        binary.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::start(&dir.path().join("node"), &["--engine", "memory"]).unwrap();
    server.wait_ready().await.unwrap();

    let run = tokio::process::Command::new(&binary)
        .args(["--smoke", "--output", "json", "--endpoints", &server.grpc])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BENCH_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("ringkv-bench --smoke did not finish within {BENCH_TIMEOUT:?}"))
        .expect("running ringkv-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ringkv-bench --smoke failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));

    assert_eq!(report["config"]["smoke"], Value::Bool(true), "{report:#}");
    // The preload wrote every key, so every read below should find one.
    assert_eq!(count(&report, &["preload", "errors"]), 0, "{report:#}");
    assert_eq!(
        count(&report, &["preload", "written"]),
        count(&report, &["preload", "keys"]),
        "{report:#}"
    );
    for op in ["reads", "writes"] {
        assert!(
            count(&report, &[op, "ops"]) > 0,
            "no {op} succeeded: {report:#}"
        );
        assert_eq!(
            count(&report, &[op, "errors"]),
            0,
            "{op} failed: {report:#}"
        );
        assert!(
            report[op]["latency_us"]["p99"].is_u64(),
            "{op} has no latency figures: {report:#}"
        );
    }
    assert_eq!(count(&report, &["reads", "not_found"]), 0, "{report:#}");
    assert_eq!(count(&report, &["errors"]), 0, "{report:#}");
    assert_eq!(
        count(&report, &["ops"]),
        count(&report, &["reads", "ops"]) + count(&report, &["writes", "ops"]),
        "{report:#}"
    );
}
