//! The operator-facing Admin service.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::transport::Transport;
use ringkv_core::error::Error;
use ringkv_core::ring::KEY_HASH_SEED;
use ringkv_core::version::NodeId;
use ringkv_node::auth::Tokens;
use ringkv_node::config::Config;
use ringkv_node::handoff::HintStore;
use ringkv_node::membership::Cluster;
use ringkv_node::metrics::Metrics;
use ringkv_node::rebalance::Rebalance;
use ringkv_node::repair::Repair;
use ringkv_node::replica::Replica;
use ringkv_node::worker::Workers;

/// What a node says about itself.
pub struct NodeInfo {
    pub config: Arc<Config>,
    /// Bumped at every start of this data directory.
    pub generation: u64,
    pub started: Instant,
}

/// The node's parts the Admin service reports on.
pub struct AdminParts {
    pub replica: Arc<Replica>,
    pub cluster: Arc<Cluster>,
    pub hints: Arc<HintStore>,
    pub repair: Arc<Repair>,
    pub rebalance: Arc<Rebalance>,
    pub workers: Arc<Workers>,
    /// For cluster changes forwarded to the claimant or the leaving node.
    pub transport: Arc<Transport>,
    pub tokens: Arc<Tokens>,
}

pub struct AdminService {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    hints: Arc<HintStore>,
    repair: Arc<Repair>,
    rebalance: Arc<Rebalance>,
    workers: Arc<Workers>,
    transport: Arc<Transport>,
    tokens: Arc<Tokens>,
    info: NodeInfo,
    metrics: Arc<Metrics>,
}

impl AdminService {
    pub fn new(parts: AdminParts, info: NodeInfo, metrics: Arc<Metrics>) -> Self {
        Self {
            replica: parts.replica,
            cluster: parts.cluster,
            hints: parts.hints,
            repair: parts.repair,
            rebalance: parts.rebalance,
            workers: parts.workers,
            transport: parts.transport,
            tokens: parts.tokens,
            info,
            metrics,
        }
    }

    pub(super) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub(super) fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub(super) fn transport(&self) -> &Transport {
        &self.transport
    }

    pub(super) fn rebalance(&self) -> &Rebalance {
        &self.rebalance
    }

    /// Bytes this node received by partition transfers since it started.
    pub(super) fn bytes_received(&self) -> u64 {
        self.metrics.transfer_bytes()
    }

    fn member_list(&self) -> Vec<pb::Member> {
        let owned = self.cluster.partitions_owned();
        self.cluster
            .members()
            .into_iter()
            .map(|m| pb::Member {
                node_id: m.info.id.to_string(),
                name: m.info.name,
                address: m.info.address,
                zone: m.info.zone,
                weight: m.info.weight,
                status: m.info.status.to_string(),
                liveness: m.liveness.to_string(),
                partitions_owned: owned.get(&m.info.id).copied().unwrap_or(0) as u32,
                generation: m.info.generation,
                layout_version: m.info.layout_version,
                phi: if m.phi.is_finite() { m.phi } else { f64::MAX },
                heartbeat: m.info.heartbeat,
            })
            .collect()
    }

    fn key(&self, key: Bytes) -> Result<Bytes, Status> {
        ringkv_common::check_key(&key, self.info.config.limits.max_key_bytes)
            .map_err(|e| status(e.into()))?;
        Ok(key)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        let c = &self.info.config;
        let engine = self.replica.engine().clone();
        let storage_bytes = tokio::task::spawn_blocking(move || engine.approximate_size_bytes())
            .await
            .unwrap_or(0);
        let reply = pb::NodeStatusResponse {
            node_id: self.replica.node_id().to_string(),
            name: c.node.name.clone(),
            address: c.advertise_address(),
            peer_address: c.peer_advertise_address(),
            zone: c.node.zone.clone(),
            weight: c.node.weight,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: self.info.started.elapsed().as_millis() as u64,
            storage_engine: self.replica.engine().name().to_string(),
            storage_bytes,
            partitions: c.cluster.partitions,
            replication: c.cluster.replication,
            cluster_name: c.cluster.name.clone(),
            generation: self.info.generation,
            cluster_id: self
                .cluster
                .cluster_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
        };
        Ok(Response::new(reply))
    }

    async fn members(
        &self,
        _request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let members = self.member_list();
        Ok(Response::new(pb::MembersResponse { members }))
    }

