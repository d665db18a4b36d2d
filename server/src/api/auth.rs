//! Who may call what: one tower layer ([`AuthLayer`]) with a gatekeeper
//! per port, bearer tokens on the client port ([`ClientAuth`]) and
//! certificate names on the peer port ([`PeerAuth`]). Each decides before
//! any handler runs, so no handler repeats it; the one check a layer cannot make, a token's key
//! prefix, is made by the KV handler from the [`Principal`] the layer
//! leaves in the request's extensions.
//!
//! Client port, always: the Internal service is refused with
//! PERMISSION_DENIED (it is served to nodes on the peer port only). With
//! `auth.enabled`: KV.Get needs the read scope, KV.Put and KV.Delete the
//! write scope, every Admin call the admin scope; a missing, malformed,
//! unknown, revoked or expired token is UNAUTHENTICATED, a valid token
//! without the scope PERMISSION_DENIED. Health checks and reflection need
//! no token, so probes and generic tools work.
//!
//! Peer port, with mutual TLS: the TLS handshake already proved the caller
//! holds a certificate of the cluster CA. Every call must name its sender
//! (`x-ringkv-from`), and is refused with PERMISSION_DENIED unless that
//! sender is a member whose name is among the certificate's DNS names, so
//! the header is never trusted on its own. A sender this node does not
//! know yet (a node joining) may only gossip and fetch the layout; its
//! gossip must carry its own entry under a name the certificate carries
//! (checked by the gossip handler). Of Admin, the peer port serves only
//! the calls nodes forward to each other (leave, remove, plan, commit).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;
use tower_service::Service;

use super::status;
use crate::tls::dns_names;
use crate::transport::FROM_HEADER;
use ringkv_core::auth::{Principal, Scope};
use ringkv_core::error::Error;
use ringkv_core::version::NodeId;
use ringkv_node::auth::Tokens;
use ringkv_node::membership::Cluster;

const INTERNAL_PREFIX: &str = "/ringkv.v1.Internal/";

/// What a sender this node does not know yet may call on the peer port:
/// how a node joins.
const FOR_STRANGERS: &[&str] = &[
    "/ringkv.v1.Internal/Gossip",
    "/ringkv.v1.Internal/GetLayout",
    "/grpc.health.v1.Health/Check",
];

/// The Admin calls nodes forward to each other (`api::cluster`): the only
/// Admin the peer port serves under mutual TLS.
const FORWARDED_ADMIN: &[&str] = &[
    "/ringkv.v1.Admin/Leave",
    "/ringkv.v1.Admin/Remove",
    "/ringkv.v1.Admin/Plan",
    "/ringkv.v1.Admin/Commit",
];

/// Distinct peer certificates whose names are remembered; past this the
/// cache starts over (a cluster has as many certificates as nodes, times
/// the rotations in flight).
const MAX_CACHED_CERTIFICATES: usize = 1024;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The scope a client-port call needs; `None`: none (health, reflection).
fn scope_of(path: &str) -> Option<Scope> {
    match path {
        "/ringkv.v1.KV/Get" => Some(Scope::Read),
        "/ringkv.v1.KV/Put" | "/ringkv.v1.KV/Delete" => Some(Scope::Write),
        p if p.starts_with("/ringkv.v1.Admin/") => Some(Scope::Admin),
        // Any other KV path is unknown: the router answers UNIMPLEMENTED,
        // but not to a caller without a token.
        p if p.starts_with("/ringkv.v1.KV/") => Some(Scope::Read),
        _ => None,
    }
}

/// The bearer token of a call, if it carries one.
fn bearer<B>(request: &http::Request<B>) -> Result<Option<&str>, Error> {
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("the authorization header is not text".into()))?;
    let (kind, token) = value.split_once(' ').unwrap_or((value, ""));
    if !kind.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthenticated(
            "the authorization header must read `Bearer <token>`".into(),
        ));
    }
    Ok(Some(token.trim()))
}

/// Checks a client-port call; the principal to pass on, if any.
fn check_client<B>(
    tokens: &Tokens,
    request: &http::Request<B>,
) -> Result<Option<Principal>, Error> {
    let path = request.uri().path();
    if path.starts_with(INTERNAL_PREFIX) {
        return Err(Error::PermissionDenied(
            "the Internal service is served to nodes on the peer port only".into(),
        ));
    }
    let Some(scope) = scope_of(path).filter(|_| tokens.enabled()) else {
        return Ok(None);
    };
    let token = bearer(request)?.ok_or_else(|| {
        Error::Unauthenticated(
            "this node requires a token: pass --token or set RINGKV_TOKEN (header `authorization: Bearer <token>`)"
                .into(),
        )
    })?;
    let principal = tokens.authenticate(token)?;
    principal.require(scope, path.rsplit('/').next().unwrap_or(path))?;
    Ok(Some(principal))
}

