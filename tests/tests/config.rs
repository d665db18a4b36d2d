//! Configuration of `ringkv-server`, run as a real process.
//!
//! Covers: `--print-config` and the built-in defaults DESIGN.md fixes; the
//! layering defaults → `--config FILE` → `RINGKV__SECTION__KEY` environment
//! → command-line flags; start-up refusals (unknown keys in a file or the
//! environment, a partition count that is not a power of two, a missing
//! config file, a port already in use), each with exit code 2 (or non-zero
//! for the port) and a message naming the problem, never a panic; and the
//! repository's sample `deploy/ringkv.toml`, which must document every key
//! with its default and start a working node.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_tests::{free_port, server_binary, ServerProcess};
use tempfile::TempDir;

/// How long a server with a bad configuration may take to exit before the
/// test fails (and kills it).
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// `ringkv-server` with `args`, in `dir`, with `env` and no inherited
/// `RINGKV*` variables (so the machine's environment cannot leak in).
fn server_command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(server_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RINGKV") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Runs `ringkv-server --print-config` with extra `args` and `env`, and
/// parses what it prints.
fn print_config(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let out = server_command(dir, &all, env).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "--print-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    toml::from_str(&text)
        .unwrap_or_else(|e| panic!("--print-config printed invalid TOML ({e}):\n{text}"))
}

/// `table[section][key]`.
fn get<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a toml::Value {
    table
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("{section}.{key} missing from:\n{table:#?}"))
}

fn str_of<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a str {
    get(table, section, key)
        .as_str()
        .unwrap_or_else(|| panic!("{section}.{key} is not a string"))
}

fn int_of(table: &toml::Table, section: &str, key: &str) -> i64 {
    get(table, section, key)
        .as_integer()
        .unwrap_or_else(|| panic!("{section}.{key} is not an integer"))
}

/// Starts a server meant to refuse its configuration (on free ports and a
/// scratch data directory, in case it does not) and waits for it to exit.
fn run_until_exit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let grpc = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let data = dir.join("data");
    let mut all: Vec<&str> = Vec::new();
    for (flag, value) in [
        ("--listen", grpc.as_str()),
        ("--metrics-listen", metrics.as_str()),
        ("--data-dir", data.to_str().unwrap()),
    ] {
        // clap refuses a flag given twice: the caller's own wins.
        if !args.contains(&flag) {
            all.extend([flag, value]);
        }
    }
    all.extend_from_slice(args);
    let err_path = dir.join("stderr.txt");
    let mut child = server_command(dir, &all, env)
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server with {args:?} {env:?} kept running instead of refusing its configuration; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    (status.code(), stderr)
}

fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("ringkv.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The repository's sample configuration.
fn sample_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("ringkv.toml")
}

#[test]
fn print_config_shows_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = print_config(dir.path(), &[], &[]);
    assert_eq!(str_of(&c, "node", "listen"), "127.0.0.1:7379");
    assert_eq!(str_of(&c, "node", "peer_listen"), "127.0.0.1:7380");
    assert_eq!(str_of(&c, "node", "data_dir"), "./data");
    assert_eq!(str_of(&c, "metrics", "listen"), "127.0.0.1:9379");
    assert_eq!(int_of(&c, "cluster", "replication"), 3);
    assert_eq!(int_of(&c, "cluster", "partitions"), 256);
    assert_eq!(str_of(&c, "cluster", "read"), "quorum");
    assert_eq!(str_of(&c, "cluster", "write"), "quorum");
    assert_eq!(int_of(&c, "limits", "max_key_bytes"), 4096);
    assert_eq!(int_of(&c, "limits", "max_value_bytes"), 1_048_576);
    assert_eq!(str_of(&c, "storage", "engine"), "rocksdb");
    assert_eq!(str_of(&c, "storage", "sync"), "periodic");
    // Printing the configuration touches nothing on disk.
    assert!(
        !dir.path().join("data").exists(),
        "--print-config created the data directory"
    );
}

