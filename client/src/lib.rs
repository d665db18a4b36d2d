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

mod error;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

pub use error::{Error, Result};

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

/// How many replicas must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    One,
    Quorum,
    All,
    /// An explicit replica count, 1..=N.
    Count(u32),
}

impl FromStr for Level {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Level::One),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            other => match other.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Level::Count(n)),
                _ => Err(Error::InvalidArgument(format!(
                    "unknown consistency level {s:?}: use one, quorum, all or a replica count of at least 1"
                ))),
            },
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::One => f.write_str("one"),
            Level::Quorum => f.write_str("quorum"),
            Level::All => f.write_str("all"),
            Level::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Per-request consistency; `None` fields take the node's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestOptions {
    pub level: Option<Level>,
    /// `Some(false)`: only the key's own replicas count toward W (`--strict`).
    pub sloppy: Option<bool>,
    pub timeout: Option<Duration>,
}

impl RequestOptions {
    pub fn level(level: Level) -> Self {
        Self {
            level: Some(level),
            ..Self::default()
        }
    }

    fn to_proto(self) -> pb::Consistency {
        let required = self.level.map(|l| match l {
            Level::One => pb::consistency::Required::Level(pb::Level::One as i32),
            Level::Quorum => pb::consistency::Required::Level(pb::Level::Quorum as i32),
            Level::All => pb::consistency::Required::Level(pb::Level::All as i32),
            Level::Count(n) => pb::consistency::Required::Count(n),
        });
        pb::Consistency {
            required,
            sloppy: self.sloppy,
            timeout_ms: self
                .timeout
                .map(|t| t.as_millis().clamp(1, u32::MAX as u128) as u32),
        }
    }

    fn client_deadline(&self) -> Duration {
        self.timeout
            .map(|t| t + CLIENT_DEADLINE_MARGIN)
            .unwrap_or(DEFAULT_CLIENT_DEADLINE)
    }
}

/// Opaque causal context returned by reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(pub Bytes);

impl Context {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    pub value: Bytes,
    /// Hybrid logical clock timestamp (upper 48 bits: unix ms).
    pub timestamp: u64,
    pub expires_at_ms: Option<u64>,
}

/// Who took part in a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplyMeta {
    pub coordinator: String,
    pub replicas: Vec<String>,
    /// (fallback, replica it stood in for)
    pub fallbacks: Vec<(String, String)>,
    pub read_repaired: u32,
    pub replication: u32,
    pub replication_capped: bool,
    pub required: u32,
    /// Layout version the coordinator routed with.
    pub layout_version: u64,
}

