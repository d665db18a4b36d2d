//! Node and cluster operations: status, layout, workers, hints, repair,
//! membership changes and the test fault switch.

use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;

use crate::kv::check_key;
use crate::types::Context;
use crate::{Client, Error, LocalCopy, Result, DEFAULT_CLIENT_DEADLINE, MAX_MESSAGE_BYTES};

impl Client {
    /// The stored copy of a key on the node at `endpoint` (an index into
    /// the endpoints), without coordination.
    pub async fn local_get(&self, endpoint: usize, key: impl Into<Bytes>) -> Result<LocalCopy> {
        let key = key.into();
        check_key(&key)?;
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        let r = AdminClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .local_get(pb::LocalGetRequest { key })
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

    /// Test clock offset on the node at `endpoint`: its wall clock reads
    /// `offset_ms` milliseconds ahead of (or, negative, behind) the system
    /// clock from now on; 0 puts it back. Like every `SetFaults` call this
    /// also clears the node's fault-switch cuts. Refused unless the node
    /// runs with `debug.fault_injection = true`.
    pub async fn set_clock_offset(&self, endpoint: usize, offset_ms: i64) -> Result<()> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .set_faults(pb::SetFaultsRequest {
                clock_offset_ms: Some(offset_ms),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| self.transport_failed(&address, s, true))
    }

    /// Storage fault point on the node at `endpoint`: its next write-ahead
    /// log sync fails, after which it refuses writes until restarted. Also
    /// clears the node's fault-switch cuts; refused unless the node runs
    /// with `debug.fault_injection = true`.
    pub async fn fail_next_wal_sync(&self, endpoint: usize) -> Result<()> {
        let address = self.endpoint(endpoint)?;
        let ch = self.channel(&address).await?;
        AdminClient::new(ch)
            .set_faults(pb::SetFaultsRequest {
                fail_next_wal_sync: true,
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
}

/// What a new token may do (`ringkv auth token create`).
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    pub name: String,
    /// "read", "write", "admin".
    pub scopes: Vec<String>,
    /// Only keys starting with these bytes.
    pub prefix: Option<Bytes>,
    /// Lifetime; `None`: no expiry.
    pub ttl: Option<Duration>,
}

impl Client {
    /// Creates a client token (admin scope). The answer holds the token
    /// itself, which no node keeps: store it now.
    pub async fn create_token(&self, request: TokenRequest) -> Result<pb::CreateTokenResponse> {
        let req = pb::CreateTokenRequest {
            name: request.name,
            scopes: request.scopes,
            prefix: request.prefix,
            ttl_ms: request
                .ttl
                .map(|t| t.as_millis().max(1) as u64)
                .unwrap_or(0),
        };
        self.with_failover(None, false, DEFAULT_CLIENT_DEADLINE, |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).create_token(req).await }
        })
        .await
    }

    /// Every token of the cluster as the first reachable node holds it
    /// (admin scope).
    pub async fn list_tokens(&self) -> Result<Vec<pb::TokenInfo>> {
        self.with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| async move {
            AdminClient::new(ch)
                .list_tokens(pb::ListTokensRequest {})
                .await
        })
        .await
        .map(|r| r.tokens)
    }

    /// Revokes a token by id (admin scope). Returns false when it was
    /// revoked already.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let req = pb::RevokeTokenRequest { id: id.to_string() };
        self.with_failover(None, true, DEFAULT_CLIENT_DEADLINE, |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).revoke_token(req).await }
        })
        .await
        .map(|r| r.revoked)
    }
}
