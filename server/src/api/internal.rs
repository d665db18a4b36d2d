//! The node-to-node Internal service over gRPC: converts each call to a
//! peer [`Request`], hands it to the node's [`Inbound`] handler, and
//! converts the answer back. What a node does with its peers' messages
//! lives in `inbound`; this file only speaks gRPC.

use std::sync::Arc;

use ringkv_common::shutdown::Shutdown;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_server::Internal;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::PeerNames;
use super::{status, Gate};
use crate::transport::{self, convert};
use ringkv_core::error::Error;
use ringkv_core::version::NodeId;
use ringkv_node::config::LimitsConfig;
use ringkv_node::inbound::Inbound;
use ringkv_peer::{self as peer, ClusterIdentity, Envelope, Handler};

/// Batches of one peer's stream answered at once (see
/// [`InternalService::batch_stream`]).
pub const STREAM_BATCHES_IN_FLIGHT: usize = 8;

#[derive(Clone)]
pub struct InternalService {
    inbound: Arc<Inbound>,
    identity: Arc<ClusterIdentity>,
    gate: Gate,
    /// Answers of a batch past this many bytes are sent back to be asked
    /// again alone, so a batch response stays within the message limit.
    max_batch_answer_bytes: usize,
    /// Fires when the node closes its ports: batch streams end then.
    close: Shutdown,
}

impl InternalService {
    pub fn new(
        inbound: Arc<Inbound>,
        identity: Arc<ClusterIdentity>,
        gate: Gate,
        limits: &LimitsConfig,
        close: Shutdown,
    ) -> Self {
        Self {
            inbound,
            identity,
            gate,
            // Half the limit leaves room for the items' framing.
            max_batch_answer_bytes: limits.max_message_bytes() / 2,
            close,
        }
    }

    /// A refusal, carrying this node's cluster id so the caller can tell
    /// a refusal by another cluster's node.
    fn refusal(&self, e: Error) -> Status {
        let mut refused = status(e);
        transport::stamp_cluster(refused.metadata_mut(), self.identity.get());
        refused
    }

    fn envelope<T>(&self, request: &Request<T>) -> Result<Envelope, Status> {
        transport::envelope(request.metadata())
    }

    /// Answers one batch: each item admitted and recorded as its unary call
    /// would be, the admitted ones handed to the node together (one group
    /// commit, one lookup), reads past the answer budget bounced.
    pub(super) async fn answer_batch(
        &self,
        envelope: Envelope,
        items: Vec<pb::BatchItem>,
    ) -> Vec<pb::BatchResult> {
        self.gate.metrics().batch_received(items.len());
        let mut results = vec![pb::BatchResult::default(); items.len()];
        // Each item is admitted and recorded as its unary call would be;
        // the node answers the admitted ones together.
        let mut admitted = Vec::new();
        let mut requests = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let request = match item_request(item) {
                Ok(request) => request,
                Err(refused) => {
                    results[i] = failed(refused);
                    continue;
                }
            };
            match self.gate.admit(request.name()) {
                Ok(a) => {
                    admitted.push((i, a));
                    requests.push(request);
                }
                Err(refused) => results[i] = failed(refused),
            }
        }
        let answers = self.inbound.handle_batch(envelope, requests).await;
        for ((i, admitted), answer) in admitted.into_iter().zip(answers) {
            let answer = answer.map_err(|e| self.refusal(e));
            results[i] = item_result(admitted.finish("", answer));
        }
        bounce_overflow(&mut results, self.max_batch_answer_bytes);
        results
    }

    /// Hands one request to the node.
    async fn handle(
        &self,
        envelope: Envelope,
        request: peer::Request,
    ) -> Result<peer::Response, Status> {
        self.inbound
            .handle(envelope, request)
            .await
            .map_err(|e| self.refusal(e))
    }
}

/// A replicate message as a peer request: a hint when it names a target.
fn replicate_request(req: pb::ReplicateRequest) -> Result<peer::Request, Status> {
    if req.hint_for.is_empty() {
        return Ok(peer::Request::Replicate {
            key: req.key,
            versions: req.version_set,
        });
    }
    let target = req
        .hint_for
        .parse::<NodeId>()
        .map_err(|e| status(e.into()))?;
    Ok(peer::Request::StoreHint {
        key: req.key,
        versions: req.version_set,
        target,
    })
}

