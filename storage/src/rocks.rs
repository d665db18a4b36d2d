//! The RocksDB engine: the node's durable store.
//!
//! One RocksDB database per node, with the column families `data`, `hints`
//! and `meta` (see [`Cf`]). They are created on first open, so a fresh
//! directory and an existing one open the same way.
//!
//! Tuning follows the access pattern. `data` takes the point reads of every
//! get, many of them for keys this replica does not have, so it gets a bloom
//! filter on every level (no `optimize_filters_for_hits`: misses are common
//! here) and a shared LRU block cache. `hints` and `meta` are small or
//! short-lived and keep RocksDB's defaults. Everything is LZ4-compressed, the
//! only codec this build links.
//!
//! The write-ahead log is always on. A write returns once its batch is in the
//! WAL (in the OS page cache), so a process crash never loses an
//! acknowledged write; whether it is also on the platter is the
//! [`SyncMode`]: fsynced per write (`always`), by the `ringkv-wal-sync`
//! thread every interval (`periodic`), or by the OS (`never`).
//!
//! A write or sync that fails marks the engine failed ([`StorageHealth`]):
//! from then on writes and flushes are refused and the sync thread stops
//! syncing, rather than retry an fsync whose earlier failure may already
//! have cost data that a "successful" retry would hide.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::{
    properties, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    Direction, ErrorKind, FlushOptions, IteratorMode, Options, ReadOptions, ReadTier, WriteOptions,
    DB,
};

use super::{BatchOp, Cf, Engine, StorageHealth, StorageOptions, SyncMode, WriteBatch};
use ringkv_core::error::{Error, Result};

/// The only compression codec compiled into this build (rocksdb feature
/// `lz4`); fast enough that it costs less CPU than it saves in I/O.
const COMPRESSION: DBCompressionType = DBCompressionType::Lz4;

/// RocksDB informational log files (`LOG.old.*`) kept in the data directory;
/// without a cap they accumulate on every restart.
const INFO_LOG_FILES_KEPT: usize = 5;

/// Total WAL size, in `data` write buffers, past which RocksDB flushes the
/// column families that keep old WAL files alive.
const WAL_LIMIT_WRITE_BUFFERS: usize = 2;

/// Name of the thread that fsyncs the WAL in [`SyncMode::Periodic`], as it
/// appears in `top -H`, debuggers and panics.
const WAL_SYNC_THREAD_NAME: &str = "ringkv-wal-sync";

/// An [`Engine`] backed by RocksDB.
pub struct RocksEngine {
    /// The periodic WAL sync thread, if the mode has one. Stopped and
    /// joined first thing in `drop`, so it never outlives the engine.
    syncer: Option<WalSyncer>,
    /// Shared with the sync thread, which must be able to call `flush_wal`
    /// while requests use the database.
    db: Arc<DB>,
    /// Built once from the sync mode; decides whether each write fsyncs.
    write_opts: WriteOptions,
    /// Fsyncs whatever the mode: for batches marked durable.
    durable_opts: WriteOptions,
    /// [`Engine::write_now`]'s: no fsync, and a write RocksDB would delay
    /// or stop (a write stall) fails with `Incomplete` instead of waiting.
    /// `None` under `always`, where every write fsyncs.
    immediate_opts: Option<WriteOptions>,
    /// Whether a WAL write or sync has failed. Shared with the sync
    /// thread, which reports its failures here.
    health: Arc<StorageHealth>,
    /// Reads from the memtables and the block cache only: a lookup that
    /// would need the disk fails with `Incomplete` instead of waiting.
    cached_reads: ReadOptions,
    /// Whether writes themselves sync the WAL (every mode but
    /// `periodic`, where the sync thread does), which decides where the
    /// test fault point strikes.
    writes_sync: bool,
}

/// A RocksDB error as the storage error it is (the core's error type knows
/// no engine, so the conversion lives here).
fn db_error(e: rocksdb::Error) -> Error {
    Error::Storage(e.into_string())
}

