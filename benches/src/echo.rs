//! The RPC ceiling: a gRPC service that does nothing but answer.
//!
//! ringkv's requests are unary tonic calls over HTTP/2 on loopback. How
//! fast such a call can possibly go on this machine, at this concurrency,
//! with these message sizes, bounds what any tonic-based store can serve;
//! `ringkv-bench compare` measures it first and states every other figure
//! as a ratio to it.
//!
//! The echo service (`benches/proto/ringkv/bench/v1/echo.proto`) stores
//! nothing. A "put" sends the key and value and gets an empty reply;
//! a "get" sends the key and gets `value_size` bytes back. So each call
//! moves the same bytes as the ringkv request it stands for, through the
//! same stack (tonic, hyper, prost, tokio, loopback TCP with Nagle off),
//! and does no other work.
//!
//! The server runs as its own process (`ringkv-bench echo-server`), so its
//! CPU time can be read apart from the load generator's, as for the real
//! servers.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::target::{connect_lazy, status_kind, OpError};

/// Generated code of `proto/ringkv/bench/v1/echo.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ringkv.bench.v1");
}

use pb::echo_client::EchoClient as Stub;
use pb::echo_server::{Echo, EchoServer};

/// Largest reply the server sends: the largest value `ringkv-bench`
/// accepts (1 MiB). Replies are slices of one zeroed buffer of this size.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Largest message the server accepts: a key and a 1 MiB value, with room.
const MAX_MESSAGE_BYTES: usize = 2 << 20;

struct EchoService {
    /// Replies are slices of this (cheap `Bytes` clones, no copy per call).
    payload: Bytes,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(
        &self,
        request: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoReply>, Status> {
        let wanted = request.into_inner().reply_bytes as usize;
        if wanted > self.payload.len() {
            return Err(Status::invalid_argument(format!(
                "reply_bytes {wanted} is above the echo server's limit of {MAX_REPLY_BYTES}"
            )));
        }
        Ok(Response::new(pb::EchoReply {
            payload: self.payload.slice(..wanted),
        }))
    }
}

/// Serves the echo service on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    let service = EchoService {
        payload: Bytes::from(vec![0u8; MAX_REPLY_BYTES]),
    };
    // Nagle off on accepted sockets, as ringkv's server does: tonic's own
    // `tcp_nodelay` does not apply to a caller-supplied listener.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    });
    Server::builder()
        .add_service(EchoServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("echo server failed")
}

/// A client of one or more echo servers, spreading calls over them in turn
/// (one HTTP/2 connection each, as the ringkv client keeps one per node).
pub struct EchoClient {
    stubs: Vec<Stub<Channel>>,
    next: AtomicUsize,
    /// Bytes asked back by a "get": the run's value size.
    get_reply_bytes: u32,
}

impl EchoClient {
    pub fn new(endpoints: &[String], value_size: usize) -> Result<Self> {
        let stubs = endpoints
            .iter()
            .map(|e| {
                Ok(Stub::new(connect_lazy(e)?)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EchoClient {
            stubs,
            next: AtomicUsize::new(0),
            get_reply_bytes: u32::try_from(value_size).context("value size above 4 GiB")?,
        })
    }

    fn stub(&self) -> Stub<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.stubs.len();
        self.stubs[i].clone()
    }

    /// A call standing for a get: the key out, a value back.
    pub async fn get(&self, key: Bytes) -> Result<(), OpError> {
        self.call(key, Bytes::new(), self.get_reply_bytes).await
    }

    /// A call standing for a put: key and value out, nothing back.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), OpError> {
        self.call(key, value, 0).await
    }

    async fn call(&self, key: Bytes, value: Bytes, reply_bytes: u32) -> Result<(), OpError> {
        let request = pb::EchoRequest {
            key,
            value,
            reply_bytes,
        };
        self.stub()
            .echo(request)
            .await
            .map(|_| ())
            .map_err(|s| OpError::new(status_kind(&s), s.message()))
    }
}
