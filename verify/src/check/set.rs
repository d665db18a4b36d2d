//! The set workload: read-merge-write adds of unique elements to a few
//! hot keys. A client reads (R=QUORUM), unions the elements of every
//! sibling, adds one new element and puts the union with the read's
//! context (sloppy W=QUORUM). Concurrent adds become siblings and the next
//! read merges them, so no acknowledged element should ever disappear.
//!
//! A put's `element` is the element it adds; its value is the whole set,
//! in [`encode_set`]'s form. A read's set is the union of its siblings.
//! Rules, for each key:
//!
//! - an `ok` add's element is in the final read ([`Rule::Lost`]);
//! - every element of an `ok` put's value (the union it wrote, not only
//!   the element it added) is in the final read ([`Rule::Lost`] too: an
//!   acknowledged write carried it, so no later write may drop it). Both
//!   count in `lost`, once per element. An element only *seen* by reads
//!   is not demanded: a read may return an unacknowledged add that a
//!   single replica holds, and a disk fault on that replica may lose it
//!   legitimately;
//! - every element read was added by a put of the key that did not fail
//!   ([`Rule::NeverWritten`], [`Rule::FailedApplied`]) and had been
//!   invoked before the read completed ([`Rule::FromFuture`]); a sibling
//!   that is not a set at all is [`Rule::NeverWritten`];
//! - a key with acknowledged adds has a final read ([`Rule::NotRead`]).
//!
//! An element of an `info` add that no read saw may be missing at the end.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::{by_key, indexes, Provenance, Rule, WorkloadReport};
use crate::history::{Kind, Pair, Workload};

/// Separates the elements of an encoded set.
const SEPARATOR: char = ',';

/// A set as a put writes it: its elements sorted, joined by commas; the
/// empty set is the empty string. Elements are short ASCII tokens without
/// commas or spaces (e.g. `p3-17`).
pub fn encode_set(elements: &BTreeSet<String>) -> String {
    debug_assert!(
        elements.iter().all(|e| is_element(e)),
        "not set elements: {elements:?}"
    );
    elements
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The set `value` encodes. Errors on anything [`encode_set`] could not
/// have written: an empty or non-ASCII element, elements out of order or
/// repeated.
pub fn decode_set(value: &str) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    if value.is_empty() {
        return Ok(set);
    }
    let mut previous: Option<&str> = None;
    for element in value.split(SEPARATOR) {
        if !is_element(element) {
            bail!("{value:?} is not a set: {element:?} is not an element");
        }
        if previous.is_some_and(|p| p >= element) {
            bail!("{value:?} is not a set: its elements are not sorted and distinct");
        }
        previous = Some(element);
        set.insert(element.to_string());
    }
    Ok(set)
}

