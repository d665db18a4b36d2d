//! The load: a fixed number of clients issuing a mix of operations on
//! chosen keys, closed-loop or open-loop.
//!
//! **Closed loop** (the default): each of the `--concurrency` workers sends
//! one request, waits for its answer, and only then sends the next.
//! Throughput is then what the system sustains with that many requests
//! outstanding, and latency is what a client waiting on each request sees.
//! YCSB works this way. Its blind spot is *coordinated omission*: when the
//! system stalls, the workers stall with it and stop sending, so the stall
//! shows up as one slow request instead of the many that real users,
//! arriving at their own pace, would have queued behind it.
//!
//! **Open loop** (`--target-rate OPS`): each worker owns a fixed schedule,
//! one request every `concurrency / OPS` seconds, staggered so the workers
//! interleave evenly. A request is sent at its scheduled time, or at once
//! if the worker is still waiting on the previous answer, and its latency
//! runs from the *scheduled* time. The times come from one clock thread
//! per phase that sleeps on the OS timer ([`start_clock`]), not from
//! tokio's timer, whose millisecond wheel would wake a worker up to a
//! millisecond late and charge that to the system. A stall therefore
//! charges every request scheduled during it with the time it waited,
//! which is what users would have seen (the correction wrk2 applies). Concurrency still bounds the
//! requests in flight; when the system cannot keep up, the achieved rate
//! falls short of the target and the report says so.
//!
//! A run has three phases, all bounded in time:
//!
//! 1. optional **preload** (`--preload`): every key written once, so that
//!    reads find values; capped at [`MAX_PRELOAD_TIME`];
//! 2. **warm-up** (`--warmup`): load runs but nothing is recorded, so
//!    connection set-up and cold caches do not count;
//! 3. **measurement** (`--duration`, or until `--max-ops` measured requests
//!    were issued, or, for the load workload, until every key from
//!    `--insert-from` (default 0) to `--keys` was inserted). Requests still in flight when it ends may finish (they are
//!    recorded) until a drain deadline [`DRAIN_GRACE`] later, after which
//!    they are abandoned and counted as `cut_off`.
//!
//! Keys are `<prefix><index, 10 digits>`, the index drawn by the run's
//! [`KeyChooser`] (inserts take indexes in order instead). Updates carry no
//! context, as a client that overwrites without reading first does, so
//! they create no siblings; read-modify-writes send back the context of
//! their get. Values are slices of one random buffer: distinct enough that
//! compression cannot flatter the store, and free to produce.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::config::{Config, Distribution};
use crate::keys::KeyChooser;
use crate::progress::{Counters, Phases, Progress};
use crate::report::{Measurement, Op, OpStats, PreloadReport, Tally};
use crate::target::{OpError, Target};

/// How long in-flight requests may still finish after the measured phase
/// ends before they are abandoned; bounds the run even against a node that
/// stopped answering.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The longest a preload may run: at a few thousand writes per second this
/// covers about a million keys; beyond it the run goes on with what was
/// written and the report says the preload was incomplete.
pub const MAX_PRELOAD_TIME: Duration = Duration::from_secs(600);

/// Pause after a failed request before a closed-loop worker's next one, so
/// that a node that refuses instantly (down, overloaded) is not hammered
/// in a tight loop and the error counts stay meaningful. (Open-loop
/// workers keep their schedule.)
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Size of the random buffer values are sliced from, on top of the value
/// size itself.
const VALUE_POOL_BYTES: usize = 1 << 20;

/// Added per worker to the run's seed so that workers draw different keys
/// (the 64-bit golden ratio, which spreads consecutive seeds apart).
const SEED_STRIDE: u64 = 0x9e37_79b9_7f4a_7c15;

/// What every worker of a run shares.
pub struct Load {
    target: Arc<Target>,
    config: Config,
    keys: KeyChooser,
    /// Values are random slices of this buffer (cheap `Bytes` clones).
    value_pool: Bytes,
}

/// When the phases of one `run_phases` call begin and end.
#[derive(Clone, Copy)]
struct Phase {
    /// Warm-up starts; open-loop schedules start here.
    start: Instant,
    /// Recording starts.
    measure_start: Instant,
    /// No request is started at or after this.
    end: Instant,
}

/// Counters all workers of a phase update.
struct Shared {
    /// Measured requests started, for `--max-ops`.
    issued: AtomicU64,
    /// The next key index to insert (load workload), from
    /// `--insert-from`.
    next_insert: AtomicU64,
    /// For the progress line.
    counters: Arc<Counters>,
}

