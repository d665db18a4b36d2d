//! Laws of the membership merge: convergence, the single writer of each
//! entry, and the bounds on versions, table and messages.

use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn info(id: u64, generation: u64, heartbeat: u64) -> MemberInfo {
    MemberInfo {
        id: NodeId(id),
        name: format!("node-{id}"),
        address: format!("10.0.0.{id}:7000"),
        peer_address: format!("10.0.0.{id}:7001"),
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
        .map(|id| MembershipState::new(info(id, rng.random_range(1..4), rng.random_range(0..50))))
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
    // The unknown peer first, then the impostor (furthest behind first).
    assert_eq!(me.wanted_from(&peer.digests()), [NodeId(2), NodeId(1)]);
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

#[test]
fn versions_no_node_issues_are_refused() {
    let mut state = MembershipState::new(info(1, 2, 10));
    state.apply(vec![info(2, 3, 10)]);
    let refused = |state: &mut MembershipState, entry| state.apply_counted(vec![entry]).1;

    // The poison of issue 11: a generation and heartbeat of u64::MAX.
    assert_eq!(refused(&mut state, info(2, u64::MAX, u64::MAX)), 1);
    assert_eq!(
        refused(&mut state, info(2, 3, 10 + MAX_HEARTBEAT_JUMP + 1)),
        1
    );
    assert_eq!(
        refused(&mut state, info(2, 3 + MAX_GENERATION_JUMP + 1, 0)),
        1
    );
    assert_eq!(refused(&mut state, info(7, MAX_GENERATION + 1, 0)), 1);
    assert_eq!(refused(&mut state, info(7, 1, MAX_HEARTBEAT)), 1);
    assert_eq!(state.get(NodeId(2)), Some(&info(2, 3, 10)));
    assert!(state.get(NodeId(7)).is_none());

    // Within the bounds, entries move forward as before.
    assert_eq!(refused(&mut state, info(2, 3, 10 + MAX_HEARTBEAT_JUMP)), 0);
    assert_eq!(refused(&mut state, info(2, 3 + MAX_GENERATION_JUMP, 0)), 0);
    assert_eq!(
        refused(&mut state, info(7, MAX_GENERATION, MAX_HEARTBEAT - 1)),
        0
    );
    assert_eq!(refused(&mut state, info(2, u64::MAX, 0)), 1);
    // Stale entries are ignored, not refused, whatever they claim.
    assert_eq!(refused(&mut state, info(2, 1, u64::MAX)), 0);
}

#[test]
fn an_impossible_version_of_me_is_ignored_and_my_heartbeat_keeps_going() {
    let mut state = MembershipState::new(info(1, 2, 10));
    let (advanced, refused) = state.apply_counted(vec![info(1, u64::MAX, u64::MAX)]);
    assert!(advanced.is_empty());
    assert_eq!(refused, 1);
    assert_eq!(state.me().version(), (2, 10));
    state.tick();
    assert_eq!(state.me().version(), (2, 11));
    // And a peer holding my real entry is not shown the poison as newer.
    let poisoned = [Digest {
        id: NodeId(1),
        generation: u64::MAX,
        heartbeat: u64::MAX,
    }];
    assert_eq!(state.deltas_for(&poisoned), [state.me().clone()]);
    assert!(state.wanted_from(&poisoned).is_empty());
    // The largest claim that is accepted (a later generation, so no
    // heartbeat jump applies) is still outbid within bounds.
    state.apply(vec![info(1, 3, MAX_HEARTBEAT - 1)]);
    assert_eq!(state.me().version(), (3, MAX_HEARTBEAT));
    assert!(plausible(None, (3, MAX_HEARTBEAT - 1)));
}

#[test]
fn the_table_is_bounded() {
    let mut state = MembershipState::new(info(1, 1, 0));
    let others: Vec<MemberInfo> = (2..=MAX_MEMBERS as u64 + 10)
        .map(|id| info(id, 1, 0))
        .collect();
    let (advanced, refused) = state.apply_counted(others);
    assert_eq!(state.len(), MAX_MEMBERS);
    assert_eq!(advanced.len(), MAX_MEMBERS - 1);
    assert_eq!(refused, 10);
    // Known nodes still advance.
    assert_eq!(state.apply(vec![info(2, 1, 5)]), [NodeId(2)]);
}

#[test]
fn messages_are_bounded_and_large_tables_spread_over_rounds() {
    let mut big = MembershipState::new(info(1, 1, 0));
    big.apply((2..=300).map(|id| info(id, 1, 0)).collect());
    let mut nodes = vec![big, MembershipState::new(info(500, 1, 0))];
    assert_eq!(nodes[0].deltas_for(&[]).len(), MAX_ENTRIES_PER_MESSAGE);
    let all: Vec<NodeId> = nodes[0].members().map(|m| m.id).collect();
    assert_eq!(nodes[0].entries(&all).len(), MAX_ENTRIES_PER_MESSAGE);
    let mut rounds = 0;
    while nodes[1].len() < 301 {
        exchange(&mut nodes, 1, 0);
        rounds += 1;
        assert!(rounds <= 3, "300 entries take 3 messages of 128");
    }
    exchange(&mut nodes, 1, 0);
    assert!(converged(&nodes));
}

/// A node that knows 300 members, of which a peer holds the first 200 at
/// older heartbeats (every live entry is bumped every round) and lacks the
/// last 100: the capped message carries the unknown members first, then
/// the entries the peer lags furthest behind on.
#[test]
fn capped_messages_carry_what_the_peer_lags_furthest_behind_on() {
    let mut big = MembershipState::new(info(1, 1, 5));
    big.apply((2..=300).map(|id| info(id, 1, 5)).collect());
    big.apply(vec![info(150, 1, 9), info(160, 2, 0)]);
    let mut peer = MembershipState::new(info(1000, 1, 0));
    peer.apply((1..=200).map(|id| info(id, 1, 1)).collect());
    let unknown: Vec<NodeId> = (201..=300).map(NodeId).collect();

    let deltas = big.deltas_for(&peer.digests());
    assert_eq!(deltas.len(), MAX_ENTRIES_PER_MESSAGE);
    let ids: Vec<NodeId> = deltas.iter().map(|e| e.id).collect();
    assert_eq!(
        ids[..100],
        unknown[..],
        "unknown members first, in id order"
    );
    // Then a generation behind, then 8 heartbeats behind, then 4.
    assert_eq!(ids[100..103], [NodeId(160), NodeId(150), NodeId(1)]);

    // The push side: the peer asks for what it lacks most first.
    let wanted = peer.wanted_from(&big.digests());
    assert_eq!(wanted[..100], unknown[..]);
    assert_eq!(wanted[100..102], [NodeId(160), NodeId(150)]);
}

/// Heartbeat bumps of the first members (by id) must not starve the
/// members after them: a fresh node pulling from a busy node whose every
/// entry advances between exchanges still learns all 300 members in three
/// messages of 128. (Sent in id order, the first 128 ids, always newer,
/// filled every message and the fresh node never learnt the rest.)
#[test]
fn heartbeat_bumps_do_not_starve_unknown_members() {
    let mut big = MembershipState::new(info(1, 1, 0));
    big.apply((2..=300).map(|id| info(id, 1, 0)).collect());
    let mut nodes = vec![big, MembershipState::new(info(500, 1, 0))];
    for round in 1..=3 {
        nodes[0].tick();
        nodes[0].apply((2..=300).map(|id| info(id, 1, round)).collect());
        exchange(&mut nodes, 1, 0);
    }
    assert_eq!(nodes[1].len(), 301);
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

/// Entries with versions anywhere in u64, huge ones included.
fn arb_wild_entry() -> impl Strategy<Value = MemberInfo> {
    let value = prop_oneof![
        0u64..50,
        Just(u64::MAX),
        (MAX_GENERATION - 2)..(MAX_GENERATION + 2),
        (MAX_HEARTBEAT - 2)..(MAX_HEARTBEAT + 2),
        any::<u64>(),
    ];
    (1u64..5, value.clone(), value).prop_map(|(id, g, h)| info(id, g, h))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever gossip brings, every entry in the table stays within
    /// the bounds, so each node can always outbid claims about itself
    /// and its heartbeat keeps advancing.
    #[test]
    fn the_table_stays_within_bounds(
        batches in prop::collection::vec(prop::collection::vec(arb_wild_entry(), 0..6), 1..8),
    ) {
        let mut state = MembershipState::new(info(1, 2, 10));
        for batch in batches {
            state.apply(batch);
            state.tick();
            for entry in state.members() {
                prop_assert!(entry.generation <= MAX_GENERATION);
                prop_assert!(entry.heartbeat <= MAX_HEARTBEAT + 8);
            }
        }
        let before = state.me().version();
        state.tick();
        prop_assert!(state.me().version() > before);
    }

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
