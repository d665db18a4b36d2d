//! Replica targets: how many of the Q·N partition replicas each member
//! should hold, and the zone rule every partition must obey.
//!
//! # The zone rule
//!
//! Let Z be the number of distinct zones and N the effective replication.
//! Every partition must span `spread = min(Z, N)` distinct zones, and no zone
//! may hold more than `c_z = min(|z|, L)` of one partition's replicas, where
//! L is the smallest level with `Σ_z min(|z|, L) >= N`. With Z >= N this is
//! "N distinct zones" (L = 1); with a single zone it is no rule at all
//! (L = N); in between it is the most even spread the zone sizes allow (two
//! zones and N = 5 give a 3 + 2 split, never 4 + 1). The rule is always
//! satisfiable: the c_z sum to at least N and there are at most N zones to
//! span.
//!
//! Over Q partitions the rule bounds each zone's total: at most Q·c_z, and,
//! when Z <= N (every partition spans every zone), at least Q.
//!
//! # Real-valued targets
//!
//! Weights first share Q·N among zones, `T_z = clamp(λ·W_z, lo_z, hi_z)`
//! with the single λ that makes the T_z sum to Q·N; then each zone shares
//! its T_z among its members, `t_i = min(Q, μ_z·w_i)` (a node holds at most
//! one replica per partition). This is proportional-to-weight with the
//! excess of every capped zone or node redistributed proportionally over the
//! others, which is exactly what a weight means when it cannot be honoured.
//! Both levels are computed by [`fill`] in fixed point (32 fractional bits)
//! with integer arithmetic only, so every node and every platform gets the
//! same numbers bit for bit.
//!
//! # Integer targets
//!
//! The real targets are rounded by largest remainder: everybody gets the
//! floor, and the few leftover units go one each to the members with the
//! largest fractional parts, so the integer targets sum to exactly Q·N and
//! each is within one replica of its real target. Two refinements: zone
//! lower bounds are honoured first, and among members with a non-zero
//! fractional part, those that already held more than the floor in the
//! previous layout are served first. The second keeps rounding from
//! shuffling a unit between two nodes when the cluster changes elsewhere,
//! which would move a replica for nothing.
//!
//! # Slack
//!
//! Meeting every integer target exactly can cost copies: with zones, the
//! replicas a departing node leaves behind may only be refilled from some
//! zones, and hitting each survivor's new target exactly can then take extra
//! swaps. Each member therefore also gets a band, the integers within the
//! design's tolerance of its real target (10 %, or one replica when that is
//! more), that the solver may use to copy less. It does so only when an
//! exact layout would copy noticeably more than the ideal (see `assign`).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::MemberSpec;
use crate::error::{Error, Result};

/// Fractional bits of the fixed-point shares. 32 bits make rounding ties
/// between genuinely different shares practically impossible while every
/// intermediate product stays far below 2^128 (Q·N < 2^21, Σw < 2^42).
const FRACTION_BITS: u32 = 32;
const FRACTION_MASK: u128 = (1 << FRACTION_BITS) - 1;

/// The zone rule for one membership and replication factor.
#[derive(Debug)]
pub(super) struct Topology {
    /// Effective N: replicas per partition.
    pub replication: usize,
    /// Zone index of each member (members in id order).
    pub zone_of: Vec<usize>,
    /// Zones in name order.
    pub zones: Vec<Zone>,
    /// Distinct zones every partition spans: `min(Z, N)`.
    pub spread: usize,
}

#[derive(Debug)]
pub(super) struct Zone {
    /// Member indices in this zone, ascending.
    pub members: Vec<usize>,
    /// c_z: most replicas of one partition this zone may hold.
    pub per_partition: usize,
}

impl Topology {
    pub fn new(members: &[MemberSpec], replication: usize) -> Topology {
        let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            by_name.entry(m.zone.as_str()).or_default().push(i);
        }
        let sizes: Vec<usize> = by_name.values().map(Vec::len).collect();
        // L = N always satisfies the sum (members >= N), so `find` succeeds.
        let level = (1..=replication)
            .find(|&l| sizes.iter().map(|&s| s.min(l)).sum::<usize>() >= replication)
            .unwrap_or(replication);
        let mut zone_of = vec![0; members.len()];
        let zones: Vec<Zone> = by_name
            .into_values()
            .enumerate()
            .map(|(z, members)| {
                for &m in &members {
                    zone_of[m] = z;
                }
                Zone {
                    per_partition: members.len().min(level),
                    members,
                }
            })
            .collect();
        let spread = zones.len().min(replication);
        Topology {
            replication,
            zone_of,
            zones,
            spread,
        }
    }

    /// Replicas of a partition beyond the first of each zone: N - spread.
    pub fn duplicates(&self) -> usize {
        self.replication - self.spread
    }

    /// Least and most replicas zone `z` may hold over `q` partitions.
    pub fn zone_bounds(&self, z: usize, q: u64) -> (u64, u64) {
        let lo = if self.zones.len() <= self.replication {
            q
        } else {
            0
        };
        (lo, q * self.zones[z].per_partition as u64)
    }
}

