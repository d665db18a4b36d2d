//! Fault injection on a real cluster: a workload that records what the
//! cluster acknowledged, a driver that breaks one node at a time, and a
//! checker that proves every acknowledged write survived.
//!
//! # The contract under test
//!
//! ringkv acknowledges a write only once W replicas (or, with a sloppy
//! quorum, fallbacks holding hints for them) have it in their write-ahead
//! log. After the faults are over and the cluster has healed, hinted
//! handoff and anti-entropy must bring every acknowledged write to every
//! replica of its partition. So the checker demands, for each
//! acknowledged write:
//!
//! - it is held by every replica the layout names for its partition
//!   (`Admin.LocalGet` on each, before any read could repair it);
//! - a read with R = ALL returns it;
//! - it is on at least one node at all: a write that is on no node is
//!   **lost**, the worst outcome, counted apart from the two above.
//!
//! Writes that failed are of two kinds. A **refused** write (`UNAVAILABLE`)
//! was turned away before anything was applied (too few replicas believed
//! alive, a forward that could not connect, a node that cannot coordinate
//! now): it must be on **no** node, and the checker demands that. An
//! **indeterminate** one (`DEADLINE_EXCEEDED`, a broken connection, our
//! own client-side timeout) may have been applied on some replicas, even
//! on W of them without the answer reaching us: it may or may not be
//! present, both are legal, and it is counted apart, never as
//! acknowledged and never as lost. Other failures (e.g. `INTERNAL`) are
//! only counted.
//!
//! Every write goes to a key never written before, with a value derived
//! from the key. No write supersedes another, so "the acknowledged value
//! is among the stored versions" is the whole check, and a key holding
//! more than one sibling shows that something invented a version.
//!
//! # The faults
//!
//! SIGKILL then a restart on the same data directory; SIGSTOP then
//! SIGCONT (a node that hangs with its connections open, the case that
//! exercises timeouts rather than refused connections); a network cut
//! between two nodes, both directions, through the test fault switch; and
//! a wipe of one node's data directory before its restart. With N = 3 the
//! driver never has two nodes faulty at once: each fault is healed and
//! the cluster seen converged (same layout, everyone alive) before the
//! next starts, so a quorum stays possible and failures are the faults'
//! doing, not an outage.
//!
//! The schedule (which fault, which nodes, how long, the pauses between)
//! comes from a seeded generator: the seed is printed, and
//! `RINGKV_FAULT_SEED=<seed>` replays the same schedule. The interleaving
//! with the writes still depends on timing, so a replay is the same
//! storm, not the same execution.
//!
//! # Convergence
//!
//! After the last fault is healed the writers stop, hints must drain, and
//! then the replicas of every partition must report equal Merkle roots
//! (`Admin.MerkleRoots`) with only the background anti-entropy worker
//! running (`repair.interval_ms` is shortened for the run). The time from
//! the last heal to equal roots is the convergence time. An explicit
//! `Admin.StartRepair` on every node follows, whose count of repaired keys
//! shows whether anything was left for it.
//!
//! With hints delivered, replicas are usually equal by the time hints have
//! drained, and anti-entropy has little to do. A run with
//! [`HINTS_EXPIRE_AT_ONCE`] drops every hint instead, so whatever a
//! replica missed during a fault only anti-entropy can bring back: that
//! run measures anti-entropy on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::stream::{self, StreamExt as _};
use ringkv_client::{Client, Error, Level, PutOptions, RequestOptions};
use ringkv_proto::v1 as pb;

use crate::{partition_of, signal, TestCluster};

/// Environment variable that fixes the fault schedule's seed.
pub const SEED_ENV: &str = "RINGKV_FAULT_SEED";

/// Pause between anti-entropy passes on the nodes of a fault run: short,
/// so convergence after the last heal is measured in seconds, not in the
/// default minute.
pub const REPAIR_INTERVAL_MS: &str = "1000";

