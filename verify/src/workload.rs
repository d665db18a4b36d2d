//! The workloads: client processes that run operations against the
//! cluster while the nemesis works, recording each in the history.
//!
//! - **once**: puts to keys never written before (the original check).
//! - **register**: blind overwrites and reads of a few keys, W = R =
//!   QUORUM, strict (only the key's own replicas count), so R + W > N.
//! - **set**: read–merge–write: read a hot key (R = QUORUM), union the
//!   elements of every sibling, add one unique element, write the union
//!   back with the read's context (W = QUORUM, sloppy): the way a ringkv
//!   application is meant to use siblings.
//! - **delete**: puts and deletes, each carrying the context of the read
//!   just before it, and reads; a deleted key is retired (never written
//!   again) so that its tombstone is purged during the run.
//!
//! Each process has one operation outstanding at a time, pauses a little
//! between operations (the load is bounded in rate and in time), and
//! classifies every failure as `fail` (certainly not applied: refused
//! before anything was written, or never sent) or `info` (may have been
//! applied).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use ringkv_client::{Client, Context, Error, Level, PutOptions, RequestOptions};
use ringkv_tests::faults::Rng;

use crate::check::set::{decode_set, encode_set};
use crate::history::{History, Kind, Op, Workload, F};

/// Processes per workload and the keys they share.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub once: usize,
    pub register: usize,
    pub set: usize,
    pub delete: usize,
    pub register_keys: usize,
    pub set_keys: usize,
    pub delete_keys: usize,
    /// Each request's deadline: short, so that a process stuck behind a
    /// partition moves on.
    pub timeout: Duration,
    /// Pause between a process's operations.
    pub think: Duration,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            once: 2,
            register: 3,
            set: 3,
            delete: 2,
            register_keys: 4,
            set_keys: 3,
            delete_keys: 6,
            timeout: Duration::from_secs(1),
            think: Duration::from_millis(20),
        }
    }
}

/// The running client processes.
pub struct Workloads {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    touched: Arc<Mutex<BTreeSet<(Workload, String)>>>,
}

/// Keys the final reads must cover, shared by the processes.
type Touched = Arc<Mutex<BTreeSet<(Workload, String)>>>;

/// What one process needs.
struct Proc {
    id: u32,
    /// One client per node, without routing: each operation enters the
    /// cluster at a node drawn at random, which coordinates it when it is
    /// one of the key's replicas and forwards it otherwise, so every
    /// replica coordinates some of each key's operations (as behind a
    /// load balancer).
    clients: Vec<Client>,
    /// The client of the operation in progress, in `clients`.
    current: usize,
    /// Per node, until when this process leaves it alone: a node that
    /// timed out or could not be reached is skipped for a while, as a
    /// client driver or load balancer marks a node down, so a partition
    /// does not cost every third operation a full timeout.
    avoid_until: Mutex<Vec<Instant>>,
    history: History,
    rng: Rng,
    spec: WorkloadSpec,
    touched: Touched,
    /// Delete workload: each key slot's current generation, shared by the
    /// processes (see [`Proc::delete`]).
    generations: Generations,
    seq: u64,
}

/// Per delete-key slot, the generation whose key is in use.
type Generations = Arc<Mutex<Vec<u64>>>;

impl Workloads {
    /// Starts every process of `spec` against `endpoints`; they run until
    /// [`Workloads::stop`] or `deadline`, whichever comes first.
    pub fn start(
        spec: &WorkloadSpec,
        endpoints: &[String],
        history: &History,
        seed: u64,
        deadline: Instant,
    ) -> Result<Workloads> {
        let stop = Arc::new(AtomicBool::new(false));
        let touched: Touched = Arc::default();
        let generations: Generations = Arc::new(Mutex::new(vec![0; spec.delete_keys.max(1)]));
        let mut tasks = Vec::new();
        let mut id = 0u32;
        let kinds = [
            (Workload::Once, spec.once),
            (Workload::Register, spec.register),
            (Workload::Set, spec.set),
            (Workload::Delete, spec.delete),
        ];
        for (workload, count) in kinds {
            for _ in 0..count {
                let clients = endpoints
                    .iter()
                    .map(|e| Client::new(&[e]).map(|c| c.with_routing(false)))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut proc = Proc {
                    id,
                    current: 0,
                    avoid_until: Mutex::new(vec![Instant::now(); clients.len()]),
                    clients,
                    history: history.clone(),
                    rng: Rng::new(seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9)),
                    spec: spec.clone(),
                    touched: touched.clone(),
                    generations: generations.clone(),
                    seq: 0,
                };
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        proc.seq += 1;
                        proc.current = proc.pick_node();
                        match workload {
                            Workload::Once => proc.once().await,
                            Workload::Register => proc.register().await,
                            Workload::Set => proc.set().await,
                            Workload::Delete => proc.delete().await,
                            Workload::Nemesis => unreachable!("no client runs the nemesis"),
                        }
                        tokio::time::sleep(proc.spec.think).await;
                    }
                }));
                id += 1;
            }
        }
        Ok(Workloads {
            stop,
            tasks,
            touched,
        })
    }

    /// Stops every process after its current operation; returns the keys
    /// they touched, for the final reads.
    pub async fn stop(self) -> BTreeSet<(Workload, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let touched = self.touched.lock().unwrap().clone();
        touched
    }
}

