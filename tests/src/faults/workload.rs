//! The writers that run under the faults, each putting fresh keys, and
//! the [`Ledger`] of what the cluster acknowledged, refused or left
//! undecided.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ringkv_client::{Client, Error, Level, PutOptions, RequestOptions};

use crate::TestCluster;

/// Server-side timeout of each write. A replica that does not answer
/// within `handoff.replica_timeout_ms` (1 s) is replaced by a hint, so a
/// healthy quorum answers well within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Our own limit on one write, beyond the client library's deadline
/// (the request timeout plus its margin): a write that takes longer is
/// counted as indeterminate. It only matters if the library misbehaves.
pub(super) const WRITE_HARD_LIMIT: Duration = Duration::from_secs(10);

/// Pause between two writes of one writer: keeps the run's key count
/// (and so the checker's work) bounded on a small machine while the
/// writes stay continuous.
const WRITE_PAUSE: Duration = Duration::from_millis(10);

/// Pause after a failed write, so a writer facing an outage does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Most writes one writer attempts, whatever the run's length.
const MAX_WRITES_PER_WRITER: u64 = 1_000_000;

/// What the writers did, merged over all of them.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pub attempted: u64,
    /// (key, value) of every acknowledged write.
    pub acknowledged: Vec<(String, String)>,
    /// Failures that are not indeterminate (refused ones included): never
    /// acknowledged.
    pub failed: u64,
    /// Keys of the writes refused with `UNAVAILABLE`, which promises that
    /// nothing was applied: the checker requires them on no node.
    pub refused: Vec<String>,
    /// The write may or may not have reached W replicas.
    pub indeterminate: u64,
    /// Failures by error kind, for the report.
    pub errors: BTreeMap<&'static str, u64>,
}

impl Ledger {
    fn merge(&mut self, other: Ledger) {
        self.attempted += other.attempted;
        self.acknowledged.extend(other.acknowledged);
        self.failed += other.failed;
        self.refused.extend(other.refused);
        self.indeterminate += other.indeterminate;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// The name of an error's kind, as the report counts it.
fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "invalid-argument",
        Error::Unavailable(_) => "unavailable",
        Error::Timeout(_) => "timeout",
        Error::Overloaded(_) => "overloaded",
        Error::FailedPrecondition(_) => "failed-precondition",
        Error::Unreachable(_) => "unreachable",
        Error::Indeterminate(_) => "indeterminate",
        Error::Internal(_) => "internal",
        Error::Denied(_) => "denied",
    }
}

/// Writer tasks putting fresh keys with W = QUORUM (sloppy, the default)
/// until told to stop.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Ledger>>,
}

impl Workload {
    /// Starts `writers` writers. Even-numbered ones route by partition
    /// over all endpoints (as applications do); odd-numbered ones go
    /// through one node each without routing, so that node forwards or
    /// coordinates: both request paths meet the faults. Each writer stops
    /// by itself at `deadline` at the latest.
    pub fn start(cluster: &TestCluster, writers: usize, deadline: Instant) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let client = if w % 2 == 0 {
                    cluster.client()
                } else {
                    cluster.client_via(w % cluster.nodes.len())
                };
                tokio::spawn(write_until(client, w, stop.clone(), deadline))
            })
            .collect();
        Workload { stop, tasks }
    }

    /// Stops the writers and merges their ledgers; in-flight writes finish
    /// (each within [`WRITE_HARD_LIMIT`]).
    pub async fn stop(self) -> Result<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        let mut ledger = Ledger::default();
        for task in self.tasks {
            ledger.merge(task.await.context("a writer task panicked")?);
        }
        Ok(ledger)
    }
}

/// One writer: keys `w{writer}-{seq}`, each written once.
async fn write_until(
    client: Client,
    writer: usize,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Ledger {
    let mut ledger = Ledger::default();
    let opts = PutOptions {
        consistency: RequestOptions {
            level: Some(Level::Quorum),
            sloppy: None,
            timeout: Some(WRITE_TIMEOUT),
        },
        ..PutOptions::default()
    };
    for seq in 0..MAX_WRITES_PER_WRITER {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let key = format!("w{writer}-{seq}");
        let value = format!("value-of-{key}");
        ledger.attempted += 1;
        let put = client.put(key.clone(), value.clone(), opts.clone());
        let pause = match tokio::time::timeout(WRITE_HARD_LIMIT, put).await {
            Ok(Ok(_)) => {
                ledger.acknowledged.push((key, value));
                WRITE_PAUSE
            }
            Ok(Err(e)) => {
                *ledger.errors.entry(error_kind(&e)).or_default() += 1;
                if e.is_indeterminate() {
                    ledger.indeterminate += 1;
                } else {
                    ledger.failed += 1;
                    if matches!(e, Error::Unavailable(_)) {
                        ledger.refused.push(key);
                    }
                }
                ERROR_BACKOFF
            }
            Err(_) => {
                *ledger.errors.entry("client-timeout").or_default() += 1;
                ledger.indeterminate += 1;
                ERROR_BACKOFF
            }
        };
        tokio::time::sleep(pause).await;
    }
    ledger
}
