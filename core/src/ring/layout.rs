//! The layout: the versioned table that says which N nodes hold each
//! partition, in preference order.
//!
//! Every request starts here: the key's partition (see
//! [`partition_of`](super::partition_of)) names a row of the layout, the row's first live replica coordinates, the
//! row's N replicas are the key's home, and [`Layout::preference_list`]
//! continues the row with the fallbacks that sloppy quorums use. Rebalancing
//! compares two layouts ([`Layout::moves_from`]) to know which partition
//! replicas must be streamed.
//!
//! # What a layout guarantees
//!
//! [`Layout::compute`] is a pure, deterministic function of (members with
//! zones and weights, N, Q, previous layout): equal inputs give equal
//! layouts, whatever the order of the member list, so any node can compute
//! it and all agree. Its output satisfies, and the tests check:
//!
//! 1. every partition has exactly N = min(replication, members) distinct
//!    members;
//! 2. while there are at least N zones, every partition's replicas are in N
//!    distinct zones; with fewer zones, every partition spans all of them and
//!    no zone holds more of a partition than the zone sizes force (two zones,
//!    N = 5: a 3 + 2 split);
//! 3. every member holds its *target* number of replicas: its weight share
//!    of Q·N, capped at Q per node (one replica per partition) and at what
//!    the zone rule allows per zone, with the excess redistributed in
//!    proportion to weight, then rounded by largest remainder (so within one
//!    replica of the real-valued share; see `targets`). A layout computed
//!    from a previous one may deviate from the target (use its *slack*),
//!    but only when meeting targets exactly would copy more than 1.1× the
//!    ideal amount of data (below), and never beyond the design's tolerance:
//!    every count is always within ±10 % of its share, or within one
//!    replica when that is more;
//! 4. given a previous layout, it copies as few partition replicas as the
//!    zone rule and balance allow. The ideal is Σ max(0, target − replicas
//!    held before) (for one node added, its target; for one removed, what it
//!    held). With exact targets the solver finds the true minimum, which the
//!    zone rule can push above the ideal (a departed node's replicas may
//!    only be refilled from zones not already in each partition); the slack
//!    then brings it down to at most 1.1× the ideal whenever the ±10 % band
//!    allows, which in tests is always (the design promises 1.2×).
//!
//! # How it is computed
//!
//! First the targets (module `targets`): a two-level proportional division,
//! zones then nodes, in exact fixed-point integer arithmetic, so every node
//! and platform gets the same numbers. Then the assignment (module
//! `assign`): a min-cost maximum flow in a network whose capacities encode
//! rules 1–3 and whose costs count copies relative to the previous layout.
//! A cheap greedy does most of the work (fill each empty slot with the
//! eligible member furthest below target, ties broken by a hash of
//! (partition, member) so that co-replicas are spread over the cluster and a
//! failed node's load is shared by many survivors); shortest augmenting
//! paths, which can move replicas between partitions, finish what the greedy
//! cannot, and cancelling negative cycles proves the result optimal. Being a
//! flow, the solver cannot get stuck: it always finds a complete layout. If
//! that layout copies more than 1.1× the ideal, the sink of the network is
//! re-priced to allow deviations within the slack, and cheapest cycles
//! through it, each trading a little balance for fewer copies, are cancelled
//! until the copies are within 1.1× or the slack is used up.
//!
//! Last, each partition's replicas are ordered. A replica that survives
//! keeps its position from the previous layout (so coordinators change as
//! little as possible); free positions are filled, position by position, with
//! the member that has so far been placed there least often relative to its
//! replica count, which balances coordinators (position 0) across nodes.
//!
//! The greedy costs O(Q·N·M); each search of the network O(Q·N·M) per pass,
//! and one search serves many augmentations. For the default Q = 256 and
//! tens of nodes a layout takes about a millisecond; at Q = 65536 it takes
//! seconds at worst.
//!
//! # Encoding
//!
//! Layouts are gossiped and stored as [`Layout::encode`] bytes (format in
//! `codec`), checksummed and validated on decode. A layout is computed once
//! and then shipped, so nodes running different releases (whose solvers might
//! break ties differently) still agree on the layout in force.

mod assign;
mod codec;
#[cfg(test)]
mod proptests;
mod targets;
#[cfg(test)]
mod tests;
mod transition;

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ring::ClusterId;
use crate::version::NodeId;

pub use codec::{LAYOUT_CHECKSUM_SEED, LAYOUT_FORMAT_VERSION};

/// Most partitions a layout may have; the same bound as configuration
/// (`cluster.partitions`).
pub const MAX_LAYOUT_PARTITIONS: u32 = 65_536;

