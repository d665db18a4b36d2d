//! Histories: every client operation of a run, as the clients saw it.
//!
//! Each operation is recorded twice, the way Jepsen records it: once when
//! a client process *invokes* it, and once when it completes, as `ok`
//! (it happened), `fail` (it certainly did not happen) or `info` (its
//! outcome is unknown: a timeout, a broken connection). A process has at
//! most one operation outstanding, so an invocation's completion is the
//! next entry of the same process. Checkers read the history, never the
//! workload's memory, so a failed run can be checked again from its file.
//!
//! The file is JSON lines, one [`Op`] per line, written as the run goes
//! (each line flushed), so a run that dies still leaves what it did.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// What an entry says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    /// Certainly not applied (refused before anything was written).
    Fail,
    /// Outcome unknown: may or may not have been applied.
    Info,
}

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    Get,
    Put,
    Delete,
    /// A fault the nemesis injected (invoke) and healed (ok).
    Fault,
}

/// Which workload issued the operation; each checker reads its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Every put goes to a key never written before.
    Once,
    /// Blind overwrites and reads of a few keys, strict quorums.
    Register,
    /// Read-merge-write adds of unique elements to a few hot keys.
    Set,
    /// Puts and deletes with contexts.
    Delete,
    /// The nemesis's faults: `key` is the fault's kind, `value` says what
    /// it did. A fault that lost a disk's recent writes completes only
    /// once the replicas agreed again after its heal (see
    /// [`crate::check::degraded_windows`]).
    Nemesis,
}

/// One history entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the history began.
    pub time_ns: u64,
    /// The client process; final reads after the heal use their own.
    pub process: u32,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: F,
    pub workload: Workload,
    pub key: String,
    /// Put: the value written (on the invocation and its completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Set workload put: the element this put adds (its value is the
    /// merged set plus this element).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// Get `ok`: the live sibling values, as returned (empty: not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Put or delete with a context: the index of the `ok` completion of
    /// the get whose context it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_from: Option<u64>,
    /// Get: a final read, made after every fault was healed and the
    /// replicas converged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    /// Why it failed, on `fail` and `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who served an `ok` completion, from its reply meta: for reading a
    /// violation, never for checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<Served>,
}

/// Where an operation ran, as its reply meta said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The coordinating node's id.
    pub coordinator: String,
    /// The replicas that acknowledged (writes) or answered (reads).
    pub replicas: Vec<String>,
    /// The layout version the coordinator routed with.
    pub layout: u64,
}

impl From<&ringkv_client::ReplyMeta> for Served {
    fn from(meta: &ringkv_client::ReplyMeta) -> Served {
        Served {
            coordinator: meta.coordinator.clone(),
            replicas: meta.replicas.clone(),
            layout: meta.layout_version,
        }
    }
}

impl Op {
    /// A new invocation, to be filled in and passed to [`History::invoke`].
    pub fn new(process: u32, workload: Workload, f: F, key: impl Into<String>) -> Op {
        Op {
            index: 0,
            time_ns: 0,
            process,
            kind: Kind::Invoke,
            f,
            workload,
            key: key.into(),
            value: None,
            element: None,
            values: None,
            context_from: None,
            last: false,
            error: None,
            served: None,
        }
    }
}

/// The recorder: shared by every client of a run, cheap to clone.
#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

struct Inner {
    ops: Vec<Op>,
    file: Option<BufWriter<File>>,
    path: Option<PathBuf>,
}

impl History {
    /// A history kept in memory only.
    pub fn in_memory() -> History {
        History {
            inner: Arc::new(Mutex::new(Inner {
                ops: Vec::new(),
                file: None,
                path: None,
            })),
            started: Instant::now(),
        }
    }

