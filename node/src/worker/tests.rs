//! The runner's contract, with tokio's paused clock: waits and back-offs
//! are exact.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::runner::backoff;
use super::*;
use crate::Error;
use ringkv_common::shutdown::channel as shutdown_channel;

/// Bounds every wait for a runner to return, in paused (virtual) time: it
/// must outlast the longest script's back-offs, about a minute.
const JOIN_BOUND: Duration = Duration::from_secs(600);

/// A worker that plays a script of step outcomes, then is done.
struct Scripted {
    /// Outcomes of the next steps; an error is `Err(message)`.
    script: VecDeque<std::result::Result<Step, &'static str>>,
    /// How long each wait takes.
    wait: Duration,
    /// How long each step takes.
    step: Duration,
    /// When each step started, shared with the test.
    steps: Arc<Mutex<Vec<Instant>>>,
    /// Waits begun, shared with the test.
    waits: Arc<Mutex<u32>>,
    handle: Arc<WorkerHandle>,
}

impl Worker for Scripted {
    async fn work(&mut self) -> Result<Step> {
        self.steps.lock().unwrap().push(Instant::now());
        self.handle.add("steps", 1);
        tokio::time::sleep(self.step).await;
        match self.script.pop_front() {
            None => Ok(Step::Done),
            Some(Ok(step)) => Ok(step),
            Some(Err(message)) => Err(Error::Internal(message.to_string())),
        }
    }

    async fn wait(&mut self) {
        *self.waits.lock().unwrap() += 1;
        tokio::time::sleep(self.wait).await;
    }
}

/// What a test reads back from a started [`Scripted`] worker.
struct Started {
    workers: Arc<Workers>,
    trigger: ringkv_common::ShutdownTrigger,
    handle: Arc<WorkerHandle>,
    steps: Arc<Mutex<Vec<Instant>>>,
    waits: Arc<Mutex<u32>>,
}

impl Started {
    /// Time between consecutive steps.
    fn gaps(&self) -> Vec<Duration> {
        let steps = self.steps.lock().unwrap();
        steps.windows(2).map(|w| w[1] - w[0]).collect()
    }

    async fn join(&self) {
        tokio::time::timeout(JOIN_BOUND, self.workers.join())
            .await
            .expect("the runner returned");
    }

    async fn stop(&self) {
        self.trigger.trigger();
        self.join().await;
    }
}

