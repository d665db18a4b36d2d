//! The client-facing KV service.

use std::sync::Arc;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::kv_server::Kv;
use tonic::{Request, Response, Status};

use super::{convert, status, Gate};
use crate::coordinator::{Coordinator, DeleteCommand, GetCommand, PutCommand};

pub struct KvService {
    coordinator: Arc<Coordinator>,
    gate: Gate,
}

impl KvService {
    pub fn new(coordinator: Arc<Coordinator>, gate: Gate) -> Self {
        Self { coordinator, gate }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let admitted = self.gate.admit("get")?;
        let req = request.into_inner();
        let mut label = String::from("invalid");
        let result = async {
            let consistency = convert::consistency(req.consistency).map_err(status)?;
            label = convert::level_label(&consistency);
            let cmd = GetCommand {
                key: req.key,
                consistency,
                resolve: convert::resolve(req.resolve).map_err(status)?,
            };
            let reply = self.coordinator.get(cmd).await.map_err(status)?;
            Ok(Response::new(pb::GetResponse {
                found: !reply.siblings.is_empty(),
                siblings: reply.siblings.iter().map(convert::sibling).collect(),
                context: reply.context.encode_context().into(),
                meta: Some(convert::meta(reply.meta)),
            }))
        }
        .await;
        admitted.finish(&label, result)
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let admitted = self.gate.admit("put")?;
        let req = request.into_inner();
        let mut label = String::from("invalid");
        let result = async {
            let consistency = convert::consistency(req.consistency).map_err(status)?;
            label = convert::level_label(&consistency);
            let cmd = PutCommand {
                key: req.key,
                value: req.value,
                context: convert::context(&req.context).map_err(status)?,
                consistency,
                ttl: convert::ttl(req.ttl_ms).map_err(status)?,
            };
            let reply = self.coordinator.put(cmd).await.map_err(status)?;
            Ok(Response::new(pb::PutResponse {
                context: reply.context.encode_context().into(),
                meta: Some(convert::meta(reply.meta)),
            }))
        }
        .await;
        admitted.finish(&label, result)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let admitted = self.gate.admit("delete")?;
        let req = request.into_inner();
        let mut label = String::from("invalid");
        let result = async {
            let consistency = convert::consistency(req.consistency).map_err(status)?;
            label = convert::level_label(&consistency);
            let cmd = DeleteCommand {
                key: req.key,
                context: convert::context(&req.context).map_err(status)?,
                consistency,
            };
            let meta = self.coordinator.delete(cmd).await.map_err(status)?;
            Ok(Response::new(pb::DeleteResponse {
                meta: Some(convert::meta(meta)),
            }))
        }
        .await;
        admitted.finish(&label, result)
    }
}
