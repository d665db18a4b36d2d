//! The node-to-node Internal service: replication, hints, local reads,
//! gossip, layouts, and the anti-entropy exchange.
//!
//! Version sets travel in the stored encoding, so a receiving replica
//! merges exactly what the sender holds. Bytes that do not decode are
//! refused with INVALID_ARGUMENT and never touch storage.

use std::sync::Arc;

use bytes::Bytes;

use futures::future::join_all;

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::internal_server::Internal;
use tonic::{Request, Response, Status};

use super::{status, Admitted, Gate};
use crate::config::LimitsConfig;
use crate::error::Error;
use crate::handoff::HintStore;
use crate::membership::Cluster;
use crate::rebalance::Rebalance;
use crate::repair::Repair;
use crate::replica::Replica;
use crate::transport;
use crate::version::{NodeId, VersionSet};

pub struct InternalService {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    /// Where this node keeps hints when it acts as a fallback.
    hints: Arc<HintStore>,
    repair: Arc<Repair>,
    rebalance: Arc<Rebalance>,
    gate: Gate,
    max_key_bytes: usize,
    /// Answers of a batch past this many bytes are sent back to be asked
    /// again alone, so a batch response stays within the message limit.
    max_batch_answer_bytes: usize,
    /// The largest stored state one answer can carry: a larger one (a key
    /// stored before `limits.max_key_state_bytes` existed) fails alone
    /// rather than making the whole response fail to encode.
    max_item_bytes: usize,
}

