//! Unit and property tests of the failure detector.

use super::*;
use proptest::prelude::*;

const INTERVAL: u64 = 1000;
const A: NodeId = NodeId(0xa);
const B: NodeId = NodeId(0xb);

fn detector() -> FailureDetector {
    FailureDetector::new(DEFAULT_PHI_THRESHOLD, INTERVAL as f64)
}

/// Heartbeats of `node` every `INTERVAL` from `start` for `count` beats;
/// returns the time of the last one.
fn beat(d: &mut FailureDetector, node: NodeId, start: u64, count: u64) -> u64 {
    for i in 0..count {
        d.heartbeat(node, start + i * INTERVAL);
    }
    start + (count - 1) * INTERVAL
}

#[test]
fn regular_heartbeats_keep_phi_low() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 200);
    for late in [0, 500, 1000, 1500, 2000] {
        assert!(
            d.phi(A, last + late) < 0.1,
            "phi {} at +{late}",
            d.phi(A, last + late)
        );
        assert_eq!(d.liveness(A, last + late), Liveness::Alive);
    }
}

#[test]
fn long_silence_crosses_the_threshold() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 200);
    assert!(d.phi(A, last + 20_000) >= DEFAULT_PHI_THRESHOLD);
    assert_eq!(d.liveness(A, last + 20_000), Liveness::Dead);
    assert!(!d.is_alive(A, last + 20_000));
    // The documented figures for the defaults: suspect near 5.8 s, dead near 6.6 s.
    assert_eq!(d.liveness(A, last + 5_500), Liveness::Alive);
    assert_eq!(d.liveness(A, last + 6_200), Liveness::Suspect);
    assert_eq!(d.liveness(A, last + 7_000), Liveness::Dead);
    // Long silences stay finite and keep growing.
    let (p1, p2) = (d.phi(A, last + 60_000), d.phi(A, last + 3_600_000));
    assert!(p1.is_finite() && p2.is_finite() && p2 > p1);
}

#[test]
fn suspect_band_lies_between_half_and_full_threshold() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 50);
    let mut seen = Vec::new();
    for silence in (0..20_000).step_by(10) {
        let (phi, liveness) = (d.phi(A, last + silence), d.liveness(A, last + silence));
        let expected = if phi >= DEFAULT_PHI_THRESHOLD {
            Liveness::Dead
        } else if phi >= DEFAULT_PHI_THRESHOLD / 2.0 {
            Liveness::Suspect
        } else {
            Liveness::Alive
        };
        assert_eq!(liveness, expected, "silence {silence} phi {phi}");
        if seen.last() != Some(&liveness) {
            seen.push(liveness);
        }
    }
    assert_eq!(seen, [Liveness::Alive, Liveness::Suspect, Liveness::Dead]);
}

#[test]
fn restarted_node_is_alive_at_once_and_keeps_its_rhythm() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 150);
    let back = last + 120_000;
    assert_eq!(d.liveness(A, back), Liveness::Dead);
    d.heartbeat(A, back);
    assert_eq!(d.liveness(A, back), Liveness::Alive);
    // The two-minute gap was not recorded: the window is the bootstrap again,
    // so a second failure is detected as fast as the first.
    let window = &d.peers[&A].heartbeats;
    assert!((window.mean_ms - INTERVAL as f64).abs() < 1.0);
    let last = beat(&mut d, A, back + INTERVAL, 20);
    assert_eq!(d.liveness(A, last + 2_000), Liveness::Alive);
    assert_eq!(d.liveness(A, last + 20_000), Liveness::Dead);
}

#[test]
fn tolerated_gaps_are_part_of_the_rhythm() {
    let mut a = PhiAccrual::new(INTERVAL as f64);
    a.heartbeat(0);
    a.heartbeat(1000);
    a.heartbeat(4000); // late, but phi stayed below the threshold
    assert_eq!(a.intervals.len(), 4);
    assert!(a.mean_ms > INTERVAL as f64);
}

#[test]
fn rpc_failure_kills_at_once_and_the_next_heartbeat_revives() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 30);
    d.rpc_failed(A, last + 100);
    assert_eq!(d.liveness(A, last + 100), Liveness::Dead);
    // Phi alone would still say alive: the failure is what decides.
    assert!(d.phi(A, last + 100) < 1.0);
    assert_eq!(d.liveness(A, last + 900), Liveness::Dead);
    d.heartbeat(A, last + 1000);
    assert_eq!(d.liveness(A, last + 1000), Liveness::Alive);
}

