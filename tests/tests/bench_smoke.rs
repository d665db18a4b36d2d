//! The load generator still works: `ringkv-bench --smoke` against a real
//! node runs each kind of workload without a single error.
//!
//! `ringkv-bench` is only run by people, occasionally, so nothing else would
//! notice when a change to the client or the server breaks it. Each test
//! starts one node (memory engine: the point is the tool, not the disk),
//! runs the binary in smoke mode with JSON output, and checks the counts:
//!
//! - YCSB workload A (reads and blind updates, uniform keys, preloaded);
//! - the load workload (every key inserted exactly once);
//! - workload F on zipfian keys (reads and read-modify-writes that send
//!   the get's context back);
//! - an open-loop run (`--target-rate`), which may not issue more requests
//!   than its schedule holds.
//!
//! They assert no timings: the machine running tests is shared and noisy,
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

/// Upper bound on a whole smoke run: preload of 200 keys, one second of
/// load and the tool's drain deadline fit in a fraction of it.
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Keys of a smoke run (the tool's `SMOKE_KEYS`).
const SMOKE_KEYS: u64 = 200;

/// Length of a smoke run's measured phase, in seconds (`SMOKE_DURATION`).
const SMOKE_SECONDS: f64 = 1.0;

/// Offered rate of the open-loop test: low enough that any node keeps up,
/// so every scheduled request is sent.
const OPEN_LOOP_RATE: f64 = 300.0;

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

/// Starts a node, runs `ringkv-bench --smoke --output json <args>` against
/// it, and returns the parsed report after checking the run succeeded and
/// reported no error and no cut-off request at all.
async fn smoke(args: &[&str]) -> Value {
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
        .args(args)
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
        "ringkv-bench --smoke {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));

    assert_eq!(report["config"]["smoke"], Value::Bool(true), "{report:#}");
    assert_eq!(count(&report, &["errors"]), 0, "{report:#}");
    assert_eq!(count(&report, &["cut_off"]), 0, "{report:#}");
    let per_op: u64 = ["reads", "writes", "read_modify_writes", "inserts"]
        .iter()
        .map(|op| {
            assert_eq!(
                count(&report, &[op, "errors"]),
                0,
                "{op} failed: {report:#}"
            );
            count(&report, &[op, "ops"])
        })
        .sum();
    assert_eq!(count(&report, &["ops"]), per_op, "{report:#}");
    report
}

/// The preload wrote every key, so every read should find one.
fn assert_fully_preloaded(report: &Value) {
    assert_eq!(count(report, &["preload", "errors"]), 0, "{report:#}");
    assert_eq!(
        count(report, &["preload", "written"]),
        SMOKE_KEYS,
        "{report:#}"
    );
    assert_eq!(count(report, &["reads", "not_found"]), 0, "{report:#}");
}

fn assert_timed(report: &Value, op: &str) {
    assert!(
        count(report, &[op, "ops"]) > 0,
        "no {op} succeeded: {report:#}"
    );
    for p in ["p50", "p95", "p99", "p999", "max"] {
        assert!(
            report[op]["latency_us"][p].is_u64(),
            "{op} has no {p}: {report:#}"
        );
    }
}

fn assert_none(report: &Value, op: &str) {
    assert_eq!(
        count(report, &[op, "ops"]),
        0,
        "unexpected {op}: {report:#}"
    );
    assert!(report[op]["latency_us"].is_null(), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_a_reads_and_updates_without_errors() {
    let report = smoke(&["--workload", "a"]).await;
    assert_fully_preloaded(&report);
    assert_timed(&report, "reads");
    assert_timed(&report, "writes");
    assert_none(&report, "read_modify_writes");
    assert_none(&report, "inserts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_workload_inserts_every_key_exactly_once() {
    let report = smoke(&["--workload", "load"]).await;
    assert!(report["preload"].is_null(), "{report:#}");
    assert_eq!(
        count(&report, &["inserts", "ops"]),
        SMOKE_KEYS,
        "{report:#}"
    );
    assert_timed(&report, "inserts");
    assert_none(&report, "reads");
    assert_none(&report, "writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_f_on_zipfian_keys_reads_and_writes_back_with_context() {
    let report = smoke(&["--workload", "f", "--distribution", "zipfian"]).await;
    assert_eq!(report["config"]["distribution"], "zipfian", "{report:#}");
    assert_fully_preloaded(&report);
    assert_timed(&report, "reads");
    assert_timed(&report, "read_modify_writes");
    assert_eq!(
        count(&report, &["read_modify_writes", "not_found"]),
        0,
        "{report:#}"
    );
    assert_none(&report, "writes");
    assert_none(&report, "inserts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_run_sends_no_more_than_its_schedule() {
    let rate = OPEN_LOOP_RATE.to_string();
    let report = smoke(&["--workload", "b", "--target-rate", &rate]).await;
    assert_eq!(
        report["config"]["target_rate"].as_f64(),
        Some(OPEN_LOOP_RATE),
        "{report:#}"
    );
    assert_fully_preloaded(&report);
    assert_timed(&report, "reads");
    // The schedule holds rate × duration requests (each of the workers may
    // round up by one); a closed loop against a memory node would send
    // many times more in the same second.
    let workers = count(&report, &["config", "concurrency"]);
    let scheduled = (OPEN_LOOP_RATE * SMOKE_SECONDS) as u64 + workers;
    let ops = count(&report, &["ops"]);
    assert!(
        ops > 0 && ops <= scheduled,
        "{ops} requests, schedule holds at most {scheduled}: {report:#}"
    );
}
