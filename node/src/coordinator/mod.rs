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
//! **What a failed write promises.** A write that cannot reach W among the
//! replicas (and, when sloppy, the fallbacks) this node believes alive is
//! refused before it is applied anywhere: `Unavailable`, retry freely.
//! Once the coordinator has applied it locally, a failure to reach W
//! (replicas that refuse, time out or turn out unreachable) is
//! `Indeterminate` or `Timeout` (DEADLINE_EXCEEDED): the write is on the
//! coordinator and perhaps on more replicas, and anti-entropy may spread
//! it, so the client must not assume it did not happen.
//!
//! The replica set of a key is its partition's replicas in the current
//! layout; a node that is not one of them forwards the request once to the
//! first live replica ([`Coordinator::route`]), because only a replica may
//! issue the key's dots. On a cluster with fewer members than N, N is
//! capped at the member count and the reply meta says so.
//!
//! **Read repair**: after answering, a read keeps listening for the
//! replicas that had not answered (up to `repair.read_repair_wait_ms`) and
//! sends the merged state to every replica whose answer was behind it.
//!
//! **Injected bugs.** Two settings of `debug.inject_bug` (tests of the
//! verification harness only) break this layer on purpose:
//! `lose_every_tenth_write` acknowledges every tenth put or delete this
//! node coordinates without applying or sending it anywhere
//! ([`Coordinator::lose_write`]), and `read_from_one_replica` answers a get
//! from the first replica that answers, whatever R was asked.

mod consistency;
mod read;
mod write;
pub use ringkv_core::quorum;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

pub use consistency::{Consistency, Level};
pub use ringkv_common::ReplyMeta;

use crate::config::{Config, InjectBug};
use crate::handoff::HintStore;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::replica::{wall_clock_ms, Applied, LocalWrite, Replica};
use ringkv_core::error::{Error, ReplicaError, Result};
use ringkv_core::ring::Layout;
use ringkv_core::version::{NodeId, Value, Version, VersionSet, VersionVector};

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
    key: Bytes,
    /// Every replica the request goes to (old and new while the partition
    /// moves).
    replicas: Vec<NodeId>,
    /// The replica sets that each need their quorum of answers (one set, or
    /// the old and the new set while the partition moves), with that
    /// quorum.
    quorum_sets: Vec<(Vec<NodeId>, usize)>,
    /// The rest of the preference list, for sloppy quorums.
    fallbacks: Vec<NodeId>,
    consistency: Consistency,
    required: usize,
    /// Effective N of the partition.
    n: usize,
    configured_n: usize,
    layout_version: u64,
}

/// Whether a plan is for a read or a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// Where a request for a key should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node is one of the key's replicas: coordinate here.
    Local,
    /// Forward once to this replica, the first live one.
    Forward { node: NodeId, address: String },
}

/// Runs client requests against the key's replicas.
pub struct Coordinator {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    /// Where hints go when no fallback can take them.
    hints: Arc<HintStore>,
    /// Defaults and limits from configuration.
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// Puts and deletes this node has coordinated, counted only with
    /// `debug.inject_bug = lose_every_tenth_write`, to pick every tenth.
    writes_coordinated: AtomicU64,
}

