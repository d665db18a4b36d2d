//! Benchmarks of the storage engines: the cost of one replica's local write
//! and read of a key, below the network and the version layer.
//!
//! Every put a replica acknowledges is one [`Engine::write`] of a
//! [`WriteBatch`]; every get is one [`Engine::get`] in the `data` column
//! family. The benches time exactly those calls with 100-byte values under
//! keys built like the server builds them ([`data_key`] of the key's
//! partition), on:
//!
//! - [`MemoryEngine`]: the floor, an ordered map behind a lock;
//! - [`RocksEngine`] with `storage.sync = periodic` (the default: WAL written
//!   to the OS before returning, fsynced every 100 ms in the background);
//! - [`RocksEngine`] with `storage.sync = always` (WAL fsynced before every
//!   write returns). A single-threaded bench cannot show group commit, so
//!   this is the cost of one fsync per write; the ratio to `periodic` is the
//!   price of durable acknowledgements. On virtual disks fsync may be
//!   absorbed by the host cache and look far cheaper than on real hardware.
//!
//! Groups:
//!
//! - `put/<engine>/<ops>`: one batch of `ops` puts (1, as a replica writes a
//!   single key; 16, to show what batching amortises), overwriting keys of a
//!   fixed key space so the memory engine stays bounded and RocksDB sees
//!   overwrites as it would under a steady load.
//! - `get_hit/<engine>` and `get_miss/<engine>`: point reads of keys that
//!   exist and of keys that do not, after [`PRELOAD_KEYS`] keys were written
//!   and flushed. The flush moves RocksDB's data from the memtable into an
//!   SST file, so a hit goes through the block cache and a miss is answered
//!   by the bloom filter without touching a data block: the path a replica
//!   takes for the many keys it does not hold.
//!
//! Sync mode changes only writes, so reads are measured on the periodic
//! engine alone. Setup is kept small (tens of thousands of keys, written in
//! large batches so even `always` preloads with few fsyncs) because
//! `cargo test --release -p ringkv-benches --benches` runs every bench once
//! as a smoke test.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkv_core::ring::partition_of;
use ringkv_storage::{
    data_key, Cf, Engine, MemoryEngine, RocksEngine, StorageOptions, SyncMode, WriteBatch,
};
use tempfile::TempDir;

/// Size of every value: a small record, as in the YCSB-style runs of
/// `ringkv-bench` (its default `--value-size`).
const VALUE_BYTES: usize = 100;

/// Keys written before the read benches, and the key space puts cycle
/// over. Large enough that reads are spread over many blocks, small enough
/// that test mode sets it up in a fraction of a second.
const PRELOAD_KEYS: usize = 20_000;

/// Puts per batch while preloading: one fsync per batch keeps the `always`
/// engine's setup short.
const PRELOAD_BATCH: usize = 1_000;

/// Operations per write batch in the put benches.
const BATCH_SIZES: [usize; 2] = [1, 16];

/// Partitions of the ring the keys are spread over (the server's default Q).
const PARTITIONS: u32 = 256;

/// The engines benchmarked, each with a name for the report.
struct Subject {
    name: &'static str,
    engine: Box<dyn Engine>,
    /// Keeps the RocksDB directory alive; declared after `engine` so the
    /// database is closed before its directory is removed.
    _dir: Option<TempDir>,
}

fn memory() -> Subject {
    Subject {
        name: "memory",
        engine: Box::new(MemoryEngine::new()),
        _dir: None,
    }
}

fn rocks(name: &'static str, sync: SyncMode) -> Subject {
    let dir = tempfile::tempdir().expect("a temporary directory for RocksDB");
    let opts = StorageOptions {
        sync,
        ..StorageOptions::default()
    };
    let engine = RocksEngine::open(dir.path(), &opts).expect("opening RocksDB");
    Subject {
        name,
        engine: Box::new(engine),
        _dir: Some(dir),
    }
}

/// The storage key of user key number `i`, in the partition the ring puts
/// it in. `prefix` separates keys that exist from keys that do not.
fn stored_key(prefix: &str, i: usize) -> Vec<u8> {
    let user_key = format!("{prefix}{i:08}");
    data_key(
        partition_of(user_key.as_bytes(), PARTITIONS),
        user_key.as_bytes(),
    )
}

fn keys(prefix: &str) -> Vec<Vec<u8>> {
    (0..PRELOAD_KEYS).map(|i| stored_key(prefix, i)).collect()
}

/// A value that does not compress to nothing (LZ4 would flatter a constant
/// fill), different per key.
fn value_for(i: usize) -> Vec<u8> {
    (0..VALUE_BYTES)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(7919)) % 251) as u8)
        .collect()
}

/// Writes every key once, then flushes so reads come from an SST file.
fn preload(engine: &dyn Engine, keys: &[Vec<u8>]) {
    for (chunk_no, chunk) in keys.chunks(PRELOAD_BATCH).enumerate() {
        let mut batch = WriteBatch::new();
        for (j, key) in chunk.iter().enumerate() {
            batch.put(
                Cf::Data,
                key.clone(),
                value_for(chunk_no * PRELOAD_BATCH + j),
            );
        }
        engine.write(batch).expect("preload write");
    }
    engine.flush().expect("preload flush");
}

fn bench_put(c: &mut Criterion) {
    let keys = keys("key-");
    let value = value_for(0);
    let mut group = c.benchmark_group("put");
    for subject in [
        memory(),
        rocks("rocksdb_periodic", SyncMode::Periodic),
        rocks("rocksdb_always", SyncMode::Always),
    ] {
        for &ops in &BATCH_SIZES {
            group.throughput(Throughput::Elements(ops as u64));
            let mut next = 0;
            group.bench_with_input(BenchmarkId::new(subject.name, ops), &ops, |bench, &ops| {
                bench.iter(|| {
                    let mut batch = WriteBatch::new();
                    for _ in 0..ops {
                        next = (next + 1) % keys.len();
                        batch.put(Cf::Data, keys[next].clone(), value.clone());
                    }
                    subject.engine.write(batch).unwrap()
                })
            });
        }
    }
    group.finish();
}

fn bench_get(c: &mut Criterion) {
    let present = keys("key-");
    let absent = keys("missing-");
    for subject in [memory(), rocks("rocksdb", SyncMode::Periodic)] {
        preload(subject.engine.as_ref(), &present);
        for (group_name, keys, expect_found) in
            [("get_hit", &present, true), ("get_miss", &absent, false)]
        {
            // Checked once, outside the timed loop: a bench of the wrong
            // path would report plausible and meaningless numbers.
            let found = subject.engine.get(Cf::Data, &keys[0]).unwrap();
            assert_eq!(
                found.is_some(),
                expect_found,
                "{group_name} on {}",
                subject.name
            );
            let mut group = c.benchmark_group(group_name);
            group.throughput(Throughput::Elements(1));
            let mut next = 0;
            group.bench_function(subject.name, |bench| {
                bench.iter(|| {
                    next = (next + 1) % keys.len();
                    subject
                        .engine
                        .get(Cf::Data, black_box(&keys[next]))
                        .unwrap()
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench_put, bench_get);
criterion_main!(benches);
