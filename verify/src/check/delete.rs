//! The delete workload: puts of unique values (blind or with a context),
//! reads (R=QUORUM), and deletes carrying the context of an earlier `ok`
//! read. A delete supersedes exactly the versions its read saw, so once it
//! is acknowledged those values must never come back, whatever the faults:
//! not through read repair, hinted handoff or anti-entropy from a replica
//! that missed the delete.
//!
//! Only a delete whose read saw everything can be checked that way. A
//! read during faults may miss a write, and a delete cannot remove what
//! its context never saw, so such a value may legitimately survive. A
//! delete d is *covering* when its read g saw every put acknowledged
//! before g began. Rules, for each key:
//!
//! - after an `ok` covering delete d, no read that began after d completed
//!   (final reads included) returns a value g returned
//!   ([`Rule::Resurrected`], once per delete, with the first such read).
//!   Values g did not return (puts concurrent with or after g, puts that
//!   were `info`) may appear;
//! - every value read was written by a put of the key that did not fail
//!   ([`Rule::NeverWritten`], [`Rule::FailedApplied`]) and had been
//!   invoked before the read completed ([`Rule::FromFuture`]);
//! - a delete names, in `context_from`, the `ok` completion of a get of
//!   its key ([`Rule::Malformed`] otherwise).
//!
//! Non-covering deletes are not checked; the report counts the covering
//! ones, so a run that checked little says so.

use std::collections::HashMap;

use super::{by_key, indexes, Provenance, Rule, WorkloadReport};
use crate::history::{Kind, Pair, Workload};

/// Checks the delete workload's operations among `pairs`.
pub fn check(pairs: &[Pair<'_>]) -> WorkloadReport {
    let mut report = WorkloadReport::new(Workload::Delete, pairs);
    for (key, ops) in by_key(pairs, &mut report) {
        let mut values = Provenance::new(
            "value",
            &ops.puts,
            |op| op.value.as_deref(),
            key,
            &mut report,
        );
        for &(read, read_values) in &ops.reads {
            for value in read_values {
                values.observe(value, read);
            }
        }
        values.report(key, &mut report);

        // Each ok get, by the index of its completion, which is what a
        // delete's context_from names.
        let reads_by_completion: HashMap<u64, (&Pair<'_>, &[String])> = ops
            .reads
            .iter()
            .filter_map(|&(read, vs)| read.completion.map(|c| (c.index, (read, vs))))
            .collect();
        for &delete in &ops.deletes {
            let basis = delete
                .invoke
                .context_from
                .and_then(|at| reads_by_completion.get(&at));
            let Some(&(get, deleted)) = basis else {
                report.violate(
                    Rule::Malformed,
                    key,
                    format!(
                        "a delete's context_from {:?} names no ok get of its key",
                        delete.invoke.context_from
                    ),
                    indexes(delete),
                );
                continue;
            };
            if delete.kind() != Kind::Ok || !covers(get, deleted, &ops.puts) {
                continue;
            }
            report.covering_deletes += 1;

            let mut came_back = ops
                .reads
                .iter()
                .filter(|(read, _)| read.start() > delete.end())
                .filter_map(|&(read, read_values)| {
                    let back: Vec<&String> =
                        read_values.iter().filter(|v| deleted.contains(v)).collect();
                    (!back.is_empty()).then_some((read, back))
                });
            let Some((first, back)) = came_back.next() else {
                continue;
            };
            let later = came_back.count();
            let mut involved = [indexes(first), indexes(delete), indexes(get)].concat();
            if let Some(put) = values.writer(back[0]) {
                involved.extend(indexes(put));
            }
            report.violate(
                Rule::Resurrected,
                key,
                format!(
                    "a read after a covering delete returned {back:?}, which the delete's get \
                     had seen, so the delete removed it (and {later} later reads did too)"
                ),
                involved,
            );
        }
    }
    report
}

/// True if `get`, which returned `seen`, saw every put among `puts`
/// acknowledged before it began.
fn covers(get: &Pair<'_>, seen: &[String], puts: &[&Pair<'_>]) -> bool {
    puts.iter()
        .filter(|w| w.kind() == Kind::Ok && w.end() < get.start())
        .all(|w| w.invoke.value.as_ref().is_some_and(|v| seen.contains(v)))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{assert_rules, Script};
    use super::*;

    fn run(script: &Script) -> WorkloadReport {
        script.check(check)
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        let seen = h.get_ok(2, "k", &["1"]);
        h.delete_ok(2, "k", seen);
        h.get_ok(2, "k", &[]);
        // A put with the context of a read after the delete.
        let empty = h.get_ok(1, "k", &[]);
        h.put_after(1, "k", "2", empty);
        h.ok(1);
        h.final_read("k", &["2"]);

        let report = run(&h);
        assert_rules(&report, &[]);
        assert_eq!(report.covering_deletes, 1);
        assert_eq!((report.deletes.ok, report.final_reads), (1, 1));
    }

    #[test]
    fn a_deleted_value_that_comes_back_is_resurrected() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        let seen = h.get_ok(2, "k", &["1"]);
        let delete = h.delete_ok(2, "k", seen);
        h.get_ok(2, "k", &[]);
        h.get_ok(2, "k", &["1"]);
        h.final_read("k", &["1"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::Resurrected]);
        assert!(report.violations[0].ops.contains(&delete));
        assert!(report.violations[0].what.contains("1 later reads did too"));
    }

    #[test]
    fn a_non_covering_delete_is_not_checked() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        h.put_ok(1, "k", "2"); // blind: siblings 1 and 2
        let partial = h.get_ok(2, "k", &["1"]); // missed 2
        h.delete_ok(2, "k", partial);
        h.final_read("k", &["1", "2"]);

        let report = run(&h);
        assert_rules(&report, &[]);
        assert_eq!(report.covering_deletes, 0);
        assert_eq!(report.deletes.ok, 1);
    }

    #[test]
    fn values_the_delete_did_not_see_may_survive_it() {
        let mut h = Script::new(Workload::Delete);
        h.put(3, "k", "0");
        h.info(3); // unknown: the read need not have seen it
        h.put_ok(1, "k", "1");
        let seen = h.get_ok(2, "k", &["1"]);
        h.put(1, "k", "2"); // concurrent with the delete
        h.delete_ok(2, "k", seen);
        h.ok(1);
        h.final_read("k", &["0", "2"]);

        let report = run(&h);
        assert_rules(&report, &[]);
        assert_eq!(report.covering_deletes, 1);
    }

    #[test]
    fn a_read_overlapping_the_delete_may_still_see_the_value() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        let seen = h.get_ok(2, "k", &["1"]);
        h.delete(2, "k", seen);
        h.get(3, "k");
        h.ok(2);
        h.read(3, &["1"]);
        h.final_read("k", &[]);

        let report = run(&h);
        assert_rules(&report, &[]);
    }

    #[test]
    fn a_value_never_written_is_caught() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        h.get_ok(2, "k", &["1", "x"]);
        h.final_read("k", &["1"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NeverWritten]);
    }

    #[test]
    fn a_delete_without_its_get_is_malformed() {
        let mut h = Script::new(Workload::Delete);
        let put = h.put_ok(1, "k", "1");
        h.delete_ok(2, "k", put);

        let report = run(&h);
        assert_rules(&report, &[Rule::Malformed]);
    }
}
