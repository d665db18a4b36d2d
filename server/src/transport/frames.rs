//! The dialling side of the replica stream: every replicate, hint and
//! local read for one peer travels on one long-lived connection to that
//! peer's port, as ringkv's own frames ([`super::wire`]) rather than gRPC.
//!
//! One task per peer ([`Link`]) owns the connection: it reads answers,
//! writes batches and pings, all in one loop, so an operation costs a
//! queue push and a wake-up of that task, one write shared with the rest of
//! its batch, and the wake-up of its caller when the answer is read: no
//! HTTP/2 stream, headers, flow control or connection task in between.
//!
//! * **Coalescing.** At most [`MAX_IN_FLIGHT`] batches are outstanding. An
//!   operation that arrives while fewer are leaves at once, alone: nothing
//!   waits for a batch to fill. Operations that arrive while the limit is
//!   reached queue up and leave together in the next batch, in one write.
//! * **Outcomes.** Each operation gets its own answer. A caller that gave
//!   up (its deadline passed) is skipped when the next batch is built.
//!   When no connection can be opened, the operations waiting fail as
//!   **not sent**. When an open connection breaks or the peer closes it
//!   (it is stopping), every batch written and not answered fails as
//!   **lost** (it may have been applied); operations still queued go on
//!   the next connection.
//! * **Liveness.** The task pings every `KEEPALIVE_INTERVAL` (5 s); a
//!   peer that sends nothing for that long plus `KEEPALIVE_TIMEOUT` (a
//!   partition, a frozen host) is given up and its batches fail as lost.
//!   An idle connection is pinged too, so a dead one is found before use.
//! * **Size.** An operation larger than one message may carry fails alone
//!   before it is queued; a batch never grows past half the message limit
//!   (one larger operation travels alone). A read whose answer did not fit
//!   in its batch's answer is sent again alone.
//! * **Security.** Under mutual TLS the connection is a TLS session with
//!   the node's peer certificate (ALPN [`wire::ALPN`]), and the listener
//!   checks the hello's sender against it as it checks a gRPC call's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_peer::{Failure, PeerError};
use ringkv_proto::v1 as pb;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};
use tracing::warn;

use super::grpc_batch::Batcher;
use super::wire::{self, FrameReader};
use super::{peer_error, CONNECT_TIMEOUT};
use crate::tls::{Tls, PEER_SERVER_NAME};
use pb::peer_frame::Kind;

/// Batches to one peer that may be outstanding at once. Two keep the
/// link busy while the next batch gathers without spreading the queue thin
/// over many small batches.
pub const MAX_IN_FLIGHT: usize = 2;

/// Most operations in one batch.
pub const MAX_ITEMS: usize = 256;

/// Operations that may wait for a peer before senders are held back.
const QUEUE_DEPTH: usize = 4096;

/// How long a peer that spoke no replica stream gets its operations over
/// gRPC before the replica stream is tried again.
const FALLBACK_PERIOD: Duration = Duration::from_secs(60);

/// Room for a frame's own encoding beyond the message limit.
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// One peer's replica stream; cheap to share. The task and its connection
/// end when the last handle is dropped and nothing is left unanswered.
pub struct Link {
    queue: mpsc::Sender<Queued>,
    /// Largest operation (key and versions) one message can carry.
    max_item_bytes: usize,
}

/// An operation waiting for its batch.
struct Queued {
    item: pb::BatchItem,
    /// Payload bytes (key and versions), to bound the size of a batch.
    bytes: usize,
    /// The caller's deadline, for an operation handed to gRPC.
    timeout: Duration,
    reply: oneshot::Sender<Result<pb::BatchResult, PeerError>>,
}

/// Where the link connects, and how.
#[derive(Clone)]
pub struct Dialler {
    /// `host:port`.
    pub address: String,
    /// Mutual TLS, when the peer port runs it.
    pub tls: Option<Arc<Tls>>,
}

