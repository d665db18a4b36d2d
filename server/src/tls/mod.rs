//! TLS on both listeners, and certificate rotation without dropping a
//! connection.
//!
//! * **Client port** (`tls.cert`, `tls.key`, optional `tls.client_ca`):
//!   TLS 1.2/1.3 with ALPN `h2`; with `client_ca`, every client must
//!   present a certificate of that CA.
//! * **Peer port** (`tls.peer_ca`, `tls.peer_cert`, `tls.peer_key`):
//!   mutual TLS. The node serves only clients presenting a certificate of
//!   the cluster CA, and dials its peers presenting its own. Which node a
//!   certificate stands for is its DNS names: `api::auth` checks that a
//!   call's claimed sender is a member whose `node.name` the certificate
//!   names. Dialling, the node checks the chain only: it reaches members
//!   by address, and a seed's name is not known before it answers.
//!
//! Rotation: [`Tls::reload`] reads every file again and installs new
//! acceptors and a new connector only if all of them load; connections
//! already open keep the session they negotiated, new ones use the new
//! files. A file that fails to load (missing, malformed, a certificate
//! expired or not yet valid, a peer certificate not naming this node) is
//! refused with a message saying which and why, at start (the node does
//! not start) and at reload (the old files stay in use).
//!
//! A refused handshake (a plaintext client on a TLS port, a certificate of
//! another CA, an expired one, no certificate on the peer port) never
//! reaches gRPC: the client sees its connection closed with the TLS alert
//! (a transport error, no gRPC status), and the node counts it in
//! `ringkv_tls_handshake_failures_total` and logs it, rate-limited.

mod files;
mod incoming;
mod verify;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::info;

pub use files::{dns_names, Watched};
pub(crate) use incoming::accept;
pub use incoming::{incoming, Port};

use crate::transport::wire;
use ringkv_core::error::{Error, Result};
use ringkv_node::config::TlsConfig;

/// The ALPN protocol both ports speak: HTTP/2 (gRPC clients such as
/// grpcio refuse a TLS server that does not agree on it).
const ALPN_H2: &[u8] = b"h2";

/// The server name this node sends when dialling a peer: peers are dialled
/// by address and checked by chain (module doc), so the name is a fixed
/// placeholder the peer's certificate need not carry.
pub const PEER_SERVER_NAME: &str = "peer.ringkv.invalid";

/// The TLS state of a node: what it loaded, reloaded on demand.
pub struct Tls {
    config: TlsConfig,
    /// `node.name`: the peer certificate must name it.
    node_name: String,
    current: RwLock<Loaded>,
    /// Handshakes refused on either port, for metrics.
    handshake_failures: Arc<AtomicU64>,
}

/// One generation of loaded files.
#[derive(Clone)]
struct Loaded {
    client: Option<TlsAcceptor>,
    peer: Option<TlsAcceptor>,
    dial: Option<TlsConnector>,
    /// Dials the replica stream (ALPN `ringkv-frames/1`).
    dial_frames: Option<TlsConnector>,
}

impl Tls {
    /// Loads every configured file; `Ok(None)` when no TLS is configured.
    pub fn load(config: &TlsConfig, node_name: &str) -> Result<Option<Arc<Tls>>> {
        if !config.client_port_tls() && !config.peer_tls() {
            return Ok(None);
        }
        let loaded = Loaded::build(config, node_name)?;
        Ok(Some(Arc::new(Tls {
            config: config.clone(),
            node_name: node_name.to_string(),
            current: RwLock::new(loaded),
            handshake_failures: Arc::new(AtomicU64::new(0)),
        })))
    }

    /// Reads the files again and installs them if all load; otherwise
    /// keeps the ones in use and says why.
    pub fn reload(&self) -> Result<()> {
        let loaded = Loaded::build(&self.config, &self.node_name)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        info!("TLS certificates reloaded");
        Ok(())
    }

