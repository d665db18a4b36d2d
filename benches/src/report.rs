//! What a run measured, and how it is shown.
//!
//! Each worker keeps its own [`OpStats`] per operation type (no shared
//! lock on the hot path); they are merged when the run ends. Latency goes
//! into an HDR histogram (Gil Tene's HdrHistogram: fixed relative error,
//! constant memory, exact merge), which is what makes p99.9 and max honest
//! where an average or a sampled reservoir would hide the tail.
//!
//! Only successful operations are timed. Errors are counted by kind (the
//! client's [`Error`] classification), because a fast error is not a fast
//! request and mixing them would make an unavailable cluster look quick.
//! Reads of keys that were never written succeed and are timed; they are
//! also counted as `not_found`, so a run without `--preload` says how many
//! of its reads took the not-found path.
//!
//! The JSON form ([`Report`] serialised) is stable for scripts and the
//! smoke test; the text form is for people and may change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use ringkv_client::Error;
use serde::Serialize;

use crate::{level_label, Config};

/// Smallest latency the histograms resolve, in microseconds.
const LATENCY_MIN_US: u64 = 1;

/// Largest latency the histograms hold exactly (one minute, beyond any
/// client deadline); longer ones are recorded as this value.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Significant decimal digits the histograms keep: 0.1% relative error.
const LATENCY_SIGFIG: u8 = 3;

/// Latencies and outcomes of one operation type.
#[derive(Clone)]
pub struct OpStats {
    /// Latency of each successful operation, in microseconds.
    latency: Histogram<u64>,
    /// Failed operations by error kind (see [`error_kind`]).
    errors: BTreeMap<&'static str, u64>,
    /// Successful reads that found no value.
    not_found: u64,
}

impl OpStats {
    pub fn new() -> Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGFIG)
                .context("creating a latency histogram")?,
            errors: BTreeMap::new(),
            not_found: 0,
        })
    }

    pub fn record_success(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.max(LATENCY_MIN_US));
    }

    pub fn record_not_found(&mut self) {
        self.not_found += 1;
    }

    pub fn record_error(&mut self, error: &Error) {
        *self.errors.entry(error_kind(error)).or_default() += 1;
    }

    /// Adds another worker's figures to these.
    pub fn merge(&mut self, other: &OpStats) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.not_found += other.not_found;
        Ok(())
    }

    pub fn succeeded(&self) -> u64 {
        self.latency.len()
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn errors(&self) -> &BTreeMap<&'static str, u64> {
        &self.errors
    }
}

/// A stable, snake_case name for each kind of client error: the keys of
/// `errors_by_kind` in the JSON report.
pub fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::InvalidArgument(_) => "invalid_argument",
        Error::Unavailable(_) => "unavailable",
        Error::Timeout(_) => "timeout",
        Error::Overloaded(_) => "overloaded",
        Error::FailedPrecondition(_) => "failed_precondition",
        Error::Unreachable(_) => "unreachable",
        Error::Indeterminate(_) => "indeterminate",
        Error::Internal(_) => "internal",
        Error::Denied(_) => "denied",
    }
}

/// Everything the measured phase produced, merged over the workers.
pub struct Measurement {
    pub reads: OpStats,
    pub writes: OpStats,
    /// From the end of the warm-up until the last worker stopped.
    pub elapsed: Duration,
    /// Requests still in flight when the drain deadline passed, abandoned
    /// without an outcome.
    pub cut_off: u64,
}

/// What `--preload` did.
#[derive(Serialize)]
pub struct PreloadReport {
    /// Keys the preload set out to write.
    pub keys: u64,
    /// Keys acknowledged.
    pub written: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub elapsed_s: f64,
    /// False when the preload hit its time limit before every key was
    /// attempted.
    pub complete: bool,
}

/// Latency percentiles of successful operations, in microseconds.
#[derive(Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Figures of one operation type.
#[derive(Serialize)]
pub struct OpReport {
    /// Successful operations.
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Failed operations, all kinds together.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Successful reads that found nothing (always 0 for writes).
    pub not_found: u64,
    /// `null` when no operation of this type succeeded.
    pub latency_us: Option<Latency>,
}

