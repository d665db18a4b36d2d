//! The storage layer: one node's local, durable key-value engine.
//!
//! Everything a replica keeps on disk goes through the [`Engine`] trait: the
//! version sets of the keys it holds, the hints it keeps for unreachable
//! replicas, and its own metadata. The replica layer calls the engine after
//! the coordinator has picked the preference list, so by the time bytes get
//! here all distribution decisions are made; storage only has to keep them
//! and give them back.
//!
//! # Namespaces
//!
//! An engine has three column families ([`Cf`]), each its own ordered
//! namespace of byte keys:
//!
//! - `data`: the stored version set of each user key. The storage key is the
//!   partition number as 4 big-endian bytes followed by the user key
//!   ([`data_key`]). Big-endian makes byte order equal numeric order, so all
//!   keys of one partition are contiguous and [`partition_range`] turns
//!   "everything in partition p" (what anti-entropy and transfers need) into
//!   one range scan.
//! - `hints`: writes held for a replica that was down (hinted handoff).
//! - `meta`: the node's own small records (identity, layout, and so on).
//!
//! Values are opaque here; the encodings above this layer carry their own
//! format version byte and decide what is corrupt.
//!
//! # Durability
//!
//! Every write first goes to a write-ahead log. [`SyncMode`] decides how far
//! it is pushed before [`Engine::write`] returns, i.e. before a replica may
//! acknowledge it:
//!
//! - `always`: the WAL is fsynced first. Concurrent writers share one fsync
//!   (RocksDB group commit), so throughput under load stays reasonable.
//! - `periodic` (default): the WAL is written to the OS before returning and
//!   a background thread fsyncs it every `sync_interval`. A process crash
//!   loses nothing; a machine crash loses at most one interval, which the
//!   other replicas cover.
//! - `never`: the WAL is written, fsync is left to the OS.
//!
//! [`Engine::flush`] makes everything durable and is called at shutdown.
//!
//! A failed WAL write or fsync is final ([`health`]): the engine refuses
//! every later write and flush until the node restarts, and never retries
//! the fsync, because after a failed fsync what is on disk is unknown.
//!
//! # Invariants
//!
//! - A [`WriteBatch`] is applied atomically: after a crash either all of its
//!   operations are visible or none are, across column families.
//! - Scans return keys in ascending byte order within `[start, end)`.
//! - An empty value is a value: it reads back as `Some(vec![])`, never as
//!   absent.
//! - Malformed stored keys give [`Error::Corrupt`], never a panic.
//!
//! Engines are synchronous. Callers on the async runtime go through a
//! thread of their own or `tokio::task::spawn_blocking` (the replica layer
//! does this: its storage writer, and the blocking pool for reads that need
//! the disk), so a slow fsync never stalls the runtime. Only
//! [`Engine::multi_get_cached`], which never waits on the disk, may run on
//! the runtime itself.
//!
//! Two engines implement the trait: [`RocksEngine`], the real one, and
//! [`MemoryEngine`], for tests and for nodes that need no persistence. Both
//! pass the same test suite (`tests.rs`).

pub mod health;
mod memory;
mod rocks;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use health::StorageHealth;
pub use memory::MemoryEngine;
pub use rocks::RocksEngine;

use ringkv_core::error::{Error, Result};

/// How often the `periodic` sync mode fsyncs the WAL: short enough that a
/// machine crash loses little, long enough that fsyncs stay cheap.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Default size of the block cache shared by the `data` column family.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Default bloom filter density on `data`: about 1% false positives, so a
/// read of a missing key almost never touches a data block.
pub const DEFAULT_BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Default memtable size of the `data` column family.
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// Bloom densities above this buy nothing measurable and are almost
/// certainly a typo in the configuration.
pub const MAX_BLOOM_BITS_PER_KEY: f64 = 64.0;

/// Length of the partition prefix of a `data` key.
pub const PARTITION_PREFIX_LEN: usize = std::mem::size_of::<u32>();

/// A column family: an independent, ordered namespace of keys within one
/// engine. Batches may span several.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Cf {
    /// Version sets of user keys, keyed by [`data_key`].
    Data,
    /// Hints held for unreachable replicas.
    Hints,
    /// The node's own metadata.
    Meta,
}

