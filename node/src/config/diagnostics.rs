//! The `[metrics]`, `[log]` and `[debug]` sections: what the node reports
//! about itself, and the switches tests use.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Switches for tests and debugging; never for production.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Allows Admin.SetFaults to cut internal traffic to chosen nodes and
    /// to fail the next WAL sync (the storage fault point).
    pub fault_injection: bool,
    /// A deliberate bug this node runs with, so a checker of the
    /// verification harness can be shown to catch the bug it exists for.
    /// Anything but `none` requires `fault_injection` (validation), and
    /// the node warns loudly at start.
    pub inject_bug: InjectBug,
}

/// The deliberate bugs a node can run with (`debug.inject_bug`): each
/// breaks one guarantee that one checker of the verification harness
/// exists to defend. Read once at start by the layer it breaks; `None`
/// costs that layer one comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectBug {
    /// No bug: the node as designed.
    #[default]
    None,
    /// The coordinator of a put or delete acknowledges every tenth write it
    /// coordinates with an ordinary success, without applying it anywhere
    /// (`coordinator`). Breaks: an acknowledged write is readable.
    LoseEveryTenthWrite,
    /// A replica merging versions from a peer keeps only the newest
    /// sibling by HLC while its version vector still covers every dot it
    /// saw (`replica`): last-writer-wins that silently drops concurrent
    /// writes. Breaks: an acknowledged concurrent write survives.
    MergeCollapsesSiblings,
    /// A get answers from the first replica that answers, whatever R was
    /// asked, while the reply meta still reports the requested level
    /// (`coordinator`). Breaks: a quorum read sees a quorum write.
    ReadFromOneReplica,
    /// The tombstone purge leaves one replica of the partition (the last
    /// one in the layout other than the driver) out of both its agreement
    /// and its deletes (`repair::purge`). Breaks: a deleted key stays
    /// deleted.
    PurgeIgnoresOneReplica,
}

impl InjectBug {
    /// The setting's name in configuration, for messages.
    pub fn name(self) -> &'static str {
        match self {
            InjectBug::None => "none",
            InjectBug::LoseEveryTenthWrite => "lose_every_tenth_write",
            InjectBug::MergeCollapsesSiblings => "merge_collapses_siblings",
            InjectBug::ReadFromOneReplica => "read_from_one_replica",
            InjectBug::PurgeIgnoresOneReplica => "purge_ignores_one_replica",
        }
    }
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
