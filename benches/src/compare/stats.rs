//! Figures over repetitions: the ratio columns, taken within one
//! repetition; the median and range of every figure over repetitions; and
//! the best throughput of each row across a sweep of concurrencies.
//!
//! A ratio is computed from two figures of the same repetition, measured
//! minutes apart, and only then summarised: the machine's drift between
//! repetitions cancels out of each ratio, where a ratio of two medians
//! (each from its own repetitions) would keep it. The median is reported
//! because one disturbed repetition moves it least; the range (min–max)
//! shows how far the repetitions disagreed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::row::{durability, position, Durability, Op, Row, ECHO, ETCD};

/// A figure over repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none. NaN values (a
    /// figure that could not be computed) are left out.
    pub(super) fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            median: median_of_sorted(&sorted)?,
            min: *sorted.first()?,
            max: *sorted.last()?,
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when there are none.
#[cfg(test)]
fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Fills the ratio columns of one repetition's rows: each row against the
/// echo row and the etcd row of the same operation in `rows`.
pub(super) fn fill_ratios(rows: &mut [Row]) {
    let find = |rows: &[Row], system: &str, op: Op| {
        rows.iter()
            .find(|r| r.system == system && r.op == op && r.target_rate.is_none())
            .and_then(|r| r.ops_per_sec)
            .filter(|&ops| ops > 0.0)
    };
    let bases: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .map(|r| (find(rows, ECHO, r.op), find(rows, ETCD, r.op)))
        .collect();
    for (row, (echo, etcd)) in rows.iter_mut().zip(bases) {
        if let Some(ops) = row.ops_per_sec {
            row.vs_echo = echo.map(|e| ops / e);
            row.vs_etcd = etcd.map(|e| ops / e);
        }
    }
}

/// One line of the table: one system and operation over every repetition.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    pub(super) system: &'static str,
    pub(super) op: Op,
    /// An open-loop run at half the closed-loop throughput (`--half-load`).
    pub(super) open_loop: bool,
    pub(super) durability: Durability,
    /// Repetitions that measured this row.
    pub(super) measured: usize,
    /// Repetitions in which this row failed.
    pub(super) failed: usize,
    /// Failed requests, over every repetition.
    pub(super) errors: u64,
    pub(super) target_rate: Option<Spread>,
    pub(super) ops_per_sec: Option<Spread>,
    pub(super) p50_us: Option<Spread>,
    pub(super) p99_us: Option<Spread>,
    pub(super) vs_echo: Option<Spread>,
    pub(super) vs_etcd: Option<Spread>,
    pub(super) server_cpu_us_per_op: Option<Spread>,
    pub(super) machine_cpu_us_per_op: Option<Spread>,
    pub(super) client_cpu_us_per_op: Option<Spread>,
    /// The first failure's message.
    pub(super) error: Option<String>,
}

/// The table's lines from every repetition's rows (ratios already filled),
/// in the table's order: by system, then operation, closed loop first.
pub(super) fn summarize(reps: &[Vec<Row>]) -> Vec<Summary> {
    let mut groups: BTreeMap<(usize, &str, Op, bool), Vec<&Row>> = BTreeMap::new();
    for row in reps.iter().flatten() {
        let key = (
            position(row.system),
            row.system,
            row.op,
            row.target_rate.is_some(),
        );
        groups.entry(key).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|((_, _, op, open_loop), rows)| {
            let spread = |figure: &dyn Fn(&Row) -> Option<f64>| {
                let values: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.error.is_none())
                    .filter_map(|r| figure(r))
                    .collect();
                Spread::of(&values)
            };
            Summary {
                system: rows[0].system,
                op,
                open_loop,
                durability: durability(rows[0].system),
                measured: rows.iter().filter(|r| r.error.is_none()).count(),
                failed: rows.iter().filter(|r| r.error.is_some()).count(),
                errors: rows.iter().map(|r| r.errors).sum(),
                target_rate: spread(&|r| r.target_rate),
                ops_per_sec: spread(&|r| r.ops_per_sec),
                p50_us: spread(&|r| r.p50_us.map(|us| us as f64)),
                p99_us: spread(&|r| r.p99_us.map(|us| us as f64)),
                vs_echo: spread(&|r| r.vs_echo),
                vs_etcd: spread(&|r| r.vs_etcd),
                server_cpu_us_per_op: spread(&|r| r.server_cpu_us_per_op),
                machine_cpu_us_per_op: spread(&|r| r.machine_cpu_us_per_op),
                client_cpu_us_per_op: spread(&|r| r.client_cpu_us_per_op),
                error: rows.iter().find_map(|r| r.error.clone()),
            }
        })
        .collect()
}

/// The highest median throughput a closed-loop row reached in a sweep.
#[derive(Debug, Serialize)]
pub(super) struct Best {
    pub(super) system: &'static str,
    pub(super) op: Op,
    pub(super) ops_per_sec: f64,
    /// Where it was reached (the lowest, on a tie).
    pub(super) concurrency: usize,
}