/// `fail` when the error says nothing was applied, `info` otherwise.
fn write_outcome(e: &Error) -> Kind {
    match e {
        Error::InvalidArgument(_)
        | Error::Unavailable(_)
        | Error::Overloaded(_)
        | Error::FailedPrecondition(_)
        | Error::Unreachable(_)
        | Error::Denied(_) => Kind::Fail,
        Error::Timeout(_) | Error::Indeterminate(_) | Error::Internal(_) => Kind::Info,
    }
}

/// Sibling values as text (values the workloads write are ASCII).
fn texts(siblings: &[ringkv_client::Sibling]) -> Vec<String> {
    siblings
        .iter()
        .map(|s| String::from_utf8_lossy(&s.value).into_owned())
        .collect()
}

impl Proc {
    fn client(&self) -> &Client {
        &self.clients[self.current]
    }

    /// A node at random among those not being avoided (any, if all are).
    fn pick_node(&mut self) -> usize {
        let now = Instant::now();
        let usable: Vec<usize> = {
            let avoid = self.avoid_until.lock().unwrap();
            (0..self.clients.len())
                .filter(|&i| avoid[i] <= now)
                .collect()
        };
        if usable.is_empty() {
            self.rng.below(self.clients.len())
        } else {
            usable[self.rng.below(usable.len())]
        }
    }

    /// After a failure that says the node is unreachable or too slow,
    /// leaves it alone for [`AVOID_FOR`].
    fn note(&self, e: &Error) {
        if matches!(
            e,
            Error::Timeout(_) | Error::Indeterminate(_) | Error::Unreachable(_)
        ) {
            self.avoid_until.lock().unwrap()[self.current] = Instant::now() + AVOID_FOR;
        }
    }

    fn options(&self, strict: bool) -> RequestOptions {
        RequestOptions {
            level: Some(Level::Quorum),
            sloppy: strict.then_some(false),
            timeout: Some(self.spec.timeout),
        }
    }

    fn touch(&self, workload: Workload, key: &str) {
        self.touched
            .lock()
            .unwrap()
            .insert((workload, key.to_string()));
    }

    /// A read; returns the completion and the context when it succeeded.
    async fn get(&self, workload: Workload, key: &str, strict: bool) -> Option<(Op, Context)> {
        self.touch(workload, key);
        let invoke = self.history.invoke(Op::new(self.id, workload, F::Get, key));
        match self
            .client()
            .get(key.to_string(), self.options(strict), false)
            .await
        {
            Ok(got) => {
                let values = texts(&got.siblings);
                let done = self.history.complete(&invoke, Kind::Ok, |op| {
                    op.values = Some(values);
                    op.served = Some((&got.meta).into());
                });
                Some((done, got.context))
            }
            Err(e) => {
                self.note(&e);
                let kind = if e.is_indeterminate() {
                    Kind::Info
                } else {
                    Kind::Fail
                };
                self.history
                    .complete(&invoke, kind, |op| op.error = Some(e.to_string()));
                None
            }
        }
    }

    /// A put; `basis` is the read whose context it carries.
    async fn put(
        &self,
        mut op: Op,
        value: String,
        basis: Option<(&Op, Context)>,
        strict: bool,
    ) -> Kind {
        self.touch(op.workload, &op.key);
        op.value = Some(value.clone());
        op.context_from = basis.as_ref().map(|(b, _)| b.index);
        let invoke = self.history.invoke(op);
        let opts = PutOptions {
            consistency: self.options(strict),
            context: basis.map(|(_, c)| c),
            ttl: None,
        };
        match self.client().put(invoke.key.clone(), value, opts).await {
            Ok(put) => {
                self.history
                    .complete(&invoke, Kind::Ok, |op| op.served = Some((&put.meta).into()));
                Kind::Ok
            }
            Err(e) => {
                self.note(&e);
                let kind = write_outcome(&e);
                self.history
                    .complete(&invoke, kind, |op| op.error = Some(e.to_string()));
                kind
            }
        }
    }

    async fn once(&mut self) {
        let key = format!("once-{}-{}", self.id, self.seq);
        let op = Op::new(self.id, Workload::Once, F::Put, &key);
        self.put(op, format!("{}-{}", self.id, self.seq), None, false)
            .await;
    }

