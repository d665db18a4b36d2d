//! Background work under one runner: every long-running task of a node
//! (gossip, hint delivery, anti-entropy, tombstone purge) is a worker with
//! a name, a state, error counts and counters that the Admin API lists.
//!
//! A worker is an async loop handed a [`WorkerHandle`] and the node's
//! [`Shutdown`]; it reports through the handle and returns when shutdown
//! fires. [`Workers::join`] waits for all of them at shutdown (bounded by
//! the caller), so no task outlives the node.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use ringkv_common::wall_clock_ms;
use ringkv_common::Shutdown;

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next round.
    Idle,
    /// In a round.
    Active,
    /// Returned (shutdown).
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
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at_ms: u64,
    /// Totals and gauges the worker reports (keys repaired, hints delivered, ...).
    pub counters: BTreeMap<String, u64>,
}

/// How a worker reports.
pub struct WorkerHandle {
    status: Mutex<WorkerStatus>,
}

impl WorkerHandle {
    fn new(name: &str) -> Self {
        Self {
            status: Mutex::new(WorkerStatus {
                name: name.to_string(),
                state: WorkerState::Idle,
                errors: 0,
                last_error: None,
                last_error_at_ms: 0,
                counters: BTreeMap::new(),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut WorkerStatus) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_state(&self, state: WorkerState) {
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

    /// Records a failed round; the worker carries on.
    pub fn error(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(worker = %self.with(|s| s.name.clone()), "{message}");
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
    handles: Mutex<Vec<Arc<WorkerHandle>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts a worker. `run` gets its handle and the shutdown signal and
    /// must return once shutdown fires.
    pub fn spawn<F, Fut>(&self, name: &str, shutdown: Shutdown, run: F) -> Arc<WorkerHandle>
    where
        F: FnOnce(Arc<WorkerHandle>, Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = Arc::new(WorkerHandle::new(name));
        let fut = run(handle.clone(), shutdown);
        let reporter = handle.clone();
        let task = tokio::spawn(async move {
            fut.await;
            reporter.set_state(WorkerState::Stopped);
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::shutdown_channel;

    #[tokio::test]
    async fn workers_report_and_stop_on_shutdown() {
        let (trigger, shutdown) = shutdown_channel();
        let workers = Workers::new();
        workers.spawn("counter", shutdown, |h, mut stop| async move {
            h.set_state(WorkerState::Active);
            h.add("rounds", 2);
            h.error("one bad round");
            stop.recv().await;
        });
        tokio::task::yield_now().await;
        let s = &workers.statuses()[0];
        assert_eq!(s.name, "counter");
        assert_eq!(s.counters["rounds"], 2);
        assert_eq!(s.errors, 1);
        assert_eq!(s.last_error.as_deref(), Some("one bad round"));
        trigger.trigger();
        workers.join().await;
        assert_eq!(workers.statuses()[0].state, WorkerState::Stopped);
    }
}
