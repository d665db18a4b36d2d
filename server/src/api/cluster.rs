//! Admin handlers for cluster changes: join, leave, remove, plan, commit
//! and transfer progress.
//!
//! Plans, commits and removals run on the claimant (see `rebalance`); a
//! node that is not the claimant forwards the request there once, marked
//! so that the receiver never forwards it again, and passes the answer
//! back. A leave runs on the node that leaves.

use std::collections::BTreeMap;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::admin::AdminService;
use super::status;
use crate::transport;
use ringkv_core::error::Error;
use ringkv_core::plan::Change;
use ringkv_core::version::NodeId;
use ringkv_node::rebalance::PlanView;

/// Where a cluster change runs.
enum Target {
    Here,
    /// The claimant, through an Admin client.
    There(AdminClient<Channel>),
}

impl AdminService {
    /// The claimant, or here when the request was already forwarded once.
    fn claimant_target<T>(&self, request: &Request<T>) -> Result<Target, Status> {
        let cluster = self.cluster();
        if transport::was_forwarded(request) {
            return Ok(Target::Here);
        }
        let Some(claimant) = cluster.claimant() else {
            return Err(status(Error::FailedPrecondition(
                "no live layout member is known here (the cluster has no layout yet, or this node sees none alive); ask a member of the cluster".into(),
            )));
        };
        if claimant == cluster.me() {
            return Ok(Target::Here);
        }
        Ok(Target::There(self.transport().admin(claimant)?))
    }

