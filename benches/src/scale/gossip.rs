//! Gossip among N simulated nodes: how many rounds until every node knows
//! every member.
//!
//! Each simulated node holds the server's real
//! [`MembershipState`](ringkv_core::membership::state::MembershipState),
//! and an exchange calls the same state functions, in the same order and
//! with the same per-message caps, as `Cluster::gossip_round` /
//! `gossip_with` / `handle_gossip` in `server/src/membership/mod.rs`:
//!
//! 1. the initiator ticks its heartbeat, then sends its digests and its own
//!    entry to its targets;
//! 2. the receiver applies the entry and answers with `deltas_for` and
//!    `wanted_from` the digests;
//! 3. the initiator applies the deltas (at most `MAX_ENTRIES_PER_MESSAGE`
//!    are read) and pushes back `entries(wanted)`, which the receiver
//!    applies.
//!
//! The targets are chosen as the node chooses them (see [`targets`]):
//! `fanout` known peers at random, plus every configured seed the node
//! does not know yet by address while it knows fewer than `fanout` peers
//! or holds no layout. Only the choice is mirrored here, because in the
//! server it sits inside the async round, next to the transport.
//!
//! Time is rounds; there are no sockets, timers or failures, and the
//! seeded generator makes every run replay exactly. Two schedules bracket
//! how real, unsynchronised rounds interleave:
//!
//! - [`Schedule::Synchronous`]: every message of a round is computed from
//!   the states at the start of the round, then all are applied. A piece of
//!   news crosses at most one exchange per round: the slow bound.
//! - [`Schedule::Sequential`]: nodes run their whole round one after the
//!   other, in a fresh random order each round, so news can cross several
//!   exchanges within a round, as it can between real nodes whose timers
//!   are out of phase.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use ringkv_core::membership::state::{
    Digest, JoinMode, MemberInfo, MembershipState, Status, MAX_ENTRIES_PER_MESSAGE,
};
use ringkv_core::version::NodeId;

/// How the rounds of different nodes interleave (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    Synchronous,
    Sequential,
}

