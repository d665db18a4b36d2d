//! `ringkv-bench scale`: gossip and layout at hundreds to a thousand nodes,
//! by simulation.
//!
//! Starting a thousand servers is beyond one machine, but the two things
//! that decide whether ringkv scales out are pure code: the membership
//! merge that gossip runs ([`gossip`]) and the layout computation
//! ([`layout`]). This subcommand drives the server's own implementations
//! of both, in one process, with seeded randomness, and prints:
//!
//! - rounds until every node knows every member, after a cold start where
//!   each node knows only the configured seeds (median and max over
//!   several seeds, per node count and schedule);
//! - the worst member's deviation from its weight share, and the replicas
//!   copied when one node is added or removed against the fewest possible.
//!
//! Everything printed is a count, so a run replays exactly from its seeds;
//! only the layout computation times vary. The tests in `scale/tests.rs`
//! assert the goals on fixed seeds.

mod gossip;
mod layout;
#[cfg(test)]
mod tests;

use std::process::ExitCode;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;
use ringkv_core::version::NodeId;

use gossip::{GossipSetup, Schedule};
use layout::Shape;

/// The gossip goal: every node knows every member within this many rounds.
pub const ROUNDS_GOAL: usize = 15;

/// The balance goal: every member within this % of its weight share.
pub const BALANCE_GOAL_PCT: f64 = 10.0;

/// The movement goal: replicas copied at most this many times the minimum.
pub const MOVES_GOAL: f64 = 1.2;

/// A run that has not converged after this many rounds stops.
const MAX_ROUNDS: usize = 200;

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Node counts of the gossip simulation.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000")]
    gossip_nodes: Vec<usize>,
    /// Node counts of the layout measurements.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    layout_nodes: Vec<usize>,
    /// Gossip runs (seeds) per node count and schedule.
    #[arg(long, default_value_t = 5)]
    runs: u64,
    /// First seed; run i uses seed + i. Layouts use the first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `gossip.fanout` (the server default is 3).
    #[arg(long, default_value_t = 3)]
    fanout: usize,
    /// How many nodes every node has as `cluster.seeds`.
    #[arg(long, default_value_t = 3)]
    seed_nodes: usize,
    /// Rounds run after convergence before measuring how many rounds old
    /// the heartbeats each node holds are.
    #[arg(long, default_value_t = 10)]
    steady_rounds: usize,
    /// Only the gossip table, or only the layout table.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Gossip,
    Layout,
}