/// Per closed-loop row, the concurrency of `runs` (concurrency, table) at
/// which its median throughput was highest, in the table's order.
pub(super) fn best<'a>(runs: impl IntoIterator<Item = (usize, &'a [Summary])>) -> Vec<Best> {
    let mut best: BTreeMap<(usize, &str, Op), Best> = BTreeMap::new();
    for (concurrency, summaries) in runs {
        for s in summaries.iter().filter(|s| !s.open_loop) {
            let Some(ops) = s.ops_per_sec.map(|o| o.median) else {
                continue;
            };
            let key = (position(s.system), s.system, s.op);
            let better = best.get(&key).is_none_or(|b| ops > b.ops_per_sec);
            if better {
                let entry = Best {
                    system: s.system,
                    op: s.op,
                    ops_per_sec: ops,
                    concurrency,
                };
                best.insert(key, entry);
            }
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::row::{CLUSTER, SINGLE};

    #[test]
    fn median_and_range_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        let spread = Spread::of(&[5.0, 1.0, 9.0, 3.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 4.0,
                min: 1.0,
                max: 9.0
            }
        );
        let spread = Spread::of(&[2.0, f64::NAN, 8.0, 4.0]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (4.0, 2.0, 8.0));
    }

    #[test]
    fn ratios_compare_the_same_operation_in_the_same_repetition() {
        let mut rows = vec![
            Row::measured(ECHO, Op::Put, 1, 10_000.0),
            Row::measured(ECHO, Op::Get, 1, 20_000.0),
            Row::measured(CLUSTER, Op::Put, 1, 4_000.0),
            Row::measured(CLUSTER, Op::Get, 1, 5_000.0),
            Row::measured(ETCD, Op::Put, 1, 1_000.0),
            Row::failed(ETCD, Op::Get, 1, 3, &anyhow::anyhow!("etcd not found")),
        ];
        fill_ratios(&mut rows);
        assert_eq!(rows[2].vs_echo, Some(0.4));
        assert_eq!(rows[3].vs_echo, Some(0.25));
        assert_eq!(rows[2].vs_etcd, Some(4.0));
        // No etcd get figure, so no ratio to it; a failed row gets none.
        assert_eq!(rows[3].vs_etcd, None);
        assert_eq!(rows[5].vs_echo, None);
    }

    #[test]
    fn the_ratio_is_taken_within_each_repetition_before_the_median() {
        // Per repetition: 50/100, 200/200, 60/300 = 0.5, 1.0, 0.2; median
        // 0.5. The ratio of the medians (60 / 200 = 0.3) would be wrong.
        let reps: Vec<Vec<Row>> = [(100.0, 50.0), (200.0, 200.0), (300.0, 60.0)]
            .into_iter()
            .enumerate()
            .map(|(i, (echo, ringkv))| {
                let mut rows = vec![
                    Row::measured(SINGLE, Op::Put, i + 1, ringkv),
                    Row::measured(ECHO, Op::Put, i + 1, echo),
                ];
                fill_ratios(&mut rows);
                rows
            })
            .collect();
        let summaries = summarize(&reps);
        // Listed in the table's order: echo first.
        assert_eq!(summaries[0].system, ECHO);
        let single = &summaries[1];
        assert_eq!(single.system, SINGLE);
        assert_eq!(single.measured, 3);
        let ratio = single.vs_echo.unwrap();
        assert_eq!((ratio.median, ratio.min, ratio.max), (0.5, 0.2, 1.0));
        assert_eq!(single.ops_per_sec.unwrap().median, 60.0);
    }

    #[test]
    fn failed_repetitions_are_counted_not_averaged() {
        let reps = vec![
            vec![Row::measured(CLUSTER, Op::Put, 1, 100.0)],
            vec![Row::failed(
                CLUSTER,
                Op::Put,
                2,
                1,
                &anyhow::anyhow!("boom"),
            )],
            vec![Row::measured(CLUSTER, Op::Put, 3, 300.0)],
        ];
        let summaries = summarize(&reps);
        assert_eq!(summaries.len(), 1);
        assert_eq!((summaries[0].measured, summaries[0].failed), (2, 1));
        assert_eq!(summaries[0].ops_per_sec.unwrap().median, 200.0);
        assert_eq!(summaries[0].error.as_deref(), Some("boom"));
    }

    #[test]
    fn the_best_concurrency_is_found_per_row() {
        let at = |ops: &[f64]| {
            summarize(&[ops
                .iter()
                .zip([Op::Put, Op::Get])
                .map(|(&o, op)| Row::measured(CLUSTER, op, 1, o))
                .collect()])
        };
        let (low, mid, high) = (
            at(&[100.0, 500.0]),
            at(&[300.0, 500.0]),
            at(&[200.0, 400.0]),
        );
        let best = best([(1, &low[..]), (8, &mid[..]), (32, &high[..])]);
        assert_eq!(best.len(), 2);
        assert_eq!((best[0].op, best[0].concurrency), (Op::Put, 8));
        // A tie keeps the lower concurrency.
        assert_eq!((best[1].op, best[1].concurrency), (Op::Get, 1));
        assert_eq!(best[1].ops_per_sec, 500.0);
    }
}
