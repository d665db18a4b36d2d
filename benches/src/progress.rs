//! The progress line: what a run is doing while it runs, on stderr.
//!
//! Runs last seconds to minutes, and a silent terminal cannot be told from
//! a stuck one. Once a second a background task prints the phase, the time
//! into it, answers and errors so far, and the rate over the last second.
//! On a terminal it rewrites one line in place; elsewhere (`--progress`
//! into a log) it prints one line per second. It is off by default when
//! stderr is not a terminal, so scripts reading the JSON report see nothing
//! extra.
//!
//! Workers count into [`Counters`] with relaxed atomic adds, the only cost
//! the display puts on the hot path.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Answers so far in the current phase.
#[derive(Default)]
pub struct Counters {
    done: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    pub fn succeeded(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The phases a progress line can name, with when each starts and ends.
pub struct Phases {
    /// `(name, start, end)`, in order; `end` is `None` when the phase ends
    /// when its work is done (the preload).
    pub spans: Vec<(&'static str, Instant, Option<Instant>)>,
}

/// A running progress display; [`Progress::finish`] stops it.
pub struct Progress {
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
    terminal: bool,
}

impl Progress {
    /// Starts displaying when `enabled`; counts either way (cheaply).
    pub fn start(enabled: bool, phases: Phases) -> Progress {
        let counters = Arc::new(Counters::default());
        let terminal = std::io::stderr().is_terminal();
        let task = enabled.then(|| {
            let counters = Arc::clone(&counters);
            tokio::spawn(display(counters, phases, terminal))
        });
        Progress {
            counters,
            task,
            terminal,
        }
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Stops the display and clears the line it was rewriting.
    pub fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if self.terminal {
                eprint!("\r\x1b[2K");
                let _ = std::io::stderr().flush();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn display(counters: Arc<Counters>, phases: Phases, terminal: bool) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.tick().await; // the first tick is immediate
    let mut last_done = 0;
    let mut last_at = Instant::now();
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let done = counters.done.load(Ordering::Relaxed);
        let failed = counters.failed.load(Ordering::Relaxed);
        let rate = (done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
        (last_done, last_at) = (done, now);
        let Some((name, start, end)) = phases
            .spans
            .iter()
            .rev()
            .find(|(_, start, _)| *start <= now)
            .copied()
        else {
            continue;
        };
        let into = now.duration_since(start).as_secs_f64();
        let of = end.map_or_else(String::new, |end| {
            format!("/{:.0}", end.duration_since(start).as_secs_f64())
        });
        let line =
            format!("{name} {into:.0}{of} s: {done} answers, {failed} errors, {rate:.0} ops/s");
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }
}