/// One item of a proportional division with bounds, all in fixed point.
struct Bounds {
    weight: u128,
    lo: u128,
    hi: u128,
}

/// Divides `total` in proportion to the weights, clamping each share to its
/// bounds and re-dividing what the clamps free or consume among the others:
/// the share of item i is `clamp(λ·w_i, lo_i, hi_i)` for the λ that makes the
/// shares sum to `total` (callers guarantee `Σlo <= total <= Σhi`).
///
/// Each round computes the unclamped shares of the free items; if some break
/// their bounds, the side with the larger total violation is clamped (if the
/// overshoot wins, the true λ is no larger than this round's, so those items
/// stay clamped; symmetrically for the undershoot). Every round fixes at
/// least one item, so this ends after at most `items.len()` rounds.
fn fill(total: u128, items: &[Bounds]) -> Vec<u128> {
    let mut fixed: Vec<Option<u128>> = vec![None; items.len()];
    loop {
        let taken: u128 = fixed.iter().flatten().sum();
        let rest = total.saturating_sub(taken);
        let weight: u128 = items
            .iter()
            .zip(&fixed)
            .filter(|(_, f)| f.is_none())
            .map(|(b, _)| b.weight)
            .sum();
        if weight == 0 {
            break;
        }
        let share = |b: &Bounds| rest * b.weight / weight;
        let (mut over, mut under) = (0u128, 0u128);
        for (b, _) in items.iter().zip(&fixed).filter(|(_, f)| f.is_none()) {
            let s = share(b);
            if s > b.hi {
                over += s - b.hi;
            } else if s < b.lo {
                under += b.lo - s;
            }
        }
        let clamp_high = over >= under;
        for (b, f) in items.iter().zip(fixed.iter_mut()) {
            if f.is_some() {
                continue;
            }
            let s = share(b);
            if over == 0 && under == 0 {
                *f = Some(s);
            } else if clamp_high && s > b.hi {
                *f = Some(b.hi);
            } else if !clamp_high && s < b.lo {
                *f = Some(b.lo);
            }
        }
    }
    fixed.into_iter().map(|f| f.unwrap_or(0)).collect()
}

/// Real-valued targets in fixed point (`FRACTION_BITS` fractional bits), by
/// member index.
fn shares(members: &[MemberSpec], topo: &Topology, q: u64) -> Vec<u128> {
    let total = u128::from(q * topo.replication as u64) << FRACTION_BITS;
    let zone_items: Vec<Bounds> = topo
        .zones
        .iter()
        .enumerate()
        .map(|(z, zone)| {
            let (lo, hi) = topo.zone_bounds(z, q);
            Bounds {
                weight: zone
                    .members
                    .iter()
                    .map(|&m| u128::from(members[m].weight))
                    .sum(),
                lo: u128::from(lo) << FRACTION_BITS,
                hi: u128::from(hi) << FRACTION_BITS,
            }
        })
        .collect();
    let zone_shares = fill(total, &zone_items);
    let mut out = vec![0; members.len()];
    for (zone, &zone_share) in topo.zones.iter().zip(&zone_shares) {
        let items: Vec<Bounds> = zone
            .members
            .iter()
            .map(|&m| Bounds {
                weight: u128::from(members[m].weight),
                lo: 0,
                hi: u128::from(q) << FRACTION_BITS,
            })
            .collect();
        for (&m, share) in zone.members.iter().zip(fill(zone_share, &items)) {
            out[m] = share;
        }
    }
    out
}

/// The balance the design promises: every member within this percentage of
/// its real target, or within [`BALANCE_MIN_REPLICAS`] when that is more.
pub(super) const BALANCE_PERCENT: u128 = 10;

/// The least deviation always tolerated: integer counts cannot do better
/// than one replica, which for small targets is more than 10 %.
pub(super) const BALANCE_MIN_REPLICAS: u128 = 1;

/// What each member (by index) should hold.
#[derive(Debug)]
pub(super) struct Targets {
    /// Integer targets: they sum to Q·N, each is within one replica of the
    /// real target, none exceeds Q, and every zone's total lies within
    /// [`Topology::zone_bounds`].
    pub count: Vec<u32>,
    /// The band a member's count may use when that saves copies: the
    /// integers within the design's tolerance of the real target (and never
    /// past `count` or Q), so lo <= count <= hi.
    pub lo: Vec<u32>,
    pub hi: Vec<u32>,
}

