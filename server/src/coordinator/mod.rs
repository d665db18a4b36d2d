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

mod consistency;
pub mod quorum;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

pub use consistency::{Consistency, Level};
pub use ringkv_common::ReplyMeta;

use crate::config::Config;
use crate::error::{Error, ReplicaError, Result};
use crate::handoff::HintStore;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::replica::{wall_clock_ms, Applied, LocalWrite, Replica};
use crate::ring::Layout;
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
    /// Reads: the partition's read replicas. Writes: every replica the write
    /// goes to (old and new while the partition moves).
    replicas: Vec<NodeId>,
    /// Writes: the replica sets that each need their quorum of
    /// acknowledgements (one set, or the old and the new set while the
    /// partition moves), with that quorum.
    write_sets: Vec<(Vec<NodeId>, usize)>,
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
        let replicas = layout.read_replicas(self.replica.partition_of(key));
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

    pub async fn get(&self, cmd: GetCommand) -> Result<GetReply> {
        self.check_key(&cmd.key)?;
        let plan = self.plan(&cmd.key, cmd.consistency, Op::Read)?;
        let calls = plan
            .replicas
            .iter()
            .map(|node| self.read_call(*node, plan.key.clone(), plan.consistency.timeout))
            .collect();
        let label = |n: &NodeId| self.label(*n);
        let answers = quorum::quorum(
            calls,
            plan.required,
            Vec::new(),
            plan.consistency.timeout,
            &label,
        )
        .await?;
        let mut merged = VersionSet::new();
        for (_, state) in &answers.ok {
            if let Some(state) = state {
                merged.merge(state);
            }
        }
        self.fit_read(&mut merged)?;
        let behind = answers
            .ok
            .iter()
            .filter(|(_, state)| is_behind(state.as_ref(), &merged))
            .count();
        let replicas: Vec<NodeId> = answers.ok.iter().map(|(node, _)| *node).collect();
        let mut meta = self.meta(&plan, &replicas);
        meta.read_repaired = behind as u32;
        self.spawn_read_repair(
            plan.key.clone(),
            merged.clone(),
            answers,
            plan.consistency.timeout,
        );
        let now = wall_clock_ms();
        let siblings: Vec<Version> = match cmd.resolve {
            Resolve::AllSiblings => merged.visible(now).into_iter().cloned().collect(),
            Resolve::Lww => merged.lww(now).into_iter().cloned().collect(),
        };
        Ok(GetReply {
            siblings,
            context: merged.context().clone(),
            meta,
        })
    }

    /// Keeps a read's merged state within the key state limit, by the rule
    /// replicas apply when they merge the same answers (the oldest siblings
    /// collapse), so the reply fits its message and read repair sends a
    /// state replicas accept. Replicas that each accepted a different large
    /// sibling are the only way to get here. A state that still does not
    /// fit (stored before the limit existed) is a server-side error, never
    /// the client's.
    fn fit_read(&self, merged: &mut VersionSet) -> Result<()> {
        let limit = self.config.limits.max_key_state_bytes;
        let collapsed = merged.fit_within(limit);
        if collapsed > 0 {
            self.metrics.siblings_collapsed(collapsed);
        }
        let bytes = merged.encoded_len();
        if bytes > limit {
            return Err(Error::KeyStateTooLarge {
                what: "read refused: the replicas' merged state holds".into(),
                siblings: merged.versions().len(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// The members a write's context entries are checked against (see
    /// [`LocalWrite::members`]); none are needed without a context.
    fn context_members(&self, context: &Option<VersionVector>) -> Vec<NodeId> {
        match context {
            Some(_) => self.cluster.member_ids(),
            None => Vec::new(),
        }
    }

    /// Keeps listening for the replicas that had not answered, then sends
    /// the merged state to every replica found behind it.
    fn spawn_read_repair(
        &self,
        key: Bytes,
        mut merged: VersionSet,
        answers: quorum::Answers<NodeId, Option<VersionSet>>,
        timeout: Duration,
    ) {
        let quorum::Answers {
            ok, mut pending, ..
        } = answers;
        if pending.is_empty() && !ok.iter().any(|(_, s)| is_behind(s.as_ref(), &merged)) {
            return;
        }
        let wait = Duration::from_millis(self.config.repair.read_repair_wait_ms);
        let replica = self.replica.clone();
        let cluster = self.cluster.clone();
        let metrics = self.metrics.clone();
        let me = self.node_id();
        let max_state = self.config.limits.max_key_state_bytes;
        tokio::spawn(async move {
            let mut states = ok;
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            while !pending.is_empty() {
                tokio::select! {
                    next = pending.next() => match next {
                        Some((node, Ok(state))) => {
                            if let Some(s) = &state {
                                merged.merge(s);
                                merged.fit_within(max_state);
                            }
                            states.push((node, state));
                        }
                        Some((_, Err(_))) => {}
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
            for (node, state) in states {
                if !is_behind(state.as_ref(), &merged) {
                    continue;
                }
                let repaired = if node == me {
                    replica.merge(key.clone(), merged.clone()).await.is_ok()
                } else {
                    let encoded = Bytes::from(merged.encode());
                    cluster
                        .peers()
                        .replicate(node, key.clone(), encoded, timeout)
                        .await
                        .is_ok()
                };
                if repaired {
                    metrics.read_repaired(1);
                }
            }
        });
    }

    fn read_call(
        &self,
        node: NodeId,
        key: Bytes,
        timeout: Duration,
    ) -> quorum::Call<NodeId, Option<VersionSet>> {
        if node == self.node_id() {
            let replica = self.replica.clone();
            return quorum::call(node, async move { replica.read(key).await });
        }
        let cluster = self.cluster.clone();
        quorum::call(node, async move {
            Ok(cluster.peers().read(node, key, timeout).await?)
        })
    }

    /// Applies a write locally, then waits for W acknowledgements in all.
    async fn write(&self, write: LocalWrite, plan: Plan) -> Result<(Applied, ReplyMeta)> {
        let me = self.node_id();
        self.check_reachable(&plan)?;
        let applied = self.replica.apply_write(write).await?;
        if applied.outcome.collapsed > 0 {
            self.metrics.siblings_collapsed(applied.outcome.collapsed);
        }
        // The other replicas receive the whole resulting version set and
        // merge it, so they converge on exactly the coordinator's state.
        let state = Arc::new(applied.state.clone());
        // Encoded once for every replica and fallback it goes to.
        let encoded = Bytes::from(applied.state.encode());
        let fallbacks = Arc::new(Mutex::new(
            plan.fallbacks.iter().copied().collect::<VecDeque<_>>(),
        ));
        let others: Vec<NodeId> = plan.replicas.iter().copied().filter(|n| *n != me).collect();
        let calls: Vec<quorum::Call<NodeId, Ack>> = others
            .iter()
            .map(|node| {
                let send = Send {
                    replica: *node,
                    key: plan.key.clone(),
                    state: state.clone(),
                    encoded: encoded.clone(),
                    fallbacks: fallbacks.clone(),
                    sloppy: plan.consistency.sloppy,
                    timeout: plan.consistency.timeout,
                    replica_timeout: Duration::from_millis(self.config.handoff.replica_timeout_ms),
                    cluster: self.cluster.clone(),
                    hints: self.hints.clone(),
                };
                quorum::call(*node, send.run())
            })
            .collect();
        let needs = plan
            .write_sets
            .iter()
            .map(|(set, need)| quorum::Need::Among(set.clone(), *need))
            .collect();
        let label = |n: &NodeId| self.label(*n);
        let answers = quorum::quorum_of(
            calls,
            others,
            needs,
            vec![me],
            plan.consistency.timeout,
            &label,
        )
        .await
        .map_err(Error::after_apply)?;
        let mut acked = vec![me];
        let mut used = Vec::new();
        for (node, ack) in answers.ok {
            match ack {
                Ack::Replica => acked.push(node),
                Ack::Fallback { fallback, replica } => {
                    used.push((fallback.to_string(), replica.to_string()))
                }
            }
        }
        // Replicas that have not answered yet still get the write (or a
        // hint for it): drive their calls to completion in the background.
        let mut pending = answers.pending;
        if !pending.is_empty() {
            tokio::spawn(async move { while pending.next().await.is_some() {} });
        }
        let mut meta = self.meta(&plan, &acked);
        meta.fallbacks = used;
        Ok((applied, meta))
    }

    /// Refuses a write, before anything is applied, when W cannot be
    /// reached with the replicas and fallbacks this node believes alive:
    /// the replica calls would skip exactly those nodes, so applying
    /// locally first would only leave a write nobody acknowledged.
    fn check_reachable(&self, plan: &Plan) -> Result<()> {
        let me = self.node_id();
        let alive = |n: &NodeId| *n == me || self.cluster.is_alive(*n);
        // Fallbacks stand in for down replicas only in a sloppy quorum,
        // and the coordinator's own hints never count.
        let spare = if plan.consistency.sloppy {
            plan.fallbacks
                .iter()
                .filter(|n| **n != me && alive(n))
                .count()
        } else {
            0
        };
        for (set, need) in &plan.write_sets {
            let (up, down): (Vec<&NodeId>, Vec<&NodeId>) = set.iter().partition(|n| alive(n));
            let possible = up.len() + spare.min(down.len());
            if possible < *need {
                return Err(Error::Unavailable {
                    needed: *need,
                    got: possible,
                    acked: Vec::new(),
                    failed: down
                        .into_iter()
                        .map(|n| ReplicaError {
                            node: self.label(*n),
                            error: "believed down by the coordinator; the write was not applied anywhere"
                                .into(),
                        })
                        .collect(),
                });
            }
        }
        Ok(())
    }

    fn plan(&self, key: &Bytes, requested: RequestConsistency, op: Op) -> Result<Plan> {
        let default_level = match op {
            Op::Read => self.config.cluster.read,
            Op::Write => self.config.cluster.write,
        };
        let layout = self.layout()?;
        let configured_n = self.config.cluster.replication as usize;
        let partition = self.replica.partition_of(key);
        let read_set = layout.read_replicas(partition).to_vec();
        let write_sets: Vec<Vec<NodeId>> = layout
            .write_sets(partition)
            .into_iter()
            .map(<[NodeId]>::to_vec)
            .collect();
        let replicas = match op {
            Op::Read => read_set.clone(),
            Op::Write => layout.write_replicas(partition),
        };
        let fallbacks: Vec<NodeId> = layout
            .preference_list(partition)
            .into_iter()
            .filter(|n| !write_sets.iter().any(|s| s.contains(n)))
            .collect();
        if !read_set.contains(&self.node_id()) {
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
            Op::Read => read_set.len(),
            Op::Write => layout.replicas(partition).len(),
        };
        let required = consistency.level.required(n, configured_n)?;
        let write_sets = write_sets
            .into_iter()
            .map(|set| {
                let need = consistency.level.required(set.len(), configured_n)?;
                Ok((set, need))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            key: key.clone(),
            replicas,
            write_sets,
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

/// Whether a replica's answer lacks something the merged state has.
fn is_behind(state: Option<&VersionSet>, merged: &VersionSet) -> bool {
    match state {
        None => !merged.is_empty(),
        Some(s) => s != merged,
    }
}

/// How a replica's copy of a write was acknowledged.
enum Ack {
    /// The replica itself stored it.
    Replica,
    /// A fallback stored it as a hint for the replica.
    Fallback { fallback: NodeId, replica: NodeId },
}

/// Getting one replica's copy of a write stored: on the replica, else as a
/// hint on the next free fallback, else as a hint on the coordinator.
struct Send {
    replica: NodeId,
    key: Bytes,
    state: Arc<VersionSet>,
    /// `state` as sent.
    encoded: Bytes,
    /// Fallbacks not yet used by this write, in preference order.
    fallbacks: Arc<Mutex<VecDeque<NodeId>>>,
    sloppy: bool,
    timeout: Duration,
    replica_timeout: Duration,
    cluster: Arc<Cluster>,
    hints: Arc<HintStore>,
}

impl Send {
    async fn run(self) -> Result<Ack> {
        let replica = self.replica;
        let reason = if !self.cluster.is_alive(replica) {
            "believed down".to_string()
        } else {
            let sent = tokio::time::timeout(
                self.replica_timeout,
                self.cluster.peers().replicate(
                    replica,
                    self.key.clone(),
                    self.encoded.clone(),
                    self.timeout,
                ),
            )
            .await;
            match sent {
                Ok(Ok(())) => return Ok(Ack::Replica),
                Ok(Err(e)) => Error::from(e).to_string(),
                Err(_) => format!("no answer within {:?}", self.replica_timeout),
            }
        };
        loop {
            let next = self
                .fallbacks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(fallback) = next else { break };
            if !self.cluster.is_alive(fallback) {
                continue;
            }
            let stored = self
                .cluster
                .peers()
                .store_hint(
                    fallback,
                    self.key.clone(),
                    self.encoded.clone(),
                    replica,
                    self.timeout,
                )
                .await;
            match stored {
                Ok(()) if self.sloppy => return Ok(Ack::Fallback { fallback, replica }),
                Ok(()) => {
                    return Err(Error::Internal(format!(
                        "{reason}; fallback {fallback} keeps a hint, but a strict request counts only the key's own replicas"
                    )))
                }
                // The failure detector heard of it; try the next one.
                Err(_) => {}
            }
        }
        // No fallback could take it: the coordinator keeps the hint itself,
        // which never counts toward W.
        self.hints
            .store(replica, self.key.clone(), (*self.state).clone())
            .await?;
        Err(Error::Internal(format!(
            "{reason}; no fallback available, the coordinator keeps a hint"
        )))
    }
}
