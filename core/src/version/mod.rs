//! Versions: dots, version vectors, siblings and the hybrid logical clock.
//!
//! ringkv never overwrites a value in place. Every write creates a *version*,
//! and a key's stored state is the set of versions that no replica has yet
//! superseded, together with a *context* saying which writes the state
//! already accounts for. This module is the pure (no I/O, no clock reads)
//! core of that model; `replica` stores what it computes, `coordinator` and
//! `repair` merge what replicas send back.
//!
//! # Dots and version vectors
//!
//! Each node has a permanent random [`NodeId`]. A write coordinated by node
//! `A` is named by a [`Dot`] `(A, n)`: the `n`-th write `A` coordinated for
//! that key. A [`VersionVector`] maps nodes to counters; it *covers* the dot
//! `(A, n)` when its entry for `A` is at least `n`, i.e. it summarises the
//! dots `(A, 1..=n)` for every node. Counters are never reused: a node whose
//! data directory was wiped starts with a fresh id.
//!
//! # Dotted version vector sets
//!
//! A [`VersionSet`] is a dotted version vector set (Preguiça et al., "Dotted
//! Version Vectors: Efficient Causality Tracking for Distributed Key-Value
//! Stores"; Riak 2.0's `dvvset`): a context plus the concurrent versions
//! (*siblings*), each carrying its own dot. Tracking one dot per version
//! instead of one vector per version is what keeps concurrent writes handled
//! by the same coordinator apart ("sibling explosion" in plain vector clocks).
//!
//! **Invariants** (checked by [`VersionSet::decode`]):
//! 1. every version's dot is covered by the context;
//! 2. no two versions share a dot (the versions are kept sorted by dot);
//! 3. no context entry is zero.
//!
//! The context means: "every dot it covers is either held here or was
//! superseded by something held here (or by something a client saw)". Two
//! operations change a set:
//!
//! - **write** ([`VersionSet::write`]): the coordinator picks the next dot for
//!   itself, drops the versions the client's context covers (or every version
//!   it holds, for a blind overwrite without context), and adds the new
//!   version. Versions the client had not seen stay as siblings.
//! - **merge** ([`VersionSet::merge`], "sync" in the paper): a version
//!   survives unless the other side's context covers its dot while the other
//!   side no longer holds it, which means the other side saw it and
//!   superseded it. Merge is commutative, associative and idempotent, so
//!   replicas converge no matter in which order or how often they exchange
//!   state (read repair, hints, anti-entropy all just merge).
//!
//! # Time
//!
//! Causality alone cannot order siblings for `resolve = LWW`, TTL expiry or
//! the sibling cap, so each version also carries a hybrid logical clock
//! [`Timestamp`] (Kulkarni et al., "Logical Physical Clocks"): wall-clock
//! milliseconds with a logical counter that keeps timestamps strictly
//! increasing on a node even when its wall clock steps backwards, and past
//! every timestamp it has observed from peers. The clock state machine
//! ([`HybridClock`]) takes the wall time as an argument; only the caller
//! reads the system clock.
//!
//! # Encodings
//!
//! [`VersionSet::encode`] is the stored (and replicated) form and
//! [`VersionVector::encode_context`] the opaque context handed to clients.
//! Both start with a format version byte, are canonical (one state, one byte
//! string) and their decoders reject any malformed input with an error,
//! never a panic: stored bytes give [`Error::Corrupt`], client contexts
//! [`Error::MalformedContext`].
//!
//! [`Error::Corrupt`]: crate::error::Error::Corrupt
//! [`Error::MalformedContext`]: crate::error::Error::MalformedContext

mod clock;
mod codec;
mod dot;
mod set;

#[cfg(test)]
mod proptests;

pub use clock::{HybridClock, Timestamp};
pub use codec::{CONTEXT_FORMAT_VERSION, MAX_CONTEXT_ENTRIES, SET_FORMAT_VERSION};
pub use dot::{Dot, NodeId, VersionVector};
pub use set::{Value, Version, VersionSet, WriteOutcome};
