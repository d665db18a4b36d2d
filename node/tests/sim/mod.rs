//! A cluster in one process: N nodes with memory storage on the in-memory
//! network, time controlled by the test (tokio's paused clock, advanced
//! only when every task waits). Every random choice follows the run's
//! seed, which each scenario prints, so a failure replays from its seed.

pub mod gate;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_common::shutdown::{channel as shutdown_channel, ShutdownTrigger};
use ringkv_core::version::{NodeId, Value, VersionSet, VersionVector};
use ringkv_node::assemble::{NodeParts, Wiring};
use ringkv_node::config::Config;
use ringkv_node::coordinator::{GetCommand, Level, PutCommand, RequestConsistency, Resolve};
use ringkv_node::metrics::Metrics;
use ringkv_peer::memory::MemoryNetwork;
use ringkv_peer::{AddressBook, ClusterIdentity, Faults};
use ringkv_storage::{Engine, MemoryEngine};

/// How long any wait of a scenario may take, in simulated time.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// One simulated node.
pub struct SimNode {
    pub id: NodeId,
    /// Kept across restarts: the node's disk.
    pub engine: Arc<dyn Engine>,
    pub parts: NodeParts,
    trigger: ShutdownTrigger,
    generation: u64,
}

pub struct Sim {
    pub seed: u64,
    pub net: Arc<MemoryNetwork>,
    pub nodes: Vec<SimNode>,
    config: Config,
}

/// The configuration every simulated node starts from: short intervals, so
/// a scenario takes seconds of simulated time.
pub fn base_config(n: usize) -> Config {
    let mut c = Config::default();
    c.cluster.bootstrap_expect = n;
    c.cluster.seeds = (0..n).map(peer_address).collect();
    c.gossip.interval_ms = 100;
    c.handoff.interval_ms = 100;
    c.handoff.replica_timeout_ms = 200;
    c.repair.interval_ms = 500;
    c.clock.max_offset_ms = 50;
    c.limits.request_timeout_ms = 2_000;
    c
}

/// Where simulated node `i` is reached.
pub fn peer_address(i: usize) -> String {
    format!("sim-node-{i}:7380")
}

impl SimNode {
    /// A counter one of the node's workers reports.
    pub fn worker_counter(&self, worker: &str, counter: &str) -> u64 {
        self.parts
            .workers
            .statuses()
            .iter()
            .filter(|s| s.name == worker)
            .map(|s| s.counters.get(counter).copied().unwrap_or(0))
            .sum()
    }
}

impl Sim {
    /// Starts `n` nodes configured by `config` and waits until they agree
    /// on a layout and see each other alive.
    pub async fn start(n: usize, seed: u64, config: Config) -> Sim {
        Self::start_with(n, seed, config, |_| Arc::new(MemoryEngine::new())).await
    }

    /// [`Self::start`], with node `i`'s storage made by `engine(i)`.
    pub async fn start_with(
        n: usize,
        seed: u64,
        config: Config,
        engine: impl Fn(usize) -> Arc<dyn Engine>,
    ) -> Sim {
        println!("simulation seed {seed} ({n} nodes)");
        let mut sim = Sim {
            seed,
            net: MemoryNetwork::new(seed),
            nodes: Vec::new(),
            config,
        };
        for i in 0..n {
            let node = sim.boot(i, NodeId(i as u64 + 1), engine(i), 1);
            sim.nodes.push(node);
        }
        sim.wait_converged().await;
        sim
    }

    fn boot(&self, i: usize, id: NodeId, engine: Arc<dyn Engine>, generation: u64) -> SimNode {
        let mut config = self.config.clone();
        config.node.name = format!("sim{i}");
        config.node.advertise = Some(format!("sim-node-{i}:7379"));
        config.node.peer_advertise = Some(peer_address(i));
        let metrics = Metrics::new();
        let parts = NodeParts::assemble(
            Arc::new(config),
            engine.clone(),
            id,
            generation,
            metrics.clone(),
            Wiring {
                network: self.net.clone(),
                addresses: Arc::new(AddressBook::default()),
                identity: Arc::new(ClusterIdentity::new(metrics.foreign_cluster_refusals())),
                faults: Arc::new(Faults::default()),
            },
        )
        .expect("a simulated node assembles");
        parts
            .cluster
            .seed_random(self.seed.wrapping_mul(31).wrapping_add(i as u64));
        self.net.attach(id, &peer_address(i), parts.inbound.clone());
        let (trigger, _) = shutdown_channel();
        parts.spawn_workers(&trigger);
        SimNode {
            id,
            engine,
            parts,
            trigger,
            generation,
        }
    }

