//! The request options and results of the client API.

use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1 as pb;

use crate::{Level, ReplyMeta, CLIENT_DEADLINE_MARGIN, DEFAULT_CLIENT_DEADLINE};

/// Per-request consistency; `None` fields take the node's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestOptions {
    pub level: Option<Level>,
    /// `Some(false)`: only the key's own replicas count toward W (`--strict`).
    pub sloppy: Option<bool>,
    pub timeout: Option<Duration>,
}

impl RequestOptions {
    pub fn level(level: Level) -> Self {
        Self {
            level: Some(level),
            ..Self::default()
        }
    }

    pub(crate) fn to_proto(self) -> pb::Consistency {
        let required = self.level.map(|l| match l {
            Level::One => pb::consistency::Required::Level(pb::Level::One as i32),
            Level::Quorum => pb::consistency::Required::Level(pb::Level::Quorum as i32),
            Level::All => pb::consistency::Required::Level(pb::Level::All as i32),
            Level::Count(n) => pb::consistency::Required::Count(n),
        });
        pb::Consistency {
            required,
            sloppy: self.sloppy,
            timeout_ms: self
                .timeout
                .map(|t| t.as_millis().clamp(1, u32::MAX as u128) as u32),
        }
    }

    pub(crate) fn client_deadline(&self) -> Duration {
        self.timeout
            .map(|t| t + CLIENT_DEADLINE_MARGIN)
            .unwrap_or(DEFAULT_CLIENT_DEADLINE)
    }
}

/// Opaque causal context returned by reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(pub Bytes);

impl Context {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    pub value: Bytes,
    /// Hybrid logical clock timestamp (upper 48 bits: unix ms).
    pub timestamp: u64,
    pub expires_at_ms: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct GetResult {
    /// Live values, oldest first; empty when the key is absent or deleted.
    pub siblings: Vec<Sibling>,
    pub context: Context,
    pub meta: ReplyMeta,
}

impl GetResult {
    pub fn found(&self) -> bool {
        !self.siblings.is_empty()
    }

    /// The single value, when there is exactly one.
    pub fn value(&self) -> Option<&Bytes> {
        match self.siblings.as_slice() {
            [one] => Some(&one.value),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PutResult {
    pub context: Context,
    pub meta: ReplyMeta,
}

/// Options of a put besides consistency.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub consistency: RequestOptions,
    /// Context from an earlier get; `None` is a blind overwrite.
    pub context: Option<Context>,
    pub ttl: Option<Duration>,
}

/// One node's stored copy of a key (Admin.LocalGet).
#[derive(Clone, Debug)]
pub struct LocalCopy {
    pub found: bool,
    pub partition: u32,
    pub versions: Vec<pb::LocalVersion>,
    pub context: Context,
}

/// The reply meta a node sent (absent: all defaults).
pub(crate) fn meta_from_proto(m: Option<pb::ReplyMeta>) -> ReplyMeta {
    let m = m.unwrap_or_default();
    ReplyMeta {
        coordinator: m.coordinator,
        replicas: m.replicas,
        fallbacks: m
            .fallbacks
            .into_iter()
            .map(|f| (f.node, f.stands_in_for))
            .collect(),
        read_repaired: m.read_repaired,
        replication: m.replication,
        replication_capped: m.replication_capped,
        required: m.required,
        layout_version: m.layout_version,
    }
}
