//! The messages nodes send each other, as Rust types. Version sets travel
//! in their stored encoding, so a replica merges exactly what the sender
//! holds and a write sent to several replicas is encoded once.

use bytes::Bytes;

use ringkv_core::membership::state::{Digest, MemberInfo};
pub use ringkv_core::merkle::MerkleSummary;
use ringkv_core::ring::ClusterId;
use ringkv_core::version::NodeId;

/// Who a message is for: a member by id, or (gossip only) a seed address
/// whose node id is not known yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Node(NodeId),
    Seed(String),
}

/// Who sent a message, as the receiver sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The sending node, when it said.
    pub from: Option<NodeId>,
    /// The node the message is meant for: a different node now answering
    /// at that address (a wiped node back with a new id) refuses it.
    pub to: Option<NodeId>,
    /// The sender's cluster id, once it knows it.
    pub cluster: Option<ClusterId>,
}

/// A request from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Merge a key's version set into the replica's own copy.
    Replicate { key: Bytes, versions: Bytes },
    /// Keep a key's version set as a hint for `target`: the receiver is a
    /// fallback for a replica that could not take the write.
    StoreHint {
        key: Bytes,
        versions: Bytes,
        target: NodeId,
    },
    /// The replica's stored version set of a key.
    Read { key: Bytes },
    /// One gossip exchange.
    Gossip(Gossip),
    /// The receiver's current layout.
    GetLayout,
    /// The Merkle leaves of one partition (anti-entropy).
    MerkleLeaves { partition: u32 },
    /// (key, digest) pairs: first each of `keys` in order, then every key
    /// of the chosen `leaves` of `partition`.
    KeyDigests {
        partition: u32,
        leaves: Vec<u32>,
        keys: Vec<Bytes>,
    },
    /// Purge these fully replicated tombstones, each only if its digest
    /// still matches.
    Purge { keys: Vec<KeyDigest> },
    /// The next chunk of a partition, after key `after` (transfers).
    FetchPartition {
        partition: u32,
        after: Option<Bytes>,
        max_bytes: usize,
    },
    /// Merge the sender's client-token table (encoded) and answer with
    /// the receiver's when they differ.
    SyncTokens(Bytes),
}

impl Request {
    /// The operation's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Replicate { .. } | Request::StoreHint { .. } => "replicate",
            Request::Read { .. } => "local_read",
            Request::Gossip(_) => "gossip",
            Request::GetLayout => "get_layout",
            Request::MerkleLeaves { .. } => "merkle_leaves",
            Request::KeyDigests { .. } => "key_digests",
            Request::Purge { .. } => "purge",
            Request::FetchPartition { .. } => "fetch_partition",
            Request::SyncTokens(_) => "sync_tokens",
        }
    }

    /// Payload bytes the request carries (keys and versions), for batching.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Request::Replicate { key, versions } | Request::StoreHint { key, versions, .. } => {
                key.len() + versions.len()
            }
            Request::Read { key } => key.len(),
            _ => 0,
        }
    }
}

/// The answer to a [`Request`], variant for variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Replicate, StoreHint: done.
    Done,
    /// Read: the stored version set (encoded), if any.
    Read(Option<Bytes>),
    Gossip(GossipAnswer),
    /// GetLayout: the encoded layout, if the receiver has one.
    Layout(Option<Bytes>),
    MerkleLeaves(MerkleSummary),
    KeyDigests(Vec<KeyDigest>),
    /// Purge: how many tombstones were purged.
    Purged(u32),
    FetchPartition(Chunk),
    /// SyncTokens: the receiver's table (encoded) when it differs from
    /// the sender's.
    Tokens(Option<Bytes>),
}

impl Response {
    /// The response's kind, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Done => "done",
            Response::Read(_) => "read",
            Response::Gossip(_) => "gossip",
            Response::Layout(_) => "layout",
            Response::MerkleLeaves(_) => "merkle_leaves",
            Response::KeyDigests(_) => "key_digests",
            Response::Purged(_) => "purged",
            Response::FetchPartition(_) => "fetch_partition",
            Response::Tokens(_) => "tokens",
        }
    }

    /// Payload bytes the answer carries, to keep a batch's answer within
    /// one message.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Response::Read(Some(versions)) => versions.len(),
            _ => 0,
        }
    }
}

/// A gossip message: the sender's digests of what it knows and the member
/// entries it sends (always its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gossip {
    pub cluster_name: String,
    pub digests: Vec<Digest>,
    pub entries: Vec<MemberInfo>,
}

/// The answer to a gossip message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipAnswer {
    /// Entries the sender lacks.
    pub entries: Vec<MemberInfo>,
    /// Members whose entries the receiver wants from the sender.
    pub wanted: Vec<NodeId>,
    /// The answering node's cluster id, so the sender can refuse an answer
    /// from another cluster.
    pub cluster: Option<ClusterId>,
}

/// One key and the digest of its stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDigest {
    pub key: Bytes,
    pub digest: u64,
}

/// One chunk of a partition sent to a node taking it over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// (key, encoded version set) in key order.
    pub entries: Vec<(Bytes, Bytes)>,
    /// Whether this is the partition's last chunk.
    pub done: bool,
    /// The sender's estimate of the partition's size, for progress.
    pub estimated_bytes: u64,
}
