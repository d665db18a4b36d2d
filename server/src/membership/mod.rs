//! Membership: who is in the cluster, who is alive, and which layout routes
//! requests.
//!
//! Each node gossips every `gossip.interval_ms` to `gossip.fanout` random
//! peers (and to its seeds while it knows few peers or has no layout). A
//! round is push-pull with deltas only: the sender sends the digests
//! (id, generation, heartbeat) of every entry it holds plus its own entry;
//! the receiver merges, answers with the entries the sender lacks and
//! names the entries it wants; the sender then pushes those. A node bumps
//! its own heartbeat each round and its generation at each start, so a
//! restarted node's entry supersedes its old one everywhere.
//!
//! Liveness is a local opinion ([`detector::FailureDetector`]): phi-accrual
//! on the arrival of fresh heartbeats, overridden by direct RPC failures.
//! It changes routing, never membership.
//!
//! The layout travels beside gossip: entries carry the layout version each
//! node holds, and a node that sees a higher version fetches that layout
//! (`Internal.GetLayout`), checks it and stores it in the `meta` column
//! family. The first layout comes from bootstrap: once a fresh node sees
//! `cluster.bootstrap_expect` members, the lowest node id among them
//! computes layout v1 and the others fetch it.
//!
//! Every layout, gossip message and internal call carries the cluster id;
//! a node that knows its id refuses those of another cluster, so a node
//! pointed at a foreign seed never takes that cluster's layout and never
//! retires its data for it ([`identity`]). Gossip is bounded: versions no
//! node would issue, table growth past a limit and oversized messages are
//! refused and counted (see [`state`]).
//!
//! Why not a gossip crate: `chitchat` and `foca` bring their own UDP
//! transports, while ringkv's internal traffic goes over the nodes' gRPC
//! channel so that one fault switch (and later TLS and auth) covers all of
//! it. The state merge and the detector are small, pure and tested here.

pub mod detector;
mod gossip;
mod identity;
pub mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::peer::{AddressBook, Gossip, GossipAnswer, Observer, Peer, Peers};
use crate::ring::{ClusterId, Layout, MemberSpec};
use crate::storage::{Cf, Engine, WriteBatch};
use crate::version::NodeId;

use detector::{FailureDetector, Liveness};
pub use gossip::GossipWorker;
use state::{
    JoinMode, MemberInfo, MembershipState, Status, MAX_DIGESTS_PER_MESSAGE, MAX_ENTRIES_PER_MESSAGE,
};

/// `meta` column family key of the stored layout.
const LAYOUT_KEY: &[u8] = b"layout";

/// `meta` key present once an operator asked this node to leave.
const LEAVING_KEY: &[u8] = b"leaving";

/// `meta` key of the seed given to `ringkv cluster join`.
const JOIN_SEED_KEY: &[u8] = b"join_seed";

/// One member as this node sees it.
#[derive(Clone, Debug)]
pub struct MemberView {
    pub info: MemberInfo,
    pub liveness: Liveness,
    pub phi: f64,
}

/// The node's view of the cluster, shared by the coordinator, the API and
/// the gossip loop.
pub struct Cluster {
    me: NodeId,
    config: Arc<Config>,
    state: Mutex<MembershipState>,
    detector: Mutex<FailureDetector>,
    layout: RwLock<Option<Arc<Layout>>>,
    /// Where the layout is persisted.
    engine: Arc<dyn Engine>,
    /// Calls to other nodes.
    peers: Arc<Peers>,
    /// Where the members are, published for the network as gossip brings
    /// their addresses.
    addresses: Arc<AddressBook>,
    /// Origin of the monotonic milliseconds fed to the detector.
    started: tokio::time::Instant,
    /// Where to look for the cluster: `cluster.seeds`, plus a seed given to
    /// `ringkv cluster join`.
    seeds: Mutex<Vec<String>>,
    /// An operator asked this node to leave (kept across restarts).
    leaving: AtomicBool,
    /// Picks gossip peers; seeded by simulations so that a run replays.
    rng: Mutex<StdRng>,
}

