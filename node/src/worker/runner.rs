//! The one loop every worker runs in (the contract is in the module doc of
//! `worker`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Step, Worker, WorkerHandle, WorkerState, BACKOFF_FIRST, BACKOFF_MAX};
use ringkv_common::Shutdown;

/// How long to back off after `failures` failed steps in a row (at least
/// one): [`BACKOFF_FIRST`] doubled per further failure, capped at
/// [`BACKOFF_MAX`].
pub(super) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// Runs `worker` until shutdown or until it is done.
pub(super) async fn run<W: Worker>(
    mut worker: W,
    handle: Arc<WorkerHandle>,
    mut shutdown: Shutdown,
) {
    // Marks the worker stopped however this future ends: return, panic,
    // or the task being dropped with the runtime.
    let _stopped = MarkStopped(handle.clone());
    let mut failures = 0;
    loop {
        handle.set_state(WorkerState::Idle);
        if failures > 0
            && until_shutdown(&mut shutdown, tokio::time::sleep(backoff(failures)))
                .await
                .is_none()
        {
            return;
        }
        if until_shutdown(&mut shutdown, worker.wait()).await.is_none() {
            return;
        }
        // Busy steps run back to back; the first Idle, Done or failure ends
        // the run of steps.
        loop {
            handle.set_state(WorkerState::Active);
            let Some(result) = until_shutdown(&mut shutdown, worker.work()).await else {
                return;
            };
            let step = match result {
                Ok(step) => {
                    failures = 0;
                    let streak = handle.step_succeeded();
                    if streak > 0 {
                        tracing::info!(worker = %handle.name(), "recovered after {streak} failed steps");
                    }
                    step
                }
                Err(e) => {
                    failures = handle.step_failed(e.to_string());
                    log_failure(&handle, failures, &e);
                    break;
                }
            };
            match step {
                // A worker whose steps never wait must still let the
                // rest of the runtime (and shutdown) in.
                Step::Busy => tokio::task::consume_budget().await,
                Step::Idle => break,
                Step::Done => return,
            }
        }
    }
}

/// Logs a failed step at the 1st, 2nd, 4th, 8th... failure of a streak
/// (the rest at debug): a worker failing every step stays visible without
/// filling the log.
fn log_failure(handle: &WorkerHandle, failures: u32, e: &crate::Error) {
    let next = backoff(failures);
    if failures.is_power_of_two() {
        tracing::warn!(worker = %handle.name(), failures, "step failed: {e}; backing off {next:?}");
    } else {
        tracing::debug!(worker = %handle.name(), failures, "step failed: {e}; backing off {next:?}");
    }
}

/// `f`'s output, or `None` if shutdown fires first (or had fired: a
/// stopping node starts no new wait or step).
async fn until_shutdown<T>(shutdown: &mut Shutdown, f: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.recv() => None,
        out = f => Some(out),
    }
}

/// Sets the worker's state to stopped when dropped.
struct MarkStopped(Arc<WorkerHandle>);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.set_state(WorkerState::Stopped);
    }
}
