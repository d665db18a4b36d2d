//! The writer's group commit, made deterministic: a gated engine holds the
//! writer inside one group's write while a test queues the next group, so
//! what one group holds is known exactly. The same engine, made
//! "immediate", lets a test choose whether a caller that finds the writer
//! idle may write itself, and records which thread stored each batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;

use super::super::tests::{data, write};
use super::super::{Applied, Replica};
use crate::metrics::RegisteredCounter;
use ringkv_core::error::{Error, Result};
use ringkv_core::version::{NodeId, Value, VersionSet};
use ringkv_storage::{data_key, BatchOp, Cf, Engine, MemoryEngine, StorageHealth, WriteBatch};

/// How long a test waits for the writer to reach the gate before failing.
const GATE_WAIT: Duration = Duration::from_secs(10);

/// A memory engine whose writes can be held at a gate (the writer thread is
/// then "syncing" while the test queues more), and made to fail when they
/// hold a given key.
#[derive(Default)]
struct GatedEngine {
    inner: MemoryEngine,
    gate: Mutex<Gate>,
    moved: Condvar,
    /// A batch putting or deleting this stored key fails.
    fail_with: Mutex<Option<Vec<u8>>>,
    /// Offers `write_now` (as RocksDB does under `sync = periodic`); read
    /// once, when the replica starts its writer.
    immediate: bool,
    /// `multi_get_cached` answers "needs the disk".
    needs_disk: AtomicBool,
    /// `write_now` declines, as RocksDB does during a write stall.
    stalls: AtomicBool,
    /// The name of the thread that stored each batch holding a data key.
    stored_by: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Gate {
    /// The next write waits until `open`.
    armed: bool,
    /// A write is waiting at the gate.
    held: bool,
    open: bool,
}

impl GatedEngine {
    fn immediate() -> Self {
        Self {
            immediate: true,
            ..Self::default()
        }
    }

    fn stored_by(&self) -> Vec<String> {
        self.stored_by.lock().unwrap().clone()
    }

    fn arm(&self) {
        *self.gate.lock().unwrap() = Gate {
            armed: true,
            ..Gate::default()
        };
    }

    /// Blocks until a write waits at the armed gate.
    fn wait_held(&self) {
        let gate = self.gate.lock().unwrap();
        let (gate, timeout) = self
            .moved
            .wait_timeout_while(gate, GATE_WAIT, |g| !g.held)
            .unwrap();
        assert!(
            !timeout.timed_out() && gate.held,
            "no write reached the gate"
        );
    }

    fn open(&self) {
        self.gate.lock().unwrap().open = true;
        self.moved.notify_all();
    }
}

/// Opens the gate when dropped: a test that fails while the writer thread
/// waits at the gate must not hang in the replica's drop, which joins it.
struct OpenOnDrop<'a>(&'a GatedEngine);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

