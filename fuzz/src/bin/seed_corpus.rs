//! Writes the committed seed corpora, `fuzz/corpus/<target>/`: a few small
//! valid encodings per target, made by the crates' own encoders, plus
//! edge cases. `scripts/fuzz.sh seeds` runs it; the fuzzer grows its own
//! corpus from these in a scratch copy, never here.
//!
//! Each seed's file name says what it is. Files this program does not
//! write (regression inputs of past crashes, `crash-*`) are left alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use ringkv_core::membership::state::{JoinMode, MemberInfo, Status};
use ringkv_core::ring::{ClusterId, Layout, MemberSpec};
use ringkv_core::version::{NodeId, Timestamp, Value, VersionSet, VersionVector};
use ringkv_fuzz::join_pair;
use ringkv_fuzz::layout_seal::{seal, unseal};
use ringkv_node::handoff::{encode_hint, hint_key};
use ringkv_node::rebalance::encode_ids;
use ringkv_node::rebalance::transfer::Cursor;
use ringkv_proto::v1 as pb;
use ringkv_server::transport::{convert, wire};

// Built by `cargo fuzz build` with the targets' coverage flags (so it
// shares their compiled dependencies), this program links libFuzzer, which
// wants a fuzz entry point. This one is never called: `main` below takes
// the place of libFuzzer's.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

const A: NodeId = NodeId(0xa);
const B: NodeId = NodeId(0x0123_4567_89ab_cdef);
const C: NodeId = NodeId(u64::MAX);

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn target(root: &Path, name: &str) -> Seeds {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create corpus directory");
        Seeds { dir }
    }

    fn put(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.dir.join(name), bytes).expect("write seed");
    }
}

fn vector(entries: &[(NodeId, u64)]) -> VersionVector {
    entries.iter().copied().collect()
}

/// A key's state after a few writes: siblings, a tombstone, an expiry, a
/// value of a few hundred bytes.
fn history() -> Vec<VersionSet> {
    let mut states = vec![VersionSet::new()];
    let mut s = VersionSet::new();
    let empty = VersionVector::new();
    s.write(
        A,
        None,
        Timestamp::new(1_000, 0),
        Value::Data(Bytes::from_static(b"v1")),
        None,
        8,
    );
    states.push(s.clone());
    s.write(
        B,
        Some(&empty),
        Timestamp::new(1_001, 1),
        Value::Tombstone,
        None,
        8,
    );
    states.push(s.clone());
    let ctx = s.context().clone();
    s.write(
        A,
        Some(&ctx),
        Timestamp::new(1_002, 0),
        Value::Data(Bytes::from_static(b"v2")),
        Some(99_000),
        8,
    );
    states.push(s.clone());
    let big = Value::Data(Bytes::from(vec![7u8; 300]));
    s.write(C, Some(&empty), Timestamp(u64::MAX), big, Some(u64::MAX), 8);
    states.push(s);
    states
}

fn members(ids: &[u64]) -> Vec<MemberSpec> {
    ids.iter()
        .map(|&id| MemberSpec {
            id: NodeId(id),
            zone: format!("z{}", id % 3),
            weight: 1 + (id % 2) as u32,
        })
        .collect()
}

/// Layouts in every format: settled, stamped, in transition, both.
fn layouts() -> Vec<(&'static str, Layout)> {
    let v1 = Layout::compute(&members(&[1, 2, 3]), 3, 8, None).expect("v1");
    let v2 = Layout::compute(&members(&[1, 2, 3, 4]), 3, 8, Some(&v1))
        .expect("v2")
        .with_previous(&v1)
        .expect("transition");
    let one = Layout::compute(&members(&[9]), 1, 1, None).expect("one");
    let id = ClusterId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    vec![
        ("settled", v1.clone()),
        ("settled-one-member", one),
        ("stamped", v1.with_cluster_id(id)),
        ("transition", v2.clone()),
        ("stamped-transition", v2.with_cluster_id(id)),
    ]
}