#[test]
fn printed_config_is_a_valid_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = server_command(dir.path(), &["--print-config", "--name", "round-trip"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let again = server_command(
        dir.path(),
        &["--print-config", "--config", path.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn environment_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RINGKV__NODE__NAME", "envname"),
        ("RINGKV__CLUSTER__REPLICATION", "5"),
        ("RINGKV__LIMITS__MAX_VALUE_BYTES", "2048"),
        ("RINGKV__CLUSTER__WRITE", "all"),
    ];
    let c = print_config(dir.path(), &[], &env);
    assert_eq!(str_of(&c, "node", "name"), "envname");
    assert_eq!(int_of(&c, "cluster", "replication"), 5);
    assert_eq!(int_of(&c, "limits", "max_value_bytes"), 2048);
    assert_eq!(str_of(&c, "cluster", "write"), "all");
    // Untouched keys keep their defaults.
    assert_eq!(str_of(&c, "node", "listen"), "127.0.0.1:7379");
}

#[test]
fn a_flag_beats_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RINGKV__NODE__NAME", "envname"),
        ("RINGKV__STORAGE__ENGINE", "rocksdb"),
    ];
    let c = print_config(
        dir.path(),
        &["--name", "flagname", "--engine", "memory"],
        &env,
    );
    assert_eq!(str_of(&c, "node", "name"), "flagname");
    assert_eq!(str_of(&c, "storage", "engine"), "memory");
}

#[test]
fn a_config_file_is_applied_and_the_environment_and_flags_beat_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[node]\nname = \"filename\"\nlisten = \"127.0.0.1:7500\"\nzone = \"zone-a\"\n\
         [cluster]\nreplication = 5\nread = 2\n[limits]\nmax_value_bytes = 2048\n",
    );
    let path = path.to_str().unwrap();

    let c = print_config(dir.path(), &["--config", path], &[]);
    assert_eq!(str_of(&c, "node", "name"), "filename");
    assert_eq!(str_of(&c, "node", "listen"), "127.0.0.1:7500");
    assert_eq!(str_of(&c, "node", "zone"), "zone-a");
    assert_eq!(int_of(&c, "cluster", "replication"), 5);
    assert_eq!(int_of(&c, "cluster", "read"), 2);
    assert_eq!(int_of(&c, "limits", "max_value_bytes"), 2048);
    assert_eq!(
        int_of(&c, "cluster", "partitions"),
        256,
        "keys the file omits keep their defaults"
    );

    let env = [("RINGKV__NODE__NAME", "envname")];
    let c = print_config(dir.path(), &["--config", path], &env);
    assert_eq!(
        str_of(&c, "node", "name"),
        "envname",
        "the environment beats the file"
    );
    assert_eq!(str_of(&c, "node", "zone"), "zone-a");
    assert_eq!(int_of(&c, "cluster", "replication"), 5);

    let c = print_config(
        dir.path(),
        &["--config", path, "--listen", "127.0.0.1:7600"],
        &env,
    );
    assert_eq!(
        str_of(&c, "node", "listen"),
        "127.0.0.1:7600",
        "a flag beats the file"
    );
    assert_eq!(str_of(&c, "node", "name"), "envname");
}

#[test]
fn an_unknown_key_in_the_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[node]\nlisn = \"127.0.0.1:7400\"\n");
    let (code, stderr) = run_until_exit(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("lisn"),
        "the message must name the key:\n{stderr}"
    );

    let path = write_config(&dir, "[nodes]\nname = \"x\"\n");
    let (code, stderr) = run_until_exit(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("nodes"),
        "the message must name the section:\n{stderr}"
    );
}

#[test]
fn an_unknown_environment_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_until_exit(
        dir.path(),
        &[],
        &[("RINGKV__NODE__LISTN", "127.0.0.1:7400")],
    );
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.to_lowercase().contains("listn"),
        "the message must name the key:\n{stderr}"
    );
}

#[test]
fn a_bad_value_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_until_exit(
        dir.path(),
        &[],
        &[("RINGKV__CLUSTER__REPLICATION", "three")],
    );
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("replication"), "{stderr}");

    let (code, stderr) = run_until_exit(dir.path(), &["--engine", "paper"], &[]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("paper") || stderr.contains("engine"),
        "{stderr}"
    );
}

#[test]
fn partitions_not_a_power_of_two_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[cluster]\npartitions = 100\n");
    let (code, stderr) = run_until_exit(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("power of two"), "{stderr}");
    assert!(stderr.contains("partitions"), "{stderr}");
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let (code, stderr) = run_until_exit(dir.path(), &["--config", missing.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

#[test]
fn a_port_in_use_makes_the_server_exit_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let (code, stderr) = run_until_exit(dir.path(), &["--listen", addr.as_str()], &[]);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&addr),
        "the message must name the address:\n{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");

    let (code, stderr) = run_until_exit(dir.path(), &["--metrics-listen", addr.as_str()], &[]);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&addr),
        "the message must name the address:\n{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
    drop(taken);
}

