//! Node configuration: layered, validated once at start-up.
//!
//! Layers, later ones winning: the built-in defaults of [`Config::default`],
//! a TOML file (`--config FILE`), environment variables
//! (`RINGKV__SECTION__KEY`, e.g. `RINGKV__NODE__LISTEN=127.0.0.1:7400`), and
//! command-line flags. Unknown keys are errors, so a typo in a file or an
//! environment variable is reported instead of silently ignored.
//! [`Config::validate`] checks cross-field rules; a node refuses to start on
//! an invalid configuration. `deploy/ringkv.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringkv_common::Level;
use serde::{Deserialize, Serialize};

use ringkv_core::error::{Error, Result};
use ringkv_storage::{StorageOptions, SyncMode};

/// How far ahead of the timestamp being issued a node's persisted clock
/// floor is moved (`replica::clock`): one synced write per this many
/// milliseconds of writes. Kept well under the default `clock.max_offset_ms`
/// (500), because just after a restart timestamps run up to this far ahead
/// of the wall clock and peers refuse anything further ahead than their max
/// offset; validation requires `max_offset_ms` above twice this.
pub const CLOCK_LEASE_MS: u64 = 200;

/// Default `clock.max_offset_ms`, also used by replicas built without a
/// configuration (tests).
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// Largest accepted `limits.max_value_bytes`: gRPC messages must still fit
/// a value plus key and metadata.
pub const MAX_VALUE_LIMIT: usize = 64 * 1024 * 1024;

/// Largest accepted `limits.max_key_bytes` (shared: the client refuses
/// longer keys without asking).
pub use ringkv_common::MAX_KEY_LIMIT;

/// Keys whose environment or flag values are comma-separated lists.
const LIST_KEYS: &[&str] = &["cluster.seeds"];

/// Room in each gRPC message for everything that is not the key or the
/// key's state (a client's context, per-sibling reply fields, metadata,
/// framing).
pub const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

/// Largest accepted `limits.max_key_state_bytes`.
pub const MAX_KEY_STATE_LIMIT: usize = 2 * MAX_VALUE_LIMIT;

/// What `limits.max_key_state_bytes` must leave beyond one value of
/// `limits.max_value_bytes`: the version vector and one version's fields
/// (dot, timestamp, flags, expiry, length), so that a write with a context
/// covering every sibling, or a blind write, always fits however large its
/// value. 16 KiB holds a vector of several hundred nodes.
pub const KEY_STATE_HEADROOM_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub clock: ClockConfig,
    pub cluster: ClusterConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub gossip: GossipConfig,
    pub handoff: HandoffConfig,
    pub repair: RepairConfig,
    pub transfer: TransferConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub debug: DebugConfig,
}

/// This node's identity and where it listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Human-readable name, shown in status output; ids stay the identity.
    pub name: String,
    /// Client port: gRPC for clients and operators (KV, Admin, health).
    pub listen: SocketAddr,
    /// Address clients should dial (partition-aware clients learn it from
    /// `Admin.Members`); defaults to `listen`.
    pub advertise: Option<String>,
    /// Peer port: gRPC for the other nodes (Internal, and requests they
    /// forward). The Internal service is never served on the client port.
    pub peer_listen: SocketAddr,
    /// Address the other nodes should dial, and what seeds name; defaults
    /// to `peer_listen`.
    pub peer_advertise: Option<String>,
    /// Where RocksDB files and the node id live.
    pub data_dir: PathBuf,
    /// Failure domain used by placement to spread replicas.
    pub zone: String,
    /// Relative share of partitions this node should hold.
    pub weight: u32,
    /// At a stop, how long the node keeps its ports open reporting
    /// NOT_SERVING and refusing data requests (UNAVAILABLE, nothing
    /// applied) before it closes them, at least: clients and load
    /// balancers learn it is going and send elsewhere.
    pub stop_drain_ms: u64,
    /// Threads of the runtime that serves requests; 0 (the default): one
    /// per CPU the process may use (its affinity and cgroup quota). Set it
    /// to the node's share of the host where several nodes, or a node and
    /// its clients, share CPUs: idle workers woken for every request cost
    /// more there than the parallelism gains (docs/benchmarks.md).
    pub worker_threads: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "ringkv".to_string(),
            listen: "127.0.0.1:7379".parse().expect("valid default address"),
            advertise: None,
            peer_listen: "127.0.0.1:7380".parse().expect("valid default address"),
            peer_advertise: None,
            data_dir: PathBuf::from("./data"),
            zone: "default".to_string(),
            weight: 1,
            stop_drain_ms: 1000,
            worker_threads: 0,
        }
    }
}

