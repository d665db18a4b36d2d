//! The operator-facing Admin service.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::{convert, status, Gate};
use crate::config::Config;
use crate::error::Error;
use crate::replica::Replica;

/// What a node says about itself.
pub struct NodeInfo {
    pub config: Arc<Config>,
    /// Bumped at every start of this data directory.
    pub generation: u64,
    pub started: Instant,
}

pub struct AdminService {
    replica: Arc<Replica>,
    info: NodeInfo,
    gate: Gate,
}

impl AdminService {
    pub fn new(replica: Arc<Replica>, info: NodeInfo, gate: Gate) -> Self {
        Self {
            replica,
            info,
            gate,
        }
    }

    fn key(&self, key: Bytes) -> Result<Bytes, Status> {
        let max = self.info.config.limits.max_key_bytes;
        if key.is_empty() || key.len() > max {
            return Err(status(Error::InvalidArgument(format!(
                "key must be 1..={max} bytes, got {}",
                key.len()
            ))));
        }
        Ok(key)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        let admitted = self.gate.admit("node_status")?;
        let c = &self.info.config;
        let engine = self.replica.engine().clone();
        let storage_bytes = tokio::task::spawn_blocking(move || engine.approximate_size_bytes())
            .await
            .unwrap_or(0);
        let reply = pb::NodeStatusResponse {
            node_id: self.replica.node_id().to_string(),
            name: c.node.name.clone(),
            address: c.advertise_address(),
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
        };
        admitted.finish("", Ok(Response::new(reply)))
    }

    async fn members(
        &self,
        _request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let admitted = self.gate.admit("members")?;
        let c = &self.info.config;
        // A single node is the whole cluster and owns every partition.
        let me = pb::Member {
            node_id: self.replica.node_id().to_string(),
            name: c.node.name.clone(),
            address: c.advertise_address(),
            zone: c.node.zone.clone(),
            weight: c.node.weight,
            status: "up".to_string(),
            liveness: "alive".to_string(),
            partitions_owned: c.cluster.partitions,
        };
        admitted.finish("", Ok(Response::new(pb::MembersResponse { members: vec![me] })))
    }

    async fn local_get(
        &self,
        request: Request<pb::LocalGetRequest>,
    ) -> Result<Response<pb::LocalGetResponse>, Status> {
        let admitted = self.gate.admit("local_get")?;
        let result = async {
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
                    versions: state.versions().iter().map(convert::local_version).collect(),
                    context: state.context().encode_context().into(),
                },
            }))
        }
        .await;
        admitted.finish("", result)
    }
}
