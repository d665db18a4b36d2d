//! Membership changes under fire: a spare joins, a member leaves.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cluster::Cluster;
use ringkv_client::Client;

/// How long a staged leave may take to show in the plan, and a commit to
/// be accepted, while other faults are in force.
const STAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a member may take to show its layout while a leave finishes.
const LAYOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a leave may take to finish once healing waits for it.
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);

/// Starts spare slot `node`; with `cluster.auto_join` (the default) the
/// cluster plans and commits it by itself.
pub async fn join(cluster: &mut Cluster, node: usize) -> Result<()> {
    super::disk::clear_dir(&cluster.nodes[node].data_dir)?;
    cluster.nodes[node].start().await?;
    cluster.members.insert(node);
    Ok(())
}

/// Stages the departure of member `node` through another member (one of
/// `via`, members no fault holds), waits until the plan shows it, and
/// commits it.
pub async fn leave(cluster: &mut Cluster, node: usize, via: &[usize]) -> Result<()> {
    let id = cluster.nodes[node].id.clone();
    let via = via
        .iter()
        .copied()
        .find(|&i| i != node)
        .context("no other free member to stage a leave through")?;
    let admin = cluster.nodes[via].client();
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < STAGE_TIMEOUT {
        match stage_and_commit(&admin, &id).await {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("node {node} could not be made to leave within {STAGE_TIMEOUT:?}: {last}")
}

/// Stages the leave of node `id` through `admin` and commits it, once the
/// plan shows that leave. Both steps can be repeated: a leave staged again
/// stays staged, and a commit names the layout its plan was made against.
async fn stage_and_commit(admin: &Client, id: &str) -> Result<()> {
    admin.leave(Some(id)).await?;
    let plan = admin.plan().await?;
    // The plan may hold another node's leave that an earlier attempt
    // staged; committing it too is what the cluster would do, and the
    // nemesis finishes that leave as well.
    if !plan
        .changes
        .iter()
        .any(|c| c.starts_with("leave ") && c.contains(id))
    {
        bail!("the plan does not show the leave of {id} yet");
    }
    admin.commit(plan.current_version).await?;
    Ok(())
}

/// Once member `node` holds no partition in the layout every running
/// member holds (and no transfer is in progress), stops it and wipes its
/// filesystem: it is a spare again, and would come back with a new id.
/// Until then a leave whose staging or commit did not get through under
/// the other faults is staged and committed again. Returns `false` if it
/// is not done yet (after waiting, when `wait`).
pub async fn finish_leave(cluster: &mut Cluster, node: usize, wait: bool) -> Result<bool> {
    let started = Instant::now();
    loop {
        if left(cluster, node).await.unwrap_or(false) {
            let leaver = &mut cluster.nodes[node];
            leaver.kill();
            super::disk::clear_dir(&leaver.data_dir)?;
            leaver.id.clear();
            cluster.members.remove(&node);
            return Ok(true);
        }
        let id = cluster.nodes[node].id.clone();
        if let Some(via) = cluster.running().into_iter().find(|&i| i != node) {
            let admin = cluster.nodes[via].client();
            let _ = tokio::time::timeout(LAYOUT_TIMEOUT, stage_and_commit(&admin, &id)).await;
        }
        if !wait {
            return Ok(false);
        }
        if started.elapsed() > FINISH_TIMEOUT {
            bail!("node {node} still holds partitions {FINISH_TIMEOUT:?} after the heal began");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn left(cluster: &Cluster, node: usize) -> Result<bool> {
    let id = &cluster.nodes[node].id;
    for i in cluster.running().into_iter().filter(|&i| i != node) {
        // A paused member does not answer: not done yet, ask next step.
        let layout = tokio::time::timeout(LAYOUT_TIMEOUT, cluster.nodes[i].client().layout())
            .await
            .context("a member did not answer")??;
        let holds = layout
            .assignments
            .iter()
            .any(|a| a.replicas.iter().any(|r| r == id));
        if holds || layout.previous_version != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}