fn is_element(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Checks the set workload's operations among `pairs`.
pub fn check(pairs: &[Pair<'_>]) -> WorkloadReport {
    let mut report = WorkloadReport::new(Workload::Set, pairs);
    for (key, ops) in by_key(pairs, &mut report) {
        let mut elements = Provenance::new(
            "element",
            &ops.puts,
            |op| op.element.as_deref(),
            key,
            &mut report,
        );
        let mut last: Option<(&Pair<'_>, BTreeSet<String>)> = None;
        let final_read = ops.final_read().map(|(read, _)| read.invoke.index);
        for &(read, siblings) in &ops.reads {
            let union = union(read, siblings, key, &mut report);
            for element in &union {
                elements.observe(element, read);
            }
            if Some(read.invoke.index) == final_read {
                last = Some((read, union));
            }
        }
        elements.report(key, &mut report);

        let acknowledged: Vec<&Pair<'_>> = ops
            .puts
            .iter()
            .copied()
            .filter(|p| p.kind() == Kind::Ok)
            .collect();
        let Some((last_read, kept)) = last else {
            if let Some(first) = acknowledged.first() {
                report.violate(
                    Rule::NotRead,
                    key,
                    format!(
                        "{} acknowledged adds were never read at the end: the key has no \
                         final read",
                        acknowledged.len()
                    ),
                    indexes(first),
                );
            }
            continue;
        };
        // Acknowledged adds first, then the other elements acknowledged
        // writes carried, so each missing element is reported, and
        // counted, once.
        let mut reported: BTreeSet<String> = BTreeSet::new();
        for &put in &acknowledged {
            let Some(element) = put.invoke.element.as_deref() else {
                continue; // reported as malformed
            };
            if kept.contains(element) || !reported.insert(element.to_string()) {
                continue;
            }
            report.lost += 1;
            report.violate(
                Rule::Lost,
                key,
                format!("acknowledged element {element:?} is not in the final read"),
                [indexes(put), indexes(last_read)].concat(),
            );
        }
        for &put in &acknowledged {
            let Some(Ok(written)) = put.invoke.value.as_deref().map(decode_set) else {
                continue; // reported as malformed
            };
            for element in written {
                if kept.contains(&element) || !reported.insert(element.clone()) {
                    continue;
                }
                let adder = elements.applied_writer(&element);
                report.lost += 1;
                report.violate(
                    Rule::Lost,
                    key,
                    format!(
                        "element {element:?} was in an acknowledged write, then is not in the \
                         final read: a later write dropped it"
                    ),
                    [
                        adder.map(indexes).unwrap_or_default(),
                        indexes(put),
                        indexes(last_read),
                    ]
                    .concat(),
                );
            }
        }
    }
    report
}

/// The union of the sets a read's siblings encode; a sibling that is no
/// set is reported, and adds nothing.
fn union(
    read: &Pair<'_>,
    siblings: &[String],
    key: &str,
    report: &mut WorkloadReport,
) -> BTreeSet<String> {
    let mut union = BTreeSet::new();
    for sibling in siblings {
        match decode_set(sibling) {
            Ok(set) => union.extend(set),
            Err(error) => report.violate(
                Rule::NeverWritten,
                key,
                format!("a read returned a sibling no put wrote: {error}"),
                indexes(read),
            ),
        }
    }
    union
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{assert_rules, Script};
    use super::*;

    fn run(script: &Script) -> WorkloadReport {
        script.check(check)
    }

    fn set(elements: &[&str]) -> BTreeSet<String> {
        elements.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn sets_encode_and_decode_back() {
        for elements in [&[][..], &["p1-1"], &["p1-1", "p2-7", "p10-3"]] {
            let encoded = encode_set(&set(elements));
            assert_eq!(decode_set(&encoded).unwrap(), set(elements), "{encoded:?}");
        }
        assert_eq!(encode_set(&set(&["b", "a"])), "a,b");
        assert_eq!(encode_set(&set(&[])), "");
    }

    #[test]
    fn garbage_is_not_a_set() {
        for garbage in [
            ",",
            "a,",
            ",a",
            "a,,b",
            "b,a",
            "a,a",
            "a b",
            "é",
            "{\"a\"}x y",
        ] {
            assert!(decode_set(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = Script::new(Workload::Set);
        h.get_ok(1, "s", &[]);
        h.add_ok(1, "s", "p1-1", &[]);
        // Two concurrent adds from the same read become siblings.
        h.get_ok(1, "s", &["p1-1"]);
        h.get_ok(2, "s", &["p1-1"]);
        h.add(1, "s", "p1-2", &["p1-1"]);
        h.add(2, "s", "p2-1", &["p1-1"]);
        h.ok(1);
        h.ok(2);
        h.get_ok(3, "s", &["p1-1,p1-2", "p1-1,p2-1"]);
        // An indeterminate add nobody saw may be missing at the end.
        h.add(3, "s", "p3-1", &["p1-1", "p1-2", "p2-1"]);
        h.info(3);
        h.add(4, "s", "p4-1", &[]);
        h.fail(4);
        // The info add did not land: the concurrent adds are still siblings.
        h.final_read("s", &["p1-1,p1-2", "p1-1,p2-1"]);

        let report = run(&h);
        assert_rules(&report, &[]);
        assert_eq!(report.lost, 0);
        assert_eq!(report.final_reads, 1);
    }

    #[test]
    fn an_acknowledged_add_missing_at_the_end_is_lost() {
        let mut h = Script::new(Workload::Set);
        h.add_ok(1, "s", "p1-1", &[]);
        h.add_ok(2, "s", "p2-1", &[]);
        h.final_read("s", &["p1-1"]);

        let report = run(&h);
        assert_eq!(report.lost, 1);
        assert_rules(&report, &[Rule::Lost]);
        assert!(report.violations[0].what.contains("p2-1"));
    }

    #[test]
    fn an_unacknowledged_element_only_seen_may_be_missing_at_the_end() {
        // A read may return an add only one replica holds; a disk fault
        // there may lose it: nothing was acknowledged.
        let mut h = Script::new(Workload::Set);
        h.add(1, "s", "p1-1", &[]);
        h.info(1);
        h.get_ok(2, "s", &["p1-1"]);
        h.final_read("s", &[""]);

        let report = run(&h);
        assert_eq!(report.lost, 0);
        assert_rules(&report, &[]);
    }

    #[test]
    fn an_element_an_acknowledged_write_carried_is_lost_if_missing_at_the_end() {
        // p1-1's own add is indeterminate, but p2-1's acknowledged write
        // carried it: a later write dropping it is a lost update.
        let mut h = Script::new(Workload::Set);
        h.add(1, "s", "p1-1", &[]);
        h.info(1);
        h.get_ok(2, "s", &["p1-1"]);
        h.add_ok(2, "s", "p2-1", &["p1-1"]);
        h.final_read("s", &["p2-1"]);

        let report = run(&h);
        assert_eq!(report.lost, 1);
        assert_rules(&report, &[Rule::Lost]);
        assert!(report.violations[0].what.contains("p1-1"));
        assert!(report.violations[0].what.contains("later write dropped it"));
    }

    #[test]
    fn an_element_both_acknowledged_and_seen_is_lost_once() {
        let mut h = Script::new(Workload::Set);
        h.add_ok(1, "s", "p1-1", &[]);
        h.get_ok(2, "s", &["p1-1"]);
        h.final_read("s", &[]);

        let report = run(&h);
        assert_eq!(report.lost, 1);
        assert_rules(&report, &[Rule::Lost]);
    }

    #[test]
    fn an_invented_element_is_caught() {
        let mut h = Script::new(Workload::Set);
        h.add_ok(1, "s", "p1-1", &[]);
        h.final_read("s", &["p1-1,p9-9"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NeverWritten]);
    }

    #[test]
    fn a_sibling_that_is_not_a_set_is_caught() {
        let mut h = Script::new(Workload::Set);
        h.add_ok(1, "s", "p1-1", &[]);
        h.final_read("s", &["p1-1", "garbage,,"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NeverWritten]);
    }

    #[test]
    fn the_element_of_a_failed_add_seen_was_applied() {
        let mut h = Script::new(Workload::Set);
        h.add(1, "s", "p1-1", &[]);
        h.fail(1);
        h.final_read("s", &["p1-1"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::FailedApplied]);
    }

    #[test]
    fn acknowledged_adds_without_a_final_read_are_reported() {
        let mut h = Script::new(Workload::Set);
        h.add_ok(1, "s", "p1-1", &[]);
        h.get_ok(2, "s", &["p1-1"]);

        let report = run(&h);
        assert_rules(&report, &[Rule::NotRead]);
    }
}
