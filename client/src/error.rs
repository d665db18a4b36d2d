//! Client errors, classified by what the caller should do next.

use std::error::Error as StdError;

use tonic::Code;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The request is wrong; sending it again will fail again.
    #[error("{0}")]
    InvalidArgument(String),
    /// Refused before anything was applied (too few replicas reachable,
    /// the node's storage failed, a forward that could not connect).
    /// Retry later, or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// DEADLINE_EXCEEDED: the write's outcome is unknown. The quorum was
    /// not reached in time, or the coordinator applied it but could not
    /// reach W, or a forward broke after sending it. It may have been
    /// applied; retry idempotently or read the key.
    #[error("{0}")]
    Timeout(String),
    /// The node is overloaded; back off.
    #[error("{0}")]
    Overloaded(String),
    /// The operation is not allowed in the cluster's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No node could be reached; nothing was sent.
    #[error("{0}")]
    Unreachable(String),
    /// The connection broke after a write was sent; it may have been applied.
    #[error("{0}")]
    Indeterminate(String),
    /// The node failed internally; nothing was acknowledged.
    #[error("{0}")]
    Internal(String),
    /// Authentication or authorisation failed.
    #[error("{0}")]
    Denied(String),
}

/// The shared vocabulary (levels, node ids, keys) only ever refuses input.
impl From<ringkv_common::Error> for Error {
    fn from(e: ringkv_common::Error) -> Self {
        match e {
            ringkv_common::Error::InvalidArgument(msg) => Error::InvalidArgument(msg),
        }
    }
}

impl Error {
    /// Whether sending the same request again is reasonable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_)
                | Error::Timeout(_)
                | Error::Overloaded(_)
                | Error::Unreachable(_)
                | Error::Indeterminate(_)
        )
    }

    /// Whether a failed write may nevertheless have been applied.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::Indeterminate(_))
    }

    /// Classifies a gRPC status. A status produced by the transport (the
    /// node never answered) carries a source error; the server's own
    /// statuses do not.
    pub(crate) fn from_status(status: tonic::Status, idempotent: bool) -> Error {
        let from_transport = status.source().is_some();
        let msg = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_string()
        };
        if from_transport {
            let detail = format!("connection failed: {}", root_cause(&status));
            return if idempotent || never_sent(&status) {
                Error::Unreachable(detail)
            } else {
                Error::Indeterminate(format!("{detail}; the write may have been applied"))
            };
        }
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(msg),
            Code::Unavailable => Error::Unavailable(msg),
            Code::DeadlineExceeded => Error::Timeout(msg),
            Code::ResourceExhausted => Error::Overloaded(msg),
            Code::FailedPrecondition => Error::FailedPrecondition(msg),
            Code::Unauthenticated | Code::PermissionDenied => Error::Denied(msg),
            // A write answered UNKNOWN or CANCELLED (by a proxy, or a
            // server that passed a transport failure on) may have landed.
            Code::Cancelled | Code::Unknown if !idempotent => Error::Indeterminate(msg),
            _ => Error::Internal(msg),
        }
    }
}

/// Whether a transport failure shows the request never reached the node:
/// no connection could be opened (refused: the node is down or stopping),
/// the open connection closed while the request still waited in hyper's
/// queue (hyper hands it back canceled: the node died just before), or
/// the node refused the stream unprocessed (HTTP/2 REFUSED_STREAM, as a
/// node sends while it shuts down). A write that failed so was not applied.
pub(crate) fn never_sent(e: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return true;
            }
        }
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The innermost cause of an error, which is the one that says what
/// actually failed ("Connection refused" rather than "transport error").
pub(crate) fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_map_to_kinds() {
        let e = Error::from_status(tonic::Status::unavailable("needed 2 got 1"), false);
        assert_eq!(e, Error::Unavailable("needed 2 got 1".into()));
        assert!(e.is_retryable() && !e.is_indeterminate());
        let e = Error::from_status(tonic::Status::deadline_exceeded("late"), false);
        assert!(e.is_retryable() && e.is_indeterminate());
        let e = Error::from_status(tonic::Status::invalid_argument("empty key"), true);
        assert!(!e.is_retryable());
        let e = Error::from_status(tonic::Status::internal("disk"), true);
        assert!(!e.is_retryable());
        let e = Error::from_status(tonic::Status::unknown("transport error"), false);
        assert!(e.is_indeterminate(), "{e:?}");
        let e = Error::from_status(tonic::Status::unknown("transport error"), true);
        assert!(!e.is_indeterminate(), "{e:?}");
    }

    /// A write that never reached the node (no connection, or a stream the
    /// stopping node refused unprocessed) is `Unreachable`, which the
    /// client sends on to the next node; one whose connection broke after
    /// sending may have landed.
    #[test]
    fn a_write_that_never_reached_the_node_is_unreachable() {
        use std::io::{Error as IoError, ErrorKind};
        let transport = |e: Box<dyn StdError + Send + Sync>| tonic::Status::from_error(e);
        let refused = transport(Box::new(IoError::new(
            ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert!(matches!(
            Error::from_status(refused, false),
            Error::Unreachable(_)
        ));
        let unprocessed = transport(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(matches!(
            Error::from_status(unprocessed, false),
            Error::Unreachable(_)
        ));
        let reset = transport(Box::new(IoError::new(ErrorKind::ConnectionReset, "reset")));
        assert!(matches!(
            Error::from_status(reset, false),
            Error::Indeterminate(_)
        ));
        let cancelled = transport(Box::new(h2::Error::from(h2::Reason::CANCEL)));
        assert!(matches!(
            Error::from_status(cancelled, false),
            Error::Indeterminate(_)
        ));
    }

    /// A node killed just before a write on its open connection: hyper
    /// hands the request back unsent, so the write is `Unreachable` (the
    /// client tries the next node), not indeterminate.
    #[tokio::test]
    async fn a_write_still_queued_when_the_connection_closed_is_unreachable() {
        let (io, _peer) = tokio::io::duplex(1 << 16);
        let (mut send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .expect("an HTTP/2 handshake over an in-memory pipe");
        drop(connection);
        let canceled = send
            .send_request(http::Request::new(tonic::body::Body::empty()))
            .await
            .expect_err("a request on a connection that is gone");
        assert!(canceled.is_canceled(), "{canceled:?}");
        let status = tonic::Status::from_error(Box::new(canceled));
        assert!(matches!(
            Error::from_status(status, false),
            Error::Unreachable(_)
        ));
    }
}
