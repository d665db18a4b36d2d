//! Layout balance and data movement at N nodes, with the server's real
//! [`Layout::compute`].
//!
//! For one cluster shape (node count, weights, zones, Q) this lays out the
//! cluster from scratch, then from that layout adds one node, and
//! separately removes one node, each time computing the next layout from
//! the previous one as a plan does. It measures:
//!
//! - **balance**: for every member, `|replicas held − share| / share`,
//!   where `share = Q·N·w / W` is its weight's share of the Q·N partition
//!   replicas (`w` its weight, `W` the sum of all weights). The worst
//!   member is reported. Shares are pure weight shares: the shapes here
//!   keep every zone's weight under `W / N` and every share under Q, so
//!   neither the zone rule nor the one-replica-per-partition cap changes
//!   them (checked by [`Shape::members`]).
//! - **moves**: partition replicas present in the new layout but not in
//!   the old one (`Layout::moves_from`), each one copy of a partition onto
//!   a node, against **the minimum**: the most of (a) the replicas that
//!   members must gain to reach at least the floor of their new share,
//!   `Σ max(0, ⌊share'⌋ − held)`, and (b) the replicas the departed
//!   members held, which must be re-created somewhere. For one node added
//!   that is the new node's `⌊share'⌋`; for one removed, what it held.
//!   It is computed here from the shares, independently of the server's
//!   own `Layout::minimum_moves_from` (the tests check that they agree).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_core::ring::{Layout, MemberSpec};
use ringkv_core::version::NodeId;

/// The replication factor measured: the configuration default.
pub const REPLICATION: u32 = 3;

/// The default `cluster.partitions`.
pub const DEFAULT_PARTITIONS: u32 = 256;

/// Fewest replicas the smallest member should hold for a ±10 % band to be
/// reachable at all: a count is an integer, so a share under 10 replicas
/// cannot always be met within 10 %.
pub const MIN_SHARE: f64 = 10.0;

/// Weights of the mixed-weight shapes, drawn uniformly per node: nodes of
/// one, two and four times a base capacity.
const MIXED_WEIGHTS: [u32; 3] = [1, 2, 4];

/// A cluster shape to lay out.
#[derive(Clone, Debug)]
pub struct Shape {
    pub nodes: usize,
    /// Equal weights (1) or drawn from [`MIXED_WEIGHTS`].
    pub mixed: bool,
    /// Zones assigned round-robin; 1 means no zone rule.
    pub zones: usize,
    /// Q.
    pub partitions: u32,
}

/// What one shape measured.
#[derive(Clone, Debug)]
pub struct LayoutOutcome {
    /// Worst `|held − share| / share` over the members, in % (fresh layout).
    pub deviation_pct: f64,
    /// The smallest share (replicas) of any member.
    pub min_share: f64,
    /// After adding one node: worst deviation, moves, minimum.
    pub add: Change,
    /// After removing one node.
    pub remove: Change,
    /// Time of the fresh computation (for the reader; not asserted).
    pub compute_time: Duration,
}

#[derive(Clone, Debug)]
pub struct Change {
    pub deviation_pct: f64,
    pub moves: usize,
    pub minimum: usize,
    /// What the server's own `Layout::minimum_moves_from` says.
    pub server_minimum: usize,
    pub compute_time: Duration,
}

impl Change {
    /// Moves relative to the minimum (1.0 is optimal).
    pub fn ratio(&self) -> f64 {
        self.moves as f64 / self.minimum.max(1) as f64
    }
}

impl Shape {
    /// The members, ids and weights drawn from `seed`.
    pub fn members(&self, seed: u64) -> Vec<MemberSpec> {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids = super::distinct_ids(self.nodes, &mut rng);
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| MemberSpec {
                id,
                zone: zone_name(i % self.zones.max(1)),
                weight: if self.mixed {
                    MIXED_WEIGHTS[rng.random_range(0..MIXED_WEIGHTS.len())]
                } else {
                    1
                },
            })
            .collect()
    }

    /// The smallest power-of-two Q at which every member of `members` has
    /// a share of at least [`MIN_SHARE`] replicas.
    pub fn suitable_partitions(members: &[MemberSpec]) -> u32 {
        let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
        let lightest = members.iter().map(|m| m.weight).min().unwrap_or(1);
        let needed = MIN_SHARE * total as f64 / (f64::from(REPLICATION) * f64::from(lightest));
        (needed.ceil() as u32).next_power_of_two()
    }
}