/// Highest replication factor; the same bound as configuration
/// (`cluster.replication`).
pub const MAX_LAYOUT_REPLICATION: u32 = 16;

/// Most members a layout may have. Far above useful cluster sizes for a
/// Dynamo ring (with Q = 256 a thousand nodes would hold under one replica
/// each); it bounds the solver's work and a decoder's allocations.
pub const MAX_LAYOUT_MEMBERS: usize = 1024;

/// Longest zone name, in bytes; bounds a decoder's allocations.
pub const MAX_ZONE_LEN: usize = 256;

/// A member as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberSpec {
    pub id: NodeId,
    /// Failure domain (rack, availability zone). Replicas of a partition are
    /// spread over as many zones as possible.
    pub zone: String,
    /// Relative share of replicas; at least 1.
    pub weight: u32,
}

/// The versioned partition → replicas table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bumped by every computation, so nodes can tell which layout is newer.
    version: u64,
    /// Q, a power of two, fixed for the cluster's life.
    partitions: u32,
    /// Effective N: min(configured replication, members).
    replication: u32,
    /// Sorted by id, ids distinct; the inputs the layout was computed from,
    /// kept so the next computation and the admin API can see them.
    members: Vec<MemberSpec>,
    /// Q rows of N distinct member ids, row p at `p*N..(p+1)*N`, each in
    /// preference order. One flat vector: one allocation, slices for free.
    replicas: Vec<NodeId>,
    /// The layout this one replaces while its transfers run (see
    /// `transition`); never itself in transition.
    previous: Option<Box<Layout>>,
    /// The cluster this layout belongs to: set at bootstrap and inherited
    /// by every layout computed from it, so a node can tell its own
    /// cluster's layouts from another's. `None` only for layouts stored by
    /// nodes from before cluster ids (codec formats 1 and 2).
    cluster: Option<ClusterId>,
}

impl Layout {
    /// Computes the layout for `members` (any order), `replication` (N,
    /// capped at the member count) and `partitions` (Q), starting from
    /// `previous` so that as little data as possible moves. Deterministic:
    /// the same inputs give an identical layout on every node. The version is
    /// `previous.version + 1`, or 1.
    ///
    /// Errors ([`Error::InvalidArgument`]): no members, more than
    /// [`MAX_LAYOUT_MEMBERS`], Q not a power of two up to
    /// [`MAX_LAYOUT_PARTITIONS`], replication 0 or above
    /// [`MAX_LAYOUT_REPLICATION`], duplicate member ids, weight 0, a zone
    /// name over [`MAX_ZONE_LEN`] bytes. [`Error::FailedPrecondition`]:
    /// `previous` has a different Q (Q never changes) or the version would
    /// overflow.
    pub fn compute(
        members: &[MemberSpec],
        replication: u32,
        partitions: u32,
        previous: Option<&Layout>,
    ) -> Result<Layout> {
        let members = checked_members(members)?;
        if !partitions.is_power_of_two() || partitions > MAX_LAYOUT_PARTITIONS {
            return Err(Error::InvalidArgument(format!(
                "partitions = {partitions}: must be a power of two between 1 and {MAX_LAYOUT_PARTITIONS}"
            )));
        }
        if replication == 0 || replication > MAX_LAYOUT_REPLICATION {
            return Err(Error::InvalidArgument(format!(
                "replication = {replication}: must be between 1 and {MAX_LAYOUT_REPLICATION}"
            )));
        }
        let version = match previous {
            None => 1,
            Some(prev) if prev.partitions != partitions => {
                return Err(Error::FailedPrecondition(format!(
                    "the previous layout has {} partitions, not {partitions}; the partition count never changes",
                    prev.partitions
                )))
            }
            Some(prev) => prev.version.checked_add(1).ok_or_else(|| {
                Error::FailedPrecondition("layout version overflow".to_string())
            })?,
        };

        let q = partitions as usize;
        let n = (replication as usize).min(members.len());
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        let index = |id: &NodeId| ids.binary_search(id).ok();
        let previous_sets: Vec<Vec<usize>> = match previous {
            None => Vec::new(),
            Some(prev) => (0..partitions)
                .map(|p| prev.replicas(p).iter().filter_map(index).collect())
                .collect(),
        };
        let mut previous_counts = vec![0; members.len()];
        for &m in previous_sets.iter().flatten() {
            previous_counts[m] += 1;
        }

        let topology = targets::Topology::new(&members, n);
        let targets =
            targets::targets(&members, &topology, u64::from(partitions), &previous_counts)?;
        let sets = assign::solve(&assign::Input {
            partitions: q,
            topology: &topology,
            targets: &targets.count,
            lo: &targets.lo,
            hi: &targets.hi,
            ids: &ids,
            previous: &previous_sets,
        })?;
        let replicas = order_replicas(&sets, &ids, n, previous);

        let layout = Layout {
            version,
            partitions,
            replication: n as u32,
            members,
            replicas,
            previous: None,
            cluster: previous.and_then(|p| p.cluster),
        };
        layout
            .check()
            .map_err(|e| Error::Internal(format!("computed an invalid layout: {e}")))?;
        Ok(layout)
    }

