//! ringkv-common: the small vocabulary every ringkv crate shares.
//!
//! The server, the client library, the CLI, the test kit and the benches
//! all need to name a node, a consistency level and a key's partition, to
//! agree on what a valid key is, and to read the same byte formats. Before
//! this crate each kept its own copy, and the copies had started to differ
//! (three key checks with three messages). Here each thing has one
//! definition:
//!
//! * [`node`]: [`NodeId`], a node's permanent random identity.
//! * [`level`]: [`Level`], how many replicas must answer, and how it
//!   resolves against N.
//! * [`meta`]: [`ReplyMeta`], who took part in a request.
//! * [`partition`]: [`partition_of`], the key-to-partition hash (part of the
//!   on-disk format).
//! * [`key`]: the key size limits and the one key check.
//! * [`bytes`]: the bounds-checked byte reader and LEB128 varints the
//!   hand-written codecs share.
//! * [`clock`]: [`wall_clock_ms`], the one wall-clock read.
//! * [`shutdown`]: [`Shutdown`], the one shutdown signal every loop watches.
//!
//! The crate sits below everything else: it depends on no other ringkv
//! crate and on nothing heavier than tokio's `sync` module, and it knows
//! nothing about gRPC, protobuf or storage.

pub mod bytes;
pub mod clock;
pub mod key;
pub mod level;
pub mod meta;
pub mod node;
pub mod partition;
pub mod shutdown;

pub use clock::wall_clock_ms;
pub use key::{check_key, DEFAULT_MAX_KEY_BYTES, MAX_KEY_LIMIT};
pub use level::{Level, MAX_REPLICATION};
pub use meta::ReplyMeta;
pub use node::NodeId;
pub use partition::{partition_of, partition_of_seeded, KEY_HASH_SEED};
pub use shutdown::{Shutdown, ShutdownTrigger};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the shared vocabulary: only input that can never
/// be valid (a malformed node id, an unknown level, an empty or oversized
/// key). Each crate maps it to its own "invalid argument".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The message says what was wrong and what would be accepted.
    #[error("{0}")]
    InvalidArgument(String),
}
