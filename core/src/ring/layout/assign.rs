//! The assignment solver: which members hold each partition.
//!
//! # The flow network
//!
//! Placement is a flow problem (the formulation Garage uses for its
//! layouts). One unit of flow is one partition replica:
//!
//! ```text
//! source ─(spread)──▶ up(p) ──(1)──────▶ zone(p,z) ─(1)─▶ member(m) ──▶ sink
//!        └(N-spread)▶ down(p) ─(c_z-1)─▶ zone(p,z)
//! ```
//!
//! `up(p)` can send at most one unit to each zone, so a full partition (N
//! units out of the source) spans at least `spread` zones; `zone(p,z)` lets
//! at most c_z units through and `zone(p,z) → member` carries at most one, so
//! replicas are distinct nodes and no zone exceeds its share. A flow of value
//! Q·N is therefore exactly a valid layout in which member m holds
//! `flow(member(m) → sink)` replicas.
//!
//! Costs make the best valid layout the cheapest flow. `zone(p,z) → m`
//! costs [`MOVE_COST`] unless m held p in the previous layout, so the cost
//! counts the replicas that must be copied. `member(m) → sink` is free up to
//! m's target and costs [`BREACH_COST`] (more than any number of copies)
//! beyond it, up to Q: a member exceeds its target only if nothing else is
//! possible. That never happens in practice, but it makes a complete layout
//! certain, since giving every partition the same valid replica set is a
//! flow of value Q·N within those capacities.
//!
//! # Phases
//!
//! A min-cost flow of maximum value is built by successive shortest paths:
//! augment along cheapest source-to-sink paths of the residual network;
//! each step keeps the flow min-cost for its value. Each search (SPFA, i.e.
//! queue-based Bellman-Ford, since residual networks have negative reverse
//! edges) yields distance labels, and every path made only of edges that are
//! tight for those labels is a cheapest path, so one search feeds many
//! augmentations (found by depth-first search, as in primal-dual algorithms).
//!
//! 1. **Keep** (with a previous layout). Each member over its target first
//!    picks which previous replicas to give up: preferably where a member
//!    below its target could take the slot (zones allowing), then where the
//!    partition has lost the fewest so far, ties broken by a hash. The rest
//!    are put back directly, then zero-cost paths are augmented until none
//!    is left. The flow now keeps as many previous replicas as any valid
//!    layout can; it costs nothing, so it is min-cost.
//! 2. **Greedy.** Empty slots are filled round by round with a direct edge:
//!    the eligible member furthest below its target, ties broken by a hash of
//!    (partition, member) so co-replicas vary and a failed node's load is
//!    shared by many survivors. A direct edge costs one copy, which is what
//!    a cheapest path costs while one-copy paths exist.
//! 3. **Complete.** Slots the greedy could not fill (every eligible member
//!    full, or zones in the way) are filled by genuine shortest paths, which
//!    move replicas between partitions.
//! 4. **Tidy** (with a previous layout). Negative cycles of the residual
//!    network are cancelled until none is left, which proves the flow
//!    min-cost whatever shortcuts phases 1–3 took: it meets every target
//!    exactly and copies as little as that allows.
//! 5. **Slack** (with a previous layout). If the layout copies more than
//!    [`MOVE_ALLOWANCE_PERCENT`] of the ideal Σ max(0, target − held
//!    before), the sink edges are re-priced: within a member's band (its
//!    slack) each replica off target costs [`SLACK_COST`], beyond it
//!    [`BREACH_COST`], and the sink gets reverse edges. A negative cycle
//!    through the sink then moves one replica's worth of load from one
//!    member to another and saves copies; the cheapest such cycles are
//!    cancelled (again many per search) until the copies are within the
//!    allowance or none is left, in which case no layout within the bands
//!    copies less.
//!
//! Without a previous layout every layout copies everything, so phases 1, 4
//! and 5 have nothing to do.
//!
//! The network itself (vertices, residual edges, searches) is in `network`.

mod network;

use network::CycleFinder;

use super::mix;
use super::targets::Topology;
use crate::error::{Error, Result};
use crate::version::NodeId;