#[test]
fn rpc_success_revives_and_failure_ordering_is_respected() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 10);
    d.rpc_failed(A, last + 10);
    d.rpc_succeeded(A, last + 20);
    assert_eq!(d.liveness(A, last + 20), Liveness::Alive);
    // A failure stamped before that success is stale.
    d.rpc_failed(A, last + 15);
    assert_eq!(d.liveness(A, last + 30), Liveness::Alive);
    // Same millisecond: the later report wins.
    d.rpc_failed(A, last + 40);
    d.heartbeat(A, last + 40);
    assert_eq!(d.liveness(A, last + 40), Liveness::Alive);
    d.rpc_failed(A, last + 40);
    assert_eq!(d.liveness(A, last + 40), Liveness::Dead);
    // A heartbeat observed before the failure does not clear it.
    d.heartbeat(A, last + 35);
    assert_eq!(d.liveness(A, last + 41), Liveness::Dead);
}

#[test]
fn never_seen_node_is_dead_unless_an_rpc_succeeded() {
    let mut d = detector();
    assert_eq!(d.liveness(B, 0), Liveness::Dead);
    assert_eq!(d.phi(B, 0), 0.0);
    d.rpc_failed(B, 10);
    assert_eq!(d.liveness(B, 10), Liveness::Dead);
    d.rpc_succeeded(B, 20);
    assert_eq!(d.liveness(B, 20), Liveness::Alive);
    // Without heartbeats, phi (on the bootstrap estimate) takes over.
    assert_eq!(d.liveness(B, 20 + 30_000), Liveness::Dead);
}

#[test]
fn rpc_success_restarts_the_silence() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 30);
    d.rpc_succeeded(A, last + 5_000);
    assert_eq!(d.liveness(A, last + 8_000), Liveness::Alive);
    assert_eq!(d.liveness(A, last + 20_000), Liveness::Dead);
}

#[test]
fn forget_drops_the_history() {
    let mut d = detector();
    let last = beat(&mut d, A, 0, 5);
    d.forget(A);
    assert_eq!(d.liveness(A, last), Liveness::Dead);
}

#[test]
fn phi_is_zero_before_the_first_heartbeat() {
    let a = PhiAccrual::new(INTERVAL as f64);
    assert_eq!(a.phi(1_000_000), 0.0);
    assert_eq!(a.last_heartbeat_ms(), None);
}

#[test]
fn liveness_displays_lowercase() {
    let shown: Vec<String> = [Liveness::Alive, Liveness::Suspect, Liveness::Dead]
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(shown, ["alive", "suspect", "dead"]);
}

proptest! {
    #[test]
    fn phi_never_decreases_with_silence(
        intervals in prop::collection::vec(0u64..5_000, 0..150),
        a in 0u64..100_000,
        b in 0u64..100_000,
    ) {
        let mut acc = PhiAccrual::new(INTERVAL as f64);
        let mut now = 0;
        acc.heartbeat(now);
        for i in intervals {
            now += i;
            acc.heartbeat(now);
        }
        let (short, long) = (a.min(b), a.max(b));
        let (p_short, p_long) = (acc.phi(now + short), acc.phi(now + long));
        prop_assert!(p_short.is_finite() && p_short >= 0.0);
        prop_assert!(p_short <= p_long, "phi({short}) = {p_short} > phi({long}) = {p_long}");
    }

    #[test]
    fn liveness_only_worsens_with_silence(
        intervals in prop::collection::vec(1u64..3_000, 1..120),
        silences in prop::collection::vec(0u64..30_000, 1..20),
    ) {
        let mut d = detector();
        let mut now = 0;
        d.heartbeat(A, now);
        for i in intervals {
            now += i;
            d.heartbeat(A, now);
        }
        let rank = |l: Liveness| match l {
            Liveness::Alive => 0,
            Liveness::Suspect => 1,
            Liveness::Dead => 2,
        };
        let mut silences = silences;
        silences.sort_unstable();
        let ranks: Vec<_> = silences.iter().map(|s| rank(d.liveness(A, now + s))).collect();
        prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    }
}
