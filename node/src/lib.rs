//! ringkv-node: one node of a ringkv cluster, without its gRPC edge.
//!
//! The request path runs `coordinator` (consistency levels, the quorum
//! helper, reply meta) → `replica` (atomic read-merge-write of one key) →
//! the storage engine (`ringkv-storage`). `membership` keeps the member
//! table, the layout and the failure detector; `handoff`, `repair` and
//! `rebalance` move data between nodes; `inbound` answers other nodes'
//! messages; `auth` holds the client tokens; `worker` runs every background
//! loop; `assemble` puts a node together over any peer network (gRPC in the
//! server crate, in memory in simulations).

pub mod assemble;
pub mod auth;
pub mod config;
pub mod coordinator;
pub mod handoff;
pub mod inbound;
pub mod membership;
pub mod metrics;
pub mod rebalance;
pub mod repair;
pub mod replica;
pub mod worker;

pub use ringkv_core::error::{Error, Result};
