//! The load: a fixed number of closed-loop clients issuing reads and
//! blind-overwrite writes of uniformly chosen keys.
//!
//! *Closed loop* means each of the `--concurrency` workers sends one request,
//! waits for its answer, and only then sends the next. Throughput is then
//! what the cluster sustains with that many requests outstanding, and
//! latency is what a client waiting on each request sees. (An open-loop
//! generator, issuing at a fixed rate whatever happens, is the other
//! design; it exposes queueing that a closed loop hides, so these figures
//! are a best case for tail latency. YCSB is closed-loop too.)
//!
//! A run has three phases, all bounded in time:
//!
//! 1. optional **preload** (`--preload`): every key written once, so that
//!    reads find values; capped at [`MAX_PRELOAD_TIME`];
//! 2. **warm-up** (`--warmup`): load runs but nothing is recorded, so
//!    connection set-up and cold caches do not count;
//! 3. **measurement** (`--duration`, or until `--max-ops` measured requests
//!    were issued). Requests still in flight when it ends may finish (they
//!    are recorded) until a drain deadline [`DRAIN_GRACE`] later, after
//!    which they are abandoned and counted as `cut_off`.
//!
//! Keys are `<prefix><index, 10 digits>` with the index uniform in
//! `0..--keys` (YCSB's default is zipfian; uniform spreads load evenly over
//! partitions, which is the fairer test of a hashed ring). Writes carry no
//! context, as a client that overwrites without reading first does, so they
//! create no siblings. Values are slices of one random buffer: distinct
//! enough that compression cannot flatter the store, and free to produce.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, PutOptions, RequestOptions};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::report::{Measurement, OpStats, PreloadReport};
use crate::Config;

/// How long in-flight requests may still finish after the measured phase
/// ends before they are abandoned; bounds the run even against a node that
/// stopped answering.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The longest a preload may run: at a few thousand writes per second this
/// covers about a million keys; beyond it the run goes on with what was
/// written and the report says the preload was incomplete.
pub const MAX_PRELOAD_TIME: Duration = Duration::from_secs(600);

/// Pause after a failed request before the worker's next one, so that a
/// node that refuses instantly (down, overloaded) is not hammered in a
/// tight loop and the error counts stay meaningful.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Size of the random buffer values are sliced from, on top of the value
/// size itself.
const VALUE_POOL_BYTES: usize = 1 << 20;

/// Added per worker to the run's seed so that workers draw different keys
/// (the 64-bit golden ratio, which spreads consecutive seeds apart).
const SEED_STRIDE: u64 = 0x9e37_79b9_7f4a_7c15;

/// What every worker of a run shares.
pub struct Load {
    client: Client,
    config: Config,
    /// Values are random slices of this buffer (cheap `Bytes` clones).
    value_pool: Bytes,
}

/// What one worker measured.
struct WorkerTally {
    reads: OpStats,
    writes: OpStats,
    cut_off: u64,
    /// When the worker's last request ended: the measured phase lasts until
    /// the slowest worker's last answer.
    finished: Instant,
}

