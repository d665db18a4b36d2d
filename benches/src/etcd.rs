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
//!   the counterpart of a ringkv QUORUM read;
//! - put = `KV.Put`, durable on a majority, the counterpart of a ringkv
//!   QUORUM write with `storage.sync = always`.
//!
//! etcd has no causal context: the "modify" of a read-modify-write is a
//! plain put after the range. Requests go to the members in turn, one
//! HTTP/2 connection each; a follower forwards writes (and the ReadIndex of
//! reads) to the leader itself.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use bytes::Bytes;
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
        })
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
