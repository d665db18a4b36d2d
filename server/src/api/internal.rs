//! The node-to-node Internal service: replication and local reads.
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
use crate::membership::Cluster;
use crate::replica::Replica;
use crate::transport;
use crate::version::VersionSet;

pub struct InternalService {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    gate: Gate,
    max_key_bytes: usize,
}

impl InternalService {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        gate: Gate,
        max_key_bytes: usize,
    ) -> Self {
        Self {
            replica,
            cluster,
            gate,
            max_key_bytes,
        }
    }

    /// Refuses traffic from a node the fault switch cut off.
    fn check_sender<T>(&self, request: &Request<T>) -> Result<(), Status> {
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
}
