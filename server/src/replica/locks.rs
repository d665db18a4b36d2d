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
        let i = (crate::ring::key_position(key) % self.stripes.len() as u64) as usize;
        // A poisoned stripe only means another update panicked; the data it
        // guards lives in storage, so the lock itself is still usable.
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}
