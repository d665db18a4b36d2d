//! Coalescing the replica operations sent to one peer.
//!
//! Every replicate, hint and local read for a peer goes through that peer's
//! [`Batcher`]: a queue drained by one task, which sends what has queued as
//! one `Internal.Batch` call. At most [`MAX_IN_FLIGHT`] batch calls to a peer
//! are outstanding. An operation that arrives while fewer are in flight
//! leaves at once, alone: nothing waits for a batch to fill, so a quiet
//! cluster sees no added latency. Operations that arrive while the limit is
//! reached queue up and leave together in the next call. Under load one
//! HTTP/2 stream, one set of headers and one task wake-up on each side then
//! carry many operations instead of one each, and those per-message costs
//! are most of what a replica operation costs (see `docs/benchmarks.md`).
//!
//! Each operation keeps its own outcome: the receiver answers every item
//! with its own status, and a caller that stops waiting (its deadline
//! passed) is skipped when the next batch is built.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_client::InternalClient;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Batch calls to one peer that may be in flight at once. Two keeps the
/// link busy while the next batch gathers (one would leave the peer idle
/// during every round trip) without spreading the queue thin over many
/// small calls.
pub const MAX_IN_FLIGHT: usize = 2;

/// Most operations in one batch call.
pub const MAX_ITEMS: usize = 256;

/// Operations that may wait for a peer before senders are held back.
const QUEUE_DEPTH: usize = 4096;

/// One peer's queue of replica operations; cheap to share.
pub struct Batcher {
    queue: mpsc::Sender<Queued>,
    /// Largest operation (key and versions) one message can carry; a larger
    /// one fails alone before it is queued. Sent, it would fail to encode,
    /// and that would reset the call's HTTP/2 stream and fail every other
    /// operation of its batch with it.
    max_item_bytes: usize,
}

/// An operation waiting for its batch.
struct Queued {
    item: pb::BatchItem,
    /// Payload bytes (key and versions), to bound the size of a batch.
    bytes: usize,
    timeout: Duration,
    reply: oneshot::Sender<Result<pb::BatchResult, Status>>,
}

impl Batcher {
    /// Starts the sending task for one peer. `headers` go on every batch
    /// call (sender and recipient ids); `max_bytes` bounds the payload of a
    /// batch, except that an operation larger than that travels alone, and
    /// one larger than `max_item_bytes` is refused without being sent.
    /// The task ends when the last handle to the batcher is dropped.
    pub fn start(
        client: InternalClient<Channel>,
        headers: MetadataMap,
        max_bytes: usize,
        max_item_bytes: usize,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(rx, client, headers, max_bytes));
        Self {
            queue,
            max_item_bytes,
        }
    }

    /// Sends one operation in the next batch and waits for its own answer,
    /// at most `timeout` counted from now (queueing included).
    pub async fn call(
        &self,
        item: pb::BatchItem,
        bytes: usize,
        timeout: Duration,
    ) -> Result<pb::BatchResult, Status> {
        if bytes > self.max_item_bytes {
            return Err(too_large(bytes, self.max_item_bytes));
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            item,
            bytes,
            timeout,
            reply,
        };
        let call = async {
            self.queue
                .send(queued)
                .await
                .map_err(|_| Status::unavailable("the connection to the peer was closed"))?;
            answer
                .await
                .map_err(|_| Status::cancelled("the batch carrying the operation was dropped"))?
        };
        let result = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no answer within {timeout:?}")))??;
        if result.code == Code::Ok as i32 {
            Ok(result)
        } else {
            Err(Status::new(Code::from_i32(result.code), result.message))
        }
    }
}

/// The error of an operation too large for one internal message, as the
/// status the transport maps to [`ringkv_peer::Failure::TooLarge`].
fn too_large(bytes: usize, max_item_bytes: usize) -> Status {
    Status::resource_exhausted(ringkv_peer::too_large(bytes, max_item_bytes).message)
}

