//! Property tests for the laws the rest of ringkv relies on: DVV merge is
//! commutative, associative and idempotent, loses nothing it should keep,
//! and the codecs round-trip and never panic.
//!
//! States are generated from *histories* (replicas taking writes with
//! contexts read from earlier states, and exchanging state), not as
//! arbitrary structures, so every state tested is one a cluster can reach.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// Replicas in a generated history; each coordinates with its own node id.
const REPLICAS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// A client write coordinated by `replica`, with the context of an
    /// earlier state (a read) or none (blind overwrite).
    Write {
        replica: usize,
        context: Option<Index>,
        wall_ms: u64,
        value: Option<u8>,
        ttl_ms: Option<u64>,
        small_cap: bool,
    },
    /// `to` receives `from`'s state (replication, read repair, hint or
    /// anti-entropy: they all merge).
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let write = (
        0..REPLICAS,
        proptest::option::weighted(0.8, any::<Index>()),
        0u64..40,
        proptest::option::weighted(0.85, any::<u8>()),
        proptest::option::weighted(0.2, 1u64..30),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(replica, context, wall_ms, value, ttl_ms, small_cap)| Step::Write {
                replica,
                context,
                wall_ms,
                value,
                ttl_ms,
                small_cap,
            },
        );
    let sync = (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to });
    prop_oneof![3 => write, 2 => sync]
}

/// Runs a history and returns every state it went through (the empty state
/// first), replicas' states after each step included.
fn run(steps: Vec<Step>) -> Vec<VersionSet> {
    let mut replicas = vec![VersionSet::new(); REPLICAS];
    let mut clocks: Vec<HybridClock> = (0..REPLICAS).map(|_| HybridClock::new()).collect();
    let mut seen = vec![VersionSet::new()];
    for step in steps {
        match step {
            Step::Write {
                replica,
                context,
                wall_ms,
                value,
                ttl_ms,
                small_cap,
            } => {
                let context = context.map(|i| i.get(&seen).context().clone());
                let (Some(state), Some(clock)) =
                    (replicas.get_mut(replica), clocks.get_mut(replica))
                else {
                    continue;
                };
                if let Some(t) = state.max_timestamp() {
                    clock.observe(t, wall_ms);
                }
                let timestamp = clock.now(wall_ms);
                let value = value.map_or(Value::Tombstone, |b| Value::Data(Bytes::from(vec![b])));
                let cap = if small_cap { 2 } else { 32 };
                let node = NodeId(replica as u64 + 1);
                let expires = ttl_ms.map(|t| wall_ms + t);
                state.write(node, context.as_ref(), timestamp, value, expires, cap);
                seen.push(state.clone());
            }
            Step::Sync { from, to } => {
                let Some(source) = replicas.get(from).cloned() else {
                    continue;
                };
                if let Some(target) = replicas.get_mut(to) {
                    target.merge(&source);
                    seen.push(target.clone());
                }
            }
        }
    }
    seen
}

fn history() -> impl Strategy<Value = Vec<VersionSet>> {
    prop::collection::vec(step(), 0..30).prop_map(run)
}

/// Checks the structural invariants through the strict decoder.
fn assert_valid(s: &VersionSet) -> Result<(), TestCaseError> {
    let back = VersionSet::decode(&s.encode());
    prop_assert!(back.is_ok(), "invalid state {s:?}: {back:?}");
    Ok(())
}

/// Every version of `from` survives in `merged` unless `other` saw it and
/// superseded it.
fn assert_no_loss(
    from: &VersionSet,
    other: &VersionSet,
    merged: &VersionSet,
) -> Result<(), TestCaseError> {
    for v in from.versions() {
        let kept = merged.versions().contains(v);
        let dominated = other.context().covers(&v.dot);
        prop_assert!(kept || dominated, "lost {v:?}");
    }
    prop_assert!(merged.context().descends(from.context()));
    Ok(())
}

