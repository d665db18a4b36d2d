//! The gossiped membership table and its anti-entropy by digests and deltas.
//!
//! Every node holds one [`MemberInfo`] per node it knows of, itself
//! included: how to reach it (address), where it sits (zone, weight), which
//! incarnation it is (generation), whether it is still running (heartbeat),
//! what it is doing (status) and which layout it holds. Only the node
//! itself writes its own entry; everybody else copies it. That single
//! writer is what makes merging trivial: an entry's version is the pair
//! `(generation, heartbeat)`, ordered lexicographically, and the newer
//! version simply replaces the older one. The generation is bumped at each
//! start of the node, so a restarted node (heartbeat back at 0) still
//! supersedes everything it said in its previous life; the heartbeat is
//! bumped every gossip round and on every change of the entry, so a newer
//! heartbeat always carries the newer content.
//!
//! # A gossip exchange
//!
//! Full state is never sent. A round between an initiator `A` and a peer
//! `B` runs in three messages (the Scuttlebutt reconciliation of van
//! Renesse et al., also used by Cassandra and chitchat):
//!
//! 1. `A` sends its [`digests`](MembershipState::digests): one
//!    `(id, generation, heartbeat)` per entry, a few dozen bytes per node;
//! 2. `B` answers with [`deltas_for`](MembershipState::deltas_for) those
//!    digests (the entries `A` lacks or holds older) and the ids it
//!    [`wants`](MembershipState::wanted_from) from `A`;
//! 3. `A` [`applies`](MembershipState::apply) the deltas and sends back the
//!    [`entries`](MembershipState::entries) `B` asked for, which `B` applies.
//!
//! After the round both hold, for every id either knew, the newer of the two
//! entries. Merging is a per-entry maximum, hence commutative, associative
//! and idempotent: rounds can be lost, repeated or reordered and every node
//! still converges to the newest entry of every node once gossip reaches
//! everybody.
//!
//! # My own entry
//!
//! A node never takes its own entry from gossip, but it can be shown a
//! version of itself newer than the one it holds: state from a previous life
//! whose generation was not bumped (a lost generation file), or a bug. If
//! that version stayed in circulation, it would beat the node's real entry
//! everywhere and freeze its heartbeat in everyone's view. So a digest
//! claiming a newer version of me makes me ask for that entry, and applying
//! it only raises my own version just past it, keeping my content: my next
//! deltas then replace the impostor everywhere.
//!
//! The entries advanced by [`apply`](MembershipState::apply) are the
//! heartbeats the failure detector learns from; liveness itself is not
//! gossiped (it is each node's local opinion, see
//! [`detector`](super::detector)). Nothing here does I/O or reads a clock:
//! `membership/mod.rs` runs the loop and moves the messages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::version::NodeId;

/// Where a node is in its life in the cluster, as the node itself declares
/// it. Serialized lowercase, like every user-facing enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started, not yet in a committed layout: receives no partitions.
    Joining,
    /// Serving its partitions.
    Up,
    /// Draining: its partitions are being transferred away.
    Leaving,
    /// Drained and gone; kept so peers stop expecting it.
    Left,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Up => "up",
            Status::Leaving => "leaving",
            Status::Left => "left",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Status::Joining, Status::Up, Status::Leaving, Status::Left]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "invalid node status {s:?}: expected joining, up, leaving or left"
                ))
            })
    }
}

/// How a node outside the layout asks to enter it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JoinMode {
    /// It does not ask (yet): `cluster.auto_join = false` and no
    /// `ringkv cluster join`.
    #[default]
    None,
    /// `ringkv cluster join`: planned, and entered at the next commit.
    Staged,
    /// `cluster.auto_join`: planned and committed without an operator.
    Auto,
}

impl JoinMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinMode::None => "",
            JoinMode::Staged => "staged",
            JoinMode::Auto => "auto",
        }
    }
}

