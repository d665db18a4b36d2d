//! One node's parts wired together, without listeners and over any peer
//! [`Network`]: what `ringkv-server` runs behind its gRPC services, and
//! what a simulation runs many of in one process (`tests/simulation.rs`).

use std::sync::Arc;

use crate::auth::{self, Tokens};
use crate::config::{Config, InjectBug};
use crate::coordinator::Coordinator;
use crate::handoff::deliver::{self, Delivery};
use crate::handoff::HintStore;
use crate::inbound::{Inbound, InboundParts};
use crate::membership::{self, Cluster};
use crate::metrics::Metrics;
use crate::rebalance::Rebalance;
use crate::repair::Repair;
use crate::replica::Replica;
use crate::worker::Workers;
use ringkv_common::ShutdownTrigger;
use ringkv_core::error::Result;
use ringkv_core::membership::state::{JoinMode, MemberInfo, Status};
use ringkv_core::version::NodeId;
use ringkv_peer::{AddressBook, ClusterIdentity, Faults, Network, Peers};
use ringkv_storage::Engine;

/// What a node is made of, apart from its listeners.
pub struct NodeParts {
    pub node_id: NodeId,
    pub config: Arc<Config>,
    pub engine: Arc<dyn Engine>,
    pub metrics: Arc<Metrics>,
    pub replica: Arc<Replica>,
    pub cluster: Arc<Cluster>,
    pub hints: Arc<HintStore>,
    pub repair: Arc<Repair>,
    pub rebalance: Arc<Rebalance>,
    /// The cluster's client tokens, as this node holds them.
    pub tokens: Arc<Tokens>,
    pub coordinator: Arc<Coordinator>,
    /// What the node does with its peers' messages.
    pub inbound: Arc<Inbound>,
    pub workers: Arc<Workers>,
}

/// How a node reaches its peers.
pub struct Wiring {
    pub network: Arc<dyn Network>,
    /// Where the members are; membership fills it in.
    pub addresses: Arc<AddressBook>,
    pub identity: Arc<ClusterIdentity>,
    pub faults: Arc<Faults>,
}

impl NodeParts {
    /// Wires a node with id `node_id`, in its `generation`-th start, over
    /// `engine` and `wiring`.
    pub fn assemble(
        config: Arc<Config>,
        engine: Arc<dyn Engine>,
        node_id: NodeId,
        generation: u64,
        metrics: Arc<Metrics>,
        wiring: Wiring,
    ) -> Result<NodeParts> {
        if config.debug.inject_bug != InjectBug::None {
            tracing::warn!(
                bug = config.debug.inject_bug.name(),
                "DELIBERATE BUG INJECTED (debug.inject_bug): this node will lose or corrupt data on purpose, to test the verification harness's checkers; never run it with data you need"
            );
        }
        let replica = Arc::new(
            Replica::new(
                node_id,
                engine.clone(),
                config.cluster.partitions,
                config.limits.max_siblings,
            )?
            .with_max_clock_offset(config.clock.max_offset_ms)
            .with_max_state_bytes(config.limits.max_key_state_bytes)
            .with_injected_bug(config.debug.inject_bug),
        );
        for counter in replica.counters() {
            metrics.register(counter);
        }
        let peers = Arc::new(Peers::new(
            node_id,
            wiring.network,
            wiring.identity,
            wiring.faults,
        ));
        let me = MemberInfo {
            id: node_id,
            name: config.node.name.clone(),
            address: config.advertise_address(),
            peer_address: config.peer_advertise_address(),
            zone: config.node.zone.clone(),
            weight: config.node.weight,
            generation,
            heartbeat: 0,
            status: Status::Joining,
            layout_version: 0,
            transfers_done: 0,
            join: if config.cluster.auto_join {
                JoinMode::Auto
            } else {
                JoinMode::None
            },
            storage_bytes: engine.approximate_size_bytes(),
        };
        let cluster = Cluster::new(
            me,
            config.clone(),
            engine.clone(),
            peers,
            wiring.addresses,
            metrics.clone(),
        )?;
        cluster.maybe_bootstrap();
        let hints = Arc::new(
            HintStore::open(
                engine.clone(),
                config.cluster.partitions,
                config.handoff.max_bytes_per_target,
                metrics.clone(),
            )?
            .with_max_state_bytes(config.limits.max_key_state_bytes),
        );
        let repair = Repair::new(
            replica.clone(),
            cluster.clone(),
            config.clone(),
            metrics.clone(),
        );
        let rebalance = Rebalance::new(
            replica.clone(),
            cluster.clone(),
            repair.clone(),
            config.clone(),
            metrics.clone(),
        )?;
        let coordinator = Arc::new(Coordinator::new(
            replica.clone(),
            cluster.clone(),
            hints.clone(),
            config.clone(),
            metrics.clone(),
        ));
        let tokens = Arc::new(Tokens::open(engine.clone(), config.auth.enabled)?);
        let inbound = Arc::new(Inbound::new(
            InboundParts {
                replica: replica.clone(),
                cluster: cluster.clone(),
                hints: hints.clone(),
                repair: repair.clone(),
                rebalance: rebalance.clone(),
                tokens: tokens.clone(),
                metrics: metrics.clone(),
            },
            &config.limits,
        ));
        Ok(NodeParts {
            node_id,
            config,
            engine,
            metrics,
            replica,
            cluster,
            hints,
            repair,
            rebalance,
            tokens,
            coordinator,
            inbound,
            workers: Workers::new(),
        })
    }

    /// What delivers this node's hints: the hint-delivery worker, and the
    /// last round a stopping node runs to hand its hints on.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            store: self.hints.clone(),
            cluster: self.cluster.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Starts the node's background workers: gossip, hint delivery,
    /// anti-entropy and rebalance. They stop when `trigger` fires.
    pub fn spawn_workers(&self, trigger: &ShutdownTrigger) {
        let workers = &self.workers;
        let cluster = self.cluster.clone();
        workers.spawn("gossip", trigger.subscribe(), |handle| {
            membership::GossipWorker::new(cluster, handle)
        });
        let delivery = self.delivery();
        workers.spawn("hint-delivery", trigger.subscribe(), |handle| {
            deliver::DeliveryWorker::new(delivery, handle)
        });
        workers.spawn("anti-entropy", trigger.subscribe(), |handle| {
            self.repair.clone().worker(handle)
        });
        workers.spawn("rebalance", trigger.subscribe(), |handle| {
            self.rebalance.clone().worker(handle)
        });
        if self.tokens.enabled() {
            let (cluster, tokens) = (self.cluster.clone(), self.tokens.clone());
            let every = self.config.gossip.interval();
            workers.spawn("token-sync", trigger.subscribe(), |handle| {
                auth::SyncWorker::new(cluster, tokens, every, handle)
            });
        }
    }
}
