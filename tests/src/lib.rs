//! Test harness: starts real `ringkv-server` processes on loopback ports.
//!
//! Each [`ServerProcess`] owns a child process ([`Process`]), its ports
//! and its data directory. Dropping it kills the process (SIGKILL) and
//! reaps it, so a failing test never leaves a server behind. Servers
//! listen on 127.0.0.1 only, on ports picked free at start
//! ([`free_port`]). The benches start their servers through the same
//! [`Process`].
//!
//! The binaries are found next to the test executable's target directory
//! (`target/<profile>/ringkv-server`); `RINGKV_SERVER_BIN` and
//! `RINGKV_CLI_BIN` override that. Build them first
//! (`cargo build --release --bins`, which the test script does).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::{Client, Security};
use secure::{Secure, Secured};
pub mod compose;
pub mod faults;
pub mod metrics;
pub mod process;
pub mod rebalance;
pub mod secure;

pub use process::{free_port, free_port_in, signal, wait_stopped, Process, TEST_PORTS};
/// The partition of `key` under a layout (its `partitions` and
/// `hash_seed`), computed as the nodes do.
pub use ringkv_common::partition_of_seeded as partition_of;

/// How long a server may take to start answering.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a graceful stop may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn target_dir_binary(name: &str) -> PathBuf {
    // current_exe = target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    profile_dir.join(name)
}

/// Path of the `ringkv-server` binary under test.
pub fn server_binary() -> PathBuf {
    std::env::var_os("RINGKV_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir_binary("ringkv-server"))
}

/// Path of the `ringkv` CLI binary under test.
pub fn cli_binary() -> PathBuf {
    std::env::var_os("RINGKV_CLI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir_binary("ringkv"))
}

/// A `ringkv-server` child process.
pub struct ServerProcess {
    /// `None` while stopped.
    process: Option<Process>,
    /// Client port (KV, Admin), `127.0.0.1:PORT`.
    pub grpc: String,
    /// Peer port (Internal; what seeds name), `127.0.0.1:PORT`.
    pub peer: String,
    /// Prometheus address, `127.0.0.1:PORT`.
    pub metrics: String,
    pub data_dir: PathBuf,
    /// Where the server's stderr (its log) goes.
    pub log_path: PathBuf,
    /// Extra command-line arguments, kept for restarts.
    extra_args: Vec<String>,
    /// Extra environment variables, kept for restarts.
    env: Vec<(String, String)>,
    /// How clients reach a secured node (TLS, a token); default: plaintext.
    pub security: Security,
}

impl ServerProcess {
    /// Starts a server on fresh ports with its data in `data_dir`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Result<ServerProcess> {
        Self::start_with_env(data_dir, extra_args, &[])
    }

    pub fn start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ServerProcess> {
        Self::start_on(
            data_dir,
            &format!("127.0.0.1:{}", free_port()),
            &format!("127.0.0.1:{}", free_port()),
            extra_args,
            env,
        )
    }

    /// Starts a server on chosen client and peer addresses (a cluster's
    /// seeds must be known before its nodes start).
    pub fn start_on(
        data_dir: &Path,
        grpc: &str,
        peer: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ServerProcess> {
        std::fs::create_dir_all(data_dir)?;
        let mut server = ServerProcess {
            process: None,
            grpc: grpc.to_string(),
            peer: peer.to_string(),
            metrics: format!("127.0.0.1:{}", free_port()),
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            security: Security::default(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let binary = server_binary();
        let mut command = Command::new(&binary);
        command
            .arg("--listen")
            .arg(&self.grpc)
            .arg("--peer-listen")
            .arg(&self.peer)
            .arg("--metrics-listen")
            .arg(&self.metrics)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--name")
            .arg(secure::node_name(&self.grpc))
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let name = format!("ringkv-server at {}", self.grpc);
        let process = Process::spawn(&name, command, &self.log_path).with_context(|| {
            format!(
                "starting {} (build it with cargo build --release --bins)",
                binary.display()
            )
        })?;
        self.process = Some(process);
        Ok(())
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Waits until the node answers Admin.NodeStatus.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(process) = self.process.as_mut() {
                if let Some(status) = process.try_wait()? {
                    bail!(
                        "server exited during start-up ({status}); log:\n{}",
                        self.log()
                    );
                }
            }
            if client.node_status(0).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "server at {} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.grpc,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status, once the process has exited by itself.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.process.as_mut() {
            Some(process) => process.try_wait(),
            None => Ok(None),
        }
    }

    /// Sends SIGKILL and reaps the process: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Sends SIGTERM and waits for the process to exit by itself.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut process = self.process.take().context("server is not running")?;
        process.terminate(STOP_TIMEOUT)
    }

    /// Starts the server again on the same ports and data directory.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready().await
    }

    /// A client connected to this server only.
    pub fn client(&self) -> Client {
        Client::new(&[self.grpc.as_str()])
            .and_then(|c| c.with_security(self.security.clone()))
            .expect("valid endpoint")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python interpreter with grpcio, grpcio-reflection and
/// kubernetes-validate (`scripts/python-env.sh`, which the test script
/// runs): `RINGKV_PYTHON`, or the virtualenv's default place.
pub fn python() -> Result<PathBuf> {
    let path = std::env::var_os("RINGKV_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ringkv/venv/bin/python"))
        })
        .context("no HOME")?;
    if !path.exists() {
        bail!(
            "{} not found: run scripts/python-env.sh (scripts/test.sh does) or set RINGKV_PYTHON",
            path.display()
        );
    }
    Ok(path)
}

