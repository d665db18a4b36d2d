//! The load of the cluster-change tests: writers that write fresh keys,
//! overwrite some with the context of a read, read back what was just
//! acknowledged and re-read older keys, all at QUORUM, recording what the
//! cluster acknowledged and every error by kind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::stream::{self, StreamExt as _};
use ringkv_client::{Client, Error, Level, PutOptions, RequestOptions};

use super::{short, EXAMPLES};
use crate::TestCluster;

/// Server-side timeout of each load request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Our own limit on one request beyond the library's deadline; a request
/// that takes longer counts as failed with an unknown outcome.
const HARD_LIMIT: Duration = Duration::from_secs(10);

/// Pause between two iterations of one writer: the load stays continuous
/// while the number of keys (and so the checking) stays bounded.
const PAUSE: Duration = Duration::from_millis(5);

/// Pause after a failed request, so a writer facing an outage does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Every this many iterations a writer overwrites one of its earlier keys.
const OVERWRITE_EVERY: u64 = 5;

/// A value of about `bytes` bytes for `key`, distinct per `generation`.
pub fn value_for(key: &str, generation: u64, bytes: usize) -> String {
    let mut v = format!("{key}#{generation}:");
    while v.len() < bytes {
        v.push('.');
    }
    v
}

/// What one key may hold after the run.
#[derive(Clone, Debug, Default)]
pub struct KeyState {
    /// Value of the last acknowledged write; `None` when no write of the
    /// key was acknowledged (it is then not checked).
    pub acked: Option<String>,
    /// Values of writes after it whose outcome is unknown.
    pub later: Vec<String>,
}

impl KeyState {
    /// Values a replica or a read may legitimately show.
    pub fn acceptable(&self) -> Vec<String> {
        self.acked.iter().chain(&self.later).cloned().collect()
    }
}

/// What the load did, merged over its writers.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub writes: u64,
    pub writes_acked: u64,
    pub write_errors: BTreeMap<&'static str, u64>,
    pub reads: u64,
    pub reads_ok: u64,
    pub read_errors: BTreeMap<&'static str, u64>,
    /// Messages of read errors that are not retryable (should be none).
    pub non_retryable_reads: Vec<String>,
    /// Messages of write errors that are not retryable (should be none).
    pub non_retryable_writes: Vec<String>,
    /// Reads that succeeded without the key's last acknowledged value.
    pub stale_reads: Vec<String>,
    /// Counts while some node showed a layout in transition.
    pub writes_acked_in_transition: u64,
    pub reads_in_transition: u64,
    pub read_errors_in_transition: u64,
    pub keys: BTreeMap<String, KeyState>,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.writes += other.writes;
        self.writes_acked += other.writes_acked;
        for (k, n) in other.write_errors {
            *self.write_errors.entry(k).or_default() += n;
        }
        self.reads += other.reads;
        self.reads_ok += other.reads_ok;
        for (k, n) in other.read_errors {
            *self.read_errors.entry(k).or_default() += n;
        }
        self.non_retryable_reads.extend(other.non_retryable_reads);
        self.non_retryable_writes.extend(other.non_retryable_writes);
        self.stale_reads.extend(other.stale_reads);
        self.writes_acked_in_transition += other.writes_acked_in_transition;
        self.reads_in_transition += other.reads_in_transition;
        self.read_errors_in_transition += other.read_errors_in_transition;
        self.keys.extend(other.keys);
    }

    /// (key, acceptable values) of every acknowledged key.
    pub fn acknowledged(&self) -> Vec<(String, Vec<String>)> {
        self.keys
            .iter()
            .filter(|(_, s)| s.acked.is_some())
            .map(|(k, s)| (k.clone(), s.acceptable()))
            .collect()
    }

    /// Everything the load itself saw go wrong; reads may have failed only
    /// with the error kinds in `read_errors_allowed` (names as
    /// [`error_kind`] gives them).
    pub fn problems(&self, read_errors_allowed: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let unexpected: BTreeMap<&str, u64> = self
            .read_errors
            .iter()
            .filter(|(kind, _)| !read_errors_allowed.contains(kind))
            .map(|(kind, n)| (*kind, *n))
            .collect();
        if !unexpected.is_empty() {
            out.push(format!(
                "reads failed with {unexpected:?}; only {read_errors_allowed:?} are expected here"
            ));
        }
        if !self.non_retryable_reads.is_empty() {
            out.push(format!(
                "{} reads failed with errors that are not retryable, e.g. {:?}",
                self.non_retryable_reads.len(),
                &self.non_retryable_reads[..self.non_retryable_reads.len().min(EXAMPLES)]
            ));
        }
        if !self.non_retryable_writes.is_empty() {
            out.push(format!(
                "{} writes failed with errors that are not retryable, e.g. {:?}",
                self.non_retryable_writes.len(),
                &self.non_retryable_writes[..self.non_retryable_writes.len().min(EXAMPLES)]
            ));
        }
        if !self.stale_reads.is_empty() {
            out.push(format!(
                "{} reads did not return the key's last acknowledged write, e.g. {:?}",
                self.stale_reads.len(),
                &self.stale_reads[..self.stale_reads.len().min(EXAMPLES)]
            ));
        }
        out
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "writes  {} attempted, {} acknowledged ({} while in transition), errors {:?}",
            self.writes, self.writes_acked, self.writes_acked_in_transition, self.write_errors
        )?;
        writeln!(
            f,
            "reads   {} attempted, {} ok, errors {:?} ({} reads and {} retryable errors while in transition)",
            self.reads,
            self.reads_ok,
            self.read_errors,
            self.reads_in_transition,
            self.read_errors_in_transition
        )?;
        write!(
            f,
            "checked stale reads {}, non-retryable read errors {}, non-retryable write errors {}",
            self.stale_reads.len(),
            self.non_retryable_reads.len(),
            self.non_retryable_writes.len()
        )
    }
}

