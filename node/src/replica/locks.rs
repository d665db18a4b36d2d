//! Striped locks for per-key read-merge-write.

use std::sync::{Mutex, MutexGuard};

/// A fixed array of mutexes; a key takes the stripe its hash selects.
/// Holding a stripe serialises updates of every key that maps to it, which
/// is what makes read-merge-write atomic per key.
pub struct KeyLocks {
    stripes: Vec<Mutex<()>>,
}

impl KeyLocks {
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    pub fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        self.lock_stripe(self.stripe_of(key))
    }

    /// Locks the stripes of all `keys` at once, in ascending stripe order
    /// and each stripe once: two callers doing this cannot deadlock (they
    /// take shared stripes in the same order), and callers of [`Self::lock`]
    /// hold a single stripe and wait for nothing while they do.
    pub fn lock_all<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.into_iter().map(|key| self.stripe_of(key)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|i| self.lock_stripe(i)).collect()
    }

    fn stripe_of(&self, key: &[u8]) -> usize {
        (ringkv_core::ring::key_position(key) % self.stripes.len() as u64) as usize
    }

    fn lock_stripe(&self, i: usize) -> MutexGuard<'_, ()> {
        // A poisoned stripe only means another update panicked; the data it
        // guards lives in storage, so the lock itself is still usable.
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}
