//! Where a key lives: hashing keys onto a ring of fixed partitions.
//!
//! A key's position is xxh3-64 of its bytes with [`KEY_HASH_SEED`]; its
//! partition is the top log2(Q) bits of that position, so partitions are
//! contiguous arcs of the ring and Q stays fixed for the cluster's life.
//! Both the seed and the bit selection are part of the on-disk format (the
//! data column family is keyed by partition), so they never change.
//!
//! The hash itself ([`partition_of`], [`KEY_HASH_SEED`]) is shared with
//! the client and the tests and lives in `ringkv-common`.
//!
//! This module is pure: no I/O, no clocks.

mod cluster_id;
pub mod layout;
pub use cluster_id::ClusterId;
pub use layout::*;
pub use ringkv_common::partition::{key_position, partition_of, KEY_HASH_SEED};
