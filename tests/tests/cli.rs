//! The `ringkv` command-line client, run as a real process against a real
//! node.
//!
//! Covers: what put, get and delete print and their exit codes (0 ok, 1 not
//! found, 2 invalid, 6 unreachable); consistency levels as words (any case)
//! and numbers, and the ones refused; `--output json`; `--file` with binary
//! content; `--ttl`; siblings created and resolved with `--context` taken
//! from `get --show-context`; malformed contexts; `local-get`; and
//! `cluster status`.

use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ringkv_tests::{cli, free_port, ServerProcess};
use serde_json::Value as Json;
use tempfile::TempDir;

/// How long a `--ttl 1s` value may take to read as absent before the test fails.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);

/// A running node for the CLI to talk to.
struct Node {
    /// Dropped first: kills the server before its directory goes away.
    server: ServerProcess,
    /// Data directory, server log and scratch files.
    dir: TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("node"), &[]).unwrap();
    server.wait_ready().await.unwrap();
    Node { server, dir }
}

impl Node {
    fn run(&self, args: &[&str]) -> Output {
        cli(&self.server.grpc, args)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The process exited with `code`; on failure the message shows its output.
#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "wrong exit status\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// The process exited with `code` and printed exactly one line on stderr
/// mentioning each of `needles`, and nothing on stdout.
#[track_caller]
fn assert_one_line_error(o: &Output, code: i32, needles: &[&str]) {
    assert_exit(o, code);
    let err = stderr(o);
    assert_eq!(
        err.lines().count(),
        1,
        "the error must be one line: {err:?}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr {err:?} should mention {needle:?}"
        );
    }
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
}

fn json(o: &Output) -> Json {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

/// The `context: X` line that `get --show-context` prints on stderr.
fn shown_context(o: &Output) -> String {
    stderr(o)
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .unwrap_or_else(|| panic!("no context line on stderr: {}", stderr(o)))
        .to_string()
}

#[tokio::test]
async fn put_prints_ok_and_get_prints_exactly_the_value() {
    let node = start().await;
    let put = node.run(&["put", "greeting", "hello world"]);
    assert_exit(&put, 0);
    assert_eq!(stdout(&put), "OK\n");

    let get = node.run(&["get", "greeting"]);
    assert_exit(&get, 0);
    assert_eq!(stdout(&get), "hello world\n");
    assert!(get.stderr.is_empty(), "stderr: {}", stderr(&get));
}

#[tokio::test]
async fn get_of_a_missing_key_exits_1_with_not_found_on_stderr() {
    let node = start().await;
    let get = node.run(&["get", "nothing-here"]);
    assert_exit(&get, 1);
    assert!(get.stdout.is_empty(), "stdout: {}", stdout(&get));
    assert!(
        stderr(&get).contains("not found"),
        "stderr: {}",
        stderr(&get)
    );
}

#[tokio::test]
async fn delete_then_get_exits_1() {
    let node = start().await;
    assert_exit(&node.run(&["put", "doomed", "v"]), 0);
    let delete = node.run(&["delete", "doomed"]);
    assert_exit(&delete, 0);
    assert_eq!(stdout(&delete), "OK\n");
    let get = node.run(&["get", "doomed"]);
    assert_exit(&get, 1);
    assert!(
        stderr(&get).contains("not found"),
        "stderr: {}",
        stderr(&get)
    );
}

#[tokio::test]
async fn consistency_levels_are_accepted_as_words_in_any_case_and_numbers() {
    let node = start().await;
    for (i, w) in ["quorum", "ALL", "One", "1", "2", "3"].iter().enumerate() {
        let value = format!("v{i}");
        assert_exit(&node.run(&["put", "k", &value, "-w", w]), 0);
        let get = node.run(&["get", "k", "-r", "one"]);
        assert_exit(&get, 0);
        assert_eq!(stdout(&get), format!("{value}\n"), "after -w {w}");
    }
    for r in ["one", "QUORUM", "all", "1", "3"] {
        let get = node.run(&["get", "k", "-r", r]);
        assert_exit(&get, 0);
        assert_eq!(stdout(&get), "v5\n", "-r {r}");
    }
    assert_exit(
        &node.run(&["put", "k", "long", "--write", "quorum", "--strict"]),
        0,
    );
    assert_exit(&node.run(&["get", "k", "--read", "all"]), 0);
    assert_exit(&node.run(&["delete", "k", "-w", "all"]), 0);
    assert_exit(&node.run(&["get", "k"]), 1);
}

#[tokio::test]
async fn invalid_consistency_levels_exit_2_with_one_line() {
    let node = start().await;
    // Refused by the CLI itself.
    for w in ["0", "most"] {
        let put = node.run(&["put", "k", "v", "-w", w]);
        assert_exit(&put, 2);
        let err = stderr(&put);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(w) && first.contains("one, quorum, all"),
            "the first line must say what is wrong with -w {w}: {err:?}"
        );
        assert!(put.stdout.is_empty(), "stdout: {}", stdout(&put));
    }
    let get = node.run(&["get", "k", "-r", "0"]);
    assert_exit(&get, 2);
    // Refused by the node: above N=3.
    let put = node.run(&["put", "k", "v", "-w", "4"]);
    assert_one_line_error(&put, 2, &["4", "N=3"]);
    let get = node.run(&["get", "k", "-r", "4"]);
    assert_one_line_error(&get, 2, &["4", "N=3"]);
    // None of them stored anything.
    assert_exit(&node.run(&["get", "k"]), 1);
}

#[tokio::test]
async fn json_get_gives_found_siblings_context_and_meta() {
    let node = start().await;
    assert_exit(&node.run(&["put", "k", "json value"]), 0);
    let get = node.run(&["--output", "json", "get", "k"]);
    assert_exit(&get, 0);
    let out = json(&get);
    assert_eq!(out["found"], Json::Bool(true), "{out}");
    let siblings = out["siblings"].as_array().expect("siblings array");
    assert_eq!(siblings.len(), 1, "{out}");
    assert_eq!(siblings[0]["value"], "json value");
    assert!(siblings[0]["timestamp"].as_u64().unwrap() > 0, "{out}");
    assert!(!out["context"].as_str().unwrap().is_empty(), "{out}");
    let meta = &out["meta"];
    let coordinator = meta["coordinator"].as_str().unwrap();
    assert_eq!(coordinator.len(), 16, "{out}");
    assert_eq!(meta["replicas"], serde_json::json!([coordinator]));
    assert_eq!(meta["replication"], 1);
    assert_eq!(meta["replication_capped"], true);
    assert_eq!(meta["required"], 1);

    let missing = node.run(&["--output", "json", "get", "absent"]);
    assert_exit(&missing, 1);
    let out = json(&missing);
    assert_eq!(out["found"], Json::Bool(false), "{out}");
    assert_eq!(out["siblings"], serde_json::json!([]));

    let put = node.run(&["--output", "json", "put", "k2", "v"]);
    assert_exit(&put, 0);
    let out = json(&put);
    assert_eq!(out["ok"], true, "{out}");
    assert!(!out["context"].as_str().unwrap().is_empty(), "{out}");
}

#[tokio::test]
async fn put_from_a_file_keeps_binary_content() {
    let node = start().await;
    let bytes: Vec<u8> = vec![0x00, 0xff, 0xfe, b'\n', 0x80, b'a', 0x00, 0xc3, 0x28];
    let path = node.dir.path().join("value.bin");
    std::fs::write(&path, &bytes).unwrap();

    let put = node.run(&["put", "bin", "--file", path.to_str().unwrap()]);
    assert_exit(&put, 0);
    assert_eq!(stdout(&put), "OK\n");

    let get = node.run(&["--output", "json", "get", "bin"]);
    assert_exit(&get, 0);
    let out = json(&get);
    let expected = base64::engine::general_purpose::STANDARD.encode(&bytes);
    assert_eq!(
        out["siblings"][0]["value_base64"],
        Json::String(expected),
        "{out}"
    );
    assert_eq!(
        out["siblings"][0].get("value"),
        None,
        "binary must not appear as text: {out}"
    );

    // Text mode writes the raw bytes and a newline.
    let get = node.run(&["get", "bin"]);
    assert_exit(&get, 0);
    let mut expected = bytes.clone();
    expected.push(b'\n');
    assert_eq!(get.stdout, expected);

    let missing = node.run(&["put", "bin", "--file", "/nonexistent/ringkv-value"]);
    assert_exit(&missing, 2);
}

#[tokio::test]
async fn ttl_expires_the_value() {
    let node = start().await;
    assert_exit(&node.run(&["put", "eph", "brief", "--ttl", "1s"]), 0);
    let get = node.run(&["--output", "json", "get", "eph"]);
    assert_exit(&get, 0);
    let out = json(&get);
    assert_eq!(out["siblings"][0]["value"], "brief", "{out}");
    assert!(out["siblings"][0]["expires_at_ms"].is_u64(), "{out}");

    std::thread::sleep(Duration::from_millis(2500));
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    loop {
        let get = node.run(&["get", "eph"]);
        if get.status.code() == Some(1) {
            break;
        }
        assert_exit(&get, 0);
        assert!(
            Instant::now() < deadline,
            "a --ttl 1s value is still readable after 12.5 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let zero = node.run(&["put", "eph", "v", "--ttl", "0s"]);
    assert_exit(&zero, 2);
}

#[tokio::test]
async fn context_from_show_context_creates_and_resolves_siblings() {
    let node = start().await;
    assert_exit(&node.run(&["put", "doc", "v1"]), 0);
    let read = node.run(&["get", "doc", "--show-context"]);
    assert_exit(&read, 0);
    assert_eq!(stdout(&read), "v1\n");
    let first = shown_context(&read);

    // Two writers that both saw v1: concurrent siblings.
    assert_exit(&node.run(&["put", "doc", "v2", "--context", &first]), 0);
    assert_exit(&node.run(&["put", "doc", "v3", "--context", &first]), 0);
    let read = node.run(&["get", "doc", "--show-context"]);
    assert_exit(&read, 0);
    assert_eq!(stdout(&read), "v2\nv3\n");
    assert!(
        stderr(&read).contains("2 siblings"),
        "stderr: {}",
        stderr(&read)
    );
    let both = shown_context(&read);

    // A write that saw both replaces both.
    assert_exit(&node.run(&["put", "doc", "merged", "--context", &both]), 0);
    let read = node.run(&["get", "doc"]);
    assert_exit(&read, 0);
    assert_eq!(stdout(&read), "merged\n");

    // --resolve lww picks the newest of two siblings.
    let read = node.run(&["get", "doc", "--show-context"]);
    let ctx = shown_context(&read);
    assert_exit(&node.run(&["put", "doc", "a", "--context", &ctx]), 0);
    assert_exit(&node.run(&["put", "doc", "b", "--context", &ctx]), 0);
    let lww = node.run(&["get", "doc", "--resolve", "lww"]);
    assert_exit(&lww, 0);
    assert_eq!(stdout(&lww), "b\n");

    // A delete with a context removes what that context saw.
    let read = node.run(&["get", "doc", "--show-context"]);
    let ctx = shown_context(&read);
    assert_exit(&node.run(&["delete", "doc", "--context", &ctx]), 0);
    assert_exit(&node.run(&["get", "doc"]), 1);
}

#[tokio::test]
async fn malformed_context_exits_2() {
    let node = start().await;
    assert_exit(&node.run(&["put", "k", "original"]), 0);
    // Not base64 at all; base64 of bytes that are not a context.
    for bad in ["!!not-a-context!!", "AAAA", "3q2-7w"] {
        let put = node.run(&["put", "k", "changed", "--context", bad]);
        assert_one_line_error(&put, 2, &["context"]);
        let delete = node.run(&["delete", "k", "--context", bad]);
        assert_one_line_error(&delete, 2, &["context"]);
    }
    let get = node.run(&["get", "k"]);
    assert_exit(&get, 0);
    assert_eq!(stdout(&get), "original\n");
}

#[test]
fn unreachable_endpoint_exits_6_naming_it() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    for args in [
        &["get", "k"][..],
        &["put", "k", "v"][..],
        &["cluster", "status"][..],
    ] {
        let out = cli(&endpoint, args);
        assert_exit(&out, 6);
        let err = stderr(&out);
        assert!(
            err.contains(&endpoint),
            "{args:?}: stderr should name {endpoint}: {err:?}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: the error must be one line: {err:?}"
        );
    }
}

#[test]
fn unreachable_endpoint_in_json_mode_reports_a_retryable_error() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    let out = cli(&endpoint, &["--output", "json", "get", "k"]);
    assert_exit(&out, 6);
    let report = json(&out);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["retryable"], true, "{report}");
    assert!(
        report["error"].as_str().unwrap().contains(&endpoint),
        "{report}"
    );
}