/// Server-side timeout of each write. A replica that does not answer
/// within `handoff.replica_timeout_ms` (1 s) is replaced by a hint, so a
/// healthy quorum answers well within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Our own limit on one write, beyond the client library's deadline
/// (the request timeout plus its margin): a write that takes longer is
/// counted as indeterminate. It only matters if the library misbehaves.
const WRITE_HARD_LIMIT: Duration = Duration::from_secs(10);

/// Pause between two writes of one writer: keeps the run's key count
/// (and so the checker's work) bounded on a small machine while the
/// writes stay continuous.
const WRITE_PAUSE: Duration = Duration::from_millis(10);

/// Pause after a failed write, so a writer facing an outage does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Most writes one writer attempts, whatever the run's length.
const MAX_WRITES_PER_WRITER: u64 = 1_000_000;

/// Writes before the first fault, so the cluster holds data to lose.
const WARM_UP: Duration = Duration::from_secs(1);

/// How long hints may take to drain after the last heal.
const HINT_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Polling interval of the hint wait.
const POLL: Duration = Duration::from_millis(250);

/// Polling interval of the convergence wait: each poll makes every node
/// scan all its partitions for their Merkle roots, which competes with
/// the anti-entropy being waited for.
const CONVERGE_POLL: Duration = Duration::from_secs(1);

/// Keys the checker examines at once.
const CHECK_CONCURRENCY: usize = 16;

/// Tries of the R = ALL read of one key before it counts as unreadable.
const READ_ATTEMPTS: usize = 3;

/// Pause between two tries of one read.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Keys named in a report's problem lines; the rest are only counted.
const EXAMPLES: usize = 5;

/// A small deterministic generator (SplitMix64), so a run's schedule is a
/// function of its seed alone; the crate has no `rand` dependency and
/// needs none for this.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// SplitMix64 with its published constants (Steele, Lea, Flood 2014).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0); the modulo bias is negligible here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A duration in `[lo, hi]`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next_u64() % (span + 1))
    }
}

/// The seed from [`SEED_ENV`] (decimal, or hex with `0x`), else one from
/// the clock. Panics on a malformed value rather than silently ignoring it.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    }
}

/// What kind of fault, for the schedule and the report's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Kill,
    Pause,
    Cut,
    Wipe,
}

/// One fault with its targets and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same ports and data directory.
    Kill { node: usize, down_for: Duration },
    /// SIGSTOP, then SIGCONT: the node hangs with its sockets open.
    Pause { node: usize, paused_for: Duration },
    /// No internal traffic between `a` and `b`, either direction; clients
    /// still reach both.
    Cut {
        a: usize,
        b: usize,
        cut_for: Duration,
    },
    /// SIGKILL, the data directory deleted, then a restart: the node
    /// comes back empty, with a new node id.
    Wipe { node: usize, down_for: Duration },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Cut { .. } => FaultKind::Cut,
            Fault::Wipe { .. } => FaultKind::Wipe,
        }
    }

    /// Draws a fault of one of `kinds` on a cluster of `nodes` nodes,
    /// lasting between `lasting.0` and `lasting.1`.
    pub fn draw(
        rng: &mut Rng,
        kinds: &[FaultKind],
        nodes: usize,
        lasting: (Duration, Duration),
    ) -> Fault {
        let kind = kinds[rng.below(kinds.len())];
        let node = rng.below(nodes);
        let lasts = rng.between(lasting.0, lasting.1);
        match kind {
            FaultKind::Kill => Fault::Kill {
                node,
                down_for: lasts,
            },
            FaultKind::Pause => Fault::Pause {
                node,
                paused_for: lasts,
            },
            FaultKind::Cut => {
                // Any other node: shift by 1..nodes so `b != a`.
                let b = (node + 1 + rng.below(nodes - 1)) % nodes;
                Fault::Cut {
                    a: node,
                    b,
                    cut_for: lasts,
                }
            }
            FaultKind::Wipe => Fault::Wipe {
                node,
                down_for: lasts,
            },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { node, down_for } => write!(f, "kill node {node} for {down_for:?}"),
            Fault::Pause { node, paused_for } => {
                write!(f, "pause node {node} for {paused_for:?}")
            }
            Fault::Cut { a, b, cut_for } => write!(f, "cut {a}<->{b} for {cut_for:?}"),
            Fault::Wipe { node, down_for } => {
                write!(f, "wipe node {node}, down for {down_for:?}")
            }
        }
    }
}