/// What the link sends once per connection, and its limits.
#[derive(Clone)]
pub struct Settings {
    pub hello: pb::FrameHello,
    /// Payload bytes one batch carries, except one larger operation alone.
    pub max_batch_bytes: usize,
    /// Largest operation sent at all.
    pub max_item_bytes: usize,
    /// Largest frame read.
    pub max_frame: usize,
    /// Pings this often; gives up on a peer silent for one interval more
    /// than this plus the timeout.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

impl Link {
    /// Starts the task of the link to the peer at `dialler.address`; it
    /// connects on the first operation. `fallback` carries the operations
    /// when the peer speaks no replica stream (a node of the previous
    /// version).
    pub fn start(dialler: Dialler, settings: Settings, fallback: Option<Arc<Batcher>>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let max_item_bytes = settings.max_item_bytes;
        tokio::spawn(run(rx, dialler, settings, fallback));
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
    ) -> Result<pb::BatchResult, PeerError> {
        if bytes > self.max_item_bytes {
            return Err(ringkv_peer::too_large(bytes, self.max_item_bytes));
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            item,
            bytes,
            timeout,
            reply,
        };
        let call = async {
            self.queue.send(queued).await.map_err(|_| {
                PeerError::new(Failure::NotSent, "the link to the peer has stopped")
            })?;
            answer.await.map_err(|_| {
                PeerError::new(
                    Failure::Lost,
                    "the link to the peer stopped with the operation unanswered",
                )
            })?
        };
        let result = tokio::time::timeout(timeout, call).await.map_err(|_| {
            PeerError::new(Failure::Timeout, format!("no answer within {timeout:?}"))
        })??;
        if result.code == Code::Ok as i32 {
            Ok(result)
        } else {
            Err(peer_error(Status::new(
                Code::from_i32(result.code),
                result.message,
            )))
        }
    }
}

/// The link's task: waits for an operation, connects, serves the
/// connection until it ends, and again.
async fn run(
    mut queue: mpsc::Receiver<Queued>,
    dialler: Dialler,
    settings: Settings,
    fallback: Option<Arc<Batcher>>,
) {
    let mut carried: Option<Queued> = None;
    // Until when operations go to `fallback`.
    let mut grpc_until: Option<Instant> = None;
    loop {
        let first = match carried.take() {
            Some(op) => op,
            None => match queue.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        if let (Some(until), Some(fallback)) = (grpc_until, &fallback) {
            if Instant::now() < until {
                forward(fallback, first);
                continue;
            }
        }
        let ended = match dialler.connect().await {
            Ok(Stream::Plain(tcp)) => {
                let (rd, wr) = tcp.into_split();
                session(rd, wr, &settings, first, &mut queue).await
            }
            Ok(Stream::Tls(tls)) => {
                let (rd, wr) = tokio::io::split(*tls);
                session(rd, wr, &settings, first, &mut queue).await
            }
            Err(failure) => Err((failure, first)),
        };
        let ended = match ended {
            Ok(ended) => ended,
            Err((failure, first)) if failure.no_stream => match &fallback {
                Some(fallback) => {
                    warn!(
                        peer = %dialler.address,
                        "{}; replica operations to it go over gRPC for {FALLBACK_PERIOD:?}",
                        failure.error
                    );
                    grpc_until = Some(Instant::now() + FALLBACK_PERIOD);
                    forward(fallback, first);
                    Ended::Broken
                }
                None => fail_waiting(&failure.error, first, &mut queue),
            },
            Err((failure, first)) => fail_waiting(&failure.error, first, &mut queue),
        };
        match ended {
            Ended::Broken => {}
            Ended::Carried(op) => carried = Some(op),
            Ended::Dropped => return,
        }
    }
}

/// Fails `first` and every operation waiting now with what kept the
/// connection from opening (nothing was sent), rather than each waiting
/// for a connection attempt of its own.
fn fail_waiting(failure: &PeerError, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Ended {
    let _ = first.reply.send(Err(failure.clone()));
    while let Ok(op) = queue.try_recv() {
        let _ = op.reply.send(Err(failure.clone()));
    }
    Ended::Broken
}

/// Hands one operation to the gRPC batcher of a peer that speaks no
/// replica stream.
fn forward(fallback: &Arc<Batcher>, op: Queued) {
    let fallback = fallback.clone();
    tokio::spawn(async move {
        let result = fallback
            .call(op.item, op.bytes, op.timeout)
            .await
            .map_err(peer_error);
        let _ = op.reply.send(result);
    });
}

/// Why a connection did not open.
struct NotOpened {
    error: PeerError,
    /// The peer is there but speaks no replica stream (its TLS offered no
    /// such protocol, or it did not welcome the hello): a node of the
    /// previous version.
    no_stream: bool,
}

impl NotOpened {
    fn failed(error: PeerError) -> Self {
        Self {
            error,
            no_stream: false,
        }
    }
}

/// One connection: the hello, then batches until it ends. Fails with the
/// operation it was opened for when the peer did not welcome the hello.
async fn session<R, W>(
    rd: R,
    wr: W,
    settings: &Settings,
    first: Queued,
    queue: &mut mpsc::Receiver<Queued>,
) -> Result<Ended, (NotOpened, Queued)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut connection = Connection::new(rd, wr, settings);
    match connection.handshake().await {
        Ok(()) => Ok(connection.serve(first, queue).await),
        Err(failure) => Err((failure, first)),
    }
}

/// How a connection ended.
enum Ended {
    /// It broke or was given up; operations still queued wait for the next.
    Broken,
    /// It broke with this operation taken from the queue and not written.
    Carried(Queued),
    /// Every handle to the link is gone and nothing is unanswered.
    Dropped,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Dialler {
    async fn connect(&self) -> Result<Stream, NotOpened> {
        use std::io::{Error, ErrorKind};
        let address = self
            .address
            .split_once("://")
            .map_or(self.address.as_str(), |(_, rest)| rest);
        let not_sent = |e: &dyn std::fmt::Display| {
            PeerError::new(
                Failure::NotSent,
                format!("cannot connect to {address}: {e}"),
            )
        };
        let dial = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| NotOpened::failed(not_sent(&e)))?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &self.tls else {
                return Ok(Stream::Plain(tcp));
            };
            let connector = tls
                .frames_connector()
                .ok_or_else(|| NotOpened::failed(not_sent(&"the peer port runs no TLS")))?;
            let name = ServerName::try_from(PEER_SERVER_NAME)
                .map_err(|e| NotOpened::failed(not_sent(&e)))?;
            let stream = connector.connect(name, tcp).await.map_err(|e| NotOpened {
                // A node of the previous version offers only h2.
                no_stream: no_common_protocol(&e),
                error: not_sent(&e),
            })?;
            if stream.get_ref().1.alpn_protocol() != Some(wire::ALPN) {
                return Err(NotOpened {
                    error: not_sent(&"the peer did not agree to the replica stream (ALPN)"),
                    no_stream: true,
                });
            }
            Ok(Stream::Tls(Box::new(stream)))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(connected) => connected,
            Err(_) => Err(NotOpened::failed(not_sent(&Error::new(
                ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            )))),
        }
    }
}

/// Whether a TLS handshake failed because the peer offered none of the
/// protocols asked for.
fn no_common_protocol(e: &std::io::Error) -> bool {
    use rustls::AlertDescription::NoApplicationProtocol;
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::AlertReceived(NoApplicationProtocol)
                    | rustls::Error::NoApplicationProtocol
            )
        })
}

