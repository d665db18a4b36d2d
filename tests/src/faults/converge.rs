//! Convergence once the faults are over: replicas compared by their
//! Merkle roots, the waits for hints to drain and for replicas to agree,
//! and an explicit repair on every node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_proto::v1 as pb;

use crate::TestCluster;

/// How long hints may take to drain after the last heal.
const HINT_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Polling interval of the hint wait.
const POLL: Duration = Duration::from_millis(250);

/// Polling interval of the convergence wait: each poll makes every node
/// scan all its partitions for their Merkle roots, which competes with
/// the anti-entropy being waited for.
const CONVERGE_POLL: Duration = Duration::from_secs(1);

/// Partitions whose replicas (by the layout) do not all report the same
/// Merkle root; a replica that reports nothing for a partition it should
/// hold counts as differing.
pub async fn partitions_differing(cluster: &TestCluster) -> Result<usize> {
    let layout = cluster.client().layout().await?;
    let mut roots: Vec<BTreeMap<u32, u64>> = Vec::with_capacity(cluster.nodes.len());
    for (i, node) in cluster.nodes.iter().enumerate() {
        let reported = node
            .client()
            .merkle_roots(0)
            .await
            .with_context(|| format!("Admin.MerkleRoots on node {i}"))?;
        roots.push(reported.iter().map(|r| (r.partition, r.root)).collect());
    }
    let mut differing = 0;
    for (p, assignment) in layout.assignments.iter().enumerate() {
        let p = p as u32;
        let seen: Vec<Option<u64>> = assignment
            .replicas
            .iter()
            .map(|id| cluster.index_of(id).and_then(|i| roots[i].get(&p).copied()))
            .collect();
        if seen.iter().any(Option::is_none) || seen.windows(2).any(|w| w[0] != w[1]) {
            differing += 1;
        }
    }
    Ok(differing)
}

/// Waits until every partition's replicas agree, up to `bound` after
/// `since`; returns how long after `since` they did.
pub(super) async fn wait_replicas_agree(
    cluster: &TestCluster,
    since: Instant,
    bound: Duration,
) -> Result<Duration> {
    loop {
        let differing = partitions_differing(cluster).await?;
        if differing == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > bound {
            bail!("{differing} partitions still differ between replicas {bound:?} after the last heal");
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
}

/// Waits until no node holds hints; returns how long it took.
pub(super) async fn wait_hints_drained(cluster: &TestCluster) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let pending = cluster.hints_pending().await?;
        if pending == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > HINT_DRAIN_TIMEOUT {
            bail!("{pending} hints still pending after {HINT_DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `Admin.StartRepair` over all partitions on every node; returns
/// the keys repaired and the errors reported.
pub async fn repair_everywhere(cluster: &TestCluster) -> Result<(u64, Vec<String>)> {
    let mut repaired = 0;
    let mut errors = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let report: pb::StartRepairResponse = node
            .client()
            .repair(0, None)
            .await
            .with_context(|| format!("Admin.StartRepair on node {i}"))?;
        repaired += report.keys_repaired;
        errors.extend(report.errors.into_iter().map(|e| format!("node {i}: {e}")));
    }
    Ok((repaired, errors))
}
