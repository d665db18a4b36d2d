//! `ringkv-bench`: a closed-loop load generator for a running ringkv
//! cluster, built on the client library.
//!
//! It answers "how many requests per second does this cluster serve at
//! this concurrency, and how long does a client wait for each?" for a mix
//! of reads and writes, at the consistency levels the caller picks. The
//! mixes follow YCSB's core workloads so that figures can be set beside
//! other stores': `--workload a` (50% reads, 50% updates), `b` (95/5) and
//! `c` (read only), or any `--read-ratio`.
//!
//! It starts nothing. Point it at nodes with `--endpoints`; every run is
//! bounded in time (`--duration`, with a drain deadline after it) and
//! optionally in count (`--max-ops`). The report gives throughput, errors
//! by kind, and p50/p99/p99.9/max latency for reads and for writes, as a
//! table or (`--output json`) as a stable JSON object.
//!
//! `--smoke` is for CI: a one-second run over 200 preloaded keys that exits
//! non-zero when no request succeeded. The integration test
//! `tests/tests/bench_smoke.rs` runs it against a real node so this tool
//! cannot rot unnoticed.
//!
//! The load loop lives in [`workload`], the histograms and output in
//! [`report`]; this file turns the command line into a validated [`Config`].

mod report;
mod workload;

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use ringkv_client::{Client, Level};
use serde::{Serialize, Serializer};

use crate::report::Report;
use crate::workload::Load;

/// The node a bare `ringkv-bench` talks to: a local node on the default port.
const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";

/// Most concurrent clients accepted. Each keeps two latency histograms
/// (about 140 KiB each), and far more clients than this only measure the
/// generator's own scheduler.
const MAX_CONCURRENCY: usize = 1024;

/// Largest key space accepted: the key format has 10 digits.
const MAX_KEYS: u64 = 9_999_999_999;

/// Largest value accepted: the server's default value limit (1 MiB).
const MAX_VALUE_BYTES: usize = 1 << 20;

/// Longest measured phase or warm-up accepted, so that a typo cannot start
/// a load that runs for days.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Smoke mode: measured phase length.
const SMOKE_DURATION: Duration = Duration::from_secs(1);

/// Smoke mode: key space, preloaded so reads find values.
const SMOKE_KEYS: u64 = 200;

/// Smoke mode: at most this many clients, to stay light beside a test node
/// on a small CI machine.
const SMOKE_CONCURRENCY: usize = 8;

/// Smoke mode: at most this many measured requests.
const SMOKE_MAX_OPS: u64 = 20_000;

/// The read share used when neither `--read-ratio` nor `--workload` is given
/// (YCSB workload A).
const DEFAULT_READ_RATIO: f64 = 0.5;

/// YCSB core workloads by their read share (their updates are our blind
/// overwrites).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Update heavy: 50% reads, 50% writes.
    A,
    /// Read mostly: 95% reads, 5% writes.
    B,
    /// Read only.
    C,
}

impl Workload {
    fn read_ratio(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Closed-loop load generator for a ringkv cluster.
#[derive(Parser, Debug)]
#[command(name = "ringkv-bench", version)]
struct Args {
    /// Nodes to send requests to, comma separated; any node coordinates any key.
    #[arg(long, env = "RINGKV_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINT)]
    endpoints: Vec<String>,
    /// Requests in flight at once (closed-loop clients).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Size of the key space; keys are drawn uniformly from it.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Share of requests that are reads, 0.0 to 1.0 [default: 0.5].
    #[arg(long, conflicts_with = "workload")]
    read_ratio: Option<f64>,
    /// YCSB mix: a = 50% reads, b = 95% reads, c = 100% reads.
    #[arg(long, value_enum)]
    workload: Option<Workload>,
    /// Length of the measured phase (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many measured requests, even before --duration.
    #[arg(long)]
    max_ops: Option<u64>,
    /// Load run before measuring, not recorded.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Write every key once before measuring, so reads find values.
    #[arg(long)]
    preload: bool,
    /// Read consistency: one, quorum, all or a replica count [default: the node's].
    #[arg(short = 'r', long = "read-level", value_name = "LEVEL")]
    read_level: Option<Level>,
    /// Write consistency: one, quorum, all or a replica count [default: the node's].
    #[arg(short = 'w', long = "write-level", value_name = "LEVEL")]
    write_level: Option<Level>,
    /// Per-request timeout sent to the node [default: the node's].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Prefix of every key, keeping bench keys apart from other data.
    #[arg(long, default_value = "ringkv-bench/")]
    key_prefix: String,
    /// Seed of the key, operation and value choices [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// CI mode: 1 s measured, no warm-up, 200 preloaded keys, at most 8
    /// clients; exits non-zero when no request succeeded.
    #[arg(long)]
    smoke: bool,
}

/// A validated run description; also the `config` object of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub concurrency: usize,
    pub keys: u64,
    pub value_size: usize,
    pub read_ratio: f64,
    /// The YCSB preset the read ratio came from, if any.
    pub workload: Option<Workload>,
    #[serde(serialize_with = "serialize_level")]
    pub read_level: Option<Level>,
    #[serde(serialize_with = "serialize_level")]
    pub write_level: Option<Level>,
    #[serde(rename = "timeout_s", serialize_with = "serialize_opt_secs")]
    pub timeout: Option<Duration>,
    #[serde(rename = "duration_s", serialize_with = "serialize_secs")]
    pub duration: Duration,
    #[serde(rename = "warmup_s", serialize_with = "serialize_secs")]
    pub warmup: Duration,
    pub max_ops: Option<u64>,
    pub preload: bool,
    pub smoke: bool,
    pub key_prefix: String,
    /// The seed actually used, so a run's choices can be repeated.
    pub seed: u64,
    #[serde(skip)]
    pub output: Output,
}

impl Config {
    fn from_args(args: Args) -> Result<Config> {
        let read_ratio = match (args.read_ratio, args.workload) {
            (Some(r), _) => r,
            (None, Some(w)) => w.read_ratio(),
            (None, None) => DEFAULT_READ_RATIO,
        };
        let mut config = Config {
            endpoints: args.endpoints,
            concurrency: args.concurrency,
            keys: args.keys,
            value_size: args.value_size,
            read_ratio,
            workload: args.workload,
            read_level: args.read_level,
            write_level: args.write_level,
            timeout: args.timeout,
            duration: args.duration,
            warmup: args.warmup,
            max_ops: args.max_ops,
            preload: args.preload,
            smoke: args.smoke,
            key_prefix: args.key_prefix,
            seed: args.seed.unwrap_or_else(rand::random),
            output: args.output,
        };
        if config.smoke {
            config.duration = SMOKE_DURATION;
            config.warmup = Duration::ZERO;
            config.keys = SMOKE_KEYS;
            config.preload = true;
            config.concurrency = config.concurrency.min(SMOKE_CONCURRENCY);
            config.max_ops = Some(
                config
                    .max_ops
                    .map_or(SMOKE_MAX_OPS, |m| m.min(SMOKE_MAX_OPS)),
            );
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            bail!("--concurrency must be between 1 and {MAX_CONCURRENCY}");
        }
        if !(1..=MAX_KEYS).contains(&self.keys) {
            bail!("--keys must be between 1 and {MAX_KEYS}");
        }
        if !(1..=MAX_VALUE_BYTES).contains(&self.value_size) {
            bail!("--value-size must be between 1 and {MAX_VALUE_BYTES} bytes");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!("--read-ratio must be between 0.0 and 1.0");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!("--duration must be more than 0 and at most {MAX_DURATION:?}");
        }
        if self.warmup > MAX_DURATION {
            bail!("--warmup must be at most {MAX_DURATION:?}");
        }
        if self.max_ops == Some(0) {
            bail!("--max-ops must be at least 1");
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            bail!("--timeout must be more than 0");
        }
        Ok(())
    }
}

/// How a level appears in reports: its command-line spelling, or
/// `default` when the node's configured default applies.
pub fn level_label(level: Option<Level>) -> String {
    level.map_or_else(|| "default".to_string(), |l| l.to_string())
}

fn serialize_level<S: Serializer>(level: &Option<Level>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&level_label(*level))
}