impl OpReport {
    fn new(stats: &OpStats, elapsed: Duration) -> Self {
        let h = &stats.latency;
        OpReport {
            ops: stats.succeeded(),
            ops_per_sec: per_second(stats.succeeded(), elapsed),
            errors: stats.failed(),
            errors_by_kind: stats.errors.clone(),
            not_found: stats.not_found,
            latency_us: (!h.is_empty()).then(|| Latency {
                p50: h.value_at_quantile(0.50),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: h.mean(),
            }),
        }
    }
}

/// The whole result of a run; its JSON form is what `--output json` prints.
#[derive(Serialize)]
pub struct Report {
    pub config: Config,
    /// Length of the measured phase (after warm-up), in seconds.
    pub elapsed_s: f64,
    /// Successful operations, reads and writes together.
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Failed operations, reads and writes together.
    pub errors: u64,
    /// Requests abandoned at the drain deadline.
    pub cut_off: u64,
    pub reads: OpReport,
    pub writes: OpReport,
    /// `null` without `--preload`.
    pub preload: Option<PreloadReport>,
}

impl Report {
    pub fn new(config: Config, preload: Option<PreloadReport>, m: &Measurement) -> Self {
        let ops = m.reads.succeeded() + m.writes.succeeded();
        Report {
            config,
            elapsed_s: m.elapsed.as_secs_f64(),
            ops,
            ops_per_sec: per_second(ops, m.elapsed),
            errors: m.reads.failed() + m.writes.failed(),
            cut_off: m.cut_off,
            reads: OpReport::new(&m.reads, m.elapsed),
            writes: OpReport::new(&m.writes, m.elapsed),
            preload,
        }
    }

    /// Whether anything at all worked, the smoke mode's pass criterion.
    pub fn any_success(&self) -> bool {
        self.ops > 0
    }

    /// The report for people: a summary line, a table, then error details.
    pub fn text(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ringkv-bench: {} | {} clients, {} keys, {} B values, {:.0}% reads{} | r={} w={}",
            c.endpoints.join(","),
            c.concurrency,
            c.keys,
            c.value_size,
            c.read_ratio * 100.0,
            c.workload
                .map(|w| format!(" (workload {w})"))
                .unwrap_or_default(),
            level_label(c.read_level),
            level_label(c.write_level),
        );
        if let Some(p) = &self.preload {
            let _ = writeln!(
                out,
                "preload: {}/{} keys in {:.1} s, {} errors{}",
                p.written,
                p.keys,
                p.elapsed_s,
                p.errors,
                if p.complete {
                    ""
                } else {
                    " (stopped at its time limit)"
                },
            );
        }
        let _ = writeln!(
            out,
            "measured {:.2} s after {:.2} s of warm-up{}\n",
            self.elapsed_s,
            c.warmup.as_secs_f64(),
            if self.cut_off > 0 {
                format!("; {} requests cut off at the drain deadline", self.cut_off)
            } else {
                String::new()
            },
        );
        let _ = writeln!(
            out,
            "{:<6} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "op", "ops", "ops/s", "errors", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (name, op) in [("read", &self.reads), ("write", &self.writes)] {
            let _ = write!(
                out,
                "{name:<6} {:>10} {:>10.1} {:>8}",
                op.ops, op.ops_per_sec, op.errors
            );
            match &op.latency_us {
                Some(l) => {
                    let _ = writeln!(
                        out,
                        " {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                        ms(l.p50),
                        ms(l.p99),
                        ms(l.p999),
                        ms(l.max)
                    );
                }
                None => out.push('\n'),
            }
        }
        let _ = writeln!(
            out,
            "{:<6} {:>10} {:>10.1} {:>8}",
            "total", self.ops, self.ops_per_sec, self.errors
        );
        for (name, op) in [("read", &self.reads), ("write", &self.writes)] {
            if !op.errors_by_kind.is_empty() {
                let kinds: Vec<String> = op
                    .errors_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                let _ = writeln!(out, "{name} errors: {}", kinds.join(", "));
            }
        }
        if self.reads.not_found > 0 {
            let _ = writeln!(
                out,
                "{} reads found no value (use --preload to write every key first)",
                self.reads.not_found
            );
        }
        out
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

fn per_second(ops: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        ops as f64 / elapsed.as_secs_f64()
    }
}