impl Cf {
    /// Every column family, in a fixed order (engines index by it).
    pub const ALL: [Cf; 3] = [Cf::Data, Cf::Hints, Cf::Meta];

    /// The name the column family has on disk; changing one orphans the
    /// data stored under the old name.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Hints => "hints",
            Cf::Meta => "meta",
        }
    }

    /// Position in [`Cf::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Cf::Data => 0,
            Cf::Hints => 1,
            Cf::Meta => 2,
        }
    }
}

/// How hard a write is pushed to disk before it is acknowledged. See the
/// module documentation for what each mode risks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Fsync the WAL before returning (RocksDB groups concurrent syncs).
    Always,
    /// WAL written before returning, fsynced every interval by a background
    /// thread.
    #[default]
    Periodic,
    /// WAL written, fsync left to the OS.
    Never,
}

/// Tunables of an engine. Only [`RocksEngine`] uses them; the memory engine
/// has nothing to tune.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageOptions {
    /// Durability of each write before it is acknowledged.
    pub sync: SyncMode,
    /// Period of the WAL fsync in [`SyncMode::Periodic`]; the most a
    /// machine crash can lose. Ignored by the other modes.
    pub sync_interval: Duration,
    /// Bytes of uncompressed blocks kept in memory for reads of `data`.
    pub block_cache_bytes: usize,
    /// Bloom filter bits per key on `data`; more bits, fewer wasted reads
    /// for missing keys, more memory.
    pub bloom_bits_per_key: f64,
    /// Memtable size of `data`: larger absorbs more writes before a flush,
    /// at the cost of memory and WAL replay time after a crash.
    pub write_buffer_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::default(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            bloom_bits_per_key: DEFAULT_BLOOM_BITS_PER_KEY,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
        }
    }
}