impl FromStr for JoinMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Ok(JoinMode::None),
            "staged" => Ok(JoinMode::Staged),
            "auto" => Ok(JoinMode::Auto),
            other => Err(Error::InvalidArgument(format!(
                "invalid join mode {other:?}: expected \"\", staged or auto"
            ))),
        }
    }
}

/// One node's entry in the membership table, written only by that node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The node's permanent identity; the table's key.
    pub id: NodeId,
    /// Human-readable name for logs and the CLI; not unique, not a key.
    pub name: String,
    /// Where its gRPC server listens (host:port), for data and gossip RPCs.
    pub address: String,
    /// Failure domain: the layout spreads a partition's replicas over zones.
    pub zone: String,
    /// Relative capacity: the layout gives it partitions in proportion.
    pub weight: u32,
    /// Bumped at each start of the node, so that what it says in this life
    /// supersedes anything from an earlier one.
    pub generation: u64,
    /// Bumped by the node every gossip round and on every change of its own
    /// entry: within a generation, a higher heartbeat is newer content, and
    /// a heartbeat that keeps advancing is what the failure detector hears.
    pub heartbeat: u64,
    /// What the node says it is doing.
    pub status: Status,
    /// The highest layout version the node holds, so peers see who still
    /// needs the latest layout.
    pub layout_version: u64,
    /// The highest layout version whose incoming partition transfers the
    /// node has finished; the claimant retires a change once every node
    /// that gains partitions reports it.
    pub transfers_done: u64,
    /// Whether and how the node asks to enter the layout.
    pub join: JoinMode,
    /// Approximate bytes stored, for the estimates of a plan.
    pub storage_bytes: u64,
}

impl MemberInfo {
    /// The entry's version `(generation, heartbeat)`; a larger one
    /// (lexicographically) replaces a smaller one.
    pub fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }

    /// The digest that stands for this entry in a gossip exchange.
    pub fn digest(&self) -> Digest {
        Digest {
            id: self.id,
            generation: self.generation,
            heartbeat: self.heartbeat,
        }
    }
}

/// (id, generation, heartbeat) summary of one entry: what a peer needs to
/// tell whether our entry is newer than its own without receiving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    pub id: NodeId,
    pub generation: u64,
    pub heartbeat: u64,
}

impl Digest {
    /// The version of the entry this digest summarises.
    pub fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }
}

/// The membership table as this node sees it.
#[derive(Clone, Debug)]
pub struct MembershipState {
    /// This node: the one entry never taken from gossip.
    me: NodeId,
    /// Every known node's newest entry, mine included; ordered so that
    /// digests, deltas and listings come out in the same order everywhere.
    members: BTreeMap<NodeId, MemberInfo>,
}

impl MembershipState {
    /// A table holding only this node's own entry.
    pub fn new(me: MemberInfo) -> Self {
        let id = me.id;
        MembershipState {
            me: id,
            members: BTreeMap::from([(id, me)]),
        }
    }

    /// This node's own entry.
    pub fn me(&self) -> &MemberInfo {
        &self.members[&self.me]
    }

    pub fn my_id(&self) -> NodeId {
        self.me
    }

    /// One gossip round passed: advance my heartbeat so peers hear I am alive.
    pub fn tick(&mut self) {
        self.me_mut().heartbeat += 1;
    }

    /// Declares a new status; the heartbeat bump makes it newer than the
    /// entry peers hold, so it spreads.
    pub fn set_status(&mut self, status: Status) {
        let me = self.me_mut();
        if me.status != status {
            me.status = status;
            me.heartbeat += 1;
        }
    }

    /// Records that this node finished receiving the partitions of layout
    /// `version`.
    pub fn set_transfers_done(&mut self, version: u64) {
        let me = self.me_mut();
        if me.transfers_done < version {
            me.transfers_done = version;
            me.heartbeat += 1;
        }
    }

    /// Declares how this node asks to enter the layout.
    pub fn set_join(&mut self, join: JoinMode) {
        let me = self.me_mut();
        if me.join != join {
            me.join = join;
            me.heartbeat += 1;
        }
    }

