//! The register workload: blind overwrites of a few keys with unique
//! values, W=QUORUM and R=QUORUM, strict, during faults. R+W>N, so a read
//! meets every write acknowledged before it began.
//!
//! A read need not return that write itself: a put that may have taken
//! effect after it began (one not `fail`ed that did not complete before
//! it was invoked) may have superseded it. So, for each key:
//!
//! - an `ok` read r is stale ([`Rule::StaleRead`]) if some `ok` put w
//!   completed before r began, and no value r returned was written by a
//!   put that may have superseded w: w itself, or a put that did not fail
//!   and did not complete before w began. An empty read after an
//!   acknowledged put is stale. A stale read is reported once, with the
//!   newest acknowledged write it missed (the one that completed last);
//! - every value read was written by a put of the key that did not fail
//!   ([`Rule::NeverWritten`], [`Rule::FailedApplied`]) and had been
//!   invoked before the read completed ([`Rule::FromFuture`]).
//!
//! Staleness reduces to one number per read: the latest time by which a
//! put it returned may have taken effect (its deadline). A returned put
//! can supersede w exactly when its deadline is at or after w's start, so
//! r missed w exactly when w began after that deadline. An `info` put has
//! no deadline (it may land long after the client gave up), so a read
//! returning one is never stale.

use super::{
    by_key, degraded_windows, effect_deadline, indexes, overlaps, Provenance, Rule, WorkloadReport,
};
use crate::history::{Kind, Pair, Workload};