impl RocksEngine {
    /// Opens (creating if missing) the database at `path`. Fails, without
    /// panicking, if the path is not a usable directory, is locked by another
    /// process, or holds a database RocksDB cannot read.
    pub fn open(path: &Path, opts: &StorageOptions) -> Result<RocksEngine> {
        opts.validate()?;

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_keep_log_file_num(INFO_LOG_FILES_KEPT);
        // A WAL file is deleted only once every column family with writes
        // in it has flushed them. `meta` and `hints` take few writes and
        // would hold the oldest file (and every newer one) until RocksDB's
        // default limit, four times all memtable budgets (about 2 GiB): a
        // node that crashed would replay all of it at start. Past this
        // limit RocksDB flushes the column families holding the oldest WAL.
        db_opts.set_max_total_wal_size((WAL_LIMIT_WRITE_BUFFERS * opts.write_buffer_bytes) as u64);
        // The implicit `default` column family is unused, but RocksDB always
        // opens it; compress it like the rest.
        db_opts.set_compression_type(COMPRESSION);

        let descriptors = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(cf, opts)));
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors).map_err(|e| {
            Error::Storage(format!(
                "cannot open RocksDB at {}: {}",
                path.display(),
                e.into_string()
            ))
        })?;
        let db = Arc::new(db);

        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(opts.sync == SyncMode::Always);
        let mut durable_opts = WriteOptions::default();
        durable_opts.set_sync(true);
        let immediate_opts = (opts.sync != SyncMode::Always).then(|| {
            let mut immediate = WriteOptions::default();
            immediate.set_sync(false);
            immediate.set_no_slowdown(true);
            immediate
        });

        let mut cached_reads = ReadOptions::default();
        cached_reads.set_read_tier(ReadTier::BlockCache);

        let health = Arc::new(StorageHealth::new());
        let syncer = match opts.sync {
            SyncMode::Periodic => Some(WalSyncer::start(
                Arc::clone(&db),
                Arc::clone(&health),
                opts.sync_interval,
            )?),
            SyncMode::Always | SyncMode::Never => None,
        };

        tracing::info!(path = %path.display(), sync = ?opts.sync, "opened RocksDB storage");
        Ok(RocksEngine {
            syncer,
            db,
            write_opts,
            durable_opts,
            immediate_opts,
            cached_reads,
            health,
            writes_sync: opts.sync != SyncMode::Periodic,
        })
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Checks the engine may write (and strikes the test fault point
    /// where writes sync), and builds RocksDB's batch.
    fn prepare(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch> {
        self.health.check()?;
        if self.writes_sync {
            if let Some(what) = self.health.take_injected() {
                self.health.fail(what.clone());
                return Err(Error::Storage(what));
            }
        }
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    rocks_batch.put_cf(self.handle(*cf)?, key, value)
                }
                BatchOp::Delete { cf, key } => rocks_batch.delete_cf(self.handle(*cf)?, key),
            }
        }
        Ok(rocks_batch)
    }

    /// A failed WAL write: whether the batch is in the WAL, and whether the
    /// WAL is on disk, is now unknown, so nothing written from here on is
    /// trusted.
    fn write_failed(&self, e: rocksdb::Error) -> Error {
        let what = format!("WAL write failed: {}", e.into_string());
        self.health.fail(what.clone());
        Error::Storage(what)
    }

    /// The handle of a column family. All of them are created at open, so a
    /// missing one is a bug, reported rather than panicked on.
    fn handle(&self, cf: Cf) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| Error::Internal(format!("column family {} is not open", cf.name())))
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        // Join the sync thread before the database goes: the thread holds
        // its own `Arc`, and the database should close here, on the owner's
        // thread, not whenever the sync thread happens to finish.
        drop(self.syncer.take());
    }
}

