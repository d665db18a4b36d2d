//! The in-memory engine: one ordered map per column family, nothing on disk.
//!
//! It exists so that tests of the layers above (and nodes that want no
//! persistence) get the exact semantics of the RocksDB engine without its
//! build or its I/O. All maps sit behind a single lock, which is what makes a
//! batch that spans column families atomic: readers see the state before the
//! batch or after it, never half of it. "Durable" here means "in this
//! process", so `flush` has nothing to do.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{BatchOp, Cf, Engine, StorageHealth, WriteBatch};
use ringkv_core::error::{Error, Result};

/// The contents of one column family.
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything behind the lock.
#[derive(Debug, Default)]
struct State {
    /// One tree per column family, indexed by [`Cf::index`].
    trees: [Tree; Cf::ALL.len()],
    /// Sum of key and value lengths over all trees, kept up to date by
    /// `write` so that metrics need not walk every entry.
    bytes: u64,
}

/// Bytes an entry accounts for in [`State::bytes`].
fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// An [`Engine`] that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    /// All column families under one lock so that multi-CF batches are
    /// atomic. A std lock is right: it is never held across an `.await`
    /// (engines are synchronous).
    state: RwLock<State>,
    /// Nothing here can fail to sync, but the test fault point can make
    /// it look so, so that layers above test their reaction on this engine.
    health: StorageHealth,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| poisoned())
    }

    fn write_lock(&self) -> Result<RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| poisoned())
    }
}

/// A panic while the lock was held may have left a batch half applied, so
/// the engine refuses further work instead of serving possibly torn state.
fn poisoned() -> Error {
    Error::Internal("memory engine lock poisoned by an earlier panic".to_string())
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read()?.trees[cf.index()].get(key).cloned())
    }

    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let state = self.read()?;
        let tree = &state.trees[cf.index()];
        Ok(keys.iter().map(|key| tree.get(key).cloned()).collect())
    }

    fn multi_get_cached(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Option<Vec<Option<Vec<u8>>>>> {
        // Everything is in memory.
        self.multi_get(cf, keys).map(Some)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.health.check()?;
        if let Some(what) = self.health.take_injected() {
            self.health.fail(what.clone());
            return Err(Error::Storage(what));
        }
        let mut state = self.write_lock()?;
        let State { trees, bytes } = &mut *state;
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    *bytes += entry_bytes(&key, &value);
                    let key_len = key.len();
                    if let Some(old) = trees[cf.index()].insert(key, value) {
                        *bytes -= (key_len + old.len()) as u64;
                    }
                }
                BatchOp::Delete { cf, key } => {
                    if let Some(old) = trees[cf.index()].remove(&key) {
                        *bytes -= entry_bytes(&key, &old);
                    }
                }
            }
        }
        Ok(())
    }

    fn writes_wait(&self) -> bool {
        false
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // BTreeMap::range panics on an inverted range; an empty range is the
        // documented answer.
        if limit == 0 || end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let state = self.read()?;
        Ok(state.trees[cf.index()]
            .range::<[u8], _>((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<()> {
        self.health.check()
    }

    fn approximate_size_bytes(&self) -> u64 {
        // Metrics must not fail: read through a poisoned lock.
        self.state.read().unwrap_or_else(|e| e.into_inner()).bytes
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    fn health(&self) -> &StorageHealth {
        &self.health
    }
}