impl InternalService {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        hints: Arc<HintStore>,
        repair: Arc<Repair>,
        rebalance: Arc<Rebalance>,
        gate: Gate,
        limits: &LimitsConfig,
    ) -> Self {
        Self {
            replica,
            cluster,
            hints,
            repair,
            rebalance,
            gate,
            max_key_bytes: limits.max_key_bytes,
            // Half the limit leaves room for the items' framing.
            max_batch_answer_bytes: limits.max_message_bytes() / 2,
            max_item_bytes: limits.max_item_bytes(),
        }
    }

    fn check_partition(&self, partition: u32) -> Result<u32, Status> {
        let q = self.cluster.partitions();
        if partition >= q {
            return Err(status(Error::InvalidArgument(format!(
                "partition {partition} out of range: the cluster has {q}"
            ))));
        }
        Ok(partition)
    }

    /// Refuses traffic from a node the fault switch cut off, traffic meant
    /// for another node (this node took over an address), and traffic from
    /// another cluster (its cluster id header differs from this node's).
    fn check_sender<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let theirs = transport::identity::cluster_of(request.metadata())?;
        let identity = &self.cluster.transport.identity;
        if let (Some(mine), Some(theirs)) = (identity.get(), theirs) {
            if mine != theirs {
                let peer = transport::sender(request)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "a node without id".to_string());
                identity.refused("a call", &peer, theirs);
                return Err(identity.refusal_status(theirs));
            }
        }
        if let Some(to) = transport::recipient(request) {
            if to != self.cluster.me() {
                return Err(Status::failed_precondition(format!(
                    "this is node {}, not {to}: the node at this address was replaced",
                    self.cluster.me()
                )));
            }
        }
        if let Some(from) = transport::sender(request) {
            if self.cluster.transport.faults.blocks_incoming(from) {
                return Err(Status::unavailable(format!(
                    "traffic from {from} is cut by the fault switch"
                )));
            }
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        ringkv_common::check_key(key, self.max_key_bytes).map_err(|e| status(e.into()))
    }

    /// A Replicate request's work, after the sender was checked: keep a
    /// hint (when this node is a fallback) or merge into the key's copy.
    async fn replicate_one(&self, req: pb::ReplicateRequest) -> Result<(), Status> {
        if !req.hint_for.is_empty() {
            self.check_key(&req.key)?;
            let incoming = decode_versions(&req)?;
            self.replica.check_incoming(&incoming).map_err(status)?;
            // This node is a fallback: keep the versions for their replica.
            let target: NodeId = req
                .hint_for
                .parse::<NodeId>()
                .map_err(|e| status(e.into()))?;
            self.hints
                .store(target, req.key, incoming)
                .await
                .map_err(status)?;
            return Ok(());
        }
        let incoming = self.check_merge(&req)?;
        let merged = self
            .replica
            .merge(req.key, incoming)
            .await
            .map_err(status)?;
        if merged.collapsed > 0 {
            self.gate.metrics().siblings_collapsed(merged.collapsed);
        }
        Ok(())
    }

    /// Checks a Replicate request meant for this node's own copy: a valid
    /// key, versions that decode, and a partition this node takes writes for.
    fn check_merge(&self, req: &pb::ReplicateRequest) -> Result<VersionSet, Status> {
        self.check_key(&req.key)?;
        let incoming = decode_versions(req)?;
        self.replica.check_incoming(&incoming).map_err(status)?;
        self.rebalance
            .check_write(self.replica.partition_of(&req.key))
            .map_err(status)?;
        Ok(incoming)
    }

    /// Applies a batch's checked merges as one group; each keeps its own
    /// admission and outcome.
    async fn merge_group(
        &self,
        merges: Vec<(usize, Admitted, Bytes, VersionSet)>,
    ) -> Vec<(usize, pb::BatchResult)> {
        if merges.is_empty() {
            return Vec::new();
        }
        let (admitted, entries): (Vec<_>, Vec<_>) = merges
            .into_iter()
            .map(|(i, admitted, key, incoming)| ((i, admitted), (key, incoming)))
            .unzip();
        let answers: Vec<Result<pb::BatchResult, Status>> =
            match self.replica.merge_group(entries).await {
                Ok(merged) => merged
                    .into_iter()
                    .map(|merged| {
                        let merged = merged.map_err(status)?;
                        if merged.collapsed > 0 {
                            self.gate.metrics().siblings_collapsed(merged.collapsed);
                        }
                        Ok(pb::BatchResult::default())
                    })
                    .collect(),
                Err(e) => vec![Err(status(e)); admitted.len()],
            };
        finish_group(admitted, answers)
    }

    /// Checks a LocalRead request: a valid key of a partition this node
    /// serves reads for.
    fn check_read(&self, key: &[u8]) -> Result<(), Status> {
        self.check_key(key)?;
        self.rebalance
            .check_read(self.replica.partition_of(key))
            .map_err(status)
    }

    /// Admits a batch item as operation `op` and runs its checks; a refusal
    /// is recorded and becomes the item's answer.
    fn admit_checked<T>(
        &self,
        op: &'static str,
        check: impl FnOnce() -> Result<T, Status>,
    ) -> Result<(Admitted, T), pb::BatchResult> {
        let admitted = self.gate.admit(op).map_err(failed)?;
        match check() {
            Ok(checked) => Ok((admitted, checked)),
            Err(refused) => Err(admitted
                .finish::<pb::BatchResult>("", Err(refused))
                .unwrap_or_else(failed)),
        }
    }

    /// Answers a batch's checked reads from one storage lookup.
    async fn read_group(
        &self,
        reads: Vec<(usize, Admitted, Bytes)>,
    ) -> Vec<(usize, pb::BatchResult)> {
        if reads.is_empty() {
            return Vec::new();
        }
        let (admitted, keys): (Vec<_>, Vec<_>) = reads
            .into_iter()
            .map(|(i, admitted, key)| ((i, admitted), key))
            .unzip();
        let answers: Vec<Result<pb::BatchResult, Status>> =
            match self.replica.read_group(keys).await {
                Ok(stored) => stored
                    .into_iter()
                    .map(|read| {
                        let bytes = read.map_err(status)?;
                        self.check_answer(bytes.as_ref().map_or(0, Vec::len))?;
                        Ok(pb::BatchResult {
                            found: bytes.is_some(),
                            version_set: bytes.map(Bytes::from).unwrap_or_default(),
                            ..Default::default()
                        })
                    })
                    .collect(),
                Err(e) => vec![Err(status(e)); admitted.len()],
            };
        finish_group(admitted, answers)
    }

    /// Refuses a read answer of `bytes` stored bytes that one message
    /// cannot carry: the error of that read alone.
    fn check_answer(&self, bytes: usize) -> Result<(), Status> {
        if bytes > self.max_item_bytes {
            return Err(transport::too_large(bytes, self.max_item_bytes));
        }
        Ok(())
    }

    /// A LocalRead request's work, after the sender was checked.
    async fn read_one(&self, req: pb::LocalReadRequest) -> Result<pb::LocalReadResponse, Status> {
        self.check_read(&req.key)?;
        let state = self.replica.read(req.key).await.map_err(status)?;
        Ok(match state {
            None => pb::LocalReadResponse::default(),
            Some(state) => {
                let encoded = state.encode();
                self.check_answer(encoded.len())?;
                pb::LocalReadResponse {
                    found: true,
                    version_set: encoded.into(),
                }
            }
        })
    }
}

