//! What a load runs against: a ringkv cluster, or one of the yardsticks
//! `ringkv-bench compare` sets beside it.
//!
//! The load loop ([`crate::workload`]) only needs two operations, a get
//! that may return a causal context and a put that may carry one back, so
//! every system is driven by the same workers, keys, values and histograms
//! and differs only here:
//!
//! - [`Target::Ringkv`]: the client library, with the run's consistency
//!   levels and partition-aware routing (or without, `--no-routing`);
//! - [`Target::Etcd`]: etcd's KV API ([`crate::etcd`]);
//! - [`Target::Echo`]: the echo service, the RPC ceiling ([`crate::echo`]);
//! - [`Target::Storage`]: ringkv's RocksDB engine in this process, called
//!   through the `Engine` trait from the blocking pool exactly as a
//!   replica calls it, the storage ceiling. It stores the raw value (a
//!   replica stores an encoded version set a few dozen bytes larger) and
//!   has no network, versions or replication.
//!
//! Failures become an [`OpError`] whose `kind` is what the report counts:
//! for ringkv, the client library's classification (which maps onto gRPC
//! status codes, see `docs/benchmarks.md`); for the gRPC yardsticks, the
//! status code itself in snake case, or `transport` when the call never got
//! an answer.

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use ringkv_client::{Client, Context, PutOptions, RequestOptions};
use ringkv_core::ring::partition_of;
use ringkv_storage::{data_key, Cf, Engine, RocksEngine, StorageOptions, SyncMode};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::echo::EchoClient;
use crate::etcd::EtcdKv;
use crate::report::error_kind;

/// Time allowed to open a connection to a yardstick server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Partitions the storage target spreads keys over: the server's default
/// Q, so keys carry the same 4-byte partition prefix a replica writes.
const STORAGE_PARTITIONS: u32 = 256;

/// The answer to a get.
pub struct Fetched {
    pub found: bool,
    /// The causal context to send back with a write of the same key
    /// (ringkv only; `None` elsewhere or when the key has no versions).
    pub context: Option<Bytes>,
}

/// A failed operation, as the report counts it.
#[derive(Debug)]
pub struct OpError {
    /// Stable snake_case name: the key of `errors_by_kind`.
    pub kind: &'static str,
    /// What the server or library said, kept for the first error of each
    /// operation type.
    pub message: String,
}

impl OpError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        OpError {
            kind,
            message: message.into(),
        }
    }
}

/// A system under load.
pub enum Target {
    Ringkv {
        client: Client,
        /// Consistency of reads (`-r`), timeout.
        read: RequestOptions,
        /// Consistency of writes (`-w`), timeout.
        write: RequestOptions,
    },
    Etcd(EtcdKv),
    Echo(EchoClient),
    Storage(StorageTarget),
}

impl Target {
    pub async fn get(&self, key: Bytes) -> Result<Fetched, OpError> {
        match self {
            Target::Ringkv { client, read, .. } => match client.get(key, *read, false).await {
                Ok(got) => Ok(Fetched {
                    found: got.found(),
                    context: (!got.context.is_empty()).then_some(got.context.0),
                }),
                Err(e) => Err(OpError::new(error_kind(&e), e.to_string())),
            },
            Target::Etcd(etcd) => etcd.get(key).await,
            Target::Echo(echo) => echo.get(key).await.map(|()| Fetched {
                found: true,
                context: None,
            }),
            Target::Storage(storage) => storage.get(key).await,
        }
    }

    /// A write of `value`; with a `context` from an earlier get it
    /// supersedes exactly what that get saw (ringkv), otherwise it is a
    /// blind overwrite.
    pub async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        context: Option<Bytes>,
    ) -> Result<(), OpError> {
        match self {
            Target::Ringkv { client, write, .. } => {
                let opts = PutOptions {
                    consistency: *write,
                    context: context.map(Context),
                    ttl: None,
                };
                client
                    .put(key, value, opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| OpError::new(error_kind(&e), e.to_string()))
            }
            Target::Etcd(etcd) => etcd.put(key, value).await,
            Target::Echo(echo) => echo.put(key, value).await,
            Target::Storage(storage) => storage.put(key, value).await,
        }
    }
}

/// ringkv's RocksDB engine, opened in this process.
pub struct StorageTarget {
    engine: Arc<dyn Engine>,
    /// Keeps a temporary data directory alive; declared after `engine` so
    /// the database closes before its directory is removed.
    _dir: Option<TempDir>,
}

impl StorageTarget {
    /// Opens the engine in `dir`, or in a fresh temporary directory (removed
    /// when the target is dropped) when `dir` is `None`.
    pub fn open(dir: Option<&Path>, sync: SyncMode) -> Result<Self> {
        let (path, temp) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("ringkv-bench-storage-")
                    .tempdir()
                    .context("creating a temporary directory for RocksDB")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let opts = StorageOptions {
            sync,
            ..StorageOptions::default()
        };
        let engine = RocksEngine::open(&path, &opts)
            .with_context(|| format!("opening RocksDB in {}", path.display()))?;
        Ok(StorageTarget {
            engine: Arc::new(engine),
            _dir: temp,
        })
    }

    fn stored_key(key: &[u8]) -> Vec<u8> {
        data_key(partition_of(key, STORAGE_PARTITIONS), key)
    }

    async fn get(&self, key: Bytes) -> Result<Fetched, OpError> {
        let engine = Arc::clone(&self.engine);
        let found = tokio::task::spawn_blocking(move || {
            engine
                .get(Cf::Data, &Self::stored_key(&key))
                .map(|v| v.is_some())
        })
        .await
        .map_err(|e| OpError::new("panicked", e.to_string()))?
        .map_err(|e| OpError::new("internal", e.to_string()))?;
        Ok(Fetched {
            found,
            context: None,
        })
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<(), OpError> {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || {
            let mut batch = ringkv_storage::WriteBatch::new();
            batch.put(Cf::Data, Self::stored_key(&key), value.to_vec());
            engine.write(batch)
        })
        .await
        .map_err(|e| OpError::new("panicked", e.to_string()))?
        .map_err(|e| OpError::new("internal", e.to_string()))
    }
}

/// A lazily connecting channel to `host:port` with Nagle off, for the
/// yardstick clients (ringkv's client manages its own channels).
pub fn connect_lazy(endpoint: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}

/// The report's name for a failed gRPC call: `transport` when no answer
/// came back (the status wraps a connection error), else the status code.
pub fn status_kind(status: &tonic::Status) -> &'static str {
    use tonic::Code;
    if status.source().is_some() {
        return "transport";
    }
    match status.code() {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
