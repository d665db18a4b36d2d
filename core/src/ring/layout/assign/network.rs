//! The residual network of the assignment flow, and the searches over it.
//!
//! The network is never materialised (it would have Q·M edges, millions at
//! Q = 65536). Flow is kept in a canonical form (each used zone of a
//! partition takes its unit from `up`, the rest from `down`), which makes
//! every residual edge a function of the partitions' member sets; unused
//! `zone(p,z)` vertices only pass flow on, so they are folded into edges
//! `up(p) → m` and `down(p) → m`. [`Solver::edges`] lists a vertex's edges
//! from the current state.
//!
//! Searches are label-correcting (Bellman-Ford driven by a queue), because
//! residual edges can be negative. Both kinds watch the predecessor graph:
//! a cycle there is always a negative cycle (Tarjan's observation), which
//! the caller cancels; a queue that runs dry proves there is none.

use std::collections::VecDeque;

use super::{Solver, BREACH_COST};
use crate::error::{Error, Result};

const UNREACHED: i64 = i64::MAX;
const NO_PARENT: usize = usize::MAX;

/// Residual edges out of a vertex: (head, cost).
type Edges = Vec<(Vertex, i64)>;

/// (partition, member) pairs.
type Placements = Vec<(usize, usize)>;

/// A vertex of the residual network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Vertex {
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

/// What a cheapest-path search found.
enum Search {
    /// No path from source to sink.
    Unreachable,
    /// Distance labels from the source; the sink's is the cheapest cost.
    Distances(Vec<i64>),
    /// A negative cycle, as vertex indices in edge order.
    Cycle(Vec<usize>),
}

/// Partitions and members whose edges a cancelled cycle changed.
pub(super) struct Touched {
    partitions: Vec<usize>,
    members: Vec<usize>,
}

/// Labels and predecessors of one label-correcting run.
struct Labels {
    dist: Vec<i64>,
    parent: Vec<usize>,
    queued: Vec<bool>,
    queue: VecDeque<usize>,
    /// Vertices whose predecessor was set in the current run.
    relaxed: Vec<usize>,
    /// Walk stamps of the predecessor-cycle check.
    stamp: Vec<u64>,
    clock: u64,
    /// For a search from the sink back to itself: the sink's index, whose
    /// arrivals are kept apart from its (source) label of 0.
    target: Option<usize>,
    /// Cheapest arrival at `target`.
    arrival: i64,
}

impl Labels {
    fn new(count: usize, start: i64, queue: VecDeque<usize>) -> Labels {
        let mut queued = vec![false; count];
        for &v in &queue {
            queued[v] = true;
        }
        Labels {
            dist: vec![start; count],
            parent: vec![NO_PARENT; count],
            queued,
            queue,
            relaxed: Vec::new(),
            stamp: vec![0; count],
            clock: 0,
            target: None,
            arrival: UNREACHED,
        }
    }

    fn enqueue(&mut self, v: usize) {
        if !self.queued[v] {
            self.queued[v] = true;
            self.queue.push_back(v);
        }
    }

    /// Relaxes edges until no label improves (`None`) or the predecessor
    /// graph holds a cycle (returned in edge order). Checks are spaced by
    /// the number of predecessors set, so they cost O(1) per relaxation.
    fn run(&mut self, solver: &Solver<'_>) -> Option<Vec<usize>> {
        for v in self.relaxed.drain(..) {
            self.parent[v] = NO_PARENT;
        }
        let mut edges = Vec::new();
        let mut since_check = 0usize;
        while let Some(u) = self.queue.pop_front() {
            self.queued[u] = false;
            solver.edges(solver.vertex(u), &mut edges);
            for &(w, cost) in &edges {
                let wi = solver.index(w);
                let d = self.dist[u].saturating_add(cost);
                if Some(wi) == self.target {
                    self.arrival = self.arrival.min(d);
                    continue;
                }
                if d >= self.dist[wi] {
                    continue;
                }
                self.dist[wi] = d;
                if self.parent[wi] == NO_PARENT {
                    self.relaxed.push(wi);
                }
                self.parent[wi] = u;
                self.enqueue(wi);
                since_check += 1;
                if since_check > self.relaxed.len().max(64) {
                    since_check = 0;
                    if let Some(cycle) = self.cycle() {
                        // u's remaining edges are not relaxed yet.
                        self.queued[u] = true;
                        self.queue.push_front(u);
                        return Some(cycle);
                    }
                }
            }
        }
        self.cycle()
    }