/// Options of one column family; see the module documentation for why each
/// family is tuned the way it is.
fn cf_options(cf: Cf, opts: &StorageOptions) -> Options {
    let mut cf_opts = Options::default();
    cf_opts.set_compression_type(COMPRESSION);
    if cf == Cf::Data {
        let mut table = BlockBasedOptions::default();
        // The cache is kept alive by the options (and then the database)
        // that reference it; no need to hold it here.
        table.set_block_cache(&Cache::new_lru_cache(opts.block_cache_bytes));
        // Full (not block-based) filters: one probe per SST file.
        table.set_bloom_filter(opts.bloom_bits_per_key, false);
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size(opts.write_buffer_bytes);
    }
    cf_opts
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.handle(cf)?, key).map_err(db_error)
    }

    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .batched_multi_get_cf(self.handle(cf)?, keys, false)
            .into_iter()
            .map(|value| Ok(value.map_err(db_error)?.map(|slice| slice.to_vec())))
            .collect()
    }

    fn multi_get_cached(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Option<Vec<Option<Vec<u8>>>>> {
        // One `Get` per key: RocksDB's `MultiGet` (11.8, bundled here) reads
        // table files even under `ReadTier::BlockCache`, where `Get`
        // answers `Incomplete` (`rocks_cached_lookup_declines_what_only_the_disk_holds`).
        let handle = self.handle(cf)?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            match self.db.get_pinned_cf_opt(handle, key, &self.cached_reads) {
                Ok(value) => values.push(value.map(|slice| slice.to_vec())),
                Err(e) if e.kind() == ErrorKind::Incomplete => return Ok(None),
                Err(e) => return Err(db_error(e)),
            }
        }
        Ok(Some(values))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let rocks_batch = self.prepare(&batch)?;
        let opts = if batch.is_durable() {
            &self.durable_opts
        } else {
            &self.write_opts
        };
        self.db
            .write_opt(rocks_batch, opts)
            .map_err(|e| self.write_failed(e))
    }

    fn write_now(&self, batch: &WriteBatch) -> Result<bool> {
        let Some(opts) = self.immediate_opts.as_ref().filter(|_| !batch.is_durable()) else {
            return Ok(false);
        };
        let rocks_batch = self.prepare(batch)?;
        match self.db.write_opt(rocks_batch, opts) {
            Ok(()) => Ok(true),
            // A write stall: RocksDB applied nothing.
            Err(e) if e.kind() == ErrorKind::Incomplete => Ok(false),
            Err(e) => Err(self.write_failed(e)),
        }
    }

    fn writes_can_be_immediate(&self) -> bool {
        self.immediate_opts.is_some()
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 || end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let mut read_opts = ReadOptions::default();
        if let Some(end) = end {
            // Bounding the iterator (not just stopping early) lets RocksDB
            // skip files and tombstones beyond the range.
            read_opts.set_iterate_upper_bound(end);
        }
        let iter = self.db.iterator_cf_opt(
            self.handle(cf)?,
            read_opts,
            IteratorMode::From(start, Direction::Forward),
        );
        iter.take(limit)
            .map(|item| {
                let (key, value) = item.map_err(db_error)?;
                Ok((key.into_vec(), value.into_vec()))
            })
            .collect()
    }

    fn flush(&self) -> Result<()> {
        // After a failed sync a successful one proves nothing: refuse.
        self.health.check()?;
        // The fsynced WAL alone makes the writes durable; flushing the
        // memtables as well spares the next start a long WAL replay.
        self.db.flush_wal(true).map_err(|e| {
            let what = format!("WAL sync failed: {}", e.into_string());
            self.health.fail(what.clone());
            Error::Storage(what)
        })?;
        let handles = Cf::ALL
            .iter()
            .map(|&cf| self.handle(cf))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .flush_cfs_opt(&handles, &FlushOptions::default())
            .map_err(db_error)?;
        Ok(())
    }

    fn approximate_size_bytes(&self) -> u64 {
        let mut total = 0;
        for cf in Cf::ALL {
            let Ok(handle) = self.handle(cf) else {
                continue;
            };
            for property in [
                properties::TOTAL_SST_FILES_SIZE,
                properties::CUR_SIZE_ALL_MEM_TABLES,
            ] {
                // A metric is not worth an error: count what can be read.
                if let Ok(Some(bytes)) = self.db.property_int_value_cf(handle, property) {
                    total += bytes;
                }
            }
        }
        total
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn health(&self) -> &StorageHealth {
        &self.health
    }
}

/// The background thread of [`SyncMode::Periodic`]: fsyncs the WAL every
/// interval until dropped. Dropping it stops and joins the thread, promptly
/// (the thread waits on a channel, not a sleep).
struct WalSyncer {
    /// Dropping the sender is the stop signal: the thread sees the channel
    /// disconnect and exits.
    stop: Option<mpsc::Sender<()>>,
    /// Joined on drop so the thread never outlives the engine.
    thread: Option<JoinHandle<()>>,
}

impl WalSyncer {
    fn start(db: Arc<DB>, health: Arc<StorageHealth>, interval: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(WAL_SYNC_THREAD_NAME.to_string())
            .spawn(move || {
                // Anything but a timeout (the sender dropped) means stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    sync_wal(&db, &health);
                }
                // One last sync so a clean stop loses nothing, even if the
                // owner never called `flush`.
                sync_wal(&db, &health);
            })
            .map_err(|e| Error::Internal(format!("cannot start {WAL_SYNC_THREAD_NAME}: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Fsyncs the WAL, unless the storage has already failed. A failure is
/// final: it marks the engine failed and is never retried, because a
/// retry that succeeds says nothing about the writes the failed one lost
/// (see [`StorageHealth`]).
fn sync_wal(db: &DB, health: &StorageHealth) {
    if health.check().is_err() {
        return;
    }
    let failed = match health.take_injected() {
        Some(what) => Some(what),
        None => db
            .flush_wal(true)
            .err()
            .map(|e| format!("periodic WAL sync failed: {}", e.into_string())),
    };
    if let Some(what) = failed {
        health.fail(what);
    }
}

impl Drop for WalSyncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("{WAL_SYNC_THREAD_NAME} thread panicked");
            }
        }
    }
}