    /// A history also written to `path`, one JSON line per entry.
    pub fn create(path: &Path) -> Result<History> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let history = History::in_memory();
        {
            let mut inner = history.inner.lock().unwrap();
            inner.file = Some(BufWriter::new(file));
            inner.path = Some(path.to_path_buf());
        }
        Ok(history)
    }

    /// Where the history is written, if anywhere.
    pub fn path(&self) -> Option<PathBuf> {
        self.inner.lock().unwrap().path.clone()
    }

    /// Records `op` as an invocation; returns it as recorded (with its
    /// index and time), to be completed with [`History::complete`].
    pub fn invoke(&self, mut op: Op) -> Op {
        op.kind = Kind::Invoke;
        self.append(op)
    }

    /// Records the completion of `invocation` as `kind`, after `fill` has
    /// set what the completion carries (values read, error).
    pub fn complete(&self, invocation: &Op, kind: Kind, fill: impl FnOnce(&mut Op)) -> Op {
        let mut op = invocation.clone();
        op.kind = kind;
        op.error = None;
        fill(&mut op);
        self.append(op)
    }

    fn append(&self, mut op: Op) -> Op {
        let mut inner = self.inner.lock().unwrap();
        op.index = inner.ops.len() as u64;
        op.time_ns = self.started.elapsed().as_nanos() as u64;
        if let Some(file) = inner.file.as_mut() {
            // A history that cannot be written is a harness failure the
            // run's result must not hide: the checkers would see less.
            let line = serde_json::to_string(&op).expect("an Op always serializes");
            writeln!(file, "{line}")
                .and_then(|_| file.flush())
                .expect("writing the history file");
        }
        inner.ops.push(op.clone());
        op
    }

    /// Every entry so far, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.inner.lock().unwrap().ops.clone()
    }
}

/// Reads a history file written by [`History::create`].
pub fn read(path: &Path) -> Result<Vec<Op>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let line = line?;
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a history entry", path.display(), n + 1))
        })
        .collect()
}

/// An operation with its completion, paired from a history.
#[derive(Clone, Debug)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    /// `None` when the history ends before the operation completed (the
    /// run stopped): treat it as `info`.
    pub completion: Option<&'a Op>,
}

impl Pair<'_> {
    /// How the operation ended; `Info` if it never did.
    pub fn kind(&self) -> Kind {
        self.completion.map_or(Kind::Info, |c| c.kind)
    }

    /// When it was invoked, in nanoseconds.
    pub fn start(&self) -> u64 {
        self.invoke.time_ns
    }

    /// When it completed; `u64::MAX` if it never did.
    pub fn end(&self) -> u64 {
        self.completion.map_or(u64::MAX, |c| c.time_ns)
    }
}

/// Pairs every invocation with the next entry of the same process, in
/// invocation order. Errors if a process completes what it never invoked
/// or invokes twice without completing: such a history is malformed.
pub fn pairs(ops: &[Op]) -> Result<Vec<Pair<'_>>> {
    let mut open: std::collections::HashMap<u32, usize> = Default::default();
    let mut out: Vec<Pair<'_>> = Vec::new();
    for op in ops {
        match op.kind {
            Kind::Invoke => {
                if let Some(&at) = open.get(&op.process) {
                    anyhow::bail!(
                        "process {} invoked entry {} while entry {} was still open",
                        op.process,
                        op.index,
                        out[at].invoke.index
                    );
                }
                open.insert(op.process, out.len());
                out.push(Pair {
                    invoke: op,
                    completion: None,
                });
            }
            _ => {
                let at = open.remove(&op.process).with_context(|| {
                    format!(
                        "entry {} completes nothing: process {} had no open invocation",
                        op.index, op.process
                    )
                })?;
                out[at].completion = Some(op);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_file_reads_back_as_written_and_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let history = History::create(&path).unwrap();
        let mut put = Op::new(1, Workload::Register, F::Put, "k");
        put.value = Some("1".into());
        let put = history.invoke(put);
        let get = history.invoke(Op::new(2, Workload::Register, F::Get, "k"));
        history.complete(&put, Kind::Ok, |_| {});
        history.complete(&get, Kind::Info, |op| op.error = Some("timeout".into()));

        let ops = read(&path).unwrap();
        assert_eq!(ops, history.ops());
        let pairs = pairs(&ops).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].kind(), Kind::Ok);
        assert_eq!(pairs[0].invoke.value.as_deref(), Some("1"));
        assert_eq!(pairs[1].kind(), Kind::Info);
        assert_eq!(
            pairs[1].completion.unwrap().error.as_deref(),
            Some("timeout")
        );
    }

    #[test]
    fn malformed_histories_are_refused() {
        let history = History::in_memory();
        let a = history.invoke(Op::new(1, Workload::Once, F::Put, "a"));
        history.invoke(Op::new(1, Workload::Once, F::Put, "b"));
        assert!(pairs(&history.ops()).is_err());

        let stray = Op {
            kind: Kind::Ok,
            ..a
        };
        assert!(pairs(&[stray]).is_err());
    }

    #[test]
    fn an_operation_the_run_never_completed_counts_as_indeterminate() {
        let history = History::in_memory();
        history.invoke(Op::new(3, Workload::Set, F::Put, "s"));
        let ops = history.ops();
        let pairs = pairs(&ops).unwrap();
        assert_eq!(pairs[0].kind(), Kind::Info);
        assert_eq!(pairs[0].end(), u64::MAX);
    }
}