/// A check a listener runs on every call before any handler: it refuses
/// the call, or passes it on with what it learned (the caller's identity),
/// which handlers find in the request's extensions.
pub trait Gatekeeper: Clone + Send + Sync + 'static {
    type Pass: Clone + Send + Sync + 'static;

    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<Self::Pass>, Error>;
}

/// Bearer tokens on the client port (module doc).
#[derive(Clone)]
pub struct ClientAuth {
    tokens: Arc<Tokens>,
}

impl ClientAuth {
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self { tokens }
    }
}

impl Gatekeeper for ClientAuth {
    type Pass = Principal;

    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<Principal>, Error> {
        check_client(&self.tokens, request)
    }
}

/// Wraps a listener's services with a [`Gatekeeper`].
#[derive(Clone)]
pub struct AuthLayer<G> {
    gate: G,
}

impl<G> AuthLayer<G> {
    pub fn new(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, G: Clone> Layer<S> for AuthLayer<G> {
    type Service = Authed<S, G>;

    fn layer(&self, inner: S) -> Authed<S, G> {
        Authed {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// A service behind a [`Gatekeeper`].
#[derive(Clone)]
pub struct Authed<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B, R> Service<http::Request<B>> for Authed<S, G>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gatekeeper,
    R: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service polled ready takes the call (as in `layer.rs`).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match self.gate.check(&request) {
            Ok(pass) => {
                if let Some(pass) = pass {
                    request.extensions_mut().insert(pass);
                }
                Box::pin(inner.call(request))
            }
            Err(refused) => {
                let refused = status(refused);
                Box::pin(async move { Ok(refused.into_http()) })
            }
        }
    }
}

/// The DNS names of the certificate a peer-port call came with, for the
/// gossip handler's check.
#[derive(Clone, Debug)]
pub struct PeerNames(pub Arc<[String]>);

impl PeerNames {
    /// Refuses a caller claiming to be a node the certificate does not
    /// name.
    pub fn check(&self, claimed: &str) -> Result<(), Error> {
        if self.0.iter().any(|n| n.eq_ignore_ascii_case(claimed)) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "the peer certificate names {:?}, but the caller claims to be node {claimed:?}",
            self.0
        )))
    }
}

/// Certificate names by certificate, so a connection's many calls parse
/// its certificate once.
#[derive(Default)]
struct NameCache(Mutex<HashMap<Vec<u8>, Arc<[String]>>>);

impl NameCache {
    fn names(&self, der: &[u8]) -> Result<Arc<[String]>, Error> {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(names) = cache.get(der) {
            return Ok(names.clone());
        }
        let names: Arc<[String]> = dns_names(&der.into())
            .map_err(|e| Error::PermissionDenied(format!("peer certificate: {e}")))?
            .into();
        if cache.len() >= MAX_CACHED_CERTIFICATES {
            cache.clear();
        }
        cache.insert(der.to_vec(), names.clone());
        Ok(names)
    }
}

/// Certificate names on the peer port (module doc); passes every call
/// through when the peer port runs no TLS.
#[derive(Clone)]
pub struct PeerAuth {
    cluster: Arc<Cluster>,
    cache: Arc<NameCache>,
    mutual_tls: bool,
}

impl PeerAuth {
    pub fn new(cluster: Arc<Cluster>, mutual_tls: bool) -> Self {
        Self {
            cluster,
            cache: Arc::new(NameCache::default()),
            mutual_tls,
        }
    }
}

impl Gatekeeper for PeerAuth {
    type Pass = PeerNames;

    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<PeerNames>, Error> {
        if !self.mutual_tls {
            return Ok(None);
        }
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let leaf = certs.as_ref().and_then(|c| c.first());
        let from = request
            .headers()
            .get(FROM_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<NodeId>().ok());
        self.check_caller(leaf.map(|c| c.as_ref()), from, request.uri().path())
    }
}