/// Runs the CLI with the given arguments against `endpoint`.
pub fn cli(endpoint: &str, args: &[&str]) -> Output {
    Command::new(cli_binary())
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the ringkv CLI")
}

/// Opens (creating) a scratch file, for tests that feed files to the CLI.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<File> {
    std::fs::write(path, bytes)?;
    Ok(File::open(path)?)
}

/// Gossip interval the test clusters run with, so liveness changes show
/// within seconds.
pub const TEST_GOSSIP_INTERVAL_MS: u64 = 200;

/// How long a test cluster may take to form or to notice a change.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Several `ringkv-server` processes forming one cluster on loopback,
/// with the fault switch enabled and fast gossip.
pub struct TestCluster {
    pub nodes: Vec<ServerProcess>,
    /// Node ids, by index.
    pub ids: Vec<String>,
    /// Per node, the node ids it is currently cut off from.
    cuts: Vec<std::collections::BTreeSet<String>>,
    /// Command-line arguments every node got beyond the harness's own, so
    /// nodes added later ([`TestCluster::add_node`]) run the same way.
    extra_args: Vec<String>,
    /// Environment every node got (the harness's and the caller's), for
    /// the same reason.
    env: Vec<(String, String)>,
    /// Certificates and tokens, for a secured cluster.
    pub secured: Option<Secured>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes that bootstrap together (`bootstrap_expect = n`)
    /// and waits until every node holds the same layout and sees every
    /// other node alive.
    pub async fn start(n: usize, extra_args: &[&str]) -> Result<TestCluster> {
        Self::start_with_env(n, extra_args, &[]).await
    }