/// Computes the [`Targets`]. `previous` holds each member's replica count in
/// the previous layout (zeros when there is none).
pub(super) fn targets(
    members: &[MemberSpec],
    topo: &Topology,
    q: u64,
    previous: &[usize],
) -> Result<Targets> {
    let shares = shares(members, topo, q);
    let count = integer_targets(&shares, topo, q, previous)?;
    let tolerance =
        |s: u128| (s * BALANCE_PERCENT / 100).max(BALANCE_MIN_REPLICAS << FRACTION_BITS);
    let lo = shares
        .iter()
        .zip(&count)
        .map(|(&s, &t)| {
            let lo = (s.saturating_sub(tolerance(s)) + FRACTION_MASK) >> FRACTION_BITS;
            (lo as u32).min(t)
        })
        .collect();
    let hi = shares
        .iter()
        .zip(&count)
        .map(|(&s, &t)| {
            let hi = ((s + tolerance(s)) >> FRACTION_BITS).min(u128::from(q));
            (hi as u32).max(t)
        })
        .collect();
    Ok(Targets { count, lo, hi })
}

fn integer_targets(
    shares: &[u128],
    topo: &Topology,
    q: u64,
    previous: &[usize],
) -> Result<Vec<u32>> {
    let floor: Vec<u64> = shares
        .iter()
        .map(|&s| (s >> FRACTION_BITS) as u64)
        .collect();
    let frac: Vec<u64> = shares.iter().map(|&s| (s & FRACTION_MASK) as u64).collect();
    let total = q * topo.replication as u64;
    let mut target = floor.clone();
    let assigned: u64 = target.iter().sum();
    let mut left = total
        .checked_sub(assigned)
        .ok_or_else(|| internal(format!("shares sum to {assigned} > {total}")))?;

    // Who gets a leftover unit first: previous holders above the floor, then
    // the largest fractional part, then the lowest id (members are in id
    // order, so the index breaks ties).
    let claims = |m: usize| frac[m] > 0 && previous.get(m).copied().unwrap_or(0) as u64 > floor[m];
    let mut rank: Vec<usize> = (0..shares.len()).collect();
    rank.sort_by_key(|&m| (Reverse(claims(m)), Reverse(frac[m]), m));

    let bounds: Vec<(u64, u64)> = (0..topo.zones.len())
        .map(|z| topo.zone_bounds(z, q))
        .collect();
    let mut zone_sum: Vec<u64> = topo
        .zones
        .iter()
        .map(|zone| zone.members.iter().map(|&m| target[m]).sum())
        .collect();
    let mut bumped = vec![false; shares.len()];

    // Pass 1: zones below their lower bound take their units first.
    // Pass 2: largest remainders, within node and zone caps, one unit each.
    // Pass 3: only reachable through fixed-point truncation; any member with
    // room will do, so the sum is always exact. Passes 1 and 3 repeat while
    // they make progress.
    for pass in 1..=3 {
        loop {
            let before = left;
            for &m in &rank {
                let z = topo.zone_of[m];
                let (lo, hi) = bounds[z];
                let eligible = left > 0
                    && target[m] < q
                    && match pass {
                        1 => zone_sum[z] < lo,
                        2 => !bumped[m] && frac[m] > 0 && zone_sum[z] < hi,
                        _ => zone_sum[z] < hi,
                    };
                if eligible {
                    target[m] += 1;
                    zone_sum[z] += 1;
                    bumped[m] = true;
                    left -= 1;
                }
            }
            if left == 0 || left == before || pass == 2 {
                break;
            }
        }
    }
    if left > 0 {
        return Err(internal(format!("cannot apportion {total} replicas")));
    }
    if zone_sum
        .iter()
        .zip(&bounds)
        .any(|(&s, &(lo, hi))| s < lo || s > hi)
    {
        return Err(internal("zone targets out of bounds".to_string()));
    }
    target
        .into_iter()
        .map(|t| u32::try_from(t).map_err(|_| internal(format!("target {t} too large"))))
        .collect()
}

fn internal(msg: String) -> Error {
    Error::Internal(format!("layout: {msg}"))
}

/// The fewest partition replicas any layout within the balance band must
/// copy onto `members` when they held `held` replicas before (index by
/// member): Σ max(0, ⌊share⌋ − held). Used to report how close a plan's
/// copies come to the minimum.
pub(super) fn minimum_copies(
    members: &[MemberSpec],
    replication: usize,
    q: u64,
    held: &[usize],
) -> usize {
    let topo = Topology::new(members, replication);
    shares(members, &topo, q)
        .iter()
        .zip(held)
        .map(|(&share, &had)| ((share >> FRACTION_BITS) as usize).saturating_sub(had))
        .sum()
}
