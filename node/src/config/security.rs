//! The `[tls]` and `[auth]` sections: what secures the node's ports.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[tls]`: PEM files for TLS on the client port and mutual TLS on the
/// peer port (docs/security.md). Every path is read at start and again on
/// SIGHUP or when a file changes; a reload that fails keeps the
/// certificates in use and says why.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The client port's certificate chain; with `key`, the client port
    /// serves TLS only. Unset: plaintext (a local node).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// CA bundle client certificates must chain to. Set: every client must
    /// present a certificate of it (client-certificate authentication).
    pub client_ca: Option<PathBuf>,
    /// The cluster CA: a peer is a node presenting a certificate of it
    /// whose DNS names include its `node.name`. With `peer_cert` and
    /// `peer_key`, the peer port serves mutual TLS only and this node
    /// dials its peers with TLS.
    pub peer_ca: Option<PathBuf>,
    /// This node's certificate for the peer port, as server and as client;
    /// its DNS names must include `node.name`.
    pub peer_cert: Option<PathBuf>,
    /// The private key of `peer_cert`.
    pub peer_key: Option<PathBuf>,
    /// How often the files are checked for changes; 0: only on SIGHUP.
    pub reload_check_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            peer_ca: None,
            peer_cert: None,
            peer_key: None,
            reload_check_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// Whether the client port serves TLS.
    pub fn client_port_tls(&self) -> bool {
        self.cert.is_some()
    }

    /// Whether the peer port serves (and this node dials) mutual TLS.
    pub fn peer_tls(&self) -> bool {
        self.peer_ca.is_some()
    }
}

/// `[auth]`: bearer tokens on the client port (docs/security.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every KV and Admin call on the client port needs a token with the
    /// scope it asks for; health checks and reflection do not.
    pub enabled: bool,
    /// A file holding the root token: every scope, no expiry, the token
    /// that creates the others (`ringkv auth token create`). Read at start
    /// and on reload; at least 32 characters.
    pub root_token_file: Option<PathBuf>,
}
