//! The command line of a load run, and the validated [`Config`] it becomes.
//!
//! A run is: a **target** (a ringkv cluster by default; etcd, the echo
//! server or the in-process storage engine for comparison), a **mix** of
//! operations (a YCSB workload or a read ratio), a **key distribution**,
//! and how hard to push: `--concurrency` requests in flight, either as fast
//! as answers come back (closed loop) or issued on a fixed schedule
//! (`--target-rate`, open loop). Everything is bounded in time.
//!
//! The YCSB core workloads, as this tool runs them:
//!
//! | workload | mix | YCSB's example |
//! |---|---|---|
//! | `a` | 50% read, 50% update | session store |
//! | `b` | 95% read, 5% update | photo tagging |
//! | `c` | 100% read | user profile cache |
//! | `f` | 50% read, 50% read-modify-write | user database |
//! | `load` | 100% insert, each key once | the load phase |
//!
//! `--insert-from N` makes the load workload insert only keys `N..keys`, so
//! a key space that already holds keys `0..N` can be grown step by step
//! without writing its first keys again.
//!
//! Updates are blind overwrites (no context); a read-modify-write gets a
//! key and writes it back with the get's context, as a careful ringkv
//! client does. (YCSB's D and E need "latest" keys and scans, which a
//! key-value store without ordered scans does not serve.)
//!
//! [`Config`] is also the `config` object of the JSON report, so every run
//! records exactly what it did, including the seed.

mod mix;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use ringkv_client::Level;
use serde::{Serialize, Serializer};

use crate::report::Op;

pub use mix::{Mix, Workload};

/// The node a bare `ringkv-bench` talks to: a local node on the default port.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";

/// Most concurrent clients accepted. Each keeps four latency histograms
/// (about 140 KiB each), and far more clients than this only measure the
/// generator's own scheduler.
pub const MAX_CONCURRENCY: usize = 1024;

/// Largest key space accepted: the key format has 10 digits.
pub const MAX_KEYS: u64 = 9_999_999_999;

/// Largest value accepted: the server's default value limit (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Longest measured phase or warm-up accepted, so that a typo cannot start
/// a load that runs for days.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Highest `--target-rate` accepted: beyond what any loopback setup here
/// serves, and a schedule interval still far above timer resolution.
pub const MAX_TARGET_RATE: f64 = 10_000_000.0;

/// Warm-up when none is given: long enough to open connections and warm
/// caches, short enough not to matter.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);

/// YCSB's zipfian constant: the hottest of 100 000 keys gets about 8% of
/// requests.
pub const DEFAULT_ZIPF_THETA: f64 = 0.99;

/// Smoke mode: measured phase length.
pub const SMOKE_DURATION: Duration = Duration::from_secs(1);

/// Smoke mode: key space, preloaded so reads find values.
pub const SMOKE_KEYS: u64 = 200;

/// Smoke mode: at most this many clients, to stay light beside a test node
/// on a small CI machine.
pub const SMOKE_CONCURRENCY: usize = 8;

/// Smoke mode: at most this many measured requests.
pub const SMOKE_MAX_OPS: u64 = 20_000;

/// The read share used when neither `--read-ratio` nor `--workload` is given
/// (YCSB workload A).
pub const DEFAULT_READ_RATIO: f64 = 0.5;

/// What the load runs against (see [`crate::target`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// ringkv nodes at --endpoints.
    Ringkv,
    /// etcd members' client URLs at --endpoints (host:port).
    Etcd,
    /// `ringkv-bench echo-server` processes at --endpoints.
    Echo,
    /// ringkv's RocksDB engine in this process (--data-dir, --sync).
    Storage,
}

/// How keys are chosen (see [`crate::keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    /// YCSB's zipfian, scrambled over the key space.
    Zipfian,
}

/// `storage.sync` of the storage target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageSync {
    Always,
    Periodic,
    Never,
}