/// A batch item as a peer request. Public for the fuzz targets, which feed
/// it every batch item a peer could send.
pub fn item_request(item: pb::BatchItem) -> Result<peer::Request, Status> {
    match item.op {
        Some(pb::batch_item::Op::Replicate(req)) => replicate_request(req),
        Some(pb::batch_item::Op::Read(req)) => Ok(peer::Request::Read { key: req.key }),
        None => Err(Status::invalid_argument("batch item names no operation")),
    }
}

/// A batch item's answer.
fn item_result(answer: Result<peer::Response, Status>) -> pb::BatchResult {
    match answer {
        Ok(peer::Response::Read(Some(versions))) => pb::BatchResult {
            found: true,
            version_set: versions,
            ..Default::default()
        },
        Ok(_) => pb::BatchResult::default(),
        Err(refused) => failed(refused),
    }
}

/// Replaces the read answers past `budget` bytes (in item order, the first
/// always kept) with `retry_alone`, so the response fits its message limit.
/// Only reads that found data are large; nothing else is ever bounced.
fn bounce_overflow(results: &mut [pb::BatchResult], budget: usize) {
    let mut used = 0;
    for (i, result) in results.iter_mut().enumerate() {
        used += result.version_set.len() + result.message.len();
        if i > 0 && used > budget && result.found {
            *result = pb::BatchResult {
                retry_alone: true,
                ..Default::default()
            };
        }
    }
}

/// A batch item's answer when it failed.
fn failed(refused: Status) -> pb::BatchResult {
    pb::BatchResult {
        code: refused.code() as i32,
        message: refused.message().to_string(),
        ..Default::default()
    }
}

