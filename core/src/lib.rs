//! ringkv-core: the protocol's pure cores. Nothing here does I/O or reads
//! a clock of its own; every other crate builds on these.
//!
//! * [`error`]: the one error type, its codes and classifiers.
//! * [`version`]: dotted version vectors, the causal sets a key holds.
//! * [`ring`]: partitions, cluster ids and layouts (who holds what).
//! * [`membership`]: gossip state and the phi-accrual failure detector.
//! * [`plan`]: what a cluster change would do, before it is committed.
//! * [`merkle`]: the summaries anti-entropy compares.
//! * [`quorum`]: waiting for enough replicas, joint quorums included.

pub mod auth;
pub mod error;
pub mod membership;
pub mod merkle;
pub mod plan;
pub mod quorum;
pub mod ring;
pub mod version;

pub use error::{Error, Result};
