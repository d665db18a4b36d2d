//! What a run measured, and how it is shown.
//!
//! Each worker keeps its own [`OpStats`] per operation type (no shared
//! lock on the hot path); they are merged when the run ends. Latency goes
//! into an HDR histogram (Gil Tene's HdrHistogram: fixed relative error,
//! constant memory, exact merge), which is what makes p99.9 and max honest
//! where an average or a sampled reservoir would hide the tail.
//!
//! Only successful operations are timed. Errors are counted by kind (for
//! ringkv the client's [`Error`] classification, for the other targets the
//! gRPC status code; see [`crate::target`]), because a fast error is not a
//! fast request and mixing them would make an unavailable cluster look
//! quick. The first error message of each operation type is kept so a
//! failed run says why. Reads of keys that were never written succeed and
//! are timed; they are also counted as `not_found`, so a run without
//! `--preload` says how many of its reads took the not-found path.
//!
//! In an open-loop run (`--target-rate`) latency is measured from the time
//! the request was *scheduled*, not sent, so time spent queued behind a
//! slow answer counts (no coordinated omission).
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

use crate::config::{level_label, Config, Target as TargetKind};
use crate::target::OpError;

/// Smallest latency the histograms resolve, in microseconds.
const LATENCY_MIN_US: u64 = 1;

/// Largest latency the histograms hold exactly (one minute, beyond any
/// client deadline); longer ones are recorded as this value.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Significant decimal digits the histograms keep: 0.1% relative error.
const LATENCY_SIGFIG: u8 = 3;

/// An open-loop run that achieved less than this share of its target rate
/// says so: the system could not keep up, so it was measured saturated.
const OPEN_LOOP_SHORTFALL: f64 = 0.95;

/// Latencies and outcomes of one operation type.
#[derive(Clone)]
pub struct OpStats {
    /// Latency of each successful operation, in microseconds.
    latency: Histogram<u64>,
    /// Failed operations by error kind (see [`error_kind`]).
    errors: BTreeMap<&'static str, u64>,
    /// Successful reads that found no value.
    not_found: u64,
    /// The first error's message, to say why a run failed.
    first_error: Option<String>,
}

impl OpStats {
    pub fn new() -> Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGFIG)
                .context("creating a latency histogram")?,
            errors: BTreeMap::new(),
            not_found: 0,
            first_error: None,
        })
    }

    pub fn record_success(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.max(LATENCY_MIN_US));
    }

    pub fn record_not_found(&mut self) {
        self.not_found += 1;
    }

    pub fn record_error(&mut self, error: &OpError) {
        *self.errors.entry(error.kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{}: {}", error.kind, error.message));
        }
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
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
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

/// The operation types of a mix, in YCSB's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A get of an existing key (or one never written, without preload).
    Read,
    /// A blind overwrite: a put without context.
    Update,
    /// A get, then a put carrying the get's context (YCSB workload F); timed
    /// from before the get to after the put.
    ReadModifyWrite,
    /// A put of a key not written before in this run (the load phase).
    Insert,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Read, Op::Update, Op::ReadModifyWrite, Op::Insert];

    pub fn index(self) -> usize {
        match self {
            Op::Read => 0,
            Op::Update => 1,
            Op::ReadModifyWrite => 2,
            Op::Insert => 3,
        }
    }

    /// Name in the text report.
    pub fn label(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::ReadModifyWrite => "rmw",
            Op::Insert => "insert",
        }
    }
}

/// One [`OpStats`] per [`Op`].
#[derive(Clone)]
pub struct Tally {
    by_op: [OpStats; 4],
}

impl Tally {
    pub fn new() -> Result<Self> {
        Ok(Tally {
            by_op: [
                OpStats::new()?,
                OpStats::new()?,
                OpStats::new()?,
                OpStats::new()?,
            ],
        })
    }

    pub fn op(&self, op: Op) -> &OpStats {
        &self.by_op[op.index()]
    }

    pub fn op_mut(&mut self, op: Op) -> &mut OpStats {
        &mut self.by_op[op.index()]
    }

    pub fn merge(&mut self, other: &Tally) -> Result<()> {
        for op in Op::ALL {
            self.op_mut(op).merge(other.op(op))?;
        }
        Ok(())
    }

    pub fn succeeded(&self) -> u64 {
        self.by_op.iter().map(OpStats::succeeded).sum()
    }

    /// Every operation type's figures in one (latency over the whole mix).
    pub fn combined(&self) -> Result<OpStats> {
        let mut all = OpStats::new()?;
        for stats in &self.by_op {
            all.merge(stats)?;
        }
        Ok(all)
    }

    pub fn failed(&self) -> u64 {
        self.by_op.iter().map(OpStats::failed).sum()
    }
}

/// Everything the measured phase produced, merged over the workers.
pub struct Measurement {
    pub tally: Tally,
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
    pub p95: u64,
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
    /// The first failure, `kind: message`; `null` without errors.
    pub first_error: Option<String>,
}

