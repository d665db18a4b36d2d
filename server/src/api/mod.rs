//! gRPC services: thin handlers over the coordinator and the replica.
//!
//! Each handler validates and converts the proto request into a domain
//! command, delegates, and converts the result back. Proto types stop here.
//! [`status`] is the one place where a crate [`Error`] becomes a gRPC
//! status, so every failure reaches clients with the code DESIGN.md fixes.

pub mod admin;
mod auth;
mod cluster;
pub mod convert;
mod frames;
mod internal;
mod kv;
mod layer;
mod tokens;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

pub use admin::AdminService;
pub use auth::{AuthLayer, ClientAuth, PeerAuth};
pub use frames::FrameServer;
pub use internal::{item_request, InternalService};
pub use kv::KvService;
pub use layer::{GateLayer, LevelLabel};

use ringkv_core::error::Error;
use ringkv_node::metrics::Metrics;

/// Maps a crate error to its gRPC status: the code of its class
/// ([`Error::code`]) and its display text, which says what went wrong and
/// what to do.
pub fn status(err: Error) -> Status {
    Status::new(crate::transport::code_to_grpc(err.code()), err.to_string())
}

/// Admission control and per-request metrics shared by all services.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    /// `limits.max_concurrent_requests`: all permits free = nothing in flight.
    max_concurrent: usize,
    /// Set when the node starts to stop: data requests are refused.
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// What a stopping node refuses with UNAVAILABLE (nothing applied, so a
/// client or coordinator sends it elsewhere): the requests that read or
/// write data. Health, reflection, Admin and gossip are still answered.
const REFUSED_WHILE_STOPPING: &[&str] = &["get", "put", "delete", "replicate", "local_read"];

/// A request in flight: holds its concurrency permit and records its
/// outcome when finished.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    started: Instant,
    op: &'static str,
    metrics: Arc<Metrics>,
}

impl Gate {
    pub fn new(max_concurrent: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            stopping: Arc::new(AtomicBool::new(false)),
            metrics,
        }
    }

    /// From now on, refuses data requests with UNAVAILABLE: the node is
    /// stopping, and keeps its ports open only so that callers hear so
    /// (a closed port behind a container's port proxy looks like a
    /// connection that broke after the request was sent).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until no admitted request is in flight, at most `limit`;
    /// false when time ran out.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.max_concurrent).unwrap_or(u32::MAX);
        let idle = self.permits.acquire_many(all);
        matches!(tokio::time::timeout(limit, idle).await, Ok(Ok(_)))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Admits a request or refuses it with RESOURCE_EXHAUSTED when the node
    /// already serves `limits.max_concurrent_requests`.
    pub fn admit(&self, op: &'static str) -> Result<Admitted, Status> {
        if self.stopping.load(Ordering::SeqCst) && REFUSED_WHILE_STOPPING.contains(&op) {
            self.metrics
                .request(op, "", code_name(Code::Unavailable), Duration::ZERO);
            return Err(Status::unavailable(
                "this node is stopping; nothing was applied: send the request to another node",
            ));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admitted {
                _permit: permit,
                started: Instant::now(),
                op,
                metrics: self.metrics.clone(),
            }),
            Err(_) => {
                self.metrics.overloaded();
                self.metrics
                    .request(op, "", code_name(Code::ResourceExhausted), Duration::ZERO);
                Err(status(Error::Overloaded(
                    "too many concurrent requests (limits.max_concurrent_requests)".into(),
                )))
            }
        }
    }
}

impl Admitted {
    /// Records the outcome and passes the result through.
    pub fn finish<T>(self, level: &'static str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => "OK",
            Err(s) => code_name(s.code()),
        };
        self.metrics
            .request(self.op, level, code, self.started.elapsed());
        result
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::Unavailable => "UNAVAILABLE",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::NotFound => "NOT_FOUND",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Cancelled => "CANCELLED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_documented_code() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::MalformedContext("x".into()), Code::InvalidArgument),
            (
                Error::Unavailable {
                    needed: 2,
                    got: 1,
                    acked: vec![],
                    failed: vec![],
                },
                Code::Unavailable,
            ),
            (
                Error::Timeout {
                    needed: 2,
                    got: 1,
                    acked: vec![],
                    failed: vec![],
                },
                Code::DeadlineExceeded,
            ),
            (Error::Overloaded("x".into()), Code::ResourceExhausted),
            (
                Error::KeyStateTooLarge {
                    what: "put refused: the key would hold".into(),
                    siblings: 2,
                    bytes: 1_400_000,
                    limit: 1_310_720,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::Indeterminate("x".into()), Code::DeadlineExceeded),
            (
                Error::Unavailable {
                    needed: 2,
                    got: 1,
                    acked: vec![],
                    failed: vec![],
                }
                .after_apply(),
                Code::DeadlineExceeded,
            ),
            (Error::StorageFailed("x".into()), Code::Unavailable),
            (Error::Storage("x".into()), Code::Internal),
            (Error::Corrupt("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(status(err).code(), code);
        }
    }

    #[test]
    fn gate_refuses_past_the_limit_and_frees_on_finish() {
        let gate = Gate::new(1, Metrics::new());
        let first = gate.admit("get").unwrap();
        assert_eq!(
            gate.admit("get").err().unwrap().code(),
            Code::ResourceExhausted
        );
        first.finish::<()>("one", Ok(())).unwrap();
        assert!(gate.admit("get").is_ok());
    }

    #[tokio::test]
    async fn a_stopping_gate_refuses_data_requests_and_waits_for_those_in_flight() {
        let gate = Gate::new(4, Metrics::new());
        let in_flight = gate.admit("put").unwrap();
        gate.stop();
        for op in ["get", "put", "delete", "replicate", "local_read"] {
            assert_eq!(
                gate.admit(op).err().unwrap().code(),
                Code::Unavailable,
                "{op}"
            );
        }
        assert!(gate.admit("node_status").is_ok());
        assert!(!gate.wait_idle(Duration::from_millis(50)).await);
        in_flight.finish::<()>("quorum", Ok(())).unwrap();
        assert!(gate.wait_idle(Duration::from_millis(50)).await);
    }
}
