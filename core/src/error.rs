//! The one error type of `ringkv-server`.
//!
//! Every layer (version codec, storage, coordinator, configuration) returns
//! [`Error`]. The gRPC layer maps it to a `tonic::Status` in exactly one place
//! (`api::status`), so the code a client sees for each failure is decided
//! here and nowhere else. The classifiers tell callers (and the client
//! library, through the status code) whether a retry is safe.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One replica's failure inside a quorum round, kept so the client is told
/// which node failed and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaError {
    /// Node id or address of the replica.
    pub node: String,
    /// What went wrong, as the replica or the transport reported it.
    pub error: String,
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.error)
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (empty or oversized key or value, a
    /// replica count of 0 or above N, an unknown enum value). Not retryable.
    #[error("{0}")]
    InvalidArgument(String),

    /// A context supplied by the client could not be decoded.
    #[error(
        "malformed context: {0}; pass back the context exactly as a get returned it, or omit it"
    )]
    MalformedContext(String),

    /// Bytes read from storage or from a peer could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),

    /// The storage engine failed. Never accompanied by an acknowledgement.
    #[error("storage failure: {0}")]
    Storage(String),

    /// This node's storage failed earlier (a WAL write or fsync), so it
    /// refuses writes until restarted. The refused write was not applied
    /// here; another node can take it.
    #[error(
        "this node's storage failed ({0}) and it no longer accepts writes; send writes to another node; an operator must check the disk and restart this node"
    )]
    StorageFailed(String),

    /// Fewer than the required replicas could be reached at all.
    #[error(
        "not enough replicas: needed {needed}, got {got} (acked: {}; failed: {}); retry later or lower the consistency level",
        join(acked), join(failed)
    )]
    Unavailable {
        needed: usize,
        got: usize,
        acked: Vec<String>,
        failed: Vec<ReplicaError>,
    },

    /// The quorum was not reached before the deadline. A write may still
    /// have landed on some replicas: the outcome is indeterminate.
    #[error(
        "quorum not reached in time: needed {needed}, got {got} (acked: {}; failed: {}); the write may have been applied, retry idempotently",
        join(acked), join(failed)
    )]
    Timeout {
        needed: usize,
        got: usize,
        acked: Vec<String>,
        failed: Vec<ReplicaError>,
    },

    /// A write whose outcome is unknown: it was applied on some replica
    /// (or sent to a coordinator that may have applied it) but was not
    /// confirmed by W replicas. It may or may not become visible. The text
    /// says what is known; the display adds what to do.
    #[error(
        "{0}; the write may or may not have been applied: retry it idempotently, or read the key to find out"
    )]
    Indeterminate(String),

    /// The node refuses work to protect itself.
    #[error("overloaded: {0}; back off and retry")]
    Overloaded(String),

    /// A key's state would pass `limits.max_key_state_bytes` (a write that
    /// would add to it), or a key's state is too large for one internal
    /// message. Retrying the same write fails again: the key's siblings must
    /// be resolved first, by a write carrying the context of a read.
    #[error(
        "{what} {siblings} sibling(s), {bytes} bytes in all, above limits.max_key_state_bytes = {limit}; read the key and write with the context the read returned to replace its siblings (or delete them with it)"
    )]
    KeyStateTooLarge {
        /// What was refused, leading into the sibling count ("put refused:
        /// the key would hold").
        what: String,
        siblings: usize,
        bytes: usize,
        limit: usize,
    },

    /// A message between nodes was refused as too large for one message
    /// (the text starts with `peer::TOO_LARGE`): that message's failure
    /// alone, never its peer's.
    #[error("{0}")]
    MessageTooLarge(String),

    /// This node refuses a peer's traffic (the test fault switch), before
    /// anything was applied.
    #[error("{0}")]
    Unreachable(String),

    /// A cluster change is not allowed in the current state.
    #[error("{0}")]
    FailedPrecondition(String),

    /// The request carries no valid credential (a missing, malformed,
    /// unknown, revoked or expired token).
    #[error("{0}")]
    Unauthenticated(String),

    /// The credential is valid but does not allow this (a scope or a key
    /// prefix it lacks, an Internal call on the client port).
    #[error("{0}")]
    PermissionDenied(String),

    /// The thing named does not exist (a token id).
    #[error("{0}")]
    NotFound(String),

    /// Invalid configuration, found at start-up.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A bug or an unexpected condition inside the node.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The class of an error, as every protocol reports it: gRPC's codes, of
/// which ringkv uses these. [`Error::code`] decides each error's class in
/// one place; the gRPC layer and the in-memory network both use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    /// Refused before anything was applied: retry freely.
    Unavailable,
    /// The outcome is unknown: it may have been applied.
    DeadlineExceeded,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
    Internal,
}

impl Error {
    /// This error's class. UNAVAILABLE promises that the request was
    /// refused before anything was applied (retry freely); every write
    /// whose outcome is unknown gets DEADLINE_EXCEEDED, the one
    /// indeterminate code (retry idempotently).
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::MalformedContext(_) => Code::InvalidArgument,
            Error::Unavailable { .. } | Error::StorageFailed(_) | Error::Unreachable(_) => {
                Code::Unavailable
            }
            Error::Timeout { .. } | Error::Indeterminate(_) => Code::DeadlineExceeded,
            Error::Overloaded(_) | Error::KeyStateTooLarge { .. } | Error::MessageTooLarge(_) => {
                Code::ResourceExhausted
            }
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::Corrupt(_) | Error::Storage(_) | Error::Config(_) | Error::Internal(_) => {
                Code::Internal
            }
        }
    }

    /// Whether the same request may simply be sent again (an
    /// indeterminate write only if applying it twice is harmless, which a
    /// put with the same context is).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::StorageFailed(_)
                | Error::Unreachable(_)
                | Error::Timeout { .. }
                | Error::Indeterminate(_)
                | Error::Overloaded(_)
        )
    }

    /// Whether a write that failed with this error may nevertheless have been
    /// applied on some replicas. `Unavailable` and `StorageFailed` are
    /// decided before anything is applied, so they are not.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Indeterminate(_))
    }

    /// The error a write gets when its quorum failed after the coordinator
    /// had applied it: whatever the quorum helper said, the write is on the
    /// coordinator (and maybe more replicas), so the outcome is
    /// indeterminate, never the "nothing happened" of `Unavailable`.
    pub fn after_apply(self) -> Error {
        match self {
            Error::Unavailable {
                needed,
                got,
                acked,
                failed,
            } => Error::Indeterminate(format!(
                "the coordinator applied the write, but only {got} of the {needed} replicas needed acknowledged it (acked: {}; failed: {})",
                join(&acked),
                join(&failed)
            )),
            other => other,
        }
    }
}

/// The shared vocabulary (node ids, levels, keys) only ever refuses input.
impl From<ringkv_common::Error> for Error {
    fn from(e: ringkv_common::Error) -> Self {
        match e {
            ringkv_common::Error::InvalidArgument(msg) => Error::InvalidArgument(msg),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}