impl OpReport {
    /// The figures of `stats` over a measured phase of `elapsed`.
    pub fn new(stats: &OpStats, elapsed: Duration) -> Self {
        let h = &stats.latency;
        OpReport {
            ops: stats.succeeded(),
            ops_per_sec: per_second(stats.succeeded(), elapsed),
            errors: stats.failed(),
            errors_by_kind: stats.errors.clone(),
            not_found: stats.not_found,
            first_error: stats.first_error.clone(),
            latency_us: (!h.is_empty()).then(|| Latency {
                p50: h.value_at_quantile(0.50),
                p95: h.value_at_quantile(0.95),
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
    /// Gets.
    pub reads: OpReport,
    /// Blind overwrites (YCSB updates).
    pub writes: OpReport,
    /// Get-then-put pairs with context (workload F), timed as one.
    pub read_modify_writes: OpReport,
    /// First writes of each key (the load workload).
    pub inserts: OpReport,
    /// `null` without `--preload`.
    pub preload: Option<PreloadReport>,
}

impl Report {
    pub fn new(config: Config, preload: Option<PreloadReport>, m: &Measurement) -> Self {
        let ops = m.tally.succeeded();
        let op = |op| OpReport::new(m.tally.op(op), m.elapsed);
        Report {
            config,
            elapsed_s: m.elapsed.as_secs_f64(),
            ops,
            ops_per_sec: per_second(ops, m.elapsed),
            errors: m.tally.failed(),
            cut_off: m.cut_off,
            reads: op(Op::Read),
            writes: op(Op::Update),
            read_modify_writes: op(Op::ReadModifyWrite),
            inserts: op(Op::Insert),
            preload,
        }
    }

    pub fn op(&self, op: Op) -> &OpReport {
        match op {
            Op::Read => &self.reads,
            Op::Update => &self.writes,
            Op::ReadModifyWrite => &self.read_modify_writes,
            Op::Insert => &self.inserts,
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
        let levels = if c.target == TargetKind::Ringkv {
            format!(
                " | r={} w={}{}",
                level_label(c.read_level),
                level_label(c.write_level),
                if c.routing { "" } else { ", no routing" }
            )
        } else {
            String::new()
        };
        let inserted_from = if c.insert_from > 0 {
            format!(", inserting from key {}", c.insert_from)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "ringkv-bench: {} | {} clients, {} keys ({}{}), {} B values, {}{}",
            c.target_label(),
            c.concurrency,
            c.keys,
            c.distribution_label(),
            inserted_from,
            c.value_size,
            c.mix_label(),
            levels,
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
            "measured {:.2} s after {:.2} s of warm-up, {}{}\n",
            self.elapsed_s,
            c.warmup.as_secs_f64(),
            match c.target_rate {
                Some(rate) => format!("open loop at {rate:.0} ops/s scheduled"),
                None => "closed loop".to_string(),
            },
            if self.cut_off > 0 {
                format!("; {} requests cut off at the drain deadline", self.cut_off)
            } else {
                String::new()
            },
        );
        let _ = writeln!(
            out,
            "{:<7} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "ops", "ops/s", "errors", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let shown: Vec<Op> = Op::ALL
            .into_iter()
            .filter(|&op| c.mix.share(op) > 0.0 || self.op(op).ops + self.op(op).errors > 0)
            .collect();
        for &op in &shown {
            let r = self.op(op);
            let _ = write!(
                out,
                "{:<7} {:>10} {:>10.1} {:>8}",
                op.label(),
                r.ops,
                r.ops_per_sec,
                r.errors
            );
            match &r.latency_us {
                Some(l) => {
                    let _ = writeln!(
                        out,
                        " {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                        ms(l.p50),
                        ms(l.p95),
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
            "{:<7} {:>10} {:>10.1} {:>8}",
            "total", self.ops, self.ops_per_sec, self.errors
        );
        if let Some(rate) = c.target_rate {
            if self.ops_per_sec < OPEN_LOOP_SHORTFALL * rate {
                let _ = writeln!(
                    out,
                    "the target rate was not reached ({:.0}% of it): the system is saturated, \
                     and latencies include time queued behind earlier requests",
                    self.ops_per_sec / rate * 100.0
                );
            }
        }
        for &op in &shown {
            let r = self.op(op);
            if !r.errors_by_kind.is_empty() {
                let kinds: Vec<String> = r
                    .errors_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "{} errors: {}; first: {}",
                    op.label(),
                    kinds.join(", "),
                    r.first_error.as_deref().unwrap_or("?")
                );
            }
        }
        let not_found = self.reads.not_found + self.read_modify_writes.not_found;
        if not_found > 0 {
            let _ = writeln!(
                out,
                "{not_found} reads found no value (use --preload to write every key first)",
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
