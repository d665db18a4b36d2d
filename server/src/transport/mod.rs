//! The network implementation of the peer [`Network`]: replica operations
//! coalesced on one replica stream per peer ([`frames`], ringkv's own
//! framing, [`wire`]; [`grpc_batch`] for a peer of the previous version),
//! everything else as unary gRPC calls on one cached channel per peer, and
//! the headers that carry each call's [`Envelope`].
//!
//! Every internal call carries the sender's node id in the [`FROM_HEADER`]
//! metadata entry, the recipient's in [`TO_HEADER`], and the sender's
//! cluster id in [`CLUSTER_HEADER`]; answers and refusals carry the
//! answering node's cluster id. Failed calls become [`PeerError`]s here,
//! so no gRPC status travels further into the node.

pub mod convert;
pub(crate) mod dial;
pub mod frames;
mod grpc_batch;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_proto::v1::kv_client::KvClient;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use ringkv_core::error::{self, Error, Result};
use ringkv_core::ring::ClusterId;
use ringkv_core::version::NodeId;
use ringkv_peer::{
    AddressBook, BoxFuture, ClusterIdentity, Envelope, Failure, Faults, Network, Peer, PeerError,
    Response, TOO_LARGE,
};

use crate::tls::Tls;
use frames::Link;
use grpc_batch::Batcher;

/// Metadata key carrying the sending node's id on internal calls.
pub const FROM_HEADER: &str = "x-ringkv-from";

/// Metadata key naming the node an internal call is meant for.
pub const TO_HEADER: &str = "x-ringkv-to";

/// Metadata key carrying the sender's cluster id (32 hex digits) on
/// internal calls, gossip answers and refusals.
pub const CLUSTER_HEADER: &str = "x-ringkv-cluster";

/// Metadata key marking a KV request already forwarded once by a node.
pub const FORWARDED_HEADER: &str = "x-ringkv-forwarded";

/// Time allowed to open a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 pings on every peer connection, idle or not, and how long an
/// answer may take: a connection whose other end vanished without a word
/// (a network partition, a container moved to a new address, a frozen
/// host) is found dead and replaced within both, instead of swallowing
/// every request until TCP gives up a quarter of an hour later.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How tonic's message starts for a call that failed on its own HTTP/2
/// stream (a stream reset by either side, a body that failed to encode) or
/// on the connection. tonic keeps no typed source for the stream-level
/// cases, so the message and the code are all there is to tell them apart.
const H2_FAILURE: &str = "h2 protocol error";

/// Channels to peers by node id, and the peers' replica streams.
pub struct Transport {
    me: NodeId,
    addresses: Arc<AddressBook>,
    /// node id → (address, channel). Replaced when a peer's address changes.
    channels: Mutex<HashMap<NodeId, (String, Channel)>>,
    /// node id → (address, cluster id its hello carries, link) for
    /// replica operations; replaced when a peer's address changes, and
    /// once this node learns its cluster id (a link's hello is fixed when
    /// it starts).
    links: Mutex<HashMap<NodeId, LinkEntry>>,
    /// This node's cluster id, for the requests it forwards.
    identity: Arc<ClusterIdentity>,
    /// The test fault switch, for the requests it forwards.
    faults: Arc<Faults>,
    max_message_bytes: usize,
    /// Mutual TLS to peers, when the peer port runs it.
    tls: Option<Arc<Tls>>,
}

/// A peer's replica stream with what it was started for.
type LinkEntry = (String, Option<ClusterId>, Arc<Link>);

impl Transport {
    pub fn new(
        me: NodeId,
        addresses: Arc<AddressBook>,
        identity: Arc<ClusterIdentity>,
        faults: Arc<Faults>,
        max_message_bytes: usize,
        tls: Option<Arc<Tls>>,
    ) -> Self {
        Self {
            me,
            addresses,
            channels: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            identity,
            faults,
            max_message_bytes,
            tls: tls.filter(|t| t.peer_port()),
        }
    }

    fn address_of(&self, node: NodeId) -> Result<String, PeerError> {
        self.addresses.get(node).ok_or_else(|| {
            PeerError::new(
                Failure::NotSent,
                format!("the address of {node} is unknown"),
            )
        })
    }