/// An operation written and not yet answered.
struct Waiter {
    reply: oneshot::Sender<Result<pb::BatchResult, PeerError>>,
    /// A read is kept (a key: cheap) in case the peer bounces its answer.
    read: Option<pb::BatchItem>,
}

/// One open connection and the batches on it.
struct Connection<'a, R, W> {
    frames: FrameReader<R>,
    io: W,
    /// Encoded and not yet written.
    out: wire::Outgoing,
    /// Batches written (or being written) and not answered, by id.
    waiting: HashMap<u64, Vec<Waiter>>,
    next_id: u64,
    settings: &'a Settings,
}

impl<'a, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<'a, R, W> {
    fn new(rd: R, wr: W, settings: &'a Settings) -> Self {
        Self {
            frames: FrameReader::new(rd, settings.max_frame),
            io: wr,
            out: wire::Outgoing::default(),
            waiting: HashMap::new(),
            next_id: 0,
            settings,
        }
    }

    /// Sends the preamble and the hello and waits for the welcome. No
    /// batch goes before it, so every failure here is "not sent": a
    /// listener that speaks no replica stream (an older node, which closes
    /// the connection) has been sent nothing it could apply.
    async fn handshake(&mut self) -> Result<(), NotOpened> {
        self.out.extend(wire::PREAMBLE);
        self.out.encode(Kind::Hello(self.settings.hello.clone()));
        let exchange = async {
            self.out.push_all(&mut self.io).await?;
            self.frames.next().await
        };
        let not_sent = |why: String| NotOpened {
            error: PeerError::new(
                Failure::NotSent,
                format!("{why}; nothing was sent (does the peer run an older ringkv?)"),
            ),
            no_stream: true,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, exchange).await {
            Ok(Ok(Some(Kind::Welcome(_)))) => Ok(()),
            Ok(Ok(Some(Kind::Refused(refusal)))) => Err(NotOpened::failed(peer_error(
                Status::new(Code::from_i32(refusal.code), refusal.message),
            ))),
            Ok(Ok(Some(_))) => Err(not_sent(
                "the peer answered the replica stream's hello with something else than a welcome"
                    .into(),
            )),
            // A node stopping closes without a word; an older one answers
            // in HTTP/2 first (a frame that does not parse).
            Ok(Ok(None)) => Err(NotOpened::failed(PeerError::new(
                Failure::NotSent,
                "the peer closed the connection at the replica stream's hello; nothing was sent",
            ))),
            Ok(Err(e)) => Err(not_sent(format!("the replica stream's hello failed: {e}"))),
            // A node too busy to answer in time is no sign of an old one.
            Err(_) => Err(NotOpened::failed(PeerError::new(
                Failure::NotSent,
                format!("no answer to the replica stream's hello within {CONNECT_TIMEOUT:?}"),
            ))),
        }
    }

