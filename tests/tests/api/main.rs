//! The public gRPC API of one node, spoken directly with the generated
//! clients so that requests the client library would never send can be
//! tried.
//!
//! Covers: bad input on every method (empty and oversized keys and values,
//! malformed contexts, unknown enums, replica counts outside 1..=N, zero
//! timeouts and TTLs, garbage version sets on Internal.Replicate, a message
//! far above the gRPC size limit), each answered with INVALID_ARGUMENT (or,
//! for the oversized message, any refusal) while the node keeps serving;
//! well-formed but forged contexts, accepted without harm; the
//! put/get/delete semantics (contexts, blind overwrites, siblings and their
//! resolution, LWW reads, tombstones, TTL, the sibling cap); the reply meta of a one-node
//! cluster; Admin.LocalGet and Admin.NodeStatus; the standard health
//! service; the Prometheus request counters; the memory engine; and
//! concurrent writers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::consistency::Required;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_tests::metrics::{metric_samples, metrics_page};
use ringkv_tests::ServerProcess;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod admin;
mod engines;
mod health;
mod internal;
mod kv;
mod validation;

/// The node's default value limit (`limits.max_value_bytes`): 1 MiB.
const MAX_VALUE: usize = 1024 * 1024;

/// The node's default key limit (`limits.max_key_bytes`): 4 KiB.
const MAX_KEY: usize = 4096;

/// How long a TTL'd value may take to read as absent before the test fails.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);

/// One running node and raw gRPC clients connected to it.
struct Node {
    /// Dropped first: kills the server before its directory goes away.
    server: ServerProcess,
    kv: KvClient<Channel>,
    admin: AdminClient<Channel>,
    internal: InternalClient<Channel>,
    /// Holds the data directory and the server log for the test's lifetime.
    _dir: TempDir,
}

async fn start(args: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("node"), args).unwrap();
    server.wait_ready().await.unwrap();
    let channel = connect(&server.grpc).await;
    let peer_channel = connect(&server.peer).await;
    Node {
        kv: KvClient::new(channel.clone())
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(64 << 20),
        admin: AdminClient::new(channel.clone()).max_decoding_message_size(64 << 20),
        internal: InternalClient::new(peer_channel).max_decoding_message_size(64 << 20),
        server,
        _dir: dir,
    }
}

async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl Node {
    async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        self.kv.clone().put(req).await.map(|r| r.into_inner())
    }

    async fn get(&self, req: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        self.kv.clone().get(req).await.map(|r| r.into_inner())
    }

    async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        self.kv.clone().delete(req).await.map(|r| r.into_inner())
    }

    async fn local_get(&self, key: &[u8]) -> Result<pb::LocalGetResponse, Status> {
        let req = pb::LocalGetRequest {
            key: key.to_vec().into(),
        };
        self.admin
            .clone()
            .local_get(req)
            .await
            .map(|r| r.into_inner())
    }

    async fn node_status(&self) -> pb::NodeStatusResponse {
        self.admin
            .clone()
            .node_status(pb::NodeStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// The values a default get returns for `key`, oldest first.
    async fn values(&self, key: &str) -> Vec<String> {
        let reply = self.get(get_req(key)).await.unwrap();
        assert_eq!(
            reply.found,
            !reply.siblings.is_empty(),
            "found disagrees with siblings"
        );
        reply
            .siblings
            .iter()
            .map(|s| String::from_utf8(s.value.to_vec()).unwrap())
            .collect()
    }

    /// A normal put and get still work: the node survived what came before.
    async fn assert_still_serving(&self) {
        let value = format!("alive-{}", self.server.grpc);
        self.put(put_req("still-serving", value.as_bytes()))
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "put after bad input failed: {s:?}\nlog:\n{}",
                    self.server.log()
                )
            });
        assert_eq!(self.values("still-serving").await, vec![value]);
    }
}

fn put_req(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_ref().to_vec().into(),
        value: value.as_ref().to_vec().into(),
        ..Default::default()
    }
}

fn put_with_context(key: &str, value: &str, context: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        context: context.to_vec().into(),
        ..put_req(key, value)
    }
}

fn get_req(key: impl AsRef<[u8]>) -> pb::GetRequest {
    pb::GetRequest {
        key: key.as_ref().to_vec().into(),
        ..Default::default()
    }
}

fn del_req(key: impl AsRef<[u8]>) -> pb::DeleteRequest {
    pb::DeleteRequest {
        key: key.as_ref().to_vec().into(),
        ..Default::default()
    }
}

fn level(level: i32) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        required: Some(Required::Level(level)),
        ..Default::default()
    })
}

fn count(n: u32) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        required: Some(Required::Count(n)),
        ..Default::default()
    })
}

/// A context in the documented format 1: `0x01`, a varint entry count,
/// then per entry the node id (u64 little-endian) and a varint counter.
fn context_bytes(entries: &[(u64, u64)]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = vec![0x01];
    varint(&mut out, entries.len() as u64);
    for (node, counter) in entries {
        out.extend_from_slice(&node.to_le_bytes());
        varint(&mut out, *counter);
    }
    out
}

/// The request failed with INVALID_ARGUMENT and a message mentioning each
/// of `needles` (case-insensitively).
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, needles: &[&str]) {
    let status = match result {
        Ok(reply) => panic!("expected INVALID_ARGUMENT mentioning {needles:?}, got OK: {reply:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "wrong code; message: {:?}",
        status.message()
    );
    let message = status.message().to_lowercase();
    for needle in needles {
        assert!(
            message.contains(&needle.to_lowercase()),
            "message {:?} should mention {needle:?}",
            status.message()
        );
    }
}

/// The metrics page as `name{labels}` → value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    metric_samples(&metrics_page(addr).unwrap())
}
