//! The checkers' verdict: per workload, how operations ended, how many
//! acknowledged writes were lost, and every broken rule with the history
//! entries that show it. `Display` is for a person reading one run;
//! [`Report::summary`] is one line for a campaign's log.

use std::fmt;

use crate::history::{Kind, Pair, Workload, F};

/// How many violations [`Report`]'s `Display` prints; the rest are counted.
const VIOLATIONS_SHOWN: usize = 20;

/// The checkers' verdict on one history.
#[derive(Clone, Debug)]
pub struct Report {
    /// One per workload, in the order of [`Workload`], whether it ran or
    /// not (one that did not run has no operations and no violations).
    pub workloads: Vec<WorkloadReport>,
}

impl Report {
    /// Every violation of every workload.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.workloads.iter().flat_map(|w| &w.violations)
    }

    pub fn violation_count(&self) -> usize {
        self.workloads.iter().map(|w| w.violations.len()).sum()
    }

    /// Acknowledged writes lost, over every workload.
    pub fn lost(&self) -> usize {
        self.workloads.iter().map(|w| w.lost).sum()
    }

    /// True when the history broke no rule.
    pub fn is_valid(&self) -> bool {
        self.violation_count() == 0
    }

    /// The report of one workload.
    pub fn workload(&self, workload: Workload) -> Option<&WorkloadReport> {
        self.workloads.iter().find(|w| w.workload == workload)
    }

    /// One line for a campaign's log, e.g.
    /// `valid: 0 violations, 0 lost | once 812 ok 3 fail 9 info, 0 lost, 0 violations | ...`;
    /// workloads that did not run are left out.
    pub fn summary(&self) -> String {
        let verdict = if self.is_valid() { "valid" } else { "INVALID" };
        let mut line = format!(
            "{verdict}: {} violations, {} lost",
            self.violation_count(),
            self.lost()
        );
        for w in self.workloads.iter().filter(|w| w.ran()) {
            let all = w.all();
            line += &format!(
                " | {} {} ok {} fail {} info, {} lost, {} violations",
                name(w.workload),
                all.ok,
                all.fail,
                all.info,
                w.lost,
                w.violations.len()
            );
        }
        line
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<9} {:>20} {:>20} {:>20} {:>6} {:>6} {:>10}",
            "workload",
            "get ok/fail/info",
            "put ok/fail/info",
            "delete ok/fail/info",
            "final",
            "lost",
            "violations"
        )?;
        for w in self.workloads.iter().filter(|w| w.ran()) {
            writeln!(
                f,
                "{:<9} {:>20} {:>20} {:>20} {:>6} {:>6} {:>10}",
                name(w.workload),
                w.gets.to_string(),
                w.puts.to_string(),
                w.deletes.to_string(),
                w.final_reads,
                w.lost,
                w.violations.len()
            )?;
        }
        if let Some(d) = self.workload(Workload::Delete).filter(|w| w.ran()) {
            writeln!(
                f,
                "delete: {} acknowledged deletes checked, {} of them covering every earlier acknowledged put",
                d.deletes.ok, d.covering_deletes
            )?;
        }
        let total = self.violation_count();
        if total > 0 {
            writeln!(
                f,
                "violations (first {} of {total}):",
                total.min(VIOLATIONS_SHOWN)
            )?;
            for v in self.violations().take(VIOLATIONS_SHOWN) {
                writeln!(f, "  {v}")?;
            }
        }
        Ok(())
    }
}

/// One workload's share of a [`Report`].
#[derive(Clone, Debug)]
pub struct WorkloadReport {
    pub workload: Workload,
    /// Outcomes of the gets, final reads included; an operation the run
    /// never completed counts as `info`.
    pub gets: Outcomes,
    pub puts: Outcomes,
    pub deletes: Outcomes,
    /// `ok` final reads: one per key touched, or the harness missed some.
    pub final_reads: usize,
    /// Acknowledged writes (or set elements a read had seen) missing from
    /// the final read. Each is also a [`Rule::Lost`] violation.
    pub lost: usize,
    /// Delete workload only: `ok` deletes whose context covered every put
    /// acknowledged before their get began (every `ok` delete is checked;
    /// these are the ones after which nothing promised was left).
    pub covering_deletes: usize,
    /// Reads during the run that overlapped a disk fault's degraded
    /// window, to which the register and delete rules do not apply (see
    /// [`super::degraded_windows`]).
    pub unchecked_reads: usize,
    pub violations: Vec<Violation>,
}

