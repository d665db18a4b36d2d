//! Harness for cluster changes on real processes: a read/write load that
//! records what the cluster acknowledged while nodes join and leave, a wait
//! for a change to settle that notes when the hand-over ran, and checkers
//! for where keys are stored afterwards and how evenly partitions spread.
//!
//! # What the checks demand
//!
//! A change is done when every running node holds the same layout and that
//! layout carries no previous one: every transfer finished and the old
//! replicas were retired. From then on:
//!
//! - every acknowledged key reads back (R = QUORUM) with the value of its
//!   last acknowledged write, as the only sibling ([`check::read_problems`]);
//! - every key is stored on exactly the replicas the layout names for its
//!   partition: each of them holds the value, every other running node
//!   answers `LocalGet` with `found = false`, because an old replica
//!   deletes what it no longer owns ([`check::placement_problems`]);
//! - each member's share of partition replicas is within ±10% of its
//!   weight's share ([`check::share_problems`]).
//!
//! During the hand-over the load's reads may fail, but only with the
//! documented retryable errors, and a read right after an acknowledged
//! write must return that write (R + W > N holds on the old replicas,
//! which serve reads until they are retired).
//!
//! # Keys and values
//!
//! Each writer writes fresh keys `{prefix}-w{writer}-{seq}`, and now and
//! then overwrites one of its own earlier keys with the context of a read,
//! so the new value supersedes the old one rather than becoming a sibling.
//! No two writers share a key, so a key's history is one writer's. A write
//! that failed may still have landed, so it stays a value the key may hold
//! (besides the last acknowledged one), and that key is not overwritten
//! again.
//!
//! The load is in [`load`], the checkers in [`check`]; this module holds
//! the waits and the helpers that talk to nodes and the CLI.

pub mod check;
pub mod load;

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_proto::v1 as pb;

use crate::{cli_binary, TestCluster};
use load::Load;

/// Partitions of the clusters these tests run: few enough that plans,
/// transfers and retirements take little time, enough for balance to mean
/// something (±10% of ~40 replicas per node is ±4).
pub const PARTITIONS: &str = "64";

/// Polling interval of the waits.
const POLL: Duration = Duration::from_millis(100);

/// Problems listed in full in a failure message; the rest are counted.
pub const EXAMPLES: usize = 8;

/// The start of a value, enough to tell values apart in a message.
pub(crate) fn short(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    match s.find(':') {
        Some(i) => s[..i].to_string(),
        None => s.chars().take(40).collect(),
    }
}

/// Node ids the layout assigns any partition to.
pub fn layout_members(layout: &pb::LayoutResponse) -> BTreeSet<String> {
    layout
        .assignments
        .iter()
        .flat_map(|a| a.replicas.iter().cloned())
        .collect()
}

/// A layout as one line: version, previous version, members.
pub fn describe(layout: &pb::LayoutResponse) -> String {
    format!(
        "v{} (previous v{}), {} members: {:?}",
        layout.version,
        layout.previous_version,
        layout_members(layout).len(),
        layout_members(layout)
    )
}

/// How a change went, as [`wait_settled`] saw it.
#[derive(Clone, Debug)]
pub struct Settled {
    /// The settled layout, as the first running node holds it.
    pub layout: pb::LayoutResponse,
    /// From the start of the wait until some node showed a layout in
    /// transition, if one was seen at all.
    pub transition_seen_after: Option<Duration>,
    /// How long layouts in transition were seen.
    pub transition_lasted: Duration,
    /// From the start of the wait until settled.
    pub settled_after: Duration,
}

/// Waits until every running node holds the same layout, newer than
/// `after_version`, with no previous layout and exactly `members` members;
/// meanwhile tells `load` whether a change is being transferred.
pub async fn wait_settled(
    cluster: &TestCluster,
    after_version: u64,
    members: usize,
    load: Option<&Load>,
    timeout: Duration,
) -> Result<Settled> {
    let started = Instant::now();
    let mut transition_seen_after = None;
    let mut transition_since: Option<Instant> = None;
    let mut transition_lasted = Duration::ZERO;
    let mut last = String::from("no layout read yet");
    loop {
        let mut layouts = Vec::new();
        let mut failed = None;
        for (i, node) in cluster.nodes.iter().enumerate() {
            if node.pid().is_none() {
                continue;
            }
            match node.client().layout().await {
                Ok(l) => layouts.push(l),
                Err(e) => failed = Some(format!("node {i}: {e}")),
            }
        }
        let in_transition = layouts.iter().any(|l| l.previous_version != 0);
        match (in_transition, transition_since) {
            (true, None) => {
                transition_seen_after.get_or_insert(started.elapsed());
                transition_since = Some(Instant::now());
            }
            (false, Some(since)) => {
                transition_lasted += since.elapsed();
                transition_since = None;
            }
            _ => {}
        }
        if let Some(load) = load {
            load.set_in_transition(in_transition);
        }
        if let Some(first) = layouts.first() {
            let done = failed.is_none()
                && layouts.iter().all(|l| {
                    l.version == first.version
                        && l.version > after_version
                        && l.previous_version == 0
                        && layout_members(l).len() == members
                });
            if done {
                if let Some(since) = transition_since {
                    transition_lasted += since.elapsed();
                }
                return Ok(Settled {
                    layout: first.clone(),
                    transition_seen_after,
                    transition_lasted,
                    settled_after: started.elapsed(),
                });
            }
            last = layouts.iter().map(describe).collect::<Vec<_>>().join("; ");
        }
        if let Some(f) = failed {
            last = format!("{last}; {f}");
        }
        if started.elapsed() > timeout {
            if let Some(load) = load {
                load.set_in_transition(false);
            }
            bail!(
                "no settled layout with {members} members after v{after_version} within {timeout:?}; nodes hold: {last}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until some node shows a layout newer than `after` in transition,
/// or a newer settled one (the hand-over was too quick to see); returns
/// the layout in transition.
pub async fn wait_transition(
    cluster: &TestCluster,
    after: u64,
    timeout: Duration,
) -> Option<pb::LayoutResponse> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        for node in cluster.nodes.iter().filter(|n| n.pid().is_some()) {
            if let Ok(l) = node.client().layout().await {
                if l.version > after && l.previous_version != 0 {
                    return Some(l);
                }
                if l.version > after + 1 {
                    return None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Prints the CLI's view of the transfers in progress.
pub async fn print_cli_transfers(endpoint: &str) {
    match cli_async(endpoint, &["cluster", "transfers"], Duration::from_secs(30)).await {
        Ok(out) => println!(
            "$ ringkv cluster transfers (exit {:?})\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("ringkv cluster transfers failed: {e:#}"),
    }
}

/// Runs the CLI against `endpoint` without blocking the runtime, killing
/// it if it runs longer than `timeout`.
pub async fn cli_async(endpoint: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let child = tokio::process::Command::new(cli_binary())
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running the ringkv CLI")?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => Ok(out?),
        Err(_) => bail!(
            "`ringkv {}` did not finish within {timeout:?}",
            args.join(" ")
        ),
    }
}
