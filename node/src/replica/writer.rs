//! The node's one storage writer: every change to a key's stored versions
//! (a coordinator's write, a replica's merge, a tombstone purge) is a job
//! for one thread, which takes everything queued, applies it in order and
//! stores the lot as one `WriteBatch`: one WAL append, and under
//! `storage.sync = always` one fsync, for the whole group.
//!
//! **Why one thread.** Before it, every write went to tokio's blocking pool
//! on its own (one thread hand-over there and one back), took a stripe lock
//! for its read-merge-write, read its key alone, and joined RocksDB's write
//! group, where every writer but the leader sleeps on a condition variable
//! until the leader has written for it (another hand-over). On two vCPUs the
//! hand-overs, not the work, set the cost of a replicated write
//! (`docs/benchmarks.md`, "Change 5"). Here a burst of writes costs one
//! wake-up of this thread, one lookup of all their keys, one batch, and one
//! wake-up of each waiting task.
//!
//! **Atomic read-merge-write.** Only the holder of the writer's turn (this
//! thread while it applies a group, or a caller that found it idle, below)
//! changes the `data` column family's keys by read-merge-write, so two
//! changes of one key are never computed from the same stored state.
//! Within a group, a job sees the states the group's earlier jobs left
//! ([`Group::current`]): the jobs apply in the order they were queued,
//! exactly as if each had been written alone.
//!
//! **Visible only once durable.** The group's batch is written (and under
//! `always` fsynced) before any job is answered and before any read can see
//! it, since RocksDB makes a batch readable only after its WAL write: a read
//! never returns a value that a crash could still take back. The writes that
//! queue while a group syncs are the next group, which is what makes this a
//! group commit. A job's `ready` (a coordinator's write) runs as soon as its
//! state is computed, before the batch goes to storage, so the coordinator
//! sends the state to the other replicas while its own write syncs.
//!
//! **Failure.** A job refused alone (a key state over the limit, a stored
//! value that does not decode, a context from the future) gets its own
//! error and changes nothing; a storage failure fails every job of the
//! group, and then nothing of it was written (a batch is atomic). A panic
//! while applying a group fails that group's jobs (their answers are
//! dropped) and the thread goes on with the next.
//!
//! **The caller writes when the writer is idle.** Under `storage.sync =
//! periodic` (and `never`) a write only appends to the WAL in the page
//! cache, which takes microseconds; handing it to the thread and back
//! costs two wake-ups, more than the write. So a task whose change finds
//! the writer idle (nothing queued, nobody applying) takes the writer's
//! turn and applies its change itself as a group of one, on the runtime,
//! if the keys it reads are in memory (`Engine::multi_get_cached`) and
//! RocksDB takes the batch without a write stall (`Engine::write_now`).
//! When the keys need the disk, the change goes to the thread untouched;
//! when RocksDB would stall, the caller, still holding the turn, writes
//! from `block_in_place`, so the runtime's other tasks move to another
//! worker. The turn is the same lock the thread holds while it applies a
//! group, so read-merge-write stays atomic whoever writes. Under `always`
//! every change goes to the thread, where the fsync is shared by the group.
//!
//! **An engine that never waits** (the memory engine) gets no thread: each
//! caller applies its own change, one at a time, with the same code.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, TryLockError};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::clock::NodeClock;
use super::{Applied, LocalWrite, Merged};
use group::{commit, Group};
use ringkv_core::error::{Error, Result};
use ringkv_core::version::{NodeId, VersionSet};
use ringkv_storage::Engine;

/// Name of the writer thread, as it appears in `top -H`, debuggers and
/// panics.
const WRITER_THREAD_NAME: &str = "ringkv-writer";

/// A group stops taking queued jobs once it holds this many keys (a write
/// counts one, a merge or purge one per key): a burst never makes one batch
/// so large that the writes behind it wait long. A single job larger than
/// this (a transfer chunk) is still one group.
const MAX_GROUP_KEYS: usize = 1024;

/// A job with more keys than this (a transfer chunk, a large replica
/// batch) always goes to the thread: its caller would hold a worker of the
/// async runtime for too long applying it.
const MAX_CALLER_KEYS: usize = 64;

/// What every write and merge of a replica applies: the same for all of
/// its jobs, carried by each so the writer thread needs no configuration.
#[derive(Clone)]
pub(super) struct Rules {
    pub node: NodeId,
    /// Issues every version's timestamp: above everything seen, and never
    /// twice for this node id.
    pub clock: Arc<NodeClock>,
    /// Sibling cap applied after every write and merge.
    pub max_siblings: usize,
    /// No write may leave a key's encoded state larger; merges collapse
    /// siblings to stay within it.
    pub max_state_bytes: usize,
    /// Dots found held by two states with different contents.
    pub dot_conflicts: Arc<AtomicU64>,
    /// `debug.inject_bug = merge_collapses_siblings`.
    pub collapse_siblings: bool,
}