    fn channel_for(&self, node: NodeId, address: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, ch)) = channels.get(&node) {
            if addr == address {
                return Ok(ch.clone());
            }
        }
        let ch = self.lazy_channel(address)?;
        channels.insert(node, (address.to_string(), ch.clone()));
        Ok(ch)
    }

    /// An Internal client for `to`, a member or a seed.
    fn internal(&self, to: &Peer) -> Result<InternalClient<Channel>, PeerError> {
        let channel = match to {
            Peer::Node(node) => {
                let address = self.address_of(*node)?;
                self.channel_for(*node, &address)
            }
            Peer::Seed(address) => self.lazy_channel(address),
        }
        .map_err(|e| PeerError::new(Failure::NotSent, e.to_string()))?;
        Ok(InternalClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// The peer's replica stream, started on first use.
    fn link(&self, node: NodeId, envelope: &Envelope) -> Result<Arc<Link>, PeerError> {
        let address = self.address_of(node)?;
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, stamped, link)) = links.get(&node) {
            if *addr == address && *stamped == envelope.cluster {
                return Ok(link.clone());
            }
        }
        let show = |id: Option<NodeId>| id.map(|id| id.to_string()).unwrap_or_default();
        let settings = frames::Settings {
            hello: pb::FrameHello {
                from: show(envelope.from),
                to: show(envelope.to),
                cluster: envelope.cluster.map(|c| c.to_string()).unwrap_or_default(),
            },
            // Half the message limit leaves room for the items' framing.
            max_batch_bytes: self.max_message_bytes / 2,
            max_item_bytes: self
                .max_message_bytes
                .saturating_sub(ringkv_node::config::MESSAGE_OVERHEAD_BYTES),
            max_frame: self.max_message_bytes + frames::FRAME_OVERHEAD_BYTES,
            ping_interval: KEEPALIVE_INTERVAL,
            ping_timeout: KEEPALIVE_TIMEOUT,
        };
        let dialler = frames::Dialler {
            address: address.clone(),
            tls: self.tls.clone(),
        };
        // For a peer of the previous version: the gRPC batch stream, on a
        // connection of its own (never shared with gossip, forwards and
        // the other unary calls), opened only if it is used.
        let channel = self
            .lazy_channel(&address)
            .map_err(|e| PeerError::new(Failure::NotSent, e.to_string()))?;
        let client = InternalClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let fallback = Batcher::start(
            client,
            headers(envelope),
            settings.max_batch_bytes,
            settings.max_item_bytes,
        );
        let link = Arc::new(Link::start(dialler, settings, Some(Arc::new(fallback))));
        links.insert(node, (address, envelope.cluster, link.clone()));
        Ok(link)
    }

    async fn send(
        &self,
        to: Peer,
        envelope: Envelope,
        request: ringkv_peer::Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        use ringkv_peer::Request as R;
        let bytes = request.payload_bytes();
        if let (Peer::Node(node), Some(item)) = (&to, batch_item(&request, self.me)) {
            let result = self
                .link(*node, &envelope)?
                .call(item, bytes, timeout)
                .await?;
            return Ok(match request {
                R::Read { .. } if result.found => Response::Read(Some(result.version_set)),
                R::Read { .. } => Response::Read(None),
                _ => Response::Done,
            });
        }
        let mut client = self.internal(&to)?;
        let headers = headers(&envelope);
        let answer = match request {
            R::Replicate { .. } | R::StoreHint { .. } | R::Read { .. } => {
                return Err(PeerError::new(
                    Failure::NotSent,
                    "replica operations go to members, not seeds",
                ))
            }
            R::Gossip(gossip) => {
                let response = client
                    .gossip(with_headers(
                        convert::gossip_to_proto(gossip),
                        &headers,
                        timeout,
                    ))
                    .await
                    .map_err(peer_error)?;
                let cluster = cluster_of(response.metadata()).map_err(|s| {
                    PeerError::new(Failure::Refused(error::Code::InvalidArgument), s.message())
                })?;
                let mut answer = convert::answer_from_proto(response.into_inner());
                answer.cluster = cluster;
                Response::Gossip(answer)
            }
            R::GetLayout => {
                let layout = client
                    .get_layout(with_headers(pb::GetLayoutRequest {}, &headers, timeout))
                    .await
                    .map_err(peer_error)?
                    .into_inner()
                    .layout;
                Response::Layout((!layout.is_empty()).then_some(layout))
            }
            R::MerkleLeaves { partition } => Response::MerkleLeaves(convert::summary_from_proto(
                client
                    .merkle_leaves(with_headers(
                        pb::MerkleLeavesRequest { partition },
                        &headers,
                        timeout,
                    ))
                    .await
                    .map_err(peer_error)?
                    .into_inner(),
            )),
            R::KeyDigests {
                partition,
                leaves,
                keys,
            } => Response::KeyDigests(convert::digests_from_proto(
                client
                    .key_digests(with_headers(
                        pb::KeyDigestsRequest {
                            partition,
                            leaves,
                            keys,
                        },
                        &headers,
                        timeout,
                    ))
                    .await
                    .map_err(peer_error)?
                    .into_inner()
                    .digests,
            )),
            R::Purge { keys } => Response::Purged(
                client
                    .purge(with_headers(
                        pb::PurgeRequest {
                            keys: convert::digests_to_proto(keys),
                        },
                        &headers,
                        timeout,
                    ))
                    .await
                    .map_err(peer_error)?
                    .into_inner()
                    .purged,
            ),
            R::SyncTokens(tokens) => Response::Tokens(
                client
                    .sync_tokens(with_headers(
                        pb::SyncTokensRequest { tokens },
                        &headers,
                        timeout,
                    ))
                    .await
                    .map_err(peer_error)?
                    .into_inner()
                    .tokens,
            ),
            R::FetchPartition {
                partition,
                after,
                max_bytes,
            } => Response::FetchPartition(convert::chunk_from_proto(
                client
                    .fetch_partition(with_headers(
                        pb::FetchPartitionRequest {
                            partition,
                            after,
                            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
                        },
                        &headers,
                        timeout,
                    ))
                    .await
                    .map_err(peer_error)?
                    .into_inner(),
            )),
        };
        Ok(answer)
    }

    /// An Admin client for sending a cluster change to the claimant.
    pub fn admin(&self, node: NodeId) -> Result<AdminClient<Channel>, Status> {
        let ch = self.forward_channel(node)?;
        Ok(AdminClient::new(ch)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// A KV client for forwarding a request to the key's coordinator.
    pub fn kv(&self, node: NodeId) -> Result<KvClient<Channel>, Status> {
        let ch = self.forward_channel(node)?;
        Ok(KvClient::new(ch)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    fn forward_channel(&self, node: NodeId) -> Result<Channel, Status> {
        if self.faults.blocks_outgoing(node) {
            return Err(Status::unavailable(format!(
                "traffic to {node} is cut by the fault switch"
            )));
        }
        let address = self
            .address_of(node)
            .map_err(|e| Status::unavailable(e.message))?;
        self.channel_for(node, &address)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// Marks a request as sent by this node (for forwarded requests).
    pub fn stamp<T>(&self, req: &mut Request<T>) {
        if let Ok(v) = MetadataValue::try_from(self.me.to_string()) {
            req.metadata_mut().insert(FROM_HEADER, v);
        }
        stamp_cluster(req.metadata_mut(), self.identity.get());
        req.metadata_mut()
            .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    }
}

impl Network for Transport {
    fn call(
        &self,
        to: Peer,
        envelope: Envelope,
        request: ringkv_peer::Request,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response, PeerError>> {
        Box::pin(self.send(to, envelope, request, timeout))
    }
}

/// A call's request with its headers and deadline.
fn with_headers<T>(msg: T, headers: &MetadataMap, timeout: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    *req.metadata_mut() = headers.clone();
    req.set_timeout(timeout);
    req
}

/// The batch item a replica operation travels as; `None` for the others.
fn batch_item(request: &ringkv_peer::Request, me: NodeId) -> Option<pb::BatchItem> {
    use ringkv_peer::Request as R;
    let op = match request {
        R::Replicate { key, versions } => pb::batch_item::Op::Replicate(pb::ReplicateRequest {
            key: key.clone(),
            version_set: versions.clone(),
            from: me.to_string(),
            hint_for: String::new(),
        }),
        R::StoreHint {
            key,
            versions,
            target,
        } => pb::batch_item::Op::Replicate(pb::ReplicateRequest {
            key: key.clone(),
            version_set: versions.clone(),
            from: me.to_string(),
            hint_for: target.to_string(),
        }),
        R::Read { key } => pb::batch_item::Op::Read(pb::LocalReadRequest { key: key.clone() }),
        _ => return None,
    };
    Some(pb::BatchItem { op: Some(op) })
}

/// The headers carrying an envelope.
pub fn headers(envelope: &Envelope) -> MetadataMap {
    let mut headers = MetadataMap::new();
    if let Some(from) = envelope.from {
        if let Ok(v) = MetadataValue::try_from(from.to_string()) {
            headers.insert(FROM_HEADER, v);
        }
    }
    if let Some(to) = envelope.to {
        if let Ok(v) = MetadataValue::try_from(to.to_string()) {
            headers.insert(TO_HEADER, v);
        }
    }
    stamp_cluster(&mut headers, envelope.cluster);
    headers
}

/// The envelope a received call's headers carry.
pub fn envelope(headers: &MetadataMap) -> Result<Envelope, Status> {
    let node = |key| {
        headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
    };
    Ok(Envelope {
        from: node(FROM_HEADER),
        to: node(TO_HEADER),
        cluster: cluster_of(headers)?,
    })
}

/// Adds the cluster header, when the id is known.
pub fn stamp_cluster(headers: &mut MetadataMap, cluster: Option<ClusterId>) {
    if let Some(id) = cluster {
        if let Ok(v) = MetadataValue::try_from(id.to_string()) {
            headers.insert(CLUSTER_HEADER, v);
        }
    }
}

/// The cluster id a message's metadata carries: `Ok(None)` without the
/// header, an error when it is malformed.
pub fn cluster_of(headers: &MetadataMap) -> Result<Option<ClusterId>, Status> {
    let Some(value) = headers.get(CLUSTER_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "malformed {CLUSTER_HEADER} header: expected 32 hex digits"
            ))
        })
}

impl Transport {
    /// A channel to `address` that connects on first use: over mutual TLS
    /// when the peer port runs it (each new connection with the
    /// certificates current then), plaintext otherwise.
    fn lazy_channel(&self, address: &str) -> Result<Channel> {
        let uri = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::InvalidArgument(format!("bad peer address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(match &self.tls {
            Some(tls) => endpoint
                .connect_with_connector_lazy(dial::TlsDial::new(tls.clone(), CONNECT_TIMEOUT)),
            None => endpoint.connect_lazy(),
        })
    }
}

/// The innermost cause of an error: what actually failed ("connection
/// reset") rather than its wrapper ("transport error").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A failed call as the node sees it.
///
/// * Too large: a message over the size limit (`OUT_OF_RANGE` from either
///   side, or the replica stream's own refusal).
/// * Not sent: the connection could not be opened (refused, timed out,
///   unresolvable), so not one byte of the request was sent; tonic marks
///   that with [`tonic::ConnectError`] in the error's chain. Or the open
///   connection closed before the request left hyper's queue (a canceled
///   [`hyper::Error`]).
/// * A failure of the call's own HTTP/2 stream, which tonic reports as
///   "h2 protocol error" with the code of the stream's reset reason: the
///   connection carried it, so the peer is there; it fails this call only.
///   (Marking the peer down for it once made one oversized write take a
///   healthy replica out of routing.) A connection-level h2 failure (an
///   I/O error, no reason) comes with code `UNKNOWN` and is lost.
/// * Lost: every other transport failure (a reset, a closed stream, a
///   broken connection), which may have happened after the peer received
///   the request; and `CANCELLED`.
/// * Timeout: `DEADLINE_EXCEEDED`.
/// * Otherwise the peer refused, with the status's code.
pub fn peer_error(status: Status) -> PeerError {
    use std::error::Error as _;
    let cluster = cluster_of(status.metadata()).ok().flatten();
    let failure = if status.code() == Code::OutOfRange || status.message().starts_with(TOO_LARGE) {
        Failure::TooLarge
    } else if never_sent(&status) {
        Failure::NotSent
    } else if status.message().starts_with(H2_FAILURE) && status.code() != Code::Unknown {
        Failure::Refused(error::Code::Internal)
    } else if status.source().is_some() || status.code() == Code::Cancelled {
        Failure::Lost
    } else if status.code() == Code::DeadlineExceeded {
        Failure::Timeout
    } else {
        Failure::Refused(code_from_grpc(status.code()))
    };
    PeerError {
        failure,
        message: status.message().to_string(),
        cluster,
    }
}

/// Whether the failure shows that not one byte of the request left: the
/// connection could not be opened, or the HTTP/2 connection closed while
/// the request still waited in its queue (hyper hands such a request back
/// "canceled": "connection closed" or "connection was not ready"). The
/// second happens when a peer dies just before a call on its established
/// connection: the write never reached it, so it was not applied.
fn never_sent(status: &Status) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cur {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The class of a gRPC code.
pub fn code_from_grpc(code: Code) -> error::Code {
    use error::Code as C;
    match code {
        Code::InvalidArgument | Code::OutOfRange => C::InvalidArgument,
        Code::NotFound => C::NotFound,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => C::FailedPrecondition,
        Code::ResourceExhausted => C::ResourceExhausted,
        Code::Unavailable => C::Unavailable,
        Code::DeadlineExceeded => C::DeadlineExceeded,
        Code::PermissionDenied => C::PermissionDenied,
        Code::Unauthenticated => C::Unauthenticated,
        Code::Unimplemented => C::Unimplemented,
        _ => C::Internal,
    }
}

/// The gRPC code of a class.
pub fn code_to_grpc(code: error::Code) -> Code {
    use error::Code as C;
    match code {
        C::InvalidArgument => Code::InvalidArgument,
        C::NotFound => Code::NotFound,
        C::FailedPrecondition => Code::FailedPrecondition,
        C::ResourceExhausted => Code::ResourceExhausted,
        C::Unavailable => Code::Unavailable,
        C::DeadlineExceeded => Code::DeadlineExceeded,
        C::PermissionDenied => Code::PermissionDenied,
        C::Unauthenticated => Code::Unauthenticated,
        C::Unimplemented => Code::Unimplemented,
        C::Internal => Code::Internal,
    }
}

/// Whether a KV request was already forwarded by another node.
pub fn was_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().get(FORWARDED_HEADER).is_some()
}

#[cfg(test)]
mod tests;