fn member(id: NodeId, generation: u64) -> MemberInfo {
    MemberInfo {
        id,
        name: format!("node-{id}"),
        address: "10.0.0.1:7000".to_string(),
        peer_address: "10.0.0.1:7001".to_string(),
        zone: "z1".to_string(),
        weight: 2,
        generation,
        heartbeat: 42,
        status: Status::Up,
        layout_version: 3,
        transfers_done: 2,
        join: JoinMode::Staged,
        storage_bytes: 1 << 30,
    }
}

fn version_context(root: &Path) {
    let s = Seeds::target(root, "version_context");
    let small = vector(&[(A, 1)]);
    let wide = vector(&[(A, 3), (B, 1 << 40), (C, u64::MAX)]);
    s.put("empty", VersionVector::new().encode_context());
    s.put("one-entry", small.encode_context());
    s.put("three-entries", wide.encode_context());
    s.put(
        "pair-overlapping",
        join_pair(&small.encode_context(), &wide.encode_context()),
    );
    s.put("bad-format", [2, 0]);
    s.put("bad-zero-counter", {
        let mut b = vec![1, 1];
        b.extend_from_slice(&A.0.to_le_bytes());
        b.push(0);
        b
    });
}

fn version_set(root: &Path) {
    let s = Seeds::target(root, "version_set");
    let states = history();
    for (i, state) in states.iter().enumerate() {
        s.put(&format!("history-{i}"), state.encode());
    }
    // Two replicas that diverged: one took a concurrent write.
    let base = &states[2];
    let mut other = base.clone();
    other.write(
        B,
        None,
        Timestamp::new(1_003, 0),
        Value::Data(Bytes::from_static(b"b")),
        None,
        8,
    );
    s.put("pair-diverged", join_pair(&base.encode(), &other.encode()));
    s.put(
        "pair-empty-and-full",
        join_pair(&states[0].encode(), &states[4].encode()),
    );
    let mut truncated = states[3].encode();
    truncated.pop();
    s.put("bad-truncated", truncated);
}

fn layout(root: &Path) {
    let s = Seeds::target(root, "layout");
    for (name, layout) in layouts() {
        let bytes = layout.encode();
        assert_eq!(
            seal(&unseal(&bytes)),
            bytes,
            "{name}: sealing undoes unsealing"
        );
        s.put(&format!("unsealed-{name}"), unseal(&bytes));
        s.put(&format!("sealed-{name}"), bytes);
    }
}

fn hint(root: &Path) {
    let s = Seeds::target(root, "hint");
    let states = history();
    s.put("hint-empty-state", encode_hint(0, &states[0]));
    s.put("hint-siblings", encode_hint(1_700_000_000_000, &states[3]));
    s.put("key", hint_key(B, 7, b"user-key"));
    s.put("key-empty-user-key", hint_key(C, u32::MAX, b""));
}

fn rebalance_meta(root: &Path) {
    let s = Seeds::target(root, "rebalance_meta");
    s.put("cursor-start", Cursor::default().encode());
    let cursor = Cursor {
        after: Some(Bytes::from_static(b"last-key")),
        bytes: 1 << 20,
        keys: 1000,
        streamed: true,
        done: false,
    };
    s.put("cursor-streaming", cursor.encode());
    let done = Cursor {
        done: true,
        ..cursor
    };
    s.put("cursor-done", done.encode());
    let ids: BTreeSet<NodeId> = [A, B, C].into();
    s.put("removed-ids", encode_ids(&ids));
}

fn gossip(root: &Path) {
    let s = Seeds::target(root, "gossip");
    let entries = vec![member(A, 1), member(B, 5)];
    let request = convert::gossip_to_proto(ringkv_peer::Gossip {
        cluster_name: "ringkv".to_string(),
        digests: entries.iter().map(MemberInfo::digest).collect(),
        entries: entries.clone(),
    });
    s.put("request", request.encode_to_vec());
    let answer = convert::answer_to_proto(ringkv_peer::GossipAnswer {
        entries,
        wanted: vec![C],
        cluster: None,
    });
    s.put("answer", answer.encode_to_vec());
}

