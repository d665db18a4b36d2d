//! How one group of the writer's changes is applied and stored: every key
//! the group touches read once, each job applied in order on the state the
//! jobs before it left, everything changed written as one batch, then each
//! job answered.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::super::{decode_state, stored_key_hash, wall_clock_ms, Applied, LocalWrite, Merged};
use super::{Job, Ready, Rules, Work};
use ringkv_core::error::{Error, Result};
use ringkv_core::version::{Value, VersionSet};
use ringkv_storage::{Cf, Engine, WriteBatch};

/// A job's outcome, computed but not yet sent (sent once the group is
/// stored).
enum Pending {
    Write(oneshot::Sender<Result<()>>, Result<()>),
    Merge(
        oneshot::Sender<Result<Vec<Result<Merged>>>>,
        Vec<Result<Merged>>,
    ),
    Purge(oneshot::Sender<Result<Vec<Bytes>>>, Vec<Bytes>),
}

impl Pending {
    /// Sends the outcome, or `failed` (the group's storage error) instead
    /// of every success. A waiter that gave up is no error.
    fn answer(self, failed: Option<&Error>) {
        match (self, failed) {
            (Pending::Write(done, outcome), None) => drop(done.send(outcome)),
            (Pending::Write(done, outcome), Some(e)) => {
                drop(done.send(outcome.and(Err(e.clone()))))
            }
            (Pending::Merge(done, outcome), None) => drop(done.send(Ok(outcome))),
            (Pending::Merge(done, _), Some(e)) => drop(done.send(Err(e.clone()))),
            (Pending::Purge(done, outcome), None) => drop(done.send(Ok(outcome))),
            (Pending::Purge(done, _), Some(e)) => drop(done.send(Err(e.clone()))),
        }
    }
}

/// Applies a group's jobs in order and stores what changed in one batch.
/// A group its caller loaded (from memory, on the runtime) is stored
/// without waiting where the engine allows.
pub(super) fn commit(engine: &dyn Engine, jobs: Vec<Job>, loaded: Option<Group>) {
    let on_runtime = loaded.is_some();
    let loaded = match loaded {
        Some(group) => Ok(group),
        None => Group::load(engine, &jobs),
    };
    let mut group = match loaded {
        Ok(group) => group,
        Err(e) => {
            for job in jobs {
                job.fail(&e);
            }
            return;
        }
    };
    let pending: Vec<Pending> = jobs.into_iter().map(|job| group.apply(job)).collect();
    let failed = group.store(engine, on_runtime).err();
    for outcome in pending {
        outcome.answer(failed.as_ref());
    }
}

impl Job {
    /// Answers the job with `e` without applying it.
    pub(super) fn fail(self, e: &Error) {
        match self.work {
            Work::Write { done, .. } => drop(done.send(Err(e.clone()))),
            Work::Merge { done, .. } => drop(done.send(Err(e.clone()))),
            Work::Purge { done, .. } => drop(done.send(Err(e.clone()))),
        }
    }
}

/// A key's state as the group has left it so far.
enum Change {
    /// Written: the state, and its encoding when already computed.
    Put(VersionSet, Option<Vec<u8>>),
    /// Purged.
    Delete,
}

/// The keys of one group: as stored before it, and as its jobs change them.
pub(super) struct Group {
    /// Every key any job of the group touches, as stored before the group
    /// (`None`: absent), read in one lookup.
    stored: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys the group changed, with their latest state.
    changed: HashMap<Vec<u8>, Change>,
}

impl Group {
    fn load(engine: &dyn Engine, jobs: &[Job]) -> Result<Self> {
        let keys = Self::keys(jobs);
        let values = engine.multi_get(Cf::Data, &keys)?;
        Ok(Self::new(keys, values))
    }