impl StorageOptions {
    /// Rejects settings that would make the engine misbehave rather than
    /// merely run slowly: a zero sync interval would spin the sync thread,
    /// and a non-finite bloom density is meaningless. Called by
    /// [`RocksEngine::open`]; configuration loading may call it earlier.
    pub fn validate(&self) -> Result<()> {
        if self.sync == SyncMode::Periodic && self.sync_interval.is_zero() {
            return Err(Error::Config(
                "storage.sync_interval must be greater than zero when storage.sync is periodic"
                    .to_string(),
            ));
        }
        if !self.bloom_bits_per_key.is_finite()
            || self.bloom_bits_per_key <= 0.0
            || self.bloom_bits_per_key > MAX_BLOOM_BITS_PER_KEY
        {
            return Err(Error::Config(format!(
                "storage.bloom_bits_per_key must be in (0, {MAX_BLOOM_BITS_PER_KEY}], got {}",
                self.bloom_bits_per_key
            )));
        }
        if self.write_buffer_bytes == 0 {
            return Err(Error::Config(
                "storage.write_buffer_bytes must be greater than zero".to_string(),
            ));
        }
        Ok(())
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`, replacing any previous value.
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes `key`; removing an absent key is not an error.
    Delete { cf: Cf, key: Vec<u8> },
}

/// An atomic group of writes: all or nothing. Operations apply in the order
/// they were added, so a later operation on the same key wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Kept private so the only way in is through `put` and `delete`.
    ops: Vec<BatchOp>,
    /// Fsync the WAL before returning whatever `storage.sync` says: for the
    /// few writes that later writes' safety rests on (the clock floor).
    durable: bool,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `key` = `value` in `cf`.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete of `key` in `cf`.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.into(),
        });
    }

    /// Makes the write durable (WAL fsynced) before it returns, in every
    /// sync mode.
    pub fn set_durable(&mut self) {
        self.durable = true;
    }

    /// Whether [`set_durable`](Self::set_durable) was called.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in application order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
}

/// Synchronous engine interface.
///
/// Callers on the async runtime must run these through
/// `tokio::task::spawn_blocking` or a thread of their own (done by the
/// replica layer, not here): any call may wait on disk, except
/// [`Engine::multi_get_cached`], which exists so that reads served from
/// memory need no thread hand-over.
pub trait Engine: Send + Sync + 'static {
    /// The value of `key` in `cf`, or `None` if absent.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The values of `keys` in `cf`, in the order of `keys`. Cheaper than a
    /// loop of `get` because the engine can batch the lookups.
    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>>;

    /// [`Self::multi_get`] from memory alone (memtables and the engine's
    /// caches), or `None` when any of the keys would have to be read from
    /// disk. Never waits on the disk, so it may run on the async runtime;
    /// on `None` the caller asks [`Self::multi_get`] from a blocking
    /// thread. An engine that cannot tell answers `None` (the default).
    fn multi_get_cached(&self, _cf: Cf, _keys: &[Vec<u8>]) -> Result<Option<Vec<Option<Vec<u8>>>>> {
        Ok(None)
    }

    /// Atomically applies the batch; durability per [`SyncMode`].
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Whether [`Self::write`] may wait on a disk (the default). The
    /// replica layer gives such an engine a writer thread of its own; it
    /// writes to one that never waits (the memory engine) from the caller,
    /// so tests on the memory engine with tokio's paused clock see storage
    /// as instant, as they did on the blocking pool.
    fn writes_wait(&self) -> bool {
        true
    }

    /// Applies the batch now if that needs no wait on the disk: the write
    /// does not fsync (`storage.sync` is not `always`, the batch is not
    /// durable) and the engine is not holding writes back to let
    /// compaction catch up. `Ok(false)`: nothing was applied, and the
    /// caller writes with [`Self::write`] from a thread that may block.
    /// Lets the replica layer write from the async runtime when its writer
    /// thread is idle, saving the thread hand-over (the default declines).
    fn write_now(&self, _batch: &WriteBatch) -> Result<bool> {
        Ok(false)
    }

    /// Whether [`Self::write_now`] can ever succeed: asked once, so a
    /// caller under `always` never computes a write only to hand it over.
    fn writes_can_be_immediate(&self) -> bool {
        false
    }

    /// Keys in `[start, end)` in ascending byte order (`end` `None` = to the
    /// end of the CF), at most `limit` of them. Callers page through large
    /// ranges by restarting just after the last key returned.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Makes everything written so far durable (fsync the WAL, then flush
    /// memtables so a restart need not replay it). Called at shutdown.
    fn flush(&self) -> Result<()>;

    /// Approximate bytes stored (for metrics); never exact, never an error.
    fn approximate_size_bytes(&self) -> u64;

    /// Short engine name for logs and status: "rocksdb" or "memory".
    fn name(&self) -> &'static str;

    /// Whether the engine's storage is still trusted; once a WAL write or
    /// sync failed, writes and flushes are refused ([`health`]).
    fn health(&self) -> &StorageHealth;
}

/// Storage key of a user key in the data CF: partition (u32 big-endian) ‖
/// user key, so a partition's keys are contiguous.
pub fn data_key(partition: u32, user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(PARTITION_PREFIX_LEN + user_key.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(user_key);
    key
}

/// Inverse of [`data_key`]: the partition and the user key of a stored key.
/// [`Error::Corrupt`] if it is shorter than the partition prefix, which only
/// a damaged store or a bug can produce.
pub fn split_data_key(stored: &[u8]) -> Result<(u32, &[u8])> {
    match stored.split_first_chunk::<PARTITION_PREFIX_LEN>() {
        Some((prefix, user_key)) => Ok((u32::from_be_bytes(*prefix), user_key)),
        None => Err(Error::Corrupt(format!(
            "data key of {} bytes is shorter than its {PARTITION_PREFIX_LEN}-byte partition prefix",
            stored.len()
        ))),
    }
}

/// `[start, end)` bounds covering exactly one partition in the data CF, for
/// [`Engine::scan`]. `end` is `None` for `u32::MAX`, whose range runs to the
/// end of the column family.
pub fn partition_range(partition: u32) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = partition.to_be_bytes().to_vec();
    let end = partition
        .checked_add(1)
        .map(|next| next.to_be_bytes().to_vec());
    (start, end)
}
