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

use crate::error::{Error, Result};
use crate::storage::{StorageOptions, SyncMode};

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
            max_offset_ms: crate::replica::DEFAULT_MAX_CLOCK_OFFSET_MS,
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

/// Switches for tests and debugging; never for production.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Allows Admin.SetFaults to cut internal traffic to chosen nodes and
    /// to fail the next WAL sync (the storage fault point).
    pub fault_injection: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Prometheus text exposition at `http://<listen>/metrics`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9379".parse().expect("valid default address"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `ringkv_server=debug,info`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
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

    /// Checks the rules no single field's type can express.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        let c = &self.cluster;
        if !c.partitions.is_power_of_two() || !(1..=65536).contains(&c.partitions) {
            return fail(format!(
                "cluster.partitions = {} must be a power of two between 1 and 65536",
                c.partitions
            ));
        }
        if c.replication == 0 || c.replication > 16 {
            return fail(format!(
                "cluster.replication = {} must be between 1 and 16",
                c.replication
            ));
        }
        for (name, level) in [("cluster.read", c.read), ("cluster.write", c.write)] {
            if let Level::Count(n) = level {
                if n == 0 || n > c.replication {
                    return fail(format!(
                        "{name} = {n} must be between 1 and cluster.replication = {}",
                        c.replication
                    ));
                }
            }
        }
        if c.bootstrap_expect == 0 {
            return fail("cluster.bootstrap_expect must be at least 1".to_string());
        }
        for seed in &c.seeds {
            if seed.trim().is_empty() || !seed.contains(':') {
                return fail(format!("cluster.seeds entry {seed:?} must be host:port"));
            }
        }
        // Just after a restart a node's timestamps run up to one clock lease
        // ahead of its wall clock; peers must accept that much.
        let lease = crate::replica::clock::LEASE_MS;
        if self.clock.max_offset_ms <= 2 * lease {
            return fail(format!(
                "clock.max_offset_ms = {} must exceed {} ms (twice the clock floor's lease)",
                self.clock.max_offset_ms,
                2 * lease
            ));
        }
        if self.gossip.interval_ms == 0 || self.gossip.fanout == 0 {
            return fail("gossip.interval_ms and gossip.fanout must be at least 1".to_string());
        }
        if !self.gossip.phi_threshold.is_finite() || self.gossip.phi_threshold <= 0.0 {
            return fail("gossip.phi_threshold must be positive".to_string());
        }
        let h = &self.handoff;
        if h.replica_timeout_ms == 0 || h.interval_ms == 0 || h.batch_size == 0 || h.max_rate == 0 {
            return fail(
                "handoff.replica_timeout_ms, interval_ms, batch_size and max_rate must be at least 1"
                    .to_string(),
            );
        }
        let r = &self.repair;
        if r.interval_ms == 0 || r.keys_per_second == 0 {
            return fail(
                "repair.interval_ms and repair.keys_per_second must be at least 1".to_string(),
            );
        }
        if r.tombstone_grace_ms <= h.max_age_ms {
            return fail(format!(
                "repair.tombstone_grace_ms ({}) must exceed handoff.max_age_ms ({}): a hint older than the grace could bring deleted data back",
                r.tombstone_grace_ms, h.max_age_ms
            ));
        }
        let t = &self.transfer;
        if !t.max_rate.is_finite() || t.max_rate < 0.0 {
            return fail(format!(
                "transfer.max_rate = {} must be a number of MB/s, 0 for unlimited",
                t.max_rate
            ));
        }
        if !(1024..=MAX_CHUNK_BYTES).contains(&t.chunk_bytes) {
            return fail(format!(
                "transfer.chunk_bytes = {} must be between 1024 and {MAX_CHUNK_BYTES}",
                t.chunk_bytes
            ));
        }
        if t.concurrency == 0 || t.retry_ms == 0 {
            return fail(
                "transfer.concurrency and transfer.retry_ms must be at least 1".to_string(),
            );
        }
        if self.node.weight == 0 {
            return fail("node.weight must be at least 1".to_string());
        }
        if self.node.name.trim().is_empty() {
            return fail("node.name must not be empty".to_string());
        }
        let l = &self.limits;
        if l.max_key_bytes == 0 || l.max_key_bytes > MAX_KEY_LIMIT {
            return fail(format!(
                "limits.max_key_bytes = {} must be between 1 and {MAX_KEY_LIMIT}",
                l.max_key_bytes
            ));
        }
        if l.max_value_bytes == 0 || l.max_value_bytes > MAX_VALUE_LIMIT {
            return fail(format!(
                "limits.max_value_bytes = {} must be between 1 and {MAX_VALUE_LIMIT}",
                l.max_value_bytes
            ));
        }
        let least_state = l.max_value_bytes + KEY_STATE_HEADROOM_BYTES;
        if l.max_key_state_bytes < least_state || l.max_key_state_bytes > MAX_KEY_STATE_LIMIT {
            return fail(format!(
                "limits.max_key_state_bytes = {} must be between limits.max_value_bytes + {KEY_STATE_HEADROOM_BYTES} = {least_state} (one value of the largest size must always fit) and {MAX_KEY_STATE_LIMIT}; raise it together with max_value_bytes",
                l.max_key_state_bytes
            ));
        }
        if l.max_siblings == 0 {
            return fail("limits.max_siblings must be at least 1".to_string());
        }
        if l.request_timeout_ms == 0 {
            return fail("limits.request_timeout_ms must be at least 1".to_string());
        }
        if l.max_concurrent_requests == 0 {
            return fail("limits.max_concurrent_requests must be at least 1".to_string());
        }
        if self.storage.sync_interval_ms == 0 {
            return fail("storage.sync_interval_ms must be at least 1".to_string());
        }
        if !(1.0..=64.0).contains(&self.storage.bloom_bits_per_key) {
            return fail("storage.bloom_bits_per_key must be between 1 and 64".to_string());
        }
        let clash = |a: SocketAddr, b: SocketAddr| a == b && a.port() != 0;
        if self.metrics.enabled && clash(self.metrics.listen, self.node.listen) {
            return fail("metrics.listen must differ from node.listen".to_string());
        }
        if self.metrics.enabled && clash(self.metrics.listen, self.node.peer_listen) {
            return fail("metrics.listen must differ from node.peer_listen".to_string());
        }
        if clash(self.node.peer_listen, self.node.listen) {
            return fail(
                "node.peer_listen must differ from node.listen: the peer port serves the other nodes only"
                    .to_string(),
            );
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| Error::Config(format!("log.level = {:?}: {e}", self.log.level)))?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.node.listen.to_string(), "127.0.0.1:7379");
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9379");
        assert_eq!(c.cluster.replication, 3);
        assert_eq!(c.cluster.partitions, 256);
        assert_eq!(c.cluster.read, Level::Quorum);
        assert_eq!(c.limits.max_key_bytes, 4096);
        assert_eq!(c.limits.max_value_bytes, 1 << 20);
        assert_eq!(c.storage.sync, SyncMode::Periodic);
    }

    #[test]
    fn key_state_limit_holds_one_largest_value_not_two_and_fits_a_message() {
        let l = LimitsConfig::default();
        assert!(l.max_key_state_bytes >= l.max_value_bytes + KEY_STATE_HEADROOM_BYTES);
        assert!(
            l.max_key_state_bytes < 2 * l.max_value_bytes,
            "two values of the largest size must not fit one key by default"
        );
        // A key and its whole state, plus framing, fit one message; a
        // client's put (key, value, context) too.
        assert!(
            l.max_message_bytes()
                >= l.max_key_state_bytes + l.max_key_bytes + MESSAGE_OVERHEAD_BYTES
        );
        assert!(
            l.max_message_bytes() >= l.max_value_bytes + l.max_key_bytes + MESSAGE_OVERHEAD_BYTES
        );
        assert_eq!(l.max_item_bytes(), l.max_key_state_bytes + l.max_key_bytes);
        // The message limit follows the state limit when it is raised.
        let raised = LimitsConfig {
            max_key_state_bytes: 8 << 20,
            ..LimitsConfig::default()
        };
        assert_eq!(
            raised.max_message_bytes(),
            (8 << 20) + raised.max_key_bytes + MESSAGE_OVERHEAD_BYTES
        );
    }

    #[test]
    fn key_state_limit_is_validated_against_the_value_limit() {
        let too_small = vec![(
            "limits.max_key_state_bytes".to_string(),
            (1024 * 1024).to_string(),
        )];
        let err = Config::load(None, &too_small).unwrap_err().to_string();
        assert!(err.contains("max_key_state_bytes"), "{err}");
        assert!(err.contains("max_value_bytes"), "{err}");

        let bigger_values = vec![("limits.max_value_bytes".to_string(), (4 << 20).to_string())];
        let err = Config::load(None, &bigger_values).unwrap_err().to_string();
        assert!(err.contains("raise it together"), "{err}");

        let both = vec![
            ("limits.max_value_bytes".to_string(), (4 << 20).to_string()),
            (
                "limits.max_key_state_bytes".to_string(),
                (5 << 20).to_string(),
            ),
        ];
        let c = Config::load(None, &both).unwrap();
        assert!(c.limits.max_message_bytes() > 5 << 20);

        let too_big = vec![(
            "limits.max_key_state_bytes".to_string(),
            (MAX_KEY_STATE_LIMIT + 1).to_string(),
        )];
        assert!(Config::load(None, &too_big).is_err());
    }

    #[test]
    fn file_then_overrides_layer_in_order() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[node]\nname = \"from-file\"\nlisten = \"127.0.0.1:7400\"\n[cluster]\nwrite = \"all\"\nread = 2"
        )
        .unwrap();
        let overrides = vec![("node.name".to_string(), "from-flag".to_string())];
        let c = Config::load(Some(file.path()), &overrides).unwrap();
        assert_eq!(c.node.name, "from-flag");
        assert_eq!(c.node.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.cluster.write, Level::All);
        assert_eq!(c.cluster.read, Level::Count(2));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[node]\nlisen = \"127.0.0.1:7400\"").unwrap();
        let err = Config::load(Some(file.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");

        let bad = vec![("cluster.partitions".to_string(), "100".to_string())];
        let err = Config::load(None, &bad).unwrap_err().to_string();
        assert!(err.contains("power of two"), "{err}");

        let bad = vec![("cluster.write".to_string(), "7".to_string())];
        assert!(Config::load(None, &bad).is_err());

        let missing = Path::new("/nonexistent/ringkv.toml");
        assert!(Config::load(Some(missing), &[]).is_err());
    }

    #[test]
    fn printed_config_loads_back_identically() {
        let c = Config::load(None, &[]).unwrap();
        let text = c.to_toml().unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let again = Config::load(Some(file.path()), &[]).unwrap();
        assert_eq!(again.to_toml().unwrap(), text);
    }
}