    /// The cluster this layout belongs to (`None`: a layout from before
    /// cluster ids).
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.cluster
    }

    /// This layout stamped as belonging to cluster `id`: bootstrap stamps
    /// layout v1, and a node from before cluster ids stamps the layout it
    /// holds once it knows its cluster's id.
    pub fn with_cluster_id(mut self, id: ClusterId) -> Layout {
        self.cluster = Some(id);
        self
    }

    /// Increases with every computation; the newest layout wins.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Q.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Effective N: replicas per partition.
    pub fn replication(&self) -> u32 {
        self.replication
    }

    /// The members the layout was computed for, sorted by id.
    pub fn members(&self) -> &[MemberSpec] {
        &self.members
    }

    /// The partition's N replicas in preference order; empty for a partition
    /// out of range (never panics: partition numbers may come off the wire).
    pub fn replicas(&self, partition: u32) -> &[NodeId] {
        let n = self.replication as usize;
        let start = partition as usize * n;
        self.replicas.get(start..start + n).unwrap_or(&[])
    }

    /// The partition's replicas, then its fallbacks: the next distinct nodes
    /// met walking the following partitions (p+1, p+2, …, wrapping) and
    /// taking their replicas in order, then any member holding no replica at
    /// all, by id. Every member appears exactly once. Fallbacks follow ring
    /// order, as in Dynamo, so the nodes that take over a failed replica's
    /// writes are spread rather than always the same. Empty for a partition
    /// out of range.
    pub fn preference_list(&self, partition: u32) -> Vec<NodeId> {
        if partition >= self.partitions {
            return Vec::new();
        }
        let mut seen = vec![false; self.members.len()];
        let mut out = Vec::with_capacity(self.members.len());
        for step in 0..self.partitions {
            let p = (partition + step) & (self.partitions - 1);
            for id in self.replicas(p) {
                if let Some(i) = self.member_index(*id) {
                    if !seen[i] {
                        seen[i] = true;
                        out.push(*id);
                    }
                }
            }
            if out.len() == self.members.len() {
                return out;
            }
        }
        for (member, seen) in self.members.iter().zip(seen) {
            if !seen {
                out.push(member.id);
            }
        }
        out
    }

    /// The partitions (ascending) where `node` is a replica.
    pub fn partitions_of(&self, node: NodeId) -> Vec<u32> {
        (0..self.partitions)
            .filter(|&p| self.replicas(p).contains(&node))
            .collect()
    }

    /// Replicas held by each member, members holding none included.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.members.iter().map(|m| (m.id, 0)).collect();
        for id in &self.replicas {
            *counts.entry(*id).or_default() += 1;
        }
        counts
    }

    /// Partition replicas present in `self` but not in `previous`: the
    /// number of (partition, node) copies a change from `previous` to `self`
    /// must stream. Partitions are matched by number.
    pub fn moves_from(&self, previous: &Layout) -> usize {
        (0..self.partitions)
            .map(|p| {
                let before = previous.replicas(p);
                self.replicas(p)
                    .iter()
                    .filter(|id| !before.contains(id))
                    .count()
            })
            .sum()
    }

    /// Whether `node` is a member (whether or not it holds replicas).
    pub fn contains(&self, node: NodeId) -> bool {
        self.member_index(node).is_some()
    }

    fn member_index(&self, node: NodeId) -> Option<usize> {
        self.members.binary_search_by_key(&node, |m| m.id).ok()
    }

    /// The structural invariants every layout holds, whoever built it:
    /// checked after computing and after decoding.
    fn check(&self) -> std::result::Result<(), String> {
        if self.version == 0 {
            return Err("version 0".to_string());
        }
        if !self.partitions.is_power_of_two() || self.partitions > MAX_LAYOUT_PARTITIONS {
            return Err(format!("{} partitions", self.partitions));
        }
        let n = self.replication as usize;
        if n == 0 || self.replication > MAX_LAYOUT_REPLICATION || n > self.members.len() {
            return Err(format!(
                "replication {n} with {} members",
                self.members.len()
            ));
        }
        if self.members.is_empty() || self.members.len() > MAX_LAYOUT_MEMBERS {
            return Err(format!("{} members", self.members.len()));
        }
        for pair in self.members.windows(2) {
            if pair[0].id >= pair[1].id {
                return Err(format!("member {} duplicated or out of order", pair[1].id));
            }
        }
        if let Some(m) = self
            .members
            .iter()
            .find(|m| m.weight == 0 || m.zone.len() > MAX_ZONE_LEN)
        {
            return Err(format!("member {} has weight 0 or an oversized zone", m.id));
        }
        if self.replicas.len() != self.partitions as usize * n {
            return Err(format!("{} replicas", self.replicas.len()));
        }
        for (p, row) in self.replicas.chunks(n).enumerate() {
            for (i, id) in row.iter().enumerate() {
                if !self.contains(*id) {
                    return Err(format!("partition {p}: {id} is not a member"));
                }
                if row[..i].contains(id) {
                    return Err(format!("partition {p}: {id} appears twice"));
                }
            }
        }
        Ok(())
    }
}

