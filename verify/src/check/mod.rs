//! Checkers: what a history must satisfy, workload by workload.
//!
//! A checker reads the paired history ([`crate::history::pairs`]) and
//! nothing else: no network, no clock, no memory of the run. Each one
//! keeps only its own workload's operations and checks each key apart,
//! because ringkv promises nothing across keys.
//!
//! Every checker reads outcomes the same way. `ok` means the operation
//! happened; `fail` means it certainly did not (ringkv refuses a write
//! before applying it anywhere); `info`, or no completion at all, means it
//! may have happened, at any time after it was invoked, even after the
//! client gave up on it (a forwarded write can still be in flight). An
//! operation took effect somewhere between its invocation and its
//! completion, so one operation is known to precede another only when it
//! completed before the other began (`a.end() < b.start()`); overlapping
//! operations may have taken effect in either order.
//!
//! Final reads (`last: true`) are made after every fault healed and the
//! replicas converged, with R=ALL, one per key: they say what the cluster
//! kept. They are also ordinary reads for every other rule. If a key has
//! several, the last one in the history is the final one.
//!
//! # Disk faults that lose a replica's recent writes
//!
//! A write acknowledged at W = QUORUM is on two replicas. When the nemesis
//! takes one of them back in time (a lost WAL tail, a directory restored
//! from an older copy), the write survives on the other and anti-entropy
//! brings it back; but until it has, a quorum read may meet the replica
//! that lost it and one that never had it. R + W > N assumes no replica
//! forgets, so the rules that demand what a read *during the run* returns
//! (register staleness, delete resurrection) do not apply to reads that
//! overlap such a fault's [degraded window](degraded_windows), from its
//! injection until the replicas agreed again after its heal. Those reads
//! are counted as unchecked. Final reads and every other rule apply in
//! full: the write must still be there at the end.
//!
//! What each workload must satisfy is told in its module: [`once`],
//! [`register`], [`set`] and [`delete`]. A broken rule becomes a
//! [`Violation`]; a write the cluster acknowledged and then lost is also
//! counted in [`WorkloadReport::lost`], because that is the number a
//! campaign watches.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;

use crate::history::{pairs, Kind, Op, Pair, F};

pub mod delete;
pub mod once;
pub mod register;
mod report;
pub mod set;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use report::{Outcomes, Report, Rule, Violation, WorkloadReport};
pub use set::{decode_set, encode_set};

/// Kinds of nemesis fault (their `key`) that take a replica's disk back
/// in time.
pub const DISK_LOSS_FAULTS: [&str; 2] = ["disk-lost-wal-tail", "disk-restore-old-copy"];

/// The windows, as (start, end) times, in which a replica had lost recent
/// writes: from each such fault's injection until its completion, which
/// the nemesis records once the replicas agreed again after the heal. A
/// fault that never completed `ok` lasts to the end of the history.
pub fn degraded_windows(pairs: &[Pair<'_>]) -> Vec<(u64, u64)> {
    pairs
        .iter()
        .filter(|p| p.invoke.f == F::Fault && DISK_LOSS_FAULTS.contains(&p.invoke.key.as_str()))
        .map(|p| {
            let end = if p.kind() == Kind::Ok {
                p.end()
            } else {
                u64::MAX
            };
            (p.start(), end)
        })
        .collect()
}

/// Whether `op` overlaps any of `windows`.
pub(crate) fn overlaps(op: &Pair<'_>, windows: &[(u64, u64)]) -> bool {
    windows
        .iter()
        .any(|&(start, end)| op.start() <= end && op.end() >= start)
}

/// Checks a whole history: every workload's operations with its checker.
/// Errors only if the history is malformed (see [`pairs`]); everything a
/// checker finds wrong is in the report.
pub fn check(ops: &[Op]) -> Result<Report> {
    let pairs = pairs(ops)?;
    Ok(Report {
        workloads: vec![
            once::check(&pairs),
            register::check(&pairs),
            set::check(&pairs),
            delete::check(&pairs),
        ],
    })
}

/// The history indexes of an operation: its invocation and, if it
/// completed, its completion.
fn indexes(pair: &Pair<'_>) -> Vec<u64> {
    std::iter::once(pair.invoke.index)
        .chain(pair.completion.map(|c| c.index))
        .collect()
}

/// When an operation may have taken effect, at the latest. An `info`
/// operation may still take effect after the client gave up on it, so it
/// has no such bound; `Pair::end` would be when the client gave up.
fn effect_deadline(pair: &Pair<'_>) -> u64 {
    match pair.kind() {
        Kind::Ok | Kind::Fail => pair.end(),
        Kind::Info | Kind::Invoke => u64::MAX,
    }
}

/// The values an `ok` get returned; `None` for any other get.
fn read_values<'a>(pair: &Pair<'a>) -> Option<&'a [String]> {
    match pair.completion {
        Some(c) if c.kind == Kind::Ok => c.values.as_deref(),
        _ => None,
    }
}

