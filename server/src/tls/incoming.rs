//! Accepting TLS connections: each handshake runs in its own task (a slow
//! or silent client holds up nobody), with the acceptor current when the
//! connection arrived, and only finished handshakes reach the gRPC server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use super::Tls;
use crate::server::Shutdown;

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

/// The TLS connections of `listener`, until `stop` fires or the server
/// stops taking them.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
    port: Port,
    mut stop: Shutdown,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let log = Arc::new(RefusalLog::default());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.recv() => return,
                _ = tx.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: say so, and keep
                    // accepting after a breath.
                    warn!(port = port.name(), "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some(acceptor) = tls.acceptor(port) else {
                return;
            };
            let (tx, log, failures) = (tx.clone(), log.clone(), tls.handshake_failures());
            tokio::spawn(async move {
                let why =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let _ = tx.send(Ok(tls_stream)).await;
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
