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

pub use ringkv_core::membership::detector;
mod gossip;
mod identity;
mod layout;
mod rounds;
pub use ringkv_core::membership::state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use ringkv_core::error::{Error, Result};
use ringkv_core::ring::{ClusterId, Layout, MemberSpec};
use ringkv_core::version::NodeId;
use ringkv_peer::{AddressBook, Gossip, GossipAnswer, Observer, Peer, Peers};
use ringkv_storage::{Cf, Engine, WriteBatch};

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
    /// Where refused gossip entries are counted.
    metrics: Arc<Metrics>,
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
        metrics: Arc<Metrics>,
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
            metrics,
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

    /// The name a member gossips (its certificate must carry it when the
    /// peer port runs mutual TLS), if this node knows the member.
    pub fn name_of(&self, node: NodeId) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|m| m.name.clone())
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