    /// A cycle of the predecessor graph, in edge order.
    fn cycle(&mut self) -> Option<Vec<usize>> {
        let base = self.clock;
        for &start in &self.relaxed {
            self.clock += 1;
            let mark = self.clock;
            let mut v = start;
            while v != NO_PARENT && self.stamp[v] <= base {
                self.stamp[v] = mark;
                v = self.parent[v];
            }
            if v != NO_PARENT && self.stamp[v] == mark {
                let mut cycle = vec![v];
                let mut u = self.parent[v];
                while u != v {
                    cycle.push(u);
                    u = self.parent[u];
                }
                cycle.reverse();
                return Some(cycle);
            }
        }
        None
    }
}

/// Finds negative cycles one after another, keeping its labels between
/// calls: after a cancellation only the touched part of the network is
/// searched again, so each further cycle costs little.
pub(super) struct CycleFinder(Labels);

impl CycleFinder {
    /// All labels 0 and every vertex queued: a search from everywhere.
    pub(super) fn new(solver: &Solver<'_>) -> CycleFinder {
        let count = solver.vertex_count();
        CycleFinder(Labels::new(count, 0, (0..count).collect()))
    }

    pub(super) fn find(&mut self, solver: &Solver<'_>) -> Option<Vec<usize>> {
        self.0.run(solver)
    }

    /// Re-queues every vertex whose edges the last cancellation changed.
    pub(super) fn touch(&mut self, solver: &Solver<'_>, touched: &Touched) {
        let labels = &mut self.0;
        for &p in &touched.partitions {
            labels.enqueue(solver.index(Vertex::Up(p)));
            labels.enqueue(solver.index(Vertex::Down(p)));
            for k in 0..solver.n {
                labels.enqueue(solver.index(Vertex::Zone(p, k)));
            }
            for &m in &solver.parts[p] {
                labels.enqueue(solver.index(Vertex::Member(m)));
            }
        }
        for &m in &touched.members {
            labels.enqueue(solver.index(Vertex::Member(m)));
        }
        labels.enqueue(solver.index(Vertex::Source));
        labels.enqueue(solver.index(Vertex::Sink));
    }
}

