//! Anti-entropy and tombstone purge: how replicas that missed writes catch
//! up without anyone reading the keys, and how deleted keys finally leave.
//!
//! Read repair only fixes keys that are read, and hints only cover writes a
//! fallback saw. Anti-entropy closes the rest of the gap: every node
//! periodically compares each partition it replicates with the partition's
//! other replicas and exchanges whatever differs.
//!
//! # One exchange (this node `A`, peer `B`, partition `p`)
//!
//! 1. `A` scans `p` and builds its Merkle summary: 256 leaf hashes over the
//!    (key, digest of stored state) pairs, and a root over the leaves
//!    (`merkle.rs`). `B` does the same when `A` asks (`Internal.MerkleLeaves`).
//! 2. Equal roots: the replicas agree, done. Otherwise `A` asks `B` for the
//!    (key, digest) pairs of the differing leaves (`Internal.KeyDigests`)
//!    and lists its own. A listing is complete when it recomputes the leaf
//!    hash `B` reported; big answers come back as a prefix of whole leaves
//!    and `A` asks again for the rest.
//! 3. For each key whose digests differ, `A` reads `B`'s versions
//!    (`Internal.LocalRead`), merges them locally, and if the merge holds
//!    anything `B` lacks, sends the merged set back (`Internal.Replicate`).
//!    Merge is the same DVV sync every other path uses, so the exchange is
//!    idempotent and safe to repeat or interrupt at any point.
//!
//! A pass runs this for every partition this node replicates, with every
//! other replica believed alive; a failing peer is reported (in
//! [`RepairReport::errors`] and the worker's error count) and skipped, never
//! stopping the pass. Summaries are rebuilt by scanning on every exchange
//! rather than maintained on write (`scan.rs` says why); the scanning is
//! paced by one node-wide budget of `repair.keys_per_second` and backs off
//! when chunks get slow, i.e. when the node is busy (`pacing.rs`).
//!
//! # Tombstone purge
//!
//! A delete leaves a tombstone so that replicas which still hold the old
//! value learn, by merging, that it was deleted. Once *every* replica holds
//! the identical tombstone state and it is older than
//! `repair.tombstone_grace_ms` (longer than any hint may live), nothing can
//! bring the old value back and the key can go (`purge.rs`). Only the
//! partition's first replica drives the purge, so replicas never race each
//! other, and each replica deletes a key only if its stored digest is still
//! the agreed one, checked by the storage writer that makes every write.
//!
//! # Where it sits
//!
//! `Repair` is shared by the gRPC handlers (the Internal RPCs that answer
//! peers, and `Admin.StartRepair` / `Admin.MerkleRoots`) and by the
//! "anti-entropy" worker ([`AntiEntropyWorker`]). It uses the replica layer for
//! storage (scans, merges, the guarded purge) and the cluster view for the
//! layout, liveness and the transport.

mod exchange;
use ringkv_core::merkle;
mod pacing;
mod purge;
mod scan;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::Config;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::worker::{Step, Worker, WorkerHandle};
use ringkv_core::error::{Error, Result};

pub use merkle::{state_digest, ABSENT, LEAVES};

use pacing::Budget;

/// Most explicit keys one `KeyDigests` request may name: keeps the answer
/// (each key plus its digest) within one message whatever the key sizes.
pub const MAX_EXPLICIT_KEYS: usize = 10_000;

/// Errors kept in one [`RepairReport`]; the rest are only counted, so a
/// pass against a broken peer does not produce a giant admin reply.
pub const MAX_REPORTED_ERRORS: usize = 32;

/// Answers listing keys are kept under `limits.max_message_bytes()`
/// divided by this, leaving room for framing and for keys near the limit.
const REPLY_BUDGET_DIVISOR: usize = 2;

/// How much slower than the scan budget a peer's scan may be before the
/// RPC gives up: the peer's budget is shared with its own pass and with
/// its other replicas' requests.
const SCAN_TIMEOUT_FACTOR: f64 = 4.0;

/// The least time a peer gets for an RPC that makes it scan a partition.
/// The first request goes out before this node knows how many keys the
/// peer holds (a node that lost its data would otherwise give a full peer
/// only the time to scan nothing); a peer that hangs costs this once, until
/// the failure detector stops the pass from asking it.
const MIN_SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// The most time a scanning RPC is given, whatever key count it is sized
/// for.
const MAX_SCAN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Merkle summary of one partition on a node: [`LEAVES`] leaves.
pub use ringkv_peer::MerkleSummary;