impl Engine for GatedEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, key)
    }

    fn multi_get(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.multi_get(cf, keys)
    }

    fn multi_get_cached(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Option<Vec<Option<Vec<u8>>>>> {
        if self.needs_disk.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.multi_get(cf, keys).map(Some)
    }

    fn writes_can_be_immediate(&self) -> bool {
        self.immediate
    }

    fn write_now(&self, batch: &WriteBatch) -> Result<bool> {
        assert!(
            self.immediate,
            "write_now on an engine that never offers it"
        );
        if self.stalls.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.write(batch.clone())?;
        Ok(true)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch
            .ops()
            .iter()
            .any(|op| matches!(op, BatchOp::Put { cf: Cf::Data, .. }))
        {
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.stored_by.lock().unwrap().push(name);
        }
        let mut gate = self.gate.lock().unwrap();
        if gate.armed
            && batch
                .ops()
                .iter()
                .any(|op| matches!(op, BatchOp::Put { cf: Cf::Data, .. }))
        {
            gate.armed = false;
            gate.held = true;
            self.moved.notify_all();
            let gate = self.moved.wait_while(gate, |g| !g.open).unwrap();
            drop(gate);
        } else {
            drop(gate);
        }
        if let Some(key) = self.fail_with.lock().unwrap().as_deref() {
            let holds = batch.ops().iter().any(|op| match op {
                BatchOp::Put { key: k, .. } | BatchOp::Delete { key: k, .. } => k == key,
            });
            if holds {
                return Err(Error::Storage("injected: this batch failed".into()));
            }
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
        "gated"
    }

    fn health(&self) -> &StorageHealth {
        self.inner.health()
    }
}

fn replica_on(engine: &Arc<GatedEngine>) -> Replica {
    let engine: Arc<dyn Engine> = engine.clone();
    Replica::new(NodeId(7), engine, 256, 32).unwrap()
}

fn counter(replica: &Replica, name: &str) -> u64 {
    let found: Vec<RegisteredCounter> = replica
        .counters()
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{name}");
    found[0].value.load(std::sync::atomic::Ordering::Relaxed)
}

/// A state of `key` written by another node, to merge here.
async fn foreign(node: u64, key: &str, value: &str) -> VersionSet {
    let other = Replica::new(NodeId(node), Arc::new(MemoryEngine::new()), 256, 32).unwrap();
    other
        .apply_write(write(key, value, None))
        .await
        .unwrap()
        .state
}

type Change<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// `n` writes of key "k", each after `base` and so concurrent with the
/// others: stored right, they are `n` siblings.
fn sibling_writes<'a>(r: &'a Replica, base: &Applied, n: usize) -> Vec<Change<'a>> {
    let ctx = base.state.context().clone();
    (0..n)
        .map(|i| {
            let ctx = ctx.clone();
            Box::pin(async move {
                r.apply_write(write("k", &format!("v{i}"), Some(ctx)))
                    .await
                    .map(drop)
            }) as Change
        })
        .collect()
}

/// Holds the writer in a write of key "held" and queues `changes` behind
/// it (each has submitted its job once polled), then lets it go: the
/// changes are then one group. Returns their outcomes in order.
async fn one_group<'a>(
    engine: &GatedEngine,
    replica: &'a Replica,
    changes: Vec<Change<'a>>,
) -> Vec<Result<()>> {
    engine.arm();
    let held = replica.apply_write(write("held", "x", None));
    let mut held = Box::pin(held);
    assert!(futures::poll!(&mut held).is_pending());
    engine.wait_held();
    let mut all = Box::pin(join_all(changes));
    assert!(
        futures::poll!(&mut all).is_pending(),
        "queued behind the gate"
    );
    engine.open();
    held.await.unwrap();
    all.await
}

#[tokio::test]
async fn changes_queued_while_a_group_is_stored_go_to_storage_as_one_group() {
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    let theirs = foreign(2, "m", "theirs").await;
    let (groups, jobs) = (
        counter(&r, "ringkv_storage_write_groups_total"),
        counter(&r, "ringkv_storage_write_jobs_total"),
    );
    let mut changes: Vec<Change> = (0..10)
        .map(|i| {
            let key = format!("k{i}");
            let r = &r;
            Box::pin(async move { r.apply_write(write(&key, "v", None)).await.map(drop) }) as Change
        })
        .collect();
    changes.push(Box::pin(async {
        let merged = r.merge(Bytes::from("m"), theirs.clone()).await?;
        assert!(merged.changed);
        Ok(())
    }));
    let outcomes = one_group(&engine, &r, changes).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // The held write was one group, the eleven queued behind it another.
    assert_eq!(counter(&r, "ringkv_storage_write_groups_total") - groups, 2);
    assert_eq!(counter(&r, "ringkv_storage_write_jobs_total") - jobs, 12);
    for i in 0..10 {
        let stored = r.read(Bytes::from(format!("k{i}"))).await.unwrap().unwrap();
        assert_eq!(stored.versions()[0].value, data("v"));
    }
    assert_eq!(r.read(Bytes::from("m")).await.unwrap(), Some(theirs));
}

