//! How a call to a peer fails, whatever carried it.

use std::fmt;

use ringkv_core::error::{Code, Error};
use ringkv_core::ring::ClusterId;

/// What went wrong with a call to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request provably never left: no connection could be opened, or
    /// the test fault switch cut the peer off.
    NotSent,
    /// The connection failed during the call: the request may have been
    /// applied.
    Lost,
    /// No answer in time: the request may have been applied.
    Timeout,
    /// The request or its answer is larger than one message may be. The
    /// peer is fine; this one call failed.
    TooLarge,
    /// The peer answered, with an error of this class.
    Refused(Code),
}

/// A failed call to a peer: what failed, what was said, and the cluster id
/// the peer's refusal carried (a peer of another cluster says which).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerError {
    pub failure: Failure,
    pub message: String,
    pub cluster: Option<ClusterId>,
}

impl PeerError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            failure,
            message: message.into(),
            cluster: None,
        }
    }

    /// The peer answered with `error`.
    pub fn refused(error: &Error) -> Self {
        Self::new(Failure::Refused(error.code()), error.to_string())
    }

    /// Whether the call says the peer could not be reached (as opposed to
    /// the peer answering with an error, or the call failing by itself):
    /// the failure detector hears of it. A peer that refuses because it is
    /// unavailable or late counts as unreachable; one message too large
    /// never does (it once took a healthy replica out of routing).
    pub fn is_unreachable(&self) -> bool {
        match self.failure {
            Failure::NotSent | Failure::Lost | Failure::Timeout => true,
            Failure::TooLarge => false,
            Failure::Refused(code) => matches!(code, Code::Unavailable | Code::DeadlineExceeded),
        }
    }

    /// Whether the request provably never reached the peer, so a write
    /// that failed this way was not applied there.
    pub fn never_sent(&self) -> bool {
        self.failure == Failure::NotSent
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            Failure::NotSent => write!(f, "not sent: {}", self.message),
            Failure::Lost => write!(f, "lost: {}", self.message),
            Failure::Timeout => write!(f, "no answer: {}", self.message),
            Failure::TooLarge => write!(f, "{}", self.message),
            Failure::Refused(code) => write!(f, "{code:?}: {}", self.message),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<PeerError> for Error {
    /// A peer's failure as this node reports it: the peer's own words.
    fn from(e: PeerError) -> Self {
        Error::Internal(e.to_string())
    }
}

/// The error of an operation too large for one internal message: that
/// operation's alone, never its connection's or its peer's.
pub fn too_large(bytes: usize, max_item_bytes: usize) -> PeerError {
    PeerError::new(
        Failure::TooLarge,
        format!(
            "{TOO_LARGE}: {bytes} bytes, above the {max_item_bytes} one internal message carries; the key's state must be reduced (resolve its siblings with a write carrying a read's context)"
        ),
    )
}

/// How [`too_large`] messages start.
pub const TOO_LARGE: &str = "a key's state is too large for one internal message";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_peer_count_as_unreachable() {
        assert!(PeerError::new(Failure::NotSent, "refused").is_unreachable());
        assert!(PeerError::new(Failure::Lost, "reset").is_unreachable());
        assert!(PeerError::new(Failure::Refused(Code::Unavailable), "cut").is_unreachable());
        assert!(!too_large(1_400_141, 1_118_208).is_unreachable());
        assert!(
            !PeerError::new(Failure::Refused(Code::ResourceExhausted), "full").is_unreachable()
        );
        assert!(!PeerError::new(Failure::Refused(Code::InvalidArgument), "bad").is_unreachable());
        assert!(PeerError::new(Failure::NotSent, "x").never_sent());
        assert!(!PeerError::new(Failure::Lost, "x").never_sent());
    }
}
