//! Bounded key state on real processes: no key can grow past what one
//! internal message carries, so no write, read, hint or transfer of it can
//! break a connection, take a healthy peer out of routing, or leave the key
//! unreadable.
//!
//! - Two concurrent 700 KB puts from the same context (twin siblings of
//!   1.4 MB, above `limits.max_key_state_bytes`): the second is refused
//!   with RESOURCE_EXHAUSTED saying how to resolve the key, or the key
//!   stays readable; no node ever sees a peer down; a put with a read's
//!   context replaces the siblings; a fourth node then joins and every
//!   transfer completes with the keys readable on their new replicas.
//! - 150 puts to one key, each with a well-formed context of 1,024 entries
//!   (the key's real ones plus fabricated node ids): the stored vector
//!   names only cluster members, the stored state stays within the limit on
//!   every replica, and the key reads back as the last acknowledged put.
//!
//! ```text
//! CARGO_TARGET_DIR=~/.cache/ringkv/target cargo build --release --locked --bins
//! CARGO_TARGET_DIR=~/.cache/ringkv/target cargo test --release --locked \
//!     -p ringkv-tests --test safety_keystate -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_client::{Context, Error, Level, PutOptions, RequestOptions};
use ringkv_tests::rebalance::{describe, wait_settled};
use ringkv_tests::{partition_of, TestCluster};

mod twins;
mod wide_contexts;

/// One test at a time: each is several processes moving megabytes on a
/// small machine. A tokio mutex does not poison.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Partitions of these clusters: few, so a join moves some of the keys'.
const PARTITIONS: &str = "16";

fn put_with(context: Option<Context>, level: Level) -> PutOptions {
    PutOptions {
        consistency: RequestOptions::level(level),
        context,
        ttl: None,
    }
}

/// Whether a failed put is the documented refusal of a key at its limit.
fn is_documented_refusal(e: &Error) -> bool {
    match e {
        Error::Overloaded(msg) => msg.contains("max_key_state_bytes") && msg.contains("context"),
        _ => false,
    }
}

/// Fails the test with every problem found, and the nodes' log tails.
fn assert_no_problems(cluster: &TestCluster, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let log = node.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!("---- node {i} log tail ----");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    panic!(
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
