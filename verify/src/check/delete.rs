//! The delete workload: puts of unique values (blind or with a context),
//! reads (R=QUORUM), and deletes carrying the context of an earlier `ok`
//! read. A delete supersedes exactly the versions its read saw, so once it
//! is acknowledged those values must never come back, whatever the faults:
//! not through read repair, hinted handoff or anti-entropy from a replica
//! that missed the delete.
//!
//! What a delete's context covers is more than the values its read g
//! returned: a put that carried the context of an earlier read g'
//! superseded what g' returned, so a context that covers that put's value
//! covers g''s values too, and so on back ([`covered`]). A blind put's
//! superseding is not in the history (it is whatever its coordinator
//! held), so it extends nothing. Rules, for each key:
//!
//! - after an `ok` delete d, no read that began after d completed (final
//!   reads included) returns a value d's context covers
//!   ([`Rule::Resurrected`], once per delete, with the first such read).
//!   Values it did not cover (puts concurrent with or after g, puts that
//!   were `info`, puts g missed) may appear: a delete removes exactly what
//!   its context saw;
//! - every value read was written by a put of the key that did not fail
//!   ([`Rule::NeverWritten`], [`Rule::FailedApplied`]) and had been
//!   invoked before the read completed ([`Rule::FromFuture`]);
//! - a delete names, in `context_from`, the `ok` completion of a get of
//!   its key ([`Rule::Malformed`] otherwise).
//!
//! The report also counts *covering* deletes, whose context covered every
//! put acknowledged before g began: after one of those the key held
//! nothing anyone was promised, the case the issue names ("a key deleted
//! with a context that covers every acknowledged put never reads as
//! present again"). A run with few of them exercised that case little.

use std::collections::{HashMap, HashSet};

use super::{by_key, degraded_windows, indexes, overlaps, Provenance, Rule, WorkloadReport};
use crate::history::{Kind, Pair, Workload};

/// Checks the delete workload's operations among `pairs`.
pub fn check(pairs: &[Pair<'_>]) -> WorkloadReport {
    let mut report = WorkloadReport::new(Workload::Delete, pairs);
    let degraded = degraded_windows(pairs);
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
            if !read.invoke.last && overlaps(read, &degraded) {
                report.unchecked_reads += 1;
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
            if delete.kind() != Kind::Ok {
                continue;
            }
            let deleted = covered(deleted, &ops.puts, &reads_by_completion);
            if covers(get, &deleted, &ops.puts) {
                report.covering_deletes += 1;
            }

            let mut came_back = ops
                .reads
                .iter()
                .filter(|(read, _)| read.start() > delete.end())
                .filter(|(read, _)| read.invoke.last || !overlaps(read, &degraded))
                .filter_map(|&(read, read_values)| {
                    let back: Vec<&String> = read_values
                        .iter()
                        .filter(|v| deleted.contains(*v))
                        .collect();
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
                    "a read after an acknowledged delete returned {back:?}, which the \
                     delete's context covered, so the delete removed it (and {later} later \
                     reads did too)"
                ),
                involved,
            );
        }
    }
    report
}

/// True if `get`, which returned `seen`, saw every put among `puts`
/// acknowledged before it began.
fn covers(get: &Pair<'_>, covered: &HashSet<String>, puts: &[&Pair<'_>]) -> bool {
    puts.iter()
        .filter(|w| w.kind() == Kind::Ok && w.end() < get.start())
        .all(|w| w.invoke.value.as_ref().is_some_and(|v| covered.contains(v)))
}

/// The values a context covers: those its read returned (`seen`) and,
/// transitively, those returned by the read whose context each covered
/// put carried, for it superseded them. A put whose value is covered was
/// applied (someone read it), whatever its client heard.
fn covered(
    seen: &[String],
    puts: &[&Pair<'_>],
    reads_by_completion: &HashMap<u64, (&Pair<'_>, &[String])>,
) -> HashSet<String> {
    let mut covered: HashSet<String> = seen.iter().cloned().collect();
    let mut grew = true;
    while grew {
        grew = false;
        for put in puts {
            let (Some(value), Some(from)) = (&put.invoke.value, put.invoke.context_from) else {
                continue;
            };
            if !covered.contains(value) {
                continue;
            }
            if let Some((_, earlier)) = reads_by_completion.get(&from) {
                for v in earlier.iter() {
                    grew |= covered.insert(v.clone());
                }
            }
        }
    }
    covered
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
    fn a_value_back_within_a_disk_loss_window_is_not_checked_but_at_the_end_it_is() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        let seen = h.get_ok(2, "k", &["1"]);
        h.delete_ok(2, "k", seen);
        h.fault(9, "disk-lost-wal-tail");
        h.get_ok(2, "k", &["1"]); // a replica forgot the delete: not checked
        h.ok(9);
        h.get_ok(2, "k", &[]);

        let clean = {
            let mut h = h.clone();
            h.final_read("k", &[]);
            run(&h)
        };
        assert_rules(&clean, &[]);
        assert_eq!(clean.unchecked_reads, 1);

        h.final_read("k", &["1"]);
        assert_rules(&run(&h), &[Rule::Resurrected]);
    }

    #[test]
    fn a_context_covers_what_the_puts_it_saw_superseded() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        let first = h.get_ok(1, "k", &["1"]);
        h.put_after(1, "k", "2", first); // supersedes "1"
        h.ok(1);
        let seen = h.get_ok(2, "k", &["2"]);
        h.delete_ok(2, "k", seen);
        h.final_read("k", &["1"]); // what "2" superseded came back

        let report = run(&h);
        assert_eq!(report.covering_deletes, 1);
        assert_rules(&report, &[Rule::Resurrected]);
    }

    #[test]
    fn a_blind_put_supersedes_nothing_the_history_can_tell() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        h.put_ok(1, "k", "2"); // blind: what it superseded is unknown
        let seen = h.get_ok(2, "k", &["2"]);
        h.delete_ok(2, "k", seen);
        h.final_read("k", &[]);

        let report = run(&h);
        assert_eq!(report.covering_deletes, 0);
        assert_rules(&report, &[]);
    }

    #[test]
    fn a_non_covering_delete_still_removes_what_it_covered() {
        let mut h = Script::new(Workload::Delete);
        h.put_ok(1, "k", "1");
        h.put_ok(3, "k", "2"); // blind: maybe a sibling of 1
        let partial = h.get_ok(2, "k", &["1"]); // missed 2
        h.delete_ok(2, "k", partial);
        h.get_ok(2, "k", &["2"]); // 2 survives: the delete never saw it

        let mut clean = h.clone();
        clean.final_read("k", &["2"]);
        let report = run(&clean);
        assert_rules(&report, &[]);
        assert_eq!(report.covering_deletes, 0);
        assert_eq!(report.deletes.ok, 1);

        h.final_read("k", &["1", "2"]); // 1 came back
        assert_rules(&run(&h), &[Rule::Resurrected]);
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