/// Called with a write's new state and its encoding once they are computed,
/// before they are stored.
pub(super) type Ready = Box<dyn FnOnce(Applied, &[u8]) + Send>;

/// One change waiting for the writer, with where its answer goes.
pub(super) struct Job {
    pub rules: Arc<Rules>,
    pub work: Work,
}

pub(super) enum Work {
    /// A write coordinated by this node.
    Write {
        stored_key: Vec<u8>,
        write: LocalWrite,
        ready: Ready,
        done: oneshot::Sender<Result<()>>,
    },
    /// Versions from other nodes, one outcome per entry.
    Merge {
        entries: Vec<(Vec<u8>, VersionSet)>,
        done: oneshot::Sender<Result<Vec<Result<Merged>>>>,
    },
    /// Tombstone-only keys to delete if their stored bytes still have the
    /// digest the replicas agreed on: (user key, stored key, digest).
    Purge {
        targets: Vec<(Bytes, Vec<u8>, u64)>,
        digest: fn(&[u8]) -> u64,
        done: oneshot::Sender<Result<Vec<Bytes>>>,
    },
}

impl Work {
    fn keys(&self) -> usize {
        match self {
            Work::Write { .. } => 1,
            Work::Merge { entries, .. } => entries.len(),
            Work::Purge { targets, .. } => targets.len(),
        }
    }

    fn stored_keys(&self) -> Vec<&[u8]> {
        match self {
            Work::Write { stored_key, .. } => vec![stored_key.as_slice()],
            Work::Merge { entries, .. } => entries.iter().map(|(k, _)| k.as_slice()).collect(),
            Work::Purge { targets, .. } => targets.iter().map(|(_, k, _)| k.as_slice()).collect(),
        }
    }
}

/// Groups and jobs written, for the metrics endpoint: their ratio is how
/// many changes one WAL write carries.
#[derive(Default)]
pub(super) struct WriterCounters {
    pub groups: Arc<AtomicU64>,
    pub jobs: Arc<AtomicU64>,
    /// Of the jobs, those their caller applied (the writer was idle).
    pub by_caller: Arc<AtomicU64>,
}

/// Who applies changes: the writer thread, while it applies a group, or a
/// caller that found it idle.
#[derive(Default)]
struct Turn {
    applying: Mutex<()>,
    /// Jobs sent to the thread and not yet taken by it: while there are
    /// any, callers queue behind them rather than write first.
    queued: AtomicUsize,
}

/// Where a replica's changes are applied.
pub(super) struct Writer {
    mode: Mode,
    pub counters: WriterCounters,
}

enum Mode {
    /// The engine's writes may wait on a disk: the writer thread makes
    /// them, a group at a time.
    Thread {
        /// `None` only while dropping: closing the queue is the stop
        /// signal.
        jobs: Option<mpsc::Sender<Job>>,
        thread: Option<JoinHandle<()>>,
        /// Shared with the thread: who may apply changes now.
        turn: Arc<Turn>,
        /// `Some` when the engine can write without waiting on the disk:
        /// then a caller that finds the writer idle writes itself.
        immediate: Option<Arc<dyn Engine>>,
    },
    /// The engine never waits (memory): each caller applies its own job,
    /// one at a time, as a group of one. No thread would save anything,
    /// and with tokio's paused clock (simulation tests) a wait on a thread
    /// the runtime does not know would let virtual time run on while
    /// storage works.
    Inline {
        engine: Arc<dyn Engine>,
        /// Held while a job applies: one change at a time, as on the
        /// thread.
        turn: Mutex<()>,
    },
}

