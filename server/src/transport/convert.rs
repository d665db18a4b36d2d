//! Peer messages to and from their protobuf form.

use bytes::Bytes;
use ringkv_proto::v1 as pb;

use ringkv_core::error::{Error, Result};
use ringkv_core::membership::state::{Digest, MemberInfo};
use ringkv_core::version::NodeId;
use ringkv_peer::{Chunk, Gossip, GossipAnswer, KeyDigest, MerkleSummary};

pub fn entry_to_proto(m: MemberInfo) -> pb::MemberEntry {
    pb::MemberEntry {
        id: m.id.to_string(),
        name: m.name,
        address: m.address,
        peer_address: m.peer_address,
        zone: m.zone,
        weight: m.weight,
        generation: m.generation,
        heartbeat: m.heartbeat,
        status: m.status.to_string(),
        layout_version: m.layout_version,
        transfers_done: m.transfers_done,
        join: m.join.as_str().to_string(),
        storage_bytes: m.storage_bytes,
    }
}

pub fn entry_from_proto(e: pb::MemberEntry) -> Result<MemberInfo> {
    Ok(MemberInfo {
        id: node_id(&e.id)?,
        name: e.name,
        address: e.address,
        peer_address: e.peer_address,
        zone: e.zone,
        weight: e.weight.max(1),
        generation: e.generation,
        heartbeat: e.heartbeat,
        status: e
            .status
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("gossiped status {:?}", e.status)))?,
        layout_version: e.layout_version,
        transfers_done: e.transfers_done,
        join: e
            .join
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("gossiped join mode {:?}", e.join)))?,
        storage_bytes: e.storage_bytes,
    })
}

fn node_id(id: &str) -> Result<NodeId> {
    id.parse()
        .map_err(|_| Error::InvalidArgument(format!("gossiped node id {id:?}")))
}

pub fn gossip_to_proto(g: Gossip) -> pb::GossipRequest {
    pb::GossipRequest {
        cluster_name: g.cluster_name,
        digests: g
            .digests
            .iter()
            .map(|d| pb::MemberDigest {
                id: d.id.to_string(),
                generation: d.generation,
                heartbeat: d.heartbeat,
            })
            .collect(),
        entries: g.entries.into_iter().map(entry_to_proto).collect(),
    }
}

/// A received gossip message. An entry or digest that does not parse
/// refuses the whole message: a correct peer never sends one.
pub fn gossip_from_proto(g: pb::GossipRequest) -> Result<Gossip> {
    Ok(Gossip {
        cluster_name: g.cluster_name,
        digests: g
            .digests
            .iter()
            .map(|d| {
                Ok(Digest {
                    id: node_id(&d.id)?,
                    generation: d.generation,
                    heartbeat: d.heartbeat,
                })
            })
            .collect::<Result<_>>()?,
        entries: g
            .entries
            .into_iter()
            .map(entry_from_proto)
            .collect::<Result<_>>()?,
    })
}

pub fn answer_to_proto(a: GossipAnswer) -> pb::GossipResponse {
    pb::GossipResponse {
        entries: a.entries.into_iter().map(entry_to_proto).collect(),
        wanted: a.wanted.iter().map(|id| id.to_string()).collect(),
    }
}

/// A gossip answer; entries and ids that do not parse are skipped.
pub fn answer_from_proto(a: pb::GossipResponse) -> GossipAnswer {
    GossipAnswer {
        entries: a
            .entries
            .into_iter()
            .filter_map(|e| entry_from_proto(e).ok())
            .collect(),
        wanted: a.wanted.iter().filter_map(|w| w.parse().ok()).collect(),
        cluster: None,
    }
}

pub fn digests_to_proto(digests: Vec<KeyDigest>) -> Vec<pb::KeyDigest> {
    digests
        .into_iter()
        .map(|d| pb::KeyDigest {
            key: d.key,
            digest: d.digest,
        })
        .collect()
}

pub fn digests_from_proto(digests: Vec<pb::KeyDigest>) -> Vec<KeyDigest> {
    digests
        .into_iter()
        .map(|d| KeyDigest {
            key: d.key,
            digest: d.digest,
        })
        .collect()
}

pub fn summary_to_proto(s: MerkleSummary) -> pb::MerkleLeavesResponse {
    pb::MerkleLeavesResponse {
        root: s.root,
        leaves: s.leaves,
        keys: s.keys,
    }
}

pub fn summary_from_proto(s: pb::MerkleLeavesResponse) -> MerkleSummary {
    MerkleSummary {
        root: s.root,
        leaves: s.leaves,
        keys: s.keys,
    }
}

pub fn chunk_to_proto(c: Chunk) -> pb::FetchPartitionResponse {
    pb::FetchPartitionResponse {
        entries: c
            .entries
            .into_iter()
            .map(|(key, version_set)| pb::PartitionEntry { key, version_set })
            .collect(),
        done: c.done,
        estimated_bytes: c.estimated_bytes,
    }
}

pub fn chunk_from_proto(c: pb::FetchPartitionResponse) -> Chunk {
    Chunk {
        entries: c
            .entries
            .into_iter()
            .map(|e| (e.key, e.version_set))
            .collect::<Vec<(Bytes, Bytes)>>(),
        done: c.done,
        estimated_bytes: c.estimated_bytes,
    }
}