/// The name of an error's kind, as the reports count it.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "invalid-argument",
        Error::Unavailable(_) => "unavailable",
        Error::Timeout(_) => "deadline-exceeded",
        Error::Overloaded(_) => "resource-exhausted",
        Error::FailedPrecondition(_) => "failed-precondition",
        Error::Unreachable(_) => "unreachable",
        Error::Indeterminate(_) => "indeterminate",
        Error::Internal(_) => "internal",
        Error::Denied(_) => "denied",
    }
}

/// Shape of a load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub prefix: String,
    pub writers: usize,
    /// Most iterations per writer, whatever the run's length.
    pub max_per_writer: u64,
    pub value_bytes: usize,
    /// Node index the odd-numbered writers go through without routing (so
    /// that node forwards or coordinates); even-numbered ones route by
    /// partition over the cluster's endpoints.
    pub via: usize,
}

/// Writer tasks that write, read back and re-read continuously until told
/// to stop.
pub struct Load {
    stop: Arc<AtomicBool>,
    in_transition: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts the writers; each stops by itself at `deadline` at the latest.
    pub fn start(cluster: &TestCluster, spec: &LoadSpec, deadline: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let in_transition = Arc::new(AtomicBool::new(false));
        let tasks = (0..spec.writers)
            .map(|w| {
                let client = if w % 2 == 0 {
                    cluster.client()
                } else {
                    cluster.client_via(spec.via)
                };
                let writer = Writer {
                    client,
                    prefix: format!("{}-w{w}", spec.prefix),
                    max: spec.max_per_writer,
                    value_bytes: spec.value_bytes,
                    stop: stop.clone(),
                    in_transition: in_transition.clone(),
                    deadline,
                };
                tokio::spawn(writer.run())
            })
            .collect();
        Load {
            stop,
            in_transition,
            tasks,
        }
    }

    /// Tells the writers whether a layout change is being transferred, so
    /// they count what they do meanwhile.
    pub fn set_in_transition(&self, yes: bool) {
        self.in_transition.store(yes, Ordering::Relaxed);
    }

    /// Stops the writers and merges what they saw.
    pub async fn stop(self) -> Result<LoadReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = LoadReport::default();
        for task in self.tasks {
            report.merge(task.await.context("a load task panicked")?);
        }
        Ok(report)
    }
}

struct Writer {
    client: Client,
    prefix: String,
    max: u64,
    value_bytes: usize,
    stop: Arc<AtomicBool>,
    in_transition: Arc<AtomicBool>,
    deadline: Instant,
}

fn request_opts() -> RequestOptions {
    RequestOptions {
        level: Some(Level::Quorum),
        sloppy: None,
        timeout: Some(REQUEST_TIMEOUT),
    }
}