/// Cluster-wide settings; every member must use the same values.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Guards against joining nodes of another cluster.
    pub name: String,
    /// Q: fixed number of partitions, a power of two, set when the cluster is created.
    pub partitions: u32,
    /// N: replicas per key (capped at the number of members).
    pub replication: u32,
    /// Default R when a request does not say.
    pub read: Level,
    /// Default W when a request does not say.
    pub write: Level,
    /// `host:port` of nodes to contact at start to find the cluster.
    pub seeds: Vec<String>,
    /// Fresh nodes wait until they see this many members, then the lowest
    /// node id computes layout v1. 1 = a node alone forms its own cluster.
    pub bootstrap_expect: usize,
    /// A fresh node started with seeds after the cluster formed is planned
    /// and committed into the layout without an operator (as Cassandra's
    /// auto-bootstrap). `false`: it waits for `ringkv cluster join`, then
    /// `plan` and `commit`.
    pub auto_join: bool,
    /// A read asks R replicas (this node first when it is one); when they
    /// have not all answered after this long, it asks one more, as it does
    /// at once for every replica that fails. 0: every read asks every
    /// replica at once.
    pub speculative_read_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "ringkv".to_string(),
            partitions: 256,
            replication: 3,
            read: Level::Quorum,
            write: Level::Quorum,
            seeds: Vec::new(),
            bootstrap_expect: 1,
            auto_join: true,
            speculative_read_ms: 10,
        }
    }
}

/// Which storage engine backs the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// RocksDB in `node.data_dir`: the durable engine.
    Rocksdb,
    /// In memory; loses everything at exit. For tests and experiments.
    Memory,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub engine: EngineKind,
    /// `always`: fsync before ack; `periodic`: WAL written before ack, fsync
    /// every `sync_interval_ms`; `never`: fsync left to the OS.
    pub sync: SyncMode,
    pub sync_interval_ms: u64,
    /// Shared RocksDB block cache.
    pub block_cache_mb: u64,
    /// Bloom filter bits per key on the data column family.
    pub bloom_bits_per_key: f64,
    /// RocksDB memtable size before a flush.
    pub write_buffer_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::Rocksdb,
            sync: SyncMode::Periodic,
            sync_interval_ms: 100,
            block_cache_mb: 256,
            bloom_bits_per_key: 10.0,
            write_buffer_mb: 64,
        }
    }
}

impl StorageConfig {
    pub fn options(&self) -> StorageOptions {
        StorageOptions {
            sync: self.sync,
            sync_interval: Duration::from_millis(self.sync_interval_ms),
            block_cache_bytes: (self.block_cache_mb as usize) << 20,
            bloom_bits_per_key: self.bloom_bits_per_key,
            write_buffer_bytes: (self.write_buffer_mb as usize) << 20,
        }
    }
}

/// Limits that protect the node from oversized or runaway requests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Most bytes one key's stored state may take (its siblings' values,
    /// the version vector, each version's dot and timestamp), as encoded.
    /// A write that would pass it is refused (RESOURCE_EXHAUSTED); a merge
    /// that would pass it collapses the oldest siblings. It bounds every
    /// internal message that carries a key, so the message limit is derived
    /// from it ([`LimitsConfig::max_message_bytes`]). The default holds one
    /// value of the largest size with room to spare but not two, so two
    /// concurrent writes of large values cannot make a key unsendable.
    pub max_key_state_bytes: usize,
    /// Concurrent versions kept per key; past it the oldest are collapsed.
    pub max_siblings: usize,
    /// Default deadline for a request when the client sets none.
    pub request_timeout_ms: u64,
    /// Requests served at once; more get RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: ringkv_common::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: 1024 * 1024,
            max_key_state_bytes: 1024 * 1024 + 256 * 1024,
            max_siblings: 32,
            request_timeout_ms: 5_000,
            max_concurrent_requests: 1024,
        }
    }
}

impl LimitsConfig {
    /// Largest gRPC message the node sends or accepts: one key and its
    /// whole state (which holds at least one value, see `validate`) plus
    /// [`MESSAGE_OVERHEAD_BYTES`]. So every state this node may store fits
    /// in one internal message with room for its framing, and a get's reply
    /// (the merged state's siblings and context) fits a client message.
    pub fn max_message_bytes(&self) -> usize {
        self.max_key_state_bytes.max(self.max_value_bytes)
            + self.max_key_bytes
            + MESSAGE_OVERHEAD_BYTES
    }

    /// The largest item (a key and its encoded state) one internal message
    /// can carry: the message limit less its overhead. An item past it
    /// fails alone, before it is sent.
    pub fn max_item_bytes(&self) -> usize {
        self.max_message_bytes() - MESSAGE_OVERHEAD_BYTES
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Bounds on the hybrid logical clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// How far ahead of this node's wall clock a timestamp (or dot counter)
    /// in a peer's versions or a client's context may be; beyond it the
    /// item is refused and counted, so one bad clock cannot drag every
    /// node's clock to the end of time.
    pub max_offset_ms: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            max_offset_ms: DEFAULT_MAX_CLOCK_OFFSET_MS,
        }
    }
}

