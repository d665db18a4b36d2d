//! Receiving a partition: the resumable, throttled pull of its keys from
//! an old replica, and the progress operators watch.
//!
//! The new replica pulls: it asks a source for the next chunk after the
//! last key it has stored (`Internal.FetchPartition`), merges the chunk,
//! records the cursor in its `meta` column family, waits what the rate
//! limit asks, and asks again. One chunk is in flight per transfer, so a
//! slow receiver slows the sender (backpressure) and memory stays at one
//! chunk. After a restart of either side the receiver asks again from its
//! stored cursor; a chunk applied but not yet recorded is merely merged
//! twice, which changes nothing.
//!
//! Streaming copies one old replica's keys. Writes acknowledged before the
//! change may sit on the other old replicas only (W of N), so the transfer
//! ends with a Merkle exchange against each of them (`Repair::sync_partition`)
//! before it counts as done; one that is down or paused is waited for, not
//! skipped (see `safety`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use ringkv_core::error::{Error, Result};
use ringkv_core::version::NodeId;
use ringkv_storage::{Cf, Engine, WriteBatch};

/// Format byte of a stored cursor.
const CURSOR_FORMAT: u8 = 1;

/// `meta` key prefix of transfer cursors: prefix ‖ version (8 bytes BE) ‖
/// partition (4 bytes BE).
pub const CURSOR_PREFIX: &[u8] = b"transfer/";

/// Where a transfer stands, as stored after every chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Last key stored; `None` before the first chunk.
    pub after: Option<Bytes>,
    pub bytes: u64,
    pub keys: u64,
    /// The source said no keys follow `after`.
    pub streamed: bool,
    /// Streamed and synced with every other old replica (all but those
    /// removed or wiped).
    pub done: bool,
}

impl Cursor {
    pub fn key(version: u64, partition: u32) -> Vec<u8> {
        let mut k = CURSOR_PREFIX.to_vec();
        k.extend_from_slice(&version.to_be_bytes());
        k.extend_from_slice(&partition.to_be_bytes());
        k
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![
            CURSOR_FORMAT,
            u8::from(self.streamed) | (u8::from(self.done) << 1),
        ];
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&self.keys.to_be_bytes());
        if let Some(after) = &self.after {
            out.extend_from_slice(after);
        }
        out
    }

    /// Decodes [`encode`](Self::encode) bytes; anything else is corrupt.
    pub fn decode(bytes: &[u8]) -> Result<Cursor> {
        let corrupt = |what: &str| Error::Corrupt(format!("transfer cursor: {what}"));
        if bytes.len() < 18 {
            return Err(corrupt("truncated"));
        }
        if bytes[0] != CURSOR_FORMAT {
            return Err(corrupt(&format!("unknown format {}", bytes[0])));
        }
        if bytes[1] > 3 {
            return Err(corrupt("bad flags"));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let after = &bytes[18..];
        Ok(Cursor {
            streamed: bytes[1] & 1 != 0,
            done: bytes[1] & 2 != 0,
            bytes: word(2),
            keys: word(10),
            after: (!after.is_empty()).then(|| Bytes::copy_from_slice(after)),
        })
    }

    pub fn load(engine: &dyn Engine, version: u64, partition: u32) -> Result<Option<Cursor>> {
        engine
            .get(Cf::Meta, &Cursor::key(version, partition))?
            .map(|b| Cursor::decode(&b))
            .transpose()
    }

    pub fn store(&self, engine: &dyn Engine, version: u64, partition: u32) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, Cursor::key(version, partition), self.encode());
        engine.write(batch)
    }
}

/// What a transfer is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Queued,
    Streaming,
    Syncing,
    Done,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Streaming => "streaming",
            State::Syncing => "syncing",
            State::Done => "done",
        }
    }
}

