//! The batch stream against a peer that answers out of order, and one that
//! hangs up with a batch unanswered; the replica stream's link falling
//! back to it for a peer that speaks gRPC only.

use std::pin::Pin;
use std::sync::atomic::AtomicUsize;

use ringkv_proto::v1::internal_server::{Internal, InternalServer};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Response;

use super::*;
use crate::transport::frames::tests::{answer, read};
use crate::transport::peer_error;

/// How the fake peer treats its streams.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads two batches, then answers the second first. Each read finds
    /// its own key as the stored versions.
    Reversed,
    /// The first stream reads one batch and ends without answering;
    /// later streams answer at once.
    HangUpFirst,
}

#[derive(Clone)]
struct FakePeer {
    behaviour: Behaviour,
    streams: Arc<AtomicUsize>,
}

type Answers = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::BatchResponse, Status>> + Send>>;

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of this test"))
}

#[tonic::async_trait]
impl Internal for FakePeer {
    async fn replicate(
        &self,
        _: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        unused()
    }
    async fn local_read(
        &self,
        _: Request<pb::LocalReadRequest>,
    ) -> Result<Response<pb::LocalReadResponse>, Status> {
        unused()
    }
    async fn batch(
        &self,
        _: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        unused()
    }

    type BatchStreamStream = Answers;

    async fn batch_stream(
        &self,
        request: Request<Streaming<pb::BatchRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let first = self.streams.fetch_add(1, Ordering::SeqCst) == 0;
        let mut batches = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let behaviour = self.behaviour;
        tokio::spawn(async move {
            match behaviour {
                Behaviour::HangUpFirst if first => {
                    let _ = batches.message().await;
                    // Dropping `tx` ends the answers unanswered.
                }
                Behaviour::HangUpFirst => {
                    while let Ok(Some(batch)) = batches.message().await {
                        let _ = tx.send(Ok(answer(&batch))).await;
                    }
                }
                Behaviour::Reversed => loop {
                    let (Ok(Some(a)), Ok(Some(b))) =
                        (batches.message().await, batches.message().await)
                    else {
                        return;
                    };
                    let _ = tx.send(Ok(answer(&b))).await;
                    let _ = tx.send(Ok(answer(&a))).await;
                },
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn gossip(
        &self,
        _: Request<pb::GossipRequest>,
    ) -> Result<Response<pb::GossipResponse>, Status> {
        unused()
    }
    async fn get_layout(
        &self,
        _: Request<pb::GetLayoutRequest>,
    ) -> Result<Response<pb::GetLayoutResponse>, Status> {
        unused()
    }
    async fn merkle_leaves(
        &self,
        _: Request<pb::MerkleLeavesRequest>,
    ) -> Result<Response<pb::MerkleLeavesResponse>, Status> {
        unused()
    }
    async fn key_digests(
        &self,
        _: Request<pb::KeyDigestsRequest>,
    ) -> Result<Response<pb::KeyDigestsResponse>, Status> {
        unused()
    }
    async fn purge(
        &self,
        _: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        unused()
    }
    async fn fetch_partition(
        &self,
        _: Request<pb::FetchPartitionRequest>,
    ) -> Result<Response<pb::FetchPartitionResponse>, Status> {
        unused()
    }
    async fn sync_tokens(
        &self,
        _: Request<pb::SyncTokensRequest>,
    ) -> Result<Response<pb::SyncTokensResponse>, Status> {
        unused()
    }
}

/// Serves a fake peer on a loopback port (stopped when the test's runtime
/// ends); a client for it and the count of streams it opened.
async fn fake_peer(behaviour: Behaviour) -> (InternalClient<Channel>, Arc<AtomicUsize>) {
    let (client, streams, _) = fake_peer_at(behaviour).await;
    (client, streams)
}

/// [`fake_peer`], with the fake's `host:port`.
async fn fake_peer_at(behaviour: Behaviour) -> (InternalClient<Channel>, Arc<AtomicUsize>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let peer = FakePeer {
        behaviour,
        streams: streams.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InternalServer::new(peer))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    (
        InternalClient::new(channel),
        streams,
        format!("127.0.0.1:{port}"),
    )
}

const PATIENCE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn answers_reach_their_own_batches_in_any_order() {
    let (client, streams) = fake_peer(Behaviour::Reversed).await;
    let batcher = Arc::new(Batcher::start(client, MetadataMap::new(), 1 << 20, 1 << 20));
    // "a" leaves alone; "b", sent once "a" is surely on its way, leaves as
    // a second batch; the peer answers the second first.
    let first = batcher.clone();
    let a = tokio::spawn(async move { first.call(read("a"), 1, PATIENCE).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = batcher.call(read("b"), 1, PATIENCE).await;
    assert_eq!(b.unwrap().version_set.as_ref(), b"b");
    assert_eq!(a.await.unwrap().unwrap().version_set.as_ref(), b"a");
    assert_eq!(streams.load(Ordering::SeqCst), 1, "both went on one stream");
}

#[tokio::test]
async fn a_stream_the_peer_ends_fails_its_batch_as_lost_and_the_next_opens_another() {
    let (client, streams) = fake_peer(Behaviour::HangUpFirst).await;
    let batcher = Batcher::start(client, MetadataMap::new(), 1 << 20, 1 << 20);
    let lost = batcher.call(read("a"), 1, PATIENCE).await.unwrap_err();
    let failure = peer_error(lost.clone()).failure;
    assert_eq!(failure, ringkv_peer::Failure::Lost, "{lost:?}");
    let again = batcher.call(read("b"), 1, PATIENCE).await.unwrap();
    assert_eq!(again.version_set.as_ref(), b"b");
    assert_eq!(
        streams.load(Ordering::SeqCst),
        2,
        "a new stream after the end"
    );
}

/// A node of the previous version speaks gRPC only: the replica stream's
/// link finds that out at its hello (nothing sent) and hands the
/// operations to the gRPC batch stream, which answers them.
#[tokio::test]
async fn a_peer_speaking_grpc_only_gets_the_operations_over_its_batch_stream() {
    use crate::transport::frames::{Dialler, Link, Settings};
    // The same fake peer, dialled by the replica stream as well.
    let (client, streams, address) = fake_peer_at(Behaviour::HangUpFirst).await;
    let fallback = Arc::new(Batcher::start(client, MetadataMap::new(), 1 << 20, 1 << 20));
    let settings = Settings {
        hello: pb::FrameHello::default(),
        max_batch_bytes: 1 << 20,
        max_item_bytes: 1 << 20,
        max_frame: 2 << 20,
        ping_interval: PATIENCE,
        ping_timeout: PATIENCE,
    };
    let dialler = Dialler { address, tls: None };
    let link = Link::start(dialler, settings, Some(fallback));
    // The fake's first stream hangs up (lost); the next ones answer, all
    // on gRPC, as the link keeps to it after the failed hello.
    let first = link.call(read("a"), 1, PATIENCE).await.unwrap_err();
    assert_eq!(first.failure, ringkv_peer::Failure::Lost, "{first}");
    for key in ["b", "c"] {
        let answered = link.call(read(key), 1, PATIENCE).await.unwrap();
        assert_eq!(answered.version_set.as_ref(), key.as_bytes());
    }
    assert_eq!(
        streams.load(Ordering::SeqCst),
        2,
        "over the gRPC batch stream"
    );
}
