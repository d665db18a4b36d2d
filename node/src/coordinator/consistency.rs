//! Consistency levels and how they resolve to a replica count.
//!
//! A request names how many of a key's N replicas must answer, either as a
//! level (`one`, `quorum`, `all`) or as an explicit count. The count is
//! resolved against the *effective* N of the request: the configured
//! replication factor capped at the number of members, so a one-node cluster
//! with N=3 still serves `quorum` (the reply meta says N was capped).
//! [`Level`] itself, with its parsing and resolution, is shared with the
//! client and lives in `ringkv-common`.

pub use ringkv_common::Level;

/// The consistency a request runs with, after defaults are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consistency {
    pub level: Level,
    /// Whether fallbacks holding hints count toward W.
    pub sloppy: bool,
    /// How long the coordinator waits for the required answers.
    pub timeout: std::time::Duration,
}
