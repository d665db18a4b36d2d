//! The write path: the local write that stamps the version, then its
//! replication to the plan's other replicas until W (and, during a change,
//! both sets' quorums) have answered.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;

use super::*;

/// The coordinator's own write to storage, still running.
type LocalStore = Pin<Box<dyn Future<Output = Result<()>> + std::marker::Send>>;

impl Coordinator {
    /// Applies a write locally and sends it to the other replicas, then
    /// waits for W acknowledgements in all, its own among them.
    ///
    /// The other replicas get the new state as soon as it is computed,
    /// while the local write is still going to storage: under `storage.sync
    /// = always` the coordinator's fsync and the replicas' run at once, not
    /// one after the other. The coordinator counts toward W only once its
    /// own write is stored, so nothing is acknowledged before W replicas
    /// hold it as `storage.sync` promises.
    pub(super) async fn write(
        &self,
        write: LocalWrite,
        plan: Plan,
    ) -> Result<(Applied, ReplyMeta)> {
        self.check_reachable(&plan)?;
        let me = self.node_id();
        let (ready_tx, mut ready_rx) = oneshot::channel();
        let replica = self.replica.clone();
        let mut local: LocalStore = Box::pin(async move {
            replica
                .apply_write_then(write, move |applied, encoded| {
                    let _ = ready_tx.send((applied, Bytes::copy_from_slice(encoded)));
                })
                .await
        });
        let no_state = || Error::Internal("the local write ended without its state".into());
        if plan.replicas.iter().all(|n| *n == me) {
            // Nobody else to send to: nothing to overlap.
            local.await?;
            let (applied, encoded) = ready_rx.await.map_err(|_| no_state())?;
            return self.replicate(applied, encoded, plan, None).await;
        }
        // Nothing was sent anywhere until the state is ready: a write
        // refused before that is the client's plain error.
        let (applied, encoded) = tokio::select! {
            biased;
            ready = &mut ready_rx => match ready {
                Ok(ready) => ready,
                Err(_) => {
                    local.await?;
                    return Err(no_state());
                }
            },
            stored = &mut local => {
                // Stored (or failed) before this task saw the state: the
                // state is waiting in the channel.
                stored?;
                let (applied, encoded) = ready_rx.await.map_err(|_| no_state())?;
                return self.replicate(applied, encoded, plan, None).await;
            }
        };
        self.replicate(applied, encoded, plan, Some(local)).await
    }

    /// Sends a write's new state (`encoded`) to the plan's other replicas
    /// and waits for W acknowledgements, the coordinator's own always
    /// among them: counted once `local` (its write to storage) completes,
    /// or at once when it already has (`None`).
    async fn replicate(
        &self,
        applied: Applied,
        encoded: Bytes,
        plan: Plan,
        local: Option<LocalStore>,
    ) -> Result<(Applied, ReplyMeta)> {
        let me = self.node_id();
        if applied.outcome.collapsed > 0 {
            self.metrics.siblings_collapsed(applied.outcome.collapsed);
        }
        // The other replicas receive the whole resulting version set and
        // merge it, so they converge on exactly the coordinator's state.
        let state = Arc::new(applied.state.clone());
        let fallbacks = Arc::new(Mutex::new(
            plan.fallbacks.iter().copied().collect::<VecDeque<_>>(),
        ));
        let others: Vec<NodeId> = plan.replicas.iter().copied().filter(|n| *n != me).collect();
        let mut targets = others.clone();
        let mut calls: Vec<quorum::Call<NodeId, Ack>> = others
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
        let mut already = Vec::new();
        match local {
            Some(local) => {
                targets.push(me);
                calls.push(quorum::call(me, async move {
                    local.await.map(|_| Ack::Replica)
                }));
            }
            None => already.push(me),
        }
        // W in every set, and always the coordinator's own write among
        // them: a write acknowledged is then on this node, as before the
        // replicas were sent to early, so a read through it (R = ONE asks
        // this node first) sees the write it just acknowledged.
        let needs = plan
            .quorum_sets
            .iter()
            .map(|(set, need)| quorum::Need::Among(set.clone(), *need))
            .chain(std::iter::once(quorum::Need::Among(vec![me], 1)))
            .collect();
        let label = |n: &NodeId| self.label(*n);
        let answers = quorum::quorum_of(
            calls,
            targets,
            needs,
            already.clone(),
            plan.consistency.timeout,
            &label,
        )
        .await
        .map_err(Error::after_apply)?;
        let mut acked = already;
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
        // The coordinator first when it is among them, as the reply meta
        // always listed it.
        if let Some(i) = acked.iter().position(|n| *n == me) {
            acked[..=i].rotate_right(1);
        }
        let mut meta = self.meta(&plan, &acked);
        meta.fallbacks = used;
        Ok((applied, meta))
    }

    /// The injected bug `lose_every_tenth_write` (`debug.inject_bug`, tests
    /// of the verification harness only): every tenth write this node
    /// coordinates gets the reply meta of a write W replicas acknowledged,
    /// the coordinator first, and is neither applied nor sent anywhere.
    /// `None`: write as designed. A write that could not reach W is still
    /// refused as usual, before it is counted.
    pub(super) fn lose_write(&self, plan: &Plan) -> Result<Option<ReplyMeta>> {
        if self.config.debug.inject_bug != InjectBug::LoseEveryTenthWrite {
            return Ok(None);
        }
        self.check_reachable(plan)?;
        if self.writes_coordinated.fetch_add(1, Ordering::Relaxed) % 10 != 9 {
            return Ok(None);
        }
        let me = self.node_id();
        let acked: Vec<NodeId> = std::iter::once(me)
            .chain(plan.replicas.iter().copied().filter(|n| *n != me))
            .take(plan.required)
            .collect();
        Ok(Some(self.meta(plan, &acked)))
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
        for (set, need) in &plan.quorum_sets {
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