    /// Starts one more node, seeded with the others; it joins by itself
    /// (`cluster.auto_join`). Returns its index.
    pub async fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let node = self.boot(i, NodeId(i as u64 + 1), engine, 1);
        self.nodes.push(node);
        i
    }

    /// Waits until node `i` stores exactly `values` for `key`.
    pub async fn wait_for_values(&self, i: usize, key: &str, values: &[&str]) {
        let started = tokio::time::Instant::now();
        loop {
            let stored = self.local_values(i, key).await;
            if stored == values {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "seed {}: node {i} holds {stored:?} for {key}, not {values:?}, after {PATIENCE:?} of simulated time",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops node `i` and starts it again on the same storage, as a
    /// process restart would.
    pub async fn restart(&mut self, i: usize) {
        let old = &self.nodes[i];
        self.net.detach(old.id);
        old.trigger.trigger();
        old.parts.workers.join().await;
        let (id, engine, generation) = (old.id, old.engine.clone(), old.generation + 1);
        self.nodes[i] = self.boot(i, id, engine, generation);
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Waits (in simulated time) until `done` holds, checking every 50 ms.
    pub async fn wait_for(&self, what: &str, mut done: impl FnMut(&Sim) -> bool) {
        let started = tokio::time::Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < PATIENCE,
                "seed {}: {what} not within {PATIENCE:?} of simulated time",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every node holds the same layout and sees every other node alive.
    pub async fn wait_converged(&self) {
        self.wait_for("convergence", |sim| {
            let versions: Vec<Option<u64>> = sim
                .nodes
                .iter()
                .map(|n| n.parts.cluster.layout().map(|l| l.version()))
                .collect();
            versions[0].is_some()
                && versions.iter().all(|v| *v == versions[0])
                && sim.nodes.iter().all(|n| {
                    sim.ids()
                        .iter()
                        .all(|other| n.parts.cluster.is_alive(*other))
                })
        })
        .await;
    }

    /// The replicas of `key` in the current layout.
    pub fn replicas_of(&self, key: &str) -> Vec<NodeId> {
        let parts = &self.nodes[0].parts;
        let layout = parts.cluster.layout().expect("a layout");
        let partition = parts.replica.partition_of(key.as_bytes());
        layout.replicas(partition).to_vec()
    }

    pub fn index_of(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a simulated node")
    }

    /// Puts through node `via`.
    pub async fn put(
        &self,
        via: usize,
        key: &str,
        value: &str,
        level: Level,
        sloppy: bool,
    ) -> ringkv_core::error::Result<ringkv_node::coordinator::PutReply> {
        self.put_after(via, key, value, None, level, sloppy).await
    }

    /// A put that has seen `context` (a read's or an earlier put's), or a
    /// blind one (`None`).
    pub async fn put_after(
        &self,
        via: usize,
        key: &str,
        value: &str,
        context: Option<VersionVector>,
        level: Level,
        sloppy: bool,
    ) -> ringkv_core::error::Result<ringkv_node::coordinator::PutReply> {
        self.nodes[via]
            .parts
            .coordinator
            .put(PutCommand {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                context,
                consistency: RequestConsistency {
                    level: Some(level),
                    sloppy: Some(sloppy),
                    timeout: None,
                },
                ttl: None,
            })
            .await
    }

    /// The values a get through node `via` returns, sorted.
    pub async fn get(&self, via: usize, key: &str, level: Level) -> Vec<String> {
        let reply = self.nodes[via]
            .parts
            .coordinator
            .get(GetCommand {
                key: Bytes::copy_from_slice(key.as_bytes()),
                consistency: RequestConsistency {
                    level: Some(level),
                    sloppy: None,
                    timeout: None,
                },
                resolve: Resolve::AllSiblings,
            })
            .await
            .unwrap_or_else(|e| panic!("seed {}: get {key}: {e}", self.seed));
        let mut values: Vec<String> = reply
            .siblings
            .iter()
            .filter_map(|v| match &v.value {
                Value::Data(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::Tombstone => None,
            })
            .collect();
        values.sort();
        values
    }

    /// What node `i` stores for `key`, without coordination.
    pub async fn local(&self, i: usize, key: &str) -> Option<VersionSet> {
        self.nodes[i]
            .parts
            .replica
            .read(Bytes::copy_from_slice(key.as_bytes()))
            .await
            .expect("a local read")
    }

    /// The values node `i` stores for `key`, sorted.
    pub async fn local_values(&self, i: usize, key: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .local(i, key)
            .await
            .map(|set| {
                set.versions()
                    .iter()
                    .filter_map(|v| match &v.value {
                        Value::Data(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        Value::Tombstone => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        values.sort();
        values
    }

    /// Stops every node.
    pub async fn stop(self) {
        for node in &self.nodes {
            node.trigger.trigger();
        }
        for node in &self.nodes {
            node.parts.workers.join().await;
        }
    }
}
