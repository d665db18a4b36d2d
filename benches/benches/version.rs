//! Benchmarks of the pure version layer: the CPU cost ringkv pays per key on
//! every request before any byte reaches the network or the disk.
//!
//! Each put runs one [`VersionSet::write`] on the coordinator (after decoding
//! the stored set and the client's context) and one [`VersionSet::merge`] on
//! every other replica; each get merges up to N replies and encodes the
//! merged context. So the four groups below are the per-key overheads of the
//! data path:
//!
//! - `merge`: two replicas' states of a key with 1, 4 or 16 siblings each.
//!   `equal` is the common case (replicas agree; read repair finds nothing
//!   to do); `disjoint` is the worst case (each side holds siblings the other
//!   has never seen, so every version survives and the result doubles).
//! - `write`: a coordinator write. `blind` has no context (an ordinary
//!   overwrite); `with_context` supersedes one sibling out of 1, 4 or 16,
//!   as a client resolving after a read would when it saw only one of them.
//! - `context`: encode and decode of the opaque context handed to clients,
//!   with 3 entries (N = 3, every replica coordinated once) and 16.
//! - `set`: encode and decode of a stored version set holding 1, 4 or 16
//!   siblings of 100-byte values (what storage reads and writes per key).
//!
//! Sets are built once, outside the timed loop. Operations that mutate their
//! input clone it in criterion's untimed setup (`iter_batched`), so the
//! figures are the operation alone. `merge` is timed through `merged`, which
//! includes one clone, because that is how read paths call it.
//!
//! `cargo test --release -p ringkv-benches --benches` runs each benchmark
//! once as a smoke test; everything here is in memory and tiny.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ringkv_core::version::{NodeId, Timestamp, Value, VersionSet, VersionVector};

/// Sibling counts benchmarked: one (no concurrency), a few (a short
/// partition or a handful of concurrent clients) and many (a hot key
/// written blindly from several clients through different coordinators).
const SIBLING_COUNTS: [usize; 3] = [1, 4, 16];

/// Context sizes benchmarked: N = 3 is the default replication, so a key
/// whose every replica coordinated a write has 3 entries; 16 stands for a
/// key that lived through several membership changes.
const CONTEXT_ENTRIES: [usize; 2] = [3, 16];

/// Size of every value, matching the storage benches and the default of
/// `ringkv-bench --value-size`.
const VALUE_BYTES: usize = 100;

/// The sibling cap passed to writes: the server's default. Never reached
/// here, so it costs nothing; it is passed as the coordinator would.
const MAX_SIBLINGS: usize = 32;

/// A fixed wall-clock time for timestamps: benches must not read the clock
/// into their inputs, or runs would not build identical sets.
const BASE_MS: u64 = 1_700_000_000_000;

/// Distinct node ids for `count` coordinators, offset so that two calls
/// with different `first` give disjoint sets of nodes.
fn nodes(first: u64, count: usize) -> impl Iterator<Item = NodeId> {
    (0..count as u64).map(move |i| NodeId(0x1000 + first + i))
}

fn value(tag: u8) -> Value {
    Value::Data(Bytes::from(vec![tag; VALUE_BYTES]))
}

/// A key's state holding `siblings` concurrent versions, each written by a
/// different coordinator with an empty context (so none supersedes another),
/// the situation that produces siblings in a real cluster.
fn concurrent_set(first_node: u64, siblings: usize) -> VersionSet {
    let mut set = VersionSet::new();
    for (i, node) in nodes(first_node, siblings).enumerate() {
        set.write(
            node,
            Some(&VersionVector::new()),
            Timestamp::new(BASE_MS + i as u64, 0),
            value(i as u8),
            None,
            MAX_SIBLINGS,
        );
    }
    set
}

fn bench_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    for &n in &SIBLING_COUNTS {
        let a = concurrent_set(0, n);
        let b = a.clone();
        group.bench_with_input(BenchmarkId::new("equal", n), &n, |bench, _| {
            bench.iter(|| black_box(&a).merged(black_box(&b)))
        });
        let theirs = concurrent_set(1_000, n);
        group.bench_with_input(BenchmarkId::new("disjoint", n), &n, |bench, _| {
            bench.iter(|| black_box(&a).merged(black_box(&theirs)))
        });
    }
    group.finish();
}

fn bench_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("write");
    let coordinator = NodeId(0x1000);
    let stored = concurrent_set(0, 1);
    group.bench_function("blind", |bench| {
        bench.iter_batched(
            || stored.clone(),
            |mut set| {
                set.write(
                    coordinator,
                    None,
                    Timestamp::new(BASE_MS + 100, 0),
                    value(0xaa),
                    None,
                    MAX_SIBLINGS,
                );
                set
            },
            BatchSize::SmallInput,
        )
    });
    for &n in &SIBLING_COUNTS {
        let stored = concurrent_set(0, n);
        // The client saw only the first sibling's write: its context covers
        // that dot alone, so the write replaces it and keeps the others.
        let seen: VersionVector = nodes(0, 1).map(|node| (node, 1)).collect();
        group.bench_with_input(BenchmarkId::new("with_context", n), &n, |bench, _| {
            bench.iter_batched(
                || stored.clone(),
                |mut set| {
                    set.write(
                        coordinator,
                        Some(black_box(&seen)),
                        Timestamp::new(BASE_MS + 100, 0),
                        value(0xbb),
                        None,
                        MAX_SIBLINGS,
                    );
                    set
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_context(c: &mut Criterion) {
    let mut group = c.benchmark_group("context");
    for &n in &CONTEXT_ENTRIES {
        // Counters of several varint widths, as on a long-lived key.
        let vv: VersionVector = nodes(0, n)
            .enumerate()
            .map(|(i, node)| (node, 1 + (i as u64) * 1_000))
            .collect();
        let bytes = vv.encode_context();
        group.bench_with_input(BenchmarkId::new("encode", n), &n, |bench, _| {
            bench.iter(|| black_box(&vv).encode_context())
        });
        group.bench_with_input(BenchmarkId::new("decode", n), &n, |bench, _| {
            bench.iter(|| VersionVector::decode_context(black_box(&bytes)).unwrap())
        });
    }
    group.finish();
}

fn bench_set_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("set");
    for &n in &SIBLING_COUNTS {
        let set = concurrent_set(0, n);
        let bytes = set.encode();
        group.bench_with_input(BenchmarkId::new("encode", n), &n, |bench, _| {
            bench.iter(|| black_box(&set).encode())
        });
        group.bench_with_input(BenchmarkId::new("decode", n), &n, |bench, _| {
            bench.iter(|| VersionSet::decode(black_box(&bytes)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_merge,
    bench_write,
    bench_context,
    bench_set_codec
);
criterion_main!(benches);