    /// Sends `first` and whatever follows, reads the answers, and pings,
    /// until the connection ends. Reading, writing and taking operations
    /// all wait in one `select!`, so a peer that stops reading never stops
    /// this side from reading its answers.
    async fn serve(mut self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Ended {
        let mut carried = self.batch(first, queue);
        let (every, timeout) = (self.settings.ping_interval, self.settings.ping_timeout);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut heard = Instant::now();
        let mut pings = 0u64;
        let mut queue_open = true;
        let failure = loop {
            if !queue_open && self.waiting.is_empty() && !self.out.pending() {
                return Ended::Dropped;
            }
            let room = self.waiting.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                frame = self.frames.next() => match frame {
                    Ok(Some(frame)) => {
                        heard = Instant::now();
                        if let Err(failure) = self.received(frame) {
                            break failure;
                        }
                    }
                    Ok(None) => break lost("the peer closed the replica stream (it is stopping?)"),
                    Err(e) => break lost(format!("the replica stream broke: {e}")),
                },
                op = next_op(&mut carried, queue), if room && queue_open => match op {
                    Some(op) => carried = self.batch(op, queue),
                    None => queue_open = false,
                },
                pushed = self.out.push(&mut self.io), if self.out.pending() => {
                    if let Err(e) = pushed {
                        break lost(format!("the replica stream broke: {e}"));
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > every + timeout {
                        break lost(format!(
                            "the peer sent nothing for {:?} (pinged every {every:?})",
                            heard.elapsed()
                        ));
                    }
                    pings += 1;
                    self.out.encode(Kind::Ping(pings));
                }
            }
        };
        for (_, waiters) in self.waiting.drain() {
            for waiter in waiters {
                let _ = waiter.reply.send(Err(failure.clone()));
            }
        }
        carried.map_or(Ended::Broken, Ended::Carried)
    }

    /// Builds one batch from `first` and what else is queued (operations
    /// whose callers gave up are dropped), encodes it for writing, and
    /// returns the operation that did not fit, if one was taken.
    fn batch(&mut self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Option<Queued> {
        let mut carried = None;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_ITEMS {
            match queue.try_recv() {
                Ok(op) if op.reply.is_closed() => {}
                Ok(op) if bytes + op.bytes > self.settings.max_batch_bytes => {
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
        if !batch.is_empty() {
            self.send(batch);
        }
        carried
    }

    /// Encodes one batch for writing and records its waiters.
    fn send(&mut self, batch: Vec<Queued>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut items = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for op in batch {
            let read =
                matches!(op.item.op, Some(pb::batch_item::Op::Read(_))).then(|| op.item.clone());
            items.push(op.item);
            waiters.push(Waiter {
                reply: op.reply,
                read,
            });
        }
        self.out.encode(Kind::Batch(pb::BatchRequest { items, id }));
        self.waiting.insert(id, waiters);
    }

    /// Handles one frame from the peer; an error ends the connection.
    fn received(&mut self, frame: Kind) -> Result<(), PeerError> {
        match frame {
            Kind::Answer(answer) => {
                let Some(waiters) = self.waiting.remove(&answer.id) else {
                    return Err(PeerError::new(
                        Failure::Lost,
                        format!(
                            "the peer answered batch {}, which is not waiting",
                            answer.id
                        ),
                    ));
                };
                if answer.results.len() != waiters.len() {
                    let failure = PeerError::new(
                        Failure::Refused(ringkv_core::error::Code::Internal),
                        format!(
                            "the peer answered {} of {} batched operations",
                            answer.results.len(),
                            waiters.len()
                        ),
                    );
                    for waiter in waiters {
                        let _ = waiter.reply.send(Err(failure.clone()));
                    }
                    return Ok(());
                }
                for (waiter, result) in waiters.into_iter().zip(answer.results) {
                    match (result.retry_alone, waiter.read) {
                        (false, _) => {
                            let _ = waiter.reply.send(Ok(result));
                        }
                        (true, Some(read)) => self.send(vec![Queued {
                            item: read,
                            bytes: 0,
                            timeout: Duration::ZERO,
                            reply: waiter.reply,
                        }]),
                        (true, None) => {
                            let _ = waiter.reply.send(Err(PeerError::new(
                                Failure::Refused(ringkv_core::error::Code::Internal),
                                "the peer bounced an operation that is not a read",
                            )));
                        }
                    }
                }
                Ok(())
            }
            Kind::Pong(_) => Ok(()),
            Kind::Refused(refusal) => Err(peer_error(Status::new(
                Code::from_i32(refusal.code),
                refusal.message,
            ))),
            Kind::Welcome(_) => Err(lost("the peer welcomed the replica stream twice")),
            Kind::Hello(_) | Kind::Batch(_) | Kind::Ping(_) => Err(lost(
                "the peer sent a frame only a dialling node sends (a protocol error)",
            )),
        }
    }
}

/// A broken connection's failure: whatever was written may have been
/// applied.
fn lost(why: impl std::fmt::Display) -> PeerError {
    PeerError::new(
        Failure::Lost,
        format!("{why}; the operation may or may not have been applied"),
    )
}

/// The operation carried over from a full batch, else the next queued.
async fn next_op(
    carried: &mut Option<Queued>,
    queue: &mut mpsc::Receiver<Queued>,
) -> Option<Queued> {
    match carried.take() {
        Some(op) => Some(op),
        None => queue.recv().await,
    }
}

#[cfg(test)]
pub(super) mod tests;