    /// [`Self::load`] from memory alone; `None` when a key needs the disk.
    pub(super) fn load_cached(engine: &dyn Engine, jobs: &[Job]) -> Result<Option<Self>> {
        let keys = Self::keys(jobs);
        Ok(engine
            .multi_get_cached(Cf::Data, &keys)?
            .map(|values| Self::new(keys, values)))
    }

    /// Every stored key the jobs touch, once each.
    fn keys(jobs: &[Job]) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = jobs
            .iter()
            .flat_map(|job| job.work.stored_keys())
            .map(<[u8]>::to_vec)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn new(keys: Vec<Vec<u8>>, values: Vec<Option<Vec<u8>>>) -> Self {
        Self {
            stored: keys.into_iter().zip(values).collect(),
            changed: HashMap::new(),
        }
    }

    /// The key's current state: as an earlier job of the group left it, or
    /// as stored.
    fn current(&self, stored_key: &[u8]) -> Result<VersionSet> {
        match self.changed.get(stored_key) {
            Some(Change::Put(state, _)) => Ok(state.clone()),
            Some(Change::Delete) => Ok(VersionSet::new()),
            None => decode_state(self.stored.get(stored_key).and_then(Option::as_deref)),
        }
    }

    /// The key's current encoding (`None`: absent), for a purge's digest.
    fn current_bytes(&self, stored_key: &[u8]) -> Option<Vec<u8>> {
        match self.changed.get(stored_key) {
            Some(Change::Put(_, Some(encoded))) => Some(encoded.clone()),
            Some(Change::Put(state, None)) => Some(state.encode()),
            Some(Change::Delete) => None,
            None => self.stored.get(stored_key).cloned().flatten(),
        }
    }

    fn apply(&mut self, job: Job) -> Pending {
        let rules = job.rules;
        match job.work {
            Work::Write {
                stored_key,
                write,
                ready,
                done,
            } => Pending::Write(done, self.write(&rules, stored_key, write, ready)),
            Work::Merge { entries, done } => {
                let outcomes = entries
                    .into_iter()
                    .map(|(stored_key, incoming)| self.merge(&rules, stored_key, &incoming))
                    .collect();
                Pending::Merge(done, outcomes)
            }
            Work::Purge {
                targets,
                digest,
                done,
            } => {
                let purged = targets
                    .into_iter()
                    .filter_map(|(key, stored_key, expected)| {
                        self.purge(&stored_key, expected, digest).then_some(key)
                    })
                    .collect();
                Pending::Purge(done, purged)
            }
        }
    }

    /// A write coordinated by this node: a new dot from it, superseding
    /// what the context covers.
    fn write(
        &mut self,
        rules: &Rules,
        stored_key: Vec<u8>,
        write: LocalWrite,
        ready: Ready,
    ) -> Result<()> {
        let mut state = self.current(&stored_key)?;
        let node = rules.node;
        // Entries of nodes that never wrote this key and are not members
        // cover nothing: dropped, they can never grow the stored vector.
        let client_context = write.context.map(|mut seen| {
            seen.retain(|n| n == node || state.context().get(n) > 0 || write.members.contains(&n));
            seen
        });
        let wall = wall_clock_ms();
        if let Some(context) = &client_context {
            rules.clock.check_counters(context, wall)?;
        }
        if let Some(seen) = state.max_timestamp() {
            rules.clock.observe(seen, wall);
        }
        // The new dot's counter is at least `timestamp`, which this node
        // never issues twice (`clock`): a key purged here, or a stored state
        // older than what the other replicas hold (a restored backup, a lost
        // WAL tail), cannot make it reuse a dot that another replica covers
        // and would then drop.
        let timestamp = rules.clock.issue(&wall_clock_ms)?;
        let what = match write.value {
            Value::Data(_) => "put refused: the key would hold",
            Value::Tombstone => "delete refused: the key would hold",
        };
        let outcome = state.write(
            node,
            client_context.as_ref(),
            timestamp,
            write.value,
            write.expires_at_ms,
            rules.max_siblings,
        );
        let encoded = state.encode();
        if encoded.len() > rules.max_state_bytes {
            return Err(Error::KeyStateTooLarge {
                what: what.to_string(),
                siblings: state.versions().len(),
                bytes: encoded.len(),
                limit: rules.max_state_bytes,
            });
        }
        ready(
            Applied {
                state: state.clone(),
                outcome,
            },
            &encoded,
        );
        self.changed
            .insert(stored_key, Change::Put(state, Some(encoded)));
        Ok(())
    }