/// Decodes the versions of a Replicate request.
fn decode_versions(req: &pb::ReplicateRequest) -> Result<VersionSet, Status> {
    VersionSet::decode(&req.version_set).map_err(|e| {
        status(Error::InvalidArgument(format!(
            "version set from {}: {e}",
            req.from
        )))
    })
}

/// Replaces the read answers past `budget` bytes (in item order, the first
/// always kept) with `retry_alone`, so the response fits its message limit.
/// Only reads that found data are large; nothing else is ever bounced.
fn bounce_overflow(results: &mut [pb::BatchResult], budget: usize) {
    let mut used = 0;
    for (i, result) in results.iter_mut().enumerate() {
        used += result.version_set.len() + result.message.len();
        if i > 0 && used > budget && result.found {
            *result = pb::BatchResult {
                retry_alone: true,
                ..Default::default()
            };
        }
    }
}

/// Records each admitted item of a group with its answer.
fn finish_group(
    admitted: Vec<(usize, Admitted)>,
    answers: Vec<Result<pb::BatchResult, Status>>,
) -> Vec<(usize, pb::BatchResult)> {
    admitted
        .into_iter()
        .zip(answers)
        .map(|((i, admitted), answer)| (i, admitted.finish("", answer).unwrap_or_else(failed)))
        .collect()
}