/// Injects `fault`, holds it, heals it, and waits until the cluster is
/// whole again (same layout, every node alive as seen from every node).
/// Returns when the fault was healed, the instant convergence counts from.
pub async fn inject(cluster: &mut TestCluster, fault: &Fault) -> Result<Instant> {
    match *fault {
        Fault::Kill { node, down_for } => {
            cluster.nodes[node].kill();
            tokio::time::sleep(down_for).await;
            cluster.nodes[node].restart().await?;
        }
        Fault::Pause { node, paused_for } => {
            let pid = cluster.nodes[node]
                .pid()
                .with_context(|| format!("node {node} is not running"))?;
            // If anything below fails, the harness's SIGKILL on drop ends
            // the stopped process too.
            signal(pid, libc::SIGSTOP);
            wait_stopped(pid, true).await?;
            tokio::time::sleep(paused_for).await;
            signal(pid, libc::SIGCONT);
            wait_stopped(pid, false).await?;
        }
        Fault::Cut { a, b, cut_for } => {
            cluster.cut(a, b).await?;
            tokio::time::sleep(cut_for).await;
            cluster.heal().await?;
        }
        Fault::Wipe { node, down_for } => {
            let server = &mut cluster.nodes[node];
            server.kill();
            std::fs::remove_dir_all(&server.data_dir)
                .with_context(|| format!("wiping {}", server.data_dir.display()))?;
            std::fs::create_dir_all(&server.data_dir)?;
            tokio::time::sleep(down_for).await;
            server.restart().await?;
            // The wiped node has a new id: the harness must look for it,
            // not for the old one, when it checks liveness.
            cluster.ids[node] = server.client().node_status(0).await?.node_id;
        }
    }
    let healed = Instant::now();
    cluster
        .wait_converged()
        .await
        .with_context(|| format!("the cluster did not recover after: {fault}"))?;
    Ok(healed)
}

/// How long a signalled process may take to show the stop or the
/// continue in `/proc`.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Polling interval of [`wait_stopped`].
const SIGNAL_POLL: Duration = Duration::from_millis(10);

/// Waits until `/proc` shows process `pid` stopped (`stopped`) or running
/// again, so a pause that did not take (the `kill` command's failures
/// are not reported) fails the run instead of passing as a fault.
async fn wait_stopped(pid: u32, stopped: bool) -> Result<()> {
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading the state of process {pid}"))?;
        // The state is the first field after the command name's ")".
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if (state == Some('T')) == stopped {
            return Ok(());
        }
        if started.elapsed() > SIGNAL_TIMEOUT {
            bail!(
                "process {pid} is in state {state:?}, not {}, {SIGNAL_TIMEOUT:?} after the signal",
                if stopped { "stopped" } else { "running" }
            );
        }
        tokio::time::sleep(SIGNAL_POLL).await;
    }
}

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

