//! Coordinating requests: turning one client request into replica work.
//!
//! For each request the coordinator resolves the consistency level against
//! the key's replica set, runs the replica calls through the one
//! [`quorum`](quorum::quorum) helper and builds the reply meta that tells
//! the client who took part.
//!
//! * **put / delete**: the coordinator applies the write locally first (a
//!   new dot from this node, superseding what the context covers; a delete
//!   writes a tombstone), then sends the resulting version set to the other
//!   replicas and answers after W acknowledgements, its own included.
//!   Nothing is acknowledged before W replicas have the write in their
//!   write-ahead log.
//! * **get**: asks the replicas, waits for R answers, merges them (DVV sync)
//!   and returns the live siblings with the merged context.
//!
//! The replica set of a key is its partition's replicas. On a one-node
//! cluster that is this node alone: N is capped at the number of members
//! and the reply meta says so.

mod consistency;
pub mod quorum;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use consistency::{Consistency, Level};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::replica::{wall_clock_ms, Applied, LocalWrite, Replica};
use crate::version::{NodeId, Value, Version, VersionSet, VersionVector};

/// Per-request consistency as the client sent it; `None` fields take the
/// node's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestConsistency {
    pub level: Option<Level>,
    pub sloppy: Option<bool>,
    pub timeout: Option<Duration>,
}

/// How a get presents concurrent versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolve {
    #[default]
    AllSiblings,
    /// Only the version with the greatest HLC timestamp.
    Lww,
}

#[derive(Clone, Debug)]
pub struct PutCommand {
    pub key: Bytes,
    pub value: Bytes,
    pub context: Option<VersionVector>,
    pub consistency: RequestConsistency,
    pub ttl: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct DeleteCommand {
    pub key: Bytes,
    pub context: Option<VersionVector>,
    pub consistency: RequestConsistency,
}

#[derive(Clone, Debug)]
pub struct GetCommand {
    pub key: Bytes,
    pub consistency: RequestConsistency,
    pub resolve: Resolve,
}

/// Who took part in a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyMeta {
    pub coordinator: String,
    /// Replicas that acknowledged (writes) or answered (reads).
    pub replicas: Vec<String>,
    /// (fallback, replica it stood in for).
    pub fallbacks: Vec<(String, String)>,
    pub read_repaired: u32,
    /// Effective N of the request.
    pub replication: u32,
    /// N was capped because the cluster has fewer members than configured.
    pub replication_capped: bool,
    /// R or W after resolving the level.
    pub required: u32,
}

#[derive(Clone, Debug)]
pub struct PutReply {
    /// Causal context of the new version.
    pub context: VersionVector,
    pub meta: ReplyMeta,
}

#[derive(Clone, Debug)]
pub struct GetReply {
    /// Live versions, oldest first (one at most with `Resolve::Lww`).
    pub siblings: Vec<Version>,
    /// Merged context of everything read, tombstones included.
    pub context: VersionVector,
    pub meta: ReplyMeta,
}

/// The replicas a request runs against and its resolved consistency.
struct Plan {
    replicas: Vec<NodeId>,
    consistency: Consistency,
    required: usize,
    configured_n: usize,
}

/// Runs client requests against the key's replicas.
pub struct Coordinator {
    replica: Arc<Replica>,
    /// Defaults and limits from configuration.
    config: Arc<Config>,
}

impl Coordinator {
    pub fn new(replica: Arc<Replica>, config: Arc<Config>) -> Self {
        Self { replica, config }
    }

    pub fn node_id(&self) -> NodeId {
        self.replica.node_id()
    }

    pub async fn put(&self, cmd: PutCommand) -> Result<PutReply> {
        self.check_key(&cmd.key)?;
        self.check_value(&cmd.value)?;
        let expires_at_ms = match cmd.ttl {
            None => None,
            Some(ttl) if ttl.is_zero() => {
                return Err(Error::InvalidArgument(
                    "ttl must be positive; omit it for a value that never expires".into(),
                ))
            }
            Some(ttl) => Some(wall_clock_ms().saturating_add(ttl.as_millis() as u64)),
        };
        let plan = self.plan(cmd.consistency, self.config.cluster.write)?;
        let client_context = cmd.context.clone();
        let write = LocalWrite {
            key: cmd.key,
            context: cmd.context,
            value: Value::Data(cmd.value),
            expires_at_ms,
        };
        let (applied, meta) = self.write(write, plan).await?;
        // The new version's causal past: what its writer had seen plus its
        // own dot. A blind write superseded everything the coordinator held,
        // so that is the coordinator's whole vector.
        let context = match client_context {
            None => applied.state.context().clone(),
            Some(mut seen) => {
                seen.insert(applied.outcome.dot.node, applied.outcome.dot.counter);
                seen
            }
        };
        Ok(PutReply { context, meta })
    }

