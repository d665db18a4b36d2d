//! The comparison as text for people: a header printed before the first
//! run (what machine, which commit, what settings), one table per
//! concurrency, each line a median with its range beneath, and a footer
//! with the legend, the best concurrency of each row (with `--sweep`) and
//! the total time.

use std::fmt::Write as _;

use super::row::Durability;
use super::stats::Spread;
use super::{Comparison, Run};

/// Marks a row whose system acknowledges writes before they are durable.
const NOT_DURABLE: &str = "†";

/// The columns of a table.
const HEADINGS: [&str; 12] = [
    "system",
    "op",
    "n",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "÷ echo",
    "÷ etcd",
    "server",
    "machine",
    "generator",
    "errors",
];

/// What the run is about to do, and on what: printed first.
pub(super) fn header(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringkv-bench compare: commit {}, {} CPUs, load average {} (1, 5, 15 min)",
        c.commit.as_deref().unwrap_or("unknown"),
        c.cpus,
        loads(c.load_average_start),
    );
    let systems: Vec<String> = c.systems.iter().map(|s| s.name()).collect();
    let concurrencies: Vec<String> = c.concurrencies.iter().map(|n| n.to_string()).collect();
    let _ = writeln!(
        out,
        "  {} at concurrency {}: {} repetition(s) each, every one in its own random order (seed {})",
        systems.join(", "),
        concurrencies.join(", "),
        c.reps,
        c.seed,
    );
    let _ = writeln!(
        out,
        "  {} keys, {} B values; every row: {} s warm-up, then {} s measured",
        c.keys, c.value_size, c.warmup_s, c.duration_s,
    );
    let threads = match c.worker_threads {
        0 => "each its default (one per CPU)".to_string(),
        n => n.to_string(),
    };
    let _ = writeln!(
        out,
        "  runtime threads of every server process: {threads}\n"
    );
    out
}

/// One concurrency's table.
pub(super) fn table(run: &Run, reps: usize) -> String {
    let mut out = String::new();
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |l| format!("{l:.1}"));
    let _ = writeln!(
        out,
        "concurrency {}: {} repetition(s) in {}, load average {} -> {}",
        run.concurrency,
        run.orders.len(),
        elapsed(run.elapsed_s),
        load(run.load_average.0),
        load(run.load_average.1),
    );
    for (i, order) in run.orders.iter().enumerate() {
        let names: Vec<String> = order.iter().map(|s| s.name()).collect();
        let _ = writeln!(out, "  order of repetition {}: {}", i + 1, names.join(", "));
    }
    let _ = writeln!(out);
    let line = |out: &mut String, cells: [&str; 12]| {
        let [system, op, n, ops, p50, p99, echo, etcd, server, machine, client, errors] = cells;
        let _ = writeln!(
            out,
            "{system:<33} {op:<6} {n:>3} {ops:>13} {p50:>11} {p99:>11} {echo:>11} {etcd:>11} \
             {server:>12} {machine:>12} {client:>12} {errors:>6}"
        );
    };
    line(&mut out, HEADINGS);
    let mut units = [""; 12];
    units[8..11].fill("CPU µs/op");
    line(&mut out, units);
    for s in &run.rows {
        let mark = if s.durability == Durability::NotDurable {
            format!(" {NOT_DURABLE}")
        } else {
            String::new()
        };
        let system = format!("{}{mark}", s.system);
        let op = if s.open_loop {
            format!("{}@50%", s.op.label())
        } else {
            s.op.label().to_string()
        };
        if s.measured == 0 {
            let error = s.error.as_deref().unwrap_or("no figures");
            let first_line = error.lines().next().unwrap_or_default();
            let _ = writeln!(out, "{system:<33} {op:<6} failed: {first_line}");
            continue;
        }
        let n = if s.measured == reps {
            s.measured.to_string()
        } else {
            format!("{}/{reps}", s.measured)
        };
        let ms = |spread: Option<Spread>| {
            spread.map(|s| Spread {
                median: s.median / 1e3,
                min: s.min / 1e3,
                max: s.max / 1e3,
            })
        };
        let figures = [
            cell(s.ops_per_sec, |v| format!("{v:.0}")),
            cell(ms(s.p50_us), significant),
            cell(ms(s.p99_us), significant),
            cell(s.vs_echo, |v| format!("{v:.2}")),
            cell(s.vs_etcd, |v| format!("{v:.2}")),
            cell(s.server_cpu_us_per_op, significant),
            cell(s.machine_cpu_us_per_op, significant),
            cell(s.client_cpu_us_per_op, significant),
        ];
        let [ops, p50, p99, echo, etcd, server, machine, client] = &figures;
        let errors = s.errors.to_string();
        line(
            &mut out,
            [
                &system, &op, &n, &ops.0, &p50.0, &p99.0, &echo.0, &etcd.0, &server.0, &machine.0,
                &client.0, &errors,
            ],
        );
        line(
            &mut out,
            [
                "    min–max",
                "",
                "",
                &ops.1,
                &p50.1,
                &p99.1,
                &echo.1,
                &etcd.1,
                &server.1,
                &machine.1,
                &client.1,
                "",
            ],
        );
    }
    let _ = writeln!(out);
    out
}