/// What a repair pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Partitions examined.
    pub partitions: u32,
    /// Partitions where at least one replica differed from this node.
    pub partitions_differing: u32,
    /// Keys where this node or a peer changed.
    pub keys_repaired: u64,
    /// Keys whose tombstones were purged on every replica.
    pub tombstones_purged: u64,
    /// What failed, per partition and peer (at most
    /// [`MAX_REPORTED_ERRORS`]).
    pub errors: Vec<String>,
}

/// Anti-entropy and tombstone purge for this node.
pub struct Repair {
    /// Storage: scans, merges and the guarded purge.
    replica: Arc<Replica>,
    /// Layout, liveness, addresses and the transport to peers.
    cluster: Arc<Cluster>,
    /// `repair.*` tunables, `limits` for message sizes and timeouts.
    config: Arc<Config>,
    /// Sibling-cap drops caused by merges done here.
    metrics: Arc<Metrics>,
    /// The node-wide scan budget, shared by this node's passes and by the
    /// scans it runs for peers. A std mutex: held for a few instructions,
    /// never across an await.
    budget: Mutex<Budget>,
    /// Serialises purge steps, so a pass started by an operator and the
    /// worker's pass never drive the purge of one key at the same time
    /// (the second would see the first's purge as a failure and undo it).
    purge_lock: tokio::sync::Mutex<()>,
    /// The worker's handle once [`Repair::worker`] built it: passes started by
    /// an operator count in the worker's status too.
    handle: OnceLock<Arc<WorkerHandle>>,
}

impl Repair {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Arc<Repair> {
        let budget = Mutex::new(Budget::new(config.repair.keys_per_second));
        Arc::new(Repair {
            replica,
            cluster,
            config,
            metrics,
            budget,
            purge_lock: tokio::sync::Mutex::new(()),
            handle: OnceLock::new(),
        })
    }

    /// This node's Merkle summary of a partition (answers
    /// `Internal.MerkleLeaves`).
    pub async fn merkle_leaves(&self, partition: u32) -> Result<MerkleSummary> {
        self.check_partition(partition)?;
        self.summarize(partition).await
    }

