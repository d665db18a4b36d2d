//! ringkv-client: the Rust client library for ringkv.
//!
//! A [`Client`] holds a list of node endpoints. It learns the cluster's
//! layout from any of them and sends each request straight to a replica
//! of the key (partition-aware routing); any node also accepts any key and
//! forwards it, so a client without a layout still works. Consistency is chosen per request
//! ([`RequestOptions`]). Errors are typed ([`Error`]) and say whether a retry
//! is safe ([`Error::is_retryable`]) and whether a failed write may still
//! have been applied ([`Error::is_indeterminate`]).
//!
//! Failover: a request moves on to the next endpoint only when the node
//! could not be reached at all, so nothing was sent. A write that reached a
//! node and then failed is never resent by the library: the caller decides,
//! knowing from the error whether the write may have landed.
//!
//! The vocabulary shared with the server ([`Level`], [`ReplyMeta`],
//! [`NodeId`], the key check) comes from `ringkv-common`.
//!
//! Modules: [`Client`]'s failover is here; `nodes` keeps one connection
//! per node and orders a request's tries without allocating, `suspects`
//! probes the nodes that failed, `routing` learns the layout, `kv` holds
//! get/put/delete, `admin` the node and cluster operations, `types` the
//! request and reply types.

mod admin;
mod error;
mod kv;
mod nodes;
mod routing;
mod suspects;
mod types;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use admin::TokenRequest;
pub use error::{Error, Result};
pub use ringkv_common::{Level, NodeId, ReplyMeta};
pub use types::{Context, GetResult, LocalCopy, PutOptions, PutResult, RequestOptions, Sibling};

use nodes::{Node, Order, Registry};
use routing::Routing;

/// Default time allowed to open a connection to a node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Extra time the client waits beyond the request's own timeout, so the
/// server's DEADLINE_EXCEEDED (which names the replicas that answered)
/// arrives before the client gives up on its own.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Client-side deadline when the request sets no timeout (the server applies its own default).
const DEFAULT_CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// Largest message the client sends or accepts: the server's default value
/// limit is 1 MiB, and servers may be configured up to 64 MiB.
const MAX_MESSAGE_BYTES: usize = 65 * 1024 * 1024;

/// A connection to one node, with the client's credentials attached.
pub(crate) type Conn = InterceptedService<Channel, Credentials>;

/// How the client proves who it is and checks the nodes: TLS (a CA to
/// trust, optionally a client certificate) and a bearer token.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// PEM CA bundle the nodes' client-port certificates must chain to;
    /// set, every connection uses TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for nodes with `tls.client_ca`.
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
    /// The name the node's certificate must carry; defaults to the host of
    /// each endpoint.
    pub server_name: Option<String>,
    /// Bearer token for nodes with `auth.enabled`.
    pub token: Option<String>,
}

/// Adds the bearer token to every call.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to a ringkv cluster through one or more endpoints.
///
/// With routing on (the default), the client learns the layout from any
/// node and sends each request straight to a replica of its key, as
/// token-aware drivers do, so no request pays an extra forwarding hop. It
/// refreshes the layout when a reply names a newer layout version, after a
/// replica was unreachable, and every [`LAYOUT_REFRESH`].
pub struct Client {
    endpoints: Vec<String>,
    /// The endpoints' nodes, in the same order.
    seeds: Vec<Arc<Node>>,
    /// Every node the client knows, each with the connection it keeps
    /// (opened on first use, dropped after a transport failure).
    nodes: Registry,
    /// TLS for every connection, when configured.
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
    /// Round-robin start point for spreading requests over endpoints.
    next: AtomicUsize,
    connect_timeout: Duration,
    routing_enabled: bool,
    routing: std::sync::RwLock<Option<Arc<Routing>>>,
    /// When the layout was last fetched (or a fetch attempted).
    routing_fetched: Mutex<Option<std::time::Instant>>,
    /// A reply named a newer layout than the one held.
    routing_stale: std::sync::atomic::AtomicBool,
}