/// The legend, each row's best concurrency (when there were several) and
/// the total time: printed last.
pub(super) fn footer(c: &Comparison) -> String {
    let mut out = String::new();
    let legend = [
        "n: repetitions that measured the row. Each figure: the median over them, with the range",
        "  (min–max) beneath.",
        "÷ echo, ÷ etcd: throughput divided by that of \"tonic echo, 1 server\" / \"etcd 3 members\"",
        "  (round robin, linearizable), same operation, same repetition.",
        "CPU µs per operation over the measured phase. server: user + system time of the system's",
        "  server processes (RocksDB in process: this whole process, generator included). machine:",
        "  busy time of the whole machine from /proc/stat (user, nice, system, irq, softirq), so the",
        "  kernel's loopback networking is included, and so are the generator and anything else",
        "  running. generator: this process.",
    ];
    for line in legend {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "{NOT_DURABLE} not durable: storage.sync = periodic acknowledges a write before it is fsynced;\n  \
         the `always` rows and etcd fsync first; the echo servers store nothing."
    );
    if c.concurrencies.len() > 1 {
        let _ = writeln!(out, "\nBest median throughput over concurrencies:");
        for b in &c.best {
            let _ = writeln!(
                out,
                "  {:<33} {:<4} {:>10.0} ops/s at concurrency {}",
                b.system,
                b.op.label(),
                b.ops_per_sec,
                b.concurrency
            );
        }
    }
    let _ = writeln!(
        out,
        "\nTotal time {}; load average at the end {}",
        elapsed(c.elapsed_s),
        loads(c.load_average_end)
    );
    out
}

/// The median and the range of a figure, as text.
fn cell(spread: Option<Spread>, format: impl Fn(f64) -> String) -> (String, String) {
    match spread {
        Some(s) => (
            format(s.median),
            format!("{}–{}", format(s.min), format(s.max)),
        ),
        None => ("-".to_string(), String::new()),
    }
}

/// Three significant digits or so, for figures from 0.01 to thousands.
fn significant(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn loads(l: Option<[f64; 3]>) -> String {
    l.map_or_else(
        || "?".to_string(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

fn elapsed(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = seconds.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::row::{Op, Row, CLUSTER, ECHO, ETCD};
    use crate::compare::stats::{fill_ratios, summarize};
    use crate::compare::System;

    #[test]
    fn the_table_marks_failures_ranges_and_durability() {
        let reps: Vec<Vec<Row>> = (1..=2)
            .map(|rep| {
                let mut rows = vec![
                    Row::measured(ECHO, Op::Put, rep, 1_000.0 * rep as f64),
                    Row::measured(CLUSTER, Op::Put, rep, 400.0),
                    Row::failed(ETCD, Op::Put, rep, 3, &anyhow::anyhow!("etcd not found")),
                ];
                fill_ratios(&mut rows);
                rows
            })
            .collect();
        let run = Run {
            concurrency: 8,
            orders: vec![vec![System::Echo, System::Cluster, System::Etcd]; 2],
            load_average: (Some(1.0), None),
            elapsed_s: 75.0,
            rows: summarize(&reps),
            reps,
        };
        let text = table(&run, 2);
        assert!(text.contains("etcd 3 members"), "{text}");
        assert!(text.contains("failed: etcd not found"), "{text}");
        assert!(text.contains("ringkv 3 nodes †"), "{text}");
        assert!(!text.contains("tonic echo, 1 server †"), "{text}");
        // 400 / 1000 and 400 / 2000: median 0.30, range 0.20–0.40.
        assert!(text.contains("0.20–0.40"), "{text}");
        assert!(text.contains("1 min 15 s"), "{text}");
    }

    #[test]
    fn figures_keep_about_three_digits() {
        assert_eq!(significant(1234.5), "1234");
        assert_eq!(significant(12.345), "12.3");
        assert_eq!(significant(0.1234), "0.12");
    }
}
