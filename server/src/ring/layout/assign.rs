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
//! augment, one unit at a time, along a cheapest source-to-sink path of the
//! residual network; each step keeps the flow min-cost for its value. Three
//! phases do this cheaply, and a fourth relaxes the targets:
//!
//! 1. **Keep.** Previous replicas are put back directly (in a hashed order,
//!    so a node over its target drops a spread-out set of partitions), then
//!    zero-cost paths are augmented until none is left. The flow now keeps
//!    as many previous replicas as any valid layout can; it costs 0, so it is
//!    min-cost.
//! 2. **Greedy.** Empty slots are filled round by round with a direct edge:
//!    the eligible member furthest below its target, ties broken by a hash of
//!    (partition, member) so co-replicas vary. A direct edge costs one copy,
//!    and no path is cheaper once phase 1 is done, so each is a valid
//!    shortest-path step.
//! 3. **Complete.** Slots the greedy could not fill (every eligible member
//!    full, or zones in the way) are filled by genuine shortest paths, found
//!    with SPFA (queue-based Bellman-Ford: the residual network has negative
//!    reverse edges, never a negative cycle); these paths move replicas
//!    between partitions. The flow now meets every target exactly and copies
//!    as little as that allows.
//! 4. **Slack** (only with a previous layout; from scratch every layout
//!    copies everything). The sink edges are re-priced: within a member's
//!    slack each replica off target costs [`SLACK_COST`], beyond it
//!    [`BREACH_COST`], and the sink gets reverse edges. Negative cycles are
//!    cancelled until none is left; each shifts load between members and
//!    saves copies. The result copies the fewest replicas any layout within
//!    the slack can, and among those deviates least from the targets.
//!
//! # The implicit residual network
//!
//! The network is never materialised (Q·M edges at Q = 65536). Flow is kept
//! in a canonical form (each used zone of a partition takes its unit from
//! `up`, the rest from `down`), which fixes every residual capacity as a
//! function of the partition's members; unused `zone(p,z)` vertices only
//! pass flow on, so they are folded into edges `up(p) → m` / `down(p) → m`.

use std::collections::VecDeque;

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

/// Most negative cycles cancelled in one computation: each saves at least
/// one unit of cost, and in practice a few dozen suffice; the cap only
/// bounds the work if that intuition is ever wrong.
const MAX_CANCELLED_CYCLES: usize = 1 << 16;

const UNREACHED: i64 = i64::MAX;
const NO_PARENT: usize = usize::MAX;

/// What the solver works from.
pub(super) struct Input<'a> {
    /// Q.
    pub partitions: usize,
    pub topology: &'a Topology,
    /// Integer target of each member (by index).
    pub targets: &'a [u32],
    /// Allowed deviation from the target, per member.
    pub slack: &'a [u32],
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
    solver.keep_previous()?;
    solver.fill_greedily();
    solver.complete()?;
    if !input.previous.is_empty() {
        solver.use_slack()?;
    }
    solver.verify()?;
    Ok(solver.parts)
}

