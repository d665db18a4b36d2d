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
    members
        .iter()
        .map(|m| &m.zone)
        .collect::<BTreeSet<_>>()
        .len()
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
        |l| {
            bounds
                .iter()
                .map(|&(w, lo, hi)| (l * w).clamp(lo, hi))
                .sum()
        },
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
pub(super) fn largest_remainder(
    real: &BTreeMap<NodeId, f64>,
    total: usize,
) -> BTreeMap<NodeId, usize> {
    let mut out: BTreeMap<NodeId, usize> = real
        .iter()
        .map(|(id, r)| (*id, r.floor() as usize))
        .collect();
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
        if let Some((z, c)) = per_zone
            .iter()
            .find(|(z, &c)| c > zone_sizes[*z].min(level))
        {
            return Err(format!("partition {p}: {c} replicas in zone {z}"));
        }
        let list = layout.preference_list(p);
        let unique: BTreeSet<_> = list.iter().collect();
        if &list[..n] != row || list.len() != layout.members().len() || unique.len() != list.len() {
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
    assert_eq!(
        layout.partitions_of(members[0].id),
        (0..8).collect::<Vec<_>>()
    );
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
    assert_eq!(
        v1.replicas, v2.replicas,
        "even the preference order is kept"
    );
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
    // Weight 10 of 13 is a share of 590 of the 768 replicas, capped at 256
    // (one replica per partition); the other 512 are shared by weight.
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
    assert_eq!(
        layout
            .replica_counts()
            .values()
            .filter(|&&c| c == 0)
            .count(),
        3
    );
    check_rules(&layout).unwrap();
    for p in 0..2 {
        let list = layout.preference_list(p);
        assert_eq!(list.len(), 5);
        assert_eq!(&list[..1], layout.replicas(p));
        assert_eq!(
            list[1],
            layout.replicas(p ^ 1)[0],
            "then the next partition"
        );
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
        assert!(
            peers.len() >= 12,
            "{node} shares partitions with {} nodes",
            peers.len()
        );
    }
}

// ---------------------------------------------------------------- survey

/// Worst values seen by [`survey`].
#[derive(Default)]
struct Worst {
    fresh_balance: f64,
    fresh_relative: f64,
    changed_balance: f64,
    changed_relative: f64,
    ratio: f64,
    changes: usize,
    exact: usize,
}

impl Worst {
    fn fresh(&mut self, layout: &Layout) {
        check_rules(layout).unwrap();
        self.fresh_balance = self.fresh_balance.max(balance_error(layout));
        self.fresh_relative = self.fresh_relative.max(relative_deviation(layout));
    }

    fn change(&mut self, before: &Layout, members: &[MemberSpec]) {
        let after = Layout::compute(members, 3, 256, Some(before)).unwrap();
        check_rules(&after).unwrap();
        self.changed_balance = self.changed_balance.max(balance_error(&after));
        self.changed_relative = self.changed_relative.max(relative_deviation(&after));
        let minimum = minimum_moves(before, &after);
        let moves = after.moves_from(before);
        assert!(
            moves as f64 <= 1.2 * minimum as f64,
            "{moves} moves, minimum {minimum}"
        );
        self.ratio = self.ratio.max(moves as f64 / minimum.max(1) as f64);
        self.changes += 1;
        let fresh = Layout::compute(members, 3, 256, None).unwrap();
        if fresh.replica_counts() == after.replica_counts() {
            self.exact += 1;
        }
    }
}

/// A deterministic sweep over the shapes the design promises (Q = 256,
/// N = 3, 3 to 32 nodes, mixed and equal weights, with and without zones):
/// a structured grid plus pseudo-random clusters, each laid out from scratch
/// and after adding or removing one node. Asserts every property and prints
/// the worst balance and move ratio (`cargo test -- --nocapture survey`).
#[test]
fn survey() {
    let mut worst = Worst::default();
    let weights = |n: usize, seed: u64, equal: bool| -> Vec<u32> {
        (0..n)
            .map(|i| {
                if equal {
                    1
                } else {
                    1 + (super::mix(i, NodeId(seed)) % 4) as u32
                }
            })
            .collect()
    };
    // The grid: every size, five shapes, one removal and one addition each.
    for nodes in 3..=32usize {
        for (shape, zones) in [0usize, 0, 3, 4, 5].into_iter().enumerate() {
            let seed = (shape * 1000 + nodes) as u64;
            let w = weights(nodes, seed, shape == 0);
            let members = cluster(seed, &w, zones);
            let layout = Layout::compute(&members, 3, 256, None).unwrap();
            worst.fresh(&layout);
            if nodes > 3 {
                let mut fewer = members.clone();
                fewer.remove((shape * 7) % nodes);
                worst.change(&layout, &fewer);
            }
            if nodes < 32 {
                let mut more = members.clone();
                more.push(MemberSpec {
                    id: NodeId(u64::MAX - nodes as u64),
                    zone: members[nodes / 2].zone.clone(),
                    weight: 1 + (shape as u32 % 4),
                });
                worst.change(&layout, &more);
            }
        }
    }
    // Pseudo-random clusters: size, zones, weights and the change all drawn
    // from the seed.
    for seed in 0..300u64 {
        let draw = |k: u64, modulo: u64| super::mix(seed as usize, NodeId(k)) % modulo;
        let nodes = 3 + draw(1, 29) as usize;
        let zones = [0, 3, 4, 5, 6][draw(2, 5) as usize];
        let w = weights(nodes, seed + 17, draw(3, 4) == 0);
        let members = cluster(seed, &w, zones);
        let layout = Layout::compute(&members, 3, 256, None).unwrap();
        worst.fresh(&layout);
        let pick = draw(4, nodes as u64) as usize;
        let mut next = members.clone();
        if seed % 2 == 0 {
            next.push(MemberSpec {
                id: NodeId(!members[pick].id.0),
                zone: members[pick].zone.clone(),
                weight: w[pick],
            });
        } else {
            next.remove(pick);
        }
        worst.change(&layout, &next);
    }
    eprintln!(
        "survey, balance as a fraction of the tolerance max(10 %, 1 replica): fresh layouts \
         worst {:.3} (worst relative deviation {:.2} % among targets >= 10); after one change \
         worst {:.3} ({:.2} %), {} of {} changes exactly at target; worst move ratio {:.3}",
        worst.fresh_balance,
        worst.fresh_relative * 100.0,
        worst.changed_balance,
        worst.changed_relative * 100.0,
        worst.exact,
        worst.changes,
        worst.ratio
    );
    assert!(worst.fresh_balance <= 1.0 + 1e-6);
    assert!(worst.changed_balance <= 1.0 + 1e-6);
}

/// Large rings stay valid and cheap to change (a correctness check; timing
/// is for benchmarks).
#[test]
fn large_rings() {
    let w: Vec<u32> = (0..40)
        .map(|i| 1 + (super::mix(i, NodeId(3)) % 4) as u32)
        .collect();
    let members = cluster(11, &w, 5);
    let layout = Layout::compute(&members, 3, 4096, None).unwrap();
    check_rules(&layout).unwrap();
    assert!(balance_error(&layout) <= 1.0 + 1e-6);
    let mut fewer = members.clone();
    fewer.remove(17);
    let after = Layout::compute(&fewer, 3, 4096, Some(&layout)).unwrap();
    check_rules(&after).unwrap();
    assert!(balance_error(&after) <= 1.0 + 1e-6);
    let (moves, minimum) = (after.moves_from(&layout), minimum_moves(&layout, &after));
    assert!(
        moves as f64 <= 1.2 * minimum as f64,
        "{moves} moves, minimum {minimum}"
    );
}