/// One key's operations of one workload, in invocation order.
struct KeyOps<'p, 'a> {
    puts: Vec<&'p Pair<'a>>,
    /// `ok` gets, with the values each returned.
    reads: Vec<(&'p Pair<'a>, &'a [String])>,
    deletes: Vec<&'p Pair<'a>>,
}

impl<'p, 'a> KeyOps<'p, 'a> {
    /// The final read: the last `ok` get marked `last`.
    fn final_read(&self) -> Option<(&'p Pair<'a>, &'a [String])> {
        self.reads
            .iter()
            .rev()
            .find(|(pair, _)| pair.invoke.last)
            .copied()
    }
}

/// `workload`'s operations among `pairs`, by key. An `ok` get without
/// values is reported as malformed and left out of the reads.
fn by_key<'p, 'a>(
    pairs: &'p [Pair<'a>],
    report: &mut WorkloadReport,
) -> BTreeMap<&'a str, KeyOps<'p, 'a>> {
    let mut keys: BTreeMap<&'a str, KeyOps<'p, 'a>> = BTreeMap::new();
    let workload = report.workload;
    for pair in pairs.iter().filter(|p| p.invoke.workload == workload) {
        let key = pair.invoke.key.as_str();
        let ops = keys.entry(key).or_insert_with(|| KeyOps {
            puts: Vec::new(),
            reads: Vec::new(),
            deletes: Vec::new(),
        });
        match pair.invoke.f {
            F::Put => ops.puts.push(pair),
            F::Delete => ops.deletes.push(pair),
            F::Fault => {}
            F::Get if pair.kind() != Kind::Ok => {}
            F::Get => match read_values(pair) {
                Some(values) => ops.reads.push((pair, values)),
                None => report.violate(
                    Rule::Malformed,
                    key,
                    "an ok get carries no values".to_string(),
                    indexes(pair),
                ),
            },
        }
    }
    keys
}

/// Where each value (or set element) of one key came from, and what reads
/// returned that no put could have written. A bad token is reported once
/// per rule it broke, with the first read that returned it and how many
/// did, so that one bogus write counts as one violation.
struct Provenance<'p, 'a> {
    /// What each token is called in messages: "value" or "element".
    noun: &'static str,
    /// The put that wrote each token.
    writers: HashMap<&'a str, &'p Pair<'a>>,
    /// Bad tokens: the first read that returned each, and how many did.
    bad: BTreeMap<(Rule, String), (&'p Pair<'a>, usize)>,
}

impl<'p, 'a> Provenance<'p, 'a> {
    /// Indexes `puts` by the token `token_of` finds in each invocation. A
    /// put without one, or writing one another put wrote, is malformed:
    /// the workloads write unique tokens.
    fn new(
        noun: &'static str,
        puts: &[&'p Pair<'a>],
        token_of: impl Fn(&'a Op) -> Option<&'a str>,
        key: &str,
        report: &mut WorkloadReport,
    ) -> Provenance<'p, 'a> {
        let mut writers: HashMap<&'a str, &'p Pair<'a>> = HashMap::new();
        for &put in puts {
            let Some(token) = token_of(put.invoke) else {
                report.violate(
                    Rule::Malformed,
                    key,
                    format!("a put carries no {noun}"),
                    indexes(put),
                );
                continue;
            };
            if let Some(first) = writers.get(token) {
                let ops = [indexes(first), indexes(put)].concat();
                report.violate(
                    Rule::Malformed,
                    key,
                    format!("{noun} {token:?} is written by two puts"),
                    ops,
                );
                continue;
            }
            writers.insert(token, put);
        }
        Provenance {
            noun,
            writers,
            bad: BTreeMap::new(),
        }
    }

    /// The put that wrote `token`, if any.
    fn writer(&self, token: &str) -> Option<&'p Pair<'a>> {
        self.writers.get(token).copied()
    }

    /// The put that wrote `token`, if it may have been applied (it did
    /// not fail).
    fn applied_writer(&self, token: &str) -> Option<&'p Pair<'a>> {
        self.writer(token).filter(|w| w.kind() != Kind::Fail)
    }

    /// Checks that `read` could have returned `token`: some put wrote it,
    /// did not fail, and had been invoked by the time the read completed.
    fn observe(&mut self, token: &str, read: &'p Pair<'a>) {
        let rule = match self.writer(token) {
            None => Rule::NeverWritten,
            Some(w) if w.kind() == Kind::Fail => Rule::FailedApplied,
            Some(w) if w.start() > read.end() => Rule::FromFuture,
            Some(_) => return,
        };
        self.bad
            .entry((rule, token.to_string()))
            .and_modify(|(_, reads)| *reads += 1)
            .or_insert((read, 1));
    }

    /// Reports every bad token seen so far.
    fn report(&mut self, key: &str, report: &mut WorkloadReport) {
        let noun = self.noun;
        for ((rule, token), (read, reads)) in std::mem::take(&mut self.bad) {
            let writer = self.writers.get(token.as_str());
            let mut ops = indexes(read);
            let what = match (rule, writer) {
                (Rule::NeverWritten, _) | (_, None) => {
                    format!("{noun} {token:?}, which no put wrote, was read ({reads} reads)")
                }
                (Rule::FailedApplied, Some(w)) => {
                    ops.extend(indexes(w));
                    format!(
                        "{noun} {token:?} of a put that failed was read ({reads} reads): \
                         a refused write was applied"
                    )
                }
                (_, Some(w)) => {
                    ops.extend(indexes(w));
                    format!(
                        "{noun} {token:?} was read ({reads} reads) by a read that completed \
                         before its put was invoked"
                    )
                }
            };
            report.violate(rule, key, what, ops);
        }
    }
}