#[tokio::test]
async fn a_dead_endpoint_in_the_list_is_skipped() {
    let node = start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let endpoints = format!("{dead},{}", node.server.grpc);
    for _ in 0..3 {
        assert_exit(&cli(&endpoints, &["put", "k", "v"]), 0);
        let get = cli(&endpoints, &["get", "k"]);
        assert_exit(&get, 0);
        assert_eq!(stdout(&get), "v\n");
    }
}

#[tokio::test]
async fn other_bad_arguments_exit_2() {
    let node = start().await;
    let empty = node.run(&["put", "k", ""]);
    assert_one_line_error(&empty, 2, &["value", "empty"]);
    let zero_timeout = node.run(&["--timeout", "0s", "get", "k"]);
    assert_exit(&zero_timeout, 2);
    let long_key = "k".repeat(4097);
    let long = node.run(&["put", &long_key, "v"]);
    assert_one_line_error(&long, 2, &["4097"]);
    let no_value = node.run(&["put", "k"]);
    assert_exit(&no_value, 2);
    assert_exit(&node.run(&["get", "k"]), 1);
}

#[tokio::test]
async fn local_get_shows_the_stored_value() {
    let node = start().await;
    assert_exit(&node.run(&["put", "k", "stored here"]), 0);
    let local = node.run(&["local-get", "k"]);
    assert_exit(&local, 0);
    let out = stdout(&local);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("partition "), "{out}");
    assert!(lines[1].ends_with(" stored here"), "{out}");

    assert_exit(&node.run(&["delete", "k"]), 0);
    let local = node.run(&["local-get", "k"]);
    assert_exit(&local, 0);
    assert!(stdout(&local).contains("<tombstone>"), "{}", stdout(&local));

    let json_out = node.run(&["--output", "json", "local-get", "k"]);
    assert_exit(&json_out, 0);
    let out = json(&json_out);
    assert_eq!(out["found"], true, "{out}");
    assert_eq!(out["versions"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["versions"][0]["tombstone"], true, "{out}");

    let missing = node.run(&["local-get", "never-written"]);
    assert_exit(&missing, 1);
}