impl Load {
    pub fn new(client: Client, config: Config) -> Arc<Self> {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut pool = vec![0u8; VALUE_POOL_BYTES + config.value_size];
        rng.fill(pool.as_mut_slice());
        Arc::new(Load {
            client,
            config,
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

    fn read_options(&self) -> RequestOptions {
        RequestOptions {
            level: self.config.read_level,
            sloppy: None,
            timeout: self.config.timeout,
        }
    }

    fn put_options(&self) -> PutOptions {
        PutOptions {
            consistency: RequestOptions {
                level: self.config.write_level,
                sloppy: None,
                timeout: self.config.timeout,
            },
            context: None,
            ttl: None,
        }
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
        let next = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for worker in 0..self.config.concurrency {
            let load = Arc::clone(self);
            let next = Arc::clone(&next);
            workers.spawn(async move { load.preload_worker(worker, &next, deadline).await });
        }
        let mut total = OpStats::new()?;
        let mut complete = true;
        while let Some(joined) = workers.join_next().await {
            let (stats, finished) = joined.context("a preload worker panicked")??;
            total.merge(&stats)?;
            complete &= finished;
        }
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
    ) -> Result<(OpStats, bool)> {
        let mut rng = self.rng(worker);
        let mut stats = OpStats::new()?;
        let opts = self.put_options();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= self.config.keys {
                return Ok((stats, true));
            }
            let started = Instant::now();
            if started >= deadline {
                return Ok((stats, false));
            }
            let put = self
                .client
                .put(self.key(index), self.value(&mut rng), opts.clone());
            match timeout_at(deadline, put).await {
                Err(_) => return Ok((stats, false)),
                Ok(Ok(_)) => stats.record_success(started.elapsed()),
                Ok(Err(e)) => {
                    stats.record_error(&e);
                    sleep_until((started + ERROR_BACKOFF).min(deadline)).await;
                }
            }
        }
    }

    /// Warm-up then measurement (phases 2 and 3).
    pub async fn run(self: &Arc<Self>) -> Result<Measurement> {
        let measure_start = Instant::now() + self.config.warmup;
        let end = measure_start + self.config.duration;
        let issued = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for worker in 0..self.config.concurrency {
            let load = Arc::clone(self);
            let issued = Arc::clone(&issued);
            workers.spawn(async move { load.worker(worker, measure_start, end, &issued).await });
        }
        let mut reads = OpStats::new()?;
        let mut writes = OpStats::new()?;
        let mut cut_off = 0;
        let mut last_answer = measure_start;
        while let Some(joined) = workers.join_next().await {
            let tally = joined.context("a load worker panicked")??;
            reads.merge(&tally.reads)?;
            writes.merge(&tally.writes)?;
            cut_off += tally.cut_off;
            last_answer = last_answer.max(tally.finished);
        }
        Ok(Measurement {
            reads,
            writes,
            elapsed: last_answer.saturating_duration_since(measure_start),
            cut_off,
        })
    }

    /// One closed-loop client: a request, its answer, the next request.
    /// `issued` counts measured requests across workers for `--max-ops`.
    async fn worker(
        &self,
        worker: usize,
        measure_start: Instant,
        end: Instant,
        issued: &AtomicU64,
    ) -> Result<WorkerTally> {
        let drain_deadline = end + DRAIN_GRACE;
        let mut rng = self.rng(worker);
        let read_opts = self.read_options();
        let put_opts = self.put_options();
        let mut tally = WorkerTally {
            reads: OpStats::new()?,
            writes: OpStats::new()?,
            cut_off: 0,
            finished: Instant::now(),
        };
        loop {
            let started = Instant::now();
            if started >= end {
                break;
            }
            let measured = started >= measure_start;
            if measured {
                if let Some(max) = self.config.max_ops {
                    if issued.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                }
            }
            let key = self.key(rng.random_range(0..self.config.keys));
            let is_read = rng.random_bool(self.config.read_ratio);
            // Ok(found) on success; a write always "finds".
            let outcome = if is_read {
                let get = self.client.get(key, read_opts, false);
                timeout_at(drain_deadline, get)
                    .await
                    .map(|r| r.map(|got| got.found()))
            } else {
                let put = self.client.put(key, self.value(&mut rng), put_opts.clone());
                timeout_at(drain_deadline, put)
                    .await
                    .map(|r| r.map(|_| true))
            };
            let latency = started.elapsed();
            tally.finished = Instant::now();
            let stats = if is_read {
                &mut tally.reads
            } else {
                &mut tally.writes
            };
            match outcome {
                Err(_) => {
                    tally.cut_off += 1;
                    break;
                }
                Ok(Ok(found)) => {
                    if measured {
                        stats.record_success(latency);
                        if !found {
                            stats.record_not_found();
                        }
                    }
                }
                Ok(Err(e)) => {
                    if measured {
                        stats.record_error(&e);
                    }
                    sleep_until((tally.finished + ERROR_BACKOFF).min(end)).await;
                }
            }
        }
        Ok(tally)
    }
}