impl WorkloadReport {
    /// An empty report for `workload`, with the outcomes of its
    /// operations among `pairs` counted.
    pub(super) fn new(workload: Workload, pairs: &[Pair<'_>]) -> WorkloadReport {
        let mut report = WorkloadReport {
            workload,
            gets: Outcomes::default(),
            puts: Outcomes::default(),
            deletes: Outcomes::default(),
            final_reads: 0,
            lost: 0,
            covering_deletes: 0,
            unchecked_reads: 0,
            violations: Vec::new(),
        };
        for pair in pairs.iter().filter(|p| p.invoke.workload == workload) {
            let outcomes = match pair.invoke.f {
                F::Get => &mut report.gets,
                F::Put => &mut report.puts,
                F::Delete => &mut report.deletes,
                F::Fault => continue,
            };
            outcomes.count(pair.kind());
            if pair.invoke.last && pair.invoke.f == F::Get && pair.kind() == Kind::Ok {
                report.final_reads += 1;
            }
        }
        report
    }

    /// True if the history has any operation of this workload.
    pub fn ran(&self) -> bool {
        self.all().total() > 0
    }

    /// Outcomes of every operation, whatever its kind.
    pub fn all(&self) -> Outcomes {
        Outcomes {
            ok: self.gets.ok + self.puts.ok + self.deletes.ok,
            fail: self.gets.fail + self.puts.fail + self.deletes.fail,
            info: self.gets.info + self.puts.info + self.deletes.info,
        }
    }

    /// How many violations broke `rule`.
    pub fn count(&self, rule: Rule) -> usize {
        self.violations.iter().filter(|v| v.rule == rule).count()
    }

    pub(super) fn violate(&mut self, rule: Rule, key: &str, what: String, ops: Vec<u64>) {
        self.violations.push(Violation {
            workload: self.workload,
            rule,
            key: key.to_string(),
            what,
            ops,
        });
    }
}

/// How operations of one kind ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub ok: usize,
    pub fail: usize,
    /// Indeterminate, or never completed.
    pub info: usize,
}

impl Outcomes {
    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Ok => self.ok += 1,
            Kind::Fail => self.fail += 1,
            Kind::Info | Kind::Invoke => self.info += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.ok, self.fail, self.info)
    }
}

/// One broken rule, with the history entries that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub workload: Workload,
    /// Which rule, so that runs can be compared by kind of failure.
    pub rule: Rule,
    pub key: String,
    /// One readable sentence: what was seen and why it is wrong.
    pub what: String,
    /// Indexes of the history entries involved (invocation, then
    /// completion, of each operation), to find them in the history file;
    /// the operation the violation is about (usually the read) first.
    pub ops: Vec<u64>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<String> = self.ops.iter().map(u64::to_string).collect();
        write!(
            f,
            "{} {:?} [{}]: {} (ops {})",
            name(self.workload),
            self.key,
            self.rule,
            self.what,
            ops.join(", ")
        )
    }
}

/// The kinds of broken rule; each checker's module says which it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// An acknowledged write, or a set element a read had seen, is missing
    /// from the final read.
    Lost,
    /// A key with acknowledged writes has no final read: the harness did
    /// not read what it had to, so nothing about the key was checked.
    NotRead,
    /// A read returned what a `fail` put wrote: a refused write was applied.
    FailedApplied,
    /// A read returned a value (or set element) no put of the key wrote.
    NeverWritten,
    /// A read returned a value whose put was invoked after the read
    /// completed.
    FromFuture,
    /// A once read returned more than one sibling, though the key was
    /// written once.
    Siblings,
    /// A register read missed a write acknowledged before it began, and
    /// returned nothing that could have superseded it.
    StaleRead,
    /// A value an acknowledged delete's context covered was read again
    /// after the delete.
    Resurrected,
    /// The history lacks what a checker needs (a put without a value, a
    /// delete without its get): a harness bug, not a ringkv one.
    Malformed,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Rule::Lost => "lost",
            Rule::NotRead => "not read",
            Rule::FailedApplied => "failed write applied",
            Rule::NeverWritten => "never written",
            Rule::FromFuture => "read from the future",
            Rule::Siblings => "siblings",
            Rule::StaleRead => "stale read",
            Rule::Resurrected => "resurrected",
            Rule::Malformed => "malformed",
        };
        f.write_str(name)
    }
}

/// The workload's name as the history file spells it.
fn name(workload: Workload) -> &'static str {
    match workload {
        Workload::Once => "once",
        Workload::Register => "register",
        Workload::Set => "set",
        Workload::Delete => "delete",
        Workload::Nemesis => "nemesis",
    }
}
