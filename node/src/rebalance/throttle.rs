//! The byte-rate limit of partition transfers (`transfer.max_rate`).
//!
//! One limiter per node, shared by all its transfers. A transfer reports
//! each chunk after receiving it; the limiter books the chunk's bytes on a
//! timeline running at the allowed rate and says how long to wait before
//! the next fetch. Time a transfer spent waiting on the network is not
//! credited back (no bursts after a stall), so over any stretch of time the
//! bytes received exceed the rate times its length by at most one chunk per
//! transfer running at once (each may have one chunk in flight).

use std::time::Duration;

use tokio::time::Instant;

/// A rate limiter on a virtual timeline: pure arithmetic, the caller sleeps.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: Option<f64>,
    /// When the bytes booked so far will have been "paid" at the rate.
    paid_until: Option<Instant>,
}

impl Throttle {
    /// `None`: unlimited.
    pub fn new(bytes_per_second: Option<f64>) -> Self {
        Self {
            bytes_per_second: bytes_per_second.filter(|r| *r > 0.0),
            paid_until: None,
        }
    }

    /// Books `bytes` received at `now`; returns how long to wait before
    /// receiving more.
    pub fn book(&mut self, bytes: u64, now: Instant) -> Duration {
        let Some(rate) = self.bytes_per_second else {
            return Duration::ZERO;
        };
        let start = match self.paid_until {
            Some(t) if t > now => t,
            _ => now,
        };
        let until = start + Duration::from_secs_f64(bytes as f64 / rate);
        self.paid_until = Some(until);
        until - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let mut t = Throttle::new(None);
        assert_eq!(t.book(1 << 30, Instant::now()), Duration::ZERO);
        let mut t = Throttle::new(Some(0.0));
        assert_eq!(t.book(1 << 30, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn waits_hold_the_rate_over_a_run_of_chunks() {
        let mut t = Throttle::new(Some(1_000_000.0));
        let start = Instant::now();
        let mut now = start;
        let mut total = 0u64;
        for chunk in [250_000u64, 100_000, 400_000, 250_000] {
            total += chunk;
            now += t.book(chunk, now);
        }
        // 1 MB at 1 MB/s: the next fetch may start after exactly 1 s.
        assert_eq!(total, 1_000_000);
        let elapsed = (now - start).as_secs_f64();
        assert!((elapsed - 1.0).abs() < 1e-6, "{elapsed}");
    }

    #[test]
    fn a_stall_earns_no_burst() {
        let mut t = Throttle::new(Some(1_000.0));
        let start = Instant::now();
        assert_eq!(t.book(500, start), Duration::from_millis(500));
        // The next chunk arrives 10 s later: it waits its own full share.
        let later = start + Duration::from_secs(10);
        assert_eq!(t.book(1_000, later), Duration::from_secs(1));
    }
}
