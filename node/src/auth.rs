//! This node's copy of the cluster's client tokens: checked on every
//! client call when `auth.enabled`, changed by the Admin token calls,
//! kept in the `meta` column family, and spread to every member.
//!
//! The table is a CRDT (`ringkv_core::auth`), so spreading it needs no
//! coordinator: the "token-sync" worker exchanges tables with one random
//! live member every gossip interval, and a node that creates or revokes a
//! token also pushes its table to every live member at once, so a
//! revocation is in force on every reachable node within one round trip
//! and on the others within a few gossip rounds of their return. A node
//! cut off from the one where a token was revoked keeps accepting it
//! until it hears of the revocation (docs/security.md).
//!
//! The root token is not in the table: each node reads its hash from
//! `auth.root_token_file` at start and on reload.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rand::seq::IndexedRandom;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{info, warn};

use crate::membership::Cluster;
use crate::worker::{Step, Worker, WorkerHandle};
use ringkv_common::clock::wall_clock_ms;
use ringkv_core::auth::{self, Principal, TokenRecord, TokenSpec, TokenTable};
use ringkv_core::error::{Code, Error, Result};
use ringkv_core::version::NodeId;
use ringkv_peer::{Failure, Request, Response};
use ringkv_storage::{Cf, Engine, WriteBatch};

/// Where the table is stored in the `meta` column family.
const TABLE_KEY: &[u8] = b"auth_tokens";

/// How long one table exchange with a peer may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Tokens {
    engine: Arc<dyn Engine>,
    table: RwLock<TokenTable>,
    /// SHA-256 of the root token; `None` until one is configured.
    root: RwLock<Option<[u8; 32]>>,
    /// Whether client calls need a token (`auth.enabled`).
    enabled: bool,
    /// Held from reading the table to installing the change, so two
    /// changes never store copies that each miss the other's edit.
    changing: tokio::sync::Mutex<()>,
}

impl Tokens {
    /// Loads the stored table.
    pub fn open(engine: Arc<dyn Engine>, enabled: bool) -> Result<Tokens> {
        let table = match engine.get(Cf::Meta, TABLE_KEY)? {
            Some(bytes) => TokenTable::decode(&bytes, Error::Corrupt)?,
            None => TokenTable::default(),
        };
        Ok(Tokens {
            engine,
            table: RwLock::new(table),
            root: RwLock::new(None),
            enabled,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sets the root token (from `auth.root_token_file`).
    pub fn set_root(&self, token: &str) -> Result<()> {
        let token = token.trim();
        if token.chars().count() < auth::MIN_ROOT_TOKEN_CHARS {
            return Err(Error::Config(format!(
                "the root token is {} characters; use at least {} random ones",
                token.chars().count(),
                auth::MIN_ROOT_TOKEN_CHARS
            )));
        }
        *self.root.write().unwrap_or_else(|p| p.into_inner()) = Some(auth::hash(token));
        Ok(())
    }

    /// Who a presented token belongs to, now.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        let root = *self.root.read().unwrap_or_else(|p| p.into_inner());
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .authenticate(token, root.as_ref(), wall_clock_ms())
    }

    /// Every record, revoked ones included.
    pub fn list(&self) -> Vec<TokenRecord> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .records()
            .cloned()
            .collect()
    }

    /// The table in its wire encoding.
    pub fn encoded(&self) -> Bytes {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .encode()
            .into()
    }

    /// Creates a token: stored before its secret is returned.
    pub async fn create(&self, spec: &TokenSpec) -> Result<(String, TokenRecord)> {
        let (token, record) = auth::mint(spec, wall_clock_ms(), &mut rand::rng())?;
        self.change(|table| table.insert(record.clone()).map(|_| true))
            .await?;
        info!(token = %auth::format_id(record.id), name = %record.name, scopes = %record.scopes, "token created");
        Ok((token, record))
    }

    /// Revokes a token. Returns false when it was revoked already.
    pub async fn revoke(&self, id: u64) -> Result<bool> {
        let revoked = self.change(|table| table.revoke(id)).await?;
        info!(token = %auth::format_id(id), "token revoked");
        Ok(revoked)
    }

    /// Merges a peer's table (its wire encoding). Returns whether this
    /// node's table changed.
    pub async fn merge(&self, encoded: &[u8]) -> Result<bool> {
        let theirs = TokenTable::decode(encoded, Error::InvalidArgument)?;
        self.change(|table| Ok(table.merge(&theirs))).await
    }

    /// Applies `edit` to a copy of the table, stores the copy when it
    /// changed, then installs it: a change is never visible before it is
    /// durable. Changes are rare (operators, and merges that bring news),
    /// so they run one at a time.
    async fn change(&self, edit: impl FnOnce(&mut TokenTable) -> Result<bool>) -> Result<bool> {
        let _one_at_a_time = self.changing.lock().await;
        let mut next = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        if !edit(&mut next)? {
            return Ok(false);
        }
        let engine = self.engine.clone();
        let encoded = next.encode();
        let stored = next.clone();
        tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, TABLE_KEY, encoded);
            engine.write(batch)
        })
        .await??;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = stored;
        Ok(true)
    }
}

