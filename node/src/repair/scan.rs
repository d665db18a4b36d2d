//! Local scans of one partition: the Merkle summary, the (key, digest)
//! listing of chosen leaves, and the tombstones old enough to purge.
//!
//! A partition's keys are contiguous in the `data` column family, so every
//! question anti-entropy asks about a partition is one range scan, walked in
//! chunks of [`SCAN_CHUNK_KEYS`] on the blocking pool. Between chunks the
//! walk charges the keys it read to the node-wide budget and pauses as
//! `pacing` says; the pause after the last chunk is left to the next scan
//! (the budget remembers the debt), so answering a peer about a small
//! partition is not delayed.
//!
//! **Rebuild on compare.** Summaries are not maintained on write; each
//! exchange rescans. Unpaced, a summary scan (read, digest, leaf hash) runs
//! at 0.4–1.7 million keys/s on RocksDB (data flushed to SSTables, 100-byte
//! values) and 0.9–3 million on the memory engine, measured on a shared
//! 2-core machine under load (`measure_scan_speed` in `tests.rs`); the
//! decode that spots purgeable tombstones, done only where this node
//! drives the purge, costs up to as much again. A 100 000-key partition is
//! thus 60–250 ms of one core, eight to thirty times faster than the
//! default budget of 50 000 keys/s lets it go: the budget, not the scan,
//! sets the pace, and keeping trees current on every write would tax the
//! put path for a saving anti-entropy would not feel. What it does cost:
//! each replica scans each of its partitions about N times per pass cycle
//! (its own pass, and once for each other replica's), so a node holding
//! K keys scans about N·K keys per cycle, K·N / `keys_per_second` seconds.

use bytes::Bytes;
use tokio::time::Instant;

use super::merkle::{state_digest, DigestCollector, TreeBuilder, ABSENT};
use super::pacing::pause_after;
use super::{MerkleSummary, Repair};
use ringkv_core::error::Result;
use ringkv_core::version::VersionSet;

/// Keys read per blocking call: large enough that the per-call overhead
/// vanishes, small enough (about 5 ms of the default budget) that pacing
/// is smooth and a chunk never holds a blocking thread for long.
pub const SCAN_CHUNK_KEYS: usize = 256;

/// Pauses shorter than this are skipped (the task only yields): tokio's
/// timer cannot sleep less than a millisecond, and the budget carries the
/// debt over to the next chunk anyway.
const MIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Most purge candidates one survey of a partition collects; the rest wait
/// for the next pass, so a mass delete is purged in bounded steps.
pub const MAX_PURGE_CANDIDATES: usize = 4096;

/// What a pass learns from one scan of a partition it replicates.
#[derive(Debug, Default)]
pub struct Survey {
    pub summary: MerkleSummary,
    /// Keys holding only tombstones older than the grace period, with
    /// their digests (at most [`MAX_PURGE_CANDIDATES`]).
    pub candidates: Vec<(Bytes, u64)>,
}

impl Repair {
    /// Walks `partition` in key order, calling `visit` with each key and
    /// its stored encoding. Returns the number of keys visited.
    async fn walk(&self, partition: u32, mut visit: impl FnMut(&Bytes, &[u8])) -> Result<u64> {
        let mut after = None;
        let mut total = 0u64;
        loop {
            let started = Instant::now();
            let chunk = self
                .replica
                .scan_partition(partition, after.take(), SCAN_CHUNK_KEYS)
                .await?;
            let took = started.elapsed();
            for (key, value) in &chunk {
                visit(key, value);
            }
            let n = chunk.len();
            total += n as u64;
            let wait = self.charge(n as u64);
            if n < SCAN_CHUNK_KEYS {
                break;
            }
            let pause = pause_after(wait, took);
            if pause >= MIN_PAUSE {
                tokio::time::sleep(pause).await;
            } else {
                tokio::task::yield_now().await;
            }
            after = chunk.into_iter().last().map(|(key, _)| key);
        }
        Ok(total)
    }

    /// The partition's Merkle summary as this node holds it now.
    pub(super) async fn summarize(&self, partition: u32) -> Result<MerkleSummary> {
        let mut tree = TreeBuilder::new();
        self.walk(partition, |key, value| tree.add(key, state_digest(value)))
            .await?;
        Ok(tree.finish())
    }

    /// The summary, plus (when `purge_older_than_ms` is set) the keys whose
    /// versions are all tombstones with the newest written before that
    /// unix time. Values that do not decode count in the summary (their
    /// bytes are what the peers compare) but are never purge candidates.
    pub(super) async fn survey(
        &self,
        partition: u32,
        purge_older_than_ms: Option<u64>,
    ) -> Result<Survey> {
        let mut tree = TreeBuilder::new();
        let mut candidates = Vec::new();
        self.walk(partition, |key, value| {
            let digest = state_digest(value);
            tree.add(key, digest);
            if let Some(limit) = purge_older_than_ms {
                if candidates.len() < MAX_PURGE_CANDIDATES && is_old_tombstone(value, limit) {
                    candidates.push((key.clone(), digest));
                }
            }
        })
        .await?;
        Ok(Survey {
            summary: tree.finish(),
            candidates,
        })
    }

    /// The (key, digest) pairs of the chosen leaves, within `budget` bytes
    /// (see [`DigestCollector`] for what is kept when they do not fit).
    pub(super) async fn leaf_digests(
        &self,
        partition: u32,
        leaves: &[u32],
        budget: usize,
    ) -> Result<Vec<(Bytes, u64)>> {
        if leaves.is_empty() {
            return Ok(Vec::new());
        }
        let mut collector = DigestCollector::new(leaves, budget, rand::random());
        self.walk(partition, |key, value| {
            collector.offer(key, state_digest(value))
        })
        .await?;
        Ok(collector.finish())
    }

    /// The digest of each key as stored here ([`ABSENT`] when not held),
    /// in the order given.
    pub(super) async fn stored_digests(&self, keys: Vec<Bytes>) -> Result<Vec<(Bytes, u64)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.replica.read_stored(keys.clone()).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| (key, value.as_deref().map_or(ABSENT, state_digest)))
            .collect())
    }
}

/// Whether a stored value holds only tombstones, the newest of them
/// written before `older_than_ms` (unix ms).
fn is_old_tombstone(value: &[u8], older_than_ms: u64) -> bool {
    match VersionSet::decode(value) {
        Ok(state) => {
            !state.is_empty()
                && state.all_tombstones()
                && state
                    .max_timestamp()
                    .is_some_and(|t| t.physical_ms() < older_than_ms)
        }
        Err(_) => false,
    }
}
