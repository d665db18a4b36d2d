//! The progress line: what a run is doing while it runs, on stderr.
//!
//! Runs last seconds to minutes, and a silent terminal cannot be told from
//! a stuck one. Once a second a background task reads the phase, the time
//! into it, answers and errors so far, and the rate over the last second.
//! On a terminal an `indicatif` bar shows it in place: a bar filling over a
//! timed phase (warm-up, measuring), a spinner for the preload, which ends
//! when its work is done. Elsewhere (`--progress` into a log) it prints one
//! plain line per second, since a log has no line to redraw. It is off by
//! default when stderr is not a terminal, so scripts reading the JSON
//! report see nothing extra.
//!
//! Workers count into [`Counters`] with relaxed atomic adds, the only cost
//! the display puts on the hot path.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// A timed phase: its name, a bar over its seconds, then the figures.
const TIMED_TEMPLATE: &str = "{prefix:>9} [{bar:30}] {msg}";

/// A phase that ends when its work is done: no bar to fill.
const OPEN_TEMPLATE: &str = "{prefix:>9} {spinner} {msg}";

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
    /// The terminal's bar, shared with the display task; `None` when the
    /// display is off or prints plain lines.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts displaying when `enabled`; counts either way (cheaply).
    pub fn start(enabled: bool, phases: Phases) -> Progress {
        let counters = Arc::new(Counters::default());
        let bar = (enabled && std::io::stderr().is_terminal())
            .then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()));
        let task = enabled.then(|| {
            let counters = Arc::clone(&counters);
            tokio::spawn(display(counters, phases, bar.clone()))
        });
        Progress {
            counters,
            task,
            bar,
        }
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Stops the display and clears the bar.
    pub fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
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

/// The figures shown for the current phase.
struct Tick {
    name: &'static str,
    /// Seconds into the phase.
    into: f64,
    /// The phase's length in seconds, when it has a set end.
    of: Option<f64>,
    done: u64,
    failed: u64,
    /// Answers per second over the last interval.
    rate: f64,
}

impl Tick {
    /// `measuring 12/30 s: 4512 answers, 0 errors, 380 ops/s`
    fn line(&self) -> String {
        format!("{} {}", self.name, self.figures())
    }

    /// The line without the phase's name (the bar's prefix shows it).
    fn figures(&self) -> String {
        let of = self.of.map_or_else(String::new, |of| format!("/{of:.0}"));
        format!(
            "{:.0}{of} s: {} answers, {} errors, {:.0} ops/s",
            self.into, self.done, self.failed, self.rate
        )
    }
}

async fn display(counters: Arc<Counters>, phases: Phases, bar: Option<ProgressBar>) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.tick().await; // the first tick is immediate
    let mut last_done = 0;
    let mut last_at = Instant::now();
    let mut shown_phase = None;
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
        let tick = Tick {
            name,
            into: now.duration_since(start).as_secs_f64(),
            of: end.map(|end| end.duration_since(start).as_secs_f64()),
            done,
            failed,
            rate,
        };
        match &bar {
            Some(bar) => {
                if shown_phase != Some(name) {
                    restyle(bar, &tick);
                    shown_phase = Some(name);
                }
                bar.set_message(tick.figures());
                match tick.of {
                    Some(_) => bar.set_position(tick.into as u64),
                    None => bar.tick(),
                }
            }
            None => eprintln!("{}", tick.line()),
        }
    }
}

/// Sets the bar up for the phase `tick` is in: a bar over its seconds when
/// it has a set end, a spinner when not.
fn restyle(bar: &ProgressBar, tick: &Tick) {
    let (template, length) = match tick.of {
        Some(of) => (TIMED_TEMPLATE, Some(of.round() as u64)),
        None => (OPEN_TEMPLATE, None),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(tick.name);
    match length {
        Some(length) => bar.set_length(length),
        None => bar.unset_length(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_names_the_phase_and_its_figures() {
        let tick = Tick {
            name: "measuring",
            into: 12.2,
            of: Some(30.0),
            done: 4512,
            failed: 3,
            rate: 380.4,
        };
        assert_eq!(
            tick.line(),
            "measuring 12/30 s: 4512 answers, 3 errors, 380 ops/s"
        );
        let open = Tick { of: None, ..tick };
        assert_eq!(
            open.line(),
            "measuring 12 s: 4512 answers, 3 errors, 380 ops/s"
        );
    }

    #[test]
    fn both_templates_parse() {
        assert!(ProgressStyle::with_template(TIMED_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(OPEN_TEMPLATE).is_ok());
    }
}