    async fn register(&mut self) {
        let key = format!("reg-{}", self.rng.below(self.spec.register_keys));
        if self.rng.below(2) == 0 {
            let op = Op::new(self.id, Workload::Register, F::Put, &key);
            self.put(op, format!("{}-{}", self.id, self.seq), None, true)
                .await;
        } else {
            self.get(Workload::Register, &key, true).await;
        }
    }

    async fn set(&mut self) {
        let key = format!("set-{}", self.rng.below(self.spec.set_keys));
        let Some((read, context)) = self.get(Workload::Set, &key, false).await else {
            return;
        };
        let mut elements = BTreeSet::new();
        for value in read.values.as_deref().unwrap_or_default() {
            match decode_set(value) {
                Ok(set) => elements.extend(set),
                // The checker reports what no add wrote; nothing to add to.
                Err(_) => return,
            }
        }
        let element = format!("p{}-{}", self.id, self.seq);
        elements.insert(element.clone());
        let mut op = Op::new(self.id, Workload::Set, F::Put, &key);
        op.element = Some(element);
        self.put(op, encode_set(&elements), Some((&read, context)), false)
            .await;
    }

    /// The delete workload. Keys live in slots; a slot's key is
    /// `del-{slot}-{generation}`, and an acknowledged delete retires it:
    /// the slot moves to a new key and the deleted one is never written
    /// again, so its tombstone ages past the grace and is purged during the
    /// run, and the rules are checked both before and after the purge.
    /// Every tenth operation reads a retired key.
    async fn delete(&mut self) {
        let slot = self.rng.below(self.spec.delete_keys.max(1));
        let generation = self.generations.lock().unwrap()[slot];
        let key = format!("del-{slot}-{generation}");
        match self.rng.below(10) {
            0..=4 => {
                // Read, then write over what was read: the put supersedes
                // exactly the values the read returned.
                let Some((read, context)) = self.get(Workload::Delete, &key, false).await else {
                    return;
                };
                let op = Op::new(self.id, Workload::Delete, F::Put, &key);
                let value = format!("{}-{}", self.id, self.seq);
                self.put(op, value, Some((&read, context)), false).await;
            }
            5 => {
                self.get(Workload::Delete, &key, false).await;
            }
            6 => {
                if generation > 0 {
                    let retired = format!("del-{slot}-{}", self.rng.below(generation as usize));
                    self.get(Workload::Delete, &retired, false).await;
                }
            }
            _ => {
                let Some((read, context)) = self.get(Workload::Delete, &key, false).await else {
                    return;
                };
                if read.values.as_ref().is_none_or(|v| v.is_empty()) {
                    return;
                }
                let mut op = Op::new(self.id, Workload::Delete, F::Delete, &key);
                op.context_from = Some(read.index);
                let invoke = self.history.invoke(op);
                match self
                    .client()
                    .delete(key, Some(context), self.options(false))
                    .await
                {
                    Ok(meta) => {
                        self.history
                            .complete(&invoke, Kind::Ok, |op| op.served = Some((&meta).into()));
                        let mut generations = self.generations.lock().unwrap();
                        if generations[slot] == generation {
                            generations[slot] += 1;
                        }
                    }
                    Err(e) => {
                        self.note(&e);
                        let kind = write_outcome(&e);
                        self.history
                            .complete(&invoke, kind, |op| op.error = Some(e.to_string()));
                    }
                }
            }
        }
    }
}

/// How long a process leaves a node alone after it timed out.
const AVOID_FOR: Duration = Duration::from_secs(3);

/// Process ids of the final reads, apart from every workload process.
const FINAL_PROCESS: u32 = 1_000_000;

/// Reads every touched key with R = ALL, recorded as final reads; a read
/// that fails is retried a few times, and still failing is an error (the
/// cluster is whole by now).
pub async fn final_reads(
    client: &Client,
    history: &History,
    keys: &BTreeSet<(Workload, String)>,
) -> Result<usize> {
    let opts = RequestOptions {
        level: Some(Level::All),
        sloppy: Some(false),
        timeout: Some(Duration::from_secs(10)),
    };
    let mut failed = HashSet::new();
    for (workload, key) in keys {
        let mut attempt = 0;
        loop {
            let mut op = Op::new(FINAL_PROCESS, *workload, F::Get, key);
            op.last = true;
            let invoke = history.invoke(op);
            match client.get(key.clone(), opts, false).await {
                Ok(got) => {
                    let values = texts(&got.siblings);
                    history.complete(&invoke, Kind::Ok, |op| op.values = Some(values));
                    break;
                }
                Err(e) => {
                    history.complete(&invoke, Kind::Fail, |op| op.error = Some(e.to_string()));
                    attempt += 1;
                    if attempt == 5 {
                        failed.insert(key.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} keys could not be read at R = ALL after the heal: {:?}",
            failed.len(),
            failed.iter().take(5).collect::<Vec<_>>()
        );
    }
    Ok(keys.len())
}