#[tokio::test]
async fn cluster_status_lists_one_member_up() {
    let node = start().await;
    let id = node.server.client().node_status(0).await.unwrap().node_id;

    let status = node.run(&["cluster", "status"]);
    assert_exit(&status, 0);
    let out = stdout(&status);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one member: {out}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], id, "{out}");
    assert!(row.contains(&"up"), "{out}");
    assert!(row.contains(&"alive"), "{out}");
    assert!(row.contains(&node.server.grpc.as_str()), "{out}");

    let status = node.run(&["--output", "json", "cluster", "status"]);
    assert_exit(&status, 0);
    let out = json(&status);
    let members = out["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{out}");
    assert_eq!(members[0]["node_id"], Json::String(id));
    assert_eq!(members[0]["status"], "up");
    assert_eq!(members[0]["liveness"], "alive");
    assert_eq!(members[0]["partitions_owned"], 256);
}

#[tokio::test]
async fn workers_are_listed_and_repair_reports_what_it_did() {
    let node = start().await;
    let status = node.run(&["--output", "json", "cluster", "status", "--workers"]);
    assert_exit(&status, 0);
    let text = stdout(&status);
    // Two JSON documents: the members, then the workers and hints.
    let workers: Json = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let names: Vec<&str> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    for expected in ["gossip", "hint-delivery", "anti-entropy"] {
        assert!(names.contains(&expected), "{expected} missing: {text}");
    }
    assert_eq!(workers["hints"].as_array().unwrap().len(), 0, "{text}");

    let repair = node.run(&["repair"]);
    assert_exit(&repair, 0);
    assert!(
        stdout(&repair).starts_with("repaired 0 keys in 0 of 256 partitions"),
        "{}",
        stdout(&repair)
    );
    let bad = node.run(&["repair", "--partition", "256"]);
    assert_exit(&bad, 2);
}