impl Writer {
    pub fn start(engine: Arc<dyn Engine>) -> Result<Self> {
        let counters = WriterCounters::default();
        if !engine.writes_wait() {
            return Ok(Self {
                mode: Mode::Inline {
                    engine,
                    turn: Mutex::new(()),
                },
                counters,
            });
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let (groups, written) = (counters.groups.clone(), counters.jobs.clone());
        let turn = Arc::new(Turn::default());
        let immediate = engine.writes_can_be_immediate().then(|| engine.clone());
        let thread_turn = turn.clone();
        let thread = std::thread::Builder::new()
            .name(WRITER_THREAD_NAME.to_string())
            .spawn(move || run(engine.as_ref(), &queue, &thread_turn, &groups, &written))
            .map_err(|e| Error::Internal(format!("cannot start {WRITER_THREAD_NAME}: {e}")))?;
        Ok(Self {
            mode: Mode::Thread {
                jobs: Some(jobs),
                thread: Some(thread),
                turn,
                immediate,
            },
            counters,
        })
    }

    /// Queues a job (or, inline, applies it). Fails only when the thread is
    /// gone (it never stops before the handle is dropped, so this is a bug,
    /// reported).
    pub fn submit(&self, job: Job) -> Result<()> {
        match &self.mode {
            Mode::Thread {
                jobs,
                turn,
                immediate,
                ..
            } => {
                let job = match immediate {
                    Some(engine) => match self.apply_if_idle(engine.as_ref(), turn, job) {
                        Some(job) => job,
                        None => return Ok(()),
                    },
                    None => job,
                };
                turn.queued.fetch_add(1, Ordering::SeqCst);
                let sent = jobs.as_ref().and_then(|jobs| jobs.send(job).ok());
                if sent.is_none() {
                    turn.queued.fetch_sub(1, Ordering::SeqCst);
                }
                sent.ok_or_else(|| Error::Internal(format!("{WRITER_THREAD_NAME} has stopped")))
            }
            Mode::Inline { engine, turn } => {
                // A poisoned turn only means a job panicked outside the
                // group's own guard; the state it guards is in storage.
                let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
                apply(
                    engine.as_ref(),
                    vec![job],
                    None,
                    &self.counters.groups,
                    &self.counters.jobs,
                );
                Ok(())
            }
        }
    }

    /// Applies the job here, as a group of one, if the writer is idle and
    /// the job's keys are in memory; otherwise hands it back untouched, to
    /// be queued for the thread.
    fn apply_if_idle(&self, engine: &dyn Engine, turn: &Turn, job: Job) -> Option<Job> {
        if job.work.keys() > MAX_CALLER_KEYS || turn.queued.load(Ordering::SeqCst) > 0 {
            return Some(job);
        }
        let _applying = match turn.applying.try_lock() {
            Ok(guard) => guard,
            // A poisoned turn only means a job panicked outside the group's
            // own guard; the state it guards is in storage.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Some(job),
        };
        let group = match Group::load_cached(engine, std::slice::from_ref(&job)) {
            Ok(Some(group)) => group,
            Ok(None) => return Some(job),
            Err(e) => {
                job.fail(&e);
                return None;
            }
        };
        self.counters.by_caller.fetch_add(1, Ordering::Relaxed);
        apply(
            engine,
            vec![job],
            Some(group),
            &self.counters.groups,
            &self.counters.jobs,
        );
        None
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let Mode::Thread { jobs, thread, .. } = &mut self.mode else {
            return;
        };
        drop(jobs.take());
        let Some(thread) = thread.take() else {
            return;
        };
        // Joined so the engine it holds closes with its owner, except when
        // the last handle goes from inside the thread itself (a job's
        // `ready` holding it), which must not wait for itself.
        if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
            tracing::warn!("{WRITER_THREAD_NAME} thread panicked");
        }
    }
}

/// The writer thread: waits for a job, takes every job queued behind it (up
/// to [`MAX_GROUP_KEYS`]), applies them as one group while holding the
/// turn; until the queue closes and is empty.
fn run(
    engine: &dyn Engine,
    queue: &mpsc::Receiver<Job>,
    turn: &Turn,
    groups: &AtomicU64,
    written: &AtomicU64,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => {
                    turn.queued.fetch_sub(1, Ordering::SeqCst);
                    job
                }
                Err(_) => return,
            },
        };
        // A poisoned turn only means a caller's job panicked outside the
        // group's own guard; the state it guards is in storage.
        let _applying = turn.applying.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = first.work.keys();
        let mut group = vec![first];
        while keys < MAX_GROUP_KEYS {
            match queue.try_recv() {
                Ok(job) => {
                    turn.queued.fetch_sub(1, Ordering::SeqCst);
                    keys += job.work.keys();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        // A job bigger than the room left waits for the next group.
        if keys > MAX_GROUP_KEYS && group.len() > 1 {
            next = group.pop();
        }
        apply(engine, group, None, groups, written);
    }
}

/// Applies and stores one group, counted; `loaded` is its keys when the
/// caller has read them already. A panic fails the group's jobs (their
/// answers are dropped unsent) and is contained here.
fn apply(
    engine: &dyn Engine,
    group: Vec<Job>,
    loaded: Option<Group>,
    groups: &AtomicU64,
    written: &AtomicU64,
) {
    groups.fetch_add(1, Ordering::Relaxed);
    written.fetch_add(group.len() as u64, Ordering::Relaxed);
    if catch_unwind(AssertUnwindSafe(|| commit(engine, group, loaded))).is_err() {
        tracing::error!(
            "the storage writer panicked applying a group of changes; they failed, and nothing of them was stored"
        );
    }
}

mod group;
#[cfg(test)]
mod tests;
