//! ringkv-server: one node of a ringkv cluster.
//!
//! The request path runs `api` (gRPC handlers: validate, convert, delegate)
//! → `coordinator` (consistency levels, the quorum helper, reply meta) →
//! `replica` (atomic read-merge-write of one key) → `storage` (the engine).
//! `version` (dotted version vectors, hybrid logical clock) and `ring`
//! (hashing, partitions) are pure and do no I/O. `server` wires everything
//! together and owns start-up and shutdown.

pub mod api;
pub mod assemble;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod handoff;
pub mod inbound;
pub mod membership;
pub mod metrics;
pub mod peer;
pub mod rebalance;
pub mod repair;
pub mod replica;
pub mod ring;
pub mod server;
pub mod storage;
pub mod transport;
pub mod version;
pub mod worker;

pub use error::{Error, Result};
