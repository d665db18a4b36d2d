//! Node-to-node calls: one cached gRPC channel per peer, replica
//! operations coalesced per peer ([`batch`]), and the test fault switch.
//!
//! Every internal call carries the sender's node id in the
//! [`FROM_HEADER`] metadata entry, so the receiver can refuse traffic from
//! nodes cut off by the fault switch, and its cluster id in the
//! [`CLUSTER_HEADER`] entry, so the receiver can refuse another cluster's
//! traffic ([`identity`]). The switch ([`Faults`]) exists only
//! for tests: it is set through `Admin.SetFaults`, which a node refuses
//! unless `debug.fault_injection = true`. Cutting a node off in one
//! direction blocks this node's calls to it; in the other, this node
//! refuses its calls.

mod batch;
pub mod identity;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_proto::v1::kv_client::KvClient;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::ring::ClusterId;
use crate::version::{NodeId, VersionSet};

use batch::Batcher;
pub use batch::{too_large, TOO_LARGE};
pub use identity::{ClusterIdentity, CLUSTER_HEADER};

/// Metadata key carrying the sending node's id on internal calls.
pub const FROM_HEADER: &str = "x-ringkv-from";

/// Metadata key naming the node an internal call is meant for.
pub const TO_HEADER: &str = "x-ringkv-to";

/// Metadata key marking a KV request already forwarded once by a node.
pub const FORWARDED_HEADER: &str = "x-ringkv-forwarded";

/// Time allowed to open a connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which peers' traffic is cut (tests only).
#[derive(Default)]
pub struct Faults {
    blocked_outgoing: RwLock<HashSet<NodeId>>,
    blocked_incoming: RwLock<HashSet<NodeId>>,
}

impl Faults {
    /// Replaces both block lists.
    pub fn set(&self, outgoing: HashSet<NodeId>, incoming: HashSet<NodeId>) {
        *self
            .blocked_outgoing
            .write()
            .unwrap_or_else(|p| p.into_inner()) = outgoing;
        *self
            .blocked_incoming
            .write()
            .unwrap_or_else(|p| p.into_inner()) = incoming;
    }

    pub fn blocks_outgoing(&self, to: NodeId) -> bool {
        self.blocked_outgoing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&to)
    }

    pub fn blocks_incoming(&self, from: NodeId) -> bool {
        self.blocked_incoming
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&from)
    }
}

/// How tonic's message starts for a call that failed on its own HTTP/2
/// stream (a stream reset by either side, a body that failed to encode) or
/// on the connection. tonic keeps no typed source for the stream-level
/// cases, so the message and the code are all there is to tell them apart.
const H2_FAILURE: &str = "h2 protocol error";

/// Whether a failed call means the peer could not be reached (as opposed
/// to the peer answering with an error, or the call failing by itself):
/// feeds the failure detector.
///
/// Not unreachable: a message over the size limit (`OUT_OF_RANGE` from
/// either side, or [`too_large`]), and a failure of the call's own HTTP/2
/// stream, which tonic reports as "h2 protocol error" with the code of the
/// stream's reset reason: the connection carried it, so the peer is there.
/// Such failures fail the one call; marking the peer down for them once
/// made one oversized write take a healthy replica out of routing. A
/// connection-level h2 failure (an I/O error, no reason) comes with code
/// `UNKNOWN` and still counts as unreachable.
pub fn is_unreachable(status: &Status) -> bool {
    use std::error::Error as _;
    if status.code() == Code::OutOfRange || status.message().starts_with(TOO_LARGE) {
        return false;
    }
    if status.message().starts_with(H2_FAILURE) && status.code() != Code::Unknown {
        return false;
    }
    status.source().is_some()
        || matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        )
}

