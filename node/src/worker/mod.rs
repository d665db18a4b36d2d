//! Background work under one runner: every long-running task of a node
//! (gossip, hint delivery, anti-entropy with its tombstone purge, the
//! rebalance transfers) is a [`Worker`] with a name, a state, error counts
//! and counters that the Admin API lists.
//!
//! A worker says only two things: how to do one step of its work
//! ([`Worker::work`]) and how to wait until there may be more
//! ([`Worker::wait`]). Everything around that is the runner's
//! (`runner.rs`), the same for every worker:
//!
//! - **The loop.** Wait, then step; a step that answers [`Step::Busy`] is
//!   followed by the next one at once, [`Step::Idle`] goes back to waiting,
//!   [`Step::Done`] ends the worker.
//! - **The state** Admin shows: `active` during a step, `idle` while
//!   waiting or backing off, `stopped` once the worker returned (for any
//!   reason, a panic included).
//! - **Errors.** A failed step is counted with its message and time; after
//!   `n` failures in a row the runner sleeps a back-off of
//!   [`BACKOFF_FIRST`] doubled `n - 1` times, at most [`BACKOFF_MAX`],
//!   before the worker's own wait, so a failing worker never retries faster
//!   than it would run healthy. One success resets the streak. The streak is
//!   logged at its 1st, 2nd, 4th, 8th... failure and when it ends, not at
//!   every step.
//! - **Shutdown.** The runner selects on the node's [`Shutdown`] around
//!   both the wait and the step: when it fires, the worker is dropped at its
//!   next await, mid-step or not. Steps must therefore be safe to interrupt
//!   at any await, and every worker here is: gossip merges, a hint is
//!   deleted only after its target acknowledged it, exchanges and transfers
//!   are idempotent and resume. Blocking storage calls already handed to a
//!   blocking thread finish on their own; [`Workers::join`] waits for the
//!   runners, bounded by the caller.
//!
//! Errors a step survives (one peer of many failed, one target's hints
//! could not be delivered) are not step failures: the worker records them
//! with [`WorkerHandle::error`] and its step still succeeds, so they are
//! counted but never slow the worker down.

mod runner;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use ringkv_common::wall_clock_ms;
use ringkv_common::Shutdown;
use ringkv_core::error::Result;

/// Back-off after the first failed step of a streak.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);

/// Longest back-off, however long the streak: short enough that a worker
/// whose peer came back (a claimant committing joins, say) resumes within
/// seconds.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What a step asks the runner to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More work is ready: step again at once.
    Busy,
    /// Nothing more for now: wait ([`Worker::wait`]) before the next step.
    Idle,
    /// The worker has finished for good.
    Done,
}

/// A background task of the node, run by [`Workers::spawn`].
///
/// The worker is built with its [`WorkerHandle`] (see [`Workers::spawn`])
/// and reports its counters through it.
pub trait Worker: Send + 'static {
    /// One step of work. An error counts as a failed step (see the module
    /// doc for the back-off). Must be safe to drop at any await: shutdown
    /// does so.
    fn work(&mut self) -> impl Future<Output = Result<Step>> + Send;

    /// Returns when there may be work: an interval tick, a notification.
    /// Called before the first step too, so a worker that should not start
    /// at once waits here.
    fn wait(&mut self) -> impl Future<Output = ()> + Send;
}

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next step (or backing off after a failed one).
    Idle,
    /// In a step.
    Active,
    /// Returned (shutdown, done, or panicked).
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Active => "active",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A snapshot of one worker.
#[derive(Clone, Debug)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Every error recorded: failed steps and errors steps survived.
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at_ms: u64,
    /// Failed steps in a row, reset by a successful step; drives back-off.
    pub consecutive_failures: u32,
    /// Totals and gauges the worker reports (keys repaired, hints delivered, ...).
    pub counters: BTreeMap<String, u64>,
}

/// How a worker reports, and how Admin reads it.
pub struct WorkerHandle {
    status: Mutex<WorkerStatus>,
}

impl WorkerHandle {
    /// A handle for a worker's step run on its own (a stopping node's
    /// hint hand-over); the runner makes the others.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            status: Mutex::new(WorkerStatus {
                name: name.to_string(),
                state: WorkerState::Idle,
                errors: 0,
                last_error: None,
                last_error_at_ms: 0,
                consecutive_failures: 0,
                counters: BTreeMap::new(),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut WorkerStatus) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn name(&self) -> String {
        self.with(|s| s.name.clone())
    }

    /// Set by the runner; workers do not need to.
    pub(crate) fn set_state(&self, state: WorkerState) {
        self.with(|s| s.state = state);
    }

    /// Adds to a running total.
    pub fn add(&self, counter: &str, n: u64) {
        self.with(|s| *s.counters.entry(counter.to_string()).or_default() += n);
    }

    /// Sets a gauge.
    pub fn set(&self, counter: &str, value: u64) {
        self.with(|s| {
            s.counters.insert(counter.to_string(), value);
        });
    }

    pub fn counter(&self, counter: &str) -> u64 {
        self.with(|s| s.counters.get(counter).copied().unwrap_or(0))
    }

    /// Records an error the step survives (logged each time); the step
    /// carries on and the worker does not back off.
    pub fn error(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(worker = %self.name(), "{message}");
        self.record(message);
    }

    /// Records a failed step (the runner logs it); returns the failures in
    /// a row, this one included.
    fn step_failed(&self, message: String) -> u32 {
        self.record(message);
        self.with(|s| {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.consecutive_failures
        })
    }

    /// Ends a streak of failed steps; returns how long it was.
    fn step_succeeded(&self) -> u32 {
        self.with(|s| std::mem::take(&mut s.consecutive_failures))
    }

    fn record(&self, message: String) {
        self.with(|s| {
            s.errors += 1;
            s.last_error = Some(message);
            s.last_error_at_ms = wall_clock_ms();
        });
    }

    pub fn status(&self) -> WorkerStatus {
        self.with(|s| s.clone())
    }
}

/// The node's workers.
#[derive(Default)]
pub struct Workers {
    /// Every worker ever started, in start order, for Admin's listing.
    handles: Mutex<Vec<Arc<WorkerHandle>>>,
    /// The runners still to be joined at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts a worker named `name`, built by `build` from its handle, and
    /// runs it until `shutdown` fires or it is done.
    pub fn spawn<W: Worker>(
        &self,
        name: &str,
        shutdown: Shutdown,
        build: impl FnOnce(Arc<WorkerHandle>) -> W,
    ) -> Arc<WorkerHandle> {
        let handle = Arc::new(WorkerHandle::new(name));
        let worker = build(handle.clone());
        let task = tokio::spawn(runner::run(worker, handle.clone(), shutdown));
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle.clone());
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        handle
    }

    /// Admin's listing: one snapshot per worker, in start order.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|h| h.status())
            .collect()
    }

    /// Waits for every worker to return.
    pub async fn join(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}
