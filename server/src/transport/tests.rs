//! Unit tests of the gRPC transport's status mapping.

use super::*;

fn unreachable(status: Status) -> bool {
    peer_error(status).is_unreachable()
}

#[test]
fn only_failures_of_the_peer_count_as_unreachable() {
    // The peer (or the way to it) failed.
    assert!(unreachable(Status::unavailable("connection refused")));
    assert!(unreachable(Status::deadline_exceeded("no answer")));
    assert!(unreachable(Status::cancelled("dropped")));
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(unreachable(Status::from_error(Box::new(io))));
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert!(peer_error(Status::from_error(Box::new(refused))).never_sent());
    // One call failed; the peer answered or the connection carried it.
    assert!(!unreachable(Status::out_of_range(
        "Error, encoded message length too large: found 1400141 bytes, the limit is: 1118208 bytes"
    )));
    assert_eq!(
        peer_error(Status::resource_exhausted(
            ringkv_peer::too_large(1_400_141, 1_118_208).message
        ))
        .failure,
        Failure::TooLarge
    );
    assert!(!unreachable(Status::cancelled(
        "h2 protocol error: stream error sent by user: operation was canceled"
    )));
    assert!(!unreachable(Status::internal(
        "h2 protocol error: stream error received: unexpected internal error encountered"
    )));
    assert!(!unreachable(Status::resource_exhausted("overloaded")));
    assert!(!unreachable(Status::invalid_argument("bad key")));
}

#[test]
fn envelopes_travel_in_headers() {
    let sent = Envelope {
        from: Some(NodeId(3)),
        to: Some(NodeId(4)),
        cluster: Some(ClusterId(5)),
    };
    assert_eq!(envelope(&headers(&sent)).unwrap(), sent);
    assert_eq!(envelope(&MetadataMap::new()).unwrap(), Envelope::default());
    let mut bad = MetadataMap::new();
    bad.insert(CLUSTER_HEADER, MetadataValue::from_static("zz"));
    assert!(envelope(&bad).is_err());
}

#[test]
fn every_code_survives_the_trip_through_grpc() {
    use error::Code as C;
    for code in [
        C::InvalidArgument,
        C::NotFound,
        C::FailedPrecondition,
        C::ResourceExhausted,
        C::Unavailable,
        C::DeadlineExceeded,
        C::PermissionDenied,
        C::Unauthenticated,
        C::Unimplemented,
        C::Internal,
    ] {
        assert_eq!(code_from_grpc(code_to_grpc(code)), code);
    }
}

/// A request hyper handed back unsent: its HTTP/2 connection was gone
/// before the request left the queue (the connection task was dropped).
async fn a_request_hyper_never_sent() -> hyper::Error {
    let (io, _peer) = tokio::io::duplex(1 << 16);
    let (mut send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("an HTTP/2 handshake over an in-memory pipe");
    drop(connection);
    send.send_request(http::Request::new(tonic::body::Body::empty()))
        .await
        .expect_err("a request on a connection that is gone")
}

/// A peer killed just before a call on its open connection: hyper never
/// sent the request, so it was not applied and a forwarded write is
/// UNAVAILABLE rather than indeterminate (CI caught a forward to a
/// coordinator killed a moment before coming back indeterminate).
#[tokio::test]
async fn a_request_still_queued_when_the_connection_closed_was_never_sent() {
    let canceled = a_request_hyper_never_sent().await;
    assert!(canceled.is_canceled(), "{canceled:?}");
    let status = Status::from_error(Box::new(canceled));
    assert!(peer_error(status).never_sent());
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(!peer_error(Status::from_error(Box::new(reset))).never_sent());
}