/// Changes of one key inside one group apply in order, each on what the
/// one before left: concurrent writes become siblings, none overwrites
/// another, and a write whose context covers a merged version supersedes
/// it.
#[tokio::test]
async fn changes_of_one_key_in_a_group_each_see_the_one_before() {
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    let base = r.apply_write(write("k", "base", None)).await.unwrap();
    let changes = sibling_writes(&r, &base, 5);
    let outcomes = one_group(&engine, &r, changes).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert_eq!(
        stored.versions().len(),
        5,
        "five concurrent writes, five siblings"
    );

    let theirs = foreign(2, "j", "theirs").await;
    let covering = theirs.context().clone();
    let changes: Vec<Change> = vec![
        Box::pin(async { r.merge(Bytes::from("j"), theirs.clone()).await.map(drop) }),
        Box::pin(async {
            r.apply_write(write("j", "mine", Some(covering)))
                .await
                .map(drop)
        }),
    ];
    let outcomes = one_group(&engine, &r, changes).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let stored = r.read(Bytes::from("j")).await.unwrap().unwrap();
    assert_eq!(
        stored.versions().len(),
        1,
        "the write saw the merged version"
    );
    assert_eq!(stored.versions()[0].value, data("mine"));
    assert!(stored.context().get(NodeId(2)) > 0);
}

#[tokio::test]
async fn a_storage_failure_fails_every_change_of_its_group_and_stores_none() {
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    let theirs = foreign(2, "m", "theirs").await;
    *engine.fail_with.lock().unwrap() = Some(data_key(r.partition_of(b"a"), b"a"));
    let changes: Vec<Change> = vec![
        Box::pin(async { r.apply_write(write("a", "v", None)).await.map(drop) }),
        Box::pin(async { r.apply_write(write("b", "v", None)).await.map(drop) }),
        Box::pin(async { r.merge(Bytes::from("m"), theirs.clone()).await.map(drop) }),
    ];
    let outcomes = one_group(&engine, &r, changes).await;
    for outcome in &outcomes {
        assert!(matches!(outcome, Err(Error::Storage(_))), "{outcomes:?}");
    }
    for key in ["a", "b", "m"] {
        assert_eq!(r.read(Bytes::from(key)).await.unwrap(), None, "{key}");
    }
    // The next group, without the failing key, is stored.
    *engine.fail_with.lock().unwrap() = None;
    r.apply_write(write("b", "again", None)).await.unwrap();
    assert!(r.read(Bytes::from("b")).await.unwrap().is_some());
}

#[tokio::test]
async fn a_change_refused_alone_leaves_the_rest_of_its_group() {
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    let corrupt = data_key(r.partition_of(b"bad"), b"bad");
    let mut batch = WriteBatch::new();
    batch.put(Cf::Data, corrupt, vec![0xff, 0x00, 0x13]);
    engine.inner.write(batch).unwrap();
    let (bad, good) = (foreign(2, "bad", "x").await, foreign(2, "good", "y").await);
    let merged = std::cell::RefCell::new(Vec::new());
    let changes: Vec<Change> = vec![
        Box::pin(async {
            let outcomes = r
                .merge_group(vec![
                    (Bytes::from("bad"), bad.clone()),
                    (Bytes::from("good"), good.clone()),
                ])
                .await?;
            *merged.borrow_mut() = outcomes;
            Ok(())
        }),
        Box::pin(async { r.apply_write(write("bad", "v", None)).await.map(drop) }),
        Box::pin(async { r.apply_write(write("fine", "v", None)).await.map(drop) }),
    ];
    let outcomes = one_group(&engine, &r, changes).await;
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(Error::Corrupt(_))),
        "{outcomes:?}"
    );
    assert!(outcomes[2].is_ok(), "{outcomes:?}");
    let merged = merged.into_inner();
    assert!(matches!(merged[0], Err(Error::Corrupt(_))), "{merged:?}");
    assert!(merged[1].as_ref().is_ok_and(|m| m.changed), "{merged:?}");
    assert_eq!(r.read(Bytes::from("good")).await.unwrap(), Some(good));
    assert!(r.read(Bytes::from("fine")).await.unwrap().is_some());
}

#[tokio::test]
async fn a_panic_fails_its_group_and_the_writer_goes_on() {
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    let changes: Vec<Change> = vec![
        Box::pin(async { r.apply_write(write("a", "v", None)).await.map(drop) }),
        Box::pin(async {
            r.apply_write_then(write("b", "v", None), |_, _| {
                panic!("injected: ready panics")
            })
            .await
        }),
    ];
    let outcomes = one_group(&engine, &r, changes).await;
    for outcome in &outcomes {
        assert!(matches!(outcome, Err(Error::Internal(_))), "{outcomes:?}");
    }
    assert_eq!(r.read(Bytes::from("a")).await.unwrap(), None);
    r.apply_write(write("a", "v", None)).await.unwrap();
    assert!(r.read(Bytes::from("a")).await.unwrap().is_some());
}

