//! Admission and request metrics as one tower layer around both listeners'
//! services, so no handler repeats them.
//!
//! For every call it meters (the operations of [`OPS`]; health checks,
//! reflection, gossip and the other internal exchanges pass untouched):
//!
//! * admission: the call takes one of `limits.max_concurrent_requests`
//!   permits or is refused with `RESOURCE_EXHAUSTED` before any handler
//!   runs;
//! * metrics: when the handler answers, the call is counted by operation
//!   and gRPC code and its latency recorded by operation and level. The
//!   level is known only to the handler, after it decoded the request: the
//!   layer puts a [`LevelLabel`] in the request's extensions and the
//!   handler fills it in.
//!
//! `Internal.Batch` is not metered here: its items are admitted and
//! recorded one by one, as their unary calls would be (see `internal.rs`).
//! Authentication will be a layer beside this one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use super::Gate;

/// gRPC paths metered by the layer, with their operation label.
const OPS: &[(&str, &str)] = &[
    ("/ringkv.v1.KV/Get", "get"),
    ("/ringkv.v1.KV/Put", "put"),
    ("/ringkv.v1.KV/Delete", "delete"),
    ("/ringkv.v1.Admin/NodeStatus", "node_status"),
    ("/ringkv.v1.Admin/Members", "members"),
    ("/ringkv.v1.Admin/Layout", "layout"),
    ("/ringkv.v1.Admin/SetFaults", "set_faults"),
    ("/ringkv.v1.Admin/LocalGet", "local_get"),
    ("/ringkv.v1.Admin/Workers", "workers"),
    ("/ringkv.v1.Admin/StartRepair", "start_repair"),
    ("/ringkv.v1.Admin/MerkleRoots", "merkle_roots"),
    ("/ringkv.v1.Admin/Hints", "hints"),
    ("/ringkv.v1.Admin/Join", "join"),
    ("/ringkv.v1.Admin/Leave", "leave"),
    ("/ringkv.v1.Admin/Remove", "remove"),
    ("/ringkv.v1.Admin/Plan", "plan"),
    ("/ringkv.v1.Admin/Commit", "commit"),
    ("/ringkv.v1.Admin/Transfers", "transfers"),
    ("/ringkv.v1.Internal/Replicate", "replicate"),
    ("/ringkv.v1.Internal/LocalRead", "local_read"),
];

/// The operation label of a gRPC path, if the layer meters it.
pub fn op_of(path: &str) -> Option<&'static str> {
    OPS.iter().find(|(p, _)| *p == path).map(|(_, op)| *op)
}

/// The level label of a metered call, filled in by its handler. KV calls
/// start as `invalid` (a request refused before its level was read);
/// other calls have no level. Labels are static: a request allocates
/// nothing for its label but the shared cell.
#[derive(Clone, Debug)]
pub struct LevelLabel(Arc<Mutex<&'static str>>);

impl LevelLabel {
    fn new(op: &str) -> Self {
        let initial = match op {
            "get" | "put" | "delete" => "invalid",
            _ => "",
        };
        Self(Arc::new(Mutex::new(initial)))
    }

    /// The label the layer put in `request`, or one nobody reads (a
    /// handler called directly, as in unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<LevelLabel>()
            .cloned()
            .unwrap_or_else(|| LevelLabel::new(""))
    }

    pub fn set(&self, label: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = label;
    }

    fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The gRPC code of an answer: `grpc-status` in the headers for a
/// refusal (a trailers-only response), OK otherwise (a unary answer's
/// status follows its message, in the trailers).
fn code_of<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
        .unwrap_or(Code::Ok)
}

/// Wraps a listener's services with [`GateService`].
#[derive(Clone)]
pub struct GateLayer {
    gate: Gate,
}

impl GateLayer {
    pub fn new(gate: Gate) -> Self {
        Self { gate }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// Admits and meters each call it passes to `inner`.
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Gate,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for GateService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service polled ready is the one that takes the call; a clone
        // stays behind for the next (tower's rule for services that box
        // their futures).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(op) = op_of(request.uri().path()) else {
            return Box::pin(inner.call(request));
        };
        let admitted = match self.gate.admit(op) {
            Ok(admitted) => admitted,
            Err(refused) => return Box::pin(async move { Ok(refused.into_http()) }),
        };
        let label = LevelLabel::new(op);
        request.extensions_mut().insert(label.clone());
        Box::pin(async move {
            let response = inner.call(request).await?;
            let code = code_of(&response);
            let outcome: Result<(), Status> = match code {
                Code::Ok => Ok(()),
                code => Err(Status::new(code, "")),
            };
            let _ = admitted.finish(label.get(), outcome);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests;
