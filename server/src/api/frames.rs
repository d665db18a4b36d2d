//! The listening side of the replica stream (`transport::frames` dials
//! it): one task per connection reads the dialler's batches, answers each
//! as the gRPC `Internal.Batch` call would ([`InternalService`]: every item
//! admitted and metered, the admitted ones handed to the node together),
//! and writes the answers back tagged with their batch's id, in the order
//! they are ready. Up to [`STREAM_BATCHES_IN_FLIGHT`] batches of one
//! connection are answered at once: a replica's merges wait on its WAL, and
//! batches arriving meanwhile join the next group commit.
//!
//! The dialler's hello names it; under mutual TLS it must be a member the
//! certificate names, checked as a gRPC call on the peer port is
//! ([`PeerAuth`]); a refused hello is answered with a refusal frame and the
//! connection closed, nothing applied. When the node closes its ports the
//! connection stops reading, answers every batch it has read, and closes,
//! so a stop is never held up by a peer. A dialler that sends nothing (not
//! even its pings) for [`SILENCE`] is hung up on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_common::shutdown::Shutdown;
use ringkv_peer::Envelope;
use ringkv_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tonic::Status;

use super::internal::STREAM_BATCHES_IN_FLIGHT;
use super::{status, InternalService, PeerAuth};
use crate::transport::frames::FRAME_OVERHEAD_BYTES;
use crate::transport::wire::{self, FrameReader};
use crate::transport::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use pb::peer_frame::Kind;

/// Time a dialler has to send its preamble and hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Silence after which a dialler is given up: it pings every
/// [`KEEPALIVE_INTERVAL`].
pub const SILENCE: Duration =
    Duration::from_secs(2 * KEEPALIVE_INTERVAL.as_secs() + KEEPALIVE_TIMEOUT.as_secs());

/// The call a replica stream's dialler is checked as: it carries what the
/// gRPC `BatchStream` carries.
const CHECKED_AS: &str = "/ringkv.v1.Internal/BatchStream";

/// Serves replica streams on the peer port.
pub struct FrameServer {
    internal: InternalService,
    auth: PeerAuth,
    close: Shutdown,
    max_frame: usize,
}

impl FrameServer {
    pub fn new(
        internal: InternalService,
        auth: PeerAuth,
        close: Shutdown,
        max_message_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            internal,
            auth,
            close,
            max_frame: max_message_bytes + FRAME_OVERHEAD_BYTES,
        })
    }

    /// Serves one connection, whose first bytes are the replica stream's
    /// preamble, in a task of its own. `leaf` is the certificate (DER) the
    /// dialler presented, under mutual TLS.
    pub fn serve<R, W>(self: &Arc<Self>, rd: R, wr: W, leaf: Option<Vec<u8>>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(self.clone().connection(rd, wr, leaf));
    }

    async fn connection<R, W>(self: Arc<Self>, rd: R, mut wr: W, leaf: Option<Vec<u8>>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut frames = FrameReader::new(rd, self.max_frame);
        let hello = async {
            frames.preamble().await?;
            frames.next().await
        };
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, hello).await {
            Ok(Ok(Some(Kind::Hello(hello)))) => hello,
            // Not a dialler speaking the replica stream: nothing to answer.
            _ => return,
        };
        let mut out = wire::Outgoing::default();
        let envelope = match self.admit(&hello, leaf.as_deref()) {
            Ok(envelope) => envelope,
            Err(refused) => {
                let refusal = pb::FrameRefusal {
                    code: refused.code() as i32,
                    message: refused.message().to_string(),
                };
                out.encode(Kind::Refused(refusal));
                // Then read until the dialler hangs up: closing with
                // anything unread would reset the connection, and the
                // reset could overtake the refusal.
                let _ = tokio::time::timeout(HELLO_TIMEOUT, async {
                    out.push_all(&mut wr).await?;
                    wr.shutdown().await?;
                    while let Ok(Some(_)) = frames.next().await {}
                    std::io::Result::Ok(())
                })
                .await;
                return;
            }
        };
        out.encode(Kind::Welcome(pb::FrameWelcome {}));
        let answer = |batch: pb::BatchRequest| {
            let this = self.clone();
            async move {
                let results = this.internal.answer_batch(envelope, batch.items).await;
                pb::BatchResponse {
                    results,
                    id: batch.id,
                }
            }
        };
        let mut answering = FuturesUnordered::new();
        let mut reading = true;
        // The write side failed: answers are dropped, merges still finish.
        let mut broken = false;
        let mut heard = Instant::now();
        let mut check = tokio::time::interval(KEEPALIVE_INTERVAL);
        let mut close = self.close.clone();
        loop {
            let drained = broken || !out.pending();
            if !reading && answering.is_empty() && drained {
                break;
            }
            tokio::select! {
                biased;
                frame = frames.next(), if reading && answering.len() < STREAM_BATCHES_IN_FLIGHT => {
                    heard = Instant::now();
                    match frame {
                        Ok(Some(Kind::Batch(batch))) => answering.push(answer(batch)),
                        Ok(Some(Kind::Ping(n))) => out.encode(Kind::Pong(n)),
                        // The dialler is done (or broke the protocol).
                        Ok(Some(_)) | Ok(None) | Err(_) => reading = false,
                    }
                }
                Some(answer) = answering.next(), if !answering.is_empty() => {
                    if !broken {
                        out.encode(Kind::Answer(answer));
                    }
                }
                pushed = out.push(&mut wr), if out.pending() && !broken => {
                    if pushed.is_err() {
                        (broken, reading) = (true, false);
                        out.clear();
                    }
                }
                _ = close.recv(), if reading => reading = false,
                _ = check.tick(), if reading => {
                    if heard.elapsed() > SILENCE {
                        reading = false;
                    }
                }
            }
        }
        if !broken {
            // Close our side, then read until the dialler closes its own:
            // closing with its later batches unread would reset the
            // connection, and the reset could discard answers it has not
            // read yet.
            let _ = tokio::time::timeout(HELLO_TIMEOUT, async {
                wr.shutdown().await?;
                while let Ok(Some(_)) = frames.next().await {}
                std::io::Result::Ok(())
            })
            .await;
        }
    }

    /// The envelope of a stream's batches, if its dialler may send them.
    fn admit(&self, hello: &pb::FrameHello, leaf: Option<&[u8]>) -> Result<Envelope, Status> {
        let malformed = |what: &str, value: &str| {
            Status::invalid_argument(format!(
                "malformed {what} {value:?} in the replica stream's hello"
            ))
        };
        let node = |value: &str| match value {
            "" => Ok(None),
            id => id.parse().map(Some).map_err(|_| malformed("node id", id)),
        };
        let envelope = Envelope {
            from: node(&hello.from)?,
            to: node(&hello.to)?,
            cluster: match hello.cluster.as_str() {
                "" => None,
                id => Some(id.parse().map_err(|_| malformed("cluster id", id))?),
            },
        };
        self.auth
            .check_caller(leaf, envelope.from, CHECKED_AS)
            .map_err(status)?;
        Ok(envelope)
    }
}
