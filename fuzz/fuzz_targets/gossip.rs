//! Gossip from the network: `Internal.Gossip` requests and their answers,
//! prost-decoded, converted by the server's transport
//! (`gossip_from_proto`, `answer_from_proto`), then applied to a
//! membership table (`MembershipState::apply`), as the node does.
//!
//! Asserts: a request converts or is refused as a whole with
//! `InvalidArgument`; a converted one keeps every digest and entry (ids
//! parsed from their text, weight at least 1) and survives the round trip
//! through its proto form unchanged; an answer keeps only the entries and
//! ids that parse. Applying the entries never changes this node's own
//! content, leaves the table within `MAX_MEMBERS` and holds only entries
//! that were sent, and re-applying the table's own entries advances
//! nothing; the deltas and wanted lists computed from
//! the digests stay within their bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringkv_core::error::Error;
use ringkv_core::membership::state::{
    JoinMode, MemberInfo, MembershipState, Status, MAX_ENTRIES_PER_MESSAGE, MAX_MEMBERS,
};
use ringkv_core::version::NodeId;
use ringkv_proto::v1 as pb;
use ringkv_server::transport::convert;

fn me() -> MemberInfo {
    MemberInfo {
        id: NodeId(0x0123_4567_89ab_cdef),
        name: "fuzz".to_string(),
        address: "127.0.0.1:1".to_string(),
        peer_address: String::new(),
        zone: String::new(),
        weight: 1,
        generation: 5,
        heartbeat: 7,
        status: Status::Up,
        layout_version: 1,
        transfers_done: 1,
        join: JoinMode::None,
        storage_bytes: 0,
    }
}

/// The id as gossip writes it: 16 hex digits, either case.
fn same_id(text: &str, id: NodeId) -> bool {
    text.eq_ignore_ascii_case(&id.to_string())
}

fn apply(entries: Vec<MemberInfo>, digests: &[ringkv_core::membership::state::Digest]) {
    let mine = me();
    let mut state = MembershipState::new(mine.clone());
    let advanced = state.apply(entries.clone());
    let me_now = state.me();
    assert_eq!(
        MemberInfo {
            generation: mine.generation,
            heartbeat: mine.heartbeat,
            ..me_now.clone()
        },
        mine,
        "gossip changed my own entry's content"
    );
    assert!(me_now.version() >= mine.version());
    assert!(state.len() <= MAX_MEMBERS);
    for id in &advanced {
        let held = state.get(*id).expect("an advanced entry is held");
        assert!(
            entries.contains(held),
            "the table holds an entry nobody sent"
        );
    }
    let own: Vec<MemberInfo> = state.members().cloned().collect();
    assert!(
        state.apply(own).is_empty(),
        "re-applying the table advanced it"
    );
    assert!(state.deltas_for(digests).len() <= MAX_ENTRIES_PER_MESSAGE);
    let wanted = state.wanted_from(digests);
    assert!(wanted.iter().all(|id| digests.iter().any(|d| d.id == *id)));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = pb::GossipRequest::decode(data) {
        match convert::gossip_from_proto(request.clone()) {
            Ok(gossip) => {
                assert_eq!(gossip.digests.len(), request.digests.len());
                assert_eq!(gossip.entries.len(), request.entries.len());
                for (d, raw) in gossip.digests.iter().zip(&request.digests) {
                    assert!(same_id(&raw.id, d.id));
                }
                for (e, raw) in gossip.entries.iter().zip(&request.entries) {
                    assert!(same_id(&raw.id, e.id));
                    assert_eq!(e.weight, raw.weight.max(1));
                }
                let back = convert::gossip_from_proto(convert::gossip_to_proto(gossip.clone()))
                    .expect("a converted gossip converts again");
                assert_eq!(back, gossip);
                apply(gossip.entries, &gossip.digests);
            }
            Err(Error::InvalidArgument(_)) => {}
            Err(other) => panic!("bad gossip must be InvalidArgument, not {other:?}"),
        }
    }
    if let Ok(response) = pb::GossipResponse::decode(data) {
        let answer = convert::answer_from_proto(response.clone());
        assert!(answer.entries.len() <= response.entries.len());
        assert!(answer.wanted.len() <= response.wanted.len());
        assert!(answer
            .wanted
            .iter()
            .all(|id| response.wanted.iter().any(|w| same_id(w, *id))));
        let back = convert::answer_from_proto(convert::answer_to_proto(answer.clone()));
        assert_eq!(back, answer);
        apply(answer.entries, &[]);
    }
});