/// What one worker measured.
struct WorkerTally {
    tally: Tally,
    cut_off: u64,
    /// When the worker's last request ended: the measured phase lasts until
    /// the slowest worker's last answer.
    finished: Instant,
}

/// An open-loop worker's fixed schedule: request `k` is due at
/// `first + k × interval`. Computed from `k` rather than accumulated, so
/// rounding never drifts.
struct Schedule {
    first: Instant,
    interval_s: f64,
    k: u64,
}

impl Schedule {
    /// Worker `worker` of `workers` sharing `rate` requests per second,
    /// starting at `start`; workers are offset by equal fractions of the
    /// interval so that together they issue at even spacing.
    fn new(rate: f64, workers: usize, worker: usize, start: Instant) -> Self {
        let interval_s = workers as f64 / rate;
        Schedule {
            first: start + Duration::from_secs_f64(interval_s * worker as f64 / workers as f64),
            interval_s,
            k: 0,
        }
    }

    fn next_due(&mut self) -> Instant {
        let due = self.first + Duration::from_secs_f64(self.k as f64 * self.interval_s);
        self.k += 1;
        due
    }
}

/// The open-loop clock of one phase: an OS thread that wakes at each
/// scheduled request time and hands that time to the worker whose turn it
/// is (request `j` to worker `j mod workers`, which gives every worker
/// exactly its [`Schedule`]). tokio's timer fires on a millisecond wheel,
/// so a worker sleeping on it woke up to a millisecond late; latency counts
/// from the scheduled time, so that lateness was charged to the system
/// under test (a half-loaded node's p50 read 1.6 ms where its closed loop
/// read 0.9 ms). The thread sleeps on the OS timer (tens of microseconds
/// late on a busy machine), sends what is due, and ends at the end of the
/// phase or when every worker has stopped; a worker's channel then closes.
fn start_clock(
    rate: f64,
    workers: usize,
    phase: Phase,
) -> Result<Vec<mpsc::UnboundedReceiver<Instant>>> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let mut schedule = Schedule::new(rate, 1, 0, phase.start);
    std::thread::Builder::new()
        .name("open-loop clock".into())
        .spawn(move || {
            for turn in (0..senders.len()).cycle() {
                let due = schedule.next_due();
                if due >= phase.end {
                    return;
                }
                let wait = due
                    .into_std()
                    .saturating_duration_since(std::time::Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if senders[turn].send(due).is_err() && senders.iter().all(|s| s.is_closed()) {
                    return;
                }
            }
        })
        .context("starting the open-loop clock thread")?;
    Ok(receivers)
}

impl Load {
    pub fn new(target: Arc<Target>, config: Config) -> Arc<Self> {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut pool = vec![0u8; VALUE_POOL_BYTES + config.value_size];
        rng.fill(pool.as_mut_slice());
        let keys = match config.distribution {
            Distribution::Uniform => KeyChooser::uniform(config.keys),
            Distribution::Zipfian => {
                KeyChooser::zipfian(config.keys, config.zipf_theta, config.seed)
            }
        };
        Arc::new(Load {
            target,
            config,
            keys,
            value_pool: Bytes::from(pool),
        })
    }

    fn key(&self, index: u64) -> Bytes {
        Bytes::from(format!("{}{index:010}", self.config.key_prefix))
    }

    fn value(&self, rng: &mut SmallRng) -> Bytes {
        let start = rng.random_range(0..=self.value_pool.len() - self.config.value_size);
        self.value_pool.slice(start..start + self.config.value_size)
    }

    fn rng(&self, worker: usize) -> SmallRng {
        SmallRng::seed_from_u64(
            self.config
                .seed
                .wrapping_add(SEED_STRIDE.wrapping_mul(worker as u64 + 1)),
        )
    }

    /// Writes every key once (phase 1), with the run's concurrency.
    pub async fn preload(self: &Arc<Self>) -> Result<PreloadReport> {
        let started = Instant::now();
        let deadline = started + MAX_PRELOAD_TIME;
        let progress = Progress::start(
            self.config.progress,
            Phases {
                spans: vec![("preload", started, None)],
            },
        );
        let next = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for worker in 0..self.config.concurrency {
            let load = Arc::clone(self);
            let next = Arc::clone(&next);
            let counters = progress.counters();
            workers.spawn(async move {
                load.preload_worker(worker, &next, deadline, &counters)
                    .await
            });
        }
        let mut total = OpStats::new()?;
        let mut complete = true;
        while let Some(joined) = workers.join_next().await {
            let (stats, finished) = joined.context("a preload worker panicked")??;
            total.merge(&stats)?;
            complete &= finished;
        }
        progress.finish();
        Ok(PreloadReport {
            keys: self.config.keys,
            written: total.succeeded(),
            errors: total.failed(),
            errors_by_kind: total.errors().clone(),
            elapsed_s: started.elapsed().as_secs_f64(),
            complete,
        })
    }