/// One transfer as Admin.Transfers reports it.
#[derive(Clone, Debug)]
pub struct Progress {
    pub version: u64,
    pub partition: u32,
    pub from: Option<NodeId>,
    pub bytes: u64,
    pub keys: u64,
    /// Bytes already done when this process took the transfer up.
    pub resumed_from_bytes: u64,
    pub estimated_bytes: u64,
    pub state: State,
    pub last_error: String,
    /// When this process started streaming it.
    pub started: Option<Instant>,
    /// When it finished (rate and elapsed time stop there).
    pub finished: Option<Instant>,
}

impl Progress {
    fn new(version: u64, partition: u32) -> Self {
        Self {
            version,
            partition,
            from: None,
            bytes: 0,
            keys: 0,
            resumed_from_bytes: 0,
            estimated_bytes: 0,
            state: State::Queued,
            last_error: String::new(),
            started: None,
            finished: None,
        }
    }

    pub fn elapsed(&self) -> Duration {
        match (self.started, self.finished) {
            (Some(s), Some(f)) => f - s,
            (Some(s), None) => s.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// Bytes per second received by this process.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (self.bytes - self.resumed_from_bytes.min(self.bytes)) as f64 / secs
    }

    /// Time left at the current rate; `None` when unknown or done.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        if self.state == State::Done || rate <= 0.0 || self.estimated_bytes <= self.bytes {
            return None;
        }
        Some(Duration::from_secs_f64(
            (self.estimated_bytes - self.bytes) as f64 / rate,
        ))
    }
}

/// Every transfer this node receives, by (layout version, partition).
#[derive(Default)]
pub struct Registry {
    entries: Mutex<BTreeMap<(u64, u32), Progress>>,
}

impl Registry {
    pub fn update(&self, version: u64, partition: u32, f: impl FnOnce(&mut Progress)) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(entries
            .entry((version, partition))
            .or_insert_with(|| Progress::new(version, partition)));
    }

    pub fn get(&self, version: u64, partition: u32) -> Option<Progress> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(version, partition))
            .cloned()
    }

    pub fn list(&self) -> Vec<Progress> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forgets transfers of layouts older than `version`.
    pub fn retain_from(&self, version: u64) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(v, _), _| *v >= version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursors = [
            Cursor::default(),
            Cursor {
                after: Some(Bytes::from_static(b"user:42")),
                bytes: 1 << 40,
                keys: 12345,
                streamed: true,
                done: false,
            },
            Cursor {
                after: Some(Bytes::from_static(b"k")),
                bytes: 7,
                keys: 1,
                streamed: true,
                done: true,
            },
        ];
        for c in cursors {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        assert!(Cursor::decode(&[]).is_err());
        assert!(Cursor::decode(&[2; 20]).is_err());
        let mut bad_flags = Cursor::default().encode();
        bad_flags[1] = 9;
        assert!(Cursor::decode(&bad_flags).is_err());
        assert!(Cursor::decode(&Cursor::default().encode()[..10]).is_err());
    }

    #[test]
    fn cursor_keys_sort_by_version_then_partition() {
        assert!(Cursor::key(1, 255) < Cursor::key(2, 0));
        assert!(Cursor::key(2, 0) < Cursor::key(2, 1));
        assert!(Cursor::key(2, 1).starts_with(CURSOR_PREFIX));
    }

    #[test]
    fn progress_reports_rate_and_eta_of_this_run_only() {
        let mut p = Progress::new(3, 7);
        assert_eq!(p.rate(), 0.0);
        assert!(p.eta().is_none());
        p.started = Some(Instant::now() - Duration::from_secs(2));
        p.resumed_from_bytes = 1_000_000;
        p.bytes = 3_000_000;
        p.estimated_bytes = 5_000_000;
        let rate = p.rate();
        assert!((900_000.0..=1_000_001.0).contains(&rate), "{rate}");
        let eta = p.eta().unwrap().as_secs_f64();
        assert!((1.9..=2.3).contains(&eta), "{eta}");
        p.state = State::Done;
        assert!(p.eta().is_none());
    }
}
