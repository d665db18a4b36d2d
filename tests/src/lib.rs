//! Test harness: starts real `ringkv-server` processes on loopback ports.
//!
//! Each [`ServerProcess`] owns a child process, its ports and its data
//! directory. Dropping it kills the process (SIGKILL) and reaps it, so a
//! failing test never leaves a server behind. Servers listen on 127.0.0.1
//! only, on ports picked free at start.
//!
//! The binaries are found next to the test executable's target directory
//! (`target/<profile>/ringkv-server`); `RINGKV_SERVER_BIN` and
//! `RINGKV_CLI_BIN` override that. Build them first
//! (`cargo build --release --bins`, which the test script does).

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::Client;

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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `ringkv-server` child process.
pub struct ServerProcess {
    child: Option<Child>,
    /// gRPC address, `127.0.0.1:PORT`.
    pub grpc: String,
    /// Prometheus address, `127.0.0.1:PORT`.
    pub metrics: String,
    pub data_dir: PathBuf,
    /// Where the server's stderr (its log) goes.
    pub log_path: PathBuf,
    /// Extra command-line arguments, kept for restarts.
    extra_args: Vec<String>,
    /// Extra environment variables, kept for restarts.
    env: Vec<(String, String)>,
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
        std::fs::create_dir_all(data_dir)?;
        let mut server = ServerProcess {
            child: None,
            grpc: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let binary = server_binary();
        let child = Command::new(&binary)
            .arg("--listen")
            .arg(&self.grpc)
            .arg("--metrics-listen")
            .arg(&self.metrics)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--name")
            .arg(format!("test-{}", self.grpc.rsplit(':').next().unwrap_or("node")))
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {} (build it with cargo build --release --bins)", binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until the node answers Admin.NodeStatus.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let client = Client::new(&[self.grpc.as_str()])?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("server exited during start-up ({status}); log:\n{}", self.log());
                }
            }
            if client.node_status(0).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("server at {} not ready after {READY_TIMEOUT:?}; log:\n{}", self.grpc, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGKILL and reaps the process: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit by itself.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("server is not running")?;
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("server did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same ports and data directory.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready().await
    }

    /// A client connected to this server only.
    pub fn client(&self) -> Client {
        Client::new(&[self.grpc.as_str()]).expect("valid endpoint")
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

/// Sends a signal to a process this harness started.
pub fn signal(pid: u32, sig: libc::c_int) {
    // The workspace forbids `unsafe`, which libc::kill needs; the `kill`
    // command does the same from outside.
    let name = match sig {
        libc::SIGTERM => "TERM",
        libc::SIGKILL => "KILL",
        libc::SIGSTOP => "STOP",
        libc::SIGCONT => "CONT",
        libc::SIGINT => "INT",
        _ => "TERM",
    };
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
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