impl Cluster {
    /// Builds the view, loading a stored layout if there is one.
    pub fn new(
        me: MemberInfo,
        config: Arc<Config>,
        engine: Arc<dyn Engine>,
        peers: Arc<Peers>,
        addresses: Arc<AddressBook>,
    ) -> Result<Arc<Cluster>> {
        let layout = match engine.get(Cf::Meta, LAYOUT_KEY)? {
            None => None,
            Some(bytes) => {
                let layout = Layout::decode(&bytes)?;
                if layout.partitions() != config.cluster.partitions {
                    return Err(Error::Config(format!(
                        "cluster.partitions = {} but this node's data was created with {}; partitions are fixed for a cluster's life",
                        config.cluster.partitions,
                        layout.partitions()
                    )));
                }
                Some(Arc::new(layout))
            }
        };
        identity::load(engine.as_ref(), layout.as_deref(), &peers.identity)?;
        let leaving = engine.get(Cf::Meta, LEAVING_KEY)?.is_some();
        let mut seeds = config.cluster.seeds.clone();
        let mut me = me;
        if let Some(seed) = engine.get(Cf::Meta, JOIN_SEED_KEY)? {
            let seed = String::from_utf8_lossy(&seed).into_owned();
            if !seeds.contains(&seed) {
                seeds.push(seed);
            }
            if me.join == JoinMode::None {
                me.join = JoinMode::Staged;
            }
        }
        let id = me.id;
        // A node may send to itself too (a hint readdressed to the
        // partition's new replicas, this node among them).
        addresses.set(id, me.peer_address());
        let mut state = MembershipState::new(me);
        if let Some(l) = &layout {
            state.set_layout_version(l.version());
        }
        let detector = FailureDetector::new(
            config.gossip.phi_threshold,
            config.gossip.interval_ms as f64,
        );
        let cluster = Arc::new(Cluster {
            me: id,
            config,
            state: Mutex::new(state),
            detector: Mutex::new(detector),
            layout: RwLock::new(layout),
            engine,
            peers,
            addresses,
            started: tokio::time::Instant::now(),
            seeds: Mutex::new(seeds),
            leaving: AtomicBool::new(leaving),
            rng: Mutex::new(StdRng::from_os_rng()),
        });
        let observer: Arc<dyn Observer> = cluster.clone();
        cluster.peers.observe(Arc::downgrade(&observer));
        Ok(cluster)
    }

    /// Makes this node's random choices (which peers it gossips with)
    /// follow `seed`, so that a simulation replays exactly.
    pub fn seed_random(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(seed);
    }

    /// Calls to other nodes.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Publishes the addresses of `ids` (just applied) for the network.
    fn publish_addresses(&self, state: &MembershipState, ids: &[NodeId]) {
        for id in ids {
            if let Some(member) = state.get(*id) {
                self.addresses.set(*id, member.peer_address());
            }
        }
    }

    /// This node's own gossiped entry.
    pub fn my_entry(&self) -> MemberInfo {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .me()
            .clone()
    }

    /// One member's entry with its liveness, if known.
    pub fn member(&self, node: NodeId) -> Option<MemberView> {
        self.members().into_iter().find(|m| m.info.id == node)
    }

