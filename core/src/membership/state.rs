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
//! whose generation was not bumped (a lost generation write, a data
//! directory restored from an older copy), or a bug. If that version stayed
//! in circulation, it would beat the node's real entry everywhere and freeze
//! its heartbeat in everyone's view. So a digest claiming a newer version of
//! me makes me ask for that entry, and applying it only raises my own
//! version just past it, keeping my content: my next deltas then replace the
//! impostor everywhere. The node stays the only author of its entry: the
//! impostor's content is never taken, and its version only moves mine when
//! it is within the bounds below (a version nobody could outbid, such as a
//! generation of `u64::MAX`, is refused instead of adopted).
//!
//! # Bounds
//!
//! A generation grows by one per start and a heartbeat by one per round or
//! change, so a claim far ahead of what is known was not issued by the node
//! it names. An entry whose generation passes [`MAX_GENERATION`] or jumps
//! more than [`MAX_GENERATION_JUMP`] past the known one, or whose heartbeat
//! passes [`MAX_HEARTBEAT`] or jumps more than [`MAX_HEARTBEAT_JUMP`] within
//! one generation, is refused and counted (`apply_counted`): accepted, it
//! would freeze that node's entry everywhere, since the node's own real
//! versions could never beat it. Digests past the absolute bounds are
//! treated as absent, so the peer is sent our entry. The table holds at most
//! [`MAX_MEMBERS`] nodes, and one message at most
//! [`MAX_ENTRIES_PER_MESSAGE`] entries (deltas and answers to a wanted list
//! are cut there, the entries the receiver lags furthest behind on first;
//! the rest follows in the next rounds, as the digests still show the gap).
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
use crate::ring::MAX_LAYOUT_MEMBERS;
use crate::version::NodeId;

/// Most nodes the member table holds: twice the largest layout, room for
/// every member plus as many joining, leaving and departed nodes. New ids
/// past it are refused, so gossip cannot grow the table without bound.
pub const MAX_MEMBERS: usize = 2 * MAX_LAYOUT_MEMBERS;

/// Most member entries one gossip message carries or is read for; a larger
/// set of deltas goes over several rounds.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 128;

/// Most digests one gossip message is read for: one per member.
pub const MAX_DIGESTS_PER_MESSAGE: usize = MAX_MEMBERS;

/// Highest generation an entry may claim. A generation is bumped once per
/// start of a node: 2^32 starts is beyond any real node's life.
pub const MAX_GENERATION: u64 = 1 << 32;

/// How far an entry's generation may be ahead of the one known for that
/// node: more restarts than this, all unheard, are not plausible.
pub const MAX_GENERATION_JUMP: u64 = 1 << 16;

/// Bound on the heartbeat an entry may claim (claims must stay below it):
/// bumped every round (default 1 s) and on changes, 2^48 lasts millions of
/// years.
pub const MAX_HEARTBEAT: u64 = 1 << 48;

/// How far an entry's heartbeat may be ahead of the known one within the
/// same generation: 2^32 rounds of 1 s is over a century of not hearing
/// from a node that kept running.
pub const MAX_HEARTBEAT_JUMP: u64 = 1 << 32;

