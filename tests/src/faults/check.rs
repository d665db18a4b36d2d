//! The checker: every acknowledged write must be held by each replica of
//! its partition, readable with R = ALL and on at least one node; every
//! write refused with `UNAVAILABLE` must be on none.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::stream::{self, StreamExt as _};
use ringkv_client::{Client, Level, RequestOptions};
use ringkv_proto::v1 as pb;

use crate::{partition_of, TestCluster};

/// Keys the checker examines at once.
const CHECK_CONCURRENCY: usize = 16;

/// Tries of the R = ALL read of one key before it counts as unreadable.
const READ_ATTEMPTS: usize = 3;

/// Pause between two tries of one read.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What the checker found for the acknowledged writes.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes held by no node and not readable: lost.
    pub lost: Vec<String>,
    /// Acknowledged writes an R = ALL read did not return.
    pub unreadable: Vec<String>,
    /// (key, replica) where a replica of the key's partition lacks it.
    pub under_replicated: Vec<(String, String)>,
    /// Keys read back with more than one sibling, though written once.
    pub extra_siblings: Vec<String>,
    /// Writes refused with `UNAVAILABLE` ("nothing was applied") that some
    /// node holds nevertheless.
    pub refused_but_present: Vec<String>,
}

/// Checks every acknowledged write: held by each replica of its
/// partition, readable with R = ALL, and on at least one node. Local
/// copies are looked at before the read, so read repair cannot hide a
/// replica that was missing the write.
pub async fn check(cluster: &TestCluster, acknowledged: &[(String, String)]) -> Result<Verdict> {
    let layout = cluster.client().layout().await?;
    let locals: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let reader = cluster.client();
    let outcomes: Vec<Result<KeyOutcome>> = stream::iter(acknowledged)
        .map(|(key, value)| check_key(cluster, &layout, &locals, &reader, key, value))
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut verdict = Verdict::default();
    for outcome in outcomes {
        let o = outcome?;
        if o.holders.is_empty() && !o.readable {
            verdict.lost.push(o.key.clone());
        }
        if !o.readable {
            verdict.unreadable.push(o.key.clone());
        }
        if o.siblings > 1 {
            verdict.extra_siblings.push(o.key.clone());
        }
        for replica in o.missing_on {
            verdict.under_replicated.push((o.key.clone(), replica));
        }
    }
    for list in [
        &mut verdict.lost,
        &mut verdict.unreadable,
        &mut verdict.extra_siblings,
    ] {
        list.sort();
    }
    verdict.under_replicated.sort();
    Ok(verdict)
}

/// Keys of `refused` writes that some node holds: each was answered
/// `UNAVAILABLE`, which promises it was applied nowhere. Looks at every
/// node's local copy (`Admin.LocalGet`), so it must run after the
/// cluster has healed and hints have drained.
pub async fn refused_but_present(cluster: &TestCluster, refused: &[String]) -> Result<Vec<String>> {
    let locals: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let held: Vec<Result<Option<String>>> = stream::iter(refused)
        .map(|key| {
            let locals = &locals;
            async move {
                for (i, local) in locals.iter().enumerate() {
                    let copy = local
                        .local_get(0, key.clone())
                        .await
                        .with_context(|| format!("Admin.LocalGet {key} on node {i}"))?;
                    if !copy.versions.is_empty() {
                        return Ok(Some(key.clone()));
                    }
                }
                Ok(None)
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut present = Vec::new();
    for key in held {
        present.extend(key?);
    }
    present.sort();
    Ok(present)
}

/// What the checker found for one key.
struct KeyOutcome {
    key: String,
    /// Node indexes holding the acknowledged value.
    holders: BTreeSet<usize>,
    /// Replica ids (by the layout) lacking it.
    missing_on: Vec<String>,
    readable: bool,
    siblings: usize,
}

async fn check_key(
    cluster: &TestCluster,
    layout: &pb::LayoutResponse,
    locals: &[Client],
    reader: &Client,
    key: &str,
    value: &str,
) -> Result<KeyOutcome> {
    let mut holders = BTreeSet::new();
    for (i, local) in locals.iter().enumerate() {
        let copy = local
            .local_get(0, key.to_string())
            .await
            .with_context(|| format!("Admin.LocalGet {key} on node {i}"))?;
        if copy
            .versions
            .iter()
            .any(|v| !v.tombstone && v.value.as_ref() == value.as_bytes())
        {
            holders.insert(i);
        }
    }
    let p = partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
    let missing_on = layout.assignments[p as usize]
        .replicas
        .iter()
        .filter(|id| !cluster.index_of(id).is_some_and(|i| holders.contains(&i)))
        .cloned()
        .collect();
    let mut readable = false;
    let mut siblings = 0;
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(READ_RETRY_PAUSE).await;
        }
        if let Ok(got) = reader
            .get(key.to_string(), RequestOptions::level(Level::All), false)
            .await
        {
            readable = got
                .siblings
                .iter()
                .any(|s| s.value.as_ref() == value.as_bytes());
            siblings = got.siblings.len();
            break;
        }
    }
    Ok(KeyOutcome {
        key: key.to_string(),
        holders,
        missing_on,
        readable,
        siblings,
    })
}