impl PeerAuth {
    /// Whether a caller on the peer port may make the call at `path`:
    /// `leaf` is the certificate (DER) it presented, `from` the sender it
    /// claims. Shared by gRPC calls and the replica stream's hello.
    pub fn check_caller(
        &self,
        leaf: Option<&[u8]>,
        from: Option<NodeId>,
        path: &str,
    ) -> Result<Option<PeerNames>, Error> {
        if !self.mutual_tls {
            return Ok(None);
        }
        let leaf = leaf.ok_or_else(|| {
            Error::Unauthenticated("the peer port needs a peer certificate".into())
        })?;
        let names = PeerNames(self.cache.names(leaf)?);
        if path.starts_with("/ringkv.v1.Admin/") && !FORWARDED_ADMIN.contains(&path) {
            return Err(Error::PermissionDenied(
                "of Admin, the peer port serves only what nodes forward; call the client port"
                    .into(),
            ));
        }
        let from = from.ok_or_else(|| {
            Error::PermissionDenied(format!(
                "calls on the peer port must name their sender ({FROM_HEADER})"
            ))
        })?;
        match self.cluster.name_of(from) {
            Some(name) => names.check(&name)?,
            None if FOR_STRANGERS.contains(&path) => {}
            None => {
                return Err(Error::PermissionDenied(format!(
                    "{from} is not a member this node knows; a joining node may only gossip and fetch the layout"
                )))
            }
        }
        Ok(Some(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_storage::MemoryEngine;
    use tonic::Code;

    fn call(path: &str, token: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(format!("http://n{path}"));
        if let Some(t) = token {
            b = b.header("authorization", t);
        }
        b.body(()).unwrap()
    }

    fn code(e: Error) -> Code {
        status(e).code()
    }

    #[tokio::test]
    async fn the_client_port_refuses_what_each_token_does_not_allow() {
        let tokens = Tokens::open(Arc::new(MemoryEngine::new()), true).unwrap();
        let spec = |scopes: &[Scope]| ringkv_core::auth::TokenSpec {
            name: "t".into(),
            scopes: ringkv_core::auth::Scopes::of(scopes),
            prefix: None,
            ttl_ms: None,
        };
        let (reader, _) = tokens.create(&spec(&[Scope::Read])).await.unwrap();
        let (writer, _) = tokens.create(&spec(&[Scope::Write])).await.unwrap();
        let bearer = |t: &str| format!("Bearer {t}");
        let check = |path: &str, token: Option<String>| {
            check_client(&tokens, &call(path, token.as_deref()))
        };

        assert!(check("/ringkv.v1.KV/Get", Some(bearer(&reader)))
            .unwrap()
            .is_some());
        assert!(check("/ringkv.v1.KV/Put", Some(bearer(&writer))).is_ok());
        assert!(check("/grpc.health.v1.Health/Check", None)
            .unwrap()
            .is_none());
        let refusals = [
            ("/ringkv.v1.KV/Get", None, Code::Unauthenticated),
            (
                "/ringkv.v1.KV/Get",
                Some("Basic abc".to_string()),
                Code::Unauthenticated,
            ),
            (
                "/ringkv.v1.KV/Get",
                Some("Bearer rkv_nonsense".to_string()),
                Code::Unauthenticated,
            ),
            (
                "/ringkv.v1.KV/Put",
                Some(bearer(&reader)),
                Code::PermissionDenied,
            ),
            (
                "/ringkv.v1.Admin/Members",
                Some(bearer(&writer)),
                Code::PermissionDenied,
            ),
            (
                "/ringkv.v1.Internal/Replicate",
                Some(bearer(&writer)),
                Code::PermissionDenied,
            ),
        ];
        for (path, token, expected) in refusals {
            let e = check(path, token.clone()).unwrap_err();
            assert_eq!(code(e), expected, "{path} with {token:?}");
        }
    }

    #[test]
    fn without_auth_only_internal_is_refused_on_the_client_port() {
        let tokens = Tokens::open(Arc::new(MemoryEngine::new()), false).unwrap();
        assert!(check_client(&tokens, &call("/ringkv.v1.KV/Put", None)).is_ok());
        assert!(check_client(&tokens, &call("/ringkv.v1.Admin/Members", None)).is_ok());
        let e = check_client(&tokens, &call("/ringkv.v1.Internal/Gossip", None)).unwrap_err();
        assert_eq!(code(e), Code::PermissionDenied);
    }

    #[test]
    fn peer_names_must_include_the_claimed_member() {
        let names = PeerNames(vec!["n1".to_string(), "host-a".to_string()].into());
        assert!(names.check("N1").is_ok());
        assert_eq!(code(names.check("n2").unwrap_err()), Code::PermissionDenied);
    }
}