/// One simulated cluster start.
#[derive(Clone, Debug)]
pub struct GossipSetup {
    /// Nodes started at once, each knowing only itself and the seeds.
    pub nodes: usize,
    /// How many of the nodes are seeds (the first ones); every node is
    /// configured with all their addresses, as `cluster.seeds`.
    pub seeds: usize,
    /// `gossip.fanout`: random known peers contacted per round.
    pub fanout: usize,
    /// Whether the nodes already hold a layout. A forming cluster has none,
    /// and a node without one contacts its seeds every round.
    pub with_layout: bool,
    pub schedule: Schedule,
    /// The round budget: a run that has not converged by then stops and
    /// reports no figure.
    pub max_rounds: usize,
    /// Rounds run after convergence before measuring how stale the
    /// heartbeats each node holds are (the failure detector's input).
    pub steady_rounds: usize,
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipOutcome {
    /// Rounds until every node's table held every node; `None` if that did
    /// not happen within `max_rounds`.
    pub rounds: Option<usize>,
    /// Rounds simulated: to convergence and the steady rounds after it,
    /// or the whole budget.
    pub rounds_run: usize,
    /// Exchanges (one initiator, one target) over the run.
    pub exchanges: u64,
    /// Member entries carried by deltas and pushes over the run.
    pub entries_sent: u64,
    /// The most exchanges any single node answered in one round: the load
    /// on the busiest node (a seed, while the cluster forms).
    pub max_answered_per_round: u64,
    /// After `steady_rounds` more rounds: over every node and every other
    /// node it knows, how many heartbeats behind that node's own its copy
    /// is, worst and mean. A node bumps its heartbeat once per round, so
    /// this is also the age in rounds of the news it holds.
    pub heartbeat_lag_max: u64,
    pub heartbeat_lag_mean: f64,
}

/// A simulated node: the real membership table, and what the real node
/// keeps beside it to choose peers.
struct Node {
    state: MembershipState,
    address: String,
}

/// One exchange's messages, built before any is applied (synchronous
/// schedule).
struct Exchange {
    from: usize,
    to: usize,
    /// The initiator's own entry, sent with its digests.
    entry: MemberInfo,
    deltas: Vec<MemberInfo>,
    push: Vec<MemberInfo>,
}

/// Runs one cluster start with `seed` and measures it.
pub fn simulate(setup: &GossipSetup, seed: u64) -> GossipOutcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nodes = start(setup, &mut rng);
    let index: HashMap<NodeId, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.state.my_id(), i))
        .collect();
    let seeds: Vec<usize> = (0..setup.seeds.min(setup.nodes)).collect();
    let mut outcome = GossipOutcome {
        rounds: None,
        rounds_run: 0,
        exchanges: 0,
        entries_sent: 0,
        max_answered_per_round: 0,
        heartbeat_lag_max: 0,
        heartbeat_lag_mean: 0.0,
    };
    let mut converged_at = None;
    for round in 1..=setup.max_rounds + setup.steady_rounds {
        outcome.rounds_run = round;
        let mut answered = vec![0u64; nodes.len()];
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.shuffle(&mut rng);
        match setup.schedule {
            Schedule::Synchronous => {
                let mut planned = Vec::new();
                for &a in &order {
                    nodes[a].state.tick();
                    let digests = nodes[a].state.digests();
                    for b in targets(&nodes, &index, &seeds, a, setup, &mut rng) {
                        planned.push(respond(&nodes, a, b, &digests));
                    }
                }
                for exchange in planned {
                    answered[exchange.to] += 1;
                    apply(&mut nodes, exchange, &mut outcome);
                }
            }
            Schedule::Sequential => {
                for &a in &order {
                    nodes[a].state.tick();
                    let digests = nodes[a].state.digests();
                    for b in targets(&nodes, &index, &seeds, a, setup, &mut rng) {
                        answered[b] += 1;
                        exchange_now(&mut nodes, a, b, &digests, &mut outcome);
                    }
                }
            }
        }
        outcome.max_answered_per_round = outcome
            .max_answered_per_round
            .max(answered.into_iter().max().unwrap_or(0));
        if converged_at.is_none() && nodes.iter().all(|n| n.state.len() == setup.nodes) {
            converged_at = Some(round);
            outcome.rounds = Some(round);
        }
        match converged_at {
            Some(at) if round >= at + setup.steady_rounds => break,
            None if round >= setup.max_rounds => return outcome,
            _ => {}
        }
    }
    (outcome.heartbeat_lag_max, outcome.heartbeat_lag_mean) = heartbeat_lag(&nodes);
    outcome
}

/// Worst and mean heartbeat lag over every (holder, other node) pair.
fn heartbeat_lag(nodes: &[Node]) -> (u64, f64) {
    let own: HashMap<NodeId, u64> = nodes
        .iter()
        .map(|n| (n.state.my_id(), n.state.me().heartbeat))
        .collect();
    let (mut max, mut sum, mut pairs) = (0u64, 0u64, 0u64);
    for node in nodes {
        for entry in node.state.members().filter(|m| m.id != node.state.my_id()) {
            let lag = own[&entry.id].saturating_sub(entry.heartbeat);
            max = max.max(lag);
            sum += lag;
            pairs += 1;
        }
    }
    (max, sum as f64 / pairs.max(1) as f64)
}

/// Fresh nodes with distinct random ids (the server draws ids at random
/// too; their order decides which entries a capped message carries).
fn start(setup: &GossipSetup, rng: &mut StdRng) -> Vec<Node> {
    super::distinct_ids(setup.nodes, rng)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let address = format!("node-{i}:7000");
            // Name and zone do not steer gossip; left empty, they cost no
            // allocation when entries are copied, which keeps 1,000 nodes
            // fast.
            let info = MemberInfo {
                id,
                name: String::new(),
                address: address.clone(),
                peer_address: String::new(),
                zone: String::new(),
                weight: 100,
                generation: 1,
                heartbeat: 0,
                status: if setup.with_layout {
                    Status::Up
                } else {
                    Status::Joining
                },
                layout_version: u64::from(setup.with_layout),
                transfers_done: 0,
                join: JoinMode::None,
                storage_bytes: 0,
            };
            Node {
                state: MembershipState::new(info),
                address,
            }
        })
        .collect()
}

