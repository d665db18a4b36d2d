//! One `ringkv-server` process in its own network namespace, with its
//! data directory on a small filesystem of its own (a tmpfs mounted for
//! the run), so that a full disk can be made for it alone.
//!
//! Every node listens on its namespace's address with the same ports
//! (no two nodes share a namespace, so nothing collides). The process is
//! started through `ip netns exec`, which enters the namespace and execs
//! the server in place: the child's pid is the server's, and SIGKILL,
//! SIGSTOP and SIGCONT go to it directly.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::Client;
use ringkv_tests::{server_binary, signal, wait_stopped, Process};

use crate::net::run;

/// Ports every node uses inside its own namespace.
pub const CLIENT_PORT: u16 = 7379;
pub const PEER_PORT: u16 = 7380;
pub const METRICS_PORT: u16 = 9379;

/// How long a node may take to answer after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A node process and everything it owns.
pub struct Node {
    pub slot: usize,
    /// Client port (KV, Admin) as seen from the harness.
    pub grpc: String,
    /// Peer port: what seeds name.
    pub peer: String,
    pub metrics: String,
    /// The node's data directory: the root of its own tmpfs.
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The id the node reported at its last start (empty before).
    pub id: String,
    namespace: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    process: Option<Process>,
    mounted: bool,
}

impl Node {
    /// Prepares slot `slot` (its filesystem of `disk_mb` MiB under `dir`)
    /// without starting it.
    pub fn prepare(
        slot: usize,
        ip: &str,
        namespace: &str,
        dir: &Path,
        disk_mb: u64,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<Node> {
        let data_dir = dir.join(format!("node{slot}"));
        std::fs::create_dir_all(&data_dir)?;
        let size = format!("size={disk_mb}m");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                &data_dir.to_string_lossy(),
            ],
        )
        .with_context(|| format!("mounting node {slot}'s filesystem"))?;
        Ok(Node {
            slot,
            grpc: format!("{ip}:{CLIENT_PORT}"),
            peer: format!("{ip}:{PEER_PORT}"),
            metrics: format!("{ip}:{METRICS_PORT}"),
            log_path: dir.join(format!("node{slot}.log")),
            data_dir,
            id: String::new(),
            namespace: namespace.to_string(),
            args,
            env,
            process: None,
            mounted: true,
        })
    }

    /// Starts the process (it must not be running) without waiting.
    pub fn spawn(&mut self) -> Result<()> {
        if self.process.is_some() {
            bail!("node {} is already running", self.slot);
        }
        let mut command = Command::new("ip");
        command
            // Its own process group: a SIGSTOPped node must not get the
            // SIGHUP the kernel sends to stopped members of a process group
            // that becomes orphaned (as the harness's own group does when
            // the shell that started it exits), which would end it.
            .process_group(0)
            .args(["netns", "exec", &self.namespace])
            .arg(server_binary())
            .args(["--listen", &self.grpc])
            .args(["--peer-listen", &self.peer])
            .args(["--metrics-listen", &self.metrics])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--name", &format!("node{}", self.slot)])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let name = format!("ringkv node {}", self.slot);
        self.process = Some(Process::spawn(&name, command, &self.log_path)?);
        Ok(())
    }

    /// Starts the process and waits until it answers; records its id.
    pub async fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// Waits until the node answers `Admin.NodeStatus`; records its id.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(process) = self.process.as_mut() {
                process.check_running()?;
            }
            if let Ok(status) = client.node_status(0).await {
                self.id = status.node_id;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not ready after {READY_TIMEOUT:?}; see {}",
                    self.slot,
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// SIGKILL, reaped: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`), and waits until the kernel
    /// shows the process in that state.
    pub async fn pause(&self, stopped: bool) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("node {} is not running", self.slot))?;
        signal(
            pid,
            if stopped {
                libc::SIGSTOP
            } else {
                libc::SIGCONT
            },
        );
        wait_stopped(pid, stopped).await
    }

    /// A client bound to this node only, without routing.
    pub fn client(&self) -> Client {
        Client::new(&[self.grpc.as_str()])
            .expect("valid endpoint")
            .with_routing(false)
    }

    /// The end of the node's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if self.mounted {
            let _ = run("umount", &["-l", &self.data_dir.to_string_lossy()]);
        }
    }
}
