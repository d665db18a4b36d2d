//! Property tests: the placement laws of the module essay, over random
//! clusters.

use proptest::collection::vec;
use proptest::prelude::*;

use super::tests::{balance_error, check_rules, minimum_moves, reference_targets};
use super::*;

/// Random members: 1..=4 weights (or all 1 when `equal`), zones drawn from
/// `zones` labels (one label: no zones), ids distinct.
fn members(
    nodes: std::ops::RangeInclusive<usize>,
    zones: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<MemberSpec>> {
    (any::<u64>(), zones, any::<bool>())
        .prop_flat_map(move |(seed, zones, equal)| {
            (
                Just(seed),
                Just(equal),
                vec((1u32..=4, 0..zones.max(1)), nodes.clone()),
            )
        })
        .prop_map(|(seed, equal, specs)| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (weight, zone))| MemberSpec {
                    id: NodeId((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed),
                    zone: format!("z{zone}"),
                    weight: if equal { 1 } else { weight },
                })
                .collect()
        })
}

/// The replica counts are the targets: within one replica of the
/// independently computed real-valued share.
fn exact_targets(layout: &Layout) -> std::result::Result<(), String> {
    let real = reference_targets(
        layout.members(),
        layout.replication() as usize,
        layout.partitions() as usize,
    );
    for (id, count) in layout.replica_counts() {
        if (count as f64 - real[&id]).abs() > 1.0 + 1e-6 {
            return Err(format!("{id} holds {count}, target {:.3}", real[&id]));
        }
    }
    Ok(())
}

/// One membership change: remove member `index % len` or add a new one in
/// the zone of member `index % len` with `weight`.
fn change(members: &[MemberSpec], add: bool, index: usize, weight: u32) -> Vec<MemberSpec> {
    let mut out = members.to_vec();
    let i = index % members.len();
    if add {
        let mut id = !members[i].id.0;
        while members.iter().any(|m| m.id.0 == id) {
            id = id.wrapping_add(1);
        }
        out.push(MemberSpec {
            id: NodeId(id),
            zone: members[i].zone.clone(),
            weight,
        });
    } else {
        out.remove(i);
    }
    out
}

