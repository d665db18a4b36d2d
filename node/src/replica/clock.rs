//! The node's clock: hybrid logical clock timestamps that are never issued
//! twice, not even across a crash, a restored backup or a wall clock
//! stepped back across a restart.
//!
//! Every write this node coordinates gets a timestamp from here, and its
//! dot's counter is at least that timestamp (`VersionSet::write`). So the
//! uniqueness of dots rests on one property: **no timestamp is issued
//! twice by one node id**. Within one run the pure [`HybridClock`] gives
//! that (each timestamp is above everything issued or observed). Across
//! runs it rests on two things:
//!
//! - **The wall clock, and a wait after each start.** A data directory
//!   restored from a backup, or a WAL that lost its unsynced tail in a
//!   machine crash, takes the node's stored per-key counters back in time,
//!   but not the wall clock. (Per-key counters alone reuse dots here, and a
//!   replica that already covers the reused dot silently drops the new
//!   write: Riak's KV679.) Every timestamp a run issues is at most
//!   `clock.max_offset_ms` ahead of the wall clock at the time (observed
//!   timestamps are clamped to that bound, and the clock never jumps to a
//!   stored floor ahead of the wall clock, it waits for it). So a run that
//!   issues nothing until its wall clock is `max_offset_ms` past its own
//!   start ([`NodeClock::issue`] waits that out, once) issues only
//!   timestamps above every one of any earlier run, whatever its disk
//!   holds now.
//! - **A persisted floor, leased ahead of use.** Before issuing a timestamp
//!   at or past the stored floor, the clock durably writes (fsync, whatever
//!   `storage.sync` says) a new floor [`LEASE_MS`] ahead of it, and at start
//!   it waits until the wall clock passes the stored floor. So a wall clock
//!   stepped back across a restart (by up to [`MAX_START_WAIT_MS`]) cannot
//!   take timestamps back either; stepped back further, the clock continues
//!   from the floor instead of waiting, and says so in the log.
//!
//! The cost: one small synced write per [`LEASE_MS`] of writing, and after
//! each start the first write waits until `max_offset_ms` (500 ms by
//! default) have passed. Only a restored backup *together with* a wall
//! clock stepped back behind the timestamps issued before the restore can
//! reissue a timestamp; the operations guide says to check the clock
//! before restoring.
//!
//! Timestamps from elsewhere are bounded: a peer's version or a client's
//! context more than `clock.max_offset_ms` ahead of the local wall clock is
//! refused ([`NodeClock::check`]) and counted, so one bad clock or one
//! forged message cannot drag this node's clock to the end of time, where
//! the HLC would saturate and every later timestamp (and dot) would repeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ringkv_core::error::{Error, Result};
use ringkv_core::version::{HybridClock, Timestamp, VersionSet, VersionVector};
use ringkv_storage::{Cf, Engine, WriteBatch};

/// `meta` key of the persisted clock floor: unix ms (8 bytes big-endian)
/// above every timestamp this node has issued.
const FLOOR_KEY: &[u8] = b"clock_floor";

/// The clock floor's lease (defined with the configuration, whose
/// validation depends on it).
pub use crate::config::CLOCK_LEASE_MS as LEASE_MS;

/// The longest the first write after a start waits for the wall clock to
/// pass the stored floor. A floor further ahead means the wall clock was
/// stepped back by more than a restart takes: the clock then continues
/// from the floor at once (timestamps run ahead of the wall clock until it
/// catches up) rather than refusing writes for that long.
pub const MAX_START_WAIT_MS: u64 = 2_000;

/// The node's clock, shared by every write path of the replica.
pub struct NodeClock {
    state: Mutex<ClockState>,
    /// Where the floor is persisted.
    engine: Arc<dyn Engine>,
    /// `clock.max_offset_ms`: how far ahead of the wall clock a timestamp
    /// from a peer or client may be.
    max_offset_ms: u64,
    /// Wall clock (unix ms) before which this run issues nothing: its start
    /// plus the start margin, so every earlier run's timestamps lie behind.
    not_before_ms: u64,
    /// The start gate, settled by the first issue: `not_before_ms` or the
    /// stored floor, whichever is later. Kept apart from `state` so that
    /// waiting at the gate holds no lock that `observe` (called on the
    /// async runtime) needs.
    gate: Mutex<Option<u64>>,
    /// Timestamps and counters refused as too far ahead (for the metric).
    refused: Arc<AtomicU64>,
}

struct ClockState {
    hlc: HybridClock,
    /// Unix ms of the persisted floor; a timestamp at or past it needs a new
    /// floor first. Zero until the first timestamp is issued.
    lease_until_ms: u64,
}

