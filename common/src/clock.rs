//! The wall clock.
//!
//! ringkv reads the system clock in one place so that pure code (the hybrid
//! logical clock, hint ages, tombstone grace) is handed the time instead of
//! reading it, and tests can pass any time they like.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock in unix milliseconds; 0 if the clock is before 1970.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_after_2020() {
        // 2020-01-01 in unix ms: a clock this far off is a broken clock.
        assert!(wall_clock_ms() > 1_577_836_800_000);
    }
}
