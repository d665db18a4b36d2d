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
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::consistency::Required;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_tests::ServerProcess;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::{Code, Status};

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

// ---------------------------------------------------------------- bad input

/// The node-to-node service is served on the peer port only: the client
/// port answers UNIMPLEMENTED, while KV and Admin answer on both.
#[tokio::test]
async fn the_internal_service_is_never_served_on_the_client_port() {
    let node = start(&[]).await;
    let read = || pb::LocalReadRequest {
        key: "k".as_bytes().to_vec().into(),
    };
    let mut on_client_port = InternalClient::new(connect(&node.server.grpc).await);
    let refused = on_client_port.local_read(read()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    let mut on_peer_port = InternalClient::new(connect(&node.server.peer).await);
    assert!(on_peer_port.local_read(read()).await.is_ok());
    let status = AdminClient::new(connect(&node.server.grpc).await)
        .node_status(pb::NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.address, node.server.grpc);
    assert_eq!(status.peer_address, node.server.peer);
}

#[tokio::test]
async fn empty_key_is_invalid_for_every_method() {
    let node = start(&[]).await;
    assert_invalid(node.get(get_req("")).await, &["key", "empty"]);
    assert_invalid(node.put(put_req("", "v")).await, &["key", "empty"]);
    assert_invalid(node.delete(del_req("")).await, &["key", "empty"]);
    assert_invalid(node.local_get(b"").await, &["key", "got 0"]);
    let read = pb::LocalReadRequest {
        key: Default::default(),
    };
    assert_invalid(
        node.internal.clone().local_read(read).await,
        &["key", "got 0"],
    );
    let replicate = pb::ReplicateRequest {
        key: Default::default(),
        version_set: vec![0x01, 0x00, 0x00].into(),
        from: "test".to_string(),
        hint_for: String::new(),
    };
    assert_invalid(
        node.internal.clone().replicate(replicate).await,
        &["key", "got 0"],
    );
    node.assert_still_serving().await;
}

#[tokio::test]
async fn key_above_4096_bytes_is_invalid_and_4096_is_accepted() {
    let node = start(&[]).await;
    let long = vec![b'k'; MAX_KEY + 1];
    assert_invalid(node.get(get_req(&long)).await, &["4097", "4096"]);
    assert_invalid(node.put(put_req(&long, "v")).await, &["4097", "4096"]);
    assert_invalid(node.delete(del_req(&long)).await, &["4097", "4096"]);
    assert_invalid(node.local_get(&long).await, &["key", "4097"]);

    let at_limit = vec![b'k'; MAX_KEY];
    node.put(put_req(&at_limit, "at the limit")).await.unwrap();
    let reply = node.get(get_req(&at_limit)).await.unwrap();
    assert_eq!(reply.siblings.len(), 1);
    assert_eq!(reply.siblings[0].value.as_ref(), b"at the limit");
    assert!(node.local_get(&at_limit).await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn empty_value_is_invalid() {
    let node = start(&[]).await;
    assert_invalid(node.put(put_req("k", "")).await, &["value", "empty"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn value_limit_is_exactly_one_mebibyte() {
    let node = start(&[]).await;
    let at_limit: Vec<u8> = (0..MAX_VALUE).map(|i| (i % 251) as u8).collect();
    node.put(put_req("big", &at_limit))
        .await
        .expect("a value of exactly limits.max_value_bytes must be accepted");
    let reply = node.get(get_req("big")).await.unwrap();
    assert_eq!(reply.siblings.len(), 1);
    assert!(
        reply.siblings[0].value.as_ref() == at_limit.as_slice(),
        "1 MiB value read back differs"
    );

    let over = vec![b'x'; MAX_VALUE + 1];
    assert_invalid(
        node.put(put_req("big", &over)).await,
        &["1048577", "1048576"],
    );
    // The refused put left the stored value alone.
    let reply = node.get(get_req("big")).await.unwrap();
    assert_eq!(reply.siblings.len(), 1);
    assert_eq!(reply.siblings[0].value.len(), MAX_VALUE);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn malformed_contexts_are_invalid_and_change_nothing() {
    let node = start(&[]).await;
    let valid = node
        .put(put_req("ctx", "original"))
        .await
        .unwrap()
        .context
        .to_vec();
    assert!(!valid.is_empty());

    let mut wrong_format = valid.clone();
    wrong_format[0] = 0x7f;
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"\xde\xad\xbe\xef this is not a context".to_vec(),
        ),
        (
            "garbage after a valid format byte",
            vec![0x01, 0xff, 0xff, 0xff, 0xff],
        ),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("format byte only", valid[..1].to_vec()),
        ("wrong format byte", wrong_format),
        ("trailing byte", trailing),
        ("zero counter", context_bytes(&[(7, 0)])),
        ("nodes out of order", context_bytes(&[(9, 1), (7, 1)])),
        ("duplicate node", context_bytes(&[(7, 1), (7, 2)])),
        ("non-minimal varint", vec![0x01, 0x81, 0x00]),
        (
            "more than 1024 entries",
            context_bytes(&(1..=1025).map(|n| (n, 1)).collect::<Vec<_>>()),
        ),
    ];
    for (what, context) in &cases {
        let put = pb::PutRequest {
            context: context.clone().into(),
            ..put_req("ctx", "overwritten")
        };
        let result = node.put(put).await;
        assert!(result.is_err(), "{what}: put accepted a malformed context");
        assert_invalid(result, &["context"]);

        let delete = pb::DeleteRequest {
            context: context.clone().into(),
            ..del_req("ctx")
        };
        let result = node.delete(delete).await;
        assert!(
            result.is_err(),
            "{what}: delete accepted a malformed context"
        );
        assert_invalid(result, &["context"]);
    }
    assert_eq!(node.values("ctx").await, vec!["original"]);
    assert_eq!(node.local_get(b"ctx").await.unwrap().versions.len(), 1);

    // The untouched context is still good.
    node.put(put_with_context("ctx", "replaced", &valid))
        .await
        .unwrap();
    assert_eq!(node.values("ctx").await, vec!["replaced"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn unknown_level_is_invalid() {
    let node = start(&[]).await;
    let put = pb::PutRequest {
        consistency: level(99),
        ..put_req("k", "v")
    };
    assert_invalid(node.put(put).await, &["level", "99"]);
    let get = pb::GetRequest {
        consistency: level(99),
        ..get_req("k")
    };
    assert_invalid(node.get(get).await, &["level", "99"]);
    let delete = pb::DeleteRequest {
        consistency: level(-1),
        ..del_req("k")
    };
    assert_invalid(node.delete(delete).await, &["level", "-1"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn replica_count_outside_one_to_n_is_invalid() {
    let node = start(&[]).await;
    for (n, needles) in [(0, &["at least 1"][..]), (4, &["4", "N=3"][..])] {
        let put = pb::PutRequest {
            consistency: count(n),
            ..put_req("k", "v")
        };
        assert_invalid(node.put(put).await, needles);
        let get = pb::GetRequest {
            consistency: count(n),
            ..get_req("k")
        };
        assert_invalid(node.get(get).await, needles);
        let delete = pb::DeleteRequest {
            consistency: count(n),
            ..del_req("k")
        };
        assert_invalid(node.delete(delete).await, needles);
    }
    assert!(!node.get(get_req("k")).await.unwrap().found);

    // Every count up to the configured N is valid, capped at one member.
    for n in 1..=3 {
        let put = pb::PutRequest {
            consistency: count(n),
            ..put_req("k", format!("count {n}"))
        };
        let meta = node.put(put).await.unwrap().meta.unwrap();
        assert_eq!(meta.required, 1, "count {n} on a one-node cluster");
    }
    assert_eq!(node.values("k").await, vec!["count 3"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn zero_timeout_is_invalid() {
    let node = start(&[]).await;
    let zero = || {
        Some(pb::Consistency {
            timeout_ms: Some(0),
            ..Default::default()
        })
    };
    let put = pb::PutRequest {
        consistency: zero(),
        ..put_req("k", "v")
    };
    assert_invalid(node.put(put).await, &["timeout"]);
    let get = pb::GetRequest {
        consistency: zero(),
        ..get_req("k")
    };
    assert_invalid(node.get(get).await, &["timeout"]);
    let delete = pb::DeleteRequest {
        consistency: zero(),
        ..del_req("k")
    };
    assert_invalid(node.delete(delete).await, &["timeout"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);

    // The largest timeout is valid.
    let longest = Some(pb::Consistency {
        timeout_ms: Some(u32::MAX),
        ..Default::default()
    });
    let put = pb::PutRequest {
        consistency: longest,
        ..put_req("k", "patient")
    };
    node.put(put).await.unwrap();
    assert_eq!(node.values("k").await, vec!["patient"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn zero_ttl_is_invalid() {
    let node = start(&[]).await;
    let put = pb::PutRequest {
        ttl_ms: Some(0),
        ..put_req("k", "v")
    };
    assert_invalid(node.put(put).await, &["ttl"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);

    // The largest TTL is valid: the value is readable.
    let put = pb::PutRequest {
        ttl_ms: Some(u64::MAX),
        ..put_req("k", "for ages")
    };
    node.put(put).await.unwrap();
    assert_eq!(node.values("k").await, vec!["for ages"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn unknown_resolve_is_invalid() {
    let node = start(&[]).await;
    node.put(put_req("k", "v")).await.unwrap();
    let get = pb::GetRequest {
        resolve: 7,
        ..get_req("k")
    };
    assert_invalid(node.get(get).await, &["resolve", "7"]);
    node.assert_still_serving().await;
}

/// Puts `value` under `key` and returns the node's stored version set of
/// it, as `Internal.LocalRead` gives it.
async fn stored_version_set(node: &Node, key: &str, value: &str) -> Vec<u8> {
    node.put(put_req(key, value)).await.unwrap();
    let read = node
        .internal
        .clone()
        .local_read(pb::LocalReadRequest {
            key: key.as_bytes().to_vec().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.found, "{key} was just written");
    read.version_set.to_vec()
}

#[tokio::test]
async fn replicate_with_a_bad_version_set_is_invalid_and_stores_nothing() {
    let node = start(&[]).await;
    let valid = stored_version_set(&node, "source", "v").await;

    let mut wrong_format = valid.clone();
    wrong_format[0] = 0x7f;
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "garbage",
            b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage".to_vec(),
        ),
        ("wrong format byte", wrong_format),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("trailing byte", trailing),
    ];
    for (i, (what, version_set)) in cases.into_iter().enumerate() {
        let key = format!("target-{i}");
        let req = pb::ReplicateRequest {
            key: key.clone().into_bytes().into(),
            version_set: version_set.into(),
            from: "test".to_string(),
            hint_for: String::new(),
        };
        let result = node.internal.clone().replicate(req).await;
        assert!(
            result.is_err(),
            "{what}: replicate accepted a bad version set"
        );
        assert_invalid(result, &["version set"]);
        let copy = node.local_get(key.as_bytes()).await.unwrap();
        assert!(!copy.found, "{what}: something was stored: {copy:?}");
        assert!(!node.get(get_req(&key)).await.unwrap().found, "{what}");
    }

    // The valid bytes, by contrast, are merged and stored.
    let req = pb::ReplicateRequest {
        key: b"target-valid".to_vec().into(),
        version_set: valid.into(),
        from: "test".to_string(),
        hint_for: String::new(),
    };
    node.internal.clone().replicate(req).await.unwrap();
    assert_eq!(node.values("target-valid").await, vec!["v"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn batch_answers_each_item_on_its_own() {
    let node = start(&[]).await;
    let valid = stored_version_set(&node, "source", "v").await;
    let replicate = |key: &str, version_set: Vec<u8>| pb::BatchItem {
        op: Some(pb::batch_item::Op::Replicate(pb::ReplicateRequest {
            key: key.as_bytes().to_vec().into(),
            version_set: version_set.into(),
            from: "test".to_string(),
            hint_for: String::new(),
        })),
    };
    let read = |key: &str| pb::BatchItem {
        op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
            key: key.as_bytes().to_vec().into(),
        })),
    };
    let items = vec![
        replicate("batch-ok", valid.clone()),
        replicate("batch-bad", b"garbage".to_vec()),
        read("source"),
        read(""),
        pb::BatchItem { op: None },
        read("batch-missing"),
    ];
    let results = node
        .internal
        .clone()
        .batch(pb::BatchRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 6, "one result per item: {results:?}");
    let code = |i: usize| Code::from_i32(results[i].code);
    assert_eq!(code(0), Code::Ok, "{:?}", results[0]);
    assert_eq!(code(1), Code::InvalidArgument, "{:?}", results[1]);
    assert!(
        results[1].message.contains("version set"),
        "{:?}",
        results[1]
    );
    assert_eq!(code(2), Code::Ok, "{:?}", results[2]);
    assert!(results[2].found);
    assert_eq!(
        results[2].version_set, valid,
        "the read returns the stored bytes"
    );
    assert_eq!(code(3), Code::InvalidArgument, "{:?}", results[3]);
    assert!(results[3].message.contains("key"), "{:?}", results[3]);
    assert_eq!(code(4), Code::InvalidArgument, "{:?}", results[4]);
    assert_eq!(code(5), Code::Ok, "{:?}", results[5]);
    assert!(!results[5].found);

    // The good item was applied, the bad one stored nothing.
    assert_eq!(node.values("batch-ok").await, vec!["v"]);
    assert!(!node.local_get(b"batch-bad").await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn message_far_above_the_size_limit_is_refused_and_the_node_keeps_serving() {
    let node = start(&[]).await;
    let huge = vec![b'x'; 80 << 20];
    let result = tokio::time::timeout(Duration::from_secs(120), node.put(put_req("huge", huge)))
        .await
        .expect("an 80 MiB put got no answer at all");
    let status = result.expect_err("an 80 MiB message must be refused");
    assert_ne!(status.code(), Code::Ok);
    assert!(!node.local_get(b"huge").await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn forged_contexts_do_no_harm_and_impossible_counters_are_refused() {
    let node = start(&[]).await;
    let me = u64::from_str_radix(&node.node_status().await.node_id, 16).unwrap();
    // The largest context a client may send, of nodes that never wrote.
    let widest = context_bytes(&(1..=1024).map(|n| (n, 1)).collect::<Vec<_>>());
    node.put(put_with_context("wide", "v", &widest))
        .await
        .unwrap();
    assert_eq!(node.values("wide").await, vec!["v"]);
    // An empty vector is a valid context that covers nothing.
    node.put(put_with_context("wide", "w", &context_bytes(&[])))
        .await
        .unwrap();
    assert_eq!(node.values("wide").await, vec!["v", "w"]);

    // A context claiming this node's counter is already at u64::MAX: no
    // read returned it (counters are clock readings), and writing past it
    // would saturate onto a dot already issued. Refused, with a reason.
    let forged = context_bytes(&[(me, u64::MAX)]);
    node.put(put_req("forged", "a")).await.unwrap();
    for attempt in ["b", "c"] {
        let refused = node
            .put(put_with_context("forged", attempt, &forged))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("clock.max_offset_ms"),
            "{refused:?}"
        );
    }
    let delete = pb::DeleteRequest {
        context: forged.into(),
        ..del_req("forged")
    };
    let refused = node.delete(delete).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(node.values("forged").await, vec!["a"]);
    node.local_get(b"forged").await.unwrap();
    node.assert_still_serving().await;
}

// ---------------------------------------------------------------- semantics

#[tokio::test]
async fn put_then_get_returns_the_value_and_a_context() {
    let node = start(&[]).await;
    let put = node.put(put_req("alpha", "one")).await.unwrap();
    assert!(
        !put.context.is_empty(),
        "put must return the new version's context"
    );

    let reply = node.get(get_req("alpha")).await.unwrap();
    assert!(reply.found);
    assert_eq!(reply.siblings.len(), 1);
    assert_eq!(reply.siblings[0].value.as_ref(), b"one");
    assert!(reply.siblings[0].timestamp > 0);
    assert_eq!(reply.siblings[0].expires_at_ms, None);
    assert!(!reply.context.is_empty());

    let missing = node.get(get_req("never-written")).await.unwrap();
    assert!(!missing.found);
    assert!(missing.siblings.is_empty());
}

#[tokio::test]
async fn blind_overwrite_leaves_one_sibling() {
    let node = start(&[]).await;
    for v in ["v1", "v2", "v3"] {
        node.put(put_req("k", v)).await.unwrap();
    }
    assert_eq!(node.values("k").await, vec!["v3"]);
    assert_eq!(node.local_get(b"k").await.unwrap().versions.len(), 1);
}

/// Writes v1, then v2 and v3 both with v1's context: two concurrent
/// siblings. Returns the context of the v2 put.
async fn make_two_siblings(node: &Node, key: &str) -> Vec<u8> {
    let first = node.put(put_req(key, "v1")).await.unwrap().context;
    let second = node
        .put(put_with_context(key, "v2", &first))
        .await
        .unwrap()
        .context;
    node.put(put_with_context(key, "v3", &first)).await.unwrap();
    second.to_vec()
}

#[tokio::test]
async fn puts_with_the_same_context_make_siblings_that_a_put_with_their_context_resolves() {
    let node = start(&[]).await;
    make_two_siblings(&node, "k").await;

    let reply = node.get(get_req("k")).await.unwrap();
    let values: Vec<&[u8]> = reply.siblings.iter().map(|s| s.value.as_ref()).collect();
    assert_eq!(
        values,
        vec![&b"v2"[..], &b"v3"[..]],
        "siblings, oldest first"
    );
    assert_eq!(node.local_get(b"k").await.unwrap().versions.len(), 2);

    node.put(put_with_context("k", "merged", &reply.context))
        .await
        .unwrap();
    assert_eq!(node.values("k").await, vec!["merged"]);
    assert_eq!(node.local_get(b"k").await.unwrap().versions.len(), 1);
}

#[tokio::test]
async fn resolve_lww_returns_exactly_the_latest_sibling() {
    let node = start(&[]).await;
    make_two_siblings(&node, "k").await;
    let all = node.get(get_req("k")).await.unwrap();
    assert_eq!(all.siblings.len(), 2);
    let latest = all.siblings.iter().map(|s| s.timestamp).max().unwrap();

    let lww = node
        .get(pb::GetRequest {
            resolve: pb::Resolve::Lww as i32,
            ..get_req("k")
        })
        .await
        .unwrap();
    assert!(lww.found);
    assert_eq!(lww.siblings.len(), 1);
    assert_eq!(lww.siblings[0].value.as_ref(), b"v3");
    assert_eq!(lww.siblings[0].timestamp, latest);
    // LWW is a read-side choice: both siblings are still stored.
    assert_eq!(node.values("k").await, vec!["v2", "v3"]);
}

#[tokio::test]
async fn delete_then_get_is_not_found() {
    let node = start(&[]).await;
    node.put(put_req("k", "v")).await.unwrap();
    node.delete(del_req("k")).await.unwrap();
    let reply = node.get(get_req("k")).await.unwrap();
    assert!(!reply.found);
    assert!(reply.siblings.is_empty());
    // Deleting a key that never existed is fine too.
    node.delete(del_req("never-written")).await.unwrap();
    assert!(!node.get(get_req("never-written")).await.unwrap().found);
}

#[tokio::test]
async fn delete_with_a_context_removes_exactly_what_it_covers() {
    let node = start(&[]).await;
    // Siblings v2 and v3; v2's put context covers v2 but not v3.
    let covers_v2 = make_two_siblings(&node, "k").await;
    let delete = pb::DeleteRequest {
        context: covers_v2.into(),
        ..del_req("k")
    };
    node.delete(delete).await.unwrap();
    assert_eq!(
        node.values("k").await,
        vec!["v3"],
        "the delete must spare the sibling it did not see"
    );

    let seen = node.get(get_req("k")).await.unwrap().context;
    let delete = pb::DeleteRequest {
        context: seen,
        ..del_req("k")
    };
    node.delete(delete).await.unwrap();
    assert!(!node.get(get_req("k")).await.unwrap().found);
    let copy = node.local_get(b"k").await.unwrap();
    assert_eq!(copy.versions.len(), 1, "{copy:?}");
    assert!(copy.versions[0].tombstone);
}

#[tokio::test]
async fn ttl_values_are_readable_then_expire() {
    let node = start(&[]).await;
    let put = pb::PutRequest {
        ttl_ms: Some(1000),
        ..put_req("ephemeral", "soon gone")
    };
    node.put(put).await.unwrap();
    let reply = node.get(get_req("ephemeral")).await.unwrap();
    assert_eq!(
        reply.siblings.len(),
        1,
        "a TTL'd value is readable right after the put"
    );
    assert_eq!(reply.siblings[0].value.as_ref(), b"soon gone");
    assert!(reply.siblings[0].expires_at_ms.is_some());

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    loop {
        if !node.get(get_req("ephemeral")).await.unwrap().found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 1 s TTL value is still readable after 12.5 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn reply_meta_names_this_node_and_the_capped_replication() {
    let node = start(&[]).await;
    let id = node.node_status().await.node_id;
    let quorum = || level(pb::Level::Quorum as i32);

    let put = pb::PutRequest {
        consistency: quorum(),
        ..put_req("k", "v")
    };
    let get = pb::GetRequest {
        consistency: quorum(),
        ..get_req("k")
    };
    let delete = pb::DeleteRequest {
        consistency: quorum(),
        ..del_req("k")
    };
    let metas = [
        ("put", node.put(put).await.unwrap().meta),
        ("get", node.get(get).await.unwrap().meta),
        ("delete", node.delete(delete).await.unwrap().meta),
        (
            "default put",
            node.put(put_req("k", "v")).await.unwrap().meta,
        ),
    ];
    for (op, meta) in metas {
        let meta = meta.unwrap_or_else(|| panic!("{op}: reply has no meta"));
        assert_eq!(meta.coordinator, id, "{op}");
        assert_eq!(meta.replicas, vec![id.clone()], "{op}");
        assert!(meta.fallbacks.is_empty(), "{op}");
        assert_eq!(meta.replication, 1, "{op}");
        assert!(meta.replication_capped, "{op}");
        assert_eq!(meta.required, 1, "{op}");
    }
}

/// Default `limits.max_siblings`.
const SIBLING_CAP: usize = 32;

/// Writes v0, then `SIBLING_CAP + extra` puts that all carry v0's context,
/// so each adds one concurrent sibling: `extra` more than the cap allows.
async fn overfill_siblings(node: &Node, key: &str, extra: usize) {
    let first = node.put(put_req(key, "v0")).await.unwrap().context;
    for i in 1..=SIBLING_CAP + extra {
        node.put(put_with_context(key, &format!("s{i:02}"), &first))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn siblings_past_the_cap_are_collapsed_oldest_first() {
    const EXTRA: usize = 8;
    let node = start(&[]).await;
    overfill_siblings(&node, "crowded", EXTRA).await;
    let kept = node.values("crowded").await;
    let newest: Vec<String> = (EXTRA + 1..=SIBLING_CAP + EXTRA)
        .map(|i| format!("s{i:02}"))
        .collect();
    assert_eq!(
        kept, newest,
        "the cap keeps the {SIBLING_CAP} newest siblings"
    );
    assert_eq!(
        node.local_get(b"crowded").await.unwrap().versions.len(),
        SIBLING_CAP
    );
}

#[tokio::test]
async fn collapsed_siblings_are_counted_in_metrics() {
    const EXTRA: usize = 8;
    let node = start(&[]).await;
    overfill_siblings(&node, "crowded", EXTRA).await;
    assert_eq!(node.values("crowded").await.len(), SIBLING_CAP);
    let metrics = scrape(&node.server.metrics);
    assert_eq!(
        metrics.get("ringkv_siblings_collapsed_total"),
        Some(&(EXTRA as f64)),
        "every collapsed sibling is counted"
    );
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn local_get_shows_stored_versions_and_tombstones() {
    let node = start(&[]).await;
    let id = node.node_status().await.node_id;

    let absent = node.local_get(b"k").await.unwrap();
    assert!(!absent.found);
    assert!(absent.versions.is_empty());

    node.put(put_req("k", "v")).await.unwrap();
    let copy = node.local_get(b"k").await.unwrap();
    assert!(copy.found);
    assert_eq!(
        copy.partition, absent.partition,
        "a key's partition never changes"
    );
    assert!(copy.partition < 256);
    assert_eq!(copy.versions.len(), 1);
    let v = &copy.versions[0];
    assert_eq!(v.node, id);
    assert!(v.counter >= 1);
    assert!(!v.tombstone);
    assert_eq!(v.value.as_ref(), b"v");
    assert!(!copy.context.is_empty());

    node.delete(del_req("k")).await.unwrap();
    let copy = node.local_get(b"k").await.unwrap();
    assert!(copy.found, "the tombstone is stored");
    assert_eq!(copy.versions.len(), 1, "{copy:?}");
    let t = &copy.versions[0];
    assert!(t.tombstone);
    assert!(t.value.is_empty());
    assert_eq!(t.node, id);
    assert!(
        t.counter > v.counter,
        "the tombstone's dot follows the value's"
    );
}

#[tokio::test]
async fn node_status_describes_the_node() {
    let mut node = start(&[]).await;
    let status = node.node_status().await;
    assert_eq!(status.node_id.len(), 16, "{status:?}");
    assert!(
        status.node_id.chars().all(|c| c.is_ascii_hexdigit()),
        "node id {:?} is not hex",
        status.node_id
    );
    assert_eq!(status.storage_engine, "rocksdb");
    assert_eq!(status.partitions, 256);
    assert_eq!(status.replication, 3);
    assert_eq!(status.address, node.server.grpc);
    let port = node.server.grpc.rsplit(':').next().unwrap();
    assert_eq!(status.name, format!("test-{port}"));
    assert!(status.generation >= 1);

    // The id is permanent; the generation counts starts.
    node.server.restart().await.unwrap();
    node.admin = AdminClient::new(connect(&node.server.grpc).await);
    let again = node.node_status().await;
    assert_eq!(again.node_id, status.node_id);
    assert_eq!(again.generation, status.generation + 1);
}

#[tokio::test]
async fn health_service_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let node = start(&[]).await;
    let mut health = HealthClient::new(connect(&node.server.grpc).await);
    for service in ["", "ringkv.v1.KV"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(
            reply.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

/// The metrics page as `name{labels}` → value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_code() {
    let node = start(&[]).await;
    const PUTS: usize = 7;
    for i in 0..PUTS {
        node.put(put_req(format!("m{i}"), "v")).await.unwrap();
    }
    let ok = r#"ringkv_requests_total{op="put",code="OK"}"#;
    let invalid = r#"ringkv_requests_total{op="put",code="INVALID_ARGUMENT"}"#;
    let before = scrape(&node.server.metrics);
    assert_eq!(before.get(ok), Some(&(PUTS as f64)), "{before:#?}");
    assert_eq!(before.get(invalid), None, "{before:#?}");

    assert_invalid(node.put(put_req("m", "")).await, &["value"]);
    let after = scrape(&node.server.metrics);
    assert_eq!(after.get(invalid), Some(&1.0), "{after:#?}");
    assert_eq!(after.get(ok), Some(&(PUTS as f64)));
}

// ---------------------------------------------------------------- engines and load

#[tokio::test]
async fn memory_engine_serves_and_forgets_on_restart() {
    let mut node = start(&["--engine", "memory"]).await;
    assert_eq!(node.node_status().await.storage_engine, "memory");
    node.put(put_req("k", "in memory")).await.unwrap();
    assert_eq!(node.values("k").await, vec!["in memory"]);

    node.server.restart().await.unwrap();
    let channel = connect(&node.server.grpc).await;
    node.kv = KvClient::new(channel.clone());
    node.admin = AdminClient::new(channel);
    assert_eq!(node.node_status().await.storage_engine, "memory");
    assert!(
        !node.get(get_req("k")).await.unwrap().found,
        "the memory engine keeps nothing across restarts"
    );
    assert!(!node.local_get(b"k").await.unwrap().found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_all_succeed_and_one_key_keeps_one_sibling() {
    const KEYS: usize = 200;
    const WRITERS: usize = 50;
    let node = start(&[]).await;

    let tasks: Vec<_> = (0..KEYS)
        .map(|i| {
            let mut kv = node.kv.clone();
            tokio::spawn(async move {
                kv.put(put_req(format!("key-{i}"), format!("value-{i}")))
                    .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .unwrap()
            .unwrap_or_else(|s| panic!("put key-{i}: {s:?}"));
    }

    let tasks: Vec<_> = (0..WRITERS)
        .map(|j| {
            let mut kv = node.kv.clone();
            tokio::spawn(async move { kv.put(put_req("hot", format!("writer-{j}"))).await })
        })
        .collect();
    for (j, t) in tasks.into_iter().enumerate() {
        t.await
            .unwrap()
            .unwrap_or_else(|s| panic!("put hot by writer-{j}: {s:?}"));
    }

    let hot = node.values("hot").await;
    assert_eq!(
        hot.len(),
        1,
        "blind puts to one key must leave one sibling: {hot:?}"
    );
    let writers: Vec<String> = (0..WRITERS).map(|j| format!("writer-{j}")).collect();
    assert!(writers.contains(&hot[0]), "{hot:?}");
    assert_eq!(node.local_get(b"hot").await.unwrap().versions.len(), 1);

    for i in 0..KEYS {
        assert_eq!(
            node.values(&format!("key-{i}")).await,
            vec![format!("value-{i}")]
        );
    }
}