impl Coordinator {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        hints: Arc<HintStore>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            replica,
            cluster,
            hints,
            config,
            metrics,
            writes_coordinated: AtomicU64::new(0),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.replica.node_id()
    }

    /// Decides whether this node coordinates a request for `key` or
    /// forwards it to the first live replica.
    pub fn route(&self, key: &[u8]) -> Result<Route> {
        let layout = self.layout()?;
        // While a partition moves, its old replicas coordinate: they hold
        // everything, so a blind write supersedes what it should.
        let replicas = layout.coordinators(self.replica.partition_of(key));
        if replicas.contains(&self.node_id()) {
            return Ok(Route::Local);
        }
        for node in replicas {
            if self.cluster.is_alive(*node) {
                if let Some(address) = self.cluster.address_of(*node) {
                    return Ok(Route::Forward {
                        node: *node,
                        address,
                    });
                }
            }
        }
        Err(Error::Unavailable {
            needed: 1,
            got: 0,
            acked: Vec::new(),
            failed: replicas
                .iter()
                .map(|n| ReplicaError {
                    node: self.label(*n),
                    error: "believed down by this node".into(),
                })
                .collect(),
        })
    }

    fn layout(&self) -> Result<Arc<Layout>> {
        self.cluster.layout().ok_or_else(|| {
            self.cannot_coordinate(format!(
                "the cluster is forming: no layout yet (waiting for cluster.bootstrap_expect = {} members)",
                self.config.cluster.bootstrap_expect
            ))
        })
    }

    /// The retryable error of a request this node cannot coordinate now.
    fn cannot_coordinate(&self, why: String) -> Error {
        Error::Unavailable {
            needed: 1,
            got: 0,
            acked: Vec::new(),
            failed: vec![ReplicaError {
                node: self.node_id().to_string(),
                error: why,
            }],
        }
    }

    /// `id@address`, how replicas are named in replies and errors.
    ///
    /// Built by hand rather than with `format!`: a write asks for a label
    /// per replica several times over, and the formatting machinery was a
    /// visible share of a request's instructions (docs/benchmarks.md,
    /// "Optimisations").
    fn label(&self, node: NodeId) -> String {
        let address = self.cluster.address_of(node);
        let mut label = String::with_capacity(17 + address.as_ref().map_or(0, String::len));
        node.push_hex(&mut label);
        if let Some(a) = address {
            label.push('@');
            label.push_str(&a);
        }
        label
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
        let plan = self.plan(&cmd.key, cmd.consistency, Op::Write)?;
        if let Some(meta) = self.lose_write(&plan)? {
            return Ok(PutReply {
                context: cmd.context.unwrap_or_default(),
                meta,
            });
        }
        let client_context = cmd.context.clone();
        let write = LocalWrite {
            key: cmd.key,
            members: self.context_members(&cmd.context),
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
        let plan = self.plan(&cmd.key, cmd.consistency, Op::Write)?;
        if let Some(meta) = self.lose_write(&plan)? {
            return Ok(meta);
        }
        let write = LocalWrite {
            key: cmd.key,
            members: self.context_members(&cmd.context),
            context: cmd.context,
            value: Value::Tombstone,
            expires_at_ms: None,
        };
        let (_, meta) = self.write(write, plan).await?;
        Ok(meta)
    }

    fn plan(&self, key: &Bytes, requested: RequestConsistency, op: Op) -> Result<Plan> {
        let default_level = match op {
            Op::Read => self.config.cluster.read,
            Op::Write => self.config.cluster.write,
        };
        let layout = self.layout()?;
        let configured_n = self.config.cluster.replication as usize;
        let partition = self.replica.partition_of(key);
        // Reads and writes alike need their quorum in every set: while the
        // partition moves, a node that already retired the change writes to
        // the new set only, and one that has not yet seen the change writes
        // to the old set only (see `ring::layout::transition`).
        let quorum_sets: Vec<Vec<NodeId>> = layout
            .quorum_sets(partition)
            .into_iter()
            .map(<[NodeId]>::to_vec)
            .collect();
        let replicas = layout.request_replicas(partition);
        let fallbacks: Vec<NodeId> = layout
            .preference_list(partition)
            .into_iter()
            .filter(|n| !quorum_sets.iter().any(|s| s.contains(n)))
            .collect();
        let coordinators = layout.coordinators(partition);
        if !coordinators.contains(&self.node_id()) {
            return Err(self.cannot_coordinate(format!(
                "this node no longer coordinates partition {partition} (layout v{} is being adopted); retry",
                layout.version()
            )));
        }
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
        let n = match op {
            Op::Read => coordinators.len(),
            Op::Write => layout.replicas(partition).len(),
        };
        let required = consistency.level.required(n, configured_n)?;
        let quorum_sets = quorum_sets
            .into_iter()
            .map(|set| {
                let need = consistency.level.required(set.len(), configured_n)?;
                Ok((set, need))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            key: key.clone(),
            replicas,
            quorum_sets,
            fallbacks,
            consistency,
            required,
            n,
            configured_n,
            layout_version: layout.version(),
        })
    }

    /// Reply meta names nodes by id (as Admin.Members does); errors use
    /// `id@address` labels so operators can see where to look.
    fn meta(&self, plan: &Plan, replicas: &[NodeId]) -> ReplyMeta {
        let n = plan.n;
        ReplyMeta {
            coordinator: self.node_id().to_string(),
            replicas: replicas.iter().map(|n| n.to_string()).collect(),
            fallbacks: Vec::new(),
            read_repaired: 0,
            replication: n as u32,
            replication_capped: n < plan.configured_n,
            required: plan.required as u32,
            layout_version: plan.layout_version,
        }
    }

    /// Refuses writes once this node's storage has failed: it must
    /// acknowledge nothing more until an operator restarts it.
    pub fn check_writable(&self) -> Result<()> {
        self.replica.engine().health().check()
    }

    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        Ok(ringkv_common::check_key(
            key,
            self.config.limits.max_key_bytes,
        )?)
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