impl From<Option<pb::ReplyMeta>> for ReplyMeta {
    fn from(m: Option<pb::ReplyMeta>) -> Self {
        let m = m.unwrap_or_default();
        ReplyMeta {
            coordinator: m.coordinator,
            replicas: m.replicas,
            fallbacks: m
                .fallbacks
                .into_iter()
                .map(|f| (f.node, f.stands_in_for))
                .collect(),
            read_repaired: m.read_repaired,
            replication: m.replication,
            replication_capped: m.replication_capped,
            required: m.required,
            layout_version: m.layout_version,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GetResult {
    /// Live values, oldest first; empty when the key is absent or deleted.
    pub siblings: Vec<Sibling>,
    pub context: Context,
    pub meta: ReplyMeta,
}

impl GetResult {
    pub fn found(&self) -> bool {
        !self.siblings.is_empty()
    }

    /// The single value, when there is exactly one.
    pub fn value(&self) -> Option<&Bytes> {
        match self.siblings.as_slice() {
            [one] => Some(&one.value),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PutResult {
    pub context: Context,
    pub meta: ReplyMeta,
}

/// Options of a put besides consistency.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub consistency: RequestOptions,
    /// Context from an earlier get; `None` is a blind overwrite.
    pub context: Option<Context>,
    pub ttl: Option<Duration>,
}

/// One node's stored copy of a key (Admin.LocalGet).
#[derive(Clone, Debug)]
pub struct LocalCopy {
    pub found: bool,
    pub partition: u32,
    pub versions: Vec<pb::LocalVersion>,
    pub context: Context,
}

/// How keys map to replicas, learned from a node (Admin.Layout).
#[derive(Debug)]
struct Routing {
    version: u64,
    partitions: u32,
    hash_seed: u64,
    /// Per partition, the replicas' addresses in preference order.
    replicas: Vec<Vec<String>>,
}

impl Routing {
    fn partition_of(&self, key: &[u8]) -> u32 {
        let bits = self.partitions.trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (twox_hash::XxHash3_64::oneshot_with_seed(self.hash_seed, key) >> (64 - bits)) as u32
    }
}

/// How long a client keeps using a layout before it asks again, even when
/// no reply said it changed.
const LAYOUT_REFRESH: Duration = Duration::from_secs(30);

/// A connection to a ringkv cluster through one or more endpoints.
///
/// With routing on (the default), the client learns the layout from any
/// node and sends each request straight to a replica of its key, as
/// token-aware drivers do, so no request pays an extra forwarding hop. It
/// refreshes the layout when a reply names a newer layout version, after a
/// replica was unreachable, and every [`LAYOUT_REFRESH`].
pub struct Client {
    endpoints: Vec<String>,
    /// Lazily opened channels by address; dropped after a transport
    /// failure so the next request reconnects.
    channels: Mutex<std::collections::HashMap<String, Channel>>,
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
        Ok(Client {
            channels: Mutex::new(std::collections::HashMap::new()),
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

    /// The layout version the client routes with (0: none yet).
    pub fn layout_version(&self) -> u64 {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.version)
            .unwrap_or(0)
    }

    /// Fetches the layout from the first endpoint that answers.
    pub async fn refresh_layout(&self) -> Result<()> {
        *self
            .routing_fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let resp = self
            .with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| async move {
                AdminClient::new(ch).layout(pb::LayoutRequest {}).await
            })
            .await?;
        if resp.version == 0 || resp.partitions == 0 || !resp.partitions.is_power_of_two() {
            return Ok(());
        }
        let address: std::collections::HashMap<&str, &str> = resp
            .members
            .iter()
            .map(|m| (m.node_id.as_str(), m.address.as_str()))
            .collect();
        let mut replicas = vec![Vec::new(); resp.partitions as usize];
        // While a change is transferred, the previous layout's replicas
        // coordinate (they hold everything); route there.
        let assignments = if resp.previous_assignments.is_empty() {
            &resp.assignments
        } else {
            &resp.previous_assignments
        };
        for a in assignments {
            if let Some(slot) = replicas.get_mut(a.partition as usize) {
                *slot = a
                    .replicas
                    .iter()
                    .filter_map(|id| address.get(id.as_str()).map(|s| s.to_string()))
                    .collect();
            }
        }
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Routing {
            version: resp.version,
            partitions: resp.partitions,
            hash_seed: resp.hash_seed,
            replicas,
        }));
        self.routing_stale.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Refreshes the layout when it is missing, stale or old; failures
    /// only mean requests go through the endpoints.
    async fn ensure_routing(&self) {
        if !self.routing_enabled {
            return;
        }
        let due = match *self
            .routing_fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            None => true,
            Some(at) => {
                at.elapsed() > LAYOUT_REFRESH
                    || (self.routing_stale.load(Ordering::Relaxed)
                        && at.elapsed() > Duration::from_millis(200))
            }
        };
        if due {
            let _ = self.refresh_layout().await;
        }
    }

    /// Notes the layout version a reply was routed with.
    fn saw_layout(&self, meta: &ReplyMeta) {
        if meta.layout_version > self.layout_version() {
            self.routing_stale.store(true, Ordering::Relaxed);
        }
    }

    /// Addresses to try for a key: its replicas first (when routing knows
    /// them), then the configured endpoints from a rotating start.
    fn targets(&self, key: Option<&[u8]>) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(key), true) = (key, self.routing_enabled) {
            if let Some(r) = self
                .routing
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                if let Some(replicas) = r.replicas.get(r.partition_of(key) as usize) {
                    out.extend(replicas.iter().cloned());
                }
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.endpoints.len() {
            let e = &self.endpoints[(start + i) % self.endpoints.len()];
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        out
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        opts: RequestOptions,
        lww: bool,
    ) -> Result<GetResult> {
        let req = pb::GetRequest {
            key: key.into(),
            consistency: Some(opts.to_proto()),
            resolve: if lww {
                pb::Resolve::Lww
            } else {
                pb::Resolve::AllSiblings
            } as i32,
        };
        self.ensure_routing().await;
        let key_bytes = req.key.clone();
        // Reads are idempotent: any failure that says "retry" may go to the next node.
        self.with_failover(Some(&key_bytes), true, opts.client_deadline(), |ch| {
            let req = req.clone();
            async move {
                KvClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .get(req)
                    .await
            }
        })
        .await
        .map(|r| {
            let meta: ReplyMeta = r.meta.into();
            self.saw_layout(&meta);
            GetResult {
                siblings: r
                    .siblings
                    .into_iter()
                    .map(|s| Sibling {
                        value: s.value,
                        timestamp: s.timestamp,
                        expires_at_ms: s.expires_at_ms,
                    })
                    .collect(),
                context: Context(r.context),
                meta,
            }
        })
    }

    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let req = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            context: opts.context.map(|c| c.0).unwrap_or_default(),
            consistency: Some(opts.consistency.to_proto()),
            ttl_ms: opts.ttl.map(|t| t.as_millis().max(1) as u64),
        };
        self.ensure_routing().await;
        let key_bytes = req.key.clone();
        self.with_failover(
            Some(&key_bytes),
            false,
            opts.consistency.client_deadline(),
            |ch| {
                let req = req.clone();
                async move {
                    KvClient::new(ch)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES)
                        .put(req)
                        .await
                }
            },
        )
        .await
        .map(|r| {
            let meta: ReplyMeta = r.meta.into();
            self.saw_layout(&meta);
            PutResult {
                context: Context(r.context),
                meta,
            }
        })
    }

    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        context: Option<Context>,
        opts: RequestOptions,
    ) -> Result<ReplyMeta> {
        let req = pb::DeleteRequest {
            key: key.into(),
            context: context.map(|c| c.0).unwrap_or_default(),
            consistency: Some(opts.to_proto()),
        };
        self.ensure_routing().await;
        let key_bytes = req.key.clone();
        self.with_failover(Some(&key_bytes), false, opts.client_deadline(), |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).delete(req).await }
        })
        .await
        .map(|r| {
            let meta: ReplyMeta = r.meta.into();
            self.saw_layout(&meta);
            meta
        })
    }

    /// The stored copy of a key on the node at `endpoint` (an index into
    /// the endpoints), without coordination.
    pub async fn local_get(&self, endpoint: usize, key: impl Into<Bytes>) -> Result<LocalCopy> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        let r = AdminClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .local_get(pb::LocalGetRequest { key: key.into() })
            .await
            .map_err(|s| self.transport_failed(&address, s, true))?
            .into_inner();
        Ok(LocalCopy {
            found: r.found,
            partition: r.partition,
            versions: r.versions,
            context: Context(r.context),
        })
    }

    /// Status of the node at `endpoint`.
    pub async fn node_status(&self, endpoint: usize) -> Result<pb::NodeStatusResponse> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .node_status(pb::NodeStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// The layout as the first reachable node holds it.
    pub async fn layout(&self) -> Result<pb::LayoutResponse> {
        self.with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| async move {
            AdminClient::new(ch).layout(pb::LayoutRequest {}).await
        })
        .await
    }

    /// Test fault switch on the node at `endpoint`: it stops sending
    /// internal traffic to `block_outgoing` and refuses it from
    /// `block_incoming` (node ids). Refused unless the node runs with
    /// `debug.fault_injection = true`.
    pub async fn set_faults(
        &self,
        endpoint: usize,
        block_outgoing: Vec<String>,
        block_incoming: Vec<String>,
    ) -> Result<()> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .set_faults(pb::SetFaultsRequest {
                block_outgoing,
                block_incoming,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// Background workers of the node at `endpoint`.
    pub async fn workers(&self, endpoint: usize) -> Result<Vec<pb::WorkerStatus>> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .workers(pb::WorkersRequest {})
            .await
            .map(|r| r.into_inner().workers)
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// Hints held by the node at `endpoint`, per target.
    pub async fn hints(&self, endpoint: usize) -> Result<Vec<pb::HintQueue>> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .hints(pb::HintsRequest {})
            .await
            .map(|r| r.into_inner().queues)
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// Merkle roots of the partitions the node at `endpoint` holds.
    pub async fn merkle_roots(&self, endpoint: usize) -> Result<Vec<pb::PartitionRoot>> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .merkle_roots(pb::MerkleRootsRequest {})
            .await
            .map(|r| r.into_inner().roots)
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// Runs anti-entropy now on the node at `endpoint` (all its partitions,
    /// or one) and returns what it repaired.
    pub async fn repair(
        &self,
        endpoint: usize,
        partition: Option<u32>,
    ) -> Result<pb::StartRepairResponse> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        let mut req = tonic::Request::new(pb::StartRepairRequest { partition });
        req.set_timeout(Duration::from_secs(600));
        AdminClient::new(ch)
            .start_repair(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    fn endpoint(&self, idx: usize) -> Result<String> {
        self.endpoints.get(idx).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "endpoint {idx} out of range: the client has {}",
                self.endpoints.len()
            ))
        })
    }

    /// Makes the fresh node at `endpoint` join the cluster of `seed`.
    pub async fn join(&self, endpoint: usize, seed: &str) -> Result<String> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .join(pb::JoinRequest {
                seed: seed.to_string(),
            })
            .await
            .map(|r| r.into_inner().message)
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// Stages the departure of `node` (id or name), or of the node at the
    /// first reachable endpoint when `None`.
    pub async fn leave(&self, node: Option<&str>) -> Result<String> {
        let node = node.unwrap_or("").to_string();
        self.with_failover(None, false, DEFAULT_CLIENT_DEADLINE, |ch| {
            let node = node.clone();
            async move { AdminClient::new(ch).leave(pb::LeaveRequest { node }).await }
        })
        .await
        .map(|r| r.message)
    }

    /// Stages the removal of the dead node `node` (id or name).
    pub async fn remove(&self, node: &str) -> Result<String> {
        let node = node.to_string();
        self.with_failover(None, false, DEFAULT_CLIENT_DEADLINE, |ch| {
            let node = node.clone();
            async move {
                AdminClient::new(ch)
                    .remove(pb::RemoveRequest { node })
                    .await
            }
        })
        .await
        .map(|r| r.message)
    }

    /// What committing the staged changes would do.
    pub async fn plan(&self) -> Result<pb::PlanResponse> {
        self.with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| async move {
            AdminClient::new(ch).plan(pb::PlanRequest {}).await
        })
        .await
    }

    /// Publishes the staged changes, planned against layout
    /// `expected_version`.
    pub async fn commit(&self, expected_version: u64) -> Result<pb::CommitResponse> {
        self.with_failover(None, false, DEFAULT_CLIENT_DEADLINE, |ch| async move {
            AdminClient::new(ch)
                .commit(pb::CommitRequest { expected_version })
                .await
        })
        .await
    }

    /// The partition transfers the node at `endpoint` receives.
    pub async fn transfers(&self, endpoint: usize) -> Result<pb::TransfersResponse> {
        self.transfers_at(&self.endpoint(endpoint)?).await
    }

    /// The partition transfers the node at `address` (any node, not only a
    /// configured endpoint) receives.
    pub async fn transfers_at(&self, address: &str) -> Result<pb::TransfersResponse> {
        let ch = self.channel(address).await?;
        AdminClient::new(ch)
            .transfers(pb::TransfersRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.transport_failed(address, s, true))
    }

    /// Members as seen by the first reachable node.
    pub async fn members(&self) -> Result<Vec<pb::Member>> {
        self.with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| async move {
            AdminClient::new(ch).members(pb::MembersRequest {}).await
        })
        .await
        .map(|r| r.members)
    }

    /// Sends a request to one target after another until one answers:
    /// the key's replicas first (with routing), then the endpoints. Moves
    /// on when a node cannot be reached, so nothing was sent; with
    /// `idempotent`, also after any retryable error.
    async fn with_failover<T, F, Fut>(
        &self,
        key: Option<&[u8]>,
        idempotent: bool,
        deadline: Duration,
        call: F,
    ) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for address in self.targets(key) {
            let ch = match self.channel(&address).await {
                Ok(ch) => ch,
                Err(e) => {
                    self.routing_stale.store(true, Ordering::Relaxed);
                    last = Some(e);
                    continue;
                }
            };
            let result = match tokio::time::timeout(deadline, call(ch)).await {
                Ok(r) => r.map_err(|s| self.transport_failed(&address, s, idempotent)),
                Err(_) => Err(Error::Timeout(format!(
                    "no answer from {address} within {deadline:?}; a write may have been applied"
                ))),
            };
            match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(e @ Error::Unreachable(_)) => {
                    self.routing_stale.store(true, Ordering::Relaxed);
                    last = Some(e)
                }
                Err(e) if idempotent && e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable("no endpoints".into())))
    }

    async fn channel(&self, address: &str) -> Result<Channel> {
        if let Some(ch) = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
        {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(uri(address))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let ch = endpoint.connect().await.map_err(|e| {
            Error::Unreachable(format!(
                "cannot connect to {address}: {}; is ringkv-server running there?",
                error::root_cause(&e)
            ))
        })?;
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_string(), ch.clone());
        Ok(ch)
    }

    /// Converts a status; a transport-level failure drops the cached channel
    /// so the next request reconnects.
    fn transport_failed(&self, address: &str, status: tonic::Status, idempotent: bool) -> Error {
        let err = Error::from_status(status, idempotent);
        if matches!(err, Error::Unreachable(_) | Error::Indeterminate(_)) {
            self.channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(address);
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
