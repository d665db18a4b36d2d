//! The client-facing KV service.
//!
//! A request for a key this node does not replicate is forwarded once, as
//! is, to the key's first live replica (marked so the receiver never
//! forwards it again); otherwise the coordinator runs it here.
//!
//! A forwarded write whose connection fails is answered by what is known
//! about it: refused before a byte was sent (connection refused, the fault
//! switch) is UNAVAILABLE, nothing happened; broken after it was sent (the
//! coordinator died or the connection reset mid-request) is
//! DEADLINE_EXCEEDED, because the coordinator may have applied it. A read
//! stays UNAVAILABLE either way: it changed nothing.
//!
//! A node whose storage failed refuses every write here, before routing,
//! so it acknowledges none (not even one it would merely forward).

use std::sync::Arc;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::kv_server::Kv;
use tonic::{Request, Response, Status};

use super::{convert, status, LevelLabel};
use crate::transport::{self, Transport};
use ringkv_core::auth::Principal;
use ringkv_core::error::{Error, ReplicaError};
use ringkv_node::coordinator::{Coordinator, DeleteCommand, GetCommand, PutCommand, Route};

pub struct KvService {
    coordinator: Arc<Coordinator>,
    transport: Arc<Transport>,
}

/// Where a KV request goes after routing.
enum Next<T> {
    Here(T),
    Forward(Arc<Transport>, ringkv_core::version::NodeId, String, T),
}

impl KvService {
    pub fn new(coordinator: Arc<Coordinator>, transport: Arc<Transport>) -> Self {
        Self {
            coordinator,
            transport,
        }
    }

    fn next<T>(&self, request: Request<T>, key: &[u8]) -> Result<Next<T>, Status> {
        self.coordinator.check_key(key).map_err(status)?;
        // A token limited to a key prefix (the auth layer put its
        // principal here) is checked before anything is routed.
        if let Some(principal) = request.extensions().get::<Principal>() {
            principal.allow_key(key).map_err(status)?;
        }
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

/// Whether a forwarded request changes data, which decides what a broken
/// connection means for it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// The status of a forward whose connection to the coordinator failed.
/// A status with a source never came from the coordinator: the transport
/// failed. Its bare "transport error" (UNKNOWN) is replaced by the code
/// that says whether the request may have taken effect.
fn forward_failed(status: Status, address: &str, kind: Kind) -> Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    let what = format!(
        "forwarding to coordinator {address} failed: {}",
        transport::root_cause(&status)
    );
    if kind == Kind::Read || transport::peer_error(status.clone()).never_sent() {
        return Status::unavailable(format!("{what}; nothing was applied, retry"));
    }
    super::status(Error::Indeterminate(format!(
        "{what} after the write was sent"
    )))
}

/// Sends a request on to the coordinator and passes its answer back.
macro_rules! forward {
    ($transport:expr, $node:expr, $address:expr, $msg:expr, $method:ident, $kind:expr) => {{
        let mut client = $transport.kv($node)?;
        let mut req = Request::new($msg);
        $transport.stamp(&mut req);
        client
            .$method(req)
            .await
            .map_err(|s| forward_failed(s, &$address, $kind))
    }};
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let label = LevelLabel::of(&request);
        async {
            let key = request.get_ref().key.clone();
            let req = match self.next(request, &key)? {
                Next::Here(req) => req,
                Next::Forward(t, node, address, req) => {
                    label.set("forwarded");
                    return forward!(t, node, address, req, get, Kind::Read);
                }
            };
            let consistency = convert::consistency(req.consistency).map_err(status)?;
            label.set(convert::level_label(&consistency));
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
        .await
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let label = LevelLabel::of(&request);
        async {
            self.coordinator.check_writable().map_err(status)?;
            let key = request.get_ref().key.clone();
            let req = match self.next(request, &key)? {
                Next::Here(req) => req,
                Next::Forward(t, node, address, req) => {
                    label.set("forwarded");
                    return forward!(t, node, address, req, put, Kind::Write);
                }
            };
            let consistency = convert::consistency(req.consistency).map_err(status)?;
            label.set(convert::level_label(&consistency));
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
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let label = LevelLabel::of(&request);
        async {
            self.coordinator.check_writable().map_err(status)?;
            let key = request.get_ref().key.clone();
            let req = match self.next(request, &key)? {
                Next::Here(req) => req,
                Next::Forward(t, node, address, req) => {
                    label.set("forwarded");
                    return forward!(t, node, address, req, delete, Kind::Write);
                }
            };
            let consistency = convert::consistency(req.consistency).map_err(status)?;
            label.set(convert::level_label(&consistency));
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
        .await
    }
}