impl Client {
    /// A client for the given `host:port` endpoints. Connections open on
    /// first use, so this fails only on malformed endpoints.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Client> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.as_ref().trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "no endpoints given: pass host:port[,host:port...]".into(),
            ));
        }
        for e in &endpoints {
            Endpoint::from_shared(uri(e))
                .map_err(|err| Error::InvalidArgument(format!("bad endpoint {e:?}: {err}")))?;
        }
        let nodes = Registry::default();
        let seeds = endpoints.iter().map(|e| nodes.get(e)).collect();
        Ok(Client {
            seeds,
            nodes,
            tls: None,
            credentials: Credentials::default(),
            endpoints,
            next: AtomicUsize::new(0),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            routing_enabled: true,
            routing: std::sync::RwLock::new(None),
            routing_fetched: Mutex::new(None),
            routing_stale: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Turns partition-aware routing on or off. Off, every request goes to
    /// the endpoints in turn and the node forwards it to a replica.
    pub fn with_routing(mut self, enabled: bool) -> Self {
        self.routing_enabled = enabled;
        self
    }

    /// Uses TLS and a token as `security` says. Fails on a token that
    /// cannot travel in a header; certificates are checked when a
    /// connection opens.
    pub fn with_security(mut self, security: Security) -> Result<Self> {
        if let Some(token) = &security.token {
            let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
                Error::InvalidArgument("the token holds characters a header cannot carry".into())
            })?;
            self.credentials.authorization = Some(value);
        }
        if security.cert_pem.is_some() != security.key_pem.is_some() {
            return Err(Error::InvalidArgument(
                "a client certificate needs its key: pass both --cert and --key".into(),
            ));
        }
        if let Some(ca) = &security.ca_pem {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let (Some(cert), Some(key)) = (&security.cert_pem, &security.key_pem) {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &security.server_name {
                tls = tls.domain_name(name.clone());
            }
            self.tls = Some(tls);
        } else if security.cert_pem.is_some() {
            return Err(Error::InvalidArgument(
                "a client certificate is for TLS: pass --cacert too".into(),
            ));
        }
        Ok(self)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends a request to one target after another until one answers:
    /// the key's replicas first (with routing), then the endpoints. Moves
    /// on when nothing was applied: the node could not be reached or
    /// refused the request unprocessed (it is stopping), or it answered
    /// UNAVAILABLE (too few replicas reachable from it, which another node
    /// may not share); with `idempotent`, also after any retryable error.
    pub(crate) async fn with_failover<T, F, Fut>(
        &self,
        key: Option<&[u8]>,
        idempotent: bool,
        deadline: Duration,
        call: F,
    ) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last: Option<Error> = None;
        // What to report when every target failed: a node's own answer
        // (UNAVAILABLE: too few replicas reachable from it) says more than
        // failing to reach another node, which comes last when it is a
        // suspect.
        let answered = |e: &Error| !matches!(e, Error::Unreachable(_));
        let keep = |last: &mut Option<Error>, e: Error| {
            if answered(&e) || !last.as_ref().is_some_and(answered) {
                *last = Some(e);
            }
        };
        let route = self.route(key);
        for node in Order::new(route.nodes(&self.seeds)) {
            let address = &node.address;
            let ch = match self.conn(node).await {
                Ok(ch) => ch,
                Err(e) => {
                    self.routing_stale.store(true, Ordering::Relaxed);
                    keep(&mut last, e);
                    continue;
                }
            };
            let result = match tokio::time::timeout(deadline, call(ch)).await {
                Ok(r) => r.map_err(|s| self.failed(node, s, idempotent)),
                Err(_) => Err(Error::Timeout(format!(
                    "no answer from {address} within {deadline:?}; a write may have been applied"
                ))),
            };
            if matches!(&result, Err(e) if e.is_retryable()) {
                self.suspect(node);
            }
            match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(e @ Error::Unreachable(_)) => {
                    self.routing_stale.store(true, Ordering::Relaxed);
                    keep(&mut last, e)
                }
                Err(e @ Error::Unavailable(_)) => keep(&mut last, e),
                Err(e) if idempotent && e.is_retryable() => keep(&mut last, e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable("no endpoints".into())))
    }

    /// Makes `node` a suspect (see [`suspects`]), probed over its own
    /// connections so a probe never holds the request path's channel.
    fn suspect(&self, node: &Arc<Node>) {
        let endpoint = self.connect_to(&node.address);
        let credentials = self.credentials.clone();
        suspects::suspect(node, move || {
            let endpoint = endpoint.clone();
            let credentials = credentials.clone();
            async move {
                let ch = endpoint.ok()?.connect().await.ok()?;
                Some(InterceptedService::new(ch, credentials))
            }
        });
    }

    /// How to connect to `address`: its URI, the connect timeout and TLS.
    fn connect_to(&self, address: &str) -> Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(self.uri(address))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A connection to a node that vanished (partitioned away, moved
            // to a new address) is found dead within 10 s and replaced.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::InvalidArgument(format!("TLS settings: {e}")))?;
        }
        Ok(endpoint)
    }

    /// A connection to the node at `address`: the one it keeps, else a
    /// new one.
    pub(crate) async fn channel(&self, address: &str) -> Result<Conn> {
        self.conn(&self.nodes.get(address)).await
    }

    /// `node`'s kept connection, else a new one, kept for the requests
    /// that follow.
    async fn conn(&self, node: &Node) -> Result<Conn> {
        if let Some(conn) = node.conn() {
            return Ok(conn);
        }
        let address = &node.address;
        let ch = self.connect_to(address)?.connect().await.map_err(|e| {
            Error::Unreachable(format!(
                "cannot connect to {address}: {}; is ringkv-server running there{}?",
                error::root_cause(&e),
                if self.tls.is_some() {
                    ", and does its certificate chain to the CA given (--cacert)"
                } else {
                    " (a node serving TLS needs --cacert)"
                }
            ))
        })?;
        let conn = InterceptedService::new(ch, self.credentials.clone());
        node.keep(conn.clone());
        Ok(conn)
    }

    /// The URI of an endpoint: https when the client uses TLS.
    fn uri(&self, endpoint: &str) -> String {
        if endpoint.contains("://") || self.tls.is_none() {
            return uri(endpoint);
        }
        format!("https://{endpoint}")
    }

    /// Converts a status; a transport-level failure drops the kept
    /// connection so the next request reconnects.
    pub(crate) fn transport_failed(
        &self,
        address: &str,
        status: tonic::Status,
        idempotent: bool,
    ) -> Error {
        self.failed(&self.nodes.get(address), status, idempotent)
    }

    fn failed(&self, node: &Node, status: tonic::Status, idempotent: bool) -> Error {
        let err = Error::from_status(status, idempotent);
        if matches!(err, Error::Unreachable(_) | Error::Indeterminate(_)) {
            node.forget();
        }
        err
    }
}

fn uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

#[cfg(test)]
mod tests;