    /// Like [`TestCluster::start`], with extra environment variables for
    /// every node (e.g. `("RINGKV__REPAIR__INTERVAL_MS", "500")`).
    pub async fn start_with_env(
        n: usize,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<TestCluster> {
        Self::start_inner(n, extra_args, extra_env, None).await
    }

    /// Like [`TestCluster::start_with_env`], secured: TLS on the client
    /// ports, mutual TLS on the peer ports, and with `auth` tokens on (the
    /// fault switch then stays off: faults are processes killed and
    /// stopped).
    pub async fn start_secured(
        n: usize,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
        secure: Secure,
    ) -> Result<TestCluster> {
        Self::start_inner(n, extra_args, extra_env, Some(secure)).await
    }

    async fn start_inner(
        n: usize,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
        secure: Option<Secure>,
    ) -> Result<TestCluster> {
        let dir = tempfile::tempdir()?;
        let addresses: Vec<(String, String)> = (0..n)
            .map(|_| {
                (
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let seeds = addresses
            .iter()
            .map(|(_, peer)| peer.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let expect = n.to_string();
        let interval = TEST_GOSSIP_INTERVAL_MS.to_string();
        let mut args: Vec<&str> = vec!["--seeds", &seeds, "--bootstrap-expect", &expect];
        args.extend_from_slice(extra_args);
        let mut env = vec![
            ("RINGKV__GOSSIP__INTERVAL_MS", interval.as_str()),
            ("RINGKV__HANDOFF__INTERVAL_MS", "200"),
        ];
        if !secure.is_some_and(|s| s.auth) {
            env.push(("RINGKV__DEBUG__FAULT_INJECTION", "true"));
        }
        env.extend_from_slice(extra_env);
        let secured = match secure {
            Some(secure) => {
                let names: Vec<String> = addresses
                    .iter()
                    .map(|(grpc, _)| secure::node_name(grpc))
                    .collect();
                let certs = dir.path().join("certs");
                std::fs::create_dir_all(&certs)?;
                Some(Secured::make(&certs, &names, secure)?)
            }
            None => None,
        };
        let mut nodes = Vec::with_capacity(n);
        for (i, (grpc, peer)) in addresses.iter().enumerate() {
            let node_env = secured
                .as_ref()
                .map(|s| s.env_for(&secure::node_name(grpc)))
                .unwrap_or_default();
            let mut env = env.clone();
            env.extend(node_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let mut node = ServerProcess::start_on(
                &dir.path().join(format!("node{i}")),
                grpc,
                peer,
                &args,
                &env,
            )?;
            if let Some(s) = &secured {
                node.security = s.security();
            }
            nodes.push(node);
        }
        for node in nodes.iter_mut() {
            node.wait_ready().await?;
        }
        let mut ids = Vec::with_capacity(n);
        for node in &nodes {
            ids.push(node.client().node_status(0).await?.node_id);
        }
        let cluster = TestCluster {
            nodes,
            ids,
            cuts: vec![Default::default(); n],
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secured,
            _dir: dir,
        };
        cluster.wait_converged().await?;
        Ok(cluster)
    }

    /// Waits until every running node holds the same layout (version ≥ 1)
    /// and sees every other running node alive.
    pub async fn wait_converged(&self) -> Result<()> {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            match self.converged().await {
                Ok(true) => return Ok(()),
                Ok(false) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(false) => bail!("cluster did not converge within {CONVERGE_TIMEOUT:?}"),
                Err(e) => return Err(e),
            }
        }
    }

    async fn converged(&self) -> Result<bool> {
        let mut version = None;
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let client = node.client();
            let layout = client.layout().await?;
            if layout.version == 0 || version.is_some_and(|v| v != layout.version) {
                return Ok(false);
            }
            version = Some(layout.version);
            for (j, other) in self.nodes.iter().enumerate() {
                if other.pid().is_none() {
                    continue;
                }
                let alive = layout
                    .members
                    .iter()
                    .any(|m| m.node_id == self.ids[j] && m.liveness == "alive");
                if !alive {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Waits until node `observer` sees node `target` with the given liveness.
    pub async fn wait_liveness(
        &self,
        observer: usize,
        target: usize,
        liveness: &str,
    ) -> Result<Duration> {
        let started = Instant::now();
        let client = self.nodes[observer].client();
        loop {
            let members = client.members().await?;
            if members
                .iter()
                .any(|m| m.node_id == self.ids[target] && m.liveness == liveness)
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > CONVERGE_TIMEOUT {
                bail!("node {observer} did not see node {target} {liveness} within {CONVERGE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts one more node that knows every current node as a seed and
    /// runs with the cluster's arguments and environment plus `extra_env`
    /// (later entries win). It is not in the layout: with
    /// `cluster.auto_join` (the default) the cluster commits it by itself,
    /// otherwise it waits for `ringkv cluster join`. Does not wait for it
    /// to answer; see [`TestCluster::wait_node_ready`]. Returns its index.
    pub fn spawn_node(&mut self, extra_env: &[(&str, &str)]) -> Result<usize> {
        let i = self.nodes.len();
        let seeds = self.peer_endpoints().join(",");
        let mut args: Vec<&str> = vec!["--seeds", &seeds];
        args.extend(self.extra_args.iter().map(String::as_str));
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra_env);
        let grpc = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let node_env = match &self.secured {
            Some(s) => {
                s.add_node(&secure::node_name(&grpc))?;
                s.env_for(&secure::node_name(&grpc))
            }
            None => Vec::new(),
        };
        env.extend(node_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut node = ServerProcess::start_on(
            &self._dir.path().join(format!("node{i}")),
            &grpc,
            &peer,
            &args,
            &env,
        )?;
        if let Some(s) = &self.secured {
            node.security = s.security();
        }
        self.nodes.push(node);
        // Filled in by `wait_node_ready`, once the node can say its id.
        self.ids.push(String::new());
        self.cuts.push(Default::default());
        Ok(i)
    }

    /// Waits until node `i` (started by [`TestCluster::spawn_node`])
    /// answers, and records its id.
    pub async fn wait_node_ready(&mut self, i: usize) -> Result<()> {
        self.nodes[i].wait_ready().await?;
        self.ids[i] = self.nodes[i].client().node_status(0).await?.node_id;
        Ok(())
    }

    /// [`TestCluster::spawn_node`], then [`TestCluster::wait_node_ready`].
    pub async fn add_node(&mut self, extra_env: &[(&str, &str)]) -> Result<usize> {
        let i = self.spawn_node(extra_env)?;
        self.wait_node_ready(i).await?;
        Ok(i)
    }

    /// Every node's gRPC address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.grpc.clone()).collect()
    }

    /// Every node's peer port: what seeds and `cluster join` name.
    pub fn peer_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.peer.clone()).collect()
    }

    /// A client over all endpoints, with partition-aware routing.
    pub fn client(&self) -> Client {
        Client::new(&self.endpoints())
            .and_then(|c| c.with_security(self.security()))
            .expect("valid endpoints")
    }

    /// How clients reach the nodes (TLS and a token when secured).
    pub fn security(&self) -> Security {
        self.secured
            .as_ref()
            .map(Secured::security)
            .unwrap_or_default()
    }

    /// A client bound to node `i` only, without routing: node `i`
    /// coordinates (or forwards) every request.
    pub fn client_via(&self, i: usize) -> Client {
        Client::new(&[self.nodes[i].grpc.as_str()])
            .and_then(|c| c.with_security(self.security()))
            .expect("valid endpoint")
            .with_routing(false)
    }

    /// Cuts internal traffic between nodes `a` and `b`, both directions.
    pub async fn cut(&mut self, a: usize, b: usize) -> Result<()> {
        self.cuts[a].insert(self.ids[b].clone());
        self.cuts[b].insert(self.ids[a].clone());
        self.apply_faults(a).await?;
        self.apply_faults(b).await
    }

    /// Restores all internal traffic.
    pub async fn heal(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if !self.cuts[i].is_empty() {
                self.cuts[i].clear();
                // A stopped node has no faults to clear; it starts clean.
                if self.nodes[i].pid().is_some() {
                    self.apply_faults(i).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply_faults(&self, i: usize) -> Result<()> {
        let blocked: Vec<String> = self.cuts[i].iter().cloned().collect();
        self.nodes[i]
            .client()
            .set_faults(0, blocked.clone(), blocked)
            .await?;
        Ok(())
    }
}

impl TestCluster {
    /// Hints held by every running node, summed.
    pub async fn hints_pending(&self) -> Result<u64> {
        let mut total = 0;
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            total += node
                .client()
                .hints(0)
                .await?
                .iter()
                .map(|q| q.keys)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Waits until no running node holds hints.
    pub async fn wait_no_hints(&self) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if self.hints_pending().await? == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > CONVERGE_TIMEOUT {
                bail!("hints still pending after {CONVERGE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the node with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| i == id)
    }
}

/// Options for a put at `level`; `strict` counts only the key's own replicas.
pub fn put_opts(level: ringkv_client::Level, strict: bool) -> ringkv_client::PutOptions {
    ringkv_client::PutOptions {
        consistency: ringkv_client::RequestOptions {
            level: Some(level),
            sloppy: strict.then_some(false),
            timeout: None,
        },
        ..ringkv_client::PutOptions::default()
    }
}

/// `count` keys named `{prefix}-{i}` that all fall in `partition`.
pub fn keys_in(
    partition: u32,
    partitions: u32,
    hash_seed: u64,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| partition_of(k.as_bytes(), partitions, hash_seed) == partition)
        .take(count)
        .collect()
}

/// The value the failure tests write for `key`.
pub fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

/// Keys of `keys` whose stored versions on node `i` lack [`value_of`] the key.
pub async fn missing_on(cluster: &TestCluster, i: usize, keys: &[String]) -> Vec<String> {
    let client = cluster.nodes[i].client();
    let mut missing = Vec::new();
    for key in keys {
        let copy = client.local_get(0, key.clone()).await.expect("local get");
        let expected = value_of(key);
        if !copy
            .versions
            .iter()
            .any(|v| v.value.as_ref() == expected.as_bytes())
        {
            missing.push(key.clone());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_are_never_handed_out_twice() {
        // 2,000 draws from 12,000 ports: without the record of handed-out
        // ports, two draws coincide with near certainty.
        let ports: Vec<u16> = (0..2_000).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| TEST_PORTS.contains(p)));
    }
}