#[test]
fn a_data_dir_that_cannot_be_created_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let data = data.to_str().unwrap();
    let (code, stderr) = run_until_exit(dir.path(), &["--data-dir", data], &[]);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(data),
        "the message must name the directory:\n{stderr}"
    );
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut first = ServerProcess::start(&data, &[]).unwrap();
    first.wait_ready().await.unwrap();

    let (code, stderr) = run_until_exit(dir.path(), &["--data-dir", data.to_str().unwrap()], &[]);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("lock"),
        "the message must say the directory is locked:\n{stderr}"
    );

    // The first node is unharmed.
    let client = first.client();
    client
        .put("k", "v", ringkv_client::PutOptions::default())
        .await
        .unwrap();
}

/// `node.worker_threads` sizes the runtime that serves requests (the
/// metric reads the running runtime, so a setting that was not applied
/// shows as one worker per CPU); a count past the limit is refused at
/// start-up naming the key.
#[tokio::test]
async fn worker_threads_size_the_runtime_and_a_bad_count_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for count in ["1", "3"] {
        let env = [("RINGKV__NODE__WORKER_THREADS", count)];
        let mut server = ServerProcess::start_with_env(&dir.path().join(count), &[], &env).unwrap();
        server.wait_ready().await.unwrap();
        let workers =
            ringkv_tests::metrics::scrape_metric(&server.metrics, "ringkv_runtime_workers")
                .unwrap();
        assert_eq!(workers.to_string(), count);
        servers.push(server);
    }
    // Still serving with one worker.
    servers[0]
        .client()
        .put("k", "v", ringkv_client::PutOptions::default())
        .await
        .unwrap();

    let (code, stderr) = run_until_exit(
        dir.path(),
        &[],
        &[("RINGKV__NODE__WORKER_THREADS", "100000")],
    );
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("node.worker_threads"), "{stderr}");
}

#[test]
fn port_zero_for_both_listeners_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let c = print_config(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(str_of(&c, "node", "listen"), "127.0.0.1:0");
    assert_eq!(str_of(&c, "metrics", "listen"), "127.0.0.1:0");
}

#[test]
fn the_same_address_for_grpc_and_metrics_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, stderr) = run_until_exit(
        dir.path(),
        &["--listen", addr.as_str(), "--metrics-listen", addr.as_str()],
        &[],
    );
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("metrics.listen"), "{stderr}");
}

/// Every `section.key` of a TOML table.
fn keys(table: &toml::Table) -> BTreeSet<String> {
    table
        .iter()
        .flat_map(|(section, value)| {
            let inner = value.as_table().cloned().unwrap_or_default();
            inner
                .keys()
                .map(|k| format!("{section}.{k}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_sample_config_documents_every_key_with_its_default() {
    let sample_path = sample_config();
    let text = std::fs::read_to_string(&sample_path)
        .unwrap_or_else(|e| panic!("{}: {e}", sample_path.display()));
    let sample: toml::Table = toml::from_str(&text).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let defaults = print_config(dir.path(), &[], &[]);
    let missing: Vec<String> = keys(&defaults)
        .difference(&keys(&sample))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ringkv.toml does not document {missing:?}"
    );

    let with_sample = print_config(
        dir.path(),
        &["--config", sample_path.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        with_sample, defaults,
        "deploy/ringkv.toml must hold the defaults"
    );
}

#[tokio::test]
async fn a_node_started_with_the_sample_config_serves() {
    let sample = sample_config();
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        &dir.path().join("node"),
        &["--config", sample.to_str().unwrap()],
    )
    .unwrap();
    server.wait_ready().await.unwrap();

    let client = server.client();
    client
        .put("sample", "configured", ringkv_client::PutOptions::default())
        .await
        .unwrap();
    let got = client
        .get("sample", ringkv_client::RequestOptions::default(), false)
        .await
        .unwrap();
    assert_eq!(got.value().map(|v| v.as_ref()), Some(&b"configured"[..]));

    let status = client.node_status(0).await.unwrap();
    assert_eq!(status.partitions, 256);
    assert_eq!(status.replication, 3);
    assert_eq!(status.cluster_name, "ringkv");
    assert_eq!(status.storage_engine, "rocksdb");
    assert_eq!(
        status.address, server.grpc,
        "the --listen flag beats the file"
    );
}