    /// Records the approximate bytes this node stores; it travels with the
    /// next heartbeat.
    pub fn set_storage_bytes(&mut self, bytes: u64) {
        self.me_mut().storage_bytes = bytes;
    }

    /// Records the highest layout version this node holds; bumps the
    /// heartbeat when it changes so peers learn of it.
    pub fn set_layout_version(&mut self, version: u64) {
        let me = self.me_mut();
        if me.layout_version != version {
            me.layout_version = version;
            me.heartbeat += 1;
        }
    }

    /// A digest of every entry, mine included, sorted by id.
    pub fn digests(&self) -> Vec<Digest> {
        self.members.values().map(MemberInfo::digest).collect()
    }

    /// Entries we hold that are newer than the peer's digest or absent from
    /// it (what the peer lacks), sorted by id. A peer that is up to date
    /// gets nothing.
    pub fn deltas_for(&self, peer_digests: &[Digest]) -> Vec<MemberInfo> {
        let theirs = versions(peer_digests);
        self.members
            .values()
            .filter(|entry| theirs.get(&entry.id).is_none_or(|&v| entry.version() > v))
            .cloned()
            .collect()
    }

    /// Ids the peer holds newer versions of (or that we don't know): what
    /// we should ask for, sorted by id. Includes my own id when the peer
    /// claims a newer version of me, so that [`apply`](Self::apply) can
    /// outbid it.
    pub fn wanted_from(&self, peer_digests: &[Digest]) -> Vec<NodeId> {
        versions(peer_digests)
            .into_iter()
            .filter(|(id, v)| self.members.get(id).is_none_or(|ours| *v > ours.version()))
            .map(|(id, _)| id)
            .collect()
    }

    /// Our entries for `ids` (for answering a peer's wanted list); ids we
    /// don't know are skipped.
    pub fn entries(&self, ids: &[NodeId]) -> Vec<MemberInfo> {
        ids.iter()
            .filter_map(|id| self.members.get(id))
            .cloned()
            .collect()
    }

    /// Merges received entries, keeping an entry only if its version is
    /// newer than ours.
    ///
    /// An entry about me that claims a newer version than mine is not
    /// accepted; my own version is raised just past it instead (adopting
    /// its generation if that is higher, then its heartbeat + 1) so that my
    /// entry wins everywhere. My content is never changed by gossip.
    ///
    /// Returns the ids whose entry advanced, sorted and without duplicates:
    /// the caller feeds them to the failure detector as heartbeats. Never my
    /// own id.
    pub fn apply(&mut self, entries: Vec<MemberInfo>) -> Vec<NodeId> {
        let mut advanced = BTreeSet::new();
        for entry in entries {
            if entry.id == self.me {
                let me = self.me_mut();
                if entry.version() > me.version() {
                    me.generation = entry.generation;
                    me.heartbeat = entry.heartbeat.saturating_add(1);
                }
                continue;
            }
            match self.members.get_mut(&entry.id) {
                Some(ours) if ours.version() >= entry.version() => {}
                Some(ours) => {
                    advanced.insert(entry.id);
                    *ours = entry;
                }
                None => {
                    advanced.insert(entry.id);
                    self.members.insert(entry.id, entry);
                }
            }
        }
        advanced.into_iter().collect()
    }

    pub fn get(&self, id: NodeId) -> Option<&MemberInfo> {
        self.members.get(&id)
    }

    /// Every known node, me included, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values()
    }

    /// Number of known nodes, me included (so never 0).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false (the table holds at least me); present for the
    /// `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn me_mut(&mut self) -> &mut MemberInfo {
        self.members
            .get_mut(&self.me)
            .expect("the membership table always holds my own entry")
    }
}