impl StorageSync {
    pub fn mode(self) -> ringkv_storage::SyncMode {
        use ringkv_storage::SyncMode;
        match self {
            StorageSync::Always => SyncMode::Always,
            StorageSync::Periodic => SyncMode::Periodic,
            StorageSync::Never => SyncMode::Never,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Options of a load run (the command without a subcommand).
#[derive(Args, Debug)]
pub struct RunArgs {
    /// System to load.
    #[arg(long, value_enum, default_value_t = Target::Ringkv)]
    target: Target,
    /// Nodes to send requests to, comma separated; any ringkv node
    /// coordinates any key.
    #[arg(long, env = "RINGKV_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINT)]
    endpoints: Vec<String>,
    /// ringkv: send each request to the endpoints in turn and let the node
    /// forward it, instead of straight to a replica of the key.
    #[arg(long)]
    no_routing: bool,
    /// Storage target: RocksDB directory [default: a temporary one].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage target: storage.sync.
    #[arg(long, value_enum, default_value_t = StorageSync::Periodic)]
    sync: StorageSync,
    /// Requests in flight at once (clients).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Share of requests that are reads, the rest updates, 0.0 to 1.0
    /// [default: 0.5].
    #[arg(long, conflicts_with = "workload")]
    read_ratio: Option<f64>,
    /// YCSB mix: a (50% reads), b (95%), c (100%), f (50% reads, 50%
    /// read-modify-write), load (insert every key once).
    #[arg(long, value_enum)]
    workload: Option<Workload>,
    /// Key choice.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Skew of --distribution zipfian, between 0 and 1 (exclusive).
    #[arg(long, default_value_t = DEFAULT_ZIPF_THETA)]
    zipf_theta: f64,
    /// Open loop: schedule this many requests per second in total, at fixed
    /// intervals, and time each from its scheduled start [default: closed
    /// loop, each client sends when its previous answer arrives].
    #[arg(long, value_name = "OPS")]
    target_rate: Option<f64>,
    /// Length of the measured phase (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many measured requests, even before --duration.
    #[arg(long)]
    max_ops: Option<u64>,
    /// Load run before measuring, not recorded [default: 1s; 0 for
    /// --workload load].
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Write every key once before measuring, so reads find values.
    #[arg(long)]
    preload: bool,
    /// Load workload: insert only the keys from this index on (up to
    /// --keys), growing a key space whose first keys were loaded before.
    #[arg(long, value_name = "N", default_value_t = 0)]
    insert_from: u64,
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
    /// Show a progress line on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// CI mode: 1 s measured, no warm-up, 200 keys (preloaded unless the
    /// workload is load), at most 8 clients and 20 000 requests; exits
    /// non-zero when no request succeeded.
    #[arg(long)]
    smoke: bool,
}

/// A validated run description; also the `config` object of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub target: Target,
    pub endpoints: Vec<String>,
    /// ringkv: partition-aware routing (off with `--no-routing`).
    pub routing: bool,
    /// Storage target only.
    pub data_dir: Option<PathBuf>,
    /// Storage target only.
    pub sync: StorageSync,
    pub concurrency: usize,
    pub keys: u64,
    pub value_size: usize,
    /// Share of plain reads (kept beside `mix` for older scripts).
    pub read_ratio: f64,
    pub mix: Mix,
    /// The YCSB preset the mix came from, if any.
    pub workload: Option<Workload>,
    pub distribution: Distribution,
    /// Used with `distribution = zipfian` only.
    pub zipf_theta: f64,
    /// Open loop at this many requests per second; `null` for closed loop.
    pub target_rate: Option<f64>,
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
    /// Load workload: the first key index inserted (0 unless
    /// `--insert-from`); keys below it are taken as already loaded.
    pub insert_from: u64,
    pub smoke: bool,
    pub key_prefix: String,
    /// The seed actually used, so a run's choices can be repeated.
    pub seed: u64,
    #[serde(skip)]
    pub output: Output,
    /// Show the progress line (a terminal, or `--progress`).
    #[serde(skip)]
    pub progress: bool,
}

impl Config {
    pub fn from_args(args: RunArgs) -> Result<Config> {
        let mix = match (args.read_ratio, args.workload) {
            (Some(r), _) => Mix::reads(r),
            (None, Some(w)) => w.mix(),
            (None, None) => Mix::reads(DEFAULT_READ_RATIO),
        };
        let loading = args.workload == Some(Workload::Load);
        if loading && args.warmup.is_some_and(|w| !w.is_zero()) {
            bail!("--warmup does not apply to --workload load: every insert is measured");
        }
        if loading && args.preload {
            bail!("--preload does not apply to --workload load, which is itself the preload");
        }
        let mut config = Config {
            target: args.target,
            endpoints: args.endpoints,
            routing: !args.no_routing,
            data_dir: args.data_dir,
            sync: args.sync,
            concurrency: args.concurrency,
            keys: args.keys,
            value_size: args.value_size,
            read_ratio: mix.read,
            mix,
            workload: args.workload,
            distribution: args.distribution,
            zipf_theta: args.zipf_theta,
            target_rate: args.target_rate,
            read_level: args.read_level,
            write_level: args.write_level,
            timeout: args.timeout,
            duration: args.duration,
            warmup: args.warmup.unwrap_or(if loading {
                Duration::ZERO
            } else {
                DEFAULT_WARMUP
            }),
            max_ops: args.max_ops,
            preload: args.preload,
            insert_from: args.insert_from,
            smoke: args.smoke,
            key_prefix: args.key_prefix,
            seed: args.seed.unwrap_or_else(rand::random),
            output: args.output,
            progress: args.progress || std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        if config.smoke {
            config.duration = SMOKE_DURATION;
            config.warmup = Duration::ZERO;
            config.keys = SMOKE_KEYS;
            config.preload = !loading;
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

    pub fn validate(&self) -> Result<()> {
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
        if !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0) {
            bail!("--zipf-theta must be between 0 and 1, both excluded");
        }
        if let Some(rate) = self.target_rate {
            if !(rate > 0.0 && rate <= MAX_TARGET_RATE) {
                bail!("--target-rate must be more than 0 and at most {MAX_TARGET_RATE} ops/s");
            }
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!("--duration must be more than 0 and at most {MAX_DURATION:?}");
        }
        if self.warmup > MAX_DURATION {
            bail!("--warmup must be at most {MAX_DURATION:?}");
        }
        if self.insert_from > 0 && self.mix.insert == 0.0 {
            bail!("--insert-from applies to --workload load only");
        }
        if self.insert_from >= self.keys {
            bail!(
                "--insert-from {} leaves nothing to insert: it must be below --keys ({})",
                self.insert_from,
                self.keys
            );
        }
        if self.max_ops == Some(0) {
            bail!("--max-ops must be at least 1");
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            bail!("--timeout must be more than 0");
        }
        if self.target != Target::Ringkv
            && (self.read_level.is_some() || self.write_level.is_some() || self.timeout.is_some())
        {
            bail!("-r, -w and --timeout apply to --target ringkv only");
        }
        if self.target != Target::Storage && self.data_dir.is_some() {
            bail!("--data-dir applies to --target storage only");
        }
        Ok(())
    }

    /// What was loaded, for the text report.
    pub fn target_label(&self) -> String {
        match self.target {
            Target::Storage => format!("RocksDB engine in process (sync {})", sync_name(self.sync)),
            Target::Ringkv => format!("ringkv {}", self.endpoints.join(",")),
            Target::Etcd => format!("etcd {}", self.endpoints.join(",")),
            Target::Echo => format!("echo {}", self.endpoints.join(",")),
        }
    }

    pub fn distribution_label(&self) -> String {
        match self.distribution {
            Distribution::Uniform => "uniform".to_string(),
            Distribution::Zipfian => format!("zipfian θ={}", self.zipf_theta),
        }
    }

    pub fn mix_label(&self) -> String {
        let parts: Vec<String> = Op::ALL
            .into_iter()
            .filter(|&op| self.mix.share(op) > 0.0)
            .map(|op| format!("{:.0}% {}", self.mix.share(op) * 100.0, op.label()))
            .collect();
        let preset = self
            .workload
            .map(|w| format!(" (workload {w})"))
            .unwrap_or_default();
        format!("{}{preset}", parts.join(", "))
    }
}

fn sync_name(sync: StorageSync) -> &'static str {
    match sync {
        StorageSync::Always => "always",
        StorageSync::Periodic => "periodic",
        StorageSync::Never => "never",
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
