//! The once workload: every put goes to a key never written before, with
//! a unique value, so each key has at most one version and anything else
//! a read returns was invented.
//!
//! Rules, for each key:
//!
//! - an `ok` put's value is in the final read ([`Rule::Lost`], counted in
//!   `lost`); an `ok` put of a key with no final read is [`Rule::NotRead`];
//! - no read returns more than one sibling ([`Rule::Siblings`]);
//! - every value read was written by a put of the key that did not fail
//!   ([`Rule::NeverWritten`], [`Rule::FailedApplied`]) and had been
//!   invoked before the read completed ([`Rule::FromFuture`]).
//!
//! An `info` put may or may not be there in the end: both are fine.

use super::{by_key, indexes, Provenance, Rule, WorkloadReport};
use crate::history::{Kind, Pair, Workload};

/// Checks the once workload's operations among `pairs`.
pub fn check(pairs: &[Pair<'_>]) -> WorkloadReport {
    let mut report = WorkloadReport::new(Workload::Once, pairs);
    for (key, ops) in by_key(pairs, &mut report) {
        let mut values = Provenance::new(
            "value",
            &ops.puts,
            |op| op.value.as_deref(),
            key,
            &mut report,
        );
        for &(read, read_values) in &ops.reads {
            if read_values.len() > 1 {
                report.violate(
                    Rule::Siblings,
                    key,
                    format!(
                        "a read returned {} siblings {read_values:?} of a key written once",
                        read_values.len()
                    ),
                    indexes(read),
                );
            }
            for value in read_values {
                values.observe(value, read);
            }
        }
        values.report(key, &mut report);

        let last = ops.final_read();
        for &put in ops.puts.iter().filter(|p| p.kind() == Kind::Ok) {
            let Some(value) = put.invoke.value.as_deref() else {
                continue; // reported as malformed above
            };
            match last {
                None => report.violate(
                    Rule::NotRead,
                    key,
                    format!("acknowledged value {value:?} was never read at the end: the key has no final read"),
                    indexes(put),
                ),
                Some((_, kept)) if kept.iter().any(|v| v == value) => {}
                Some((read, kept)) => {
                    report.lost += 1;
                    report.violate(
                        Rule::Lost,
                        key,
                        format!("acknowledged value {value:?} is not in the final read {kept:?}"),
                        [indexes(put), indexes(read)].concat(),
                    );
                }
            }
        }
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
        let mut h = Script::new(Workload::Once);
        h.put_ok(1, "a", "va");
        h.get_ok(2, "a", &["va"]);
        h.get_ok(2, "b", &[]);
        h.put(1, "b", "vb");
        h.info(1); // may or may not be there: here it is
        h.put(1, "c", "vc");
        h.info(1); // and here it is not
        h.put(1, "d", "vd");
        h.fail(1);
        h.final_read("a", &["va"]);
        h.final_read("b", &["vb"]);
        h.final_read("c", &[]);
        h.final_read("d", &[]);

        let report = run(&h);
        assert_rules(&report, &[]);
        assert_eq!(report.lost, 0);
        assert_eq!(report.final_reads, 4);
        assert_eq!(
            (report.puts.ok, report.puts.fail, report.puts.info),
            (1, 1, 2)
        );
    }

    #[test]
    fn an_acknowledged_put_missing_at_the_end_is_lost() {
        let mut h = Script::new(Workload::Once);
        h.put_ok(1, "a", "va");
        h.put_ok(1, "b", "vb");
        h.final_read("a", &["va"]);
        h.final_read("b", &[]);

        let report = run(&h);
        assert_eq!(report.lost, 1);
        assert_rules(&report, &[Rule::Lost]);
        assert_eq!(report.violations[0].key, "b");
    }

    #[test]
    fn an_acknowledged_put_without_a_final_read_is_reported() {
        let mut h = Script::new(Workload::Once);
        h.put_ok(1, "a", "va");
        h.get_ok(2, "a", &["va"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NotRead]);
        assert_eq!(report.lost, 0);
    }

    #[test]
    fn a_failed_put_seen_by_a_read_was_applied() {
        let mut h = Script::new(Workload::Once);
        h.put(1, "a", "va");
        h.fail(1);
        h.get_ok(2, "a", &["va"]);
        h.final_read("a", &["va"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::FailedApplied]);
    }

    #[test]
    fn siblings_of_a_key_written_once_were_invented() {
        let mut h = Script::new(Workload::Once);
        h.put_ok(1, "a", "va");
        h.get_ok(2, "a", &["va", "va"]);
        h.final_read("a", &["va"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::Siblings]);
    }

    #[test]
    fn a_value_no_put_wrote_is_caught() {
        let mut h = Script::new(Workload::Once);
        h.put_ok(1, "a", "va");
        h.get_ok(2, "b", &["va"]); // a's value under b
        h.final_read("a", &["va"]);
        h.final_read("b", &["va"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NeverWritten]);
        assert!(report.violations[0].what.contains("2 reads"));
    }

    #[test]
    fn a_value_read_before_its_put_began_is_caught() {
        let mut h = Script::new(Workload::Once);
        h.get_ok(2, "a", &["va"]);
        h.put_ok(1, "a", "va");
        h.final_read("a", &["va"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::FromFuture]);
    }
}
