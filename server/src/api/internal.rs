//! The node-to-node Internal service: replication, hints, local reads,
//! gossip, layouts, and the anti-entropy exchange.
//!
//! Version sets travel in the stored encoding, so a receiving replica
//! merges exactly what the sender holds. Bytes that do not decode are
//! refused with INVALID_ARGUMENT and never touch storage.

use std::sync::Arc;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_server::Internal;
use tonic::{Request, Response, Status};

use super::{status, Gate};
use crate::error::Error;
use crate::handoff::HintStore;
use crate::membership::Cluster;
use crate::rebalance::Rebalance;
use crate::repair::Repair;
use crate::replica::Replica;
use crate::transport;
use crate::version::{NodeId, VersionSet};

pub struct InternalService {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    /// Where this node keeps hints when it acts as a fallback.
    hints: Arc<HintStore>,
    repair: Arc<Repair>,
    rebalance: Arc<Rebalance>,
    gate: Gate,
    max_key_bytes: usize,
}

impl InternalService {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        hints: Arc<HintStore>,
        repair: Arc<Repair>,
        rebalance: Arc<Rebalance>,
        gate: Gate,
        max_key_bytes: usize,
    ) -> Self {
        Self {
            replica,
            cluster,
            hints,
            repair,
            rebalance,
            gate,
            max_key_bytes,
        }
    }

    fn check_partition(&self, partition: u32) -> Result<u32, Status> {
        let q = self.cluster.partitions();
        if partition >= q {
            return Err(status(Error::InvalidArgument(format!(
                "partition {partition} out of range: the cluster has {q}"
            ))));
        }
        Ok(partition)
    }

    /// Refuses traffic from a node the fault switch cut off, and traffic
    /// meant for another node (this node took over an address).
    fn check_sender<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if let Some(to) = transport::recipient(request) {
            if to != self.cluster.me() {
                return Err(Status::failed_precondition(format!(
                    "this is node {}, not {to}: the node at this address was replaced",
                    self.cluster.me()
                )));
            }
        }
        if let Some(from) = transport::sender(request) {
            if self.cluster.transport.faults.blocks_incoming(from) {
                return Err(Status::unavailable(format!(
                    "traffic from {from} is cut by the fault switch"
                )));
            }
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() || key.len() > self.max_key_bytes {
            return Err(status(Error::InvalidArgument(format!(
                "key must be 1..={} bytes, got {}",
                self.max_key_bytes,
                key.len()
            ))));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let admitted = self.gate.admit("replicate")?;
        let result = async {
            self.check_sender(&request)?;
            let req = request.into_inner();
            self.check_key(&req.key)?;
            let incoming = VersionSet::decode(&req.version_set).map_err(|e| {
                status(Error::InvalidArgument(format!(
                    "version set from {}: {e}",
                    req.from
                )))
            })?;
            if !req.hint_for.is_empty() {
                // This node is a fallback: keep the versions for their replica.
                let target: NodeId = req.hint_for.parse().map_err(status)?;
                self.hints
                    .store(target, req.key, incoming)
                    .await
                    .map_err(status)?;
                return Ok(Response::new(pb::ReplicateResponse {}));
            }
            self.rebalance
                .check_write(self.replica.partition_of(&req.key))
                .map_err(status)?;
            let merged = self
                .replica
                .merge(req.key, incoming)
                .await
                .map_err(status)?;
            if merged.collapsed > 0 {
                self.gate.metrics().siblings_collapsed(merged.collapsed);
            }
            Ok(Response::new(pb::ReplicateResponse {}))
        }
        .await;
        admitted.finish("", result)
    }

    async fn local_read(
        &self,
        request: Request<pb::LocalReadRequest>,
    ) -> Result<Response<pb::LocalReadResponse>, Status> {
        let admitted = self.gate.admit("local_read")?;
        let result = async {
            self.check_sender(&request)?;
            let req = request.into_inner();
            self.check_key(&req.key)?;
            self.rebalance
                .check_read(self.replica.partition_of(&req.key))
                .map_err(status)?;
            let state = self.replica.read(req.key).await.map_err(status)?;
            Ok(Response::new(match state {
                None => pb::LocalReadResponse::default(),
                Some(state) => pb::LocalReadResponse {
                    found: true,
                    version_set: state.encode().into(),
                },
            }))
        }
        .await;
        admitted.finish("", result)
    }

    async fn gossip(
        &self,
        request: Request<pb::GossipRequest>,
    ) -> Result<Response<pb::GossipResponse>, Status> {
        self.check_sender(&request)?;
        self.cluster
            .handle_gossip(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn get_layout(
        &self,
        request: Request<pb::GetLayoutRequest>,
    ) -> Result<Response<pb::GetLayoutResponse>, Status> {
        self.check_sender(&request)?;
        let layout = self
            .cluster
            .layout()
            .map(|l| l.encode().into())
            .unwrap_or_default();
        Ok(Response::new(pb::GetLayoutResponse { layout }))
    }

    async fn merkle_leaves(
        &self,
        request: Request<pb::MerkleLeavesRequest>,
    ) -> Result<Response<pb::MerkleLeavesResponse>, Status> {
        self.check_sender(&request)?;
        let partition = self.check_partition(request.into_inner().partition)?;
        let summary = self.repair.merkle_leaves(partition).await.map_err(status)?;
        Ok(Response::new(pb::MerkleLeavesResponse {
            root: summary.root,
            leaves: summary.leaves,
            keys: summary.keys,
        }))
    }

    async fn key_digests(
        &self,
        request: Request<pb::KeyDigestsRequest>,
    ) -> Result<Response<pb::KeyDigestsResponse>, Status> {
        self.check_sender(&request)?;
        let req = request.into_inner();
        let partition = self.check_partition(req.partition)?;
        for key in &req.keys {
            self.check_key(key)?;
        }
        let digests = self
            .repair
            .key_digests(partition, req.leaves, req.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::KeyDigestsResponse {
            digests: digests
                .into_iter()
                .map(|(key, digest)| pb::KeyDigest { key, digest })
                .collect(),
        }))
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        self.check_sender(&request)?;
        let req = request.into_inner();
        for k in &req.keys {
            self.check_key(&k.key)?;
        }
        let purged = self
            .repair
            .purge(req.keys.into_iter().map(|k| (k.key, k.digest)).collect())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PurgeResponse { purged }))
    }

    async fn fetch_partition(
        &self,
        request: Request<pb::FetchPartitionRequest>,
    ) -> Result<Response<pb::FetchPartitionResponse>, Status> {
        self.check_sender(&request)?;
        let req = request.into_inner();
        let partition = self.check_partition(req.partition)?;
        if let Some(after) = &req.after {
            self.check_key(after)?;
        }
        let (entries, done, estimated_bytes) = self
            .rebalance
            .serve_chunk(partition, req.after, req.max_bytes as usize)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FetchPartitionResponse {
            entries: entries
                .into_iter()
                .map(|(key, value)| pb::PartitionEntry {
                    key,
                    version_set: value.into(),
                })
                .collect(),
            done,
            estimated_bytes,
        }))
    }
}