/// Cost of copying one partition replica to a node that did not hold it.
/// Larger than the total of all slack costs (at most Q·N < 2^21 units of
/// [`SLACK_COST`]), so one copy saved is worth any use of slack.
const MOVE_COST: i64 = 1 << 22;

/// Cost of each replica by which a member deviates from its target, within
/// its slack: among layouts that copy equally little, the most balanced
/// wins.
const SLACK_COST: i64 = 1;

/// Cost of a replica beyond the slack (or, while targets are exact, beyond
/// the target): more than any number of copies (Q·N·MOVE_COST < 2^43), so
/// balance is broken only when nothing else is possible.
const BREACH_COST: i64 = 1 << 50;

/// Slack is used only while the layout copies more than this percentage of
/// the ideal, Σ max(0, target - previously held). The design promises 120 %;
/// aiming lower leaves a margin, and not aiming at 100 % keeps layouts
/// exactly balanced unless zones make that expensive.
const MOVE_ALLOWANCE_PERCENT: usize = 110;

/// Most negative cycles cancelled per phase: each saves at least one unit of
/// cost and in practice a few hundred at most are needed; the cap only bounds
/// the work if that were ever wrong (the layout stays valid either way).
const MAX_CANCELLED_CYCLES: usize = 1 << 16;

/// What the solver works from.
pub(super) struct Input<'a> {
    /// Q.
    pub partitions: usize,
    pub topology: &'a Topology,
    /// Integer target of each member (by index).
    pub targets: &'a [u32],
    /// Least and most replicas each member may hold when that saves copies.
    pub lo: &'a [u32],
    pub hi: &'a [u32],
    /// Member ids, for deterministic tie-breaking hashes.
    pub ids: &'a [NodeId],
    /// Per partition, the previous replicas that are still members (member
    /// indices); empty when there is no previous layout.
    pub previous: &'a [Vec<usize>],
}

/// Returns, per partition, the set of member indices holding it (in no
/// particular order; the caller orders them).
pub(super) fn solve(input: &Input<'_>) -> Result<Vec<Vec<usize>>> {
    let mut solver = Solver::new(input);
    let incremental = !input.previous.is_empty();
    if incremental {
        solver.keep_previous()?;
    }
    solver.fill_greedily();
    solver.complete()?;
    if incremental {
        solver.tidy()?;
        solver.use_slack()?;
    }
    let all: Vec<usize> = (0..input.partitions).collect();
    solver.check(&all)?;
    if solver.missing > 0 {
        return Err(Error::Internal("layout: incomplete placement".to_string()));
    }
    Ok(solver.parts)
}

struct Solver<'a> {
    input: &'a Input<'a>,
    /// N.
    n: usize,
    /// Members (indices) of each partition, unordered.
    parts: Vec<Vec<usize>>,
    /// Used zones of each partition: (zone, replicas in it), by zone index.
    zones: Vec<Vec<(usize, usize)>>,
    /// Replicas held by each member.
    count: Vec<usize>,
    /// Partitions held by each member, for the reverse edges.
    held: Vec<Vec<usize>>,
    /// Empty slots left.
    missing: usize,
    /// Replicas placed on a member that did not hold them before.
    copies: usize,
    /// Phase 5: sink edges priced by [`Solver::unit_cost`], with reverse
    /// edges out of the sink.
    slack: bool,
}