/// Sends this node's table to `to` and merges the answer.
async fn exchange(cluster: &Cluster, tokens: &Tokens, to: NodeId) -> Result<()> {
    let request = Request::SyncTokens(tokens.encoded());
    match cluster.peers().call(to, request, SYNC_TIMEOUT).await {
        Ok(Response::Tokens(Some(theirs))) => tokens.merge(&theirs).await.map(|_| ()),
        Ok(Response::Tokens(None)) => Ok(()),
        Ok(other) => Err(Error::Internal(format!(
            "token sync: {to} answered with {}",
            other.name()
        ))),
        // A member that does not know its cluster yet (just joined)
        // refuses; it is asked again in a later round.
        Err(e) if e.failure == Failure::Refused(Code::FailedPrecondition) => Ok(()),
        Err(e) => Err(Error::Unreachable(format!("token sync with {to}: {e}"))),
    }
}

/// Pushes this node's table to every live member at once (after a create
/// or a revoke). Members it cannot reach learn it from the sync worker.
pub async fn push_to_all(cluster: &Cluster, tokens: &Tokens) -> usize {
    let me = cluster.me();
    let targets: Vec<NodeId> = cluster
        .member_ids()
        .into_iter()
        .filter(|&n| n != me && cluster.is_alive(n))
        .collect();
    let results =
        futures::future::join_all(targets.iter().map(|&n| exchange(cluster, tokens, n))).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        warn!(
            failed,
            "a token change did not reach every live member at once; the token-sync worker will bring it"
        );
    }
    targets.len() - failed
}

/// The receiving side of a sync: merges the sender's table and answers
/// with this node's when the two differ.
pub async fn answer_sync(tokens: &Tokens, theirs: &[u8]) -> Result<Response> {
    tokens.merge(theirs).await?;
    let mine = tokens.encoded();
    Ok(Response::Tokens((mine.as_ref() != theirs).then_some(mine)))
}

/// The "token-sync" worker: one table exchange with a random live member
/// every gossip interval.
pub struct SyncWorker {
    cluster: Arc<Cluster>,
    tokens: Arc<Tokens>,
    handle: Arc<WorkerHandle>,
    interval: Interval,
}

impl SyncWorker {
    pub fn new(
        cluster: Arc<Cluster>,
        tokens: Arc<Tokens>,
        every: Duration,
        handle: Arc<WorkerHandle>,
    ) -> Self {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            cluster,
            tokens,
            handle,
            interval,
        }
    }
}

impl Worker for SyncWorker {
    async fn work(&mut self) -> Result<Step> {
        // Tokens are exchanged within one cluster only: not before this
        // node knows which.
        if self.cluster.peers().identity.get().is_none() {
            return Ok(Step::Idle);
        }
        let me = self.cluster.me();
        let live: Vec<NodeId> = self
            .cluster
            .member_ids()
            .into_iter()
            .filter(|&n| n != me && self.cluster.is_alive(n))
            .collect();
        let Some(&peer) = live.choose(&mut rand::rng()) else {
            return Ok(Step::Idle);
        };
        exchange(&self.cluster, &self.tokens, peer).await?;
        self.handle.add("exchanges", 1);
        self.handle.set(
            "tokens",
            self.tokens
                .table
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len() as u64,
        );
        Ok(Step::Idle)
    }

    async fn wait(&mut self) {
        self.interval.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::auth::{Scope, Scopes};
    use ringkv_storage::MemoryEngine;

    fn spec() -> TokenSpec {
        TokenSpec {
            name: "reader".into(),
            scopes: Scopes::of(&[Scope::Read]),
            prefix: None,
            ttl_ms: None,
        }
    }

    #[tokio::test]
    async fn a_created_token_is_stored_and_survives_a_restart_and_so_does_its_revocation() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let tokens = Tokens::open(engine.clone(), true).unwrap();
        let (token, record) = tokens.create(&spec()).await.unwrap();
        assert_eq!(tokens.authenticate(&token).unwrap().token, Some(record.id));
        let reopened = Tokens::open(engine.clone(), true).unwrap();
        assert!(reopened.authenticate(&token).is_ok());
        assert!(reopened.revoke(record.id).await.unwrap());
        let reopened = Tokens::open(engine, true).unwrap();
        assert!(reopened.authenticate(&token).is_err());
    }

    #[tokio::test]
    async fn a_sync_answers_only_when_the_tables_differ_and_refuses_garbage() {
        let a = Tokens::open(Arc::new(MemoryEngine::new()), true).unwrap();
        let b = Tokens::open(Arc::new(MemoryEngine::new()), true).unwrap();
        let (token, _) = a.create(&spec()).await.unwrap();
        // b learns a's token, and has nothing a lacks.
        assert_eq!(
            answer_sync(&b, &a.encoded()).await.unwrap(),
            Response::Tokens(None)
        );
        assert!(b.authenticate(&token).is_ok());
        // b creates one; a's sync brings it back in the answer.
        let (other, _) = b.create(&spec()).await.unwrap();
        match answer_sync(&b, &a.encoded()).await.unwrap() {
            Response::Tokens(Some(theirs)) => assert!(a.merge(&theirs).await.unwrap()),
            other => panic!("expected b's table, got {other:?}"),
        }
        assert!(a.authenticate(&other).is_ok());
        assert_eq!(
            answer_sync(&a, b"garbage").await.unwrap_err().code(),
            ringkv_core::error::Code::InvalidArgument
        );
    }

    #[test]
    fn a_short_root_token_is_refused() {
        let tokens = Tokens::open(Arc::new(MemoryEngine::new()), true).unwrap();
        assert!(tokens.set_root("short").is_err());
        tokens
            .set_root("0123456789abcdef0123456789abcdef\n")
            .unwrap();
        assert_eq!(
            tokens
                .authenticate("0123456789abcdef0123456789abcdef")
                .unwrap(),
            Principal::root()
        );
    }
}