/// A batch item's answer when it failed.
fn failed(refused: Status) -> pb::BatchResult {
    pb::BatchResult {
        code: refused.code() as i32,
        message: refused.message().to_string(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let admitted = self.gate.admit("replicate")?;
        let result = async {
            self.check_sender(&request)?;
            self.replicate_one(request.into_inner()).await?;
            Ok(Response::new(pb::ReplicateResponse {}))
        }
        .await;
        admitted.finish("", result)
    }

    async fn local_read(
        &self,
        request: Request<pb::LocalReadRequest>,
    ) -> Result<Response<pb::LocalReadResponse>, Status> {
        let admitted = self.gate.admit("local_read")?;
        let result = async {
            self.check_sender(&request)?;
            self.read_one(request.into_inner()).await.map(Response::new)
        }
        .await;
        admitted.finish("", result)
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        self.check_sender(&request)?;
        let items = request.into_inner().items;
        self.gate.metrics().batch_received(items.len());
        let mut results = vec![pb::BatchResult::default(); items.len()];
        // Merges are applied as one group commit and reads as one lookup;
        // hints are kept one by one. Each item is admitted, checked and
        // recorded as its unary call would be.
        let mut merges = Vec::new();
        let mut reads = Vec::new();
        let mut hints = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item.op {
                Some(pb::batch_item::Op::Replicate(req)) if !req.hint_for.is_empty() => {
                    hints.push((i, req))
                }
                Some(pb::batch_item::Op::Replicate(req)) => {
                    match self.admit_checked("replicate", || self.check_merge(&req)) {
                        Ok((admitted, incoming)) => merges.push((i, admitted, req.key, incoming)),
                        Err(refused) => results[i] = refused,
                    }
                }
                Some(pb::batch_item::Op::Read(req)) => {
                    match self.admit_checked("local_read", || self.check_read(&req.key)) {
                        Ok((admitted, ())) => reads.push((i, admitted, req.key)),
                        Err(refused) => results[i] = refused,
                    }
                }
                None => {
                    results[i] = failed(Status::invalid_argument("batch item names no operation"))
                }
            }
        }
        let (merged, read, stored) = futures::join!(
            self.merge_group(merges),
            self.read_group(reads),
            join_all(hints.into_iter().map(|(i, req)| async move {
                let result = match self.gate.admit("replicate") {
                    Ok(admitted) => {
                        let done = self.replicate_one(req).await;
                        admitted.finish("", done.map(|()| pb::BatchResult::default()))
                    }
                    Err(refused) => Err(refused),
                };
                (i, result.unwrap_or_else(failed))
            }))
        );
        for (i, result) in merged.into_iter().chain(read).chain(stored) {
            results[i] = result;
        }
        bounce_overflow(&mut results, self.max_batch_answer_bytes);
        Ok(Response::new(pb::BatchResponse { results }))
    }

    async fn gossip(
        &self,
        request: Request<pb::GossipRequest>,
    ) -> Result<Response<pb::GossipResponse>, Status> {
        self.check_sender(&request)?;
        let theirs = transport::identity::cluster_of(request.metadata())?;
        let sender = transport::sender(&request);
        let mut response = self
            .cluster
            .handle_gossip(request.into_inner(), theirs, sender)
            .map(Response::new)
            .map_err(status)?;
        // The answer says which cluster it comes from, so the sender can
        // refuse it if it is not its own.
        self.cluster
            .transport
            .identity
            .stamp(response.metadata_mut());
        Ok(response)
    }

    async fn get_layout(
        &self,
        request: Request<pb::GetLayoutRequest>,
    ) -> Result<Response<pb::GetLayoutResponse>, Status> {
        self.check_sender(&request)?;
        let layout = self
            .cluster
            .layout()
            .map(|l| l.encode().into())
            .unwrap_or_default();
        Ok(Response::new(pb::GetLayoutResponse { layout }))
    }

    async fn merkle_leaves(
        &self,
        request: Request<pb::MerkleLeavesRequest>,
    ) -> Result<Response<pb::MerkleLeavesResponse>, Status> {
        self.check_sender(&request)?;
        let partition = self.check_partition(request.into_inner().partition)?;
        let summary = self.repair.merkle_leaves(partition).await.map_err(status)?;
        Ok(Response::new(pb::MerkleLeavesResponse {
            root: summary.root,
            leaves: summary.leaves,
            keys: summary.keys,
        }))
    }

    async fn key_digests(
        &self,
        request: Request<pb::KeyDigestsRequest>,
    ) -> Result<Response<pb::KeyDigestsResponse>, Status> {
        self.check_sender(&request)?;
        let req = request.into_inner();
        let partition = self.check_partition(req.partition)?;
        for key in &req.keys {
            self.check_key(key)?;
        }
        let digests = self
            .repair
            .key_digests(partition, req.leaves, req.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::KeyDigestsResponse {
            digests: digests
                .into_iter()
                .map(|(key, digest)| pb::KeyDigest { key, digest })
                .collect(),
        }))
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        self.check_sender(&request)?;
        let req = request.into_inner();
        for k in &req.keys {
            self.check_key(&k.key)?;
        }
        let purged = self
            .repair
            .purge(req.keys.into_iter().map(|k| (k.key, k.digest)).collect())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PurgeResponse { purged }))
    }

    async fn fetch_partition(
        &self,
        request: Request<pb::FetchPartitionRequest>,
    ) -> Result<Response<pb::FetchPartitionResponse>, Status> {
        self.check_sender(&request)?;
        let req = request.into_inner();
        let partition = self.check_partition(req.partition)?;
        if let Some(after) = &req.after {
            self.check_key(after)?;
        }
        let (entries, done, estimated_bytes) = self
            .rebalance
            .serve_chunk(partition, req.after, req.max_bytes as usize)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FetchPartitionResponse {
            entries: entries
                .into_iter()
                .map(|(key, value)| pb::PartitionEntry {
                    key,
                    version_set: value.into(),
                })
                .collect(),
            done,
            estimated_bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn answer(bytes: usize) -> pb::BatchResult {
        pb::BatchResult {
            found: true,
            version_set: vec![7; bytes].into(),
            ..Default::default()
        }
    }

    #[test]
    fn answers_past_the_budget_are_bounced_but_never_the_first() {
        let failed_write = pb::BatchResult {
            code: Code::Unavailable as i32,
            message: "m".repeat(10),
            ..Default::default()
        };
        let mut results = vec![answer(60), answer(30), answer(20), failed_write, answer(5)];
        bounce_overflow(&mut results, 100);
        let bounced: Vec<bool> = results.iter().map(|r| r.retry_alone).collect();
        assert_eq!(bounced, vec![false, false, true, false, true]);
        assert_eq!(
            results[3].code,
            Code::Unavailable as i32,
            "only reads are bounced"
        );
        assert!(
            results[2].version_set.is_empty(),
            "a bounced answer carries no data"
        );

        let mut alone = vec![answer(500)];
        bounce_overflow(&mut alone, 100);
        assert!(!alone[0].retry_alone, "a single answer always goes back");
        assert_eq!(alone[0].version_set.len(), 500);
    }
}