/// The peer's version of each id. A digest list with an id twice (never
/// sent by a correct peer) counts as its highest claim.
fn versions(digests: &[Digest]) -> BTreeMap<NodeId, (u64, u64)> {
    let mut map = BTreeMap::new();
    for d in digests {
        let v = map.entry(d.id).or_insert(d.version());
        *v = (*v).max(d.version());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn info(id: u64, generation: u64, heartbeat: u64) -> MemberInfo {
        MemberInfo {
            id: NodeId(id),
            name: format!("node-{id}"),
            address: format!("10.0.0.{id}:7000"),
            zone: format!("z{}", id % 3),
            weight: 100,
            generation,
            heartbeat,
            status: Status::Up,
            layout_version: 1,
            transfers_done: 0,
            join: JoinMode::None,
            storage_bytes: 0,
        }
    }

    /// One Scuttlebutt round from `a` to `b`, as `membership/mod.rs` runs it.
    /// Returns what each side's `apply` reported.
    fn exchange(nodes: &mut [MembershipState], a: usize, b: usize) -> (Vec<NodeId>, Vec<NodeId>) {
        let digests_a = nodes[a].digests();
        let deltas = nodes[b].deltas_for(&digests_a);
        let wanted = nodes[b].wanted_from(&digests_a);
        let advanced_a = nodes[a].apply(deltas);
        let reply = nodes[a].entries(&wanted);
        let advanced_b = nodes[b].apply(reply);
        (advanced_a, advanced_b)
    }

    fn table(state: &MembershipState) -> Vec<MemberInfo> {
        state.members().cloned().collect()
    }

    fn converged(nodes: &[MembershipState]) -> bool {
        nodes.windows(2).all(|w| table(&w[0]) == table(&w[1]))
    }

    /// Random gossip rounds until every node holds the same table; panics
    /// if that takes unreasonably long. Returns the common table.
    fn gossip_until_converged(nodes: &mut [MembershipState], seed: u64) -> Vec<MemberInfo> {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..10_000 {
            if converged(nodes) {
                return table(&nodes[0]);
            }
            let a = rng.random_range(0..nodes.len());
            let b = (a + rng.random_range(1..nodes.len())) % nodes.len();
            exchange(nodes, a, b);
        }
        panic!("no convergence after 10000 rounds");
    }

    /// `n` nodes that each know only themselves and node 0 (the seed), with
    /// varied versions and content.
    fn cluster(n: u64, seed: u64) -> Vec<MembershipState> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes: Vec<_> = (1..=n)
            .map(|id| {
                MembershipState::new(info(id, rng.random_range(1..4), rng.random_range(0..50)))
            })
            .collect();
        let seed_entry = nodes[0].me().clone();
        for node in &mut nodes[1..] {
            node.apply(vec![seed_entry.clone()]);
        }
        nodes
    }

    #[test]
    fn random_gossip_converges_to_the_newest_entries() {
        for seed in 0..20 {
            let n = 3 + seed % 6;
            let mut nodes = cluster(n, seed);
            // Each node changes its own entry a few times along the way.
            let mut rng = StdRng::seed_from_u64(seed ^ 0xfeed);
            for round in 0..50 {
                let i = rng.random_range(0..nodes.len());
                match round % 3 {
                    0 => nodes[i].tick(),
                    1 => nodes[i].set_status(Status::Leaving),
                    _ => nodes[i].set_layout_version(round),
                }
                let j = (i + 1) % nodes.len();
                exchange(&mut nodes, i, j);
            }
            let newest: Vec<MemberInfo> = nodes.iter().map(|s| s.me().clone()).collect();
            let common = gossip_until_converged(&mut nodes, seed);
            assert_eq!(common, newest, "seed {seed}");
        }
    }

    #[test]
    fn restart_supersedes_the_old_life() {
        let mut nodes = vec![
            MembershipState::new(info(1, 1, 0)),
            MembershipState::new(info(2, 1, 500)),
        ];
        exchange(&mut nodes, 0, 1);
        assert_eq!(nodes[0].get(NodeId(2)).unwrap().heartbeat, 500);

        // Node 2 restarts: new generation, heartbeat from 0, new address.
        let mut reborn = info(2, 2, 0);
        reborn.address = "10.0.1.2:7000".into();
        nodes[1] = MembershipState::new(reborn.clone());
        let (advanced, _) = exchange(&mut nodes, 0, 1);
        assert_eq!(advanced, [NodeId(2)]);
        assert_eq!(nodes[0].get(NodeId(2)), Some(&reborn));

        // The old life, still circulating somewhere, is now stale.
        assert!(nodes[0].apply(vec![info(2, 1, 900)]).is_empty());
        assert_eq!(nodes[0].get(NodeId(2)), Some(&reborn));
    }

    #[test]
    fn stale_and_equal_entries_are_ignored() {
        let mut state = MembershipState::new(info(1, 1, 0));
        assert_eq!(state.apply(vec![info(2, 3, 10)]), [NodeId(2)]);
        assert!(state.apply(vec![info(2, 3, 9), info(2, 2, 99)]).is_empty());
        let mut same_version = info(2, 3, 10);
        same_version.status = Status::Left;
        assert!(state.apply(vec![same_version]).is_empty());
        assert_eq!(state.get(NodeId(2)), Some(&info(2, 3, 10)));
        assert_eq!(
            state.apply(vec![info(2, 3, 11), info(2, 3, 12)]),
            [NodeId(2)],
            "duplicates are reported once"
        );
        assert_eq!(state.get(NodeId(2)).unwrap().heartbeat, 12);
    }

    #[test]
    fn deltas_hold_only_what_the_peer_lacks() {
        let mut nodes = cluster(5, 7);
        gossip_until_converged(&mut nodes, 7);
        let digests = nodes[1].digests();
        assert!(nodes[0].deltas_for(&digests).is_empty());
        assert!(nodes[0].wanted_from(&digests).is_empty());

        nodes[2].tick();
        let (a, b) = (nodes[2].clone(), &nodes[0]);
        assert_eq!(a.deltas_for(&b.digests()), [a.me().clone()]);
        assert_eq!(b.wanted_from(&a.digests()), [NodeId(3)]);
        assert!(b.deltas_for(&a.digests()).is_empty());

        // An unknown peer (empty digests) gets everything.
        assert_eq!(a.deltas_for(&[]).len(), a.len());
    }

    #[test]
    fn an_impostor_of_me_is_outbid_not_adopted() {
        // Node 1 restarted without bumping its generation: peers still hold
        // its old entry with a higher heartbeat.
        let mut old = info(1, 4, 700);
        old.address = "old:7000".into();
        let mut peer = MembershipState::new(info(2, 1, 0));
        peer.apply(vec![old.clone()]);
        let me = MembershipState::new(info(1, 4, 3));

        assert!(me
            .deltas_for(&peer.digests())
            .iter()
            .all(|e| e.id != NodeId(1)));
        assert_eq!(me.wanted_from(&peer.digests()), [NodeId(1), NodeId(2)]);
        let mut nodes = vec![me, peer];
        let (advanced, _) = exchange(&mut nodes, 0, 1);
        assert_eq!(advanced, [NodeId(2)], "never my own id");
        assert_eq!(nodes[0].me().version(), (4, 701));
        assert_eq!(nodes[0].me().address, "10.0.0.1:7000");

        // A claim from a later generation is outbid too.
        assert!(nodes[0].apply(vec![info(1, 9, 2)]).is_empty());
        assert_eq!(nodes[0].me().version(), (9, 3));

        // Next round the real entry replaces the impostor at the peer.
        exchange(&mut nodes, 0, 1);
        assert_eq!(nodes[1].get(NodeId(1)), Some(nodes[0].me()));
    }

    #[test]
    fn own_changes_bump_the_heartbeat() {
        let mut state = MembershipState::new(info(1, 1, 0));
        state.tick();
        assert_eq!(state.me().heartbeat, 1);
        state.set_status(Status::Leaving);
        assert_eq!(
            (state.me().status, state.me().heartbeat),
            (Status::Leaving, 2)
        );
        state.set_layout_version(1); // unchanged
        assert_eq!(state.me().heartbeat, 2);
        state.set_layout_version(5);
        assert_eq!((state.me().layout_version, state.me().heartbeat), (5, 3));
        assert_eq!(state.my_id(), NodeId(1));
        assert_eq!((state.len(), state.is_empty()), (1, false));
    }

    #[test]
    fn members_are_sorted_and_entries_skip_unknown_ids() {
        let mut state = MembershipState::new(info(5, 1, 0));
        state.apply(vec![info(9, 1, 0), info(2, 1, 0)]);
        let ids: Vec<_> = state.members().map(|m| m.id).collect();
        assert_eq!(ids, [NodeId(2), NodeId(5), NodeId(9)]);
        let found = state.entries(&[NodeId(9), NodeId(7)]);
        assert_eq!(found, [info(9, 1, 0)]);
    }

    #[test]
    fn status_text_round_trips() {
        for status in [Status::Joining, Status::Up, Status::Leaving, Status::Left] {
            assert_eq!(status.to_string().parse::<Status>().unwrap(), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert!("Up".parse::<Status>().is_err());
        assert!("down".parse::<Status>().is_err());
    }

    fn arb_entry() -> impl Strategy<Value = MemberInfo> {
        (1u64..6, 0u64..4, 0u64..20, any::<bool>()).prop_map(|(id, g, h, leaving)| {
            let mut e = info(id, g, h);
            if leaving {
                e.status = Status::Leaving;
            }
            e
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the starting tables and whichever order the rounds run
        /// in, gossip converges, and to the same table: each id's newest entry.
        #[test]
        fn convergence_is_independent_of_round_order(
            n in 3usize..=8,
            known in prop::collection::vec(arb_entry(), 0..40),
            order_a in any::<u64>(),
            order_b in any::<u64>(),
        ) {
            // Node i owns id i+1; the others' entries are scattered hearsay,
            // none newer than what the owner holds.
            let mut nodes: Vec<MembershipState> =
                (1..=n as u64).map(|id| MembershipState::new(info(id, 4, 20))).collect();
            for (k, entry) in known.into_iter().enumerate() {
                if entry.id.0 <= n as u64 {
                    nodes[k % n].apply(vec![entry]);
                }
            }
            let expected: Vec<MemberInfo> = nodes.iter().map(|s| s.me().clone()).collect();

            let mut a = nodes.clone();
            let mut b = nodes;
            let common_a = gossip_until_converged(&mut a, order_a);
            let common_b = gossip_until_converged(&mut b, order_b);
            prop_assert_eq!(&common_a, &common_b);
            prop_assert_eq!(&common_a, &expected);
        }

        /// `apply` never reports my id, never lowers my version and never
        /// changes my content; other entries only move forward.
        #[test]
        fn apply_never_lowers_anything(
            batches in prop::collection::vec(prop::collection::vec(arb_entry(), 0..8), 1..10),
        ) {
            let mine = info(1, 2, 10);
            let mut state = MembershipState::new(mine.clone());
            for batch in batches {
                let before = table(&state);
                let advanced = state.apply(batch);
                prop_assert!(!advanced.contains(&NodeId(1)));
                let me = state.me();
                prop_assert!(me.version() >= before[0].version());
                prop_assert_eq!(
                    (&me.name, &me.address, &me.zone, me.status, me.layout_version),
                    (&mine.name, &mine.address, &mine.zone, mine.status, mine.layout_version)
                );
                for old in &before {
                    let new = state.get(old.id).unwrap();
                    prop_assert!(new.version() >= old.version());
                    prop_assert_eq!(
                        new.version() > old.version() && old.id != NodeId(1),
                        advanced.contains(&old.id)
                    );
                }
            }
        }
    }
}