/// Lays out `shape` (members from `seed`), adds one node and removes one.
pub fn measure(shape: &Shape, seed: u64) -> Result<LayoutOutcome> {
    let members = shape.members(seed);
    check_pure_shares(&members, shape.partitions)?;
    let started = Instant::now();
    let fresh = Layout::compute(&members, REPLICATION, shape.partitions, None)
        .context("computing the fresh layout")?;
    let compute_time = started.elapsed();

    let mut rng = StdRng::seed_from_u64(seed ^ 0x5ca1_e000);
    let mut grown = members.clone();
    grown.push(MemberSpec {
        // Ids are random 64-bit numbers: the odds that this one is taken
        // are 10^-16; the layout would refuse the duplicate.
        id: NodeId(rng.random_range(1..u64::MAX)),
        zone: zone_name(rng.random_range(0..shape.zones.max(1))),
        weight: if shape.mixed { 2 } else { 1 },
    });
    let add = change(&fresh, &grown, shape.partitions)?;

    let mut shrunk = members.clone();
    shrunk.remove(rng.random_range(0..members.len()));
    let remove = change(&fresh, &shrunk, shape.partitions)?;

    Ok(LayoutOutcome {
        deviation_pct: deviation_pct(&fresh),
        min_share: shares(&members, shape.partitions)
            .values()
            .copied()
            .fold(f64::INFINITY, f64::min),
        add,
        remove,
        compute_time,
    })
}

fn change(before: &Layout, members: &[MemberSpec], partitions: u32) -> Result<Change> {
    check_pure_shares(members, partitions)?;
    let started = Instant::now();
    let after = Layout::compute(members, REPLICATION, partitions, Some(before))
        .context("computing the changed layout")?;
    let compute_time = started.elapsed();
    Ok(Change {
        deviation_pct: deviation_pct(&after),
        moves: after.moves_from(before),
        minimum: minimum_moves(before, &after),
        server_minimum: after.minimum_moves_from(before),
        compute_time,
    })
}

/// Each member's share of the Q·N replicas: `Q·N·w / W`.
pub fn shares(members: &[MemberSpec], partitions: u32) -> BTreeMap<NodeId, f64> {
    let total: f64 = members.iter().map(|m| f64::from(m.weight)).sum();
    let replicas = f64::from(partitions) * f64::from(REPLICATION.min(members.len() as u32));
    members
        .iter()
        .map(|m| (m.id, replicas * f64::from(m.weight) / total))
        .collect()
}

/// Worst `|held − share| / share` over the layout's members, in %.
pub fn deviation_pct(layout: &Layout) -> f64 {
    let counts = layout.replica_counts();
    shares(layout.members(), layout.partitions())
        .iter()
        .map(|(id, share)| {
            let held = counts.get(id).copied().unwrap_or(0) as f64;
            100.0 * (held - share).abs() / share
        })
        .fold(0.0, f64::max)
}

/// The minimum defined in the module doc.
pub fn minimum_moves(before: &Layout, after: &Layout) -> usize {
    let held = before.replica_counts();
    let to_reach_shares: usize = shares(after.members(), after.partitions())
        .iter()
        .map(|(id, share)| (share.floor() as usize).saturating_sub(*held.get(id).unwrap_or(&0)))
        .sum();
    let departed: usize = held
        .iter()
        .filter(|(id, _)| !after.contains(**id))
        .map(|(_, count)| count)
        .sum();
    to_reach_shares.max(departed)
}

/// Refuses shapes whose shares the zone rule or the per-partition cap
/// would change, so that "share" above means the plain weight share.
fn check_pure_shares(members: &[MemberSpec], partitions: u32) -> Result<()> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    let n = u64::from(REPLICATION.min(members.len() as u32));
    let mut zones: BTreeMap<&str, u64> = BTreeMap::new();
    for m in members {
        *zones.entry(m.zone.as_str()).or_default() += u64::from(m.weight);
    }
    let zoned = zones.len() > 1;
    if zoned && zones.values().any(|&w| w * n > total) {
        anyhow::bail!("a zone holds more than 1/N of the weight; its members' shares are capped");
    }
    if zoned && (zones.len() as u64) < n {
        anyhow::bail!("fewer zones than replicas: every zone must hold Q replicas, not its share");
    }
    if shares(members, partitions)
        .values()
        .any(|&s| s > f64::from(partitions))
    {
        anyhow::bail!("a member's share exceeds one replica per partition");
    }
    Ok(())
}

fn zone_name(z: usize) -> String {
    format!("z{z}")
}
