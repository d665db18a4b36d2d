//! The peer layer: what nodes say to each other, as Rust types, sent to a
//! [`NodeId`] through one trait.
//!
//! * [`Request`] and [`Response`] are every message between nodes.
//! * [`Network`] carries them. The gRPC implementation lives in the server
//!   (`transport`): it resolves node ids to addresses, coalesces replica
//!   operations per peer into batch calls, and maps gRPC statuses to
//!   [`PeerError`]s. [`memory::MemoryNetwork`] carries them in memory,
//!   deterministically, for simulations.
//! * [`Handler`] is what a node does with the messages it receives
//!   (`inbound::Inbound`); both networks deliver to it.
//! * [`Peers`] is what the node's subsystems call: one typed method per
//!   message, the test fault switch, the cluster id on every message, and
//!   the failure detector told of every peer that could not be reached.

mod addresses;
mod error;
pub mod faults;
pub mod identity;
pub mod memory;
mod message;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;

use ringkv_core::error::{Error, Result};
use ringkv_core::version::{NodeId, VersionSet};

pub use addresses::AddressBook;
pub use error::{too_large, Failure, PeerError, TOO_LARGE};
pub use faults::Faults;
pub use identity::ClusterIdentity;
pub use message::{
    Chunk, Envelope, Gossip, GossipAnswer, KeyDigest, MerkleSummary, Peer, Request, Response,
};

/// A boxed future, as the peer traits return (they are used as trait
/// objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries messages to other nodes.
pub trait Network: Send + Sync + 'static {
    /// Sends `request` to `to`, stamped with `envelope`, and waits at most
    /// `timeout` for its answer.
    fn call(
        &self,
        to: Peer,
        envelope: Envelope,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response, PeerError>>;
}

/// What a node does with the messages its peers send.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, envelope: Envelope, request: Request) -> BoxFuture<'_, Result<Response>>;

    /// Answers several requests from one sender together (replica merges
    /// in one group commit, reads in one lookup); each keeps its own
    /// answer, in order.
    fn handle_batch(
        &self,
        envelope: Envelope,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Vec<Result<Response>>>;
}

/// Told of every peer a call could not reach: the failure detector.
pub trait Observer: Send + Sync {
    fn unreachable(&self, node: NodeId);
}

/// The node's side of the peer layer: typed calls to other nodes.
pub struct Peers {
    me: NodeId,
    network: Arc<dyn Network>,
    /// The test fault switch.
    pub faults: Arc<Faults>,
    /// The cluster id every message carries.
    pub identity: Arc<ClusterIdentity>,
    observer: RwLock<Option<Weak<dyn Observer>>>,
}

impl Peers {
    pub fn new(
        me: NodeId,
        network: Arc<dyn Network>,
        identity: Arc<ClusterIdentity>,
        faults: Arc<Faults>,
    ) -> Self {
        Self {
            me,
            network,
            faults,
            identity,
            observer: RwLock::new(None),
        }
    }