/// Partitions whose replicas (by the layout) do not all report the same
/// Merkle root; a replica that reports nothing for a partition it should
/// hold counts as differing.
pub async fn partitions_differing(cluster: &TestCluster) -> Result<usize> {
    let layout = cluster.client().layout().await?;
    let mut roots: Vec<BTreeMap<u32, u64>> = Vec::with_capacity(cluster.nodes.len());
    for (i, node) in cluster.nodes.iter().enumerate() {
        let reported = node
            .client()
            .merkle_roots(0)
            .await
            .with_context(|| format!("Admin.MerkleRoots on node {i}"))?;
        roots.push(reported.iter().map(|r| (r.partition, r.root)).collect());
    }
    let mut differing = 0;
    for (p, assignment) in layout.assignments.iter().enumerate() {
        let p = p as u32;
        let seen: Vec<Option<u64>> = assignment
            .replicas
            .iter()
            .map(|id| cluster.index_of(id).and_then(|i| roots[i].get(&p).copied()))
            .collect();
        if seen.iter().any(Option::is_none) || seen.windows(2).any(|w| w[0] != w[1]) {
            differing += 1;
        }
    }
    Ok(differing)
}

/// Waits until every partition's replicas agree, up to `bound` after
/// `since`; returns how long after `since` they did.
async fn wait_replicas_agree(
    cluster: &TestCluster,
    since: Instant,
    bound: Duration,
) -> Result<Duration> {
    loop {
        let differing = partitions_differing(cluster).await?;
        if differing == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > bound {
            bail!("{differing} partitions still differ between replicas {bound:?} after the last heal");
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
}

/// Waits until no node holds hints; returns how long it took.
async fn wait_hints_drained(cluster: &TestCluster) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let pending = cluster.hints_pending().await?;
        if pending == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > HINT_DRAIN_TIMEOUT {
            bail!("{pending} hints still pending after {HINT_DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `Admin.StartRepair` over all partitions on every node; returns
/// the keys repaired and the errors reported.
pub async fn repair_everywhere(cluster: &TestCluster) -> Result<(u64, Vec<String>)> {
    let mut repaired = 0;
    let mut errors = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let report: pb::StartRepairResponse = node
            .client()
            .repair(0, None)
            .await
            .with_context(|| format!("Admin.StartRepair on node {i}"))?;
        repaired += report.keys_repaired;
        errors.extend(report.errors.into_iter().map(|e| format!("node {i}: {e}")));
    }
    Ok((repaired, errors))
}

/// What the checker found for the acknowledged writes.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes held by no node and not readable: lost.
    pub lost: Vec<String>,
    /// Acknowledged writes an R = ALL read did not return.
    pub unreadable: Vec<String>,
    /// (key, replica) where a replica of the key's partition lacks it.
    pub under_replicated: Vec<(String, String)>,
    /// Keys read back with more than one sibling, though written once.
    pub extra_siblings: Vec<String>,
    /// Writes refused with `UNAVAILABLE` ("nothing was applied") that some
    /// node holds nevertheless.
    pub refused_but_present: Vec<String>,
}

/// Checks every acknowledged write: held by each replica of its
/// partition, readable with R = ALL, and on at least one node. Local
/// copies are looked at before the read, so read repair cannot hide a
/// replica that was missing the write.
pub async fn check(cluster: &TestCluster, acknowledged: &[(String, String)]) -> Result<Verdict> {
    let layout = cluster.client().layout().await?;
    let locals: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let reader = cluster.client();
    let outcomes: Vec<Result<KeyOutcome>> = stream::iter(acknowledged)
        .map(|(key, value)| check_key(cluster, &layout, &locals, &reader, key, value))
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut verdict = Verdict::default();
    for outcome in outcomes {
        let o = outcome?;
        if o.holders.is_empty() && !o.readable {
            verdict.lost.push(o.key.clone());
        }
        if !o.readable {
            verdict.unreadable.push(o.key.clone());
        }
        if o.siblings > 1 {
            verdict.extra_siblings.push(o.key.clone());
        }
        for replica in o.missing_on {
            verdict.under_replicated.push((o.key.clone(), replica));
        }
    }
    for list in [
        &mut verdict.lost,
        &mut verdict.unreadable,
        &mut verdict.extra_siblings,
    ] {
        list.sort();
    }
    verdict.under_replicated.sort();
    Ok(verdict)
}

/// Keys of `refused` writes that some node holds: each was answered
/// `UNAVAILABLE`, which promises it was applied nowhere. Looks at every
/// node's local copy (`Admin.LocalGet`), so it must run after the
/// cluster has healed and hints have drained.
pub async fn refused_but_present(cluster: &TestCluster, refused: &[String]) -> Result<Vec<String>> {
    let locals: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let held: Vec<Result<Option<String>>> = stream::iter(refused)
        .map(|key| {
            let locals = &locals;
            async move {
                for (i, local) in locals.iter().enumerate() {
                    let copy = local
                        .local_get(0, key.clone())
                        .await
                        .with_context(|| format!("Admin.LocalGet {key} on node {i}"))?;
                    if !copy.versions.is_empty() {
                        return Ok(Some(key.clone()));
                    }
                }
                Ok(None)
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut present = Vec::new();
    for key in held {
        present.extend(key?);
    }
    present.sort();
    Ok(present)
}

/// What the checker found for one key.
struct KeyOutcome {
    key: String,
    /// Node indexes holding the acknowledged value.
    holders: BTreeSet<usize>,
    /// Replica ids (by the layout) lacking it.
    missing_on: Vec<String>,
    readable: bool,
    siblings: usize,
}

async fn check_key(
    cluster: &TestCluster,
    layout: &pb::LayoutResponse,
    locals: &[Client],
    reader: &Client,
    key: &str,
    value: &str,
) -> Result<KeyOutcome> {
    let mut holders = BTreeSet::new();
    for (i, local) in locals.iter().enumerate() {
        let copy = local
            .local_get(0, key.to_string())
            .await
            .with_context(|| format!("Admin.LocalGet {key} on node {i}"))?;
        if copy
            .versions
            .iter()
            .any(|v| !v.tombstone && v.value.as_ref() == value.as_bytes())
        {
            holders.insert(i);
        }
    }
    let p = partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
    let missing_on = layout.assignments[p as usize]
        .replicas
        .iter()
        .filter(|id| !cluster.index_of(id).is_some_and(|i| holders.contains(&i)))
        .cloned()
        .collect();
    let mut readable = false;
    let mut siblings = 0;
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(READ_RETRY_PAUSE).await;
        }
        if let Ok(got) = reader
            .get(key.to_string(), RequestOptions::level(Level::All), false)
            .await
        {
            readable = got
                .siblings
                .iter()
                .any(|s| s.value.as_ref() == value.as_bytes());
            siblings = got.siblings.len();
            break;
        }
    }
    Ok(KeyOutcome {
        key: key.to_string(),
        holders,
        missing_on,
        readable,
        siblings,
    })
}

/// A mixed-fault run: what to inject, for how long, and what to demand.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub nodes: usize,
    pub writers: usize,
    /// Faults keep coming until at least this long has passed...
    pub run_for: Duration,
    /// ...and at least this many faults were injected...
    pub min_faults: usize,
    /// ...but the run fails if both take longer than this.
    pub max_run: Duration,
    /// Kinds the schedule draws from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// Each fault lasts between these.
    pub fault_for: (Duration, Duration),
    /// Quiet time after each recovery, between these.
    pub gap: (Duration, Duration),
    /// Replicas must agree within this of the last heal.
    pub converge_within: Duration,
    /// Extra environment for every node (e.g. [`HINTS_EXPIRE_AT_ONCE`]).
    pub env: Vec<(&'static str, &'static str)>,
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub ledger: Ledger,
    pub faults: BTreeMap<FaultKind, usize>,
    /// How long writes and faults ran.
    pub ran_for: Duration,
    /// From the last heal until no hints were pending.
    pub hints_drained_after: Option<Duration>,
    /// Partitions whose replicas differed once hints had drained.
    pub differing_after_hints: Option<usize>,
    /// From the last heal until all replicas agreed, by anti-entropy alone.
    pub converged_after: Option<Duration>,
    /// Why the cluster was not seen converging, if it was not.
    pub convergence_error: Option<String>,
    /// Keys the explicit repair on every node still found to exchange.
    pub repaired_by_explicit_repair: Option<u64>,
    pub repair_errors: Vec<String>,
    pub verdict: Verdict,
    /// Bound the run demanded for convergence.
    pub converge_within: Duration,
}

impl Report {
    /// Every way the run broke the contract; empty when it held.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let v = &self.verdict;
        let examples = |keys: &[String]| keys.iter().take(EXAMPLES).cloned().collect::<Vec<_>>();
        if !v.lost.is_empty() {
            out.push(format!(
                "{} acknowledged writes lost, e.g. {:?}",
                v.lost.len(),
                examples(&v.lost)
            ));
        }
        if !v.unreadable.is_empty() {
            out.push(format!(
                "{} acknowledged writes not returned by an R=ALL read, e.g. {:?}",
                v.unreadable.len(),
                examples(&v.unreadable)
            ));
        }
        if !v.under_replicated.is_empty() {
            let some: Vec<_> = v.under_replicated.iter().take(EXAMPLES).collect();
            out.push(format!(
                "{} (key, replica) pairs missing an acknowledged write, e.g. {some:?}",
                v.under_replicated.len()
            ));
        }
        if !v.refused_but_present.is_empty() {
            out.push(format!(
                "{} writes refused with UNAVAILABLE (nothing applied) are on some node, e.g. {:?}",
                v.refused_but_present.len(),
                examples(&v.refused_but_present)
            ));
        }
        if !v.extra_siblings.is_empty() {
            out.push(format!(
                "{} keys written once read back with several siblings, e.g. {:?}",
                v.extra_siblings.len(),
                examples(&v.extra_siblings)
            ));
        }
        match (&self.converged_after, &self.convergence_error) {
            (Some(t), _) if *t <= self.converge_within => {}
            (Some(t), _) => out.push(format!(
                "replicas agreed {t:?} after the last heal, beyond the bound {:?}",
                self.converge_within
            )),
            (None, e) => out.push(format!(
                "replicas were not seen agreeing: {}",
                e.as_deref().unwrap_or("unknown")
            )),
        }
        if !self.repair_errors.is_empty() {
            out.push(format!(
                "explicit repair reported errors: {:?}",
                &self.repair_errors[..self.repair_errors.len().min(EXAMPLES)]
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.ledger;
        let v = &self.verdict;
        writeln!(f, "seed           {} ({SEED_ENV}={})", self.seed, self.seed)?;
        writeln!(f, "ran for        {:.1?}", self.ran_for)?;
        writeln!(
            f,
            "writes         attempted {}, acknowledged {}, failed {} (refused {}), indeterminate {}",
            l.attempted,
            l.acknowledged.len(),
            l.failed,
            l.refused.len(),
            l.indeterminate
        )?;
        writeln!(f, "errors         {:?}", l.errors)?;
        writeln!(
            f,
            "faults         {} in all: {:?}",
            self.faults.values().sum::<usize>(),
            self.faults
        )?;
        writeln!(
            f,
            "hints drained  {:.1?} after the last heal",
            self.hints_drained_after
        )?;
        writeln!(
            f,
            "converged      {:.1?} after the last heal (bound {:?}); {:?} partitions differed once hints drained",
            self.converged_after, self.converge_within, self.differing_after_hints
        )?;
        if let Some(e) = &self.convergence_error {
            writeln!(f, "convergence    {e}")?;
        }
        writeln!(
            f,
            "explicit repair afterwards: {:?} keys repaired, {} errors",
            self.repaired_by_explicit_repair,
            self.repair_errors.len()
        )?;
        write!(
            f,
            "checked        lost {}, unreadable {}, under-replicated {}, extra siblings {}, refused but present {}",
            v.lost.len(),
            v.unreadable.len(),
            v.under_replicated.len(),
            v.extra_siblings.len(),
            v.refused_but_present.len()
        )
    }
}

/// Starts a cluster for fault runs: fast anti-entropy on top of the
/// harness's fast gossip, handoff and fault switch, plus `extra_env` for
/// every node.
pub async fn start_cluster(nodes: usize, extra_env: &[(&str, &str)]) -> Result<TestCluster> {
    let mut env = vec![("RINGKV__REPAIR__INTERVAL_MS", REPAIR_INTERVAL_MS)];
    env.extend_from_slice(extra_env);
    TestCluster::start_with_env(nodes, &[], &env).await
}

/// Node settings under which every hint is dropped instead of delivered
/// (`handoff.max_age_ms` of 1 ms): replicas that missed writes can then
/// catch up only through anti-entropy, which a run with these settings
/// measures on its own.
pub const HINTS_EXPIRE_AT_ONCE: &[(&str, &str)] = &[("RINGKV__HANDOFF__MAX_AGE_MS", "1")];

/// Runs `scenario` with the schedule of `seed` on a fresh cluster and
/// reports what happened. Errors only when the harness itself could not
/// proceed (a node would not restart, an admin call failed); contract
/// violations are in [`Report::problems`].
pub async fn run(scenario: &Scenario, seed: u64) -> Result<Report> {
    println!(
        "fault run: seed {seed} (replay with {SEED_ENV}={seed}), node settings {:?}",
        scenario.env
    );
    let mut rng = Rng::new(seed);
    let mut cluster = start_cluster(scenario.nodes, &scenario.env).await?;
    let started = Instant::now();
    let writers_deadline = started + scenario.max_run + WRITE_HARD_LIMIT;
    let workload = Workload::start(&cluster, scenario.writers, writers_deadline);
    tokio::time::sleep(WARM_UP).await;

    let mut report = Report {
        seed,
        converge_within: scenario.converge_within,
        ..Report::default()
    };
    let mut last_heal = Instant::now();
    let mut injected = 0;
    while started.elapsed() < scenario.run_for || injected < scenario.min_faults {
        if started.elapsed() > scenario.max_run {
            bail!(
                "only {injected} of {} faults injected within {:?}",
                scenario.min_faults,
                scenario.max_run
            );
        }
        let fault = Fault::draw(
            &mut rng,
            &scenario.kinds,
            scenario.nodes,
            scenario.fault_for,
        );
        println!(
            "[{:>6.1?}] fault {}: {fault}",
            started.elapsed(),
            injected + 1
        );
        last_heal = inject(&mut cluster, &fault).await?;
        *report.faults.entry(fault.kind()).or_default() += 1;
        injected += 1;
        tokio::time::sleep(rng.between(scenario.gap.0, scenario.gap.1)).await;
    }
    report.ledger = workload.stop().await?;
    report.ran_for = started.elapsed();
    println!(
        "[{:>6.1?}] writers stopped: {} acknowledged",
        started.elapsed(),
        report.ledger.acknowledged.len()
    );

    let drained = wait_hints_drained(&cluster).await;
    report.hints_drained_after = drained.is_ok().then(|| last_heal.elapsed());
    drained?;
    report.differing_after_hints = partitions_differing(&cluster).await.ok();
    match wait_replicas_agree(&cluster, last_heal, scenario.converge_within).await {
        Ok(took) => report.converged_after = Some(took),
        Err(e) => report.convergence_error = Some(format!("{e:#}")),
    }
    match repair_everywhere(&cluster).await {
        Ok((repaired, errors)) => {
            report.repaired_by_explicit_repair = Some(repaired);
            report.repair_errors = errors;
        }
        Err(e) => report.repair_errors = vec![format!("{e:#}")],
    }
    report.verdict = check(&cluster, &report.ledger.acknowledged).await?;
    report.verdict.refused_but_present =
        refused_but_present(&cluster, &report.ledger.refused).await?;
    println!("{report}");
    Ok(report)
}
