//! Peer messages of the `Internal` service, as the server receives them:
//! batch items (`BatchRequest`, converted by `api::item_request`, with the
//! replicate and hint requests inside) and the answers a node reads from
//! its peers (`FetchPartitionResponse`, `MerkleLeavesResponse`,
//! `KeyDigestsResponse`, `GetLayoutResponse`), each prost-decoded and then
//! converted and decoded further as the node does.
//!
//! Asserts: an item without an operation is refused with
//! `INVALID_ARGUMENT`; a replicate item without a hint target becomes a
//! `Replicate` of the same key and bytes; one with a target becomes a
//! `StoreHint` for exactly that id, or `INVALID_ARGUMENT` when the target
//! is not a node id; a read becomes a `Read` of the same key. The version
//! sets carried (items, transfer chunks) decode into sets that re-encode
//! to the same bytes, or are `Corrupt`; a layout answer decodes into a
//! layout that re-encodes to the same bytes, or is `Corrupt`; conversions
//! of chunks, Merkle summaries and key digests keep every entry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringkv_core::error::Error;
use ringkv_core::ring::Layout;
use ringkv_core::version::{NodeId, VersionSet};
use ringkv_peer::Request;
use ringkv_proto::v1 as pb;
use ringkv_server::api::item_request;
use ringkv_server::transport::convert;
use tonic::Code;

/// What a node does with received version set bytes before it merges them.
fn check_versions(bytes: &[u8]) {
    match VersionSet::decode(bytes) {
        Ok(set) => assert_eq!(set.encode(), bytes, "re-encoding changed the bytes"),
        Err(Error::Corrupt(_)) => {}
        Err(other) => panic!("bad versions must be Corrupt, not {other:?}"),
    }
}

fn check_item(item: pb::BatchItem) {
    let converted = item_request(item.clone());
    match (item.op, converted) {
        (None, Err(refused)) => assert_eq!(refused.code(), Code::InvalidArgument),
        (Some(pb::batch_item::Op::Read(read)), Ok(Request::Read { key })) => {
            assert_eq!(key, read.key);
        }
        (Some(pb::batch_item::Op::Replicate(raw)), Ok(Request::Replicate { key, versions })) => {
            assert!(raw.hint_for.is_empty());
            assert_eq!((key, &versions), (raw.key, &raw.version_set));
            check_versions(&versions);
        }
        (
            Some(pb::batch_item::Op::Replicate(raw)),
            Ok(Request::StoreHint {
                key,
                versions,
                target,
            }),
        ) => {
            assert_eq!(raw.hint_for.parse::<NodeId>().ok(), Some(target));
            assert_eq!((key, &versions), (raw.key, &raw.version_set));
            check_versions(&versions);
        }
        (Some(pb::batch_item::Op::Replicate(raw)), Err(refused)) => {
            assert!(raw.hint_for.parse::<NodeId>().is_err());
            assert_eq!(refused.code(), Code::InvalidArgument);
        }
        (op, converted) => panic!("{op:?} converted to {converted:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = pb::BatchRequest::decode(data) {
        for item in batch.items {
            check_item(item);
        }
    }
    if let Ok(chunk) = pb::FetchPartitionResponse::decode(data) {
        let converted = convert::chunk_from_proto(chunk.clone());
        assert_eq!(converted.entries.len(), chunk.entries.len());
        assert_eq!(convert::chunk_to_proto(converted.clone()), chunk);
        for (_, versions) in &converted.entries {
            check_versions(versions);
        }
    }
    if let Ok(summary) = pb::MerkleLeavesResponse::decode(data) {
        let converted = convert::summary_from_proto(summary.clone());
        assert_eq!(convert::summary_to_proto(converted), summary);
    }
    if let Ok(digests) = pb::KeyDigestsResponse::decode(data) {
        let converted = convert::digests_from_proto(digests.digests.clone());
        assert_eq!(convert::digests_to_proto(converted), digests.digests);
    }
    if let Ok(answer) = pb::GetLayoutResponse::decode(data) {
        if !answer.layout.is_empty() {
            match Layout::decode(&answer.layout) {
                Ok(layout) => assert_eq!(layout.encode(), answer.layout),
                Err(Error::Corrupt(_)) => {}
                Err(other) => panic!("a bad layout must be Corrupt, not {other:?}"),
            }
        }
    }
});
