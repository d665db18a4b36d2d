//! The faults and their schedule: the seeded generator that draws them,
//! the fault kinds, and [`inject`], which breaks one node (or one link),
//! heals it and waits until the cluster is whole again.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::{signal, wait_stopped, TestCluster};

/// Environment variable that fixes the fault schedule's seed.
pub const SEED_ENV: &str = "RINGKV_FAULT_SEED";

/// A small deterministic generator (SplitMix64), so a run's schedule is a
/// function of its seed alone; the crate has no `rand` dependency and
/// needs none for this.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// SplitMix64 with its published constants (Steele, Lea, Flood 2014).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0); the modulo bias is negligible here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A duration in `[lo, hi]`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next_u64() % (span + 1))
    }
}

/// The seed from [`SEED_ENV`] (decimal, or hex with `0x`), else one from
/// the clock. Panics on a malformed value rather than silently ignoring it.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    }
}

/// What kind of fault, for the schedule and the report's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Kill,
    Pause,
    Cut,
    Wipe,
}

/// One fault with its targets and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same ports and data directory.
    Kill { node: usize, down_for: Duration },
    /// SIGSTOP, then SIGCONT: the node hangs with its sockets open.
    Pause { node: usize, paused_for: Duration },
    /// No internal traffic between `a` and `b`, either direction; clients
    /// still reach both.
    Cut {
        a: usize,
        b: usize,
        cut_for: Duration,
    },
    /// SIGKILL, the data directory deleted, then a restart: the node
    /// comes back empty, with a new node id.
    Wipe { node: usize, down_for: Duration },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Cut { .. } => FaultKind::Cut,
            Fault::Wipe { .. } => FaultKind::Wipe,
        }
    }

    /// Draws a fault of one of `kinds` on a cluster of `nodes` nodes,
    /// lasting between `lasting.0` and `lasting.1`.
    pub fn draw(
        rng: &mut Rng,
        kinds: &[FaultKind],
        nodes: usize,
        lasting: (Duration, Duration),
    ) -> Fault {
        let kind = kinds[rng.below(kinds.len())];
        let node = rng.below(nodes);
        let lasts = rng.between(lasting.0, lasting.1);
        match kind {
            FaultKind::Kill => Fault::Kill {
                node,
                down_for: lasts,
            },
            FaultKind::Pause => Fault::Pause {
                node,
                paused_for: lasts,
            },
            FaultKind::Cut => {
                // Any other node: shift by 1..nodes so `b != a`.
                let b = (node + 1 + rng.below(nodes - 1)) % nodes;
                Fault::Cut {
                    a: node,
                    b,
                    cut_for: lasts,
                }
            }
            FaultKind::Wipe => Fault::Wipe {
                node,
                down_for: lasts,
            },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { node, down_for } => write!(f, "kill node {node} for {down_for:?}"),
            Fault::Pause { node, paused_for } => {
                write!(f, "pause node {node} for {paused_for:?}")
            }
            Fault::Cut { a, b, cut_for } => write!(f, "cut {a}<->{b} for {cut_for:?}"),
            Fault::Wipe { node, down_for } => {
                write!(f, "wipe node {node}, down for {down_for:?}")
            }
        }
    }
}

/// Injects `fault`, holds it, heals it, and waits until the cluster is
/// whole again (same layout, every node alive as seen from every node).
/// Returns when the fault was healed, the instant convergence counts from.
pub async fn inject(cluster: &mut TestCluster, fault: &Fault) -> Result<Instant> {
    match *fault {
        Fault::Kill { node, down_for } => {
            cluster.nodes[node].kill();
            tokio::time::sleep(down_for).await;
            cluster.nodes[node].restart().await?;
        }
        Fault::Pause { node, paused_for } => {
            let pid = cluster.nodes[node]
                .pid()
                .with_context(|| format!("node {node} is not running"))?;
            // If anything below fails, the harness's SIGKILL on drop ends
            // the stopped process too.
            signal(pid, libc::SIGSTOP);
            wait_stopped(pid, true).await?;
            tokio::time::sleep(paused_for).await;
            signal(pid, libc::SIGCONT);
            wait_stopped(pid, false).await?;
        }
        Fault::Cut { a, b, cut_for } => {
            cluster.cut(a, b).await?;
            tokio::time::sleep(cut_for).await;
            cluster.heal().await?;
        }
        Fault::Wipe { node, down_for } => {
            let server = &mut cluster.nodes[node];
            server.kill();
            std::fs::remove_dir_all(&server.data_dir)
                .with_context(|| format!("wiping {}", server.data_dir.display()))?;
            std::fs::create_dir_all(&server.data_dir)?;
            tokio::time::sleep(down_for).await;
            server.restart().await?;
            // The wiped node has a new id: the harness must look for it,
            // not for the old one, when it checks liveness.
            cluster.ids[node] = server.client().node_status(0).await?.node_id;
        }
    }
    let healed = Instant::now();
    cluster
        .wait_converged()
        .await
        .with_context(|| format!("the cluster did not recover after: {fault}"))?;
    Ok(healed)
}