    async fn layout(
        &self,
        _request: Request<pb::LayoutRequest>,
    ) -> Result<Response<pb::LayoutResponse>, Status> {
        let members = self.member_list();
        let reply = match self.cluster.layout() {
            None => pb::LayoutResponse {
                partitions: self.info.config.cluster.partitions,
                members,
                hash_seed: KEY_HASH_SEED,
                ..Default::default()
            },
            Some(layout) => pb::LayoutResponse {
                version: layout.version(),
                partitions: layout.partitions(),
                replication: layout.replication(),
                assignments: (0..layout.partitions())
                    .map(|p| pb::PartitionReplicas {
                        partition: p,
                        replicas: layout.replicas(p).iter().map(|n| n.to_string()).collect(),
                    })
                    .collect(),
                members,
                hash_seed: KEY_HASH_SEED,
                previous_version: layout.previous().map(|p| p.version()).unwrap_or(0),
                previous_assignments: layout
                    .previous()
                    .map(|prev| {
                        (0..prev.partitions())
                            .map(|p| pb::PartitionReplicas {
                                partition: p,
                                replicas: prev.replicas(p).iter().map(|n| n.to_string()).collect(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn set_faults(
        &self,
        request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::SetFaultsResponse>, Status> {
        if !self.info.config.debug.fault_injection {
            return Err(status(Error::FailedPrecondition(
                "the fault switch is off: start the node with debug.fault_injection = true (tests only)".into(),
            )));
        }
        let req = request.into_inner();
        let parse = |ids: Vec<String>| {
            ids.iter()
                .map(|id| id.parse::<NodeId>())
                .collect::<Result<std::collections::HashSet<_>, _>>()
                .map_err(|e| status(e.into()))
        };
        let outgoing = parse(req.block_outgoing)?;
        let incoming = parse(req.block_incoming)?;
        tracing::warn!(?outgoing, ?incoming, "fault switch set");
        self.cluster.peers().faults.set(outgoing, incoming);
        if req.fail_next_wal_sync {
            self.replica.engine().health().fail_next_sync();
        }
        if let Some(offset_ms) = req.clock_offset_ms {
            tracing::warn!(
                offset_ms,
                "test clock offset set: the wall clock is stepped"
            );
            ringkv_common::clock::set_test_offset_ms(offset_ms);
        }
        Ok(Response::new(pb::SetFaultsResponse {}))
    }

    async fn local_get(
        &self,
        request: Request<pb::LocalGetRequest>,
    ) -> Result<Response<pb::LocalGetResponse>, Status> {
        let key = self.key(request.into_inner().key)?;
        let partition = self.replica.partition_of(&key);
        let state = self.replica.read(key).await.map_err(status)?;
        Ok(Response::new(match state {
            None => pb::LocalGetResponse {
                found: false,
                partition,
                ..Default::default()
            },
            Some(state) => pb::LocalGetResponse {
                found: true,
                partition,
                versions: state
                    .versions()
                    .iter()
                    .map(convert::local_version)
                    .collect(),
                context: state.context().encode_context().into(),
            },
        }))
    }

    async fn workers(
        &self,
        _request: Request<pb::WorkersRequest>,
    ) -> Result<Response<pb::WorkersResponse>, Status> {
        let workers = self
            .workers
            .statuses()
            .into_iter()
            .map(|w| pb::WorkerStatus {
                name: w.name,
                state: w.state.as_str().to_string(),
                errors: w.errors,
                last_error: w.last_error.unwrap_or_default(),
                last_error_at_ms: w.last_error_at_ms,
                counters: w.counters.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(pb::WorkersResponse { workers }))
    }

    async fn start_repair(
        &self,
        request: Request<pb::StartRepairRequest>,
    ) -> Result<Response<pb::StartRepairResponse>, Status> {
        let partition = request.into_inner().partition;
        if let Some(p) = partition {
            if p >= self.cluster.partitions() {
                return Err(status(Error::InvalidArgument(format!(
                    "partition {p} out of range: the cluster has {}",
                    self.cluster.partitions()
                ))));
            }
        }
        let report = self.repair.repair_now(partition).await.map_err(status)?;
        Ok(Response::new(pb::StartRepairResponse {
            partitions: report.partitions,
            partitions_differing: report.partitions_differing,
            keys_repaired: report.keys_repaired,
            tombstones_purged: report.tombstones_purged,
            errors: report.errors,
        }))
    }

    async fn merkle_roots(
        &self,
        _request: Request<pb::MerkleRootsRequest>,
    ) -> Result<Response<pb::MerkleRootsResponse>, Status> {
        let roots = self.repair.merkle_roots().await.map_err(status)?;
        Ok(Response::new(pb::MerkleRootsResponse {
            roots: roots
                .into_iter()
                .map(|(partition, s)| pb::PartitionRoot {
                    partition,
                    root: s.root,
                    keys: s.keys,
                })
                .collect(),
        }))
    }

    async fn hints(
        &self,
        _request: Request<pb::HintsRequest>,
    ) -> Result<Response<pb::HintsResponse>, Status> {
        let queues = self
            .hints
            .queues()
            .into_iter()
            .map(|(target, q)| pb::HintQueue {
                target: target.to_string(),
                keys: q.keys,
                bytes: q.bytes,
            })
            .collect();
        Ok(Response::new(pb::HintsResponse { queues }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::ClusterChangeResponse>, Status> {
        self.do_join(request).await
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::ClusterChangeResponse>, Status> {
        self.do_leave(request).await
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::ClusterChangeResponse>, Status> {
        self.do_remove(request).await
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.do_create_token(request.into_inner()).await
    }

    async fn list_tokens(
        &self,
        _: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.do_list_tokens()
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.do_revoke_token(request.into_inner()).await
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        self.do_plan(request).await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.do_commit(request).await
    }

    async fn transfers(
        &self,
        _request: Request<pb::TransfersRequest>,
    ) -> Result<Response<pb::TransfersResponse>, Status> {
        self.do_transfers().await
    }
}