fn serialize_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn serialize_opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringkv-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let config = Config::from_args(args)?;
    if config.read_ratio > 0.0 && !config.preload {
        eprintln!(
            "ringkv-bench: note: without --preload, reads of keys never written measure the not-found path"
        );
    }
    let client = Client::new(&config.endpoints)?;
    let load = Load::new(client, config.clone());
    let preload = if config.preload {
        Some(load.preload().await?)
    } else {
        None
    };
    let measurement = load.run().await?;
    let report = Report::new(config, preload, &measurement);
    match report.config.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if !report.any_success() {
        eprintln!(
            "ringkv-bench: no request succeeded; is a node listening at {}?",
            report.config.endpoints.join(",")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config> {
        let argv = std::iter::once("ringkv-bench").chain(args.iter().copied());
        Config::from_args(Args::try_parse_from(argv)?)
    }

    #[test]
    fn workloads_set_the_read_ratio() {
        assert_eq!(config(&[]).unwrap().read_ratio, DEFAULT_READ_RATIO);
        assert_eq!(config(&["--workload", "a"]).unwrap().read_ratio, 0.5);
        assert_eq!(config(&["--workload", "b"]).unwrap().read_ratio, 0.95);
        assert_eq!(config(&["--workload", "c"]).unwrap().read_ratio, 1.0);
        assert_eq!(config(&["--read-ratio", "0.25"]).unwrap().read_ratio, 0.25);
        assert!(config(&["--read-ratio", "0.2", "--workload", "c"]).is_err());
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        for bad in [
            &["--read-ratio", "1.5"][..],
            &["--read-ratio", "NaN"],
            &["--concurrency", "0"],
            &["--keys", "0"],
            &["--value-size", "0"],
            &["--duration", "0s"],
            &["--duration", "2days"],
            &["--max-ops", "0"],
            &["-w", "zero"],
        ] {
            assert!(config(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn smoke_mode_is_short_and_preloaded() {
        let c = config(&[
            "--smoke",
            "--duration",
            "1h",
            "--keys",
            "5",
            "--concurrency",
            "64",
        ])
        .unwrap();
        assert_eq!(c.duration, SMOKE_DURATION);
        assert_eq!(c.warmup, Duration::ZERO);
        assert_eq!(c.keys, SMOKE_KEYS);
        assert_eq!(c.concurrency, SMOKE_CONCURRENCY);
        assert_eq!(c.max_ops, Some(SMOKE_MAX_OPS));
        assert!(c.preload);
    }

    #[test]
    fn levels_appear_as_typed() {
        let c = config(&["-r", "ALL", "-w", "2"]).unwrap();
        assert_eq!(c.read_level, Some(Level::All));
        assert_eq!(c.write_level, Some(Level::Count(2)));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["read_level"], "all");
        assert_eq!(json["write_level"], "2");
        assert_eq!(
            serde_json::to_value(config(&[]).unwrap()).unwrap()["read_level"],
            "default"
        );
    }
}
