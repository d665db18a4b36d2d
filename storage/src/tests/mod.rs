//! One suite, two engines.
//!
//! Every check in `suite` is a plain function over `&dyn Engine`;
//! `engine_suite!` instantiates each one for the memory engine and for a
//! RocksDB engine in a fresh temporary directory, so the two cannot drift
//! apart. RocksDB-only behaviour (reopening, sync modes, bad paths) follows,
//! then a property test that drives both engines and a `BTreeMap` model with
//! the same random operations.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use ringkv_core::error::Error;

/// An engine under test and whatever must outlive it.
struct Harness {
    /// Declared first so it drops (and closes RocksDB) before the directory
    /// is removed.
    engine: Box<dyn Engine>,
    _dir: Option<TempDir>,
}

fn memory() -> Harness {
    Harness {
        engine: Box::new(MemoryEngine::new()),
        _dir: None,
    }
}

fn rocks() -> Harness {
    let dir = TempDir::new().unwrap();
    let engine = RocksEngine::open(dir.path(), &test_options(SyncMode::default())).unwrap();
    Harness {
        engine: Box::new(engine),
        _dir: Some(dir),
    }
}

/// Small buffers so tests do not reserve the production 256 MiB cache.
fn test_options(sync: SyncMode) -> StorageOptions {
    StorageOptions {
        sync,
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        ..StorageOptions::default()
    }
}

fn put(engine: &dyn Engine, cf: Cf, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(cf, key, value);
    engine.write(batch).unwrap();
}

fn delete(engine: &dyn Engine, cf: Cf, key: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.delete(cf, key);
    engine.write(batch).unwrap();
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries.iter().map(|(k, _)| k.clone()).collect()
}

/// The checks both engines must pass.
mod suite {
    use super::*;

    pub fn get_missing_is_none(e: &dyn Engine) {
        for cf in Cf::ALL {
            assert_eq!(e.get(cf, b"absent").unwrap(), None);
        }
    }

    pub fn put_then_get(e: &dyn Engine) {
        put(e, Cf::Data, b"k", b"v");
        assert_eq!(e.get(Cf::Data, b"k").unwrap(), Some(b"v".to_vec()));
    }

    pub fn overwrite_replaces(e: &dyn Engine) {
        put(e, Cf::Data, b"k", b"one");
        put(e, Cf::Data, b"k", b"two");
        assert_eq!(e.get(Cf::Data, b"k").unwrap(), Some(b"two".to_vec()));
        assert_eq!(e.scan(Cf::Data, b"", None, 10).unwrap().len(), 1);
    }

    pub fn delete_removes(e: &dyn Engine) {
        put(e, Cf::Meta, b"k", b"v");
        delete(e, Cf::Meta, b"k");
        assert_eq!(e.get(Cf::Meta, b"k").unwrap(), None);
        // Deleting an absent key is not an error.
        delete(e, Cf::Meta, b"never-there");
    }

    pub fn empty_value_is_present(e: &dyn Engine) {
        put(e, Cf::Data, b"k", b"");
        assert_eq!(e.get(Cf::Data, b"k").unwrap(), Some(Vec::new()));
        assert_eq!(
            e.multi_get(Cf::Data, &[b"k".to_vec()]).unwrap(),
            vec![Some(Vec::new())]
        );
        assert_eq!(
            e.scan(Cf::Data, b"", None, 10).unwrap(),
            vec![(b"k".to_vec(), Vec::new())]
        );
    }

    pub fn empty_key_is_a_key(e: &dyn Engine) {
        put(e, Cf::Hints, b"", b"v");
        assert_eq!(e.get(Cf::Hints, b"").unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            keys(&e.scan(Cf::Hints, b"", None, 10).unwrap()),
            vec![Vec::<u8>::new()]
        );
    }

