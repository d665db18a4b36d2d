//! Elastic clusters on real processes: growing
//! and shrinking under a continuous read/write load, removing a killed
//! node, resuming a transfer after its receiver was killed, the transfer
//! rate limit, and the balance and size of plans.
//!
//! Every test here starts its own cluster on loopback ports with
//! `cluster.partitions = 64` (16 for the resume test, whose partitions must
//! be large) and a low `transfer.max_rate`, so that a hand-over lasts
//! seconds and the load really runs through it. They take a lock so that
//! only one runs at a time: each is several processes, and timing (the
//! rate limit, a kill in the middle of a transfer) should not depend on
//! what the other tests do on a small machine.
//!
//! ```text
//! CARGO_TARGET_DIR=~/.cache/ringkv/target cargo test --release \
//!     -p ringkv-tests --test rebalance -- --nocapture
//! ```
//!
//! The harness for these (load, waits, checkers) is in
//! `tests/src/rebalance/`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringkv_client::{Error, Level};
use ringkv_proto::v1 as pb;
use ringkv_tests::metrics::scrape_metric;
use ringkv_tests::rebalance::check::{
    as_expected, assert_no_problems, check_after_change, layout_problems, read_problems,
    share_problems, shares, summarize, wait_placement, DEAD_NODE_READ_ERRORS,
    HAND_OVER_READ_ERRORS, RETIRE_TIMEOUT,
};
use ringkv_tests::rebalance::load::{preload, Load, LoadSpec};
use ringkv_tests::rebalance::{
    cli_async, describe, layout_members, print_cli_transfers, wait_settled, wait_transition,
    PARTITIONS,
};
use ringkv_tests::secure::Secure;
use ringkv_tests::TestCluster;

mod plan;
mod remove;
mod resize;
mod transfer;

/// One test at a time (see the module doc). A tokio mutex does not poison,
/// so a failed test does not fail the ones after it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a cluster change may take to settle here. The data is a few
/// MB at most, transferred at 0.5 MB/s; this is generous for a loaded
/// two-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a load may run at most, whatever happens.
const LOAD_DEADLINE: Duration = Duration::from_secs(240);

/// Load settings of the grow and shrink tests: two writers, one routing
/// by partition and one going through a fixed node.
fn load_spec(prefix: &str, via: usize) -> LoadSpec {
    LoadSpec {
        prefix: prefix.to_string(),
        writers: 2,
        max_per_writer: 3_000,
        value_bytes: 512,
        via,
    }
}

/// Rate limit of the grow and shrink tests, MB/s: with ~2 MB preloaded a
/// hand-over then lasts a few seconds, so the load meets it.
const CHANGE_RATE: &str = "0.5";

/// Keys preloaded before a change, and their size: the data the change
/// has to move.
const PRELOAD_KEYS: usize = 1_500;
const PRELOAD_VALUE_BYTES: usize = 1_000;

/// How long the load runs before a change starts and after it settled.
const LOAD_BEFORE: Duration = Duration::from_secs(1);
const LOAD_AFTER: Duration = Duration::from_secs(2);

fn base_env() -> Vec<(&'static str, &'static str)> {
    vec![("RINGKV__CLUSTER__PARTITIONS", PARTITIONS)]
}