fn check_move(before: &Layout, after: &Layout) -> std::result::Result<(), TestCaseError> {
    let moves = after.moves_from(before);
    let minimum = minimum_moves(before, after);
    prop_assert!(
        moves as f64 <= 1.2 * minimum as f64,
        "moved {} replicas, minimum {}",
        moves,
        minimum
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Rules 1, 2, exact targets, preference lists and determinism, over
    /// all shapes including tiny Q and more members than replicas.
    #[test]
    fn layouts_obey_the_rules(
        members in members(1..=20, 1..=6),
        replication in 1u32..=5,
        bits in 0u32..=7,
    ) {
        let q = 1u32 << bits;
        let layout = Layout::compute(&members, replication, q, None).unwrap();
        prop_assert_eq!(layout.replication() as usize, (replication as usize).min(members.len()));
        check_rules(&layout).map_err(TestCaseError::fail)?;
        exact_targets(&layout).map_err(TestCaseError::fail)?;

        let again = Layout::compute(&members, replication, q, None).unwrap();
        prop_assert_eq!(&again, &layout);
        let mut reversed = members.clone();
        reversed.reverse();
        prop_assert_eq!(&Layout::compute(&reversed, replication, q, None).unwrap(), &layout);
    }

    /// Balance: Q = 256, N = 3, 3 to 32 nodes, every member within 10 % (or
    /// one replica) of its capped weight share, with or without zones.
    #[test]
    fn replicas_follow_weights(
        members in members(3..=32, 1..=6),
    ) {
        let layout = Layout::compute(&members, 3, 256, None).unwrap();
        check_rules(&layout).map_err(TestCaseError::fail)?;
        let error = balance_error(&layout);
        prop_assert!(error <= 1.0 + 1e-6, "balance error {} of tolerance", error);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Adding or removing one node moves at most 1.2x the minimum.
    #[test]
    fn one_change_moves_little(
        members in members(3..=31, 1..=5),
        add in any::<bool>(),
        index in any::<usize>(),
        weight in 1u32..=4,
    ) {
        let before = Layout::compute(&members, 3, 256, None).unwrap();
        let changed = change(&members, add, index, weight);
        let after = Layout::compute(&changed, 3, 256, Some(&before)).unwrap();
        check_rules(&after).map_err(TestCaseError::fail)?;
        prop_assert!(balance_error(&after) <= 1.0 + 1e-6);
        check_move(&before, &after)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A history of changes (adds, removals, reweights, zone moves) keeps
    /// every layout valid and balanced, and each add or removal cheap.
    #[test]
    fn histories_stay_valid(
        members in members(3..=16, 1..=5),
        steps in vec((0u8..4, any::<usize>(), 1u32..=4), 1..=5),
    ) {
        let mut members = members;
        let mut layout = Layout::compute(&members, 3, 128, None).unwrap();
        for (kind, index, weight) in steps {
            let i = index % members.len();
            let next = match kind {
                0 => change(&members, true, index, weight),
                1 if members.len() > 1 => change(&members, false, index, weight),
                2 => { let mut m = members.clone(); m[i].weight = weight; m }
                _ => { let mut m = members.clone(); m[i].zone = format!("z{weight}"); m }
            };
            let after = Layout::compute(&next, 3, 128, Some(&layout)).unwrap();
            check_rules(&after).map_err(TestCaseError::fail)?;
            prop_assert!(balance_error(&after) <= 1.0 + 1e-6);
            if kind < 2 {
                check_move(&layout, &after)?;
            }
            prop_assert_eq!(after.version(), layout.version() + 1);
            members = next;
            layout = after;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encoding_round_trips(
        members in members(1..=12, 1..=4),
        replication in 1u32..=4,
        bits in 0u32..=6,
    ) {
        let layout = Layout::compute(&members, replication, 1 << bits, None).unwrap();
        let bytes = layout.encode();
        let decoded = Layout::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &layout);
        prop_assert_eq!(decoded.encode(), bytes);
    }

    /// Truncations and bit flips are errors, never panics or other layouts.
    #[test]
    fn damaged_encodings_are_rejected(
        members in members(1..=8, 1..=3),
        cut in any::<usize>(),
        flip in any::<usize>(),
        bit in 0u8..8,
    ) {
        let bytes = Layout::compute(&members, 3, 16, None).unwrap().encode();
        let cut = cut % bytes.len();
        prop_assert!(Layout::decode(&bytes[..cut]).is_err());
        let mut flipped = bytes.clone();
        flipped[flip % bytes.len()] ^= 1 << bit;
        prop_assert!(matches!(Layout::decode(&flipped), Err(Error::Corrupt(_))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Damage behind a valid checksum reaches the structural checks: they
    /// must reject or accept, never panic, and what they accept must
    /// re-encode to the same bytes.
    #[test]
    fn decode_survives_damage_behind_a_valid_checksum(
        members in members(1..=6, 1..=3),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let bytes = Layout::compute(&members, 3, 8, None).unwrap().encode();
        let mut body = bytes[..bytes.len() - 8].to_vec();
        for (at, value) in edits {
            let at = at % body.len();
            body[at] = value;
        }
        body.truncate(1 + cut % body.len());
        let sum = twox_hash::XxHash3_64::oneshot_with_seed(super::codec::LAYOUT_CHECKSUM_SEED, &body);
        body.extend_from_slice(&sum.to_le_bytes());
        if let Ok(layout) = Layout::decode(&body) {
            prop_assert_eq!(layout.encode(), body);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics(bytes in vec(any::<u8>(), 0..256), format_one in any::<bool>()) {
        let mut bytes = bytes;
        if format_one && !bytes.is_empty() {
            bytes[0] = LAYOUT_FORMAT_VERSION;
        }
        let _ = Layout::decode(&bytes);
    }
}