/// Checks the register workload's operations among `pairs`.
pub fn check(pairs: &[Pair<'_>]) -> WorkloadReport {
    let mut report = WorkloadReport::new(Workload::Register, pairs);
    let degraded = degraded_windows(pairs);
    for (key, ops) in by_key(pairs, &mut report) {
        let mut values = Provenance::new(
            "value",
            &ops.puts,
            |op| op.value.as_deref(),
            key,
            &mut report,
        );
        let acknowledged: Vec<&Pair<'_>> = ops
            .puts
            .iter()
            .copied()
            .filter(|p| p.kind() == Kind::Ok && p.invoke.value.is_some())
            .collect();
        for &(read, read_values) in &ops.reads {
            for value in read_values {
                values.observe(value, read);
            }
            if !read.invoke.last && overlaps(read, &degraded) {
                report.unchecked_reads += 1;
                continue;
            }
            // The returned put that may have taken effect last.
            let newest_returned = read_values
                .iter()
                .filter_map(|v| values.applied_writer(v))
                .max_by_key(|w| effect_deadline(w));
            let deadline = newest_returned.map(|w| effect_deadline(w));
            let newest_missed = acknowledged
                .iter()
                .filter(|w| w.end() < read.start())
                .filter(|w| deadline.is_none_or(|d| w.start() > d))
                .max_by_key(|w| w.end());
            let Some(missed) = newest_missed else {
                continue;
            };
            let missed_value = missed.invoke.value.as_deref().unwrap_or_default();
            let mut involved = [indexes(read), indexes(missed)].concat();
            let what = match newest_returned {
                None => format!(
                    "a read returned {read_values:?}, missing value {missed_value:?} \
                     acknowledged before it began"
                ),
                Some(returned) => {
                    involved.extend(indexes(returned));
                    format!(
                        "a read returned {read_values:?}, missing value {missed_value:?} \
                         acknowledged before it began; the newest value it returned, {:?}, \
                         was written before that put began",
                        returned.invoke.value.as_deref().unwrap_or_default()
                    )
                }
            };
            report.violate(Rule::StaleRead, key, what, involved);
        }
        values.report(key, &mut report);
    }
    report
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
        let mut h = Script::new(Workload::Register);
        h.get_ok(2, "k", &[]);
        h.put_ok(1, "k", "1");
        h.get_ok(2, "k", &["1"]);
        h.put(1, "k", "2");
        h.get(2, "k"); // overlaps put 2: either answer is right
        h.read(2, &["1"]);
        h.ok(1);
        h.get_ok(2, "k", &["2"]);
        h.put(1, "k", "3");
        h.fail(1);
        h.get_ok(2, "k", &["2"]);
        h.final_read("k", &["2"]);

        let report = run(&h);
        assert_rules(&report, &[]);
        assert_eq!(report.final_reads, 1);
        assert_eq!(
            (report.gets.ok, report.puts.ok, report.puts.fail),
            (6, 2, 1)
        );
    }

    #[test]
    fn a_read_missing_an_earlier_acknowledged_write_is_stale() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "1");
        h.put_ok(1, "k", "2");
        let stale = h.get_ok(2, "k", &["1"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::StaleRead]);
        let v = &report.violations[0];
        assert!(v.ops.contains(&stale));
        assert!(v.what.contains("missing value \"2\""), "{}", v.what);
    }

    #[test]
    fn a_stale_read_within_a_disk_loss_window_is_not_checked_but_one_after_is() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "1");
        h.put_ok(1, "k", "2");
        h.fault(9, "disk-restore-old-copy");
        h.get_ok(2, "k", &["1"]); // a replica forgot "2": not checked
        h.ok(9); // the replicas agreed again
        h.get_ok(2, "k", &["2"]);
        let stale = h.get_ok(2, "k", &["1"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::StaleRead]);
        assert_eq!(report.unchecked_reads, 1);
        assert!(report.violations[0].ops.contains(&stale));
    }

    #[test]
    fn other_faults_open_no_window() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "1");
        h.put_ok(1, "k", "2");
        h.fault(9, "kill");
        h.get_ok(2, "k", &["1"]);
        h.ok(9);

        let report = run(&h);
        assert_rules(&report, &[Rule::StaleRead]);
        assert_eq!(report.unchecked_reads, 0);
    }

    #[test]
    fn a_write_concurrent_with_the_missed_one_may_supersede_it() {
        let mut h = Script::new(Workload::Register);
        h.put(1, "k", "1");
        h.put(3, "k", "2"); // begins before 1 completes
        h.ok(1);
        h.ok(3);
        h.get_ok(2, "k", &["1"]); // 1 landed after 2
        h.get_ok(2, "k", &["2"]); // or 2 after 1: read repair, other quorum
        h.put(1, "k", "3");
        h.put(3, "k", "4"); // begins before 3 completes
        h.ok(1);
        h.get_ok(2, "k", &["4"]); // 4 is still running: it may have landed already

        let report = run(&h);
        assert_rules(&report, &[]);
    }

    #[test]
    fn an_indeterminate_write_may_supersede_even_after_the_client_gave_up() {
        let mut h = Script::new(Workload::Register);
        h.put(3, "k", "0");
        h.info(3); // a timeout: the write may still be on its way
        h.put_ok(1, "k", "1");
        h.get_ok(2, "k", &["0"]);

        let report = run(&h);
        assert_rules(&report, &[]);
    }

    #[test]
    fn an_empty_read_after_an_acknowledged_write_is_stale() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "1");
        h.get_ok(2, "k", &[]);

        let report = run(&h);
        assert_rules(&report, &[Rule::StaleRead]);
    }

    #[test]
    fn a_stale_read_is_reported_once_with_the_newest_write_it_missed() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "0");
        h.put_ok(1, "k", "1");
        h.put_ok(1, "k", "2");
        h.put_ok(1, "k", "3");
        h.get_ok(2, "k", &["0"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::StaleRead]);
        assert!(report.violations[0].what.contains("missing value \"3\""));
        assert!(report.violations[0].what.contains("\"0\""));
    }

    #[test]
    fn a_value_never_written_is_caught() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "1");
        h.get_ok(2, "k", &["1", "x"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NeverWritten]);
    }

    #[test]
    fn a_failed_write_read_back_was_applied_and_supersedes_nothing() {
        let mut h = Script::new(Workload::Register);
        h.put_ok(1, "k", "1");
        h.put(1, "k", "2");
        h.fail(1);
        h.get_ok(2, "k", &["2"]);

        let report = run(&h);
        // A refused write cannot hide "1" either.
        assert_rules(&report, &[Rule::StaleRead, Rule::FailedApplied]);
    }

    #[test]
    fn a_value_read_before_its_write_began_is_caught() {
        let mut h = Script::new(Workload::Register);
        h.get_ok(2, "k", &["1"]);
        h.put_ok(1, "k", "1");

        let report = run(&h);
        assert_rules(&report, &[Rule::FromFuture]);
    }
}