/// A purge checks the digest against the key as the group's earlier
/// changes left it: a write queued before it in the same group keeps the
/// key.
#[tokio::test]
async fn a_purge_after_a_write_in_its_group_keeps_the_key() {
    fn digest(bytes: &[u8]) -> u64 {
        twox_hash::XxHash3_64::oneshot(bytes)
    }
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    let mut tomb = write("k", "", None);
    tomb.value = Value::Tombstone;
    r.apply_write(tomb.clone()).await.unwrap();
    let mut gone = write("gone", "", None);
    gone.value = Value::Tombstone;
    r.apply_write(gone).await.unwrap();
    let stored = r
        .read_stored(vec![Bytes::from("k"), Bytes::from("gone")])
        .await
        .unwrap();
    let (k_digest, gone_digest) = (
        digest(stored[0].as_deref().unwrap()),
        digest(stored[1].as_deref().unwrap()),
    );
    let purged = std::cell::RefCell::new(Vec::new());
    let changes: Vec<Change> = vec![
        Box::pin(async { r.apply_write(write("k", "back", None)).await.map(drop) }),
        Box::pin(async {
            *purged.borrow_mut() = r
                .purge_tombstones(
                    vec![
                        (Bytes::from("k"), k_digest),
                        (Bytes::from("gone"), gone_digest),
                    ],
                    digest,
                )
                .await?;
            Ok(())
        }),
    ];
    let outcomes = one_group(&engine, &r, changes).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(purged.into_inner(), vec![Bytes::from("gone")]);
    let k = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert!(k.versions().iter().any(|v| v.value == data("back")));
    assert_eq!(r.read(Bytes::from("gone")).await.unwrap(), None);
}

const WRITER_THREAD: &str = "ringkv-writer";

/// Jobs sent to the writer thread and not yet taken by it.
fn queued(r: &Replica) -> usize {
    match &r.writer.mode {
        super::Mode::Thread { turn, .. } => turn.queued.load(Ordering::SeqCst),
        super::Mode::Inline { .. } => 0,
    }
}

/// Under `periodic` a change that finds the writer idle is applied and
/// stored by its own task, as a group of one, with no hand-over.
#[tokio::test]
async fn a_change_finding_the_writer_idle_is_stored_by_its_caller() {
    let engine = Arc::new(GatedEngine::immediate());
    let r = replica_on(&engine);
    let theirs = foreign(2, "m", "theirs").await;
    let groups = counter(&r, "ringkv_storage_write_groups_total");
    r.apply_write(write("k", "v", None)).await.unwrap();
    assert!(
        r.merge(Bytes::from("m"), theirs.clone())
            .await
            .unwrap()
            .changed
    );
    assert_eq!(counter(&r, "ringkv_storage_caller_writes_total"), 2);
    assert_eq!(counter(&r, "ringkv_storage_write_groups_total") - groups, 2);
    let stored_by = engine.stored_by();
    assert_eq!(stored_by.len(), 2, "{stored_by:?}");
    assert!(
        stored_by.iter().all(|name| name != WRITER_THREAD),
        "{stored_by:?}"
    );
    let k = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert_eq!(k.versions()[0].value, data("v"));
    assert_eq!(r.read(Bytes::from("m")).await.unwrap(), Some(theirs));
}

/// An engine that cannot write without waiting (RocksDB under `always`)
/// keeps every change on the thread, where the group shares the fsync.
#[tokio::test]
async fn without_immediate_writes_every_change_goes_to_the_writer_thread() {
    let engine = Arc::new(GatedEngine::default());
    let r = replica_on(&engine);
    r.apply_write(write("k", "v", None)).await.unwrap();
    assert_eq!(counter(&r, "ringkv_storage_caller_writes_total"), 0);
    assert_eq!(engine.stored_by(), vec![WRITER_THREAD.to_string()]);
}

