//! What `compare` reads about the machine it runs on: how busy all of it
//! was, its load average, its CPU count and the commit of the source tree.
//!
//! A server's own CPU time (`/proc/PID/stat`, see [`super::procs`]) leaves
//! out work the kernel does for it outside its threads' accounting:
//! softirq processing of loopback packets, for one. The whole machine's
//! busy time, from the `cpu` line of `/proc/stat` read before and after a
//! measured phase, hides nothing, but counts everything: the load
//! generator, the servers, the kernel, and whatever else runs on this
//! shared machine. Both are reported; the spread over repetitions says
//! how much the rest of the machine disturbed the second.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::procs::clock_ticks;

/// The machine's CPU time so far, summed over its CPUs, in clock ticks,
/// from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineTicks {
    /// Time spent running anything: user, nice, system, irq and softirq.
    /// Idle and iowait (nothing to run) are left out, and so is steal:
    /// time the hypervisor gave to other tenants is no work done here.
    pub busy: u64,
    /// Time the hypervisor gave to other tenants while this machine had
    /// work to run: a disturbed measurement shows here.
    pub steal: u64,
    /// The eight states that partition the CPUs' time (user, nice,
    /// system, idle, iowait, irq, softirq, steal); guest time is already
    /// counted inside user and nice, so it is not added again.
    pub total: u64,
}

impl MachineTicks {
    /// Reads `/proc/stat`.
    pub fn read() -> Result<MachineTicks> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        MachineTicks::parse(&stat).context("parsing /proc/stat")
    }

    /// Parses the aggregate `cpu` line of `/proc/stat` text. Kernels
    /// before 2.6.11 print fewer than eight fields; they are refused
    /// rather than misread.
    pub fn parse(stat: &str) -> Result<MachineTicks> {
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some("cpu"))
            .context("no aggregate `cpu` line")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().context("a CPU time is not a number"))
            .collect::<Result<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            bail!("the `cpu` line has {} fields, 8 expected", fields.len());
        };
        Ok(MachineTicks {
            busy: user + nice + system + irq + softirq,
            steal,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
        })
    }

    /// Busy CPU seconds of the whole machine from `self` to `later`.
    pub fn busy_seconds_until(self, later: MachineTicks) -> f64 {
        later.busy.saturating_sub(self.busy) as f64 / clock_ticks()
    }

    /// The share of the CPUs' time stolen by the hypervisor from `self` to
    /// `later`; `None` when no time passed.
    pub fn steal_share_until(self, later: MachineTicks) -> Option<f64> {
        let total = later.total.saturating_sub(self.total);
        (total > 0).then(|| later.steal.saturating_sub(self.steal) as f64 / total as f64)
    }
}

/// The 1-minute load average, to record how busy the shared machine was.
pub fn load_average() -> Option<f64> {
    load_averages().map(|[one, _, _]| one)
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_averages() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// CPUs this process may run on (what `nproc` prints).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The short commit of the source tree this tool was built from, with
/// `+uncommitted` when tracked files differ from it; `None` when git or
/// the tree is not there (a binary copied elsewhere).
pub fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?.trim().to_string();
    let changed = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.trim().is_empty());
    Some(if changed {
        format!("{commit}+uncommitted")
    } else {
        commit
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of a real `/proc/stat` (Linux 6.x, 2 CPUs).
    const SAMPLE: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 1757 7 3\n\
                          cpu0 1393552 34230 544214 5741006 2297 0 18532 100 0 0\n\
                          cpu1 1364924 35321 417296 5860493 2330 0 2212 200 0 0\n\
                          intr 1462898 0 0 0\n\
                          ctxt 1990473\n";

    #[test]
    fn the_aggregate_cpu_line_is_parsed() {
        let ticks = MachineTicks::parse(SAMPLE).unwrap();
        // user + nice + system + irq + softirq; guest (7, 3) not added.
        assert_eq!(ticks.busy, 10132153 + 290696 + 3084719 + 25195);
        assert_eq!(ticks.steal, 1757);
        assert_eq!(
            ticks.total,
            10132153 + 290696 + 3084719 + 46828483 + 16683 + 25195 + 1757
        );
    }

    #[test]
    fn short_or_missing_cpu_lines_are_refused() {
        assert!(MachineTicks::parse("cpu0 1 2 3 4 5 6 7 8\n").is_err());
        assert!(MachineTicks::parse("cpu  1 2 3 4\n").is_err());
        assert!(MachineTicks::parse("cpu  1 2 x 4 5 6 7 8\n").is_err());
    }

    #[test]
    fn busy_time_and_steal_are_deltas() {
        let before = MachineTicks {
            busy: 1_000,
            steal: 10,
            total: 5_000,
        };
        let after = MachineTicks {
            busy: 1_300,
            steal: 60,
            total: 6_000,
        };
        let seconds = before.busy_seconds_until(after);
        assert!((seconds - 300.0 / clock_ticks()).abs() < 1e-9, "{seconds}");
        assert_eq!(before.steal_share_until(after), Some(0.05));
        assert_eq!(before.steal_share_until(before), None);
    }

    #[test]
    fn this_machine_is_readable() {
        let ticks = MachineTicks::read().unwrap();
        assert!(ticks.total >= ticks.busy + ticks.steal);
        assert!(cpus() >= 1);
        assert!(load_averages().is_some());
    }
}
