//! Accepting TLS connections: each handshake runs in its own task (a slow
//! or silent client holds up nobody), with the acceptor current when the
//! connection arrived, and only finished handshakes reach the gRPC server
//! (or, on the peer port, the replica stream's server).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use super::Tls;
use crate::api::FrameServer;
use crate::server::Shutdown;
use crate::transport::wire;

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one log line about refused handshakes per port per interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the gRPC server.
const ACCEPT_QUEUE: usize = 128;

/// Which listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Client,
    Peer,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Peer => "peer",
        }
    }
}

/// The TLS connections of `listener` for gRPC, until `stop` fires or the
/// server stops taking them. With `frames` (the peer port), a session
/// whose ALPN is the replica stream's goes there instead.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
    port: Port,
    frames: Option<Arc<FrameServer>>,
    mut stop: Shutdown,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let log = Arc::new(RefusalLog::default());
    tokio::spawn(async move {
        while let Some((stream, remote)) = accept(&listener, port, &mut stop, tx.closed()).await {
            let Some(acceptor) = tls.acceptor(port) else {
                return;
            };
            let (tx, log, failures) = (tx.clone(), log.clone(), tls.handshake_failures());
            let frames = frames.clone();
            tokio::spawn(async move {
                let why =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let session = tls_stream.get_ref().1;
                            match frames.filter(|_| session.alpn_protocol() == Some(wire::ALPN)) {
                                Some(frames) => {
                                    let leaf = session
                                        .peer_certificates()
                                        .and_then(|certs| certs.first())
                                        .map(|cert| cert.to_vec());
                                    let (rd, wr) = tokio::io::split(tls_stream);
                                    frames.serve(rd, wr, leaf);
                                }
                                None => {
                                    let _ = tx.send(Ok(tls_stream)).await;
                                }
                            }
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                    };
                failures.fetch_add(1, Ordering::Relaxed);
                log.refused(port, &remote.to_string(), &why);
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The next connection of `listener`, with Nagle's algorithm off (small
/// frames would otherwise wait for delayed ACKs); `None` once `stop` fires
/// or `closed` completes. A failed accept (out of descriptors and the
/// like) is logged and retried after a breath.
pub(crate) async fn accept(
    listener: &TcpListener,
    port: Port,
    stop: &mut Shutdown,
    closed: impl std::future::Future<Output = ()>,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    tokio::pin!(closed);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.recv() => return None,
            _ = &mut closed => return None,
        };
        match accepted {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, remote));
            }
            Err(e) => {
                warn!(port = port.name(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Logs refused handshakes at most once per [`REFUSAL_LOG_INTERVAL`],
/// with the count of those held back.
#[derive(Default)]
struct RefusalLog {
    state: Mutex<(Option<Instant>, u64)>,
    total: AtomicU64,
}

impl RefusalLog {
    fn refused(&self, port: Port, remote: &str, why: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            state.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.1);
        state.0 = Some(now);
        drop(state);
        let hint = match port {
            Port::Client => "clients need TLS (and a certificate of tls.client_ca when it is set)",
            Port::Peer => "peers need a certificate of tls.peer_ca that names them",
        };
        warn!(
            port = port.name(),
            %remote,
            suppressed,
            "refused a TLS connection from {remote}: {why}; {hint}"
        );
    }
}
