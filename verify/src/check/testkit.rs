//! A builder of small hand-made histories for the checkers' tests.
//!
//! Entries are appended in the order the test calls, each 10 ns after the
//! previous one, so "completed before began" is the order the test reads.
//! An invocation (`put`, `get`, `add`, `delete`) opens an operation for its
//! process; `ok`, `fail`, `info` or `read` completes it. The `_ok` forms
//! do both at once, for operations that overlap nothing.

use std::collections::{BTreeSet, HashMap};

use super::{encode_set, Rule, WorkloadReport};
use crate::history::{pairs, Kind, Op, Pair, Workload, F};

/// The process final reads use; test processes are small numbers.
const FINAL_PROCESS: u32 = 1000;

/// Time between two entries.
const TICK_NS: u64 = 10;

#[derive(Clone)]
pub(crate) struct Script {
    workload: Workload,
    ops: Vec<Op>,
    /// Each process's open invocation, as an index into `ops`.
    open: HashMap<u32, usize>,
}

impl Script {
    pub fn new(workload: Workload) -> Script {
        Script {
            workload,
            ops: Vec::new(),
            open: HashMap::new(),
        }
    }

    /// Runs `checker` on the history so far.
    pub fn check(&self, checker: fn(&[Pair<'_>]) -> WorkloadReport) -> WorkloadReport {
        checker(&pairs(&self.ops).expect("a script's history pairs"))
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Appends `op` at the next tick; returns its index.
    fn push(&mut self, mut op: Op) -> u64 {
        op.index = self.ops.len() as u64;
        op.time_ns = op.index * TICK_NS;
        self.ops.push(op);
        self.ops.len() as u64 - 1
    }

    fn invoke(&mut self, op: Op) -> u64 {
        assert!(
            !self.open.contains_key(&op.process),
            "process {} is busy",
            op.process
        );
        self.open.insert(op.process, self.ops.len());
        self.push(op)
    }

    fn complete(&mut self, process: u32, kind: Kind, values: Option<&[&str]>) -> u64 {
        let at = self
            .open
            .remove(&process)
            .expect("the process has an open operation");
        let mut op = self.ops[at].clone();
        op.kind = kind;
        op.values = values.map(|vs| vs.iter().map(|v| v.to_string()).collect());
        self.push(op)
    }

    /// The nemesis injects a fault of `kind` as `process`; `ok(process)`
    /// records that it is over.
    pub fn fault(&mut self, process: u32, kind: &str) -> u64 {
        let mut op = Op::new(process, Workload::Nemesis, F::Fault, kind);
        op.value = Some(format!("{kind} (a test fault)"));
        self.invoke(op)
    }

    pub fn put(&mut self, process: u32, key: &str, value: &str) -> u64 {
        let mut op = Op::new(process, self.workload, F::Put, key);
        op.value = Some(value.to_string());
        self.invoke(op)
    }

    /// A put carrying the context of the get completed at `context_from`.
    pub fn put_after(&mut self, process: u32, key: &str, value: &str, context_from: u64) -> u64 {
        let mut op = Op::new(process, self.workload, F::Put, key);
        op.value = Some(value.to_string());
        op.context_from = Some(context_from);
        self.invoke(op)
    }

    /// A set add of `element` to the set `base` (what its get had read).
    pub fn add(&mut self, process: u32, key: &str, element: &str, base: &[&str]) -> u64 {
        let mut set: BTreeSet<String> = base.iter().map(|e| e.to_string()).collect();
        set.insert(element.to_string());
        let mut op = Op::new(process, self.workload, F::Put, key);
        op.value = Some(encode_set(&set));
        op.element = Some(element.to_string());
        self.invoke(op)
    }

    pub fn get(&mut self, process: u32, key: &str) -> u64 {
        self.invoke(Op::new(process, self.workload, F::Get, key))
    }

    /// A delete carrying the context of the get completed at `context_from`.
    pub fn delete(&mut self, process: u32, key: &str, context_from: u64) -> u64 {
        let mut op = Op::new(process, self.workload, F::Delete, key);
        op.context_from = Some(context_from);
        self.invoke(op)
    }

    pub fn ok(&mut self, process: u32) -> u64 {
        self.complete(process, Kind::Ok, None)
    }

    pub fn fail(&mut self, process: u32) -> u64 {
        self.complete(process, Kind::Fail, None)
    }

    pub fn info(&mut self, process: u32) -> u64 {
        self.complete(process, Kind::Info, None)
    }

    /// Completes the process's get as `ok`, returning `values`.
    pub fn read(&mut self, process: u32, values: &[&str]) -> u64 {
        self.complete(process, Kind::Ok, Some(values))
    }

    pub fn put_ok(&mut self, process: u32, key: &str, value: &str) -> u64 {
        self.put(process, key, value);
        self.ok(process)
    }

    pub fn add_ok(&mut self, process: u32, key: &str, element: &str, base: &[&str]) -> u64 {
        self.add(process, key, element, base);
        self.ok(process)
    }

    /// A get that overlaps nothing; returns its `ok` completion's index,
    /// which a later delete or put names as its context.
    pub fn get_ok(&mut self, process: u32, key: &str, values: &[&str]) -> u64 {
        self.get(process, key);
        self.read(process, values)
    }

    pub fn delete_ok(&mut self, process: u32, key: &str, context_from: u64) -> u64 {
        self.delete(process, key, context_from);
        self.ok(process)
    }

    /// The final read of `key`.
    pub fn final_read(&mut self, key: &str, values: &[&str]) -> u64 {
        let mut op = Op::new(FINAL_PROCESS, self.workload, F::Get, key);
        op.last = true;
        self.invoke(op);
        self.read(FINAL_PROCESS, values)
    }
}

/// Asserts that `report` broke exactly `rules`, in order, and shows
/// every violation if not.
#[track_caller]
pub(crate) fn assert_rules(report: &WorkloadReport, rules: &[Rule]) {
    let got: Vec<Rule> = report.violations.iter().map(|v| v.rule).collect();
    let shown: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert_eq!(got, rules, "violations:\n{}", shown.join("\n"));
}