    /// The node an operator means by `name`: a node id, or a unique name.
    pub fn resolve(&self, name: &str) -> Result<NodeId> {
        if let Ok(id) = name.parse::<NodeId>() {
            return Ok(id);
        }
        let matches: Vec<NodeId> = self
            .members()
            .into_iter()
            .filter(|m| m.info.name == name)
            .map(|m| m.info.id)
            .collect();
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::InvalidArgument(format!(
                "no member is called {name:?}; `ringkv cluster status` lists ids and names"
            ))),
            _ => Err(Error::InvalidArgument(format!(
                "{} members are called {name:?}; name the node by id",
                matches.len()
            ))),
        }
    }

    /// The member that makes cluster changes (plans, commits, the end of a
    /// transfer): the lowest id among the layout's live members, so that
    /// every node that sees the same members picks the same one.
    pub fn claimant(&self) -> Option<NodeId> {
        let layout = self.layout()?;
        let mut ids: Vec<NodeId> = layout.members().iter().map(|m| m.id).collect();
        if let Some(prev) = layout.previous() {
            ids.extend(prev.members().iter().map(|m| m.id));
        }
        ids.into_iter().filter(|id| self.is_alive(*id)).min()
    }

    /// Makes this fresh node join the cluster `seed` belongs to: it gossips
    /// with the seed and asks to enter the layout (at once with
    /// `cluster.auto_join`, else at the next commit).
    pub fn join(&self, seed: &str) -> Result<String> {
        if seed.trim().is_empty() || !seed.contains(':') {
            return Err(Error::InvalidArgument(format!(
                "seed {seed:?} must be host:port of a node of the cluster"
            )));
        }
        if self.layout().is_some_and(|l| l.contains(self.me)) {
            return Err(Error::FailedPrecondition(
                "this node is already a member of the layout; nothing to join".to_string(),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, JOIN_SEED_KEY, seed.as_bytes().to_vec());
        self.engine.write(batch)?;
        {
            let mut seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner());
            if !seeds.iter().any(|s| s == seed) {
                seeds.push(seed.to_string());
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let auto = state.me().join == JoinMode::Auto;
        if !auto {
            state.set_join(JoinMode::Staged);
        }
        Ok(if auto {
            format!(
                "joining through {seed}; cluster.auto_join commits this node without an operator"
            )
        } else {
            format!("joining through {seed}; staged: run `ringkv cluster plan`, then `ringkv cluster commit`")
        })
    }

    /// Marks this node as leaving: the next plan drains its partitions.
    pub fn leave(&self) -> Result<()> {
        let Some(layout) = self.layout() else {
            return Err(Error::FailedPrecondition(
                "this node is in no layout; there is nothing to leave".to_string(),
            ));
        };
        if !layout.contains(self.me) {
            return Err(Error::FailedPrecondition(
                "this node holds no partitions in the current layout; it can simply be stopped"
                    .to_string(),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, LEAVING_KEY, Vec::new());
        self.engine.write(batch)?;
        self.leaving.store(true, Ordering::SeqCst);
        self.refresh_status();
        Ok(())
    }

    /// Records that this node received every partition it gains in layout
    /// `version`.
    pub fn set_transfers_done(&self, version: u64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_transfers_done(version);
    }

    /// Declares this node's status from the layout and the operator's
    /// requests: `up` in the layout, `leaving` while asked to leave or
    /// while its partitions drain away, `left` once a layout without it is
    /// settled after a leave, `joining` otherwise.
    fn refresh_status(&self) {
        let layout = self.layout();
        let leaving = self.leaving.load(Ordering::SeqCst);
        let status = match &layout {
            None => Status::Joining,
            Some(l) if l.contains(self.me) => {
                if leaving {
                    Status::Leaving
                } else {
                    Status::Up
                }
            }
            Some(l) if l.previous().is_some_and(|p| p.contains(self.me)) => Status::Leaving,
            Some(_) if leaving => Status::Left,
            Some(_) => Status::Joining,
        };
        let bytes = self.engine.approximate_size_bytes();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.set_status(status);
        state.set_storage_bytes(bytes);
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Q, the cluster's fixed number of partitions.
    pub fn partitions(&self) -> u32 {
        self.config.cluster.partitions
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The layout requests are routed with; `None` while the cluster forms.
    pub fn layout(&self) -> Option<Arc<Layout>> {
        self.layout
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn address_of(&self, node: NodeId) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|m| m.address.clone())
    }

    pub fn liveness(&self, node: NodeId) -> Liveness {
        if node == self.me {
            return Liveness::Alive;
        }
        let now = self.now_ms();
        self.detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .liveness(node, now)
    }

    pub fn is_alive(&self, node: NodeId) -> bool {
        self.liveness(node) == Liveness::Alive
    }

    /// Direct evidence from a failed call: the node is treated as down
    /// until a fresh heartbeat arrives.
    pub fn rpc_failed(&self, node: NodeId) {
        let now = self.now_ms();
        self.detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rpc_failed(node, now);
    }

    pub fn rpc_succeeded(&self, node: NodeId) {
        let now = self.now_ms();
        self.detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rpc_succeeded(node, now);
    }

    /// The ids of every member this node knows of (those that left
    /// included, as gossip keeps them), without liveness: the nodes that
    /// may have written a version of some key.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .members()
            .map(|m| m.id)
            .collect()
    }

    /// Every known member with its liveness, sorted by id.
    pub fn members(&self) -> Vec<MemberView> {
        let infos: Vec<MemberInfo> = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .members()
            .cloned()
            .collect();
        let now = self.now_ms();
        let detector = self.detector.lock().unwrap_or_else(|p| p.into_inner());
        infos
            .into_iter()
            .map(|info| {
                let (liveness, phi) = if info.id == self.me {
                    (Liveness::Alive, 0.0)
                } else {
                    (detector.liveness(info.id, now), detector.phi(info.id, now))
                };
                MemberView {
                    info,
                    liveness,
                    phi,
                }
            })
            .collect()
    }

    /// Answers a peer's gossip. `theirs` is the cluster id the call carried
    /// (the transport already refused one that differs from ours) and
    /// `sender` the node it came from.
    pub fn handle_gossip(
        &self,
        req: Gossip,
        theirs: Option<ClusterId>,
        sender: Option<NodeId>,
    ) -> Result<GossipAnswer> {
        if req.cluster_name != self.config.cluster.name {
            return Err(Error::FailedPrecondition(format!(
                "gossip from cluster {:?}, but this node belongs to {:?}; check cluster.name and cluster.seeds",
                req.cluster_name, self.config.cluster.name
            )));
        }
        // A correct peer never sends more; the excess is not read.
        let excess = req.entries.len().saturating_sub(MAX_ENTRIES_PER_MESSAGE);
        let entries: Vec<MemberInfo> = req
            .entries
            .into_iter()
            .take(MAX_ENTRIES_PER_MESSAGE)
            .collect();
        let mut digests = req.digests;
        digests.truncate(MAX_DIGESTS_PER_MESSAGE);
        let peer = sender
            .map(|s| s.to_string())
            .unwrap_or_else(|| "a node without id".to_string());
        let entries = self.admit_gossip(theirs, sender, &peer, entries)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (advanced, refused) = state.apply_counted(entries);
        self.publish_addresses(&state, &advanced);
        self.gossip_refused(refused + excess, &peer);
        let response = if digests.is_empty() {
            GossipAnswer::default()
        } else {
            GossipAnswer {
                entries: state.deltas_for(&digests),
                wanted: state.wanted_from(&digests),
                cluster: None,
            }
        };
        drop(state);
        self.heartbeats(&advanced);
        Ok(response)
    }

    /// Counts gossiped entries refused as out of bounds.
    fn gossip_refused(&self, refused: usize, peer: &str) {
        if refused > 0 {
            self.peers
                .identity
                .metrics()
                .gossip_entries_refused(refused);
            debug!(%peer, refused, "refused gossiped entries out of bounds");
        }
    }

    fn heartbeats(&self, ids: &[NodeId]) {
        if ids.is_empty() {
            return;
        }
        let now = self.now_ms();
        let mut detector = self.detector.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            detector.heartbeat(*id, now);
        }
    }

    /// One gossip round: tick, exchange with a few peers, then adopt a
    /// newer layout or bootstrap one.
    pub async fn gossip_round(self: &Arc<Self>) {
        let (digests, me_entry, peers) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.tick();
            let peers: Vec<(NodeId, String)> = state
                .members()
                .filter(|m| m.id != self.me && m.status != Status::Left)
                .map(|m| (m.id, m.peer_address().to_string()))
                .collect();
            (state.digests(), state.me().clone(), peers)
        };
        let fanout = self.config.gossip.fanout;
        let mut targets: Vec<(Option<NodeId>, String)> = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let mut chosen = peers.clone();
            chosen.shuffle(&mut *rng);
            chosen.truncate(fanout);
            chosen.into_iter().map(|(id, a)| (Some(id), a)).collect()
        };
        if peers.len() < fanout || self.layout().is_none() {
            let own = self.config.peer_advertise_address();
            let seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for seed in &seeds {
                let known = peers.iter().any(|(_, a)| a == seed);
                if *seed != own && !known {
                    targets.push((None, seed.clone()));
                }
            }
        }
        let request = Gossip {
            cluster_name: self.config.cluster.name.clone(),
            digests,
            entries: vec![me_entry],
        };
        let timeout = self.config.gossip.interval();
        let calls = targets.into_iter().map(|(id, address)| {
            let this = self.clone();
            let request = request.clone();
            async move { this.gossip_with(id, &address, request, timeout).await }
        });
        futures::future::join_all(calls).await;
        self.sync_layout().await;
        self.refresh_status();
    }

    async fn gossip_with(
        &self,
        id: Option<NodeId>,
        address: &str,
        request: Gossip,
        timeout: Duration,
    ) {
        let to = match id {
            Some(id) => Peer::Node(id),
            None => Peer::Seed(address.to_string()),
        };
        match self.peers.gossip(to.clone(), request, timeout).await {
            Ok(answer) => {
                let excess = answer.entries.len().saturating_sub(MAX_ENTRIES_PER_MESSAGE);
                let entries: Vec<MemberInfo> = answer
                    .entries
                    .into_iter()
                    .take(MAX_ENTRIES_PER_MESSAGE)
                    .collect();
                let Ok(entries) = self.admit_gossip(answer.cluster, id, address, entries) else {
                    return;
                };
                if let Some(id) = id {
                    self.rpc_succeeded(id);
                }
                let mut wanted = answer.wanted;
                wanted.truncate(MAX_DIGESTS_PER_MESSAGE);
                let (advanced, refused, push) = {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    let (advanced, refused) = state.apply_counted(entries);
                    self.publish_addresses(&state, &advanced);
                    (advanced, refused, state.entries(&wanted))
                };
                self.gossip_refused(refused + excess, address);
                self.heartbeats(&advanced);
                if !push.is_empty() {
                    let follow_up = Gossip {
                        cluster_name: self.config.cluster.name.clone(),
                        digests: Vec::new(),
                        entries: push,
                    };
                    let _ = self.peers.gossip(to, follow_up, timeout).await;
                }
            }
            Err(e) => {
                if let Some(theirs) = e.cluster.filter(|t| Some(*t) != self.cluster_id()) {
                    // The peer refused us as another cluster's node.
                    self.peers
                        .identity
                        .refused("gossip answer", address, theirs);
                    return;
                }
                debug!(peer = %address, error = %e, "gossip failed");
            }
        }
    }

    /// Adopts a newer layout from a peer that advertises one, or
    /// bootstraps layout v1 when this node is the one to compute it.
    async fn sync_layout(self: &Arc<Self>) {
        let current = self.layout().map(|l| l.version()).unwrap_or(0);
        let newest = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .members()
                .filter(|m| m.id != self.me && m.layout_version > current)
                .max_by_key(|m| m.layout_version)
                .map(|m| m.id)
        };
        if let Some(id) = newest {
            if !self.is_alive(id) {
                return;
            }
            match self.fetch_layout(id).await {
                Ok(()) => {}
                Err(e) => warn!(peer = %id, "fetching layout failed: {e}"),
            }
            return;
        }
        if current == 0 {
            self.maybe_bootstrap();
        } else {
            self.maybe_draw_cluster_id();
            self.maybe_replace();
        }
    }

    /// Replaces a dead layout member by the fresh node now running at its
    /// address: a node whose data directory was wiped comes back with a
    /// new id. The replacement is a change like any other
    /// (`Layout::replacing`): the fresh node streams the old id's
    /// partitions from the surviving replicas and counts toward no read
    /// quorum, and toward the write quorum of the new sets only, until its
    /// transfers are done and the claimant retires the change. The old id
    /// is not waited for by those transfers: its data went with its disk
    /// (`rebalance::safety`). Only the lowest live member id of the layout
    /// decides, so concurrent replacements do not race.
    fn maybe_replace(&self) {
        let Some(layout) = self.layout() else { return };
        if layout.in_transition() {
            return;
        }
        let members = self.members();
        let lowest_live = members
            .iter()
            .filter(|m| m.liveness == Liveness::Alive && layout.contains(m.info.id))
            .map(|m| m.info.id)
            .min();
        if lowest_live != Some(self.me) {
            return;
        }
        let replacement = members.iter().find_map(|fresh| {
            if layout.contains(fresh.info.id) || fresh.liveness != Liveness::Alive {
                return None;
            }
            members
                .iter()
                .find(|old| {
                    layout.contains(old.info.id)
                        && old.info.id != fresh.info.id
                        && old.info.address == fresh.info.address
                        && old.liveness == Liveness::Dead
                })
                .map(|old| (old.info.id, fresh.info.clone()))
        });
        let Some((old, fresh)) = replacement else {
            return;
        };
        let spec = MemberSpec {
            id: fresh.id,
            zone: fresh.zone.clone(),
            weight: fresh.weight,
        };
        match layout.replacing(old, spec, self.config.cluster.replication) {
            Ok(next) => {
                info!(
                    %old,
                    new = %fresh.id,
                    address = %fresh.address,
                    version = next.version(),
                    "replacing a dead member by the new node at its address; it receives the partitions by transfer"
                );
                if let Err(e) = self.install_layout(next) {
                    warn!("storing the replacement layout failed: {e}");
                }
            }
            Err(e) => warn!("computing the replacement layout failed: {e}"),
        }
    }

    async fn fetch_layout(&self, id: NodeId) -> Result<()> {
        let Some(bytes) = self.peers.layout(id, self.config.gossip.interval()).await? else {
            return Ok(());
        };
        let layout = Layout::decode(&bytes)?;
        if layout.partitions() != self.config.cluster.partitions {
            return Err(Error::Config(format!(
                "peer {id} uses {} partitions, this node {}; partitions must match",
                layout.partitions(),
                self.config.cluster.partitions
            )));
        }
        self.admit_layout(id, &layout)?;
        self.install_layout(layout)?;
        Ok(())
    }

    /// Computes layout v1 once `bootstrap_expect` members are seen alive,
    /// if this node has the lowest id among them.
    pub fn maybe_bootstrap(&self) {
        // A node with seeds other than itself and no quorum to wait for
        // joins the seeds' cluster rather than forming its own; and nobody
        // bootstraps once some member already holds a layout.
        let own = self.config.peer_advertise_address();
        let peer_seeds = self
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| *s != own);
        if peer_seeds && self.config.cluster.bootstrap_expect <= 1 {
            return;
        }
        if self.members().iter().any(|m| m.info.layout_version > 0) {
            return;
        }
        let alive: Vec<MemberInfo> = self
            .members()
            .into_iter()
            .filter(|m| m.liveness == Liveness::Alive && m.info.status != Status::Left)
            .map(|m| m.info)
            .collect();
        if alive.len() < self.config.cluster.bootstrap_expect {
            return;
        }
        if alive.iter().map(|m| m.id).min() != Some(self.me) {
            return;
        }
        let specs: Vec<MemberSpec> = alive
            .iter()
            .map(|m| MemberSpec {
                id: m.id,
                zone: m.zone.clone(),
                weight: m.weight,
            })
            .collect();
        match Layout::compute(
            &specs,
            self.config.cluster.replication,
            self.config.cluster.partitions,
            None,
        ) {
            Ok(layout) => {
                let layout = layout.with_cluster_id(ClusterId::random());
                info!(
                    members = specs.len(),
                    cluster = %layout.cluster_id().map(|c| c.to_string()).unwrap_or_default(),
                    "bootstrapping the cluster: computed layout v1"
                );
                if let Err(e) = self.install_layout(layout) {
                    warn!("storing layout v1 failed: {e}");
                }
            }
            Err(e) => warn!("computing layout v1 failed: {e}"),
        }
    }

    /// Stores and adopts a layout if it is newer than the current one. It
    /// must be this node's cluster's (a node without a cluster id adopts
    /// the layout's, stored in the same write).
    pub fn install_layout(&self, layout: Layout) -> Result<bool> {
        let mut current = self.layout.write().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.version() >= layout.version())
        {
            return Ok(false);
        }
        let (layout, adopt) = self.stamp_for_install(layout)?;
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, LAYOUT_KEY, layout.encode());
        if let Some(id) = adopt {
            batch.put(Cf::Meta, identity::CLUSTER_ID_KEY, id.to_bytes().to_vec());
        }
        self.engine.write(batch)?;
        if let Some(id) = adopt {
            self.peers.identity.set(id);
        }
        let version = layout.version();
        info!(
            version,
            members = layout.members().len(),
            replication = layout.replication(),
            cluster = %layout.cluster_id().map(|c| c.to_string()).unwrap_or_default(),
            "layout installed"
        );
        *current = Some(Arc::new(layout));
        drop(current);
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_layout_version(version);
        self.refresh_status();
        Ok(true)
    }

    /// Replicas per node in the current layout.
    pub fn partitions_owned(&self) -> BTreeMap<NodeId, usize> {
        self.layout()
            .map(|l| l.replica_counts())
            .unwrap_or_default()
    }
}

impl Observer for Cluster {
    fn unreachable(&self, node: NodeId) {
        self.rpc_failed(node);
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