    /// This node's (key, digest) pairs (answers `Internal.KeyDigests`):
    /// first each of `keys` in order, with [`ABSENT`] for keys not held
    /// here, then the keys of partition `partition` in the given `leaves`.
    /// The leaf listing is kept within the reply budget: when it does not
    /// fit, it is a prefix of whole leaves (see `merkle::DigestCollector`).
    pub async fn key_digests(
        &self,
        partition: u32,
        leaves: Vec<u32>,
        keys: Vec<Bytes>,
    ) -> Result<Vec<(Bytes, u64)>> {
        self.check_partition(partition)?;
        if keys.len() > MAX_EXPLICIT_KEYS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_EXPLICIT_KEYS} keys per digest request, got {}",
                keys.len()
            )));
        }
        let mut digests = self.stored_digests(keys).await?;
        digests.extend(
            self.leaf_digests(partition, &leaves, self.reply_budget())
                .await?,
        );
        Ok(digests)
    }

    /// Deletes the given keys where the stored digest still matches and
    /// only tombstones are held (answers `Internal.Purge`). Returns how
    /// many were deleted.
    pub async fn purge(&self, keys: Vec<(Bytes, u64)>) -> Result<u32> {
        let purged = self.purge_local(keys).await?;
        Ok(u32::try_from(purged.len()).unwrap_or(u32::MAX))
    }

    /// Runs one pass now, over `partition` or over every partition this
    /// node replicates (answers `Admin.StartRepair`).
    pub async fn repair_now(&self, partition: Option<u32>) -> Result<RepairReport> {
        self.pass(partition).await
    }

    /// (partition, summary) for every partition this node replicates in the
    /// current layout (answers `Admin.MerkleRoots`): replicas that converged
    /// report equal roots.
    pub async fn merkle_roots(&self) -> Result<Vec<(u32, MerkleSummary)>> {
        let layout = self.cluster.layout().ok_or_else(no_layout)?;
        let mut roots = Vec::new();
        for partition in layout.partitions_of(self.cluster.me()) {
            roots.push((partition, self.summarize(partition).await?));
        }
        Ok(roots)
    }

    /// The "anti-entropy" worker on this `Repair`; from now on passes
    /// started by an operator count in its status too.
    pub fn worker(self: Arc<Self>, handle: Arc<WorkerHandle>) -> AntiEntropyWorker {
        // A second worker on the same Repair keeps reporting to the first
        // handle; the server starts exactly one.
        let _ = self.handle.set(handle.clone());
        let enabled = self.config.repair.anti_entropy;
        handle.set("enabled", u64::from(enabled));
        let rest = Duration::from_millis(self.config.repair.interval_ms.max(1));
        AntiEntropyWorker {
            repair: self,
            enabled,
            rest,
        }
    }

    fn check_partition(&self, partition: u32) -> Result<()> {
        let q = self.config.cluster.partitions;
        if partition >= q {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} out of range: the cluster has {q}"
            )));
        }
        Ok(())
    }

    /// Charges `keys` to the scan budget; returns how long to wait.
    fn charge(&self, keys: u64) -> Duration {
        self.count("keys_scanned", keys);
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .charge(keys, Instant::now())
    }

    /// Byte budget of an answer that lists keys.
    fn reply_budget(&self) -> usize {
        self.config.limits.max_message_bytes() / REPLY_BUDGET_DIVISOR
    }

    /// Deadline of an RPC that does no scan.
    fn rpc_timeout(&self) -> Duration {
        self.config.limits.request_timeout()
    }

    /// Deadline of an RPC that makes the peer scan about `keys` keys.
    fn scan_timeout(&self, keys: u64) -> Duration {
        let scan = keys as f64 / self.config.repair.keys_per_second.max(1) as f64;
        // `keys` may come from a peer: an absurd count must not overflow.
        let scan = Duration::try_from_secs_f64(scan * SCAN_TIMEOUT_FACTOR)
            .unwrap_or(MAX_SCAN_TIMEOUT)
            .min(MAX_SCAN_TIMEOUT);
        self.rpc_timeout()
            .saturating_add(scan)
            .max(MIN_SCAN_TIMEOUT)
    }

    /// Whether a key received from a peer is one this node would accept.
    fn valid_key(&self, key: &[u8]) -> bool {
        !key.is_empty() && key.len() <= self.config.limits.max_key_bytes
    }

    /// Adds to a worker counter (once the worker runs).
    fn count(&self, counter: &str, n: u64) {
        if let Some(handle) = self.handle.get() {
            if n > 0 {
                handle.add(counter, n);
            }
        }
    }

    /// Records a failure in the report and the worker's error count.
    fn note_error(&self, report: &mut RepairReport, message: String) {
        match self.handle.get() {
            Some(handle) => handle.error(message.clone()),
            None => tracing::warn!("{message}"),
        }
        if report.errors.len() < MAX_REPORTED_ERRORS {
            report.errors.push(message);
        } else if report.errors.len() == MAX_REPORTED_ERRORS {
            report.errors.push("more errors omitted".to_string());
        }
    }

    /// One partition's results into the worker's counters, as soon as it is
    /// done: a pass over many partitions shows progress while it runs.
    fn record_partition(&self, before: &RepairReport, after: &RepairReport) {
        self.count("partitions_checked", 1);
        self.count(
            "partitions_differing",
            u64::from(after.partitions_differing - before.partitions_differing),
        );
        self.count("keys_repaired", after.keys_repaired - before.keys_repaired);
        self.metrics
            .anti_entropy_repaired(after.keys_repaired - before.keys_repaired);
        self.count(
            "tombstones_purged",
            after.tombstones_purged - before.tombstones_purged,
        );
    }

    /// A finished pass into the worker's counters.
    fn record_pass(&self, took: Duration) {
        self.count("passes", 1);
        if let Some(handle) = self.handle.get() {
            handle.set("last_pass_ms", took.as_millis() as u64);
        }
    }
}

/// The anti-entropy worker: a pass over every partition this node
/// replicates, then `repair.interval_ms` of rest. The first pass waits one
/// interval, so a starting node has learnt who is alive before it
/// compares. With `repair.anti_entropy = false` it never steps (passes can
/// still be started by an operator).
pub struct AntiEntropyWorker {
    repair: Arc<Repair>,
    /// `repair.anti_entropy`.
    enabled: bool,
    /// `repair.interval_ms`, at least 1 ms.
    rest: Duration,
}

impl Worker for AntiEntropyWorker {
    async fn work(&mut self) -> Result<Step> {
        if self.repair.cluster.layout().is_some() {
            self.repair.pass(None).await?;
        }
        Ok(Step::Idle)
    }

    async fn wait(&mut self) {
        if self.enabled {
            tokio::time::sleep(self.rest).await;
        } else {
            std::future::pending().await
        }
    }
}

fn no_layout() -> Error {
    Error::FailedPrecondition(
        "this node holds no layout yet (the cluster is forming); retry once it has formed"
            .to_string(),
    )
}
