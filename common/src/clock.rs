//! The wall clock.
//!
//! ringkv reads the system clock in one place so that pure code (the hybrid
//! logical clock, hint ages, tombstone grace) is handed the time instead of
//! reading it, and tests can pass any time they like.
//!
//! That one place also carries the **test clock offset**: a signed number
//! of milliseconds added to every reading, set through `Admin.SetFaults`
//! on a node started with `debug.fault_injection = true`. It steps this
//! process's wall clock forward or back the way an NTP step or a wrong
//! hardware clock does, without touching the monotonic clock (timers,
//! timeouts, the failure detector), which a real step does not touch
//! either. The verification harness uses it for its clock faults.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The test clock offset in milliseconds; 0 outside clock-fault tests.
static TEST_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Wall clock in unix milliseconds, plus the test offset; 0 if the clock
/// is before 1970.
pub fn wall_clock_ms() -> u64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    system.saturating_add_signed(TEST_OFFSET_MS.load(Ordering::Relaxed))
}

/// Steps this process's wall clock by `offset_ms` from the system clock
/// (replacing any earlier offset). Only the fault switch calls this.
pub fn set_test_offset_ms(offset_ms: i64) {
    TEST_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

/// The test offset in force.
pub fn test_offset_ms() -> i64 {
    TEST_OFFSET_MS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_after_2020() {
        // 2020-01-01 in unix ms: a clock this far off is a broken clock.
        assert!(wall_clock_ms() > 1_577_836_800_000);
    }

    #[test]
    fn the_test_offset_steps_the_wall_clock_both_ways() {
        let before = wall_clock_ms();
        set_test_offset_ms(3_600_000);
        let ahead = wall_clock_ms();
        set_test_offset_ms(-3_600_000);
        let behind = wall_clock_ms();
        set_test_offset_ms(0);
        assert_eq!(test_offset_ms(), 0);
        assert!(ahead >= before + 3_600_000, "{ahead} vs {before}");
        assert!(behind + 3_600_000 <= wall_clock_ms(), "{behind}");
        assert!(behind < before);
    }
}
