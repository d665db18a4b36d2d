//! The server processes `compare` starts, and what it reads about them.
//!
//! Processes are started through the test kit's harness
//! ([`ringkv_tests::Process`]) on loopback ports it hands out, with their
//! data and logs under the run's work directory. Each is stopped when
//! dropped (SIGTERM, then SIGKILL after [`STOP_GRACE`]), so an error, a
//! Ctrl-C or a SIGTERM of the tool (anything short of SIGKILL) leaves
//! nothing running; only processes this tool started are ever signalled,
//! by their PID.
//!
//! CPU time comes from `/proc/PID/stat` (user + system time of all the
//! process's threads, in clock ticks), read before and after a measured
//! phase. The whole machine's CPU time is read in [`super::machine`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ringkv_tests::{free_port_in, Process};

/// Ports handed to servers: below Linux's ephemeral range (32768-60999),
/// so a client connection's source port cannot take one between the check
/// and the server's bind, and apart from the band the cluster tests use
/// ([`ringkv_tests::TEST_PORTS`]), so a comparison can run beside them.
const PORTS: std::ops::Range<u16> = 10_000..20_000;

/// How long a stopped server may take to exit after SIGTERM before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Linux's clock tick for `/proc` times when `getconf` cannot say
/// (USER_HZ is 100 on every mainstream architecture).
const DEFAULT_CLOCK_TICKS: f64 = 100.0;

/// Starts `program args...` with its output in a fresh `log`, stopped
/// gracefully when dropped; with its runtime at `threads` threads unless 0.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    threads: usize,
) -> Result<Process> {
    // A log holds one run: the harness appends, so start it empty.
    File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(program);
    command.args(args);
    // Each program reads its own: ringkv its configuration, the echo
    // server (tokio) and etcd (Go) their runtimes'. At 0 none is passed on
    // from the harness's own environment, so "each its default" holds.
    for variable in [
        "RINGKV__NODE__WORKER_THREADS",
        "TOKIO_WORKER_THREADS",
        "GOMAXPROCS",
    ] {
        match threads {
            0 => command.env_remove(variable),
            n => command.env(variable, n.to_string()),
        };
    }
    Ok(Process::spawn(name, command, log)?.stop_gracefully_on_drop(STOP_GRACE))
}

/// A loopback port in [`PORTS`] that was free a moment ago and has not been
/// handed out before by this process.
pub fn free_port() -> Result<u16> {
    free_port_in(PORTS)
}

/// CPU seconds (user + system) used so far by the processes `pids`.
pub fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    let mut ticks = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        ticks += stat_cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    }
    Ok(ticks as f64 / clock_ticks())
}

/// utime + stime from the text of `/proc/PID/stat`. The command name (field
/// 2) is in parentheses and may itself hold spaces and parentheses, so
/// fields are counted from the last `)`: utime and stime are fields 14 and
/// 15, the 12th and 13th after it.
fn stat_cpu_ticks(stat: &str) -> Result<u64> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' after the command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("too few fields")?
            .parse()
            .context("a CPU time is not a number")
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(DEFAULT_CLOCK_TICKS)
    })
}

/// `program` as given when it holds a `/`, else found in `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as a thread may have.
        let stat = "4242 (etcd (raft) x) S 1 4242 4242 0 -1 4194560 2048 0 0 0 \
                    1234 567 0 0 20 0 12 0 98765 123456789 4321 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat).unwrap(), 1234 + 567);
        assert!(stat_cpu_ticks("4242 (short) S 1 2").is_err());
        assert!(stat_cpu_ticks("no name at all").is_err());
    }

    /// The thread count reaches every kind of server the harness starts,
    /// each through the variable its runtime reads; 0 sets none of them,
    /// and passes none on from the harness's own environment.
    #[test]
    fn worker_threads_reach_the_servers_environment() {
        let dir = tempfile::tempdir().unwrap();
        let report = "echo ${RINGKV__NODE__WORKER_THREADS:-unset} \
            ${TOKIO_WORKER_THREADS:-unset} ${GOMAXPROCS:-unset}";
        // As if the shell that started the harness had set one.
        std::env::set_var("GOMAXPROCS", "7");
        for (threads, expected) in [(3, "3 3 3"), (0, "unset unset unset")] {
            let log = dir.path().join(format!("env{threads}.log"));
            let mut child = spawn(
                "env",
                Path::new("/bin/sh"),
                &["-c".to_string(), report.to_string()],
                &log,
                threads,
            )
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "sh did not exit");
                std::thread::sleep(Duration::from_millis(10));
            }
            let printed = std::fs::read_to_string(&log).unwrap();
            assert_eq!(printed.trim(), expected);
        }
    }

    #[test]
    fn ports_come_from_the_bench_band() {
        let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
        assert!(ports.iter().all(|p| PORTS.contains(p)));
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let me = std::process::id();
        let before = cpu_seconds(&[me]).unwrap();
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_seconds(&[me]).unwrap();
        assert!(after > before, "{before} -> {after}");
    }
}
