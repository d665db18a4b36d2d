//! Hybrid logical clock timestamps (Kulkarni et al., "Logical Physical
//! Clocks and Consistent Snapshots in Globally Distributed Databases").
//!
//! A timestamp is close to wall-clock time (so TTLs and `resolve = LWW`
//! behave as people expect) yet never goes backwards on a node and always
//! moves past timestamps seen from peers, so a write that causally follows
//! another also gets the larger timestamp even across clock skew.

use std::fmt;

/// Bits of a [`Timestamp`] that hold the logical counter.
const LOGICAL_BITS: u32 = 16;

/// Mask selecting the logical counter.
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// Largest representable physical time: 2^48 - 1 ms, about the year 10889.
/// Larger wall times are clamped to it rather than wrapping into the past.
const MAX_PHYSICAL_MS: u64 = u64::MAX >> LOGICAL_BITS;

/// A hybrid logical clock timestamp: upper 48 bits are unix milliseconds,
/// lower 16 bits a logical counter.
///
/// Packing both into one `u64` makes comparison a single integer compare
/// and makes "the next timestamp" simply `+ 1`: when the logical counter is
/// at 65535, adding one carries into the millisecond, which is exactly the
/// overflow rule the HLC needs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Builds a timestamp; `physical_ms` beyond 48 bits is clamped.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Timestamp((physical_ms.min(MAX_PHYSICAL_MS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Unix milliseconds part.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter part: how many timestamps were issued within the same
    /// physical millisecond before this one.
    pub fn logical(self) -> u16 {
        // Truncation is the point: the low 16 bits are the counter.
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The smallest timestamp greater than this one (carries into the
    /// millisecond on logical overflow). Saturates at the maximum, which is
    /// thousands of years away.
    fn successor(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }
}

impl fmt::Display for Timestamp {
    /// `physical.logical`, e.g. `1700000000000.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// The HLC state machine of one node.
///
/// Pure: the caller passes the wall time in, so the clock can be tested with
/// arbitrary (including backwards-jumping) time and used in simulation.
#[derive(Debug, Default)]
pub struct HybridClock {
    /// The greatest timestamp issued by [`now`](Self::now) or passed to
    /// [`observe`](Self::observe); every future timestamp is greater.
    last: Timestamp,
}

impl HybridClock {
    pub fn new() -> Self {
        HybridClock::default()
    }

    /// Issues a timestamp strictly greater than every timestamp issued or
    /// observed before. It equals `wall_ms` with logical 0 when the wall
    /// clock is ahead; otherwise it continues from the last timestamp by
    /// bumping the logical counter (carrying into the next millisecond at
    /// 65535), so a wall clock that steps backwards never makes time go
    /// backwards.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let wall = Timestamp::new(wall_ms, 0);
        self.last = if wall > self.last {
            wall
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Moves the clock past `remote` (a timestamp found on versions received
    /// from a peer), so that the next write this node coordinates orders
    /// after it even if the peer's wall clock runs ahead of ours.
    ///
    /// The local wall time is folded in as the HLC receive rule does; it
    /// issues nothing, so it does not bump the logical counter itself.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) {
        self.last = self.last.max(remote).max(Timestamp::new(wall_ms, 0));
    }

    /// The greatest timestamp issued or observed so far.
    pub fn last(&self) -> Timestamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packing() {
        let t = Timestamp::new(1_700_000_000_123, 7);
        assert_eq!(t.physical_ms(), 1_700_000_000_123);
        assert_eq!(t.logical(), 7);
        assert!(Timestamp::new(5, u16::MAX) < Timestamp::new(6, 0));
        assert_eq!(Timestamp::new(u64::MAX, 1).physical_ms(), MAX_PHYSICAL_MS);
        assert_eq!(t.to_string(), "1700000000123.7");
    }

    #[test]
    fn follows_the_wall_clock_when_it_moves_forward() {
        let mut c = HybridClock::new();
        assert_eq!(c.now(100), Timestamp::new(100, 0));
        assert_eq!(c.now(100), Timestamp::new(100, 1));
        assert_eq!(c.now(101), Timestamp::new(101, 0));
    }

    #[test]
    fn monotonic_when_the_wall_clock_goes_backwards() {
        let mut c = HybridClock::new();
        let a = c.now(1_000);
        let b = c.now(500);
        let d = c.now(999);
        assert!(a < b && b < d);
        assert_eq!(d, Timestamp::new(1_000, 2));
        assert_eq!(c.now(1_001), Timestamp::new(1_001, 0));
    }

    #[test]
    fn logical_overflow_advances_physical() {
        let mut c = HybridClock::new();
        c.observe(Timestamp::new(100, u16::MAX - 1), 0);
        assert_eq!(c.now(100), Timestamp::new(100, u16::MAX));
        assert_eq!(c.now(100), Timestamp::new(101, 0));
        assert_eq!(c.now(100), Timestamp::new(101, 1));
    }

    #[test]
    fn observe_moves_past_remote() {
        let mut c = HybridClock::new();
        c.now(100);
        let remote = Timestamp::new(5_000, 3);
        c.observe(remote, 100);
        let t = c.now(100);
        assert!(t > remote);
        assert_eq!(t, Timestamp::new(5_000, 4));
        // An older remote timestamp changes nothing.
        c.observe(Timestamp::new(10, 0), 100);
        assert_eq!(c.now(100), Timestamp::new(5_000, 5));
        assert_eq!(c.last(), Timestamp::new(5_000, 5));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Now(u64),
        Observe(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..2_000).prop_map(Op::Now),
            ((0u64..2_000 << LOGICAL_BITS), 0u64..2_000).prop_map(|(r, w)| Op::Observe(r, w)),
        ]
    }

    proptest! {
        #[test]
        fn now_exceeds_everything_issued_or_observed(ops in prop::collection::vec(op(), 1..200)) {
            let mut c = HybridClock::new();
            let mut high = None::<Timestamp>;
            for op in ops {
                match op {
                    Op::Now(wall) => {
                        let t = c.now(wall);
                        if let Some(h) = high {
                            prop_assert!(t > h, "{t} not after {h}");
                        }
                        prop_assert!(t.physical_ms() >= wall);
                        high = Some(t);
                    }
                    Op::Observe(remote, wall) => {
                        let remote = Timestamp(remote);
                        c.observe(remote, wall);
                        high = Some(high.map_or(remote, |h| h.max(remote)));
                    }
                }
            }
        }
    }
}