impl<'a> Solver<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        let q = input.partitions;
        let members = input.targets.len();
        let n = input.topology.replication;
        Solver {
            input,
            n,
            parts: vec![Vec::with_capacity(n); q],
            zones: vec![Vec::with_capacity(n); q],
            count: vec![0; members],
            held: vec![Vec::new(); members],
            missing: q * n,
            copies: 0,
            slack: false,
        }
    }

    fn members(&self) -> usize {
        self.count.len()
    }

    /// Whether m held partition p in the previous layout.
    fn kept(&self, p: usize, m: usize) -> bool {
        self.input
            .previous
            .get(p)
            .is_some_and(|prev| prev.contains(&m))
    }

    /// Copy cost of giving partition p to member m.
    fn cost(&self, p: usize, m: usize) -> i64 {
        if self.kept(p, m) {
            0
        } else {
            MOVE_COST
        }
    }

    /// Cost of member m holding its k-th replica (k >= 1) once slack is
    /// allowed: a convex staircase, so holding fewer than its band's low end
    /// is as bad as holding more than its high end, and within the band each
    /// replica away from the target costs [`SLACK_COST`].
    fn unit_cost(&self, m: usize, k: usize) -> i64 {
        let target = self.input.targets[m] as usize;
        if k <= self.input.lo[m] as usize {
            -BREACH_COST
        } else if k <= target {
            -SLACK_COST
        } else if k <= self.input.hi[m] as usize {
            SLACK_COST
        } else {
            BREACH_COST
        }
    }

    fn zone_cap(&self, z: usize) -> usize {
        self.input.topology.zones[z].per_partition
    }

    /// Index of zone z among partition p's used zones.
    fn zone_slot(&self, p: usize, z: usize) -> Option<usize> {
        self.zones[p].iter().position(|&(zz, _)| zz == z)
    }

    fn deficit(&self, m: usize) -> usize {
        (self.input.targets[m] as usize).saturating_sub(self.count[m])
    }

    /// Whether m can join p directly, keeping p completable: distinct
    /// members, at most c_z per zone, and no more non-first-of-zone replicas
    /// than N - spread (so enough slots remain for the zones still needed).
    fn can_add(&self, p: usize, m: usize) -> bool {
        let (f, d) = (self.parts[p].len(), self.zones[p].len());
        if f >= self.n || self.parts[p].contains(&m) {
            return false;
        }
        let z = self.input.topology.zone_of[m];
        match self.zone_slot(p, z) {
            None => d < self.input.topology.spread,
            Some(k) => {
                self.zones[p][k].1 < self.zone_cap(z) && f - d < self.input.topology.duplicates()
            }
        }
    }

    /// The same rule for a hypothetical partial replica set.
    fn set_accepts(&self, set: &[usize], m: usize) -> bool {
        let topo = self.input.topology;
        if set.len() >= self.n || set.contains(&m) {
            return false;
        }
        let z = topo.zone_of[m];
        let same = set.iter().filter(|&&x| topo.zone_of[x] == z).count();
        let mut zones: Vec<usize> = set.iter().map(|&x| topo.zone_of[x]).collect();
        zones.sort_unstable();
        zones.dedup();
        if same == 0 {
            zones.len() < topo.spread
        } else {
            same < self.zone_cap(z) && set.len() - zones.len() < topo.duplicates()
        }
    }

    fn add(&mut self, p: usize, m: usize) {
        self.parts[p].push(m);
        self.count[m] += 1;
        self.held[m].push(p);
        let z = self.input.topology.zone_of[m];
        match self.zones[p].binary_search_by_key(&z, |&(zz, _)| zz) {
            Ok(k) => self.zones[p][k].1 += 1,
            Err(k) => self.zones[p].insert(k, (z, 1)),
        }
        self.missing -= 1;
        if !self.kept(p, m) {
            self.copies += 1;
        }
    }

    fn remove(&mut self, p: usize, m: usize) {
        self.parts[p].retain(|&x| x != m);
        self.count[m] -= 1;
        if let Some(i) = self.held[m].iter().position(|&x| x == p) {
            self.held[m].remove(i);
        }
        let z = self.input.topology.zone_of[m];
        if let Ok(k) = self.zones[p].binary_search_by_key(&z, |&(zz, _)| zz) {
            self.zones[p][k].1 -= 1;
            if self.zones[p][k].1 == 0 {
                self.zones[p].remove(k);
            }
        }
        self.missing += 1;
        if !self.kept(p, m) {
            self.copies -= 1;
        }
    }

    /// Phase 1: keep as many previous replicas as any valid layout can.
    fn keep_previous(&mut self) -> Result<()> {
        let (previous, ids, targets) = (self.input.previous, self.input.ids, self.input.targets);
        let mut by_member: Vec<Vec<usize>> = vec![Vec::new(); self.members()];
        for (p, prev) in previous.iter().enumerate() {
            for &m in prev {
                by_member[m].push(p);
            }
        }
        let wanting: Vec<usize> = (0..self.members())
            .filter(|&m| by_member[m].len() < targets[m] as usize)
            .collect();

        // Members over target choose what to give up.
        let mut dropped: Vec<Vec<usize>> = vec![Vec::new(); previous.len()];
        for (m, partitions) in by_member.iter().enumerate() {
            let excess = partitions.len().saturating_sub(targets[m] as usize);
            if excess == 0 {
                continue;
            }
            let mut candidates: Vec<(bool, usize, u64, usize)> = partitions
                .iter()
                .map(|&p| {
                    let rest: Vec<usize> = previous[p]
                        .iter()
                        .copied()
                        .filter(|&x| x != m && !dropped[p].contains(&x))
                        .collect();
                    let fillable = wanting.iter().any(|&w| self.set_accepts(&rest, w));
                    (!fillable, dropped[p].len(), mix(p, ids[m]), p)
                })
                .collect();
            candidates.sort_unstable();
            for &(_, _, _, p) in candidates.iter().take(excess) {
                dropped[p].push(m);
            }
        }

        // Put the rest back; what the zone rule refuses is dropped too, in a
        // hashed (so spread-out) order.
        let mut pairs: Vec<(u64, usize, usize)> = previous
            .iter()
            .enumerate()
            .flat_map(|(p, prev)| prev.iter().map(move |&m| (mix(p, ids[m]), p, m)))
            .filter(|&(_, p, m)| !dropped[p].contains(&m))
            .collect();
        pairs.sort_unstable();
        for (_, p, m) in pairs {
            if self.deficit(m) > 0 && self.can_add(p, m) {
                self.add(p, m);
            }
        }
        self.augment(0)
    }

    /// Phase 2: direct edges to the member furthest below its target.
    fn fill_greedily(&mut self) {
        let ids = self.input.ids;
        for _round in 0..self.n {
            for p in 0..self.parts.len() {
                if self.parts[p].len() == self.n {
                    continue;
                }
                let best = (0..self.members())
                    .filter(|&m| self.deficit(m) > 0 && self.can_add(p, m))
                    .min_by_key(|&m| (std::cmp::Reverse(self.deficit(m)), mix(p, ids[m]), m));
                if let Some(m) = best {
                    self.add(p, m);
                }
            }
        }
    }

    /// Phase 3: shortest augmenting paths for whatever the greedy left.
    fn complete(&mut self) -> Result<()> {
        self.augment(i64::MAX)?;
        if self.missing > 0 {
            return Err(Error::Internal(format!(
                "layout: no valid placement for {} replicas",
                self.missing
            )));
        }
        Ok(())
    }

    /// Phase 4: cancels negative cycles until none is left.
    fn tidy(&mut self) -> Result<()> {
        let mut finder = CycleFinder::new(self);
        for _ in 0..MAX_CANCELLED_CYCLES {
            let Some(cycle) = finder.find(self) else {
                break;
            };
            let touched = self.cancel(&cycle)?;
            finder.touch(self, &touched);
        }
        Ok(())
    }

    /// Phase 5: trade slack for copies while the layout copies too much.
    fn use_slack(&mut self) -> Result<()> {
        let mut held = vec![0usize; self.members()];
        for &m in self.input.previous.iter().flatten() {
            held[m] += 1;
        }
        let ideal: usize = (0..self.members())
            .map(|m| (self.input.targets[m] as usize).saturating_sub(held[m]))
            .sum();
        let budget = ideal * MOVE_ALLOWANCE_PERCENT / 100;
        if self.copies <= budget {
            return Ok(());
        }
        self.slack = true;
        let result = self.shift_load(budget);
        self.slack = false;
        result
    }

    /// Checks partitions against the rules the network encodes (distinct
    /// members, zone caps, room for the zones still needed). A bug, never an
    /// input, could make this fail.
    fn check(&self, partitions: &[usize]) -> Result<()> {
        let topo = self.input.topology;
        for &p in partitions {
            let part = &self.parts[p];
            let mut sorted = part.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let (f, d) = (part.len(), self.zones[p].len());
            let valid = sorted.len() == f
                && f <= self.n
                && f - d <= topo.duplicates()
                && self.zones[p].iter().all(|&(z, c)| c <= self.zone_cap(z));
            if !valid {
                return Err(Error::Internal(format!(
                    "layout: partition {p} placed invalidly"
                )));
            }
        }
        Ok(())
    }
}