    pub async fn delete(&self, cmd: DeleteCommand) -> Result<ReplyMeta> {
        self.check_key(&cmd.key)?;
        let plan = self.plan(cmd.consistency, self.config.cluster.write)?;
        let write = LocalWrite {
            key: cmd.key,
            context: cmd.context,
            value: Value::Tombstone,
            expires_at_ms: None,
        };
        let (_, meta) = self.write(write, plan).await?;
        Ok(meta)
    }

    pub async fn get(&self, cmd: GetCommand) -> Result<GetReply> {
        self.check_key(&cmd.key)?;
        let plan = self.plan(cmd.consistency, self.config.cluster.read)?;
        let calls = plan
            .replicas
            .iter()
            .map(|node| {
                let replica = self.replica.clone();
                let key = cmd.key.clone();
                quorum::call(node.to_string(), async move { replica.read(key).await })
            })
            .collect();
        let answers = quorum::quorum(calls, plan.required, Vec::new(), plan.consistency.timeout).await?;
        let mut merged = VersionSet::new();
        let mut replicas = Vec::with_capacity(answers.ok.len());
        for (node, state) in answers.ok {
            if let Some(state) = state {
                merged.merge(&state);
            }
            replicas.push(node);
        }
        let now = wall_clock_ms();
        let siblings: Vec<Version> = match cmd.resolve {
            Resolve::AllSiblings => merged.visible(now).into_iter().cloned().collect(),
            Resolve::Lww => merged.lww(now).into_iter().cloned().collect(),
        };
        Ok(GetReply {
            siblings,
            context: merged.context().clone(),
            meta: self.meta(&plan, replicas),
        })
    }

    /// Applies a write locally, then waits for W acknowledgements in all.
    async fn write(&self, write: LocalWrite, plan: Plan) -> Result<(Applied, ReplyMeta)> {
        let me = self.node_id();
        let applied = self.replica.apply_write(write).await?;
        // The other replicas of the key receive the whole resulting version
        // set and merge it; on a one-node cluster there are none.
        let others: Vec<quorum::Call<()>> = plan
            .replicas
            .iter()
            .filter(|n| **n != me)
            .map(|n| {
                quorum::call(n.to_string(), async {
                    Err(Error::Internal("no transport to other replicas".into()))
                })
            })
            .collect();
        let answers = quorum::quorum(
            others,
            plan.required,
            vec![me.to_string()],
            plan.consistency.timeout,
        )
        .await?;
        let mut acked = vec![me.to_string()];
        acked.extend(answers.ok.into_iter().map(|(n, ())| n));
        let meta = self.meta(&plan, acked);
        Ok((applied, meta))
    }

    fn plan(&self, requested: RequestConsistency, default_level: Level) -> Result<Plan> {
        let configured_n = self.config.cluster.replication as usize;
        let replicas = vec![self.node_id()];
        let consistency = Consistency {
            level: requested.level.unwrap_or(default_level),
            sloppy: requested.sloppy.unwrap_or(true),
            timeout: requested
                .timeout
                .unwrap_or_else(|| self.config.limits.request_timeout()),
        };
        if consistency.timeout.is_zero() {
            return Err(Error::InvalidArgument("timeout must be positive".into()));
        }
        let n = configured_n.min(replicas.len());
        let required = consistency.level.required(n, configured_n)?;
        Ok(Plan {
            replicas,
            consistency,
            required,
            configured_n,
        })
    }

    fn meta(&self, plan: &Plan, replicas: Vec<String>) -> ReplyMeta {
        let n = plan.configured_n.min(plan.replicas.len());
        ReplyMeta {
            coordinator: self.node_id().to_string(),
            replicas,
            fallbacks: Vec::new(),
            read_repaired: 0,
            replication: n as u32,
            replication_capped: n < plan.configured_n,
            required: plan.required as u32,
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.config.limits.max_key_bytes;
        if key.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".into()));
        }
        if key.len() > max {
            return Err(Error::InvalidArgument(format!(
                "key is {} bytes, above the limit of {max} (limits.max_key_bytes)",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.config.limits.max_value_bytes;
        if value.is_empty() {
            return Err(Error::InvalidArgument(
                "value must not be empty; use delete to remove a key".into(),
            ));
        }
        if value.len() > max {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes, above the limit of {max} (limits.max_value_bytes)",
                value.len()
            )));
        }
        Ok(())
    }
}
