//! etcd as a peer: the same load driven through etcd's v3 gRPC KV API.
//!
//! etcd is what many would pick instead of ringkv for a replicated
//! key-value store: a Raft group where every write is fsynced by a majority
//! before it is acknowledged and reads are linearizable by default (the
//! leader confirms it still leads, ReadIndex). `ringkv-bench --target etcd`
//! and `ringkv-bench compare` drive it with the same workers, keys, values
//! and histograms as ringkv, through the subset of its API in
//! `proto/etcdserverpb/kv.proto`:
//!
//! - get = `KV.Range` of one key, linearizable (`serializable = false`),
//!   the counterpart of a ringkv QUORUM read; or, with
//!   [`EtcdKv::with_serializable_reads`], serializable: the member answers
//!   from its own state without asking the leader, which may be stale, the
//!   counterpart of a ringkv read at R = ONE;
//! - put = `KV.Put`, durable on a majority, the counterpart of a ringkv
//!   QUORUM write with `storage.sync = always`.
//!
//! etcd has no causal context: the "modify" of a read-modify-write is a
//! plain put after the range. Requests go to the members in turn, one
//! HTTP/2 connection each; a follower forwards writes (and the ReadIndex of
//! reads) to the leader itself. To send everything to the leader instead,
//! find it with [`leader`] (etcd's `Maintenance.Status`) and make a client
//! of that member alone.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::target::{connect_lazy, status_kind, Fetched, OpError};

/// Generated code of `proto/etcdserverpb/kv.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;

/// Largest message accepted from etcd: a 1 MiB value with room. (etcd's own
/// default request limit is 1.5 MiB.)
const MAX_MESSAGE_BYTES: usize = 2 << 20;

/// A KV client of an etcd cluster.
pub struct EtcdKv {
    stubs: Vec<KvClient<Channel>>,
    next: AtomicUsize,
    /// Gets are serializable (answered by any member from its own state)
    /// rather than linearizable.
    serializable: bool,
}

impl EtcdKv {
    /// A client for etcd members' client URLs given as `host:port`.
    pub fn new(endpoints: &[String]) -> Result<Self> {
        let stubs = endpoints
            .iter()
            .map(|e| {
                Ok(KvClient::new(connect_lazy(e)?)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EtcdKv {
            stubs,
            next: AtomicUsize::new(0),
            serializable: false,
        })
    }

    /// The same client with serializable gets.
    pub fn with_serializable_reads(self) -> Self {
        EtcdKv {
            serializable: true,
            ..self
        }
    }

    /// The member `i`'s stub, for readiness checks of each member.
    pub fn member(&self, i: usize) -> KvClient<Channel> {
        self.stubs[i % self.stubs.len()].clone()
    }

    fn stub(&self) -> KvClient<Channel> {
        self.member(self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub async fn get(&self, key: Bytes) -> Result<Fetched, OpError> {
        let request = pb::RangeRequest {
            key,
            serializable: self.serializable,
            ..Default::default()
        };
        match self.stub().range(request).await {
            Ok(reply) => Ok(Fetched {
                found: !reply.into_inner().kvs.is_empty(),
                context: None,
            }),
            Err(s) => Err(OpError::new(status_kind(&s), s.message())),
        }
    }

    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), OpError> {
        let request = pb::PutRequest {
            key,
            value,
            ..Default::default()
        };
        self.stub()
            .put(request)
            .await
            .map(|_| ())
            .map_err(|s| OpError::new(status_kind(&s), s.message()))
    }
}

/// etcd's `Maintenance.Status`, the one maintenance call the benchmark
/// makes, written from etcd's `rpc.proto` (message `StatusResponse`) with
/// only the fields it reads; the tag numbers are the wire format.
mod status {
    /// `etcdserverpb.StatusRequest`: no fields.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StatusRequest {}

    /// `etcdserverpb.StatusResponse`, the fields the benchmark reads.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StatusResponse {
        /// Names the answering member (`member_id`).
        #[prost(message, optional, tag = "1")]
        pub(super) header: Option<super::pb::ResponseHeader>,
        /// The member the answering member takes for the leader; 0 while
        /// there is none.
        #[prost(uint64, tag = "4")]
        pub(super) leader: u64,
    }
}

/// Asks a member for its `Maintenance.Status`: its own member id and the
/// leader's.
async fn member_status(endpoint: &str) -> Result<status::StatusResponse> {
    let mut grpc = tonic::client::Grpc::new(connect_lazy(endpoint)?);
    grpc.ready()
        .await
        .with_context(|| format!("connecting to etcd at {endpoint}"))?;
    let path = PathAndQuery::from_static("/etcdserverpb.Maintenance/Status");
    let reply = grpc
        .unary(
            tonic::Request::new(status::StatusRequest {}),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .with_context(|| format!("Maintenance.Status of etcd at {endpoint}"))?;
    Ok(reply.into_inner())
}

/// The index in `endpoints` of the etcd leader: the member whose own id is
/// the leader every member names. `None` while an election is under way or
/// the members disagree.
pub async fn leader(endpoints: &[String]) -> Result<Option<usize>> {
    let mut ids = Vec::with_capacity(endpoints.len());
    let mut named = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let status = member_status(endpoint).await?;
        ids.push(status.header.map(|h| h.member_id));
        named.push(status.leader);
    }
    let Some(&leader) = named.first() else {
        return Ok(None);
    };
    if leader == 0 || named.iter().any(|&n| n != leader) {
        return Ok(None);
    }
    Ok(ids.iter().position(|&id| id == Some(leader)))
}
