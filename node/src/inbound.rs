//! What a node does with its peers' messages: the receiving side of
//! replication, hints, gossip, layouts, anti-entropy and transfers.
//!
//! Every message is checked first: one from another cluster, one meant
//! for another node (this node took over an address), and one from a node
//! the test fault switch cut off are refused. Version sets that do not
//! decode are refused with INVALID_ARGUMENT and never touch storage.
//! [`Inbound`] answers for both networks: the gRPC service converts and
//! delegates to it, and the in-memory network calls it directly.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;

use crate::auth::{self, Tokens};
use crate::config::LimitsConfig;
use crate::handoff::HintStore;
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::rebalance::Rebalance;
use crate::repair::Repair;
use crate::replica::Replica;
use ringkv_core::error::{Error, Result};
use ringkv_core::version::VersionSet;
use ringkv_peer::{
    BoxFuture, Chunk, Envelope, GossipAnswer, Handler, KeyDigest, Request, Response, TOO_LARGE,
};

pub struct Inbound {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    /// Where this node keeps hints when it acts as a fallback.
    hints: Arc<HintStore>,
    repair: Arc<Repair>,
    rebalance: Arc<Rebalance>,
    /// The client-token table peers sync with.
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    max_key_bytes: usize,
    /// The largest stored state one answer can carry: a larger one (a key
    /// stored before `limits.max_key_state_bytes` existed) fails alone
    /// rather than making a whole batch's answer fail to encode.
    max_item_bytes: usize,
}

/// The parts of a node that answer its peers.
pub struct InboundParts {
    pub replica: Arc<Replica>,
    pub cluster: Arc<Cluster>,
    pub hints: Arc<HintStore>,
    pub repair: Arc<Repair>,
    pub rebalance: Arc<Rebalance>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
}

impl Inbound {
    pub fn new(parts: InboundParts, limits: &LimitsConfig) -> Self {
        let InboundParts {
            replica,
            cluster,
            hints,
            repair,
            rebalance,
            tokens,
            metrics,
        } = parts;
        Self {
            replica,
            cluster,
            hints,
            repair,
            rebalance,
            tokens,
            metrics,
            max_key_bytes: limits.max_key_bytes,
            max_item_bytes: limits.max_item_bytes(),
        }
    }

