//! Storage health: once the write-ahead log could not be written or
//! fsynced, the node stops acknowledging writes until it is restarted.
//!
//! An fsync that fails does not say which writes reached the disk. Linux
//! may already have dropped the dirty pages it could not write and marked
//! them clean, so a second fsync can "succeed" without those writes ever
//! being on disk (the lesson PostgreSQL learned in 2018 and answered by
//! crashing on any fsync failure). An engine that logged the failure and
//! carried on would keep acknowledging writes on a log whose durable
//! content is unknown. So the first failed WAL write or sync is final: the
//! engine records it here, refuses every later write and every flush
//! ([`Error::StorageFailed`]), and never retries the fsync. Reads keep
//! working: what the engine serves from memory and its files is still
//! what it wrote, and other replicas hold the acknowledged writes.
//!
//! The rest of the node learns of the failure through [`StorageHealth::
//! subscribe`]: the server turns the gRPC health service to NOT_SERVING,
//! the metrics endpoint shows `ringkv_storage_failed 1`, and the KV
//! service refuses writes before routing them. Only a restart (after an
//! operator has checked the disk) clears it; the restarted engine replays
//! whatever its WAL really holds.
//!
//! A test-only fault point ([`StorageHealth::fail_next_sync`], reached
//! through `Admin.SetFaults` only with `debug.fault_injection = true`)
//! makes the next WAL sync fail, so the path is tested on real processes.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use ringkv_core::error::{Error, Result};

/// Whether this engine's storage is still trusted, shared by the engine,
/// its sync thread and whoever watches it.
#[derive(Debug)]
pub struct StorageHealth {
    /// `Some(what failed)` from the first failure on; never cleared. A
    /// watch channel so the server can react at once, and so a plain
    /// thread (the WAL sync thread) can report without a runtime.
    failure: watch::Sender<Option<String>>,
    /// Test fault point: the next WAL sync fails (see the module docs).
    fail_next_sync: AtomicBool,
}

impl Default for StorageHealth {
    fn default() -> Self {
        Self {
            failure: watch::Sender::new(None),
            fail_next_sync: AtomicBool::new(false),
        }
    }
}

impl StorageHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// What failed, once something has.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Refuses work that needs trusted storage (writes, flushes) once a
    /// failure has been recorded.
    pub fn check(&self) -> Result<()> {
        match self.failure() {
            None => Ok(()),
            Some(what) => Err(Error::StorageFailed(what)),
        }
    }

    /// Records a failed WAL write or sync. The first failure is kept (it is
    /// the one that explains the state); later ones are only logged.
    pub fn fail(&self, what: String) {
        tracing::error!(
            failure = %what,
            "storage failed: this node stops acknowledging writes; check the disk, then restart it"
        );
        self.failure.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(what);
            true
        });
    }

    /// Notified when the storage fails; the value is `Some` from then on.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    /// Test fault point: makes the next WAL sync fail. Only
    /// `Admin.SetFaults` on a node started with `debug.fault_injection`
    /// calls this.
    pub fn fail_next_sync(&self) {
        tracing::warn!("storage fault point armed: the next WAL sync fails");
        self.fail_next_sync.store(true, Ordering::SeqCst);
    }

    /// Consumes an armed fault point: `Some(description)` if this sync
    /// must fail.
    pub fn take_injected(&self) -> Option<String> {
        self.fail_next_sync
            .swap(false, Ordering::SeqCst)
            .then(|| "WAL sync failed: injected by the test fault point".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteBatch;
    use crate::{Cf, Engine, MemoryEngine, RocksEngine, StorageOptions, SyncMode};

    fn one_put(key: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, key.to_vec(), b"v".to_vec());
        batch
    }

    /// After an injected sync failure the engine refuses writes and
    /// flushes for good, and still serves reads.
    fn a_failed_sync_stops_writes_for_good(engine: &dyn Engine) {
        engine.write(one_put(b"before")).unwrap();
        assert!(engine.health().failure().is_none());
        engine.health().fail_next_sync();
        // The next write (always, never, memory) or the next periodic
        // sync fails; either way the engine is failed soon after.
        let _ = engine.write(one_put(b"during"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while engine.health().failure().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let what = engine.health().failure().expect("the storage failed");
        assert!(what.contains("injected"), "{what}");
        for _ in 0..3 {
            let err = engine.write(one_put(b"after")).unwrap_err();
            assert!(matches!(err, Error::StorageFailed(_)), "{err:?}");
        }
        assert!(matches!(engine.flush(), Err(Error::StorageFailed(_))));
        assert_eq!(
            engine.get(Cf::Data, b"before").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(engine.get(Cf::Data, b"after").unwrap(), None);
    }

    #[test]
    fn memory_engine_stops_writes_after_a_failed_sync() {
        a_failed_sync_stops_writes_for_good(&MemoryEngine::new());
    }

    #[test]
    fn rocks_engine_stops_writes_after_a_failed_sync_in_every_mode() {
        for sync in [SyncMode::Always, SyncMode::Periodic, SyncMode::Never] {
            let dir = tempfile::tempdir().unwrap();
            let opts = StorageOptions {
                sync,
                ..StorageOptions::default()
            };
            let engine = RocksEngine::open(dir.path(), &opts).unwrap();
            a_failed_sync_stops_writes_for_good(&engine);
        }
    }

    #[test]
    fn the_first_failure_is_kept_and_announced() {
        let health = StorageHealth::new();
        let mut seen = health.subscribe();
        assert!(health.check().is_ok());
        health.fail("first".into());
        health.fail("second".into());
        assert!(seen.has_changed().unwrap());
        assert_eq!(seen.borrow_and_update().as_deref(), Some("first"));
        assert!(matches!(health.check(), Err(Error::StorageFailed(w)) if w == "first"));
    }
}
