//! The anti-entropy budget: how fast this node may scan keys for repair.
//!
//! Anti-entropy competes with foreground requests for disk, CPU and the
//! blocking pool, so every key it scans (for its own passes and for the
//! peers that ask for its summaries) is charged to one node-wide budget of
//! `repair.keys_per_second`. The budget is a GCRA ("generic cell rate
//! algorithm", the virtual-scheduling form of a token bucket): it keeps
//! the *theoretical arrival time* of the next key, pushes it forward by
//! `keys / rate` for every batch charged, and makes the caller wait until
//! that time is no more than [`BURST`] ahead of now. One timestamp of state,
//! exact over any window, and fair to concurrent scans because each waits
//! for its own reservation.
//!
//! **Back-off under load.** A fixed rate is not enough when the node is
//! busy: the same scan then takes longer, because it waits for the disk,
//! for a CPU, or for a blocking thread. So after each chunk the scanner
//! also pauses at least as long as the chunk took, times
//! [`LOAD_BACKOFF_FACTOR`] ([`pause_after`]): anti-entropy then uses at
//! most half of one thread's time, and the slower the node gets, the
//! longer it steps aside. On an idle node chunks take microseconds and the
//! key rate alone decides.
//!
//! The state machine is pure: callers pass the current instant in.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of the rate a scan may run before it has to wait: the
/// first keys of a pass go at once, so a small partition is not delayed.
pub const BURST: Duration = Duration::from_millis(100);

/// After a chunk that took `t`, the scanner pauses at least `t` times this:
/// 1.0 keeps anti-entropy under half of one thread whatever the rate says.
pub const LOAD_BACKOFF_FACTOR: f64 = 1.0;

/// The most one charge can cost; only absurd batch sizes reach it, and it
/// keeps the instant arithmetic far from overflow.
const MAX_CHARGE: Duration = Duration::from_secs(24 * 3600);

/// The node-wide scan budget (GCRA).
#[derive(Debug)]
pub struct Budget {
    /// Time one key costs: 1 / `repair.keys_per_second`.
    per_key: Duration,
    /// Theoretical arrival time of the next key; `None` before any charge.
    next: Option<Instant>,
}

impl Budget {
    /// A budget of `keys_per_second` (0 is treated as 1: configuration
    /// validation refuses it anyway).
    pub fn new(keys_per_second: u64) -> Self {
        Self {
            per_key: Duration::from_secs_f64(1.0 / keys_per_second.max(1) as f64),
            next: None,
        }
    }

    /// Charges `keys` at `now` and returns how long the caller must wait
    /// before going on.
    pub fn charge(&mut self, keys: u64, now: Instant) -> Duration {
        let start = self.next.map_or(now, |next| next.max(now));
        let cost = self.time_for(keys).min(MAX_CHARGE);
        let next = start.checked_add(cost).unwrap_or(start);
        self.next = Some(next);
        next.saturating_duration_since(now).saturating_sub(BURST)
    }

    /// Time to scan `keys` at the budget's rate (for RPC deadlines).
    pub fn time_for(&self, keys: u64) -> Duration {
        self.per_key
            .checked_mul(u32::try_from(keys).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
    }
}

/// The pause after a chunk: what the budget asks, but never less than the
/// chunk itself took (times [`LOAD_BACKOFF_FACTOR`]).
pub fn pause_after(budget_wait: Duration, chunk_took: Duration) -> Duration {
    budget_wait.max(chunk_took.mul_f64(LOAD_BACKOFF_FACTOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = Budget::new(1000);
        // 100 keys = 100 ms of budget: within the burst.
        assert_eq!(b.charge(100, t0), Duration::ZERO);
        // 100 more at the same instant: 200 ms ahead, 100 ms over the burst.
        assert_eq!(b.charge(100, t0), ms(100));
        // Having waited, the next batch again waits for its own share.
        assert_eq!(b.charge(100, t0 + ms(100)), ms(100));
    }

    #[test]
    fn idle_time_is_not_saved_up_beyond_the_burst() {
        let t0 = Instant::now();
        let mut b = Budget::new(1000);
        b.charge(50, t0);
        // Ten idle seconds later a big batch still pays for itself.
        assert_eq!(b.charge(1100, t0 + ms(10_000)), ms(1000));
    }

    #[test]
    fn concurrent_scans_share_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(1000);
        let waits: Vec<Duration> = (0..4).map(|_| b.charge(100, t0)).collect();
        assert_eq!(waits, vec![ms(0), ms(100), ms(200), ms(300)]);
    }

    #[test]
    fn slow_chunks_back_off_in_proportion() {
        assert_eq!(pause_after(ms(5), ms(1)), ms(5));
        assert_eq!(pause_after(ms(5), ms(40)), ms(40));
        assert_eq!(pause_after(Duration::ZERO, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn huge_charges_saturate_instead_of_panicking() {
        let t0 = Instant::now();
        let mut b = Budget::new(1);
        let wait = b.charge(u64::MAX, t0);
        assert!(wait > ms(1_000_000));
        assert!(Budget::new(0).time_for(10) >= Duration::from_secs(10));
    }
}