    /// Refuses traffic from another cluster (its cluster id differs from
    /// this node's), traffic meant for another node, and traffic from a
    /// node the fault switch cut off.
    pub fn check_sender(&self, envelope: &Envelope) -> Result<()> {
        let identity = &self.cluster.peers().identity;
        if let (Some(mine), Some(theirs)) = (identity.get(), envelope.cluster) {
            if mine != theirs {
                let peer = envelope
                    .from
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "a node without id".to_string());
                identity.refused("a call", &peer, theirs);
                return Err(identity.refusal(theirs));
            }
        }
        if let Some(to) = envelope.to {
            if to != self.cluster.me() {
                return Err(Error::FailedPrecondition(format!(
                    "this is node {}, not {to}: the node at this address was replaced",
                    self.cluster.me()
                )));
            }
        }
        if let Some(from) = envelope.from {
            if self.cluster.peers().faults.blocks_incoming(from) {
                return Err(Error::Unreachable(format!(
                    "traffic from {from} is cut by the fault switch"
                )));
            }
        }
        Ok(())
    }

    fn check_partition(&self, partition: u32) -> Result<u32> {
        let q = self.cluster.partitions();
        if partition >= q {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} out of range: the cluster has {q}"
            )));
        }
        Ok(partition)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        Ok(ringkv_common::check_key(key, self.max_key_bytes)?)
    }

    fn decode(&self, envelope: &Envelope, versions: &[u8]) -> Result<VersionSet> {
        let incoming = VersionSet::decode(versions).map_err(|e| {
            let from = envelope.from.map(|n| n.to_string()).unwrap_or_default();
            Error::InvalidArgument(format!("version set from {from}: {e}"))
        })?;
        self.replica.check_incoming(&incoming)?;
        Ok(incoming)
    }

    /// Checks a merge into this node's own copy: a valid key, versions that
    /// decode, and a partition this node takes writes for.
    fn check_merge(&self, envelope: &Envelope, key: &[u8], versions: &[u8]) -> Result<VersionSet> {
        self.check_key(key)?;
        let incoming = self.decode(envelope, versions)?;
        self.rebalance.check_held(self.replica.partition_of(key))?;
        Ok(incoming)
    }

    /// Checks a read: a valid key of a partition this node holds.
    fn check_read(&self, key: &[u8]) -> Result<()> {
        self.check_key(key)?;
        self.rebalance.check_held(self.replica.partition_of(key))
    }

    /// Refuses a read answer of `bytes` stored bytes that one message
    /// cannot carry: the error of that read alone.
    fn check_answer(&self, bytes: usize) -> Result<()> {
        if bytes > self.max_item_bytes {
            return Err(Error::MessageTooLarge(format!(
                "{TOO_LARGE}: {bytes} bytes, above the {} one internal message carries; the key's state must be reduced (resolve its siblings with a write carrying a read's context)",
                self.max_item_bytes
            )));
        }
        Ok(())
    }

    async fn replicate(&self, envelope: &Envelope, key: Bytes, versions: Bytes) -> Result<()> {
        let incoming = self.check_merge(envelope, &key, &versions)?;
        let merged = self.replica.merge(key, incoming).await?;
        self.metrics.siblings_collapsed(merged.collapsed);
        Ok(())
    }

    /// Keeps versions for their replica: this node is a fallback.
    async fn store_hint(
        &self,
        envelope: &Envelope,
        key: Bytes,
        versions: Bytes,
        target: ringkv_core::version::NodeId,
    ) -> Result<()> {
        self.check_key(&key)?;
        let incoming = self.decode(envelope, &versions)?;
        self.hints.store(target, key, incoming).await
    }

    async fn read(&self, key: Bytes) -> Result<Option<Bytes>> {
        self.check_read(&key)?;
        match self.replica.read(key).await? {
            None => Ok(None),
            Some(state) => {
                let encoded = state.encode();
                self.check_answer(encoded.len())?;
                Ok(Some(encoded.into()))
            }
        }
    }

    /// Applies checked merges as one group commit; each keeps its outcome.
    async fn merge_group(
        &self,
        merges: Vec<(usize, Bytes, VersionSet)>,
    ) -> Vec<(usize, Result<Response>)> {
        if merges.is_empty() {
            return Vec::new();
        }
        let (indexes, entries): (Vec<usize>, Vec<_>) = merges
            .into_iter()
            .map(|(i, key, set)| (i, (key, set)))
            .unzip();
        let answers: Vec<Result<Response>> = match self.replica.merge_group(entries).await {
            Ok(merged) => merged
                .into_iter()
                .map(|merged| {
                    self.metrics.siblings_collapsed(merged?.collapsed);
                    Ok(Response::Done)
                })
                .collect(),
            Err(e) => indexes.iter().map(|_| Err(e.clone())).collect(),
        };
        indexes.into_iter().zip(answers).collect()
    }

    /// Answers checked reads from one storage lookup.
    async fn read_group(&self, reads: Vec<(usize, Bytes)>) -> Vec<(usize, Result<Response>)> {
        if reads.is_empty() {
            return Vec::new();
        }
        let (indexes, keys): (Vec<usize>, Vec<Bytes>) = reads.into_iter().unzip();
        let answers: Vec<Result<Response>> = match self.replica.read_group(keys).await {
            Ok(stored) => stored
                .into_iter()
                .map(|read| {
                    let bytes = read?;
                    self.check_answer(bytes.as_ref().map_or(0, Vec::len))?;
                    Ok(Response::Read(bytes.map(Bytes::from)))
                })
                .collect(),
            Err(e) => indexes.iter().map(|_| Err(e.clone())).collect(),
        };
        indexes.into_iter().zip(answers).collect()
    }

    async fn answer(&self, envelope: Envelope, request: Request) -> Result<Response> {
        self.check_sender(&envelope)?;
        match request {
            Request::Replicate { key, versions } => {
                self.replicate(&envelope, key, versions).await?;
                Ok(Response::Done)
            }
            Request::StoreHint {
                key,
                versions,
                target,
            } => {
                self.store_hint(&envelope, key, versions, target).await?;
                Ok(Response::Done)
            }
            Request::Read { key } => self.read(key).await.map(Response::Read),
            Request::Gossip(gossip) => {
                let mut answer: GossipAnswer =
                    self.cluster
                        .handle_gossip(gossip, envelope.cluster, envelope.from)?;
                // The answer says which cluster it comes from, so the sender
                // can refuse it if it is not its own.
                answer.cluster = self.cluster.peers().identity.get();
                Ok(Response::Gossip(answer))
            }
            Request::GetLayout => Ok(Response::Layout(
                self.cluster.layout().map(|l| Bytes::from(l.encode())),
            )),
            Request::MerkleLeaves { partition } => {
                let partition = self.check_partition(partition)?;
                let summary = self.repair.merkle_leaves(partition).await?;
                Ok(Response::MerkleLeaves(summary))
            }
            Request::KeyDigests {
                partition,
                leaves,
                keys,
            } => {
                let partition = self.check_partition(partition)?;
                for key in &keys {
                    self.check_key(key)?;
                }
                let digests = self.repair.key_digests(partition, leaves, keys).await?;
                Ok(Response::KeyDigests(
                    digests
                        .into_iter()
                        .map(|(key, digest)| KeyDigest { key, digest })
                        .collect(),
                ))
            }
            Request::Purge { keys } => {
                for k in &keys {
                    self.check_key(&k.key)?;
                }
                let purged = self
                    .repair
                    .purge(keys.into_iter().map(|k| (k.key, k.digest)).collect())
                    .await?;
                Ok(Response::Purged(purged))
            }
            Request::SyncTokens(theirs) => {
                // Tokens grant access: only a member of this very cluster
                // may bring them (a node that does not know its cluster
                // yet has none to bring).
                let mine = self.cluster.peers().identity.get();
                if mine.is_none() || envelope.cluster != mine {
                    return Err(Error::FailedPrecondition(
                        "tokens are exchanged only between members of the same cluster".into(),
                    ));
                }
                auth::answer_sync(&self.tokens, &theirs).await
            }
            Request::FetchPartition {
                partition,
                after,
                max_bytes,
            } => {
                let partition = self.check_partition(partition)?;
                if let Some(after) = &after {
                    self.check_key(after)?;
                }
                let (entries, done, estimated_bytes) = self
                    .rebalance
                    .serve_chunk(partition, after, max_bytes)
                    .await?;
                Ok(Response::FetchPartition(Chunk {
                    entries: entries
                        .into_iter()
                        .map(|(key, value)| (key, Bytes::from(value)))
                        .collect(),
                    done,
                    estimated_bytes,
                }))
            }
        }
    }

    async fn answer_batch(
        &self,
        envelope: Envelope,
        requests: Vec<Request>,
    ) -> Vec<Result<Response>> {
        if let Err(refused) = self.check_sender(&envelope) {
            return requests.iter().map(|_| Err(refused.clone())).collect();
        }
        let mut answers: Vec<Option<Result<Response>>> = requests.iter().map(|_| None).collect();
        // Merges are applied as one group commit and reads as one lookup;
        // everything else is answered one by one.
        let mut merges = Vec::new();
        let mut reads = Vec::new();
        let mut others = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            match request {
                Request::Replicate { key, versions } => {
                    match self.check_merge(&envelope, &key, &versions) {
                        Ok(incoming) => merges.push((i, key, incoming)),
                        Err(refused) => answers[i] = Some(Err(refused)),
                    }
                }
                Request::Read { key } => match self.check_read(&key) {
                    Ok(()) => reads.push((i, key)),
                    Err(refused) => answers[i] = Some(Err(refused)),
                },
                other => others.push((i, other)),
            }
        }
        let (merged, read, rest) = futures::join!(
            self.merge_group(merges),
            self.read_group(reads),
            join_all(
                others
                    .into_iter()
                    .map(|(i, request)| async move { (i, self.answer(envelope, request).await) })
            )
        );
        for (i, answer) in merged.into_iter().chain(read).chain(rest) {
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::Internal("a batch item got no answer".into()))))
            .collect()
    }
}

impl Handler for Inbound {
    fn handle(&self, envelope: Envelope, request: Request) -> BoxFuture<'_, Result<Response>> {
        Box::pin(self.answer(envelope, request))
    }

    fn handle_batch(
        &self,
        envelope: Envelope,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Vec<Result<Response>>> {
        Box::pin(self.answer_batch(envelope, requests))
    }
}