/// Whether a node could have issued version `claim`, given the version
/// `known` for it (if any). See the module doc, "Bounds".
pub fn plausible(known: Option<(u64, u64)>, claim: (u64, u64)) -> bool {
    let (generation, heartbeat) = claim;
    // Strictly below MAX_HEARTBEAT, so that outbidding a claim (its
    // heartbeat + 1) stays within the bound itself.
    if generation > MAX_GENERATION || heartbeat >= MAX_HEARTBEAT {
        return false;
    }
    match known {
        None => true,
        Some((known_generation, known_heartbeat)) => {
            if generation > known_generation.saturating_add(MAX_GENERATION_JUMP) {
                false
            } else {
                generation != known_generation
                    || heartbeat <= known_heartbeat.saturating_add(MAX_HEARTBEAT_JUMP)
            }
        }
    }
}

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
    /// Where it serves clients and operators (host:port): what
    /// `Admin.Members` shows and partition-aware clients dial.
    pub address: String,
    /// Where it serves its peers (host:port): replication, gossip and every
    /// other call between nodes. Empty: at `address` (an entry gossiped by
    /// a node from before the peer port).
    pub peer_address: String,
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
    /// Where peers reach the node.
    pub fn peer_address(&self) -> &str {
        if self.peer_address.is_empty() {
            &self.address
        } else {
            &self.peer_address
        }
    }

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
    /// it (what the peer lacks). A peer that is up to date gets nothing.
    /// At most [`MAX_ENTRIES_PER_MESSAGE`], the ones the peer most lags
    /// behind on first (see [`lag`]); the rest goes in later rounds.
    pub fn deltas_for(&self, peer_digests: &[Digest]) -> Vec<MemberInfo> {
        let theirs = versions(peer_digests);
        let mut lacking: Vec<(Lag, &MemberInfo)> = self
            .members
            .values()
            .filter(|entry| theirs.get(&entry.id).is_none_or(|&v| entry.version() > v))
            .map(|entry| (lag(entry.version(), theirs.get(&entry.id).copied()), entry))
            .collect();
        most_lagging_first(&mut lacking);
        lacking
            .into_iter()
            .take(MAX_ENTRIES_PER_MESSAGE)
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    /// Ids the peer holds newer versions of (or that we don't know): what
    /// we should ask for, the ones we most lag behind on first (the peer
    /// answers at most [`MAX_ENTRIES_PER_MESSAGE`] of them, in this order).
    /// Includes my own id when the peer claims a newer version of me, so
    /// that [`apply`](Self::apply) can outbid it.
    pub fn wanted_from(&self, peer_digests: &[Digest]) -> Vec<NodeId> {
        let mut wanted: Vec<(Lag, NodeId)> = versions(peer_digests)
            .into_iter()
            .filter_map(|(id, v)| {
                let ours = self.members.get(&id).map(MemberInfo::version);
                ours.is_none_or(|ours| v > ours).then(|| (lag(v, ours), id))
            })
            .collect();
        most_lagging_first(&mut wanted);
        wanted.into_iter().map(|(_, id)| id).collect()
    }

    /// Our entries for `ids` (for answering a peer's wanted list); ids we
    /// don't know are skipped; at most [`MAX_ENTRIES_PER_MESSAGE`].
    pub fn entries(&self, ids: &[NodeId]) -> Vec<MemberInfo> {
        ids.iter()
            .filter_map(|id| self.members.get(id))
            .take(MAX_ENTRIES_PER_MESSAGE)
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
    /// own id. Entries out of bounds are dropped; see
    /// [`apply_counted`](Self::apply_counted).
    pub fn apply(&mut self, entries: Vec<MemberInfo>) -> Vec<NodeId> {
        self.apply_counted(entries).0
    }

    /// [`apply`](Self::apply), also returning how many entries were refused:
    /// a version no node would issue ([`plausible`]), or a new node while
    /// the table holds [`MAX_MEMBERS`].
    pub fn apply_counted(&mut self, entries: Vec<MemberInfo>) -> (Vec<NodeId>, usize) {
        let mut advanced = BTreeSet::new();
        let mut refused = 0;
        for entry in entries {
            let known = self.members.get(&entry.id).map(MemberInfo::version);
            if known.is_some_and(|v| v >= entry.version()) {
                continue;
            }
            if !plausible(known, entry.version()) {
                refused += 1;
                continue;
            }
            if entry.id == self.me {
                let me = self.me_mut();
                me.generation = entry.generation;
                me.heartbeat = entry.heartbeat + 1;
                continue;
            }
            if known.is_none() && self.members.len() >= MAX_MEMBERS {
                refused += 1;
                continue;
            }
            advanced.insert(entry.id);
            self.members.insert(entry.id, entry);
        }
        (advanced.into_iter().collect(), refused)
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

/// How far a holder of version `behind` (`None`: no entry) lags behind
/// version `ahead` of the same node's entry: not knowing the node at all
/// is the furthest, then generations missed, then heartbeats missed.
/// Ordered so that a larger value is further behind.
type Lag = (bool, u64, u64);

fn lag(ahead: (u64, u64), behind: Option<(u64, u64)>) -> Lag {
    match behind {
        None => (true, 0, 0),
        Some((generation, _)) if generation < ahead.0 => (false, ahead.0 - generation, 0),
        Some((_, heartbeat)) => (false, 0, ahead.1.saturating_sub(heartbeat)),
    }
}

/// Sorts by lag, largest first; equal lags stay in id order (the sort is
/// stable and the inputs come sorted by id).
///
/// Why: a message carries at most [`MAX_ENTRIES_PER_MESSAGE`] entries. In
/// id order, the lowest ids' heartbeat bumps (every entry is bumped every
/// round) would fill every message of a large cluster, and the entries
/// past them, unknown members included, would never be sent. Largest lag
/// first sends unknown members first, and an entry left out grows its lag
/// every round until it goes first: nothing starves.
fn most_lagging_first<T>(items: &mut [(Lag, T)]) {
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
}

/// The peer's version of each id. A digest list with an id twice (never
/// sent by a correct peer) counts as its highest claim; a digest past the
/// absolute bounds counts as absent (so the peer is sent our entry), and
/// digests past [`MAX_DIGESTS_PER_MESSAGE`] are not read.
fn versions(digests: &[Digest]) -> BTreeMap<NodeId, (u64, u64)> {
    let mut map = BTreeMap::new();
    for d in digests
        .iter()
        .take(MAX_DIGESTS_PER_MESSAGE)
        .filter(|d| plausible(None, d.version()))
    {
        let v = map.entry(d.id).or_insert(d.version());
        *v = (*v).max(d.version());
    }
    map
}

#[cfg(test)]
mod tests;
