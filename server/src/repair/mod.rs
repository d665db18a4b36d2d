//! Anti-entropy and tombstone purge (being written).

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::membership::Cluster;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::server::Shutdown;
use crate::worker::WorkerHandle;

/// Merkle summary of one partition on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleSummary {
    pub root: u64,
    pub leaves: Vec<u64>,
    pub keys: u64,
}

/// What a repair pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub partitions: u32,
    pub partitions_differing: u32,
    pub keys_repaired: u64,
    pub tombstones_purged: u64,
    pub errors: Vec<String>,
}

pub struct Repair {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Repair {
    pub fn new(
        replica: Arc<Replica>,
        cluster: Arc<Cluster>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Arc<Repair> {
        Arc::new(Repair {
            replica,
            cluster,
            config,
            metrics,
        })
    }

    pub async fn merkle_leaves(&self, _partition: u32) -> Result<MerkleSummary> {
        Err(Error::Internal("anti-entropy not built yet".into()))
    }

    pub async fn key_digests(
        &self,
        _partition: u32,
        _leaves: Vec<u32>,
        _keys: Vec<Bytes>,
    ) -> Result<Vec<(Bytes, u64)>> {
        Err(Error::Internal("anti-entropy not built yet".into()))
    }

    pub async fn purge(&self, _keys: Vec<(Bytes, u64)>) -> Result<u32> {
        Err(Error::Internal("anti-entropy not built yet".into()))
    }

    pub async fn repair_now(&self, _partition: Option<u32>) -> Result<RepairReport> {
        Err(Error::Internal("anti-entropy not built yet".into()))
    }

    pub async fn merkle_roots(&self) -> Result<Vec<(u32, MerkleSummary)>> {
        Err(Error::Internal("anti-entropy not built yet".into()))
    }

    pub async fn run(self: Arc<Self>, _handle: Arc<WorkerHandle>, mut shutdown: Shutdown) {
        let _ = (&self.replica, &self.cluster, &self.config, &self.metrics);
        shutdown.recv().await;
    }
}
