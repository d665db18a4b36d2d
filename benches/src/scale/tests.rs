//! The scale goals, asserted on fixed seeds. Every figure here is a count
//! from a seeded run, not a timing, so it is exact and replays; each test
//! prints its seed.

use super::gossip::{simulate, GossipSetup, Schedule};
use super::layout::{self, Shape};
use super::{BALANCE_GOAL_PCT, MOVES_GOAL, ROUNDS_GOAL};

const SEED: u64 = 1;

fn setup(nodes: usize, schedule: Schedule) -> GossipSetup {
    GossipSetup {
        nodes,
        seeds: 3,
        fanout: 3,
        with_layout: false,
        schedule,
        max_rounds: 4 * ROUNDS_GOAL,
        steady_rounds: 0,
    }
}

/// The slow bound (news crosses one exchange per round) at 1,000 nodes.
#[test]
fn a_thousand_nodes_know_each_other_within_the_goal() {
    println!("seed {SEED}");
    let outcome = simulate(&setup(1000, Schedule::Synchronous), SEED);
    println!("{outcome:?}");
    assert!(
        outcome.rounds.is_some_and(|r| r < ROUNDS_GOAL),
        "rounds {:?}, goal < {ROUNDS_GOAL}",
        outcome.rounds
    );
}

#[test]
fn smaller_clusters_converge_faster_and_both_schedules_meet_the_goal() {
    println!("seed {SEED}");
    let mut previous = 0;
    for nodes in [10, 100, 500] {
        let slow = simulate(&setup(nodes, Schedule::Synchronous), SEED);
        let fast = simulate(&setup(nodes, Schedule::Sequential), SEED);
        println!("{nodes} nodes: synchronous {slow:?}, sequential {fast:?}");
        let (slow, fast) = (
            slow.rounds.unwrap_or(usize::MAX),
            fast.rounds.unwrap_or(usize::MAX),
        );
        assert!(slow < ROUNDS_GOAL && fast < ROUNDS_GOAL, "{nodes} nodes");
        assert!(slow >= previous, "more nodes never converge sooner");
        previous = slow;
    }
}

/// Once everybody knows everybody, the heartbeats each node holds stay a
/// few rounds old: the failure detector keeps hearing every node. Capped
/// messages in id order starved the high ids; see `membership::state`.
#[test]
fn heartbeats_stay_fresh_after_convergence() {
    println!("seed {SEED}");
    let nodes = 500;
    let outcome = simulate(
        &GossipSetup {
            steady_rounds: 10,
            ..setup(nodes, Schedule::Synchronous)
        },
        SEED,
    );
    println!("{outcome:?}");
    assert!(outcome.rounds.is_some());
    assert!(
        outcome.heartbeat_lag_max <= 10,
        "a node's heartbeat reached someone {} rounds late",
        outcome.heartbeat_lag_max
    );
}

#[test]
fn a_run_replays_from_its_seed() {
    println!("seeds {SEED}, {}", SEED + 1);
    let s = setup(100, Schedule::Sequential);
    assert_eq!(simulate(&s, SEED), simulate(&s, SEED));
    assert_ne!(simulate(&s, SEED), simulate(&s, SEED + 1));
}

fn check_layout(shape: &Shape) {
    let o = layout::measure(shape, SEED).expect("the layout computes");
    println!("seed {SEED}, {shape:?}: {o:?}");
    assert!(o.min_share >= layout::MIN_SHARE);
    for (what, deviation) in [
        ("fresh", o.deviation_pct),
        ("one added", o.add.deviation_pct),
        ("one removed", o.remove.deviation_pct),
    ] {
        assert!(
            deviation <= BALANCE_GOAL_PCT,
            "{what}: a member is {deviation:.1}% off its share"
        );
    }
    for (what, change) in [("one added", &o.add), ("one removed", &o.remove)] {
        assert!(
            change.ratio() <= MOVES_GOAL,
            "{what}: {} moves for a minimum of {}",
            change.moves,
            change.minimum
        );
        assert_eq!(change.minimum, change.server_minimum, "{what}");
    }
}

fn shape(nodes: usize, mixed: bool, zones: usize) -> Shape {
    let base = Shape {
        nodes,
        mixed,
        zones,
        partitions: layout::DEFAULT_PARTITIONS,
    };
    Shape {
        partitions: Shape::suitable_partitions(&base.members(SEED)),
        ..base
    }
}

#[test]
fn layouts_of_100_nodes_are_balanced_and_move_little() {
    check_layout(&shape(100, false, 1));
    check_layout(&shape(100, true, 4));
}

#[test]
fn layouts_of_1000_nodes_are_balanced_and_move_little() {
    check_layout(&shape(1000, false, 1));
    check_layout(&shape(1000, true, 4));
}

/// The default Q = 256 gives 1,000 nodes 768 replicas to share: some nodes
/// hold none, so balance needs a larger Q (what the tests above use).
#[test]
fn the_default_partition_count_cannot_balance_a_thousand_nodes() {
    let shape = Shape {
        partitions: layout::DEFAULT_PARTITIONS,
        ..shape(1000, false, 1)
    };
    let o = layout::measure(&shape, SEED).expect("the layout computes");
    println!("seed {SEED}: {o:?}");
    assert!(o.min_share < 1.0);
    assert!(o.deviation_pct > BALANCE_GOAL_PCT);
}