/// Cached channels to peers by node id.
pub struct Transport {
    me: NodeId,
    /// node id → (address, channel). Replaced when a peer's address changes.
    channels: Mutex<HashMap<NodeId, (String, Channel)>>,
    /// node id → (address, cluster id its headers carry, batcher) for
    /// replica operations; replaced with the channel when a peer's address
    /// changes, and once this node learns its cluster id (a batcher's
    /// headers are fixed when it starts).
    batchers: Mutex<HashMap<NodeId, BatcherEntry>>,
    pub faults: Arc<Faults>,
    /// The cluster id every call carries and every answer is checked against.
    pub identity: Arc<ClusterIdentity>,
    max_message_bytes: usize,
}

/// A peer's batcher with what it was started for.
type BatcherEntry = (String, Option<ClusterId>, Arc<Batcher>);

impl Transport {
    pub fn new(me: NodeId, max_message_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            me,
            channels: Mutex::new(HashMap::new()),
            batchers: Mutex::new(HashMap::new()),
            faults: Arc::new(Faults::default()),
            identity: Arc::new(ClusterIdentity::new(metrics)),
            max_message_bytes,
        }
    }

    fn channel_for(&self, node: NodeId, address: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, ch)) = channels.get(&node) {
            if addr == address {
                return Ok(ch.clone());
            }
        }
        let ch = lazy_channel(address)?;
        channels.insert(node, (address.to_string(), ch.clone()));
        Ok(ch)
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(timeout);
        if let Ok(v) = MetadataValue::try_from(self.me.to_string()) {
            req.metadata_mut().insert(FROM_HEADER, v);
        }
        self.identity.stamp(req.metadata_mut());
        req
    }

    /// A request meant for `to` only: a different node now answering at
    /// that address (a wiped node that came back with a new id) refuses it.
    fn request_to<T>(&self, to: NodeId, msg: T, timeout: Duration) -> Request<T> {
        let mut req = Request::new(msg);
        *req.metadata_mut() = self.headers_to(to);
        req.set_timeout(timeout);
        req
    }

    /// The sender and recipient headers of a call meant for `to` only.
    fn headers_to(&self, to: NodeId) -> MetadataMap {
        let mut headers = MetadataMap::new();
        if let Ok(v) = MetadataValue::try_from(self.me.to_string()) {
            headers.insert(FROM_HEADER, v);
        }
        if let Ok(v) = MetadataValue::try_from(to.to_string()) {
            headers.insert(TO_HEADER, v);
        }
        self.identity.stamp(&mut headers);
        headers
    }

    fn check_fault(&self, node: NodeId) -> Result<(), Status> {
        if self.faults.blocks_outgoing(node) {
            return Err(Status::unavailable(format!(
                "traffic to {node} is cut by the fault switch"
            )));
        }
        Ok(())
    }

    fn internal(&self, node: NodeId, address: &str) -> Result<InternalClient<Channel>, Status> {
        self.check_fault(node)?;
        let ch = self
            .channel_for(node, address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(InternalClient::new(ch)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// The peer's batcher for replica operations, started on first use.
    fn batcher(&self, node: NodeId, address: &str) -> Result<Arc<Batcher>, Status> {
        self.check_fault(node)?;
        let cluster = self.identity.get();
        let mut batchers = self.batchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, stamped, batcher)) = batchers.get(&node) {
            if addr == address && *stamped == cluster {
                return Ok(batcher.clone());
            }
        }
        let client = self.internal(node, address)?;
        // Half the message limit leaves room for the items' framing.
        let batcher = Arc::new(Batcher::start(
            client,
            self.headers_to(node),
            self.max_message_bytes / 2,
            self.max_message_bytes
                .saturating_sub(crate::config::MESSAGE_OVERHEAD_BYTES),
        ));
        batchers.insert(node, (address.to_string(), cluster, batcher.clone()));
        Ok(batcher)
    }

    /// Sends a key's version set to a replica, which merges it.
    pub async fn replicate(
        &self,
        node: NodeId,
        address: &str,
        key: Bytes,
        state: &VersionSet,
        timeout: Duration,
    ) -> Result<(), Status> {
        self.replicate_encoded(node, address, key, state.encode().into(), timeout)
            .await
    }

    /// [`Self::replicate`] of a version set already encoded, so a write
    /// sent to several replicas is encoded once.
    pub async fn replicate_encoded(
        &self,
        node: NodeId,
        address: &str,
        key: Bytes,
        encoded: Bytes,
        timeout: Duration,
    ) -> Result<(), Status> {
        self.send_versions(node, address, key, encoded, None, timeout)
            .await
    }

    /// Asks a fallback to keep a key's version set (encoded) as a hint for
    /// `target`.
    pub async fn store_hint(
        &self,
        node: NodeId,
        address: &str,
        key: Bytes,
        encoded: Bytes,
        target: NodeId,
        timeout: Duration,
    ) -> Result<(), Status> {
        self.send_versions(node, address, key, encoded, Some(target), timeout)
            .await
    }

    async fn send_versions(
        &self,
        node: NodeId,
        address: &str,
        key: Bytes,
        encoded: Bytes,
        hint_for: Option<NodeId>,
        timeout: Duration,
    ) -> Result<(), Status> {
        let bytes = key.len() + encoded.len();
        let msg = pb::ReplicateRequest {
            key,
            version_set: encoded,
            from: self.me.to_string(),
            hint_for: hint_for.map(|n| n.to_string()).unwrap_or_default(),
        };
        let item = pb::BatchItem {
            op: Some(pb::batch_item::Op::Replicate(msg)),
        };
        self.batcher(node, address)?
            .call(item, bytes, timeout)
            .await
            .map(|_| ())
    }

    /// Reads a replica's stored version set of a key.
    pub async fn local_read(
        &self,
        node: NodeId,
        address: &str,
        key: Bytes,
        timeout: Duration,
    ) -> Result<Option<VersionSet>, Status> {
        let bytes = key.len();
        let item = pb::BatchItem {
            op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest { key })),
        };
        let result = self
            .batcher(node, address)?
            .call(item, bytes, timeout)
            .await?;
        if !result.found {
            return Ok(None);
        }
        VersionSet::decode(&result.version_set)
            .map(Some)
            .map_err(|e| Status::internal(format!("version set from {node}: {e}")))
    }

    /// Gossips with a peer. `node` is `None` for a seed whose id is not yet
    /// known. Returns the answer and the cluster id the peer answered with.
    pub async fn gossip(
        &self,
        node: Option<NodeId>,
        address: &str,
        msg: pb::GossipRequest,
        timeout: Duration,
    ) -> Result<(pb::GossipResponse, Option<ClusterId>), Status> {
        let (mut client, request) = match node {
            Some(node) => (
                self.internal(node, address)?,
                self.request_to(node, msg, timeout),
            ),
            None => (
                InternalClient::new(
                    lazy_channel(address).map_err(|e| Status::invalid_argument(e.to_string()))?,
                ),
                self.request(msg, timeout),
            ),
        };
        let response = client.gossip(request).await?;
        let cluster = identity::cluster_of(response.metadata())?;
        Ok((response.into_inner(), cluster))
    }

    /// Fetches a peer's layout (encoded; empty when it has none).
    pub async fn get_layout(
        &self,
        node: NodeId,
        address: &str,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        self.internal(node, address)?
            .get_layout(self.request_to(node, pb::GetLayoutRequest {}, timeout))
            .await
            .map(|r| r.into_inner().layout)
    }

    /// A replica's Merkle leaves for one partition.
    pub async fn merkle_leaves(
        &self,
        node: NodeId,
        address: &str,
        partition: u32,
        timeout: Duration,
    ) -> Result<pb::MerkleLeavesResponse, Status> {
        self.internal(node, address)?
            .merkle_leaves(self.request_to(node, pb::MerkleLeavesRequest { partition }, timeout))
            .await
            .map(|r| r.into_inner())
    }

    /// A replica's (key, digest) pairs for chosen leaves or keys of a partition.
    pub async fn key_digests(
        &self,
        node: NodeId,
        address: &str,
        msg: pb::KeyDigestsRequest,
        timeout: Duration,
    ) -> Result<Vec<pb::KeyDigest>, Status> {
        self.internal(node, address)?
            .key_digests(self.request_to(node, msg, timeout))
            .await
            .map(|r| r.into_inner().digests)
    }

    /// Asks a replica to purge fully replicated tombstones.
    pub async fn purge(
        &self,
        node: NodeId,
        address: &str,
        keys: Vec<pb::KeyDigest>,
        timeout: Duration,
    ) -> Result<u32, Status> {
        self.internal(node, address)?
            .purge(self.request_to(node, pb::PurgeRequest { keys }, timeout))
            .await
            .map(|r| r.into_inner().purged)
    }

    /// The next chunk of a partition from an old replica (transfers).
    pub async fn fetch_partition(
        &self,
        node: NodeId,
        address: &str,
        partition: u32,
        after: Option<Bytes>,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<pb::FetchPartitionResponse, Status> {
        let msg = pb::FetchPartitionRequest {
            partition,
            after,
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        };
        self.internal(node, address)?
            .fetch_partition(self.request_to(node, msg, timeout))
            .await
            .map(|r| r.into_inner())
    }

    /// An Admin client for sending a cluster change to the claimant.
    pub fn admin(&self, node: NodeId, address: &str) -> Result<AdminClient<Channel>, Status> {
        self.check_fault(node)?;
        let ch = self
            .channel_for(node, address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(AdminClient::new(ch)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// A KV client for forwarding a request to the key's coordinator.
    pub fn kv(&self, node: NodeId, address: &str) -> Result<KvClient<Channel>, Status> {
        self.check_fault(node)?;
        let ch = self
            .channel_for(node, address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(KvClient::new(ch)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// Marks a request as sent by this node (for forwarded KV requests).
    pub fn stamp<T>(&self, req: &mut Request<T>) {
        if let Ok(v) = MetadataValue::try_from(self.me.to_string()) {
            req.metadata_mut().insert(FROM_HEADER, v);
        }
        self.identity.stamp(req.metadata_mut());
        req.metadata_mut()
            .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    }
}

fn lazy_channel(address: &str) -> Result<Channel> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidArgument(format!("bad peer address {address:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
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

/// Whether a failed call provably never reached the peer: the connection
/// could not be opened (refused, timed out, unresolvable), so not one byte
/// of the request was sent. tonic marks that with [`tonic::ConnectError`]
/// in the error's chain. Every other transport failure (a reset, a closed
/// stream, a broken connection) may have happened after the peer received
/// the request.
pub fn never_sent(status: &Status) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cur {
        if e.is::<tonic::ConnectError>() {
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

/// The sending node of an internal request, from its metadata.
pub fn sender<T>(req: &Request<T>) -> Option<NodeId> {
    req.metadata()
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// The node an internal request is meant for, from its metadata.
pub fn recipient<T>(req: &Request<T>) -> Option<NodeId> {
    req.metadata()
        .get(TO_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// Whether a KV request was already forwarded by another node.
pub fn was_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().get(FORWARDED_HEADER).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_peer_count_as_unreachable() {
        // The peer (or the way to it) failed.
        assert!(is_unreachable(&Status::unavailable("connection refused")));
        assert!(is_unreachable(&Status::deadline_exceeded("no answer")));
        assert!(is_unreachable(&Status::cancelled("dropped")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_unreachable(&Status::from_error(Box::new(io))));
        // One call failed; the peer answered or the connection carried it.
        assert!(!is_unreachable(&Status::out_of_range(
            "Error, encoded message length too large: found 1400141 bytes, the limit is: 1118208 bytes"
        )));
        assert!(!is_unreachable(&too_large(1_400_141, 1_118_208)));
        assert!(!is_unreachable(&Status::cancelled(
            "h2 protocol error: stream error sent by user: operation was canceled"
        )));
        assert!(!is_unreachable(&Status::internal(
            "h2 protocol error: stream error received: unexpected internal error encountered"
        )));
        assert!(!is_unreachable(&Status::resource_exhausted("overloaded")));
        assert!(!is_unreachable(&Status::invalid_argument("bad key")));
    }
}
