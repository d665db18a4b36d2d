//! Checkers for the end of a cluster change: layout shape and balance,
//! reads of every acknowledged key, and where each key is stored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::stream::{self, StreamExt as _};
use ringkv_client::{Client, Level, RequestOptions};
use ringkv_proto::v1 as pb;

use super::load::{LoadReport, REQUEST_TIMEOUT};
use super::{layout_members, short, Settled, EXAMPLES};
use crate::{partition_of, TestCluster};

/// Keys the checkers examine at once.
const CHECK_CONCURRENCY: usize = 16;

/// Members whose share of the layout's partition replicas is more than
/// 10% away from their weight's share (weights as the layout's members
/// report them).
pub fn share_problems(layout: &pb::LayoutResponse) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for a in &layout.assignments {
        for r in &a.replicas {
            *counts.entry(r.clone()).or_default() += 1;
        }
    }
    let weight = |id: &str| {
        layout
            .members
            .iter()
            .find(|m| m.node_id == id)
            .map(|m| u64::from(m.weight.max(1)))
            .unwrap_or(1)
    };
    let total_weight: u64 = counts.keys().map(|id| weight(id)).sum();
    let total: u64 = counts.values().sum();
    let mut out = Vec::new();
    for (id, &n) in &counts {
        let target = total as f64 * weight(id) as f64 / total_weight as f64;
        let deviation = (n as f64 - target) / target;
        if deviation.abs() > 0.10 {
            out.push(format!(
                "{id} (weight {}) holds {n} of {total} partition replicas; its weight share is {target:.1} ({:+.1}%)",
                weight(id),
                deviation * 100.0
            ));
        }
    }
    out
}