pub fn run(args: ScaleArgs) -> Result<ExitCode> {
    let mut met = true;
    if args.only != Some(Part::Layout) {
        met &= gossip_table(&args);
    }
    if args.only != Some(Part::Gossip) {
        println!();
        met &= layout_table(&args)?;
    }
    println!();
    println!(
        "goals: rounds < {ROUNDS_GOAL}, deviation within ±{BALANCE_GOAL_PCT}% (shares of at least {} replicas), moves ≤ {MOVES_GOAL}× minimum: {}",
        layout::MIN_SHARE,
        if met { "met" } else { "NOT met" }
    );
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the gossip table; whether every run at every N converged within
/// the goal.
fn gossip_table(args: &ScaleArgs) -> bool {
    println!(
        "gossip: cold start, {} seed nodes, fanout {}, {} runs from seed {}",
        args.seed_nodes, args.fanout, args.runs, args.seed
    );
    println!(
        "{:>6}  {:<11}  {:>6}  {:>4}  {:>13}  {:>12}  {:>13}  {:>10}",
        "nodes",
        "schedule",
        "median",
        "max",
        "exch/node/rnd",
        "entries/exch",
        "busiest/round",
        "hb lag max"
    );
    let mut met = true;
    for &nodes in &args.gossip_nodes {
        for schedule in [Schedule::Synchronous, Schedule::Sequential] {
            let setup = GossipSetup {
                nodes,
                seeds: args.seed_nodes,
                fanout: args.fanout,
                with_layout: false,
                schedule,
                max_rounds: MAX_ROUNDS,
                steady_rounds: args.steady_rounds,
            };
            let outcomes: Vec<_> = (0..args.runs)
                .map(|i| gossip::simulate(&setup, args.seed + i))
                .collect();
            let mut rounds: Vec<Option<usize>> = outcomes.iter().map(|o| o.rounds).collect();
            rounds.sort_by_key(|r| r.unwrap_or(usize::MAX));
            met &= rounds.iter().all(|r| r.is_some_and(|r| r < ROUNDS_GOAL));
            let total_rounds: u64 = outcomes.iter().map(|o| o.rounds_run as u64).sum();
            let lag = outcomes
                .iter()
                .map(|o| o.heartbeat_lag_max)
                .max()
                .unwrap_or(0);
            let exchanges: u64 = outcomes.iter().map(|o| o.exchanges).sum();
            let entries: u64 = outcomes.iter().map(|o| o.entries_sent).sum();
            let busiest = outcomes
                .iter()
                .map(|o| o.max_answered_per_round)
                .max()
                .unwrap_or(0);
            println!(
                "{:>6}  {:<11}  {:>6}  {:>4}  {:>13.1}  {:>12.1}  {:>13}  {:>10}",
                nodes,
                format!("{schedule:?}").to_lowercase(),
                show_rounds(rounds.get(rounds.len() / 2).copied().flatten()),
                show_rounds(rounds.last().copied().flatten()),
                exchanges as f64 / (total_rounds.max(1) * nodes as u64) as f64,
                entries as f64 / exchanges.max(1) as f64,
                busiest,
                lag
            );
        }
    }
    met
}

fn show_rounds(rounds: Option<usize>) -> String {
    rounds.map_or_else(|| format!(">{MAX_ROUNDS}"), |r| r.to_string())
}

/// Prints the layout table; whether every shape at a suitable Q met the
/// balance and movement goals.
fn layout_table(args: &ScaleArgs) -> Result<bool> {
    println!(
        "layout: N = {} replicas, seed {}; deviation = worst |held − share| / share; moves/min = replicas copied / minimum",
        layout::REPLICATION,
        args.seed
    );
    println!(
        "{:>6}  {:<7}  {:>5}  {:>6}  {:>9}  {:>7}  {:>7}  {:>14}  {:>7}  {:>14}  {:>8}",
        "nodes",
        "weights",
        "zones",
        "Q",
        "min share",
        "fresh %",
        "add %",
        "add moves/min",
        "rm %",
        "rm moves/min",
        "time"
    );
    let mut met = true;
    for &nodes in &args.layout_nodes {
        for (mixed, zones) in [(false, 1), (true, 1), (true, 4)] {
            let base = Shape {
                nodes,
                mixed,
                zones,
                partitions: layout::DEFAULT_PARTITIONS,
            };
            let suitable = Shape::suitable_partitions(&base.members(args.seed))
                .max(layout::DEFAULT_PARTITIONS);
            let mut qs = vec![layout::DEFAULT_PARTITIONS];
            if suitable != layout::DEFAULT_PARTITIONS {
                qs.push(suitable);
            }
            for partitions in qs {
                let shape = Shape {
                    partitions,
                    ..base.clone()
                };
                let o = layout::measure(&shape, args.seed)?;
                if partitions == suitable {
                    met &= [o.deviation_pct, o.add.deviation_pct, o.remove.deviation_pct]
                        .iter()
                        .all(|&d| d <= BALANCE_GOAL_PCT)
                        && o.add.ratio() <= MOVES_GOAL
                        && o.remove.ratio() <= MOVES_GOAL;
                }
                for (what, change) in [("add", &o.add), ("remove", &o.remove)] {
                    if change.minimum != change.server_minimum {
                        println!(
                            "note: {what}: minimum {} here, {} by Layout::minimum_moves_from",
                            change.minimum, change.server_minimum
                        );
                    }
                }
                println!(
                    "{:>6}  {:<7}  {:>5}  {:>6}  {:>9.2}  {:>7.1}  {:>7.1}  {:>14}  {:>7.1}  {:>14}  {:>7.2}s",
                    nodes,
                    if mixed { "1/2/4" } else { "equal" },
                    zones,
                    partitions,
                    o.min_share,
                    o.deviation_pct,
                    o.add.deviation_pct,
                    format!("{}/{} {:.2}", o.add.moves, o.add.minimum, o.add.ratio()),
                    o.remove.deviation_pct,
                    format!("{}/{} {:.2}", o.remove.moves, o.remove.minimum, o.remove.ratio()),
                    (o.compute_time + o.add.compute_time + o.remove.compute_time).as_secs_f64()
                );
            }
        }
    }
    Ok(met)
}

/// `count` distinct, nonzero, random-looking node ids. The server draws
/// ids at random; their order matters (tables and capped messages go in id
/// order), so they must not be sequential. A bijection of distinct
/// nonzero inputs, so no retry loop is needed.
pub fn distinct_ids(count: usize, rng: &mut StdRng) -> Vec<NodeId> {
    let start = rng.random_range(1..=u64::MAX - count as u64);
    (0..count as u64).map(|i| NodeId(mix(start + i))).collect()
}

/// The splitmix64 finaliser: a bijection of u64 mapping 0 to 0 only.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
