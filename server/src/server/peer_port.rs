//! The plaintext peer port's connections: HTTP/2 for gRPC, or the replica
//! stream (`api::frames`), told apart by their first byte. (Under mutual
//! TLS the session's ALPN tells them apart: `tls::incoming`.)

use std::sync::Arc;
use std::time::Duration;

use super::Shutdown;
use crate::api::FrameServer;
use crate::tls::accept;
use crate::tls::Port;
use crate::transport::wire;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Time a new connection has to send its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections told apart and waiting for the gRPC server.
const ACCEPT_QUEUE: usize = 128;

/// The connections of `listener` for gRPC, until `stop` fires or the
/// server stops taking them; replica streams go to `frames`. Each
/// connection waits for its first byte in a task of its own, so one that
/// sends nothing holds up nobody (and is dropped after
/// [`FIRST_BYTE_TIMEOUT`]: every HTTP/2 client starts with its preface).
pub fn incoming(
    listener: TcpListener,
    frames: Arc<FrameServer>,
    mut stop: Shutdown,
) -> ReceiverStream<std::io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        while let Some((stream, _)) = accept(&listener, Port::Peer, &mut stop, tx.closed()).await {
            let (tx, frames) = (tx.clone(), frames.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] == wire::PREAMBLE[0] => {
                        let (rd, wr) = stream.into_split();
                        frames.serve(rd, wr, None);
                    }
                    Ok(Ok(1)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // Closed, failed or silent: nothing to serve.
                    _ => {}
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