impl NodeClock {
    /// A clock that issues nothing until `start_margin_ms` after `start_ms`
    /// (the node's `clock.max_offset_ms` in a server; 0 where no earlier
    /// run of this node id can exist, as in unit tests).
    pub fn new(
        engine: Arc<dyn Engine>,
        max_offset_ms: u64,
        start_ms: u64,
        start_margin_ms: u64,
    ) -> Self {
        Self {
            not_before_ms: start_ms.saturating_add(start_margin_ms),
            state: Mutex::new(ClockState {
                hlc: HybridClock::new(),
                lease_until_ms: 0,
            }),
            gate: Mutex::new(None),
            engine,
            max_offset_ms,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Issues a timestamp above every timestamp this node id ever issued
    /// (see the module doc), persisting a new floor first when needed.
    /// `wall` reads the wall clock (unix ms). Blocking (it may fsync, and
    /// the first call of a run may sleep until the start margin and the
    /// stored floor are behind): call it on a blocking thread.
    pub fn issue(&self, wall: &dyn Fn() -> u64) -> Result<Timestamp> {
        let not_before = self.start_gate(wall)?;
        // No lock is held while waiting: concurrent first writers each wait
        // for the same instant, and merges keep observing meanwhile.
        while wall() < not_before {
            let left = not_before.saturating_sub(wall());
            std::thread::sleep(std::time::Duration::from_millis(left));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let wall_ms = wall();
        let ts = state.hlc.now(wall_ms);
        if ts.0 == u64::MAX {
            return Err(Error::Internal(
                "the hybrid clock reached its largest value; no further timestamp is unique"
                    .to_string(),
            ));
        }
        if ts.physical_ms() >= state.lease_until_ms {
            let floor = ts.physical_ms().saturating_add(LEASE_MS);
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, FLOOR_KEY, floor.to_be_bytes().to_vec());
            batch.set_durable();
            self.engine.write(batch)?;
            state.lease_until_ms = floor;
        }
        Ok(ts)
    }

    /// The wall clock instant before which this run issues nothing, read
    /// (with the stored floor, the only I/O) at the first issue. A floor
    /// more than [`MAX_START_WAIT_MS`] ahead of the wall clock is not waited
    /// for: the clock continues from it at once instead.
    fn start_gate(&self, wall: &dyn Fn() -> u64) -> Result<u64> {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(not_before) = *gate {
            return Ok(not_before);
        }
        let floor = self.stored_floor()?.unwrap_or(0);
        let now = wall();
        let not_before = if floor > now.saturating_add(MAX_START_WAIT_MS) {
            tracing::warn!(
                ahead_ms = floor - now,
                "the wall clock is behind timestamps this node already issued; continuing from its stored clock floor (check NTP)"
            );
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .hlc
                .observe(Timestamp::new(floor, 0), now);
            self.not_before_ms
        } else {
            self.not_before_ms.max(floor)
        };
        if not_before > now {
            tracing::info!(
                wait_ms = not_before - now,
                "first write after start: waiting until every timestamp of an earlier run is behind the clock"
            );
        }
        *gate = Some(not_before);
        Ok(not_before)
    }

    /// Moves the clock past `seen` (a timestamp already stored or accepted),
    /// clamped to the offset bound so that nothing unchecked can push it
    /// further.
    pub fn observe(&self, seen: Timestamp, wall_ms: u64) {
        let bound = self.bound(wall_ms);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.hlc.observe(seen.min(bound), wall_ms);
    }

    /// Refuses a version set from a peer whose timestamps or counters lie
    /// more than `clock.max_offset_ms` ahead of the local wall clock.
    pub fn check(&self, set: &VersionSet, wall_ms: u64) -> Result<()> {
        let bound = self.bound(wall_ms);
        let timestamp = set.max_timestamp().unwrap_or_default();
        let counter = set.max_counter();
        if timestamp > bound || counter > bound.0 {
            return Err(self.refuse(timestamp.max(Timestamp(counter)), wall_ms));
        }
        Ok(())
    }

    /// Refuses a client context whose counters lie beyond any timestamp a
    /// node could have issued: it was not returned by a read, and a counter
    /// near `u64::MAX` would make the next dot saturate onto an old one.
    pub fn check_counters(&self, context: &VersionVector, wall_ms: u64) -> Result<()> {
        let bound = self.bound(wall_ms);
        match context.iter().map(|(_, c)| c).max() {
            Some(c) if c > bound.0 => Err(self.refuse(Timestamp(c), wall_ms)),
            _ => Ok(()),
        }
    }

    /// Timestamps and counters refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The counter behind [`refused`](Self::refused), for the metrics.
    pub fn refused_counter(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// The greatest timestamp acceptable from elsewhere at `wall_ms`.
    fn bound(&self, wall_ms: u64) -> Timestamp {
        Timestamp::new(wall_ms.saturating_add(self.max_offset_ms), u16::MAX)
    }

    fn refuse(&self, seen: Timestamp, wall_ms: u64) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let ahead = seen.physical_ms().saturating_sub(wall_ms);
        Error::InvalidArgument(format!(
            "timestamp or counter {seen} is {ahead} ms ahead of this node's clock, beyond clock.max_offset_ms = {}; check the clocks (NTP) of the sending node",
            self.max_offset_ms
        ))
    }

    fn stored_floor(&self) -> Result<Option<u64>> {
        match self.engine.get(Cf::Meta, FLOOR_KEY)? {
            None => Ok(None),
            Some(bytes) => {
                let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    Error::Corrupt(format!("clock floor of {} bytes, expected 8", bytes.len()))
                })?;
                Ok(Some(u64::from_be_bytes(raw)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_storage::MemoryEngine;

    fn clock(engine: &Arc<MemoryEngine>) -> NodeClock {
        NodeClock::new(engine.clone(), 500, 0, 0)
    }

    /// A wall clock that reads `at` and moves on by `step` ms per reading.
    fn ticking(at: u64, step: u64) -> impl Fn() -> u64 {
        let now = std::cell::Cell::new(at);
        move || {
            let t = now.get();
            now.set(t + step);
            t
        }
    }

    #[test]
    fn a_restart_continues_above_the_persisted_floor_even_with_the_wall_clock_behind() {
        let engine = Arc::new(MemoryEngine::new());
        let first = clock(&engine);
        let issued = first.issue(&|| 1_000_000).unwrap();
        // The wall clock stepped back ten seconds across the restart.
        let second = clock(&engine);
        let next = second.issue(&|| 990_000).unwrap();
        assert!(next > issued, "{next} reissued at or below {issued}");
    }

    #[test]
    fn a_restart_within_the_lease_waits_for_the_floor_instead_of_reissuing() {
        let engine = Arc::new(MemoryEngine::new());
        // A run issues at 1_000 and persists the floor 1_000 + LEASE_MS.
        let first = clock(&engine);
        let issued = first.issue(&|| 1_000).unwrap();
        // Restarted 50 ms later: the first write waits for the floor, so
        // the run's timestamps follow the wall clock, never the floor.
        let second = clock(&engine);
        let next = second.issue(&ticking(1_050, 10)).unwrap();
        assert!(next > issued);
        assert!(next.physical_ms() >= 1_000 + LEASE_MS, "{next}");
        assert_eq!(next.logical(), 0, "{next} was not read off the wall clock");
    }

    #[test]
    fn a_run_issues_nothing_until_its_start_margin_has_passed() {
        // A restored backup: the stored floor is old, but an earlier run
        // may have issued timestamps up to the max offset past its wall
        // clock. The new run waits out that margin from its own start.
        let engine = Arc::new(MemoryEngine::new());
        let c = NodeClock::new(engine.clone(), 500, 10_000, 20);
        let t = c.issue(&ticking(10_000, 5)).unwrap();
        assert!(t.physical_ms() >= 10_020, "{t}");
    }

    #[test]
    fn the_floor_is_written_once_per_lease() {
        let engine = Arc::new(MemoryEngine::new());
        let c = clock(&engine);
        c.issue(&|| 1_000).unwrap();
        let floor = c.stored_floor().unwrap();
        assert_eq!(floor, Some(1_000 + LEASE_MS));
        c.issue(&|| 1_000 + LEASE_MS - 1).unwrap();
        assert_eq!(c.stored_floor().unwrap(), floor);
        c.issue(&|| 1_000 + LEASE_MS).unwrap();
        assert_eq!(c.stored_floor().unwrap(), Some(1_000 + 2 * LEASE_MS));
    }

    #[test]
    fn far_future_timestamps_are_refused_and_cannot_move_the_clock() {
        let engine = Arc::new(MemoryEngine::new());
        let c = clock(&engine);
        let wall = 1_000_000;
        let mut poisoned = VersionSet::new();
        poisoned.write(
            ringkv_core::version::NodeId(1),
            None,
            Timestamp(u64::MAX),
            ringkv_core::version::Value::Tombstone,
            None,
            4,
        );
        assert!(c.check(&poisoned, wall).is_err());
        assert_eq!(c.refused(), 1);
        // Unchecked, it still cannot drag the clock further than the bound.
        c.observe(Timestamp(u64::MAX), wall);
        let next = c.issue(&|| wall).unwrap();
        assert!(next.physical_ms() <= wall + 500 + 1);
    }

    #[test]
    fn forged_context_counters_are_refused() {
        let engine = Arc::new(MemoryEngine::new());
        let c = clock(&engine);
        let mut forged = VersionVector::new();
        forged.insert(ringkv_core::version::NodeId(7), u64::MAX);
        assert!(c.check_counters(&forged, 1_000).is_err());
        let mut fine = VersionVector::new();
        fine.insert(ringkv_core::version::NodeId(7), 3);
        fine.insert(ringkv_core::version::NodeId(8), Timestamp::new(1_000, 4).0);
        assert!(c.check_counters(&fine, 1_000).is_ok());
    }
}