fn internal_request(root: &Path) {
    let s = Seeds::target(root, "internal_request");
    let state = history()[3].encode();
    let replicate = |hint_for: &str| pb::BatchItem {
        op: Some(pb::batch_item::Op::Replicate(pb::ReplicateRequest {
            key: Bytes::from_static(b"k"),
            version_set: state.clone().into(),
            from: A.to_string(),
            hint_for: hint_for.to_string(),
        })),
    };
    let batch = pb::BatchRequest {
        items: vec![
            replicate(""),
            replicate(&B.to_string()),
            pb::BatchItem {
                op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
                    key: Bytes::from_static(b"k"),
                })),
            },
            pb::BatchItem { op: None },
        ],
        id: 0,
    };
    s.put("batch", batch.encode_to_vec());
    let chunk = pb::FetchPartitionResponse {
        entries: vec![pb::PartitionEntry {
            key: Bytes::from_static(b"k"),
            version_set: state.into(),
        }],
        done: true,
        estimated_bytes: 4096,
    };
    s.put("chunk", chunk.encode_to_vec());
    let (_, layout) = layouts().remove(4);
    let answer = pb::GetLayoutResponse {
        layout: layout.encode().into(),
    };
    s.put("layout", answer.encode_to_vec());
    let summary = pb::MerkleLeavesResponse {
        root: 7,
        leaves: vec![1, 2, 3],
        keys: 3,
    };
    s.put("merkle", summary.encode_to_vec());
}

fn peer_frame(root: &Path) {
    use pb::peer_frame::Kind;
    let s = Seeds::target(root, "peer_frame");
    let frames = |kinds: Vec<Kind>| {
        let mut out = bytes::BytesMut::new();
        for kind in kinds {
            wire::encode(kind, &mut out);
        }
        out.to_vec()
    };
    let hello = Kind::Hello(pb::FrameHello {
        from: A.to_string(),
        to: B.to_string(),
        cluster: ClusterId(0x0123_4567_89ab_cdef_0011_2233_4455_6677).to_string(),
    });
    let batch = Kind::Batch(pb::BatchRequest {
        items: vec![pb::BatchItem {
            op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
                key: Bytes::from_static(b"k"),
            })),
        }],
        id: 3,
    });
    s.put("hello-batch-ping", frames(vec![hello, batch, Kind::Ping(1)]));
    let answer = Kind::Answer(pb::BatchResponse {
        results: vec![pb::BatchResult {
            found: true,
            version_set: history()[3].encode().into(),
            ..Default::default()
        }],
        id: 3,
    });
    s.put(
        "welcome-answer-pong",
        frames(vec![Kind::Welcome(pb::FrameWelcome {}), answer, Kind::Pong(1)]),
    );
    let refused = Kind::Refused(pb::FrameRefusal {
        code: 7,
        message: "refused".into(),
    });
    s.put("refused", frames(vec![refused]));
}

fn kv_request(root: &Path) {
    let s = Seeds::target(root, "kv_request");
    let context = vector(&[(A, 2), (B, 1)]).encode_context();
    let quorum = pb::Consistency {
        required: Some(pb::consistency::Required::Level(pb::Level::Quorum as i32)),
        sloppy: Some(false),
        timeout_ms: Some(250),
    };
    let get = pb::GetRequest {
        key: Bytes::from_static(b"k"),
        consistency: Some(quorum),
        resolve: pb::Resolve::Lww as i32,
    };
    s.put("get", get.encode_to_vec());
    let put = pb::PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"value"),
        context: context.clone().into(),
        consistency: Some(pb::Consistency {
            required: Some(pb::consistency::Required::Count(2)),
            sloppy: None,
            timeout_ms: None,
        }),
        ttl_ms: Some(60_000),
    };
    s.put("put", put.encode_to_vec());
    let delete = pb::DeleteRequest {
        key: Bytes::from_static(b"k"),
        context: context.into(),
        consistency: None,
    };
    s.put("delete", delete.encode_to_vec());
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    version_context(&root);
    version_set(&root);
    layout(&root);
    hint(&root);
    rebalance_meta(&root);
    gossip(&root);
    internal_request(&root);
    peer_frame(&root);
    kv_request(&root);
    println!("seeds written to {}", root.display());
}
