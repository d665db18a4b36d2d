//! The comparison's table: the ratio columns, filled in once every system
//! has run, and the text rendering for people.

use super::{Comparison, Op, Row, ECHO, ETCD};

/// Fills the ratio columns: each row against the echo row and the etcd row
/// of the same operation.
pub(super) fn fill_ratios(rows: &mut [Row]) {
    let find = |rows: &[Row], system: &str, op: Op| {
        rows.iter()
            .find(|r| r.system == system && r.op == op)
            .and_then(|r| r.ops_per_sec)
            .filter(|&ops| ops > 0.0)
    };
    let bases: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .map(|r| (find(rows, ECHO, r.op), find(rows, ETCD, r.op)))
        .collect();
    for (row, (echo, etcd)) in rows.iter_mut().zip(bases) {
        if let Some(ops) = row.ops_per_sec {
            row.vs_tonic = echo.map(|e| ops / e);
            row.vs_etcd = etcd.map(|e| ops / e);
        }
    }
}

/// The comparison as a table for people.
pub(super) fn table(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |l| format!("{l:.1}"));
    let _ = writeln!(
        out,
        "ringkv-bench compare: {} clients, {} keys, {} B values, {:.0} s measured after {:.0} s warm-up per row; \
         {} CPUs, load average {} -> {}, seed {}\n",
        c.concurrency,
        c.keys,
        c.value_size,
        c.duration_s,
        c.warmup_s,
        c.cpus,
        load(c.load_average.0),
        load(c.load_average.1),
        c.seed,
    );
    let _ = writeln!(
        out,
        "{:<30} {:<5} {:>9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>11} {:>11} {:>5}",
        "system",
        "op",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "x tonic",
        "x etcd",
        "server CPU",
        "client CPU",
        "load"
    );
    let _ = writeln!(
        out,
        "{:<30} {:<5} {:>9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>11} {:>11} {:>5}",
        "", "", "", "", "", "", "", "", "s/1k ops", "s/1k ops", "avg"
    );
    let opt = |v: Option<f64>, precision: usize| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.precision$}"))
    };
    let ms = |us: Option<u64>| opt(us.map(|us| us as f64 / 1_000.0), 2);
    for r in &c.rows {
        let op = match r.target_rate {
            Some(_) => format!("{}@50%", r.op.label()),
            None => r.op.label().to_string(),
        };
        if let Some(error) = &r.error {
            let first_line = error.lines().next().unwrap_or_default();
            let _ = writeln!(out, "{:<30} {op:<5} failed: {first_line}", r.system);
            continue;
        }
        let _ = writeln!(
            out,
            "{:<30} {op:<5} {:>9} {:>7} {:>7} {:>6} {:>8} {:>7} {:>11} {:>11} {:>5}",
            r.system,
            opt(r.ops_per_sec, 0),
            ms(r.p50_us),
            ms(r.p99_us),
            r.errors,
            opt(r.vs_tonic, 2),
            opt(r.vs_etcd, 2),
            opt(r.server_cpu_s_per_1k, 3),
            opt(r.client_cpu_s_per_1k, 3),
            opt(r.load_average, 1),
        );
    }
    let _ = writeln!(
        out,
        "\nx tonic / x etcd: throughput divided by the echo server's / etcd's for the same operation. \
         server CPU: the system's server processes (for RocksDB in process: this whole process, \
         generator included); client CPU: this load generator; load avg: the machine's 1-minute load \
         average when the row's run ended."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::CLUSTER;

    fn row(system: &'static str, op: Op, ops: f64) -> Row {
        let mut row = Row::failed(system, op, &anyhow::anyhow!("placeholder"));
        row.error = None;
        row.ops_per_sec = Some(ops);
        row
    }

    #[test]
    fn ratios_compare_the_same_operation() {
        let mut rows = vec![
            row(ECHO, Op::Put, 10_000.0),
            row(ECHO, Op::Get, 20_000.0),
            row(CLUSTER, Op::Put, 4_000.0),
            row(CLUSTER, Op::Get, 5_000.0),
            row(ETCD, Op::Put, 1_000.0),
            Row::failed(ETCD, Op::Get, &anyhow::anyhow!("etcd not found")),
        ];
        fill_ratios(&mut rows);
        assert_eq!(rows[2].vs_tonic, Some(0.4));
        assert_eq!(rows[3].vs_tonic, Some(0.25));
        assert_eq!(rows[2].vs_etcd, Some(4.0));
        // No etcd get figure, so no ratio to it; a failed row gets none.
        assert_eq!(rows[3].vs_etcd, None);
        assert_eq!(rows[5].vs_tonic, None);
        let text = table(&Comparison {
            keys: 1,
            value_size: 1,
            concurrency: 1,
            duration_s: 1.0,
            warmup_s: 0.0,
            seed: 1,
            cpus: 2,
            load_average: (None, None),
            elapsed_s: 1.0,
            rows,
        });
        assert!(text.contains("failed: etcd not found"), "{text}");
    }
}
