//! Child processes started by the test kit and by `ringkv-bench compare`,
//! and the loopback ports they listen on.
//!
//! A [`Process`] owns one child, with its stdout and stderr appended to a
//! log file. Dropping it stops the child, so a failing test or an
//! interrupted benchmark never leaves one behind: by SIGKILL (the default,
//! what crash tests want) or, with [`Process::stop_gracefully_on_drop`],
//! by SIGTERM and then SIGKILL after a grace period. Only children started
//! here are ever signalled, by their PID.
//!
//! [`free_port_in`] hands out ports below Linux's ephemeral range and
//! remembers every port it handed out, so two servers of one run never
//! get the same port even if the first has not bound it yet.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Ports handed to test servers come from below Linux's ephemeral range
/// (32768-60999), so a port a killed server releases is not taken over by
/// some client connection's source port before the server restarts on it.
pub const TEST_PORTS: Range<u16> = 20_000..32_000;

/// Lines of a log quoted by [`Process::log_tail`].
const LOG_TAIL_LINES: usize = 20;

/// How often a stopping process is polled for its exit.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Attempts at finding a free port before giving up.
const PORT_ATTEMPTS: usize = 1000;

/// A loopback port in [`TEST_PORTS`] that was free a moment ago and was not
/// handed out before by this process.
/// The tests of one binary run in parallel: two of them picking the same
/// free port before either server binds it made one server fail with
/// "Address already in use", hence the record. No fallback to an
/// OS-chosen port: that would be in the ephemeral range.
pub fn free_port() -> u16 {
    free_port_in(TEST_PORTS).unwrap_or_else(|e| panic!("{e} after {PORT_ATTEMPTS} tries"))
}

/// A loopback port in `range` that was free a moment ago and was not handed
/// out before by this process (by this function or [`free_port`]).
pub fn free_port_in(range: Range<u16>) -> Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let given = GIVEN.get_or_init(Default::default);
    let span = u64::from(range.end.saturating_sub(range.start));
    if span == 0 {
        bail!("empty port range {range:?}");
    }
    // Different processes (parallel test binaries) start at different
    // points of the range: time and PID seed a mixer.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).rotate_left(32);
    for _ in 0..PORT_ATTEMPTS {
        let mut x = seed.wrapping_add(NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let port = range.start + (x % span) as u16;
        let mut given = given.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port in {range:?}")
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
        libc::SIGHUP => "HUP",
        other => panic!("signal {other} is not one the harness sends"),
    };
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// How long a signalled process may take to show the signal in `/proc`.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Polling interval of [`wait_stopped`].
const SIGNAL_POLL: Duration = Duration::from_millis(10);

/// Waits until `/proc` shows process `pid` stopped (`stopped`) or running
/// again, so a pause that did not take (the `kill` command's failures
/// are not reported) fails the test instead of passing as a fault.
pub async fn wait_stopped(pid: u32, stopped: bool) -> Result<()> {
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading the state of process {pid}"))?;
        // The state is the first field after the command name's ")".
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if (state == Some('T')) == stopped {
            return Ok(());
        }
        if started.elapsed() > SIGNAL_TIMEOUT {
            bail!(
                "process {pid} is in state {state:?}, not {}, {SIGNAL_TIMEOUT:?} after the signal",
                if stopped { "stopped" } else { "running" }
            );
        }
        tokio::time::sleep(SIGNAL_POLL).await;
    }
}

/// A child process with its output in a log file; stopped when dropped.
pub struct Process {
    /// Names the process in errors ("ringkv node1", "etcd m0").
    name: String,
    /// `None` once stopped.
    child: Option<Child>,
    log: PathBuf,
    /// `None`: SIGKILL on drop. `Some(grace)`: SIGTERM, then SIGKILL after
    /// `grace`.
    graceful_drop: Option<Duration>,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr appended
    /// to `log` (created if missing, so restarts keep one log).
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            graceful_drop: None,
        })
    }

    /// Dropping stops the process as in production (SIGTERM), killing it
    /// only if it has not exited after `grace`.
    pub fn stop_gracefully_on_drop(mut self, grace: Duration) -> Self {
        self.graceful_drop = Some(grace);
        self
    }

    /// Process id, while it has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status once it has exited by itself.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// An error quoting the end of the log when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!(
                "{} exited ({status}); the end of its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Sends SIGKILL and reaps the process: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit by
    /// itself; after that it is killed and this is an error.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not stop within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(EXIT_POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match self.graceful_drop {
            Some(grace) if self.child.is_some() => {
                let _ = self.terminate(grace);
            }
            _ => self.kill(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(ports.iter().all(|p| TEST_PORTS.contains(p)));
        let other: HashSet<u16> = (0..50)
            .map(|_| free_port_in(10_000..20_000).unwrap())
            .collect();
        assert_eq!(other.len(), 50);
        assert!(free_port_in(5..5).is_err());
    }

    #[test]
    fn a_port_handed_out_is_not_handed_out_again_even_while_unbound() {
        // Two ports between the test band and the ephemeral range, used by
        // nothing else here: both are free, so only the record tells them apart.
        let range = 32_100..32_102;
        let a = free_port_in(range.clone()).unwrap();
        let b = free_port_in(range.clone()).unwrap();
        assert_ne!(a, b);
        assert!(free_port_in(range).is_err(), "both were handed out");
    }

    #[test]
    fn a_process_is_stopped_on_drop_and_its_log_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let mut p = Process::spawn("sleeper", cmd, &log).unwrap();
        let pid = p.pid().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.log().contains("started") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.log_tail(), "started");
        p.check_running().unwrap();
        drop(p);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the child must be gone after drop"
        );
    }

    #[test]
    fn terminate_reports_the_exit_and_check_running_quotes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("exit.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo going; exit 3"]);
        let mut p = Process::spawn("quitter", cmd, &log)
            .unwrap()
            .stop_gracefully_on_drop(Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let err = p.check_running().unwrap_err().to_string();
        assert!(
            err.contains("quitter exited") && err.contains("going"),
            "{err}"
        );
        assert_eq!(p.terminate(Duration::from_secs(1)).unwrap().code(), Some(3));
        assert!(
            p.terminate(Duration::from_secs(1)).is_err(),
            "already stopped"
        );
    }
}