/// Guards against a vacuous generator: the histories must actually reach
/// siblings, tombstones, expiring values and multi-node contexts.
#[test]
fn histories_reach_interesting_states() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut siblings, mut tombstones, mut ttl, mut wide) = (0, 0, 0, 0);
    for _ in 0..200 {
        let states = history().new_tree(&mut runner).unwrap().current();
        for s in &states {
            siblings += usize::from(s.versions().len() >= 2);
            tombstones += usize::from(s.versions().iter().any(Version::is_tombstone));
            ttl += usize::from(s.versions().iter().any(|v| v.expires_at_ms.is_some()));
            wide += usize::from(s.context().len() == REPLICAS);
        }
    }
    assert!(siblings > 100 && tombstones > 100 && ttl > 100 && wide > 100);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_commutative(states in history(), i in any::<Index>(), j in any::<Index>()) {
        let (a, b) = (i.get(&states), j.get(&states));
        let ab = a.merged(b);
        prop_assert_eq!(&ab, &b.merged(a));
        prop_assert_eq!(ab.digest(), b.merged(a).digest());
    }

    #[test]
    fn merge_is_associative(
        states in history(),
        i in any::<Index>(),
        j in any::<Index>(),
        k in any::<Index>(),
    ) {
        let (a, b, c) = (i.get(&states), j.get(&states), k.get(&states));
        prop_assert_eq!(a.merged(b).merged(c), a.merged(&b.merged(c)));
    }

    #[test]
    fn merge_is_idempotent(states in history(), i in any::<Index>(), j in any::<Index>()) {
        let (a, b) = (i.get(&states), j.get(&states));
        prop_assert_eq!(&a.merged(a), a);
        let ab = a.merged(b);
        prop_assert_eq!(&ab.merged(b), &ab);
        prop_assert_eq!(&ab.merged(a), &ab);
    }

    #[test]
    fn merge_loses_only_dominated_versions(
        states in history(),
        i in any::<Index>(),
        j in any::<Index>(),
    ) {
        let (a, b) = (i.get(&states), j.get(&states));
        let ab = a.merged(b);
        assert_valid(&ab)?;
        assert_no_loss(a, b, &ab)?;
        assert_no_loss(b, a, &ab)?;
    }

    #[test]
    fn reachable_states_round_trip(states in history()) {
        for s in &states {
            assert_valid(s)?;
            let bytes = s.encode();
            let back = VersionSet::decode(&bytes).unwrap();
            prop_assert_eq!(&back, s);
            prop_assert_eq!(back.digest(), s.digest());
            let ctx = VersionVector::decode_context(&s.context().encode_context()).unwrap();
            prop_assert_eq!(&ctx, s.context());
        }
    }

    #[test]
    fn visible_and_lww_agree(states in history(), i in any::<Index>(), now in 0u64..80) {
        let s = i.get(&states);
        let visible = s.visible(now);
        prop_assert!(visible.windows(2).all(|w| (w[0].timestamp, w[0].dot) < (w[1].timestamp, w[1].dot)));
        prop_assert!(visible.iter().all(|v| v.is_live(now)));
        prop_assert_eq!(s.lww(now), visible.last().copied());
    }

    #[test]
    fn garbage_never_panics_and_accepted_bytes_are_canonical(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        format_byte in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if format_byte && !bytes.is_empty() {
            bytes[0] = 1;
        }
        if let Ok(s) = VersionSet::decode(&bytes) {
            prop_assert_eq!(s.encode(), bytes.clone());
        }
        if let Ok(vv) = VersionVector::decode_context(&bytes) {
            prop_assert_eq!(vv.encode_context(), bytes);
        }
    }

    #[test]
    fn damaged_encodings_never_panic(
        states in history(),
        i in any::<Index>(),
        at in any::<Index>(),
        byte in any::<u8>(),
        cut in any::<Index>(),
    ) {
        let good = i.get(&states).encode();
        let mut flipped = good.clone();
        let pos = at.index(flipped.len());
        flipped[pos] = byte;
        if let Ok(s) = VersionSet::decode(&flipped) {
            prop_assert_eq!(s.encode(), flipped);
        }
        let prefix = &good[..cut.index(good.len())];
        prop_assert!(matches!(VersionSet::decode(prefix), Err(crate::error::Error::Corrupt(_))));
    }
}
