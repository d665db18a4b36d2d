//! Replica operations to a peer of the previous version, which speaks no
//! replica stream (`super::frames`): coalesced the same way and sent on the
//! peer's gRPC `Internal.BatchStream`. Used only while such a peer is in
//! the cluster (a rolling upgrade); the replica stream's link hands its
//! operations here when the peer does not welcome its hello.
//!
//! Every operation goes through the peer's [`Batcher`]: a queue drained by
//! one task, which sends what has queued as one batch on the stream
//! ([`Link`]): one HTTP/2 stream, opened once and kept, carrying batches
//! each way tagged with ids. At most [`MAX_IN_FLIGHT`] batches to a peer are
//! outstanding; operations that arrive while the limit is reached leave
//! together in the next batch.
//!
//! Each operation keeps its own outcome: the receiver answers every item
//! with its own status, and a caller that stops waiting (its deadline
//! passed) is skipped when the next batch is built. When the stream breaks
//! or the peer ends it (it is stopping), every batch still unanswered fails
//! with that error (the operations may or may not have been applied: lost,
//! never "not sent"), and the next batch opens a new stream; a stream that
//! cannot be opened fails its batch as not sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_client::InternalClient;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use super::frames::{MAX_IN_FLIGHT, MAX_ITEMS};

/// Operations that may wait for a peer before senders are held back.
const QUEUE_DEPTH: usize = 4096;

/// One peer's queue of replica operations; cheap to share.
pub struct Batcher {
    queue: mpsc::Sender<Queued>,
    /// Largest operation (key and versions) one message can carry; a larger
    /// one fails alone before it is queued. Sent, it would fail to encode,
    /// and that would break the stream and fail every other operation in
    /// flight with it.
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
    /// Starts the sending task for one peer. `headers` open its stream
    /// (sender and recipient ids, cluster id); `max_bytes` bounds the
    /// payload of a batch, except that an operation larger than that
    /// travels alone, and one larger than `max_item_bytes` is refused
    /// without being sent. The task, and the stream with it, ends when the
    /// last handle to the batcher is dropped.
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
/// slot, then adds whatever else is already queued, up to the limits, and
/// sends the batch on the peer's stream (opened first when there is none
/// or it ended).
async fn run(
    mut queue: mpsc::Receiver<Queued>,
    mut client: InternalClient<Channel>,
    headers: MetadataMap,
    max_bytes: usize,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    let mut link: Option<Link> = None;
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
        if !link.as_ref().is_some_and(Link::is_open) {
            match Link::open(&mut client, &headers).await {
                Ok(opened) => link = Some(opened),
                Err(status) => {
                    link = None;
                    for op in batch {
                        let _ = op.reply.send(Err(status.clone()));
                    }
                    continue;
                }
            }
        }
        let Some(link) = link.clone() else { continue };
        tokio::spawn(async move {
            send(link, batch).await;
            drop(slot);
        });
    }
}

/// One batch on the stream; every operation in it gets its own answer, or
/// the batch's error when the batch as a whole failed. Reads whose answers
/// did not fit in the response are asked again, each alone.
async fn send(link: Link, batch: Vec<Queued>) {
    let timeout = batch.iter().map(|op| op.timeout).max().unwrap_or_default();
    let (items, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|op| (op.item, op.reply)).unzip();
    // Reads are kept (a key: cheap) in case the peer bounces them.
    let reads: Vec<Option<pb::BatchItem>> = items
        .iter()
        .map(|item| matches!(item.op, Some(pb::batch_item::Op::Read(_))).then(|| item.clone()))
        .collect();
    let results = match link.call(items, timeout).await {
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
        let answer = link
            .call(vec![read], timeout)
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

/// One open `Internal.BatchStream` to the peer. Clones share the stream;
/// it ends (the request side closes) when the last clone is dropped.
#[derive(Clone)]
struct Link {
    batches: mpsc::Sender<pb::BatchRequest>,
    state: Arc<LinkState>,
}

/// What the task reading a stream's answers shares with the senders. It
/// holds no sender of batches, so dropping the [`Link`] ends the stream.
#[derive(Default)]
struct LinkState {
    next_id: AtomicU64,
    /// Batches sent and not yet answered, by id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Vec<pb::BatchResult>>>>,
    /// Why the stream ended, once it has.
    ended: Mutex<Option<Status>>,
}

impl Link {
    /// Opens a stream to the peer and starts the task reading its answers.
    async fn open(
        client: &mut InternalClient<Channel>,
        headers: &MetadataMap,
    ) -> Result<Link, Status> {
        let (batches, outgoing) = mpsc::channel(MAX_IN_FLIGHT * 2);
        let mut request = Request::new(ReceiverStream::new(outgoing));
        *request.metadata_mut() = headers.clone();
        let answers = client.batch_stream(request).await?.into_inner();
        let state = Arc::new(LinkState::default());
        tokio::spawn(read_answers(state.clone(), answers));
        Ok(Link { batches, state })
    }

    fn is_open(&self) -> bool {
        lock(&self.state.ended).is_none() && !self.batches.is_closed()
    }

    /// Why the stream ended, as every batch it left unanswered fails.
    fn ended(&self) -> Status {
        lock(&self.state.ended).clone().unwrap_or_else(|| {
            Status::cancelled("the batch stream to the peer ended with the batch unanswered")
        })
    }

    /// Sends one batch and waits at most `timeout` for its results, one
    /// per item.
    async fn call(
        &self,
        items: Vec<pb::BatchItem>,
        timeout: Duration,
    ) -> Result<Vec<pb::BatchResult>, Status> {
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        let sent = items.len();
        let (tx, answer) = oneshot::channel();
        lock(&self.state.waiting).insert(id, tx);
        let forget = || lock(&self.state.waiting).remove(&id);
        // The reader records the end before it drops the waiters: a batch
        // registered after that would wait for nothing.
        if lock(&self.state.ended).is_some() {
            forget();
            return Err(self.ended());
        }
        if self
            .batches
            .send(pb::BatchRequest { items, id })
            .await
            .is_err()
        {
            forget();
            return Err(self.ended());
        }
        let results = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(results)) => results,
            Ok(Err(_)) => return Err(self.ended()),
            Err(_) => {
                forget();
                return Err(Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                )));
            }
        };
        if results.len() != sent {
            return Err(Status::internal(format!(
                "the peer answered {} of {sent} batched operations",
                results.len()
            )));
        }
        Ok(results)
    }
}

/// Hands each answer of a stream to the batch it answers; when the stream
/// ends, records why and fails every batch still waiting.
async fn read_answers(state: Arc<LinkState>, mut answers: Streaming<pb::BatchResponse>) {
    let why = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                if let Some(waiter) = lock(&state.waiting).remove(&answer.id) {
                    let _ = waiter.send(answer.results);
                }
            }
            Ok(None) => {
                break Status::cancelled(
                    "the peer ended the batch stream (it is stopping); the operation may or may not have been applied",
                )
            }
            Err(status) => break status,
        }
    };
    *lock(&state.ended) = Some(why);
    // Dropping the waiters fails their batches with `why`.
    lock(&state.waiting).clear();
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frames::tests::replicate;

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
