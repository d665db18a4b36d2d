//! What a reply says about how a request was served.
//!
//! The coordinator fills a [`ReplyMeta`] for every put, get and delete; the
//! gRPC layer carries it as `pb::ReplyMeta`, and the client library hands
//! the same struct back to its callers (the CLI prints it). Both ends use
//! this one definition, so a field added to one cannot be forgotten in the
//! other.

/// Who took part in a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReplyMeta {
    /// The node that coordinated the request.
    pub coordinator: String,
    /// Replicas that acknowledged (writes) or answered (reads).
    pub replicas: Vec<String>,
    /// (fallback, replica it stood in for).
    pub fallbacks: Vec<(String, String)>,
    /// Replicas a read sent the merged state to because they were behind.
    pub read_repaired: u32,
    /// Effective N of the request.
    pub replication: u32,
    /// N was capped because the cluster has fewer members than configured.
    pub replication_capped: bool,
    /// R or W after resolving the level.
    pub required: u32,
    /// Layout version the request was routed with.
    pub layout_version: u64,
}
