//! RocksDB only: what survives a restart, and what cannot be opened.

use super::*;

fn write_sample(engine: &dyn Engine) {
    let mut batch = WriteBatch::new();
    batch.put(Cf::Data, data_key(7, b"user"), b"version-set");
    batch.put(Cf::Hints, b"hint", b"h");
    batch.put(Cf::Meta, b"node-id", b"n1");
    batch.put(Cf::Meta, b"empty", b"");
    engine.write(batch).unwrap();
}

fn assert_sample(engine: &dyn Engine) {
    assert_eq!(
        engine.get(Cf::Data, &data_key(7, b"user")).unwrap(),
        Some(b"version-set".to_vec())
    );
    assert_eq!(engine.get(Cf::Hints, b"hint").unwrap(), Some(b"h".to_vec()));
    assert_eq!(
        engine.get(Cf::Meta, b"node-id").unwrap(),
        Some(b"n1".to_vec())
    );
    assert_eq!(engine.get(Cf::Meta, b"empty").unwrap(), Some(Vec::new()));
}

pub(super) fn reopen(path: &Path, sync: SyncMode) -> RocksEngine {
    RocksEngine::open(path, &test_options(sync)).unwrap()
}

#[test]
fn rocks_data_survives_flush_and_reopen_in_every_sync_mode() {
    for sync in [SyncMode::Always, SyncMode::Periodic, SyncMode::Never] {
        let dir = TempDir::new().unwrap();
        {
            let engine = reopen(dir.path(), sync);
            assert_eq!(engine.name(), "rocksdb");
            assert_eq!(engine.path(), dir.path());
            write_sample(&engine);
            engine.flush().unwrap();
        }
        let engine = reopen(dir.path(), sync);
        assert_sample(&engine);
    }
}

/// A value only on disk (flushed to a table file, block cache empty after
/// a reopen) is not answered by the cached lookup, which must not wait on
/// the disk; once a full lookup has brought its block into the cache, it
/// is.
#[test]
fn rocks_cached_lookup_declines_what_only_the_disk_holds() {
    let dir = TempDir::new().unwrap();
    let key = data_key(7, b"user");
    {
        let engine = reopen(dir.path(), SyncMode::Periodic);
        write_sample(&engine);
        engine.flush().unwrap();
    }
    let engine = reopen(dir.path(), SyncMode::Periodic);
    let keys = [key.clone()];
    assert_eq!(engine.multi_get_cached(Cf::Data, &keys).unwrap(), None);
    let value = Some(b"version-set".to_vec());
    assert_eq!(
        engine.multi_get(Cf::Data, &keys).unwrap(),
        vec![value.clone()]
    );
    assert_eq!(
        engine.multi_get_cached(Cf::Data, &keys).unwrap(),
        Some(vec![value])
    );
}

/// `write_now` writes at once where a write does not fsync, and survives
/// a reopen like any write; under `always`, and for a batch marked
/// durable, it declines and writes nothing, so no fsync is skipped.
#[test]
fn rocks_immediate_writes_only_where_writes_do_not_fsync() {
    for (sync, immediate) in [
        (SyncMode::Periodic, true),
        (SyncMode::Never, true),
        (SyncMode::Always, false),
    ] {
        let dir = TempDir::new().unwrap();
        {
            let engine = reopen(dir.path(), sync);
            assert_eq!(engine.writes_can_be_immediate(), immediate, "{sync:?}");
            let mut batch = WriteBatch::new();
            batch.put(Cf::Data, b"now".to_vec(), b"v".to_vec());
            assert_eq!(engine.write_now(&batch).unwrap(), immediate, "{sync:?}");
            let mut durable = WriteBatch::new();
            durable.put(Cf::Data, b"durable".to_vec(), b"v".to_vec());
            durable.set_durable();
            assert!(!engine.write_now(&durable).unwrap(), "{sync:?}");
        }
        let engine = reopen(dir.path(), sync);
        let expected = immediate.then(|| b"v".to_vec());
        assert_eq!(engine.get(Cf::Data, b"now").unwrap(), expected, "{sync:?}");
        assert_eq!(engine.get(Cf::Data, b"durable").unwrap(), None, "{sync:?}");
    }
}

#[test]
fn rocks_wal_written_data_survives_drop_without_flush() {
    for sync in [SyncMode::Always, SyncMode::Periodic, SyncMode::Never] {
        let dir = TempDir::new().unwrap();
        {
            let engine = reopen(dir.path(), sync);
            write_sample(&engine);
            // Dropped without flush: only the WAL has the writes.
        }
        // Reopening in another mode is allowed; the mode is not on disk.
        let engine = reopen(dir.path(), SyncMode::Never);
        assert_sample(&engine);
    }
}

#[test]
fn rocks_drop_does_not_wait_for_the_sync_interval() {
    let dir = TempDir::new().unwrap();
    let opts = StorageOptions {
        sync_interval: Duration::from_secs(24 * 60 * 60),
        ..test_options(SyncMode::Periodic)
    };
    let engine = RocksEngine::open(dir.path(), &opts).unwrap();
    write_sample(&engine);
    // Would hang for a day if the sync thread slept instead of waiting on
    // its stop channel.
    drop(engine);
    assert_sample(&reopen(dir.path(), SyncMode::Periodic));
}

#[test]
fn rocks_wal_does_not_grow_past_its_limit_behind_a_rarely_written_column_family() {
    // One `meta` write at start (as a node writes its generation), then
    // 16 write buffers of data: without a WAL limit the unflushed `meta`
    // memtable keeps every WAL file since the first.
    let dir = tempfile::tempdir().unwrap();
    let opts = test_options(SyncMode::Never);
    let engine = RocksEngine::open(dir.path(), &opts).unwrap();
    put(&engine, Cf::Meta, b"generation", b"1");
    let value = vec![7u8; 1024];
    for i in 0..16 * 1024u32 {
        put(&engine, Cf::Data, &i.to_be_bytes(), &value);
    }
    let wal_bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    // Obsolete WAL files are deleted in the background after a flush.
    let limit = (4 * opts.write_buffer_bytes) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wal_bytes() > limit && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let written = 16 * 1024 * 1024u64;
    assert!(
        wal_bytes() <= limit,
        "{} bytes of WAL kept after {written} bytes written (limit {limit})",
        wal_bytes()
    );
    assert_eq!(
        engine.get(Cf::Meta, b"generation").unwrap(),
        Some(b"1".to_vec())
    );
}

#[test]
fn rocks_open_on_a_regular_file_is_an_error() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"hello").unwrap();
    let result = RocksEngine::open(&file, &test_options(SyncMode::default()));
    assert!(matches!(result, Err(Error::Storage(_))));
}

#[test]
fn rocks_second_open_of_the_same_directory_is_an_error() {
    let dir = TempDir::new().unwrap();
    let _first = reopen(dir.path(), SyncMode::default());
    let second = RocksEngine::open(dir.path(), &test_options(SyncMode::default()));
    assert!(matches!(second, Err(Error::Storage(_))));
}

#[test]
fn rocks_creates_missing_parent_directories() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("a").join("b");
    let engine = reopen(&nested, SyncMode::default());
    write_sample(&engine);
    assert_sample(&engine);
}