/// A vertex of the residual network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vertex {
    Source,
    /// `up(p)`: the first replica of each zone in partition p.
    Up(usize),
    /// `down(p)`: further replicas of zones already in partition p.
    Down(usize),
    /// `zone(p, z)` for the k-th used zone of partition p.
    Zone(usize, usize),
    Member(usize),
    Sink,
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
    /// Phase 4: member counts may deviate within their slack (sink edges
    /// priced by [`Solver::unit_cost`], and the sink has reverse edges).
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
            slack: false,
        }
    }

    fn members(&self) -> usize {
        self.count.len()
    }

    /// Copy cost of giving partition p to member m.
    fn cost(&self, p: usize, m: usize) -> i64 {
        match self.input.previous.get(p) {
            Some(prev) if prev.contains(&m) => 0,
            _ => MOVE_COST,
        }
    }

    /// Cost of member m holding its k-th replica (k >= 1) once slack is
    /// allowed: a convex staircase, so holding fewer than target - slack is
    /// as bad as holding more than target + slack, and within the slack each
    /// replica away from the target costs [`SLACK_COST`].
    fn unit_cost(&self, m: usize, k: usize) -> i64 {
        let target = self.input.targets[m] as usize;
        let slack = self.input.slack[m] as usize;
        if k + slack <= target {
            -BREACH_COST
        } else if k <= target {
            -SLACK_COST
        } else if k <= target + slack {
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
    }

    /// Phase 1: keep as many previous replicas as any valid layout can.
    fn keep_previous(&mut self) -> Result<()> {
        let (previous, ids) = (self.input.previous, self.input.ids);
        let mut pairs: Vec<(u64, usize, usize)> = previous
            .iter()
            .enumerate()
            .flat_map(|(p, prev)| prev.iter().map(move |&m| (mix(p, ids[m]), p, m)))
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        pairs.sort_unstable();
        for (_, p, m) in pairs {
            if self.deficit(m) > 0 && self.can_add(p, m) {
                self.add(p, m);
            }
        }
        while self.missing > 0 {
            match self.shortest_path()? {
                Some((cost, path)) if cost <= 0 => self.apply(&path),
                _ => break,
            }
        }
        Ok(())
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
        while self.missing > 0 {
            match self.shortest_path()? {
                Some((_, path)) => self.apply(&path),
                None => {
                    return Err(Error::Internal(format!(
                        "layout: no valid placement for {} replicas",
                        self.missing
                    )))
                }
            }
        }
        Ok(())
    }

    fn vertex_count(&self) -> usize {
        let q = self.parts.len();
        2 + 2 * q + q * self.n + self.members()
    }

    fn index(&self, v: Vertex) -> usize {
        let q = self.parts.len();
        match v {
            Vertex::Source => 0,
            Vertex::Up(p) => 1 + p,
            Vertex::Down(p) => 1 + q + p,
            Vertex::Zone(p, k) => 1 + 2 * q + p * self.n + k,
            Vertex::Member(m) => 1 + 2 * q + q * self.n + m,
            Vertex::Sink => 1 + 2 * q + q * self.n + self.members(),
        }
    }

    fn vertex(&self, i: usize) -> Vertex {
        let q = self.parts.len();
        let zone_base = 1 + 2 * q;
        let member_base = zone_base + q * self.n;
        match i {
            0 => Vertex::Source,
            i if i <= q => Vertex::Up(i - 1),
            i if i < zone_base => Vertex::Down(i - 1 - q),
            i if i < member_base => {
                Vertex::Zone((i - zone_base) / self.n, (i - zone_base) % self.n)
            }
            i if i < member_base + self.members() => Vertex::Member(i - member_base),
            _ => Vertex::Sink,
        }
    }

    /// Residual edges out of `v` with their costs, into `out`.
    fn edges(&self, v: Vertex, out: &mut Vec<(Vertex, i64)>) {
        out.clear();
        let topo = self.input.topology;
        match v {
            Vertex::Source => {
                for p in 0..self.parts.len() {
                    let (f, d) = (self.parts[p].len(), self.zones[p].len());
                    if f == self.n {
                        continue;
                    }
                    if d < topo.spread {
                        out.push((Vertex::Up(p), 0));
                    }
                    if f - d < topo.duplicates() {
                        out.push((Vertex::Down(p), 0));
                    }
                }
            }
            Vertex::Up(p) => {
                // up(p) → zone(p,z) has room only for unused zones.
                for m in 0..self.members() {
                    if self.zone_slot(p, topo.zone_of[m]).is_none() {
                        out.push((Vertex::Member(m), self.cost(p, m)));
                    }
                }
            }
            Vertex::Down(p) => {
                for (k, &(z, c)) in self.zones[p].iter().enumerate() {
                    if c < self.zone_cap(z) {
                        out.push((Vertex::Zone(p, k), 0));
                    }
                }
                for m in 0..self.members() {
                    let z = topo.zone_of[m];
                    if self.zone_cap(z) >= 2 && self.zone_slot(p, z).is_none() {
                        out.push((Vertex::Member(m), self.cost(p, m)));
                    }
                }
            }
            Vertex::Zone(p, k) => {
                let (z, c) = self.zones[p][k];
                out.push((Vertex::Up(p), 0));
                if c >= 2 {
                    out.push((Vertex::Down(p), 0));
                }
                for &m in &topo.zones[z].members {
                    if !self.parts[p].contains(&m) {
                        out.push((Vertex::Member(m), self.cost(p, m)));
                    }
                }
            }
            Vertex::Member(m) => {
                let (count, q) = (self.count[m], self.parts.len());
                if self.slack {
                    if count < q {
                        out.push((Vertex::Sink, self.unit_cost(m, count + 1)));
                    }
                } else if count < self.input.targets[m] as usize {
                    out.push((Vertex::Sink, 0));
                } else if count < q {
                    out.push((Vertex::Sink, BREACH_COST));
                }
                let z = topo.zone_of[m];
                for &p in &self.held[m] {
                    if let Some(k) = self.zone_slot(p, z) {
                        out.push((Vertex::Zone(p, k), -self.cost(p, m)));
                    }
                }
            }
            Vertex::Sink => {
                // Reverse sink edges: give back a member's last replica.
                if self.slack {
                    for m in 0..self.members() {
                        if self.count[m] > 0 {
                            out.push((Vertex::Member(m), -self.unit_cost(m, self.count[m])));
                        }
                    }
                }
            }
        }
    }

    /// A cheapest source-to-sink path (SPFA, i.e. queue-based Bellman-Ford)
    /// and its cost, or `None` when the sink is unreachable.
    fn shortest_path(&self) -> Result<Option<(i64, Vec<usize>)>> {
        let count = self.vertex_count();
        let source = self.index(Vertex::Source);
        let sink = self.index(Vertex::Sink);
        let mut dist = vec![UNREACHED; count];
        let mut parent = vec![NO_PARENT; count];
        let mut queued = vec![false; count];
        let mut pops = vec![0usize; count];
        let mut queue = VecDeque::from([source]);
        let mut edges = Vec::new();
        dist[source] = 0;
        while let Some(u) = queue.pop_front() {
            queued[u] = false;
            pops[u] += 1;
            if pops[u] > count {
                // Impossible while the flow is min-cost; a bug, not an input.
                return Err(Error::Internal(
                    "layout: negative cycle in the placement network".to_string(),
                ));
            }
            self.edges(self.vertex(u), &mut edges);
            for &(w, cost) in &edges {
                let wi = self.index(w);
                let d = dist[u].saturating_add(cost);
                if d < dist[wi] {
                    dist[wi] = d;
                    parent[wi] = u;
                    if wi != sink && !queued[wi] {
                        queued[wi] = true;
                        queue.push_back(wi);
                    }
                }
            }
        }
        if dist[sink] == UNREACHED {
            return Ok(None);
        }
        let mut path = vec![sink];
        let mut v = sink;
        while v != source {
            v = parent[v];
            if v == NO_PARENT || path.len() > count {
                return Err(Error::Internal("layout: broken shortest path".to_string()));
            }
            path.push(v);
        }
        path.reverse();
        Ok(Some((dist[sink], path)))
    }

    /// Augments one unit along `path`: forward edges into a member add it
    /// to the partition, reverse edges out of a member remove it; the rest
    /// is bookkeeping of the canonical flow.
    fn apply(&mut self, path: &[usize]) {
        let (adds, removes) = self.changes(path.windows(2).map(|w| (w[0], w[1])));
        for (p, m) in removes {
            self.remove(p, m);
        }
        for (p, m) in adds {
            self.add(p, m);
        }
    }

    /// The (partition, member) additions and removals a walk makes.
    #[allow(clippy::type_complexity)]
    fn changes(
        &self,
        edges: impl Iterator<Item = (usize, usize)>,
    ) -> (Vec<(usize, usize)>, Vec<(usize, usize)>) {
        let mut adds = Vec::new();
        let mut removes = Vec::new();
        for (a, b) in edges {
            match (self.vertex(a), self.vertex(b)) {
                (Vertex::Up(p) | Vertex::Down(p) | Vertex::Zone(p, _), Vertex::Member(m)) => {
                    adds.push((p, m))
                }
                (Vertex::Member(m), Vertex::Zone(p, _)) => removes.push((p, m)),
                _ => {}
            }
        }
        (adds, removes)
    }

    /// Phase 4: with slack priced in, cancel negative cycles until none is
    /// left. Starting from the min-cost flow with exact targets, a negative
    /// cycle trades slack for copies: it shifts load from one member to
    /// another (through the sink) and saves at least one copy doing so. At
    /// the end the flow is min-cost for the slack pricing: the fewest copies
    /// any layout within the slack can make, then the least deviation.
    fn use_slack(&mut self) -> Result<()> {
        self.slack = true;
        for _ in 0..MAX_CANCELLED_CYCLES {
            let Some(cycle) = self.negative_cycle() else {
                break;
            };
            let closing = (cycle[cycle.len() - 1], cycle[0]);
            let edges = cycle.windows(2).map(|w| (w[0], w[1])).chain([closing]);
            let (adds, removes) = self.changes(edges);
            for &(p, m) in &removes {
                self.remove(p, m);
            }
            for &(p, m) in &adds {
                self.add(p, m);
            }
            self.verify()?;
        }
        self.slack = false;
        Ok(())
    }

    /// A negative-cost cycle of the residual network, as vertex indices in
    /// edge order, or `None`. Bellman-Ford from every vertex at once (all
    /// distances start at 0), queue-driven; every `vertex_count` relaxations
    /// the predecessor graph is searched for a cycle, which is necessarily
    /// negative. An empty queue proves there is none.
    fn negative_cycle(&self) -> Option<Vec<usize>> {
        let count = self.vertex_count();
        let mut dist = vec![0i64; count];
        let mut parent = vec![NO_PARENT; count];
        let mut queued = vec![true; count];
        let mut queue: VecDeque<usize> = (0..count).collect();
        let mut edges = Vec::new();
        let mut relaxations = 0usize;
        while let Some(u) = queue.pop_front() {
            queued[u] = false;
            self.edges(self.vertex(u), &mut edges);
            for &(w, cost) in &edges {
                let wi = self.index(w);
                let d = dist[u].saturating_add(cost);
                if d < dist[wi] {
                    dist[wi] = d;
                    parent[wi] = u;
                    relaxations += 1;
                    if relaxations % count == 0 {
                        if let Some(cycle) = parent_cycle(&parent) {
                            return Some(cycle);
                        }
                    }
                    if !queued[wi] {
                        queued[wi] = true;
                        queue.push_back(wi);
                    }
                }
            }
        }
        parent_cycle(&parent)
    }

    /// Checks the result against the rules the network encodes.
    fn verify(&self) -> Result<()> {
        let topo = self.input.topology;
        for (p, part) in self.parts.iter().enumerate() {
            let mut sorted = part.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let zones_ok = self.zones[p].len() >= topo.spread
                && self.zones[p].iter().all(|&(z, c)| c <= self.zone_cap(z));
            if part.len() != self.n || sorted.len() != self.n || !zones_ok {
                return Err(Error::Internal(format!(
                    "layout: partition {p} placed invalidly"
                )));
            }
        }
        Ok(())
    }
}

/// A cycle of the predecessor graph (`parent[v]` is the vertex before `v`),
/// in edge order, if there is one.
fn parent_cycle(parent: &[usize]) -> Option<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let mut walk = vec![UNSEEN; parent.len()];
    for start in 0..parent.len() {
        let mut v = start;
        while v != NO_PARENT && walk[v] == UNSEEN {
            walk[v] = start;
            v = parent[v];
        }
        if v != NO_PARENT && walk[v] == start {
            // v is on a cycle: collect it backwards, then reverse.
            let mut cycle = vec![v];
            let mut u = parent[v];
            while u != v {
                cycle.push(u);
                u = parent[u];
            }
            cycle.reverse();
            return Some(cycle);
        }
    }
    None
}