/// The nodes `a` gossips with this round, as `Cluster::gossip_round`
/// picks them: `fanout` of its known, not departed peers at random; then,
/// while it knows fewer peers than `fanout` or holds no layout, every seed
/// that is not itself and whose address is not among its known peers.
fn targets(
    nodes: &[Node],
    index: &HashMap<NodeId, usize>,
    seeds: &[usize],
    a: usize,
    setup: &GossipSetup,
    rng: &mut StdRng,
) -> Vec<usize> {
    let state = &nodes[a].state;
    let peers: Vec<(NodeId, &str)> = state
        .members()
        .filter(|m| m.id != state.my_id() && m.status != Status::Left)
        .map(|m| (m.id, m.address.as_str()))
        .collect();
    let mut chosen = peers.clone();
    chosen.shuffle(rng);
    chosen.truncate(setup.fanout);
    let mut out: Vec<usize> = chosen.iter().map(|(id, _)| index[id]).collect();
    if peers.len() < setup.fanout || !setup.with_layout {
        for &s in seeds {
            let seed = nodes[s].address.as_str();
            let known = peers.iter().any(|(_, address)| *address == seed);
            if seed != nodes[a].address && !known {
                out.push(s);
            }
        }
    }
    out
}

/// The receiver's answer to `a`'s digests and the initiator's follow-up
/// push, all read from the states as they are (nothing is applied): the
/// synchronous schedule. The receiver has not applied the initiator's
/// entry yet, so it may also ask for it; the push then carries it again,
/// which changes nothing.
fn respond(nodes: &[Node], a: usize, b: usize, digests: &[Digest]) -> Exchange {
    let receiver = &nodes[b].state;
    // `gossip_with` reads at most MAX_ENTRIES_PER_MESSAGE of the answer;
    // `deltas_for` never sends more.
    let mut deltas = receiver.deltas_for(digests);
    deltas.truncate(MAX_ENTRIES_PER_MESSAGE);
    let wanted = receiver.wanted_from(digests);
    let push = nodes[a].state.entries(&wanted);
    Exchange {
        from: a,
        to: b,
        entry: nodes[a].state.me().clone(),
        deltas,
        push,
    }
}

/// One exchange from `a` to `b`, each step applied as soon as it is
/// received, in the order of `gossip_with` and `handle_gossip`.
fn exchange_now(
    nodes: &mut [Node],
    a: usize,
    b: usize,
    digests: &[Digest],
    outcome: &mut GossipOutcome,
) {
    let entry = nodes[a].state.me().clone();
    nodes[b].state.apply(vec![entry]);
    let mut deltas = nodes[b].state.deltas_for(digests);
    deltas.truncate(MAX_ENTRIES_PER_MESSAGE);
    let wanted = nodes[b].state.wanted_from(digests);
    outcome.exchanges += 1;
    outcome.entries_sent += deltas.len() as u64;
    nodes[a].state.apply(deltas);
    let push = nodes[a].state.entries(&wanted);
    outcome.entries_sent += push.len() as u64;
    nodes[b].state.apply(push);
}

/// Applies an exchange planned by [`respond`]: the receiver takes the
/// initiator's entry, the initiator the deltas, the receiver the push.
fn apply(nodes: &mut [Node], exchange: Exchange, outcome: &mut GossipOutcome) {
    outcome.exchanges += 1;
    outcome.entries_sent += (exchange.deltas.len() + exchange.push.len()) as u64;
    nodes[exchange.to].state.apply(vec![exchange.entry]);
    nodes[exchange.from].state.apply(exchange.deltas);
    nodes[exchange.to].state.apply(exchange.push);
}