impl Writer {
    async fn run(self) -> LoadReport {
        let mut report = LoadReport::default();
        // Own keys whose every write was acknowledged, so they may be
        // overwritten and re-read with an exact expectation.
        let mut settled: Vec<String> = Vec::new();
        for seq in 0..self.max {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > self.deadline {
                break;
            }
            let overwrite = seq % OVERWRITE_EVERY == OVERWRITE_EVERY - 1 && !settled.is_empty();
            let (key, context) = if overwrite {
                let key = settled[(seq as usize * 7) % settled.len()].clone();
                match self.read(&mut report, &key).await {
                    Some(got) => (key, Some(got.context)),
                    None => {
                        tokio::time::sleep(ERROR_BACKOFF).await;
                        continue;
                    }
                }
            } else {
                (format!("{}-{seq}", self.prefix), None)
            };
            let value = value_for(&key, seq, self.value_bytes);
            report.writes += 1;
            let put = self.client.put(
                key.clone(),
                value.clone(),
                PutOptions {
                    consistency: request_opts(),
                    context,
                    ttl: None,
                },
            );
            let outcome = tokio::time::timeout(HARD_LIMIT, put).await;
            let state = report.keys.entry(key.clone()).or_default();
            match outcome {
                Ok(Ok(_)) => {
                    state.acked = Some(value.clone());
                    state.later.clear();
                    report.writes_acked += 1;
                    if self.in_transition.load(Ordering::Relaxed) {
                        report.writes_acked_in_transition += 1;
                    }
                    if !overwrite {
                        settled.push(key.clone());
                    }
                }
                Ok(Err(e)) => {
                    state.later.push(value);
                    settled.retain(|k| *k != key);
                    *report.write_errors.entry(error_kind(&e)).or_default() += 1;
                    if !e.is_retryable() {
                        report.non_retryable_writes.push(format!("{key}: {e}"));
                    }
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
                Err(_) => {
                    state.later.push(value);
                    settled.retain(|k| *k != key);
                    *report.write_errors.entry("client-timeout").or_default() += 1;
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            }
            // Read back what was just acknowledged...
            self.read(&mut report, &key).await;
            // ...and an older key, which may sit in a partition being moved.
            if let Some(older) = settled.get((seq as usize * 13) % settled.len().max(1)) {
                let older = older.clone();
                self.read(&mut report, &older).await;
            }
            tokio::time::sleep(PAUSE).await;
        }
        report
    }

    /// Reads `key` with R = QUORUM and checks it against what was
    /// acknowledged; `None` when the read failed.
    async fn read(&self, report: &mut LoadReport, key: &str) -> Option<ringkv_client::GetResult> {
        report.reads += 1;
        let during = self.in_transition.load(Ordering::Relaxed);
        if during {
            report.reads_in_transition += 1;
        }
        let get = self.client.get(key.to_string(), request_opts(), false);
        match tokio::time::timeout(HARD_LIMIT, get).await {
            Ok(Ok(got)) => {
                report.reads_ok += 1;
                let expected = report.keys.get(key).and_then(|s| s.acked.clone());
                if let Some(expected) = expected {
                    let values: Vec<&[u8]> =
                        got.siblings.iter().map(|s| s.value.as_ref()).collect();
                    if values != [expected.as_bytes()] {
                        report.stale_reads.push(format!(
                            "{key}: expected the one value {:?}, read {} siblings {:?}{}",
                            short(expected.as_bytes()),
                            values.len(),
                            values.iter().map(|v| short(v)).collect::<Vec<_>>(),
                            if during { " (during transition)" } else { "" }
                        ));
                    }
                }
                Some(got)
            }
            Ok(Err(e)) => {
                *report.read_errors.entry(error_kind(&e)).or_default() += 1;
                if during {
                    report.read_errors_in_transition += 1;
                }
                if !e.is_retryable() {
                    report.non_retryable_reads.push(format!("{key}: {e}"));
                }
                None
            }
            Err(_) => {
                *report.read_errors.entry("client-timeout").or_default() += 1;
                report
                    .non_retryable_reads
                    .push(format!("{key}: no answer within {HARD_LIMIT:?}"));
                None
            }
        }
    }
}

/// Writes `count` fresh keys `{prefix}-{i}` with values of `value_bytes`
/// at W = QUORUM, `concurrency` at a time; every write must be
/// acknowledged. Returns (key, value) of each.
pub async fn preload(
    client: &Client,
    prefix: &str,
    count: usize,
    value_bytes: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> = (0..count)
        .map(|i| {
            let key = format!("{prefix}-{i}");
            let value = value_for(&key, 0, value_bytes);
            (key, value)
        })
        .collect();
    let results: Vec<Result<()>> = stream::iter(pairs.iter().cloned())
        .map(|(key, value)| async move {
            client
                .put(
                    key.clone(),
                    value,
                    PutOptions {
                        consistency: request_opts(),
                        ..PutOptions::default()
                    },
                )
                .await
                .map(|_| ())
                .with_context(|| format!("preloading {key}"))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(pairs)
}