/// Per member, replicas held and the weight share, for printing.
pub fn shares(layout: &pb::LayoutResponse) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for a in &layout.assignments {
        for r in &a.replicas {
            *counts.entry(r.clone()).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|(id, n)| {
            let w = layout
                .members
                .iter()
                .find(|m| m.node_id == *id)
                .map(|m| m.weight)
                .unwrap_or(0);
            format!("{id} w{w}: {n}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every layout property a settled layout must have: N distinct replicas
/// per partition, all of them members in `members`.
pub fn layout_problems(layout: &pb::LayoutResponse, members: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    if layout.assignments.len() != layout.partitions as usize {
        out.push(format!(
            "the layout has {} rows for {} partitions",
            layout.assignments.len(),
            layout.partitions
        ));
    }
    for a in &layout.assignments {
        let distinct: BTreeSet<&String> = a.replicas.iter().collect();
        if a.replicas.len() != layout.replication as usize || distinct.len() != a.replicas.len() {
            out.push(format!(
                "partition {} has replicas {:?}, not {} distinct nodes",
                a.partition, a.replicas, layout.replication
            ));
        }
        if let Some(stranger) = a.replicas.iter().find(|r| !members.contains(*r)) {
            out.push(format!(
                "partition {} is assigned to {stranger}, which should not be a member",
                a.partition
            ));
        }
    }
    out
}

/// Where each key is stored, against `layout`: every replica of its
/// partition holds one of its acceptable values, and no other running node
/// holds the key at all.
pub async fn placement_problems(
    cluster: &TestCluster,
    layout: &pb::LayoutResponse,
    keys: &[(String, Vec<String>)],
) -> Result<Vec<String>> {
    let locals: Vec<Option<Client>> = cluster
        .nodes
        .iter()
        .map(|n| n.pid().is_some().then(|| n.client()))
        .collect();
    let results: Vec<Result<Vec<String>>> = stream::iter(keys)
        .map(|(key, acceptable)| {
            let locals = &locals;
            async move {
                let p = partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
                let replicas = &layout
                    .assignments
                    .iter()
                    .find(|a| a.partition == p)
                    .with_context(|| format!("partition {p} has no row in the layout"))?
                    .replicas;
                let mut problems = Vec::new();
                for (i, local) in locals.iter().enumerate() {
                    let Some(local) = local else { continue };
                    let copy = local
                        .local_get(0, key.clone())
                        .await
                        .with_context(|| format!("Admin.LocalGet {key} on node {i}"))?;
                    let id = &cluster.ids[i];
                    if replicas.contains(id) {
                        let holds = copy.versions.iter().any(|v| {
                            !v.tombstone && acceptable.iter().any(|a| a.as_bytes() == v.value)
                        });
                        if !holds {
                            problems.push(format!(
                                "{key} (partition {p}) is missing on its replica {id} (node {i}; found = {})",
                                copy.found
                            ));
                        }
                    } else if copy.found {
                        problems.push(format!(
                            "{key} (partition {p}) is still stored on {id} (node {i}), which is not one of its replicas {replicas:?}"
                        ));
                    }
                }
                Ok(problems)
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    out.sort();
    Ok(out)
}

/// [`placement_problems`] until there are none or `timeout` passes (old
/// replicas delete what they no longer own in the background, after they
/// learn the settled layout); returns the last problems found.
pub async fn wait_placement(
    cluster: &TestCluster,
    layout: &pb::LayoutResponse,
    keys: &[(String, Vec<String>)],
    timeout: Duration,
) -> Result<(Vec<String>, Duration)> {
    let started = Instant::now();
    loop {
        let problems = placement_problems(cluster, layout, keys).await?;
        if problems.is_empty() || started.elapsed() > timeout {
            return Ok((problems, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads every key with R = `level` through `client`: each must come back
/// as exactly one sibling holding one of its acceptable values. A read
/// that fails is tried again a few times (the failure is counted but only
/// a key that never reads right is a problem).
pub async fn read_problems(
    client: &Client,
    keys: &[(String, Vec<String>)],
    level: Level,
) -> Vec<String> {
    const ATTEMPTS: usize = 3;
    let results: Vec<Option<String>> = stream::iter(keys)
        .map(|(key, acceptable)| async move {
            let mut last = String::new();
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let opts = RequestOptions {
                    level: Some(level),
                    sloppy: None,
                    timeout: Some(REQUEST_TIMEOUT),
                };
                match client.get(key.clone(), opts, false).await {
                    Ok(got) => {
                        let values: Vec<&[u8]> =
                            got.siblings.iter().map(|s| s.value.as_ref()).collect();
                        if values.len() == 1 && acceptable.iter().any(|a| a.as_bytes() == values[0])
                        {
                            return None;
                        }
                        return Some(format!(
                            "{key}: read {} siblings {:?}, expected one of {:?}",
                            values.len(),
                            values.iter().map(|v| short(v)).collect::<Vec<_>>(),
                            acceptable
                                .iter()
                                .map(|a| short(a.as_bytes()))
                                .collect::<Vec<_>>()
                        ));
                    }
                    Err(e) => last = format!("{key}: read failed {ATTEMPTS} times, last: {e}"),
                }
            }
            Some(last)
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    let mut out: Vec<String> = results.into_iter().flatten().collect();
    out.sort();
    out
}

/// `problems` as one message: the count, then the first few.
pub fn summarize(what: &str, problems: &[String]) -> Option<String> {
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "{what}: {} problems, e.g.\n    {}",
        problems.len(),
        problems[..problems.len().min(EXAMPLES)].join("\n    ")
    ))
}

/// Longest the old replicas may take to delete what they no longer own
/// once they hold the settled layout.
pub const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Preloaded pairs in the checkers' form (key, acceptable values).
pub fn as_expected(pairs: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect()
}

/// Every `step`-th key, so that placement checks (one LocalGet per key
/// and node) stay bounded however long the load ran.
pub fn sample(keys: &[(String, Vec<String>)], at_most: usize) -> Vec<(String, Vec<String>)> {
    let step = keys.len().div_ceil(at_most.max(1)).max(1);
    keys.iter().step_by(step).cloned().collect()
}

/// Read errors a hand-over may cause when every node keeps running: the
/// documented retryable codes UNAVAILABLE and DEADLINE_EXCEEDED.
pub const HAND_OVER_READ_ERRORS: &[&str] = &["unavailable", "deadline-exceeded"];

/// Read errors when a node was killed as well: a request the client had
/// already sent to it fails as unreachable.
pub const DEAD_NODE_READ_ERRORS: &[&str] = &["unavailable", "deadline-exceeded", "unreachable"];

/// Keys placement is checked for at most (all preloaded keys are checked).
pub const PLACEMENT_SAMPLE: usize = 2_000;

/// The checks every change ends with: the load saw no contract breach,
/// the hand-over ran while the load did, the layout is well formed and
/// balanced, every key reads back, and every key is stored on exactly the
/// replicas of the final layout.
pub async fn check_after_change(
    cluster: &TestCluster,
    settled: &Settled,
    members: &BTreeSet<String>,
    report: &LoadReport,
    preloaded: &[(String, String)],
    read_errors_allowed: &[&str],
    problems: &mut Vec<String>,
) {
    let layout = &settled.layout;
    if layout_members(layout) != *members {
        problems.push(format!(
            "the final layout's members are {:?}, expected {members:?}",
            layout_members(layout)
        ));
    }
    problems.extend(report.problems(read_errors_allowed));
    if settled.transition_seen_after.is_none() {
        problems.push("no layout in transition was ever seen: nothing was handed over".into());
    }
    if report.writes_acked_in_transition == 0 || report.reads_in_transition == 0 {
        problems.push(format!(
            "the load did not run through the hand-over: {} writes acknowledged and {} reads during it",
            report.writes_acked_in_transition, report.reads_in_transition
        ));
    }
    if report.writes_acked < 100 {
        problems.push(format!(
            "only {} writes acknowledged: the load hardly ran",
            report.writes_acked
        ));
    }
    problems.extend(summarize("layout", &layout_problems(layout, members)));
    problems.extend(summarize("balance", &share_problems(layout)));

    let mut keys = as_expected(preloaded);
    let loaded = report.acknowledged();
    keys.extend(loaded.iter().cloned());
    let reader = cluster.client();
    let started = Instant::now();
    let unreadable = read_problems(&reader, &keys, Level::Quorum).await;
    println!(
        "read back {} acknowledged keys with R=QUORUM in {:.1?}: {} problems",
        keys.len(),
        started.elapsed(),
        unreadable.len()
    );
    problems.extend(summarize("acknowledged writes read back", &unreadable));

    let mut placed = as_expected(preloaded);
    placed.extend(sample(&loaded, PLACEMENT_SAMPLE));
    match wait_placement(cluster, layout, &placed, RETIRE_TIMEOUT).await {
        Ok((misplaced, took)) => {
            println!(
                "placement of {} keys on {} running nodes checked (settled after {:.1?}): {} problems",
                placed.len(),
                cluster.nodes.iter().filter(|n| n.pid().is_some()).count(),
                took,
                misplaced.len()
            );
            problems.extend(summarize("placement", &misplaced));
        }
        Err(e) => problems.push(format!("placement check failed: {e:#}")),
    }
}

/// Fails the test with every problem found, and the logs' warnings of
/// each node to tell a server bug from a harness one.
pub fn assert_no_problems(cluster: &TestCluster, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let mut logs = String::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let log = node.log();
        let interesting: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panic"))
            .collect();
        let tail = &interesting[interesting.len().saturating_sub(15)..];
        logs.push_str(&format!(
            "--- node {i} ({}) {}: last warnings and errors\n{}\n",
            cluster.ids[i],
            node.log_path.display(),
            tail.join("\n")
        ));
    }
    panic!("{}\n{logs}", problems.join("\n"));
}