    fn forwarded<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        self.transport().stamp(&mut req);
        req
    }

    pub(super) async fn do_join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::ClusterChangeResponse>, Status> {
        let seed = request.into_inner().seed;
        let message = self.cluster().join(seed.trim()).map_err(status)?;
        Ok(Response::new(pb::ClusterChangeResponse { message }))
    }

    pub(super) async fn do_leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::ClusterChangeResponse>, Status> {
        let cluster = self.cluster();
        let forwarded = transport::was_forwarded(&request);
        let name = request.into_inner().node;
        let node = if name.trim().is_empty() {
            cluster.me()
        } else {
            cluster.resolve(name.trim()).map_err(status)?
        };
        if node == cluster.me() {
            cluster.leave().map_err(status)?;
            return Ok(Response::new(pb::ClusterChangeResponse {
                message: format!(
                    "{node} is leaving; run `ringkv cluster plan`, then `ringkv cluster commit` to drain it"
                ),
            }));
        }
        if forwarded {
            return Err(status(Error::FailedPrecondition(format!(
                "this is node {}, not {node}; the leave reached the wrong node",
                cluster.me()
            ))));
        }
        let member = cluster.member(node).ok_or_else(|| {
            status(Error::InvalidArgument(format!(
                "{node} is not a known member; `ringkv cluster status` lists them"
            )))
        })?;
        if member.liveness != ringkv_core::membership::detector::Liveness::Alive {
            return Err(status(Error::FailedPrecondition(format!(
                "{node} is {}: a node can only drain itself while running; remove a dead node with `ringkv cluster remove {node}`",
                member.liveness
            ))));
        }
        let mut client = self.transport().admin(node)?;
        client
            .leave(self.forwarded(pb::LeaveRequest {
                node: String::new(),
            }))
            .await
    }

    pub(super) async fn do_remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::ClusterChangeResponse>, Status> {
        match self.claimant_target(&request)? {
            Target::There(mut claimant) => {
                claimant.remove(self.forwarded(request.into_inner())).await
            }
            Target::Here => {
                let name = request.into_inner().node;
                let node = self.cluster().resolve(name.trim()).map_err(status)?;
                let message = self.rebalance().remove(node).map_err(status)?;
                Ok(Response::new(pb::ClusterChangeResponse { message }))
            }
        }
    }

    pub(super) async fn do_plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        match self.claimant_target(&request)? {
            Target::There(mut claimant) => claimant.plan(self.forwarded(pb::PlanRequest {})).await,
            Target::Here => {
                let view = self.rebalance().plan().map_err(status)?;
                let names = self
                    .cluster()
                    .members()
                    .into_iter()
                    .map(|m| (m.info.id, m.info.name))
                    .collect();
                Ok(Response::new(plan_response(view, &names)))
            }
        }
    }

    pub(super) async fn do_commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        match self.claimant_target(&request)? {
            Target::There(mut claimant) => {
                claimant.commit(self.forwarded(request.into_inner())).await
            }
            Target::Here => {
                let expected = request.into_inner().expected_version;
                let c = self.rebalance().commit(expected).await.map_err(status)?;
                Ok(Response::new(pb::CommitResponse {
                    version: c.version,
                    moves: c.moves as u64,
                }))
            }
        }
    }

    pub(super) async fn do_transfers(&self) -> Result<Response<pb::TransfersResponse>, Status> {
        let cluster = self.cluster();
        let layout = cluster.layout();
        let me = cluster.me().to_string();
        let all = self.rebalance().transfers();
        let current = layout.as_ref().map(|l| l.version()).unwrap_or(0);
        let of_change: Vec<_> = all.iter().filter(|p| p.version == current).collect();
        let rate = match of_change.iter().filter_map(|p| p.started).min() {
            Some(first) => {
                let end = if of_change.iter().all(|p| p.finished.is_some()) {
                    of_change
                        .iter()
                        .filter_map(|p| p.finished)
                        .max()
                        .unwrap_or(first)
                } else {
                    std::time::Instant::now()
                };
                let bytes: u64 = of_change
                    .iter()
                    .map(|p| p.bytes.saturating_sub(p.resumed_from_bytes))
                    .sum();
                let secs = end.duration_since(first).as_secs_f64();
                if secs > 0.0 {
                    bytes as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let transfers = all
            .into_iter()
            .map(|p| pb::Transfer {
                partition: p.partition,
                from: p.from.map(|n| n.to_string()).unwrap_or_default(),
                to: me.clone(),
                layout_version: p.version,
                bytes: p.bytes,
                keys: p.keys,
                resumed_from_bytes: p.resumed_from_bytes,
                estimated_bytes: p.estimated_bytes,
                rate: p.rate(),
                eta_ms: p.eta().map(|d| d.as_millis() as u64).unwrap_or(0),
                state: p.state.as_str().to_string(),
                last_error: p.last_error.clone(),
                elapsed_ms: p.elapsed().as_millis() as u64,
            })
            .collect();
        Ok(Response::new(pb::TransfersResponse {
            layout_version: layout.as_ref().map(|l| l.version()).unwrap_or(0),
            in_transition: layout.is_some_and(|l| l.in_transition()),
            transfers,
            bytes_received: self.bytes_received(),
            rate,
        }))
    }
}

/// The proto form of a plan.
fn plan_response(view: PlanView, names: &BTreeMap<NodeId, String>) -> pb::PlanResponse {
    let current = &view.current;
    let before = current.replica_counts();
    let labels: BTreeMap<NodeId, &'static str> =
        view.changes.iter().map(|c| (c.node(), c.label())).collect();
    let mut members = Vec::new();
    if let Some(next) = &view.next {
        let after = next.replica_counts();
        let total_weight: u64 = next.members().iter().map(|m| u64::from(m.weight)).sum();
        let replicas = u64::from(next.partitions()) * u64::from(next.replication());
        let mut ids: Vec<NodeId> = before.keys().chain(after.keys()).copied().collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let spec = next
                .members()
                .iter()
                .chain(current.members())
                .find(|m| m.id == id);
            let in_next = next.contains(id);
            members.push(pb::PlannedMember {
                node_id: id.to_string(),
                name: names.get(&id).cloned().unwrap_or_default(),
                zone: spec.map(|m| m.zone.clone()).unwrap_or_default(),
                weight: spec.map(|m| m.weight).unwrap_or(0),
                replicas_before: before.get(&id).copied().unwrap_or(0) as u32,
                replicas_after: after.get(&id).copied().unwrap_or(0) as u32,
                target_share: match (in_next, spec) {
                    (true, Some(m)) if total_weight > 0 => {
                        replicas as f64 * f64::from(m.weight) / total_weight as f64
                    }
                    _ => 0.0,
                },
                change: labels.get(&id).copied().unwrap_or("").to_string(),
            });
        }
    }
    let estimated_bytes = view.moves.iter().map(|(_, b)| *b).sum();
    pb::PlanResponse {
        current_version: current.version(),
        next_version: view.next.as_ref().map(|l| l.version()).unwrap_or(0),
        changes: view.changes.iter().map(Change::to_string).collect(),
        moves: view
            .moves
            .iter()
            .map(|(m, bytes)| pb::PlannedMove {
                partition: m.partition,
                from: m.from.to_string(),
                to: m.to.to_string(),
                estimated_bytes: *bytes,
            })
            .collect(),
        minimum_moves: view.minimum_moves as u64,
        members,
        estimated_bytes,
        blocked: view.blocked.unwrap_or_default(),
    }
}