    pub fn column_families_are_separate(e: &dyn Engine) {
        put(e, Cf::Data, b"k", b"data");
        put(e, Cf::Hints, b"k", b"hints");
        assert_eq!(e.get(Cf::Meta, b"k").unwrap(), None);
        assert_eq!(e.get(Cf::Data, b"k").unwrap(), Some(b"data".to_vec()));
        assert_eq!(e.get(Cf::Hints, b"k").unwrap(), Some(b"hints".to_vec()));
        delete(e, Cf::Hints, b"k");
        assert_eq!(e.get(Cf::Data, b"k").unwrap(), Some(b"data".to_vec()));
        assert!(e.scan(Cf::Meta, b"", None, 10).unwrap().is_empty());
    }

    pub fn batch_applies_everything_in_order(e: &dyn Engine) {
        put(e, Cf::Data, b"gone", b"x");
        put(e, Cf::Meta, b"gone", b"x");

        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, b"a", b"1");
        batch.put(Cf::Hints, b"b", b"2");
        batch.delete(Cf::Data, b"gone");
        batch.put(Cf::Meta, b"c", b"3");
        batch.delete(Cf::Meta, b"gone");
        // Later operations on the same key win.
        batch.put(Cf::Data, b"twice", b"first");
        batch.put(Cf::Data, b"twice", b"second");
        batch.put(Cf::Hints, b"resurrect", b"x");
        batch.delete(Cf::Hints, b"resurrect");
        assert_eq!(batch.len(), 9);
        assert!(!batch.is_empty());
        e.write(batch).unwrap();

