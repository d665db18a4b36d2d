//! The whole check: workloads mixed in one history, and the report.

use super::testkit::Script;
use super::*;
use crate::history::Workload;

/// One history with two workloads writing the same key name: a once put
/// and a register put of "k", interleaved.
fn mixed() -> Vec<Op> {
    let mut once = Script::new(Workload::Once);
    once.put_ok(1, "k", "once-1");
    once.final_read("k", &["once-1"]);
    let mut register = Script::new(Workload::Register);
    register.put_ok(2, "k", "reg-1");
    register.get_ok(3, "k", &["reg-1"]);

    // Interleave them, renumbering and retiming as one history.
    let mut ops: Vec<Op> = once.ops().iter().chain(register.ops()).cloned().collect();
    for (i, op) in ops.iter_mut().enumerate() {
        op.index = i as u64;
        op.time_ns = i as u64 * 10;
    }
    ops
}

#[test]
fn each_checker_reads_only_its_own_workload() {
    let report = check(&mixed()).unwrap();
    assert!(report.is_valid(), "{report}");
    assert!(report.workload(Workload::Once).unwrap().ran());
    assert!(report.workload(Workload::Register).unwrap().ran());
    assert!(!report.workload(Workload::Set).unwrap().ran());
    assert_eq!(report.workload(Workload::Once).unwrap().final_reads, 1);
}

#[test]
fn a_malformed_history_is_an_error_not_a_violation() {
    let mut ops = mixed();
    ops.remove(1); // the once put's completion
    ops.remove(1); // the final read's invocation: its completion now completes nothing
    assert!(check(&ops).is_err());
}

#[test]
fn the_report_counts_and_shows_violations() {
    let mut ops = mixed();
    // The final read of the once key loses its value.
    ops[3].values = Some(vec![]);
    let report = check(&ops).unwrap();
    assert_eq!((report.violation_count(), report.lost()), (1, 1));
    assert!(!report.is_valid());

    let summary = report.summary();
    assert!(
        summary.starts_with("INVALID: 1 violations, 1 lost"),
        "{summary}"
    );
    assert!(
        summary.contains("| once 2 ok 0 fail 0 info, 1 lost, 1 violations"),
        "{summary}"
    );
    assert!(!summary.contains("set"), "{summary}");
    assert!(!summary.contains('\n'));

    let shown = report.to_string();
    assert!(shown.contains("violations (first 1 of 1):"), "{shown}");
    assert!(
        shown.contains("once \"k\" [lost]: acknowledged value \"once-1\""),
        "{shown}"
    );
    assert!(shown.contains("(ops 0, 1, 2, 3)"), "{shown}");
}