/// The sending task: takes the first waiting operation, waits for a free
/// slot, then adds whatever else is already queued, up to the limits.
async fn run(
    mut queue: mpsc::Receiver<Queued>,
    client: InternalClient<Channel>,
    headers: MetadataMap,
    max_bytes: usize,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(op) => op,
            None => match queue.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_ITEMS {
            match queue.try_recv() {
                Ok(op) if op.reply.is_closed() => {}
                Ok(op) if bytes + op.bytes > max_bytes => {
                    carried = Some(op);
                    break;
                }
                Ok(op) => {
                    bytes += op.bytes;
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        batch.retain(|op| !op.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let client = client.clone();
        let headers = headers.clone();
        tokio::spawn(async move {
            send(client, headers, batch).await;
            drop(slot);
        });
    }
}

/// One batch call; every operation in it gets its own answer, or the
/// call's error when the call as a whole failed. Reads whose answers did
/// not fit in the response are asked again, each alone.
async fn send(mut client: InternalClient<Channel>, headers: MetadataMap, batch: Vec<Queued>) {
    let timeout = batch.iter().map(|op| op.timeout).max().unwrap_or_default();
    let (items, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|op| (op.item, op.reply)).unzip();
    // Reads are kept (a key: cheap) in case the peer bounces them.
    let reads: Vec<Option<pb::BatchItem>> = items
        .iter()
        .map(|item| matches!(item.op, Some(pb::batch_item::Op::Read(_))).then(|| item.clone()))
        .collect();
    let results = match call(&mut client, &headers, items, timeout).await {
        Ok(results) => results,
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
            return;
        }
    };
    let mut bounced = Vec::new();
    for ((reply, result), read) in replies.into_iter().zip(results).zip(reads) {
        match (result.retry_alone, read) {
            (false, _) => {
                let _ = reply.send(Ok(result));
            }
            (true, Some(read)) => bounced.push((read, reply)),
            (true, None) => {
                let _ = reply.send(Err(Status::internal(
                    "the peer bounced an operation that is not a read",
                )));
            }
        }
    }
    for (read, reply) in bounced {
        let answer = call(&mut client, &headers, vec![read], timeout)
            .await
            .and_then(|mut results| {
                results
                    .pop()
                    .filter(|result| !result.retry_alone)
                    .ok_or_else(|| Status::internal("the peer did not answer a read sent alone"))
            });
        let _ = reply.send(answer);
    }
}

/// One `Internal.Batch` call; its results, one per item.
async fn call(
    client: &mut InternalClient<Channel>,
    headers: &MetadataMap,
    items: Vec<pb::BatchItem>,
    timeout: Duration,
) -> Result<Vec<pb::BatchResult>, Status> {
    let sent = items.len();
    let mut request = Request::new(pb::BatchRequest { items });
    *request.metadata_mut() = headers.clone();
    request.set_timeout(timeout);
    let results = client.batch(request).await?.into_inner().results;
    if results.len() != sent {
        return Err(Status::internal(format!(
            "the peer answered {} of {sent} batched operations",
            results.len()
        )));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of a port nothing listens on: every call that is sent
    /// fails with a transport error.
    fn nowhere() -> InternalClient<Channel> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        InternalClient::new(channel)
    }

    fn replicate(bytes: usize) -> pb::BatchItem {
        pb::BatchItem {
            op: Some(pb::batch_item::Op::Replicate(pb::ReplicateRequest {
                key: bytes::Bytes::from_static(b"k"),
                version_set: vec![1; bytes].into(),
                from: String::new(),
                hint_for: String::new(),
            })),
        }
    }

    #[tokio::test]
    async fn an_oversized_operation_fails_alone_before_it_is_sent() {
        let batcher = Batcher::start(nowhere(), MetadataMap::new(), 1000, 2000);
        let timeout = Duration::from_secs(5);
        let (big, small) = tokio::join!(
            batcher.call(replicate(2001), 2001, timeout),
            batcher.call(replicate(10), 10, timeout),
        );
        let big = big.unwrap_err();
        assert_eq!(big.code(), Code::ResourceExhausted);
        assert!(
            big.message().starts_with(ringkv_peer::TOO_LARGE),
            "{}",
            big.message()
        );
        assert!(
            !super::super::peer_error(big.clone()).is_unreachable(),
            "an oversized item says nothing about the peer"
        );
        // The small one was sent (and failed on the dead port), unaffected
        // by its oversized neighbour.
        let small = small.unwrap_err();
        assert_ne!(small.code(), Code::ResourceExhausted, "{small:?}");
        assert!(super::super::peer_error(small).is_unreachable());
    }
}
