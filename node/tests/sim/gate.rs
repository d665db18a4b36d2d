//! A memory engine whose writes of user data can be held: a test stops a
//! node's local write half way (as a slow fsync would) and looks at what
//! the other nodes did meanwhile.

use std::sync::{Arc, Condvar, Mutex};

use ringkv_core::error::Result;
use ringkv_storage::{BatchOp, Cf, Engine, MemoryEngine, StorageHealth, WriteBatch};

#[derive(Default)]
struct State {
    held: bool,
    /// Writes waiting at the gate now.
    waiting: usize,
}

/// [`MemoryEngine`] with a gate in front of every write to `data`.
#[derive(Default)]
pub struct GatedEngine {
    inner: MemoryEngine,
    state: Mutex<State>,
    opened: Condvar,
}

impl GatedEngine {
    /// From now on, writes to `data` wait until [`Self::release`], or
    /// until the returned guard is dropped: a test that fails while a
    /// write waits must not leave a thread blocked forever (the runtime
    /// waits for it at the end).
    pub fn hold(self: &Arc<Self>) -> Held {
        self.state.lock().unwrap().held = true;
        Held(self.clone())
    }

    /// Lets every waiting and later write through.
    pub fn release(&self) {
        self.state.lock().unwrap().held = false;
        self.opened.notify_all();
    }

    /// Writes waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().waiting
    }
}

impl Engine for GatedEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, key)
    }

    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.multi_get(cf, keys)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let data = batch.ops().iter().any(|op| match op {
            BatchOp::Put { cf, .. } | BatchOp::Delete { cf, .. } => *cf == Cf::Data,
        });
        if data {
            let mut state = self.state.lock().unwrap();
            state.waiting += 1;
            while state.held {
                state = self.opened.wait(state).unwrap();
            }
            state.waiting -= 1;
        }
        self.inner.write(batch)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(cf, start, end, limit)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn approximate_size_bytes(&self) -> u64 {
        self.inner.approximate_size_bytes()
    }

    fn name(&self) -> &'static str {
        "gated-memory"
    }

    fn health(&self) -> &StorageHealth {
        self.inner.health()
    }
}

/// Releases the gate when dropped.
pub struct Held(Arc<GatedEngine>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.release();
    }
}
