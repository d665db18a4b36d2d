//! The client-facing KV service.
//!
//! A request for a key this node does not replicate is forwarded once, as
//! is, to the key's first live replica (marked so the receiver never
//! forwards it again); otherwise the coordinator runs it here.

use std::sync::Arc;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::kv_server::Kv;
use tonic::{Request, Response, Status};

use super::{convert, status, Gate};
use crate::coordinator::{Coordinator, DeleteCommand, GetCommand, PutCommand, Route};
use crate::error::{Error, ReplicaError};
use crate::transport::{self, Transport};

pub struct KvService {
    coordinator: Arc<Coordinator>,
    transport: Arc<Transport>,
    gate: Gate,
}

/// Where a KV request goes after routing.
enum Next<T> {
    Here(T),
    Forward(Arc<Transport>, crate::version::NodeId, String, T),
}

impl KvService {
    pub fn new(coordinator: Arc<Coordinator>, transport: Arc<Transport>, gate: Gate) -> Self {
        Self {
            coordinator,
            transport,
            gate,
        }
    }

    fn next<T>(&self, request: Request<T>, key: &[u8]) -> Result<Next<T>, Status> {
        self.coordinator.check_key(key).map_err(status)?;
        let forwarded = transport::was_forwarded(&request);
        match self.coordinator.route(key).map_err(status)? {
            Route::Local => Ok(Next::Here(request.into_inner())),
            Route::Forward { node, .. } if forwarded => Err(status(Error::Unavailable {
                needed: 1,
                got: 0,
                acked: Vec::new(),
                failed: vec![ReplicaError {
                    node: node.to_string(),
                    error: "request forwarded to a node that is not a replica (layouts differ while a change spreads); retry".into(),
                }],
            })),
            Route::Forward { node, address } => Ok(Next::Forward(
                self.transport.clone(),
                node,
                address,
                request.into_inner(),
            )),
        }
    }
}

/// Sends a request on to the coordinator and passes its answer back.
macro_rules! forward {
    ($transport:expr, $node:expr, $address:expr, $msg:expr, $method:ident) => {{
        let mut client = $transport.kv($node, &$address)?;
        let mut req = Request::new($msg);
        $transport.stamp(&mut req);
        client.$method(req).await.map_err(|s| {
            // A status with a source never came from the coordinator: the
            // connection failed (it may have died mid-request). Say so with
            // the retryable UNAVAILABLE rather than pass on tonic's bare
            // "transport error" (UNKNOWN).
            match std::error::Error::source(&s) {
                Some(_) => Status::unavailable(format!(
                    "forwarding to coordinator {} failed: {}; a write may have been applied",
                    $address,
                    transport::root_cause(&s)
                )),
                None => s,
            }
        })
    }};
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let admitted = self.gate.admit("get")?;
        let mut label = String::from("invalid");
        let result = async {
            let key = request.get_ref().key.clone();
            let req = match self.next(request, &key)? {
                Next::Here(req) => req,
                Next::Forward(t, node, address, req) => {
                    label = "forwarded".into();
                    return forward!(t, node, address, req, get);
                }
            };
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

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let admitted = self.gate.admit("put")?;
        let mut label = String::from("invalid");
        let result = async {
            let key = request.get_ref().key.clone();
            let req = match self.next(request, &key)? {
                Next::Here(req) => req,
                Next::Forward(t, node, address, req) => {
                    label = "forwarded".into();
                    return forward!(t, node, address, req, put);
                }
            };
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
        let mut label = String::from("invalid");
        let result = async {
            let key = request.get_ref().key.clone();
            let req = match self.next(request, &key)? {
                Next::Here(req) => req,
                Next::Forward(t, node, address, req) => {
                    label = "forwarded".into();
                    return forward!(t, node, address, req, delete);
                }
            };
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