/// A change whose key is not in memory goes to the thread untouched: its
/// caller never waits on the disk.
#[tokio::test]
async fn a_change_whose_keys_need_the_disk_goes_to_the_writer_thread() {
    let engine = Arc::new(GatedEngine::immediate());
    engine.needs_disk.store(true, Ordering::SeqCst);
    let r = replica_on(&engine);
    r.apply_write(write("k", "v", None)).await.unwrap();
    assert_eq!(counter(&r, "ringkv_storage_caller_writes_total"), 0);
    assert_eq!(engine.stored_by(), vec![WRITER_THREAD.to_string()]);
    assert!(r.read(Bytes::from("k")).await.unwrap().is_some());
}

/// While the thread applies a group, a caller does not write beside it
/// (that would break the atomic read-merge-write): its change queues and
/// is the next group. Once the queue is empty again, callers write.
#[tokio::test]
async fn changes_arriving_while_the_writer_is_busy_queue_behind_it() {
    let engine = Arc::new(GatedEngine::immediate());
    let r = replica_on(&engine);
    let base = r.apply_write(write("k", "base", None)).await.unwrap();
    assert_eq!(counter(&r, "ringkv_storage_caller_writes_total"), 1);
    // The held change goes to the thread (its key "needs the disk"), which
    // holds the turn while it stores it.
    engine.needs_disk.store(true, Ordering::SeqCst);
    engine.arm();
    let _open = OpenOnDrop(&engine);
    let mut held = Box::pin(r.apply_write(write("held", "x", None)));
    assert!(futures::poll!(&mut held).is_pending());
    engine.wait_held();
    engine.needs_disk.store(false, Ordering::SeqCst);
    let changes = sibling_writes(&r, &base, 5);
    let mut all = Box::pin(join_all(changes));
    assert!(
        futures::poll!(&mut all).is_pending(),
        "the changes wait for the busy writer"
    );
    let groups = counter(&r, "ringkv_storage_write_groups_total");
    engine.open();
    held.await.unwrap();
    let outcomes = all.await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(counter(&r, "ringkv_storage_caller_writes_total"), 1);
    // The held group was counted when the thread began it: the five
    // changes are the one group after it.
    assert_eq!(counter(&r, "ringkv_storage_write_groups_total") - groups, 1);
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert_eq!(
        stored.versions().len(),
        5,
        "five concurrent writes, five siblings"
    );
    // Nothing is left counted as queued, or callers would never write
    // again. (Whether the very next change is the caller's depends on
    // whether the thread has let go of the turn yet, which it does just
    // after answering: not a thing to assert.)
    assert_eq!(queued(&r), 0);
}

/// When the engine would stall the write, the caller waits for it itself
/// (on a multi-threaded runtime, having moved its worker's other tasks
/// away) and the change is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_write_would_stall_waits_for_it_and_stores_it() {
    let engine = Arc::new(GatedEngine::immediate());
    engine.stalls.store(true, Ordering::SeqCst);
    let r = replica_on(&engine);
    r.apply_write(write("k", "v", None)).await.unwrap();
    assert_eq!(counter(&r, "ringkv_storage_caller_writes_total"), 1);
    let stored_by = engine.stored_by();
    assert_eq!(stored_by.len(), 1, "{stored_by:?}");
    assert_ne!(stored_by[0], WRITER_THREAD);
    assert!(r.read(Bytes::from("k")).await.unwrap().is_some());
}

/// Many tasks on two workers writing one key at once (all after the same
/// version, so concurrent), some by their own hand and some through the
/// thread: every write is kept as a sibling, so no two read-merge-writes
/// ran on the same stored state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_key_by_callers_and_the_thread_lose_nothing() {
    const WRITES: usize = 30;
    let engine = Arc::new(GatedEngine::immediate());
    let r = Arc::new(replica_on(&engine));
    let base = r.apply_write(write("k", "base", None)).await.unwrap();
    let ctx = base.state.context().clone();
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| {
            let (r, ctx) = (r.clone(), ctx.clone());
            tokio::spawn(
                async move { r.apply_write(write("k", &format!("v{i}"), Some(ctx))).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = r.read(Bytes::from("k")).await.unwrap().unwrap();
    assert_eq!(stored.versions().len(), WRITES);
}