/// The wrong kind of answer from the node: a bug.
fn unexpected(answer: &peer::Response) -> Status {
    Status::internal(format!("unexpected answer ({})", answer.name()))
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let request = replicate_request(request.into_inner())?;
        self.handle(envelope, request).await?;
        Ok(Response::new(pb::ReplicateResponse {}))
    }

    async fn local_read(
        &self,
        request: Request<pb::LocalReadRequest>,
    ) -> Result<Response<pb::LocalReadResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let key = request.into_inner().key;
        match self.handle(envelope, peer::Request::Read { key }).await? {
            peer::Response::Read(found) => Ok(Response::new(pb::LocalReadResponse {
                found: found.is_some(),
                version_set: found.unwrap_or_default(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let results = self
            .answer_batch(envelope, request.into_inner().items)
            .await;
        Ok(Response::new(pb::BatchResponse { results, id: 0 }))
    }

    type BatchStreamStream = ReceiverStream<Result<pb::BatchResponse, Status>>;

    /// Answers each batch of the stream as [`Self::batch`] would, up to
    /// [`STREAM_BATCHES_IN_FLIGHT`] at once (a replica's merges wait on its
    /// WAL; batches arriving meanwhile join the next group commit), each
    /// answer tagged with its batch's id. The stream ends when the sender
    /// ends it, or when this node closes its ports (every batch read by
    /// then is answered first), so a stop is never held up by a peer.
    async fn batch_stream(
        &self,
        request: Request<Streaming<pb::BatchRequest>>,
    ) -> Result<Response<Self::BatchStreamStream>, Status> {
        let envelope = self.envelope(&request)?;
        let mut batches = request.into_inner();
        let (answers, stream) = mpsc::channel(STREAM_BATCHES_IN_FLIGHT);
        let service = self.clone();
        let mut closed = self.close.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(STREAM_BATCHES_IN_FLIGHT));
            loop {
                let batch = tokio::select! {
                    next = batches.message() => match next {
                        Ok(Some(batch)) => batch,
                        // The sender ended the stream, or it broke: nobody
                        // is left to answer.
                        Ok(None) | Err(_) => break,
                    },
                    _ = closed.recv() => break,
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let service = service.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let results = service.answer_batch(envelope, batch.items).await;
                    let answer = pb::BatchResponse {
                        results,
                        id: batch.id,
                    };
                    let _ = answers.send(Ok(answer)).await;
                    drop(slot);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn gossip(
        &self,
        request: Request<pb::GossipRequest>,
    ) -> Result<Response<pb::GossipResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let names = request.extensions().get::<PeerNames>().cloned();
        let gossip = convert::gossip_from_proto(request.into_inner()).map_err(status)?;
        if let Some(names) = names {
            // Under mutual TLS the sender must be the node its certificate
            // names (api::auth); gossip always carries its sender's entry.
            let claimed = gossip
                .entries
                .iter()
                .find(|e| Some(e.id) == envelope.from)
                .map(|e| e.name.as_str())
                .ok_or_else(|| {
                    status(Error::PermissionDenied(
                        "gossip must carry its sender's own entry".into(),
                    ))
                })?;
            names.check(claimed).map_err(status)?;
        }
        match self.handle(envelope, peer::Request::Gossip(gossip)).await? {
            peer::Response::Gossip(answer) => {
                let cluster = answer.cluster;
                let mut response = Response::new(convert::answer_to_proto(answer));
                // The answer says which cluster it comes from, so the sender
                // can refuse it if it is not its own.
                transport::stamp_cluster(response.metadata_mut(), cluster);
                Ok(response)
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn get_layout(
        &self,
        request: Request<pb::GetLayoutRequest>,
    ) -> Result<Response<pb::GetLayoutResponse>, Status> {
        let envelope = self.envelope(&request)?;
        match self.handle(envelope, peer::Request::GetLayout).await? {
            peer::Response::Layout(layout) => Ok(Response::new(pb::GetLayoutResponse {
                layout: layout.unwrap_or_default(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn merkle_leaves(
        &self,
        request: Request<pb::MerkleLeavesRequest>,
    ) -> Result<Response<pb::MerkleLeavesResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let partition = request.into_inner().partition;
        match self
            .handle(envelope, peer::Request::MerkleLeaves { partition })
            .await?
        {
            peer::Response::MerkleLeaves(summary) => {
                Ok(Response::new(convert::summary_to_proto(summary)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn key_digests(
        &self,
        request: Request<pb::KeyDigestsRequest>,
    ) -> Result<Response<pb::KeyDigestsResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let req = request.into_inner();
        let request = peer::Request::KeyDigests {
            partition: req.partition,
            leaves: req.leaves,
            keys: req.keys,
        };
        match self.handle(envelope, request).await? {
            peer::Response::KeyDigests(digests) => Ok(Response::new(pb::KeyDigestsResponse {
                digests: convert::digests_to_proto(digests),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let keys = convert::digests_from_proto(request.into_inner().keys);
        match self.handle(envelope, peer::Request::Purge { keys }).await? {
            peer::Response::Purged(purged) => Ok(Response::new(pb::PurgeResponse { purged })),
            other => Err(unexpected(&other)),
        }
    }

    async fn fetch_partition(
        &self,
        request: Request<pb::FetchPartitionRequest>,
    ) -> Result<Response<pb::FetchPartitionResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let req = request.into_inner();
        let request = peer::Request::FetchPartition {
            partition: req.partition,
            after: req.after,
            max_bytes: req.max_bytes as usize,
        };
        match self.handle(envelope, request).await? {
            peer::Response::FetchPartition(chunk) => {
                Ok(Response::new(convert::chunk_to_proto(chunk)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn sync_tokens(
        &self,
        request: Request<pb::SyncTokensRequest>,
    ) -> Result<Response<pb::SyncTokensResponse>, Status> {
        let envelope = self.envelope(&request)?;
        let tokens = request.into_inner().tokens;
        match self
            .handle(envelope, peer::Request::SyncTokens(tokens))
            .await?
        {
            peer::Response::Tokens(tokens) => Ok(Response::new(pb::SyncTokensResponse { tokens })),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn answer(bytes: usize) -> pb::BatchResult {
        pb::BatchResult {
            found: true,
            version_set: vec![7; bytes].into(),
            ..Default::default()
        }
    }

    #[test]
    fn answers_past_the_budget_are_bounced_but_never_the_first() {
        let failed_write = pb::BatchResult {
            code: Code::Unavailable as i32,
            message: "m".repeat(10),
            ..Default::default()
        };
        let mut results = vec![answer(60), answer(30), answer(20), failed_write, answer(5)];
        bounce_overflow(&mut results, 100);
        let bounced: Vec<bool> = results.iter().map(|r| r.retry_alone).collect();
        assert_eq!(bounced, vec![false, false, true, false, true]);
        assert_eq!(
            results[3].code,
            Code::Unavailable as i32,
            "only reads are bounced"
        );
        assert!(
            results[2].version_set.is_empty(),
            "a bounced answer carries no data"
        );

        let mut alone = vec![answer(500)];
        bounce_overflow(&mut alone, 100);
        assert!(!alone[0].retry_alone, "a single answer always goes back");
        assert_eq!(alone[0].version_set.len(), 500);
    }
}