impl Solver<'_> {
    pub(super) fn vertex_count(&self) -> usize {
        let q = self.parts.len();
        2 + 2 * q + q * self.n + self.members()
    }

    pub(super) fn index(&self, v: Vertex) -> usize {
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

    pub(super) fn vertex(&self, i: usize) -> Vertex {
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
    pub(super) fn edges(&self, v: Vertex, out: &mut Edges) {
        out.clear();
        let topo = self.input.topology;
        match v {
            Vertex::Source => {
                for p in 0..self.parts.len() {
                    if self.source_edge(Vertex::Up(p)) {
                        out.push((Vertex::Up(p), 0));
                    }
                    if self.source_edge(Vertex::Down(p)) {
                        out.push((Vertex::Down(p), 0));
                    }
                }
            }
            Vertex::Up(p) | Vertex::Down(p) => {
                let up = matches!(v, Vertex::Up(_));
                if !up {
                    for (k, &(z, c)) in self.zones[p].iter().enumerate() {
                        if c < self.zone_cap(z) {
                            out.push((Vertex::Zone(p, k), 0));
                        }
                    }
                }
                // Edges through unused zones, folded: up(p) → zone(p,z) has
                // room for one unit, down(p) → zone(p,z) for c_z - 1.
                let mut used = self.zones[p].iter().map(|&(z, _)| z).peekable();
                for (z, zone) in topo.zones.iter().enumerate() {
                    if used.next_if_eq(&z).is_some() || (!up && zone.per_partition < 2) {
                        continue;
                    }
                    for &m in &zone.members {
                        out.push((Vertex::Member(m), self.cost(p, m)));
                    }
                }
            }
            Vertex::Zone(p, k) => {
                // Slots past the partition's used zones are not vertices.
                let Some(&(z, c)) = self.zones[p].get(k) else {
                    return;
                };
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

    /// Whether `source → v` has residual capacity (v is up(p) or down(p)).
    fn source_edge(&self, v: Vertex) -> bool {
        let topo = self.input.topology;
        match v {
            Vertex::Up(p) | Vertex::Down(p) if self.parts[p].len() < self.n => {
                let (f, d) = (self.parts[p].len(), self.zones[p].len());
                match v {
                    Vertex::Up(_) => d < topo.spread,
                    _ => f - d < topo.duplicates(),
                }
            }
            _ => false,
        }
    }

    /// Augments along cheapest paths while they cost at most `limit`,
    /// cancelling any negative cycle met on the way.
    pub(super) fn augment(&mut self, limit: i64) -> Result<()> {
        while self.missing > 0 {
            match self.search() {
                Search::Unreachable => break,
                Search::Cycle(cycle) => {
                    self.cancel(&cycle)?;
                }
                Search::Distances(dist) => {
                    if dist[self.index(Vertex::Sink)] > limit {
                        break;
                    }
                    if self.augment_tight(&dist) == 0 {
                        return Err(Error::Internal(
                            "layout: the shortest path vanished".to_string(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Cheapest paths from the source (label-correcting search).
    fn search(&self) -> Search {
        let count = self.vertex_count();
        let source = self.index(Vertex::Source);
        let mut labels = Labels::new(count, UNREACHED, VecDeque::from([source]));
        labels.dist[source] = 0;
        if let Some(cycle) = labels.run(self) {
            return Search::Cycle(cycle);
        }
        if labels.dist[self.index(Vertex::Sink)] == UNREACHED {
            Search::Unreachable
        } else {
            Search::Distances(labels.dist)
        }
    }

    /// Augments along every path it can find made of edges tight for
    /// `dist` (dist[u] + cost = dist[w]): all are cheapest paths. Depth-first
    /// from each partition with room, with vertices that led nowhere marked
    /// dead for the rest of the round. Returns the number of augmentations.
    fn augment_tight(&mut self, dist: &[i64]) -> usize {
        let count = self.vertex_count();
        let mut dead = vec![false; count];
        let mut on_path = vec![false; count];
        let mut roots = Vec::new();
        self.edges(Vertex::Source, &mut roots);
        let mut augmented = 0;
        let mut r = 0;
        while r < roots.len() && self.missing > 0 {
            let root = roots[r].0;
            let ri = self.index(root);
            if dead[ri] || dist[ri] != 0 || !self.source_edge(root) {
                r += 1;
                continue;
            }
            let goal = dist[self.index(Vertex::Sink)];
            match self.tight_path(ri, dist, goal, &mut dead, &mut on_path) {
                Some(mut path) => {
                    path.insert(0, self.index(Vertex::Source));
                    self.apply(&path);
                    augmented += 1;
                }
                None => r += 1,
            }
        }
        augmented
    }

    /// A path of tight edges from `start` to the sink, if any, whose last
    /// edge reaches the sink at cost `goal` (start, ..., sink).
    fn tight_path(
        &self,
        start: usize,
        dist: &[i64],
        goal: i64,
        dead: &mut [bool],
        on_path: &mut [bool],
    ) -> Option<Vec<usize>> {
        let sink = self.index(Vertex::Sink);
        // Depth-first frames: (vertex, its edges, next edge to try).
        let mut frames: Vec<(usize, Edges, usize)> = Vec::new();
        let mut edges = Vec::new();
        self.edges(self.vertex(start), &mut edges);
        frames.push((start, edges, 0));
        on_path[start] = true;
        while let Some((u, edges, next)) = frames.last_mut() {
            let u = *u;
            let Some(&(w, cost)) = edges.get(*next) else {
                dead[u] = true;
                on_path[u] = false;
                frames.pop();
                continue;
            };
            *next += 1;
            let wi = self.index(w);
            let d = dist[u].saturating_add(cost);
            if wi == sink {
                if d != goal {
                    continue;
                }
                let path: Vec<usize> = frames.iter().map(|f| f.0).chain([wi]).collect();
                for f in &frames {
                    on_path[f.0] = false;
                }
                return Some(path);
            }
            if dead[wi] || on_path[wi] || dist[wi] == UNREACHED || d != dist[wi] {
                continue;
            }
            on_path[wi] = true;
            let mut next_edges = Vec::new();
            self.edges(w, &mut next_edges);
            frames.push((wi, next_edges, 0));
        }
        None
    }

    /// Phase 5: while the layout copies more than `budget`, cancels the
    /// cheapest negative cycles through the sink, each of which moves one
    /// replica's worth of load from one member to another and saves copies.
    /// One search from the sink labels the network; every cycle of tight
    /// edges is then a cheapest one, so many are cancelled per search.
    pub(super) fn shift_load(&mut self, budget: usize) -> Result<()> {
        let count = self.vertex_count();
        let sink = self.index(Vertex::Sink);
        while self.copies > budget {
            let mut labels = Labels::new(count, UNREACHED, VecDeque::from([sink]));
            labels.dist[sink] = 0;
            labels.target = Some(sink);
            if let Some(cycle) = labels.run(self) {
                self.cancel(&cycle)?;
                continue;
            }
            if labels.arrival >= 0 {
                break;
            }
            let mut dead = vec![false; count];
            let mut on_path = vec![false; count];
            let mut cancelled = 0;
            while self.copies > budget {
                let Some(mut cycle) =
                    self.tight_path(sink, &labels.dist, labels.arrival, &mut dead, &mut on_path)
                else {
                    break;
                };
                cycle.pop();
                self.cancel(&cycle)?;
                cancelled += 1;
            }
            if cancelled == 0 {
                return Err(Error::Internal(
                    "layout: the cheapest cycle vanished".to_string(),
                ));
            }
        }
        Ok(())
    }

    /// The (partition, member) additions and removals a walk makes: forward
    /// edges into a member add it, reverse edges out of a member remove it;
    /// the rest is bookkeeping of the canonical flow.
    fn changes(&self, edges: impl Iterator<Item = (usize, usize)>) -> (Placements, Placements) {
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

    /// Augments one unit along a source-to-sink `path`.
    fn apply(&mut self, path: &[usize]) {
        let (adds, removes) = self.changes(path.windows(2).map(|w| (w[0], w[1])));
        for (p, m) in removes {
            self.remove(p, m);
        }
        for (p, m) in adds {
            self.add(p, m);
        }
    }

    /// Pushes one unit around a negative `cycle`; returns what it touched.
    pub(super) fn cancel(&mut self, cycle: &[usize]) -> Result<Touched> {
        let closing = (cycle[cycle.len() - 1], cycle[0]);
        let edges = cycle.windows(2).map(|w| (w[0], w[1])).chain([closing]);
        let (adds, removes) = self.changes(edges);
        let mut touched = Touched {
            partitions: Vec::new(),
            members: Vec::new(),
        };
        for &(p, m) in &removes {
            touched.members.extend(self.parts[p].iter().copied());
            self.remove(p, m);
        }
        for &(p, m) in &adds {
            self.add(p, m);
        }
        for &(p, m) in adds.iter().chain(&removes) {
            touched.partitions.push(p);
            touched.members.push(m);
        }
        touched.partitions.sort_unstable();
        touched.partitions.dedup();
        touched.members.sort_unstable();
        touched.members.dedup();
        self.check(&touched.partitions)?;
        Ok(touched)
    }
}