fn start(
    script: Vec<std::result::Result<Step, &'static str>>,
    wait: Duration,
    step: Duration,
) -> Started {
    let (trigger, shutdown) = shutdown_channel();
    let workers = Workers::new();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let waits = Arc::new(Mutex::new(0));
    let (s, w) = (steps.clone(), waits.clone());
    let handle = workers.spawn("scripted", shutdown, move |handle| Scripted {
        script: script.into(),
        wait,
        step,
        steps: s,
        waits: w,
        handle,
    });
    Started {
        workers,
        trigger,
        handle,
        steps,
        waits,
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    assert_eq!(backoff(1), BACKOFF_FIRST);
    assert_eq!(backoff(2), BACKOFF_FIRST * 2);
    assert_eq!(backoff(3), BACKOFF_FIRST * 4);
    assert_eq!(backoff(100), BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    for n in 1..64 {
        assert!(backoff(n) <= backoff(n + 1));
    }
}

#[tokio::test(start_paused = true)]
async fn failures_are_counted_and_back_off_grows_to_the_cap_then_resets() {
    const FAILURES: u32 = 8;
    let mut script = vec![Err("disk on fire"); FAILURES as usize];
    script.push(Ok(Step::Idle));
    script.push(Err("again"));
    let w = start(script, Duration::ZERO, Duration::ZERO);
    w.join().await;

    let gaps = w.gaps();
    // After the k-th failure in a row the next step waits backoff(k).
    let expected: Vec<Duration> = (1..=FAILURES).map(backoff).collect();
    assert_eq!(gaps[..FAILURES as usize], expected[..]);
    assert!(expected.windows(2).all(|p| p[0] <= p[1]), "waits grow");
    assert_eq!(*expected.last().unwrap(), BACKOFF_MAX, "and are capped");
    assert!(expected[0] < BACKOFF_MAX);
    // The success ended the streak: the step after it ran at once, and the
    // next failure backed off from the start again.
    assert_eq!(gaps[FAILURES as usize], Duration::ZERO);
    assert_eq!(gaps[FAILURES as usize + 1], BACKOFF_FIRST);

    let status = w.handle.status();
    assert_eq!(status.errors, u64::from(FAILURES) + 1);
    assert_eq!(status.last_error.as_deref(), Some("internal error: again"));
    assert_eq!(status.consecutive_failures, 0, "the final Done succeeded");
    assert_eq!(status.state, WorkerState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn busy_steps_run_back_to_back_and_idle_ones_wait() {
    let wait = Duration::from_secs(1);
    let script = vec![
        Ok(Step::Busy),
        Ok(Step::Busy),
        Ok(Step::Idle),
        Ok(Step::Busy),
    ];
    let start_at = Instant::now();
    let w = start(script, wait, Duration::ZERO);
    w.join().await;

    let steps: Vec<Duration> = w
        .steps
        .lock()
        .unwrap()
        .iter()
        .map(|t| *t - start_at)
        .collect();
    // The first wait comes before the first step; Busy does not wait.
    assert_eq!(steps, vec![wait, wait, wait, wait * 2, wait * 2]);
    assert_eq!(*w.waits.lock().unwrap(), 2);
    assert_eq!(w.handle.status().errors, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_waiting_worker() {
    let w = start(vec![], Duration::from_secs(3600), Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.handle.status().state, WorkerState::Idle);
    w.stop().await;
    assert!(w.steps.lock().unwrap().is_empty());
    assert_eq!(w.handle.status().state, WorkerState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_busy_worker_between_steps_and_mid_step() {
    // Steps that never wait for anything: the runner must still notice.
    let w = start(
        vec![Ok(Step::Busy); 1_000_000],
        Duration::ZERO,
        Duration::ZERO,
    );
    // Not a sleep: a runtime that always has a task ready never advances
    // the paused clock.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    w.stop().await;
    let steps = w.steps.lock().unwrap().len();
    assert!(
        steps > 0 && steps < 1_000_000,
        "stopped after {steps} steps"
    );
    assert_eq!(w.handle.status().state, WorkerState::Stopped);

    // A step that takes an hour is dropped at shutdown.
    let w = start(
        vec![Ok(Step::Busy)],
        Duration::ZERO,
        Duration::from_secs(3600),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.handle.status().state, WorkerState::Active);
    let stopping = Instant::now();
    w.stop().await;
    assert!(Instant::now() - stopping < Duration::from_secs(1));
    assert_eq!(w.steps.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_listing_shows_name_state_errors_and_counters() {
    let w = start(
        vec![Err("one bad step"), Ok(Step::Idle)],
        Duration::from_secs(10),
        Duration::ZERO,
    );
    // First wait, then the failing step, then back-off and the next wait.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let listed = w.workers.statuses();
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert_eq!(s.name, "scripted");
    assert_eq!(s.state, WorkerState::Idle);
    assert_eq!(s.errors, 1);
    assert_eq!(s.consecutive_failures, 1);
    assert_eq!(
        s.last_error.as_deref(),
        Some("internal error: one bad step")
    );
    assert!(s.last_error_at_ms > 0);
    assert_eq!(s.counters["steps"], 1);

    // An error a step survives is counted but is no failed step.
    w.handle.error("a peer did not answer");
    let s = w.handle.status();
    assert_eq!((s.errors, s.consecutive_failures), (2, 1));
    w.stop().await;
    assert_eq!(w.workers.statuses()[0].state, WorkerState::Stopped);
}