        assert_eq!(e.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(Cf::Hints, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(e.get(Cf::Meta, b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(e.get(Cf::Data, b"gone").unwrap(), None);
        assert_eq!(e.get(Cf::Meta, b"gone").unwrap(), None);
        assert_eq!(e.get(Cf::Data, b"twice").unwrap(), Some(b"second".to_vec()));
        assert_eq!(e.get(Cf::Hints, b"resurrect").unwrap(), None);
    }

    pub fn empty_batch_is_fine(e: &dyn Engine) {
        let batch = WriteBatch::new();
        assert!(batch.is_empty());
        e.write(batch).unwrap();
    }

    pub fn multi_get_keeps_order(e: &dyn Engine) {
        put(e, Cf::Data, b"a", b"1");
        put(e, Cf::Data, b"c", b"3");
        let got = e
            .multi_get(
                Cf::Data,
                &[b"c".to_vec(), b"b".to_vec(), b"a".to_vec(), b"c".to_vec()],
            )
            .unwrap();
        assert_eq!(
            got,
            vec![
                Some(b"3".to_vec()),
                None,
                Some(b"1".to_vec()),
                Some(b"3".to_vec())
            ]
        );
        assert!(e.multi_get(Cf::Data, &[]).unwrap().is_empty());
        // Same key, other column family.
        assert_eq!(
            e.multi_get(Cf::Hints, &[b"a".to_vec()]).unwrap(),
            vec![None]
        );
    }

    /// A cached lookup that answers agrees with the full lookup; right
    /// after a write the keys are in the memtable, so both engines answer.
    pub fn cached_multi_get_agrees_with_multi_get(e: &dyn Engine) {
        put(e, Cf::Data, b"a", b"1");
        put(e, Cf::Data, b"c", b"3");
        let keys = [b"c".to_vec(), b"b".to_vec(), b"a".to_vec()];
        let cached = e.multi_get_cached(Cf::Data, &keys).unwrap();
        assert_eq!(cached, Some(e.multi_get(Cf::Data, &keys).unwrap()));
        assert_eq!(
            cached,
            Some(vec![Some(b"3".to_vec()), None, Some(b"1".to_vec())])
        );
        assert_eq!(e.multi_get_cached(Cf::Data, &[]).unwrap(), Some(Vec::new()));
    }

    pub fn scan_order_bounds_and_limit(e: &dyn Engine) {
        // Inserted out of order; includes a prefix pair and a high byte.
        for key in [&b"b"[..], b"a", b"ab", b"c", b"\xff", b"d"] {
            put(e, Cf::Meta, key, key);
        }
        let all = e.scan(Cf::Meta, b"", None, usize::MAX).unwrap();
        assert_eq!(
            keys(&all),
            vec![
                b"a".to_vec(),
                b"ab".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                b"d".to_vec(),
                b"\xff".to_vec()
            ]
        );
        assert!(all.iter().all(|(k, v)| k == v));

        // Start inclusive, end exclusive.
        let mid = e.scan(Cf::Meta, b"ab", Some(b"d"), 100).unwrap();
        assert_eq!(
            keys(&mid),
            vec![b"ab".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        // Start between keys.
        let after = e.scan(Cf::Meta, b"aa", Some(b"b"), 100).unwrap();
        assert_eq!(keys(&after), vec![b"ab".to_vec()]);
        // Limit.
        let first_two = e.scan(Cf::Meta, b"", None, 2).unwrap();
        assert_eq!(keys(&first_two), vec![b"a".to_vec(), b"ab".to_vec()]);
        assert!(e.scan(Cf::Meta, b"", None, 0).unwrap().is_empty());
        // End None runs to the end of the column family.
        let tail = e.scan(Cf::Meta, b"c", None, 100).unwrap();
        assert_eq!(
            keys(&tail),
            vec![b"c".to_vec(), b"d".to_vec(), b"\xff".to_vec()]
        );
        // Empty and inverted ranges are empty, not errors.
        assert!(e.scan(Cf::Meta, b"b", Some(b"b"), 100).unwrap().is_empty());
        assert!(e.scan(Cf::Meta, b"d", Some(b"a"), 100).unwrap().is_empty());
        assert!(e.scan(Cf::Meta, b"\xff\x00", None, 100).unwrap().is_empty());
        // Deleted keys do not show up.
        delete(e, Cf::Meta, b"b");
        let mid = e.scan(Cf::Meta, b"ab", Some(b"d"), 100).unwrap();
        assert_eq!(keys(&mid), vec![b"ab".to_vec(), b"c".to_vec()]);
    }

    pub fn partition_range_covers_one_partition(e: &dyn Engine) {
        let partitions = [0, 1, 2, 255, 256, u32::MAX - 1, u32::MAX];
        for &p in &partitions {
            // Include an empty user key and one that looks like the next
            // partition's prefix.
            for user_key in [&b""[..], b"k", b"\xff\xff\xff\xff\xff"] {
                put(e, Cf::Data, &data_key(p, user_key), &p.to_be_bytes());
            }
        }
        for &p in &partitions {
            let (start, end) = partition_range(p);
            let got = e
                .scan(Cf::Data, &start, end.as_deref(), usize::MAX)
                .unwrap();
            assert_eq!(got.len(), 3, "partition {p}");
            for (key, value) in &got {
                let (partition, _) = split_data_key(key).unwrap();
                assert_eq!(partition, p);
                assert_eq!(value, &p.to_be_bytes());
            }
            let user_keys: Vec<&[u8]> = got
                .iter()
                .map(|(k, _)| split_data_key(k).unwrap().1)
                .collect();
            assert_eq!(user_keys, vec![&b""[..], b"k", b"\xff\xff\xff\xff\xff"]);
        }
        // A partition with no keys scans empty even between full ones.
        let (start, end) = partition_range(3);
        assert!(e
            .scan(Cf::Data, &start, end.as_deref(), 10)
            .unwrap()
            .is_empty());
    }

    pub fn size_grows_with_data(e: &dyn Engine) {
        let before = e.approximate_size_bytes();
        let mut batch = WriteBatch::new();
        for i in 0..100u32 {
            batch.put(Cf::Data, data_key(i, b"key"), vec![7u8; 100]);
        }
        e.write(batch).unwrap();
        e.flush().unwrap();
        assert!(e.approximate_size_bytes() > before);
    }

    pub fn flush_keeps_data_readable(e: &dyn Engine) {
        put(e, Cf::Data, b"k", b"v");
        e.flush().unwrap();
        e.flush().unwrap();
        assert_eq!(e.get(Cf::Data, b"k").unwrap(), Some(b"v".to_vec()));
    }
}

/// Instantiates every check in `suite` for one engine constructor.
macro_rules! engine_suite {
    ($module:ident, $make:expr, [$($check:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $check() {
                    let harness = $make();
                    suite::$check(harness.engine.as_ref());
                }
            )*
        }
    };
}

macro_rules! both_engines {
    ($($check:ident),* $(,)?) => {
        engine_suite!(memory_engine, memory, [$($check),*]);
        engine_suite!(rocks_engine, rocks, [$($check),*]);
    };
}

both_engines!(
    get_missing_is_none,
    put_then_get,
    overwrite_replaces,
    delete_removes,
    empty_value_is_present,
    empty_key_is_a_key,
    column_families_are_separate,
    batch_applies_everything_in_order,
    empty_batch_is_fine,
    multi_get_keeps_order,
    cached_multi_get_agrees_with_multi_get,
    scan_order_bounds_and_limit,
    partition_range_covers_one_partition,
    size_grows_with_data,
    flush_keeps_data_readable,
);

// ---------------------------------------------------------------------------
// Keys and options.

#[test]
fn data_key_round_trips() {
    for (p, user_key) in [(0, &b""[..]), (1, b"abc"), (u32::MAX, b"\x00\xff")] {
        let stored = data_key(p, user_key);
        assert_eq!(stored.len(), PARTITION_PREFIX_LEN + user_key.len());
        assert_eq!(split_data_key(&stored).unwrap(), (p, user_key));
    }
    // Big-endian: byte order is numeric order across partitions.
    assert!(data_key(1, b"\xff") < data_key(2, b""));
    assert!(data_key(255, b"z") < data_key(256, b"a"));
}

#[test]
fn split_data_key_rejects_short_input() {
    for short in [&b""[..], b"\x00", b"\x00\x00\x00"] {
        assert!(matches!(split_data_key(short), Err(Error::Corrupt(_))));
    }
}

#[test]
fn partition_range_bounds() {
    assert_eq!(
        partition_range(0),
        (vec![0, 0, 0, 0], Some(vec![0, 0, 0, 1]))
    );
    assert_eq!(partition_range(0x0102_03ff).1, Some(vec![1, 2, 4, 0]));
    assert_eq!(partition_range(u32::MAX), (vec![0xff; 4], None));
}

#[test]
fn sync_mode_uses_lowercase_names() {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        sync: SyncMode,
    }
    for (text, mode) in [
        ("always", SyncMode::Always),
        ("periodic", SyncMode::Periodic),
        ("never", SyncMode::Never),
    ] {
        let parsed: Wrapper = serde_json::from_str(&format!(r#"{{"sync":"{text}"}}"#)).unwrap();
        assert_eq!(parsed.sync, mode);
        assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{text}\""));
    }
    assert_eq!(SyncMode::default(), SyncMode::Periodic);
}

#[test]
fn default_options_are_valid() {
    let opts = StorageOptions::default();
    assert_eq!(opts.sync_interval, DEFAULT_SYNC_INTERVAL);
    opts.validate().unwrap();
}

#[test]
fn invalid_options_are_config_errors() {
    let bad = [
        StorageOptions {
            sync_interval: Duration::ZERO,
            ..StorageOptions::default()
        },
        StorageOptions {
            bloom_bits_per_key: f64::NAN,
            ..StorageOptions::default()
        },
        StorageOptions {
            bloom_bits_per_key: -1.0,
            ..StorageOptions::default()
        },
        StorageOptions {
            write_buffer_bytes: 0,
            ..StorageOptions::default()
        },
    ];
    let dir = TempDir::new().unwrap();
    for opts in bad {
        assert!(matches!(opts.validate(), Err(Error::Config(_))), "{opts:?}");
        assert!(matches!(
            RocksEngine::open(dir.path(), &opts),
            Err(Error::Config(_))
        ));
    }
    // A zero interval is harmless when there is no periodic sync.
    StorageOptions {
        sync: SyncMode::Always,
        sync_interval: Duration::ZERO,
        ..StorageOptions::default()
    }
    .validate()
    .unwrap();
}

mod model;
mod rocks;