/// Validates the members and returns them sorted by id.
fn checked_members(members: &[MemberSpec]) -> Result<Vec<MemberSpec>> {
    if members.is_empty() {
        return Err(Error::InvalidArgument(
            "a layout needs at least one member".to_string(),
        ));
    }
    if members.len() > MAX_LAYOUT_MEMBERS {
        return Err(Error::InvalidArgument(format!(
            "{} members: at most {MAX_LAYOUT_MEMBERS} are supported",
            members.len()
        )));
    }
    let mut sorted = members.to_vec();
    sorted.sort();
    for pair in sorted.windows(2) {
        if pair[0].id == pair[1].id {
            return Err(Error::InvalidArgument(format!(
                "member {} is listed twice",
                pair[0].id
            )));
        }
    }
    for m in &sorted {
        if m.weight == 0 {
            return Err(Error::InvalidArgument(format!(
                "member {} has weight 0: weights start at 1",
                m.id
            )));
        }
        if m.zone.len() > MAX_ZONE_LEN {
            return Err(Error::InvalidArgument(format!(
                "member {}: zone name longer than {MAX_ZONE_LEN} bytes",
                m.id
            )));
        }
    }
    Ok(sorted)
}

/// Orders each partition's replica set (member indices) into preference
/// order: survivors keep their previous position; free positions go, one by
/// one, to the remaining replica placed there least often so far relative to
/// its replica count (ties: hash of partition and id, then id).
fn order_replicas(
    sets: &[Vec<usize>],
    ids: &[NodeId],
    n: usize,
    previous: Option<&Layout>,
) -> Vec<NodeId> {
    const FREE: usize = usize::MAX;
    let members = ids.len();
    let mut held = vec![0u64; members];
    for &m in sets.iter().flatten() {
        held[m] += 1;
    }
    // placed[i * members + m]: partitions so far with m at position i.
    let mut placed = vec![0u64; n * members];
    let mut out = Vec::with_capacity(sets.len() * n);
    for (p, set) in sets.iter().enumerate() {
        let mut slots = vec![FREE; n];
        if let Some(prev) = previous {
            for (i, id) in prev.replicas(p as u32).iter().enumerate().take(n) {
                if let Ok(m) = ids.binary_search(id) {
                    if set.contains(&m) {
                        slots[i] = m;
                    }
                }
            }
        }
        let mut rest: Vec<usize> = set.iter().copied().filter(|m| !slots.contains(m)).collect();
        for (i, slot) in slots.iter_mut().enumerate() {
            if *slot != FREE {
                continue;
            }
            let row = &placed[i * members..(i + 1) * members];
            let best = (0..rest.len())
                .min_by(|&a, &b| {
                    let (ma, mb) = (rest[a], rest[b]);
                    (u128::from(row[ma]) * u128::from(held[mb]))
                        .cmp(&(u128::from(row[mb]) * u128::from(held[ma])))
                        .then(mix(p, ids[ma]).cmp(&mix(p, ids[mb])))
                        .then(ma.cmp(&mb))
                })
                .unwrap_or(0);
            *slot = rest.swap_remove(best);
        }
        for (i, &m) in slots.iter().enumerate() {
            placed[i * members + m] += 1;
            out.push(ids[m]);
        }
    }
    out
}

/// A fixed hash of (partition, node), used wherever the solver must break a
/// tie "at random" yet identically on every node: splitmix64 finalisers.
fn mix(partition: usize, node: NodeId) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    splitmix(splitmix(partition as u64) ^ node.0)
}