    /// The files to watch for changes.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let c = &self.config;
        [
            &c.cert,
            &c.key,
            &c.client_ca,
            &c.peer_ca,
            &c.peer_cert,
            &c.peer_key,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    fn current(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The acceptor for new connections on `port`, if it serves TLS.
    pub fn acceptor(&self, port: Port) -> Option<TlsAcceptor> {
        let current = self.current();
        match port {
            Port::Client => current.client,
            Port::Peer => current.peer,
        }
    }

    /// The connector for new connections to peers, if the peer port runs
    /// mutual TLS.
    pub fn connector(&self) -> Option<TlsConnector> {
        self.current().dial
    }

    /// The connector for new replica streams to peers (`transport::frames`),
    /// if the peer port runs mutual TLS.
    pub fn frames_connector(&self) -> Option<TlsConnector> {
        self.current().dial_frames
    }

    /// Whether `port` serves TLS.
    pub fn serves(&self, port: Port) -> bool {
        match port {
            Port::Client => self.config.client_port_tls(),
            Port::Peer => self.config.peer_tls(),
        }
    }

    pub fn peer_port(&self) -> bool {
        self.config.peer_tls()
    }

    /// Refused handshakes since start (`ringkv_tls_handshake_failures_total`).
    pub fn handshake_failures(&self) -> Arc<AtomicU64> {
        self.handshake_failures.clone()
    }
}

/// rustls with ring: classical key exchange (X25519, P-256). rustls marks
/// ring's provider deprecated because it has no post-quantum key exchange;
/// the provider that has one (aws-lc-rs) needs CMake and a second C build
/// beside RocksDB's, which this project does not take on yet.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

impl Loaded {
    fn build(c: &TlsConfig, node_name: &str) -> Result<Loaded> {
        let client = match (&c.cert, &c.key) {
            (Some(cert), Some(key)) => {
                let chain = files::certificate_chain(cert, "tls.cert")?;
                let key = files::private_key(key, "tls.key")?;
                let builder = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls_error("TLS protocol versions", e))?;
                let builder = match &c.client_ca {
                    Some(ca) => {
                        let roots = files::roots(ca, "tls.client_ca")?;
                        let verifier =
                            WebPkiClientVerifier::builder_with_provider(roots, provider())
                                .build()
                                .map_err(|e| tls_error("tls.client_ca", e))?;
                        builder.with_client_cert_verifier(verifier)
                    }
                    None => builder.with_no_client_auth(),
                };
                let mut config = builder
                    .with_single_cert(chain, key)
                    .map_err(|e| tls_error("tls.cert and tls.key", e))?;
                config.alpn_protocols = vec![ALPN_H2.to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            _ => None,
        };
        let (peer, dial, dial_frames) = match (&c.peer_ca, &c.peer_cert, &c.peer_key) {
            (Some(ca), Some(cert), Some(key)) => {
                let roots: Arc<RootCertStore> = files::roots(ca, "tls.peer_ca")?;
                let chain = files::certificate_chain(cert, "tls.peer_cert")?;
                files::check_names(&chain[0], node_name, "tls.peer_cert")?;
                let key = files::private_key(key, "tls.peer_key")?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .build()
                        .map_err(|e| tls_error("tls.peer_ca", e))?;
                let mut server = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls_error("TLS protocol versions", e))?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| tls_error("tls.peer_cert and tls.peer_key", e))?;
                // gRPC, or the replica stream (transport::wire).
                server.alpn_protocols = vec![ALPN_H2.to_vec(), wire::ALPN.to_vec()];
                let mut client = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls_error("TLS protocol versions", e))?
                    .dangerous()
                    .with_custom_certificate_verifier(verify::PeerChain::new(roots, provider())?)
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error("tls.peer_cert and tls.peer_key", e))?;
                let mut frames = client.clone();
                client.alpn_protocols = vec![ALPN_H2.to_vec()];
                frames.alpn_protocols = vec![wire::ALPN.to_vec()];
                (
                    Some(TlsAcceptor::from(Arc::new(server))),
                    Some(TlsConnector::from(Arc::new(client))),
                    Some(TlsConnector::from(Arc::new(frames))),
                )
            }
            _ => (None, None, None),
        };
        Ok(Loaded {
            client,
            peer,
            dial,
            dial_frames,
        })
    }
}

#[cfg(test)]
mod tests;