    /// Sets who hears of unreachable peers (held weakly: the observer owns
    /// this).
    pub fn observe(&self, observer: Weak<dyn Observer>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Sends one request to a member and waits for its answer. A peer the
    /// call could not reach is reported to the failure detector, except
    /// when a scan merely ran out of time: a slow scan says nothing about
    /// the node's health.
    pub async fn call(
        &self,
        to: NodeId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        let scan = matches!(
            request,
            Request::MerkleLeaves { .. } | Request::KeyDigests { .. }
        );
        let result = if self.faults.blocks_outgoing(to) {
            Err(PeerError::new(
                Failure::NotSent,
                format!("traffic to {to} is cut by the fault switch"),
            ))
        } else {
            let envelope = self.envelope(Some(to));
            self.network
                .call(Peer::Node(to), envelope, request, timeout)
                .await
        };
        if let Err(e) = &result {
            if e.is_unreachable() && !(scan && e.failure == Failure::Timeout) {
                self.report_unreachable(to);
            }
        }
        result
    }

    fn envelope(&self, to: Option<NodeId>) -> Envelope {
        Envelope {
            from: Some(self.me),
            to,
            cluster: self.identity.get(),
        }
    }

    fn report_unreachable(&self, node: NodeId) {
        let observer = self
            .observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        if let Some(observer) = observer {
            observer.unreachable(node);
        }
    }

    /// Sends a key's version set (encoded) to a replica, which merges it.
    pub async fn replicate(
        &self,
        to: NodeId,
        key: Bytes,
        versions: Bytes,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let request = Request::Replicate { key, versions };
        expect_done(self.call(to, request, timeout).await?)
    }

    /// Asks a fallback to keep a key's version set (encoded) as a hint for
    /// `target`.
    pub async fn store_hint(
        &self,
        to: NodeId,
        key: Bytes,
        versions: Bytes,
        target: NodeId,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let request = Request::StoreHint {
            key,
            versions,
            target,
        };
        expect_done(self.call(to, request, timeout).await?)
    }

    /// A replica's stored version set of a key.
    pub async fn read(
        &self,
        to: NodeId,
        key: Bytes,
        timeout: Duration,
    ) -> Result<Option<VersionSet>, PeerError> {
        match self.call(to, Request::Read { key }, timeout).await? {
            Response::Read(None) => Ok(None),
            Response::Read(Some(bytes)) => VersionSet::decode(&bytes).map(Some).map_err(|e| {
                PeerError::refused(&Error::Corrupt(format!("version set from {to}: {e}")))
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// One gossip exchange with a member or a seed.
    pub async fn gossip(
        &self,
        to: Peer,
        message: Gossip,
        timeout: Duration,
    ) -> Result<GossipAnswer, PeerError> {
        let request = Request::Gossip(message);
        let answer = match to {
            Peer::Node(node) => self.call(node, request, timeout).await?,
            Peer::Seed(_) => {
                let envelope = self.envelope(None);
                self.network.call(to, envelope, request, timeout).await?
            }
        };
        match answer {
            Response::Gossip(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// A member's layout (encoded), if it has one.
    pub async fn layout(&self, to: NodeId, timeout: Duration) -> Result<Option<Bytes>, PeerError> {
        match self.call(to, Request::GetLayout, timeout).await? {
            Response::Layout(layout) => Ok(layout),
            other => Err(unexpected(&other)),
        }
    }

    /// A replica's Merkle summary of one partition.
    pub async fn merkle_leaves(
        &self,
        to: NodeId,
        partition: u32,
        timeout: Duration,
    ) -> Result<MerkleSummary, PeerError> {
        match self
            .call(to, Request::MerkleLeaves { partition }, timeout)
            .await?
        {
            Response::MerkleLeaves(summary) => Ok(summary),
            other => Err(unexpected(&other)),
        }
    }

    /// A replica's (key, digest) pairs for chosen leaves or keys of a
    /// partition.
    pub async fn key_digests(
        &self,
        to: NodeId,
        partition: u32,
        leaves: Vec<u32>,
        keys: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Vec<KeyDigest>, PeerError> {
        let request = Request::KeyDigests {
            partition,
            leaves,
            keys,
        };
        match self.call(to, request, timeout).await? {
            Response::KeyDigests(digests) => Ok(digests),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks a replica to purge fully replicated tombstones.
    pub async fn purge(
        &self,
        to: NodeId,
        keys: Vec<KeyDigest>,
        timeout: Duration,
    ) -> Result<u32, PeerError> {
        match self.call(to, Request::Purge { keys }, timeout).await? {
            Response::Purged(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    /// The next chunk of a partition from an old replica (transfers).
    pub async fn fetch_partition(
        &self,
        to: NodeId,
        partition: u32,
        after: Option<Bytes>,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Chunk, PeerError> {
        let request = Request::FetchPartition {
            partition,
            after,
            max_bytes,
        };
        match self.call(to, request, timeout).await? {
            Response::FetchPartition(chunk) => Ok(chunk),
            other => Err(unexpected(&other)),
        }
    }
}

fn expect_done(response: Response) -> Result<(), PeerError> {
    match response {
        Response::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// A peer answered with the wrong kind of response: a bug on one side.
fn unexpected(response: &Response) -> PeerError {
    PeerError::refused(&Error::Internal(format!(
        "a peer answered with an unexpected response ({})",
        response.name()
    )))
}
