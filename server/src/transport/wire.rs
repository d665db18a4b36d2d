//! The replica stream's framing (proto `PeerFrame`), shared by the node
//! that dials ([`super::frames`]) and the one that listens
//! (`api::frames`): an 8-byte preamble from the dialler, then frames of a
//! 4-byte big-endian length and one encoded `PeerFrame`, both ways.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use ringkv_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a dialler sends first: tells the replica stream from HTTP/2 (whose
/// preface starts with `P`) on a plaintext peer port.
pub const PREAMBLE: &[u8; 8] = b"RKVFRM\x00\x01";

/// The ALPN protocol a dialler asks for under mutual TLS (gRPC asks `h2`).
pub const ALPN: &[u8] = b"ringkv-frames/1";

/// Bytes of a frame's length prefix.
const LENGTH_BYTES: usize = 4;

/// Room the reader makes in its buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

/// Appends one frame to `out`.
pub fn encode(kind: pb::peer_frame::Kind, out: &mut BytesMut) {
    let frame = pb::PeerFrame { kind: Some(kind) };
    let len = frame.encoded_len();
    out.reserve(LENGTH_BYTES + len);
    // A frame is at most a message limit long (well under 4 GiB), which the
    // reader on the other side enforces.
    out.put_u32(len as u32);
    frame
        .encode(out)
        .expect("the buffer was reserved for the whole frame");
}

/// What one side has encoded and not yet written, on its way out.
#[derive(Default)]
pub struct Outgoing {
    buf: BytesMut,
    /// Written but perhaps still buffered below (TLS records): flushed
    /// once everything is written.
    unflushed: bool,
}

impl Outgoing {
    pub fn encode(&mut self, kind: pb::peer_frame::Kind) {
        encode(kind, &mut self.buf);
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether there is anything to write or flush.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty() || self.unflushed
    }

    /// One write of what is buffered, or the flush once all of it is
    /// written. Cancel-safe: when a `select!` takes another branch, what
    /// was not reported written is still buffered.
    pub async fn push<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        if self.buf.is_empty() {
            io.flush().await?;
            self.unflushed = false;
            return Ok(());
        }
        match io.write(&self.buf).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the connection took no more bytes",
            )),
            n => {
                self.buf.advance(n);
                self.unflushed = true;
                Ok(())
            }
        }
    }

    /// Writes and flushes everything buffered.
    pub async fn push_all<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        while self.pending() {
            self.push(io).await?;
        }
        Ok(())
    }

    /// Drops what was not written (the connection broke).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.unflushed = false;
    }
}

/// The frames arriving on one connection's read half.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    /// Largest frame accepted; a longer one is an error (the connection is
    /// then closed).
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, max_frame: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
        }
    }

    /// Reads and checks the dialler's preamble.
    pub async fn preamble(&mut self) -> io::Result<()> {
        while self.buf.len() < PREAMBLE.len() {
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the preamble",
                ));
            }
        }
        if &self.buf[..PREAMBLE.len()] != PREAMBLE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not ringkv's replica stream (wrong preamble)",
            ));
        }
        self.buf.advance(PREAMBLE.len());
        Ok(())
    }

    /// The next frame; `None` when the other side closed the connection
    /// between frames. Cancel-safe: when a `select!` takes another branch,
    /// nothing read is lost.
    pub async fn next(&mut self) -> io::Result<Option<pb::peer_frame::Kind>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a frame",
                    ))
                };
            }
        }
    }

    /// One read into the buffer (`read_buf` reads nothing when cancelled).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// A whole frame off the front of the buffer, if one is there.
    fn parse(&mut self) -> io::Result<Option<pb::peer_frame::Kind>> {
        decode(&mut self.buf, self.max_frame)
    }
}

/// Takes one whole frame off the front of `buf`, if one is there (`None`:
/// more bytes are needed, and room for them is reserved). A frame longer
/// than `max_frame`, or one that does not decode, is an error.
pub fn decode(buf: &mut BytesMut, max_frame: usize) -> io::Result<Option<pb::peer_frame::Kind>> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
    if len > max_frame {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {max_frame} bytes"),
        ));
    }
    if buf.len() < LENGTH_BYTES + len {
        buf.reserve(LENGTH_BYTES + len - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_BYTES);
    // Frozen, the frame's bytes fields share the buffer: no copy.
    let body = buf.split_to(len).freeze();
    match pb::PeerFrame::decode(body) {
        Ok(pb::PeerFrame { kind: Some(kind) }) => Ok(Some(kind)),
        Ok(pb::PeerFrame { kind: None }) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an empty frame (an unknown kind from a newer node?)",
        )),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a malformed frame: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::peer_frame::Kind;

    fn reader(bytes: Vec<u8>, max_frame: usize) -> FrameReader<std::io::Cursor<Vec<u8>>> {
        FrameReader::new(std::io::Cursor::new(bytes), max_frame)
    }

    #[tokio::test]
    async fn frames_read_back_as_written_whatever_the_read_boundaries() {
        let mut out = BytesMut::new();
        out.extend_from_slice(PREAMBLE);
        encode(Kind::Ping(7), &mut out);
        let batch = pb::BatchRequest {
            items: vec![pb::BatchItem {
                op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
                    key: vec![9; 100_000].into(),
                })),
            }],
            id: 3,
        };
        encode(Kind::Batch(batch.clone()), &mut out);
        // Delivered one byte at a time: every frame still arrives whole.
        let (mut tx, rx) = tokio::io::duplex(1);
        let bytes = out.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&bytes).await.unwrap();
        });
        let mut frames = FrameReader::new(rx, 1 << 20);
        frames.preamble().await.unwrap();
        assert_eq!(frames.next().await.unwrap(), Some(Kind::Ping(7)));
        assert_eq!(frames.next().await.unwrap(), Some(Kind::Batch(batch)));
        writer.await.unwrap();
        assert_eq!(frames.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_a_wrong_preamble_and_a_cut_frame_are_errors() {
        let mut out = BytesMut::new();
        encode(Kind::Pong(1), &mut out);
        let len = out.len() - LENGTH_BYTES;
        let err = reader(out.to_vec(), len - 1).next().await.unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
        assert_eq!(
            reader(out.to_vec(), len).next().await.unwrap(),
            Some(Kind::Pong(1))
        );

        let err = reader(b"PRI * HTTP/2.0".to_vec(), 100)
            .preamble()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let cut = out[..out.len() - 1].to_vec();
        let err = reader(cut, 100).next().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let garbage = [0u8, 0, 0, 2, 0xff, 0xff].to_vec();
        let err = reader(garbage, 100).next().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