/// Membership gossip and failure detection.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Time between gossip rounds; also the expected heartbeat interval.
    pub interval_ms: u64,
    /// Peers contacted per round.
    pub fanout: usize,
    /// Phi-accrual threshold above which a member is considered down.
    pub phi_threshold: f64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1000,
            fanout: 3,
            phi_threshold: 8.0,
        }
    }
}

impl GossipConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// Sloppy quorums and hinted handoff.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// How long the coordinator waits for a replica before a fallback
    /// takes the write as a hint.
    pub replica_timeout_ms: u64,
    /// Time between delivery rounds.
    pub interval_ms: u64,
    /// Hints sent per batch.
    pub batch_size: usize,
    /// Hints delivered per second at most, over all targets.
    pub max_rate: u64,
    /// Hint bytes kept per target node; past it new hints for that node are
    /// refused (the coordinator tries the next fallback).
    pub max_bytes_per_target: u64,
    /// Hints older than this are dropped (anti-entropy repairs the rest).
    pub max_age_ms: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            replica_timeout_ms: 1000,
            interval_ms: 1000,
            batch_size: 256,
            max_rate: 5000,
            max_bytes_per_target: 256 * 1024 * 1024,
            max_age_ms: 3 * 3600 * 1000,
        }
    }
}

/// Replica convergence: read repair, anti-entropy, tombstone purge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepairConfig {
    /// How long a read keeps listening for the replicas that had not
    /// answered when it replied, to repair those that are behind.
    pub read_repair_wait_ms: u64,
    /// Whether the anti-entropy worker runs.
    pub anti_entropy: bool,
    /// Pause between two anti-entropy passes over this node's partitions.
    pub interval_ms: u64,
    /// Budget: keys scanned per second by anti-entropy.
    pub keys_per_second: u64,
    /// A tombstone is purged once every replica holds it and it is older
    /// than this. Must exceed `handoff.max_age_ms`, so no stale hint can
    /// bring back what a purged tombstone deleted.
    pub tombstone_grace_ms: u64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            read_repair_wait_ms: 1000,
            anti_entropy: true,
            interval_ms: 60_000,
            keys_per_second: 50_000,
            tombstone_grace_ms: 24 * 3600 * 1000,
        }
    }
}

/// Largest `transfer.chunk_bytes`; a chunk is also kept under half the
/// largest gRPC message the node accepts.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Partition transfers during cluster changes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// MB/s (10^6 bytes) this node receives at most over all its transfers;
    /// 0 = unlimited.
    pub max_rate: f64,
    /// Bytes of keys and versions per chunk (kept under half the largest
    /// message, see `limits`).
    pub chunk_bytes: usize,
    /// Partitions streamed at once; one that has streamed and is syncing
    /// with, or waiting for, its old replicas does not take a slot.
    pub concurrency: usize,
    /// Wait before retrying a chunk whose source failed, ms.
    pub retry_ms: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            max_rate: 50.0,
            chunk_bytes: 256 * 1024,
            concurrency: 2,
            retry_ms: 1000,
        }
    }
}

impl TransferConfig {
    /// The byte rate limit, `None` when unlimited.
    pub fn bytes_per_second(&self) -> Option<f64> {
        (self.max_rate > 0.0).then_some(self.max_rate * 1e6)
    }
}

impl Config {
    /// Builds the configuration from its layers. `overrides` are
    /// `section.key = value` pairs from command-line flags, applied last.
    pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> Result<Config> {
        let defaults = config::Config::try_from(&Config::default())
            .map_err(|e| Error::Config(format!("built-in defaults: {e}")))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("RINGKV")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key(LIST_KEYS[0]),
        );
        for (key, value) in overrides {
            builder = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                builder.set_override(key.as_str(), items)
            } else {
                builder.set_override(key.as_str(), value.as_str())
            }
            .map_err(|e| Error::Config(format!("{key}: {e}")))?;
        }
        let config: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The address clients should use to reach this node.
    pub fn advertise_address(&self) -> String {
        self.node
            .advertise
            .clone()
            .unwrap_or_else(|| self.node.listen.to_string())
    }

    /// The address the other nodes should use to reach this node.
    pub fn peer_advertise_address(&self) -> String {
        self.node
            .peer_advertise
            .clone()
            .unwrap_or_else(|| self.node.peer_listen.to_string())
    }

    /// The effective configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Internal(format!("printing config: {e}")))
    }
}

mod diagnostics;
mod security;
mod validate;

pub use diagnostics::{DebugConfig, InjectBug, LogConfig, LogFormat, MetricsConfig};
pub use security::{AuthConfig, TlsConfig};

#[cfg(test)]
mod tests;