    /// Takes key indexes from `next` until none are left or the deadline
    /// passes; returns its figures and whether it ran out of keys.
    async fn preload_worker(
        &self,
        worker: usize,
        next: &AtomicU64,
        deadline: Instant,
        counters: &Counters,
    ) -> Result<(OpStats, bool)> {
        let mut rng = self.rng(worker);
        let mut stats = OpStats::new()?;
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= self.config.keys {
                return Ok((stats, true));
            }
            let started = Instant::now();
            if started >= deadline {
                return Ok((stats, false));
            }
            let put = self.target.put(self.key(index), self.value(&mut rng), None);
            match timeout_at(deadline, put).await {
                Err(_) => return Ok((stats, false)),
                Ok(Ok(())) => {
                    stats.record_success(started.elapsed());
                    counters.succeeded();
                }
                Ok(Err(e)) => {
                    stats.record_error(&e);
                    counters.failed();
                    sleep_until((started + ERROR_BACKOFF).min(deadline)).await;
                }
            }
        }
    }

    /// Warm-up then measurement (phases 2 and 3), as configured.
    pub async fn run(self: &Arc<Self>) -> Result<Measurement> {
        self.run_phases(self.config.warmup, self.config.duration)
            .await
    }

    /// A warm-up of `warmup` then a measured phase of `duration`; `compare`
    /// calls it twice to read CPU counters between the two.
    pub async fn run_phases(
        self: &Arc<Self>,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Measurement> {
        let start = Instant::now();
        let phase = Phase {
            start,
            measure_start: start + warmup,
            end: start + warmup + duration,
        };
        let progress = Progress::start(
            self.config.progress,
            Phases {
                spans: vec![
                    ("warm-up", phase.start, Some(phase.measure_start)),
                    ("measuring", phase.measure_start, Some(phase.end)),
                ],
            },
        );
        let shared = Arc::new(Shared {
            issued: AtomicU64::new(0),
            next_insert: AtomicU64::new(self.config.insert_from),
            counters: progress.counters(),
        });
        let concurrency = self.config.concurrency;
        let clock: Vec<Option<_>> = match self.config.target_rate {
            Some(rate) => start_clock(rate, concurrency, phase)?
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..concurrency).map(|_| None).collect(),
        };
        let mut workers = JoinSet::new();
        for (worker, tickets) in clock.into_iter().enumerate() {
            let load = Arc::clone(self);
            let shared = Arc::clone(&shared);
            workers.spawn(async move { load.worker(worker, phase, &shared, tickets).await });
        }
        let mut tally = Tally::new()?;
        let mut cut_off = 0;
        let mut last_answer = phase.measure_start;
        while let Some(joined) = workers.join_next().await {
            let worker = joined.context("a load worker panicked")??;
            tally.merge(&worker.tally)?;
            cut_off += worker.cut_off;
            last_answer = last_answer.max(worker.finished);
        }
        progress.finish();
        Ok(Measurement {
            tally,
            elapsed: last_answer.saturating_duration_since(phase.measure_start),
            cut_off,
        })
    }

    /// One client. `shared.issued` counts measured requests across workers
    /// for `--max-ops`. Open loop, `tickets` brings the scheduled time of
    /// each of its requests from the phase's clock.
    async fn worker(
        &self,
        worker: usize,
        phase: Phase,
        shared: &Shared,
        mut tickets: Option<mpsc::UnboundedReceiver<Instant>>,
    ) -> Result<WorkerTally> {
        let drain_deadline = phase.end + DRAIN_GRACE;
        let mut rng = self.rng(worker);
        let mut tally = WorkerTally {
            tally: Tally::new()?,
            cut_off: 0,
            finished: Instant::now(),
        };
        loop {
            // The time the request counts from: its slot in the schedule
            // (open loop) or now (closed loop).
            let started = match tickets.as_mut() {
                Some(tickets) => match tickets.recv().await {
                    Some(due) => due,
                    None => break,
                },
                None => Instant::now(),
            };
            if started >= phase.end {
                break;
            }
            let measured = started >= phase.measure_start;
            if measured {
                if let Some(max) = self.config.max_ops {
                    if shared.issued.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                }
            }
            let op = self.config.mix.pick(rng.random());
            let index = if op == Op::Insert {
                let next = shared.next_insert.fetch_add(1, Ordering::Relaxed);
                if next >= self.config.keys {
                    break;
                }
                next
            } else {
                self.keys.next(&mut rng)
            };
            let value = self.value(&mut rng);
            let outcome =
                timeout_at(drain_deadline, self.execute(op, self.key(index), value)).await;
            tally.finished = Instant::now();
            let latency = tally.finished.saturating_duration_since(started);
            let stats = tally.tally.op_mut(op);
            match outcome {
                Err(_) => {
                    tally.cut_off += 1;
                    break;
                }
                Ok(Ok(found)) => {
                    shared.counters.succeeded();
                    if measured {
                        stats.record_success(latency);
                        if !found {
                            stats.record_not_found();
                        }
                    }
                }
                Ok(Err(e)) => {
                    shared.counters.failed();
                    if measured {
                        stats.record_error(&e);
                    }
                    if tickets.is_none() {
                        sleep_until((tally.finished + ERROR_BACKOFF).min(phase.end)).await;
                    }
                }
            }
        }
        Ok(tally)
    }

    /// Performs one operation; `Ok(found)`, where writes always "find".
    async fn execute(&self, op: Op, key: Bytes, value: Bytes) -> Result<bool, OpError> {
        match op {
            Op::Read => self.target.get(key).await.map(|got| got.found),
            Op::Update | Op::Insert => self.target.put(key, value, None).await.map(|()| true),
            Op::ReadModifyWrite => {
                let got = self.target.get(key.clone()).await?;
                self.target.put(key, value, got.context).await?;
                Ok(got.found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunArgs;
    use crate::target::StorageTarget;
    use clap::Parser;
    use ringkv_storage::SyncMode;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[tokio::test]
    async fn the_load_inserts_only_keys_from_insert_from() {
        let argv = [
            "ringkv-bench",
            "--target",
            "storage",
            "--workload",
            "load",
            "--keys",
            "10",
            "--insert-from",
            "6",
            "--concurrency",
            "3",
            "--seed",
            "1",
        ];
        let config = Config::from_args(Cli::parse_from(argv).run).unwrap();
        let storage = StorageTarget::open(None, SyncMode::Never).unwrap();
        let load = Load::new(Arc::new(Target::Storage(storage)), config);
        let measured = load.run().await.unwrap();
        assert_eq!(measured.tally.op(Op::Insert).succeeded(), 4);
        assert_eq!(measured.tally.failed(), 0);
        for index in 0..10 {
            let found = load.target.get(load.key(index)).await.unwrap().found;
            assert_eq!(found, index >= 6, "key {index}");
        }
    }

    #[test]
    fn schedules_interleave_workers_at_the_target_rate() {
        let start = Instant::now();
        // 4 workers sharing 1 000 ops/s: each every 4 ms, offset by 1 ms.
        let mut dues: Vec<Duration> = (0..4)
            .flat_map(|w| {
                let mut s = Schedule::new(1_000.0, 4, w, start);
                (0..3)
                    .map(move |_| s.next_due() - start)
                    .collect::<Vec<_>>()
            })
            .collect();
        dues.sort();
        let expected: Vec<Duration> = (0..12).map(Duration::from_millis).collect();
        for (got, want) in dues.iter().zip(&expected) {
            let diff = got.abs_diff(*want);
            assert!(diff < Duration::from_micros(1), "{dues:?}");
        }
    }

    /// The clock thread gives every worker exactly its own schedule, none
    /// at or after the end of the phase, then closes its channel.
    #[tokio::test]
    async fn the_clock_hands_each_worker_its_own_schedule() {
        let start = Instant::now();
        let phase = Phase {
            start,
            measure_start: start,
            end: start + Duration::from_millis(12),
        };
        let tickets = start_clock(1_000.0, 4, phase).unwrap();
        for (w, mut tickets) in tickets.into_iter().enumerate() {
            let mut got = Vec::new();
            while let Some(due) = tickets.recv().await {
                got.push(due - start);
            }
            let mut schedule = Schedule::new(1_000.0, 4, w, start);
            let want: Vec<Duration> = (0..3).map(|_| schedule.next_due() - start).collect();
            assert_eq!(got.len(), want.len(), "worker {w}: {got:?}");
            for (got, want) in got.iter().zip(&want) {
                assert!(got.abs_diff(*want) < Duration::from_micros(1), "worker {w}");
            }
        }
    }
}
