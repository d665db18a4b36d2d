//! Unit tests and the helpers they share with `proptests`.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

// ---------------------------------------------------------------- helpers

/// A cluster of `weights.len()` members with distinct pseudo-random ids
/// (i ↦ (i+1)·odd is a bijection, so ids never collide) and zones
/// `z0..z{zones-1}` assigned round-robin (one zone when `zones` is 0).
pub(super) fn cluster(seed: u64, weights: &[u32], zones: usize) -> Vec<MemberSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| MemberSpec {
            id: NodeId((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed),
            zone: if zones == 0 {
                "default".to_string()
            } else {
                format!("z{}", i % zones)
            },
            weight,
        })
        .collect()
}

pub(super) fn member(id: u64, zone: &str, weight: u32) -> MemberSpec {
    MemberSpec {
        id: NodeId(id),
        zone: zone.to_string(),
        weight,
    }
}

pub(super) fn zone_count(members: &[MemberSpec]) -> usize {
    members.iter().map(|m| &m.zone).collect::<BTreeSet<_>>().len()
}

/// Finds x in [0, ∞) with f(x) = goal for a nondecreasing f, by bisection.
fn solve_monotone(f: impl Fn(f64) -> f64, goal: f64) -> f64 {
    let mut hi = 1.0;
    while f(hi) < goal && hi < 1e30 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if f(mid) < goal {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Real-valued replica targets computed independently of `targets.rs`
/// (floating point, bisection instead of clamping rounds): the weight share
/// of Q·N, zones clamped to [lo, hi] by the zone rule, nodes capped at Q, the
/// excess redistributed proportionally.
pub(super) fn reference_targets(
    members: &[MemberSpec],
    replication: usize,
    q: usize,
) -> BTreeMap<NodeId, f64> {
    let n = replication.min(members.len());
    let mut zones: BTreeMap<&str, Vec<&MemberSpec>> = BTreeMap::new();
    for m in members {
        zones.entry(&m.zone).or_default().push(m);
    }
    let level = (1..=n)
        .find(|&l| zones.values().map(|z| z.len().min(l)).sum::<usize>() >= n)
        .unwrap();
    let qf = q as f64;
    let bounds: Vec<(f64, f64, f64)> = zones
        .values()
        .map(|z| {
            let weight: f64 = z.iter().map(|m| f64::from(m.weight)).sum();
            let lo = if zones.len() <= n { qf } else { 0.0 };
            (weight, lo, qf * z.len().min(level) as f64)
        })
        .collect();
    let total = qf * n as f64;
    let lambda = solve_monotone(
        |l| bounds.iter().map(|&(w, lo, hi)| (l * w).clamp(lo, hi)).sum(),
        total,
    );
    let mut out = BTreeMap::new();
    for (z, &(w, lo, hi)) in zones.values().zip(&bounds) {
        let zone_total = (lambda * w).clamp(lo, hi);
        let mu = solve_monotone(
            |u| z.iter().map(|m| (u * f64::from(m.weight)).min(qf)).sum(),
            zone_total,
        );
        for m in z {
            out.insert(m.id, (mu * f64::from(m.weight)).min(qf));
        }
    }
    out
}

/// Plain largest-remainder rounding of real targets to integers summing to
/// `total`.
pub(super) fn largest_remainder(real: &BTreeMap<NodeId, f64>, total: usize) -> BTreeMap<NodeId, usize> {
    let mut out: BTreeMap<NodeId, usize> = real.iter().map(|(id, r)| (*id, r.floor() as usize)).collect();
    let mut left = total.saturating_sub(out.values().sum());
    let mut order: Vec<(&NodeId, f64)> = real.iter().map(|(id, r)| (id, r - r.floor())).collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    for (id, _) in order {
        if left == 0 {
            break;
        }
        *out.get_mut(id).unwrap() += 1;
        left -= 1;
    }
    out
}

/// Largest |count - real target| relative to the tolerance
/// max(10 % of the target, 1 replica): at most 1.0 means balanced. The one
/// replica of slack is for small targets, where a single replica is already
/// more than 10 % (and integer counts cannot do better than rounding).
pub(super) fn balance_error(layout: &Layout) -> f64 {
    let real = reference_targets(
        layout.members(),
        layout.replication() as usize,
        layout.partitions() as usize,
    );
    let counts = layout.replica_counts();
    real.iter()
        .map(|(id, &t)| (counts[id] as f64 - t).abs() / (0.1 * t).max(1.0))
        .fold(0.0, f64::max)
}

/// Largest relative deviation |count - target| / target over members with
/// a target of at least 10 replicas (for reporting).
pub(super) fn relative_deviation(layout: &Layout) -> f64 {
    let real = reference_targets(
        layout.members(),
        layout.replication() as usize,
        layout.partitions() as usize,
    );
    let counts = layout.replica_counts();
    real.iter()
        .filter(|(_, &t)| t >= 10.0)
        .map(|(id, &t)| (counts[id] as f64 - t).abs() / t)
        .fold(0.0, f64::max)
}

/// The least number of replicas any balanced layout must copy when going
/// from `before` to the membership of `after`: Σ max(0, target_i - held_i)
/// with largest-remainder targets, and never less than the structural
/// minimum (a removed node's replicas, an added node's whole target floor).
pub(super) fn minimum_moves(before: &Layout, after: &Layout) -> usize {
    let q = after.partitions() as usize;
    let n = after.replication() as usize;
    let real = reference_targets(after.members(), n, q);
    let targets = largest_remainder(&real, q * n);
    let held = before.replica_counts();
    let by_targets: usize = targets
        .iter()
        .map(|(id, &t)| t.saturating_sub(held.get(id).copied().unwrap_or(0)))
        .sum();
    let removed: usize = held
        .iter()
        .filter(|(id, _)| !after.contains(**id))
        .map(|(_, &c)| c)
        .sum();
    let added: usize = real
        .iter()
        .filter(|(id, _)| !before.contains(**id))
        .map(|(_, &t)| t.floor() as usize)
        .sum();
    by_targets.max(removed).max(added)
}

/// Checks rules 1 and 2 and the preference lists; returns the first
/// violation.
pub(super) fn check_rules(layout: &Layout) -> std::result::Result<(), String> {
    let n = layout.replication() as usize;
    let zones_of: BTreeMap<NodeId, &str> = layout
        .members()
        .iter()
        .map(|m| (m.id, m.zone.as_str()))
        .collect();
    let zone_total = zone_count(layout.members());
    let mut zone_sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for m in layout.members() {
        *zone_sizes.entry(&m.zone).or_default() += 1;
    }
    let level = (1..=n)
        .find(|&l| zone_sizes.values().map(|&s| s.min(l)).sum::<usize>() >= n)
        .unwrap();
    for p in 0..layout.partitions() {
        let row = layout.replicas(p);
        let distinct: BTreeSet<_> = row.iter().collect();
        if row.len() != n || distinct.len() != n {
            return Err(format!("partition {p}: {row:?} is not {n} distinct nodes"));
        }
        if let Some(id) = row.iter().find(|id| !layout.contains(**id)) {
            return Err(format!("partition {p}: {id} is not a member"));
        }
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for id in row {
            *per_zone.entry(zones_of[id]).or_default() += 1;
        }
        if per_zone.len() != zone_total.min(n) {
            return Err(format!("partition {p}: spans {} zones", per_zone.len()));
        }
        if let Some((z, c)) = per_zone.iter().find(|(z, &c)| c > zone_sizes[*z].min(level)) {
            return Err(format!("partition {p}: {c} replicas in zone {z}"));
        }
        let list = layout.preference_list(p);
        let unique: BTreeSet<_> = list.iter().collect();
        if &list[..n] != row || list.len() != layout.members().len() || unique.len() != list.len()
        {
            return Err(format!("partition {p}: bad preference list {list:?}"));
        }
    }
    Ok(())
}

fn equal(count: usize) -> Vec<MemberSpec> {
    cluster(7, &vec![1; count], 0)
}

// ---------------------------------------------------------------- units

#[test]
fn a_single_node_holds_everything() {
    let members = equal(1);
    let layout = Layout::compute(&members, 3, 8, None).unwrap();
    assert_eq!(layout.replication(), 1);
    assert_eq!(layout.version(), 1);
    for p in 0..8 {
        assert_eq!(layout.replicas(p), &[members[0].id]);
    }
    assert_eq!(layout.partitions_of(members[0].id), (0..8).collect::<Vec<_>>());
}

#[test]
fn impossible_inputs_are_rejected() {
    let members = equal(3);
    let invalid = |r: Result<Layout>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(Layout::compute(&[], 3, 256, None)));
    assert!(invalid(Layout::compute(&members, 3, 0, None)));
    assert!(invalid(Layout::compute(&members, 3, 100, None)));
    assert!(invalid(Layout::compute(&members, 3, 1 << 17, None)));
    assert!(invalid(Layout::compute(&members, 0, 256, None)));
    assert!(invalid(Layout::compute(&members, 17, 256, None)));
    let twice = vec![members[0].clone(), members[1].clone(), members[0].clone()];
    assert!(invalid(Layout::compute(&twice, 3, 256, None)));
    let mut zero = members.clone();
    zero[1].weight = 0;
    assert!(invalid(Layout::compute(&zero, 3, 256, None)));
    let mut long = members.clone();
    long[0].zone = "z".repeat(MAX_ZONE_LEN + 1);
    assert!(invalid(Layout::compute(&long, 3, 256, None)));
    let many = cluster(1, &vec![1; MAX_LAYOUT_MEMBERS + 1], 0);
    assert!(invalid(Layout::compute(&many, 3, 256, None)));

    let previous = Layout::compute(&members, 3, 256, None).unwrap();
    assert!(matches!(
        Layout::compute(&members, 3, 512, Some(&previous)),
        Err(Error::FailedPrecondition(_))
    ));
}

#[test]
fn versions_increase_and_nothing_moves_without_a_change() {
    let members = cluster(3, &[1, 2, 3, 1, 2], 2);
    let v1 = Layout::compute(&members, 3, 64, None).unwrap();
    let v2 = Layout::compute(&members, 3, 64, Some(&v1)).unwrap();
    assert_eq!((v1.version(), v2.version()), (1, 2));
    assert_eq!(v2.moves_from(&v1), 0);
    assert_eq!(v1.replicas, v2.replicas, "even the preference order is kept");
}

#[test]
fn three_nodes_three_replicas_everyone_everywhere() {
    let layout = Layout::compute(&equal(3), 3, 16, None).unwrap();
    check_rules(&layout).unwrap();
    assert!(layout.replica_counts().values().all(|&c| c == 16));
}

#[test]
fn zones_are_distinct_while_there_are_enough() {
    // Zone z0 has one node: it must hold every partition.
    let members = vec![
        member(1, "a", 1),
        member(2, "b", 1),
        member(3, "b", 1),
        member(4, "c", 1),
        member(5, "c", 3),
        member(6, "c", 1),
    ];
    let layout = Layout::compute(&members, 3, 256, None).unwrap();
    check_rules(&layout).unwrap();
    let counts = layout.replica_counts();
    assert_eq!(counts[&NodeId(1)], 256);
    assert_eq!((counts[&NodeId(2)], counts[&NodeId(3)]), (128, 128));
    assert_eq!(counts[&NodeId(5)], 154, "3/5 of zone c's 256");
}

#[test]
fn fewer_zones_than_replicas_span_every_zone() {
    // Two zones, N = 3: every partition has the lone node of zone a.
    let members = vec![
        member(1, "a", 1),
        member(2, "b", 4),
        member(3, "b", 4),
        member(4, "b", 4),
    ];
    let layout = Layout::compute(&members, 3, 64, None).unwrap();
    check_rules(&layout).unwrap();
    assert_eq!(layout.partitions_of(NodeId(1)).len(), 64);

    // Two zones of three, N = 5: always a 3 + 2 split, never 4 + 1.
    let members: Vec<MemberSpec> = (1..=6)
        .map(|i| member(i, if i <= 3 { "a" } else { "b" }, 1))
        .collect();
    let layout = Layout::compute(&members, 5, 64, None).unwrap();
    check_rules(&layout).unwrap();
}

#[test]
fn weights_and_caps_shape_the_targets() {
    // Weight 10 of 13 would be 231 of 256·N=1 ... with N = 3 the share is
    // 590, capped at 256 (one replica per partition); the rest is shared
    // by weight.
    let members = vec![
        member(1, "x", 10),
        member(2, "x", 1),
        member(3, "x", 1),
        member(4, "x", 1),
    ];
    let layout = Layout::compute(&members, 3, 256, None).unwrap();
    let counts = layout.replica_counts();
    assert_eq!(counts[&NodeId(1)], 256);
    assert_eq!(
        (counts[&NodeId(2)], counts[&NodeId(3)], counts[&NodeId(4)]),
        (171, 171, 170)
    );
}

#[test]
fn members_without_replicas_still_appear_as_fallbacks() {
    let members = equal(5);
    let layout = Layout::compute(&members, 1, 2, None).unwrap();
    assert_eq!(layout.replica_counts().values().filter(|&&c| c == 0).count(), 3);
    check_rules(&layout).unwrap();
    for p in 0..2 {
        let list = layout.preference_list(p);
        assert_eq!(list.len(), 5);
        assert_eq!(&list[..1], layout.replicas(p));
        assert_eq!(list[1], layout.replicas(p ^ 1)[0], "then the next partition");
    }
}

#[test]
fn out_of_range_partitions_are_empty() {
    let layout = Layout::compute(&equal(4), 3, 8, None).unwrap();
    assert!(layout.replicas(8).is_empty());
    assert!(layout.replicas(u32::MAX).is_empty());
    assert!(layout.preference_list(8).is_empty());
    assert!(layout.partitions_of(NodeId(12345)).is_empty());
    assert!(!layout.contains(NodeId(12345)));
}

#[test]
fn adding_and_removing_a_node_moves_only_its_share() {
    let members = equal(4);
    let before = Layout::compute(&members, 3, 256, None).unwrap();
    let mut grown = members.clone();
    grown.push(member(99, "default", 1));
    let after = Layout::compute(&grown, 3, 256, Some(&before)).unwrap();
    let added = after.replica_counts()[&NodeId(99)];
    assert!((153..=154).contains(&added));
    assert_eq!(after.moves_from(&before), added);

    let shrunk: Vec<MemberSpec> = grown[1..].to_vec();
    let last = Layout::compute(&shrunk, 3, 256, Some(&after)).unwrap();
    let removed = after.replica_counts()[&grown[0].id];
    assert_eq!(last.moves_from(&after), removed);
    check_rules(&last).unwrap();
}

#[test]
fn coordinators_are_balanced() {
    let layout = Layout::compute(&equal(8), 3, 256, None).unwrap();
    let mut first: BTreeMap<NodeId, usize> = BTreeMap::new();
    for p in 0..256 {
        *first.entry(layout.replicas(p)[0]).or_default() += 1;
    }
    assert_eq!(first.len(), 8);
    assert!(first.values().all(|&c| (31..=33).contains(&c)), "{first:?}");
}

#[test]
fn co_replicas_are_spread() {
    // With 16 equal nodes each node shares partitions with many others, so
    // re-replicating a failed node's data is spread over the cluster.
    let layout = Layout::compute(&equal(16), 3, 256, None).unwrap();
    for node in layout.members().iter().map(|m| m.id) {
        let peers: BTreeSet<NodeId> = layout
            .partitions_of(node)
            .into_iter()
            .flat_map(|p| layout.replicas(p).to_vec())
            .filter(|&id| id != node)
            .collect();
        assert!(peers.len() >= 12, "{node} shares partitions with {} nodes", peers.len());
    }
}

// ---------------------------------------------------------------- codec

#[test]
fn encoding_round_trips() {
    let layout = Layout::compute(&cluster(5, &[1, 2, 3, 4, 1, 1], 3), 3, 64, None).unwrap();
    let bytes = layout.encode();
    assert_eq!(bytes[0], LAYOUT_FORMAT_VERSION);
    let decoded = Layout::decode(&bytes).unwrap();
    assert_eq!(decoded, layout);
    assert_eq!(decoded.encode(), bytes);
}

fn is_corrupt(r: Result<Layout>) -> bool {
    matches!(r, Err(Error::Corrupt(_)))
}

#[test]
fn decode_rejects_damaged_bytes() {
    let bytes = Layout::compute(&equal(4), 2, 8, None).unwrap().encode();
    assert!(is_corrupt(Layout::decode(&[])));
    for len in 0..bytes.len() {
        assert!(is_corrupt(Layout::decode(&bytes[..len])), "prefix of {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(is_corrupt(Layout::decode(&longer)));
    let mut format = bytes.clone();
    format[0] = 2;
    assert!(is_corrupt(Layout::decode(&format)));
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x10;
        assert!(is_corrupt(Layout::decode(&flipped)), "flip at {i}");
    }
}

/// Encodes a layout by hand with a valid checksum, so the structural
/// checks behind the checksum are exercised.
fn raw(
    version: u64,
    q: u64,
    n: u64,
    members: &[(u64, u64, &[u8])],
    rows: &[u64],
) -> Vec<u8> {
    let mut out = vec![LAYOUT_FORMAT_VERSION];
    for v in [version, q, n, members.len() as u64] {
        codec_varint(&mut out, v);
    }
    for (id, weight, zone) in members {
        out.extend_from_slice(&id.to_le_bytes());
        codec_varint(&mut out, *weight);
        codec_varint(&mut out, zone.len() as u64);
        out.extend_from_slice(zone);
    }
    for &r in rows {
        codec_varint(&mut out, r);
    }
    let sum = twox_hash::XxHash3_64::oneshot_with_seed(0x7269_6e67_6b76_6c79, &out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn codec_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[test]
fn decode_checks_the_invariants() {
    let two: &[(u64, u64, &[u8])] = &[(1, 1, b"a"), (2, 1, b"b")];
    let good = raw(1, 2, 2, two, &[0, 1, 1, 0]);
    let layout = Layout::decode(&good).unwrap();
    assert_eq!(layout.replicas(1), &[NodeId(2), NodeId(1)]);
    assert_eq!(layout.encode(), good);

    let bad = [
        raw(0, 2, 2, two, &[0, 1, 1, 0]),                        // version 0
        raw(1, 3, 2, two, &[0, 1, 1, 0, 0, 1]),                  // Q not a power of two
        raw(1, 0, 2, two, &[]),                                  // Q = 0
        raw(1, 2, 3, two, &[0, 1, 0, 1, 0, 1]),                  // N > members
        raw(1, 2, 0, two, &[]),                                  // N = 0
        raw(1, 2, 2, two, &[0, 0, 1, 0]),                        // duplicate replica
        raw(1, 2, 2, two, &[0, 2, 1, 0]),                        // index out of range
        raw(1, 2, 2, two, &[0, 1, 1]),                           // too few entries
        raw(1, 2, 2, two, &[0, 1, 1, 0, 0]),                     // trailing entry
        raw(1, 2, 2, &[(2, 1, b"a"), (1, 1, b"b")], &[0, 1, 1, 0]), // unsorted
        raw(1, 2, 2, &[(1, 1, b"a"), (1, 1, b"b")], &[0, 1, 1, 0]), // duplicate id
        raw(1, 2, 2, &[(1, 0, b"a"), (2, 1, b"b")], &[0, 1, 1, 0]), // weight 0
        raw(1, 2, 2, &[(1, 1 << 32, b"a"), (2, 1, b"b")], &[0, 1, 1, 0]), // weight > u32
        raw(1, 2, 2, &[(1, 1, b"\xff"), (2, 1, b"b")], &[0, 1, 1, 0]), // not UTF-8
        raw(1, 2, 17, two, &[]),                                 // N > max
        raw(1, 1 << 17, 1, two, &[]),                            // Q > max
    ];
    for (i, bytes) in bad.iter().enumerate() {
        assert!(is_corrupt(Layout::decode(bytes)), "case {i}");
    }
    // A non-minimal varint (version 1 as 0x81 0x00).
    let mut bytes = vec![LAYOUT_FORMAT_VERSION, 0x81, 0x00];
    bytes.extend_from_slice(&good[2..good.len() - 8]);
    let sum = twox_hash::XxHash3_64::oneshot_with_seed(0x7269_6e67_6b76_6c79, &bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    assert!(is_corrupt(Layout::decode(&bytes)));
}

// ---------------------------------------------------------------- survey

/// A deterministic sweep over the shapes the design promises (Q = 256,
/// N = 3, 3 to 32 nodes, mixed and equal weights, with and without zones):
/// checks every property and prints the worst balance deviation and move
/// ratio (`cargo test -- --nocapture survey`).
#[test]
fn survey() {
    let mut worst_balance: f64 = 0.0;
    let mut worst_relative: f64 = 0.0;
    let mut worst_ratio: f64 = 0.0;
    let mut cases = 0;
    for nodes in 3..=32usize {
        for (w, zones) in [(0u64, 0usize), (1, 0), (2, 3), (3, 4), (4, 5)] {
            let weights: Vec<u32> = (0..nodes)
                .map(|i| if w == 0 { 1 } else { 1 + (super::mix(i, NodeId(w)) % 4) as u32 })
                .collect();
            let members = cluster(w * 1000 + nodes as u64, &weights, zones);
            let layout = Layout::compute(&members, 3, 256, None).unwrap();
            check_rules(&layout).unwrap();
            worst_balance = worst_balance.max(balance_error(&layout));
            worst_relative = worst_relative.max(relative_deviation(&layout));
            // Remove one node, and add one.
            if nodes > 3 {
                let gone = (w as usize * 7) % nodes;
                let mut fewer = members.clone();
                fewer.remove(gone);
                if zones == 0 || zone_count(&fewer) >= 3 {
                    let after = Layout::compute(&fewer, 3, 256, Some(&layout)).unwrap();
                    check_rules(&after).unwrap();
                    let ratio = after.moves_from(&layout) as f64
                        / minimum_moves(&layout, &after).max(1) as f64;
                    if ratio > 1.2 { eprintln!("remove nodes={nodes} w={w} zones={zones} moves={} min={}", after.moves_from(&layout), minimum_moves(&layout, &after)); }
                    worst_ratio = worst_ratio.max(ratio);
                    worst_balance = worst_balance.max(balance_error(&after));
                }
            }
            if nodes < 32 {
                let mut more = members.clone();
                more.push(MemberSpec {
                    id: NodeId(u64::MAX - nodes as u64),
                    zone: members[nodes / 2].zone.clone(),
                    weight: 1 + (w as u32 % 4),
                });
                let after = Layout::compute(&more, 3, 256, Some(&layout)).unwrap();
                check_rules(&after).unwrap();
                let ratio = after.moves_from(&layout) as f64
                    / minimum_moves(&layout, &after).max(1) as f64;
                if ratio > 1.2 { eprintln!("add nodes={nodes} w={w} zones={zones} moves={} min={}", after.moves_from(&layout), minimum_moves(&layout, &after)); }
                worst_ratio = worst_ratio.max(ratio);
                worst_balance = worst_balance.max(balance_error(&after));
            }
            cases += 1;
        }
    }
    eprintln!(
        "survey: {cases} clusters; worst balance error {worst_balance:.3} of tolerance \
         (worst relative deviation {:.2}% for targets >= 10); worst move ratio {worst_ratio:.3}",
        worst_relative * 100.0
    );
    assert!(worst_balance <= 1.0 + 1e-9);
    assert!(worst_ratio <= 1.2);
}