    /// One key's versions from another node, merged in. A merged state
    /// past the key state limit loses its oldest siblings
    /// ([`VersionSet::fit_within`]); one that still would grow past it is
    /// refused and the key left as it was.
    fn merge(
        &mut self,
        rules: &Rules,
        stored_key: Vec<u8>,
        incoming: &VersionSet,
    ) -> Result<Merged> {
        let current = self.current(&stored_key)?;
        let conflicting = current.conflicting_dots(incoming);
        if conflicting > 0 {
            rules
                .dot_conflicts
                .fetch_add(conflicting as u64, Ordering::Relaxed);
            tracing::error!(
                key_hash = stored_key_hash(&stored_key),
                conflicting,
                "a dot arrived with contents other than the ones held for it: some node issued a dot twice, and one of the two writes is lost"
            );
        }
        let mut state = current.merged(incoming);
        if rules.collapse_siblings {
            // The injected bug: silent, so not counted as collapsed.
            state.enforce_cap(1);
        }
        let collapsed =
            state.enforce_cap(rules.max_siblings) + state.fit_within(rules.max_state_bytes);
        let size = state.encoded_len();
        if size > rules.max_state_bytes && size > current.encoded_len() {
            return Err(Error::KeyStateTooLarge {
                what: "merge refused: the key would hold".to_string(),
                siblings: state.versions().len(),
                bytes: size,
                limit: rules.max_state_bytes,
            });
        }
        let changed = state != current;
        if changed {
            self.changed
                .insert(stored_key, Change::Put(state.clone(), None));
        }
        Ok(Merged {
            state,
            changed,
            collapsed,
        })
    }

    /// Deletes the key if its bytes still have the `expected` digest and
    /// hold only tombstones; whether it did. A value that no longer decodes
    /// is left for an operator, never deleted on the strength of a digest
    /// alone.
    fn purge(&mut self, stored_key: &[u8], expected: u64, digest: fn(&[u8]) -> u64) -> bool {
        let Some(bytes) = self.current_bytes(stored_key) else {
            return false;
        };
        if digest(&bytes) != expected {
            return false;
        }
        match VersionSet::decode(&bytes) {
            Ok(state) if !state.is_empty() && state.all_tombstones() => {
                self.changed.insert(stored_key.to_vec(), Change::Delete);
                true
            }
            _ => false,
        }
    }

    /// Writes every changed key in one batch. `on_runtime`: the caller is
    /// a task of the async runtime, which must not block it unawares.
    fn store(self, engine: &dyn Engine, on_runtime: bool) -> Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (stored_key, change) in self.changed {
            match change {
                Change::Put(_, Some(encoded)) => batch.put(Cf::Data, stored_key, encoded),
                Change::Put(state, None) => batch.put(Cf::Data, stored_key, state.encode()),
                Change::Delete => batch.delete(Cf::Data, stored_key),
            }
        }
        if on_runtime {
            if engine.write_now(&batch)? {
                return Ok(());
            }
            // A write stall: wait for it with the turn held (the next
            // changes wait too, as they would behind the thread), but let
            // the runtime move its other tasks to another worker.
            return block_in_place_if_possible(|| engine.write(batch));
        }
        engine.write(batch)
    }
}

/// Runs `f`, which may block, from a task of a multi-threaded runtime
/// after moving the worker's other tasks elsewhere; elsewhere (a
/// current-thread runtime, as in tests, or no runtime) it just runs it.
fn block_in_place_if_possible<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
