//! Failure detection: this node's opinion of which peers are alive.
//!
//! Liveness in ringkv is a *local opinion that changes routing, never
//! membership*: a peer this node believes dead is skipped in preference lists
//! (its writes go to a fallback with a hint) but stays in the layout. Being
//! wrong is therefore cheap in one direction (a spurious hint) and expensive
//! in the other (requests stalling on a crashed node until they time out),
//! which is why direct evidence of failure acts at once while silence is
//! judged statistically.
//!
//! # Phi accrual
//!
//! Instead of a fixed timeout, the detector of Hayashibara et al. ("The φ
//! Accrual Failure Detector", 2004) learns how heartbeats of each peer
//! usually arrive and turns the current silence into a suspicion level
//!
//! ```text
//! phi(t) = -log10(P(the next heartbeat arrives later than t))
//! ```
//!
//! so phi = 1 means a 10 % chance that the peer is fine and merely late,
//! phi = 8 (the default threshold) one chance in 10^8. The threshold is a
//! statement about confidence, and the timeout it implies follows the
//! network: it stretches on its own when heartbeats arrive irregularly.
//!
//! [`PhiAccrual`] keeps the last [`DEFAULT_WINDOW`] inter-arrival times of one
//! peer and models them as a normal distribution, using the logistic
//! approximation of its CDF that Akka uses, `1 / (1 + e^-y(1.5976 +
//! 0.070566 y²))` (error below 1.4e-4), which has a closed form and so a
//! cheap `phi`. Two margins, also from Akka, keep the normal model from being
//! too eager:
//!
//! - [`ACCEPTABLE_PAUSE_MS`] is added to the mean: a stop-the-world pause, a
//!   busy scheduler or a gossip round that happened to pick other peers
//!   should not count as evidence;
//! - [`MIN_STD_DEV_MS`] floors the standard deviation: a perfectly regular
//!   sender would otherwise have a deviation near zero, and the first jitter
//!   of a few milliseconds would look like a miracle and push phi past any
//!   threshold.
//!
//! Cassandra instead assumes exponentially distributed intervals (phi =
//! 0.434 t / mean), which needs no deviation at all but ignores how regular
//! a peer has been: with a 1 s gossip interval it convicts only after about
//! 18 s whatever the history. The normal model adapts to both the rhythm
//! and the jitter of each peer, and the two margins make its behaviour easy
//! to state: with the default 1 s gossip interval and a regular peer, phi
//! reaches 4 (suspect) after about 5.8 s of silence and 8 (dead) after about
//! 6.6 s. Heartbeats relayed through gossip arrive more irregularly than
//! direct ones; that irregularity shows up in the measured deviation and
//! lengthens the timeout accordingly.
//!
//! A heartbeat that ends a silence long enough to have crossed the
//! threshold does not become a sample: the peer was (or looked) dead, most
//! likely restarted, and one giant interval would inflate the mean and the
//! deviation for the next hundred samples, making a later real failure take
//! minutes to detect. The history is reset to its bootstrap estimate
//! instead, and the peer is alive from that heartbeat on.
//!
//! # Direct evidence
//!
//! [`FailureDetector`] combines the estimate with what this node sees
//! itself. A transport-level RPC failure marks the peer dead at once and
//! keeps it dead until a heartbeat or a successful RPC arrives *after* the
//! failure; waiting for phi to climb would leave a crashed replica in the
//! preference lists for seconds. A successful RPC is evidence of life as
//! strong as a heartbeat: it restarts the silence (without becoming an
//! interval sample, since RPCs are not periodic), so a peer known only
//! through RPCs is alive until it has been silent for as long as phi
//! tolerates.
//!
//! Everything here is pure: time is the caller's monotonic clock in
//! milliseconds, passed in as `now_ms`.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::version::NodeId;

/// Suspicion at which a silent peer is considered dead: a one in 10^8
/// chance that it is merely late (the value Akka and Cassandra use).
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;

/// Inter-arrival samples kept per peer. A hundred gossip rounds (about a
/// hundred seconds by default) is long enough to smooth out single slow
/// rounds and short enough to follow a change in load or gossip interval.
pub const DEFAULT_WINDOW: usize = 100;

/// Floor of the standard deviation. Half the default gossip interval:
/// heartbeats relayed through gossip can be late by a round without
/// anything being wrong, so a peer whose heartbeats happened to be perfectly
/// regular must not be convicted by the first one that is not.
pub const MIN_STD_DEV_MS: f64 = 500.0;

/// Margin added to the mean interval before phi is computed. Akka's default
/// for cluster heartbeats: three rounds of the default gossip interval,
/// which covers a missed round or two (gossip picks random peers) and a
/// stop-the-world pause on either side.
pub const ACCEPTABLE_PAUSE_MS: f64 = 3000.0;

/// A peer is [`Liveness::Suspect`] from this fraction of the threshold on.
const SUSPECT_FRACTION: f64 = 0.5;

/// Coefficients of the logistic approximation of the standard normal CDF,
/// `F(y) ≈ 1 / (1 + e^-(A y + B y³))` (Bowling et al. 2009; used by Akka).
const CDF_A: f64 = 1.5976;
const CDF_B: f64 = 0.070566;

/// One peer's heartbeat history: the inter-arrival window and the time of
/// the latest heartbeat.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    /// The interval expected before any has been measured (normally the
    /// gossip interval). Kept so a reset can seed the window again.
    first_interval_estimate_ms: f64,
    /// The last [`DEFAULT_WINDOW`] inter-arrival times, oldest first.
    intervals: VecDeque<f64>,
    /// Mean of `intervals`, recomputed on each heartbeat so `phi` is O(1):
    /// `phi` runs on every routing decision, heartbeats once a round.
    mean_ms: f64,
    /// Standard deviation of `intervals`, before the [`MIN_STD_DEV_MS`] floor.
    std_dev_ms: f64,
    /// When the latest heartbeat arrived; `None` until the first one, which
    /// is when phi starts to mean anything.
    last_heartbeat_ms: Option<u64>,
    /// Phi at which a silence is taken for a death rather than a sample;
    /// see [`PhiAccrual::with_reset_threshold`].
    reset_phi: f64,
}

impl PhiAccrual {
    /// A history seeded, as in Akka, with two samples at the estimate ± a
    /// quarter of it, so that phi is defined from the first heartbeat on
    /// and the real samples take over as they arrive.
    ///
    /// # Panics
    ///
    /// If the estimate is not a positive number (a configuration error that
    /// validation should have caught).
    pub fn new(first_interval_estimate_ms: f64) -> Self {
        assert!(
            first_interval_estimate_ms.is_finite() && first_interval_estimate_ms > 0.0,
            "heartbeat interval estimate must be positive, got {first_interval_estimate_ms}"
        );
        let mut detector = PhiAccrual {
            first_interval_estimate_ms,
            intervals: VecDeque::with_capacity(DEFAULT_WINDOW + 1),
            mean_ms: 0.0,
            std_dev_ms: 0.0,
            last_heartbeat_ms: None,
            reset_phi: DEFAULT_PHI_THRESHOLD,
        };
        detector.seed();
        detector
    }

    /// Sets the phi from which a silence ended by a heartbeat resets the
    /// history instead of being recorded. It should be the threshold the
    /// caller convicts at: a silence the caller tolerated is part of the
    /// peer's rhythm, one it did not is a death (or a partition).
    pub fn with_reset_threshold(mut self, phi: f64) -> Self {
        self.reset_phi = phi;
        self
    }

    /// Records a heartbeat arriving at `now_ms`.
    pub fn heartbeat(&mut self, now_ms: u64) {
        let Some(last) = self.last_heartbeat_ms else {
            self.last_heartbeat_ms = Some(now_ms);
            return;
        };
        // A heartbeat stamped before the latest one (two tasks reading the
        // clock, then reporting in the other order) carries no new rhythm.
        if now_ms < last {
            return;
        }
        let interval = now_ms - last;
        self.last_heartbeat_ms = Some(now_ms);
        if self.phi_after(interval) >= self.reset_phi {
            self.seed();
            return;
        }
        self.intervals.push_back(interval as f64);
        if self.intervals.len() > DEFAULT_WINDOW {
            self.intervals.pop_front();
        }
        self.recompute();
    }

    /// Suspicion that the peer is dead, given the silence since its latest
    /// heartbeat. 0 before the first heartbeat: there is no silence to judge
    /// yet (callers decide separately what an unheard peer is).
    pub fn phi(&self, now_ms: u64) -> f64 {
        match self.last_heartbeat_ms {
            Some(last) => self.phi_after(now_ms.saturating_sub(last)),
            None => 0.0,
        }
    }

    /// When the latest heartbeat arrived, if any did.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_heartbeat_ms
    }

    /// Phi for a silence of `silence_ms` under the current history.
    ///
    /// With `y` the silence in standard deviations past the (margined) mean
    /// and `z = A y + B y³`, the tail probability is `1 / (1 + e^z)`, so
    /// `phi = log10(1 + e^z)`. It is evaluated as a stable softplus so that
    /// it neither overflows to infinity after long silences nor loses
    /// precision near zero; every step is monotonic in `y`, so phi never
    /// decreases as the silence grows.
    fn phi_after(&self, silence_ms: u64) -> f64 {
        let mean = self.mean_ms + ACCEPTABLE_PAUSE_MS;
        let std_dev = self.std_dev_ms.max(MIN_STD_DEV_MS);
        let y = (silence_ms as f64 - mean) / std_dev;
        let z = y * (CDF_A + CDF_B * y * y);
        let softplus = if z > 0.0 {
            z + (-z).exp().ln_1p()
        } else {
            z.exp().ln_1p()
        };
        softplus / std::f64::consts::LN_10
    }

    /// Replaces the window by the bootstrap estimate.
    fn seed(&mut self) {
        let estimate = self.first_interval_estimate_ms;
        self.intervals.clear();
        self.intervals.push_back(estimate - estimate / 4.0);
        self.intervals.push_back(estimate + estimate / 4.0);
        self.recompute();
    }

    fn recompute(&mut self) {
        let n = self.intervals.len() as f64;
        let mean = self.intervals.iter().sum::<f64>() / n;
        let variance = self
            .intervals
            .iter()
            .map(|i| (i - mean).powi(2))
            .sum::<f64>()
            / n;
        self.mean_ms = mean;
        self.std_dev_ms = variance.sqrt();
    }
}

/// What this node currently believes about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from recently enough: route to it.
    Alive,
    /// Silent for longer than usual but not yet convicted. Still routed to;
    /// surfaced so operators (and, later, request hedging) can see a peer
    /// going quiet before it is declared dead.
    Suspect,
    /// Never heard from, silent past the threshold, or a direct RPC to it
    /// failed: skipped in preference lists, its writes go to fallbacks.
    Dead,
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
        })
    }
}

/// Everything known about one peer's health.
#[derive(Clone, Debug)]
struct PeerHealth {
    /// Heartbeats seen through gossip: the peer's rhythm.
    heartbeats: PhiAccrual,
    /// Latest successful direct RPC: evidence of life that restarts the
    /// silence without being a rhythm sample.
    last_rpc_success_ms: Option<u64>,
    /// A transport failure not yet contradicted by later evidence of life.
    /// While set, the peer is dead whatever phi says.
    rpc_failed_at_ms: Option<u64>,
}

impl PeerHealth {
    /// The most recent evidence that the peer was alive.
    fn last_alive_ms(&self) -> Option<u64> {
        self.heartbeats
            .last_heartbeat_ms()
            .max(self.last_rpc_success_ms)
    }

    /// Evidence of life at `now_ms` overrides a failure seen at or before
    /// it. Equal timestamps go to whichever was reported last, which is the
    /// order the caller observed them in.
    fn alive_at(&mut self, now_ms: u64) {
        if self.rpc_failed_at_ms.is_some_and(|failed| now_ms >= failed) {
            self.rpc_failed_at_ms = None;
        }
    }
}

/// Per-peer liveness as seen from this node: phi accrual on gossiped
/// heartbeats combined with the outcome of direct RPCs.
#[derive(Clone, Debug)]
pub struct FailureDetector {
    /// Phi at which a silent peer is dead; half of it makes it suspect.
    threshold: f64,
    /// Bootstrap interval for peers seen for the first time (the gossip
    /// interval).
    interval_estimate_ms: f64,
    /// Peers heard from or tried. Absent peers are dead.
    peers: HashMap<NodeId, PeerHealth>,
}

impl FailureDetector {
    /// A detector convicting at `threshold` (normally
    /// [`DEFAULT_PHI_THRESHOLD`]) whose new peers start from
    /// `interval_estimate_ms` (normally the gossip interval).
    ///
    /// # Panics
    ///
    /// If the threshold or the estimate is not a positive number.
    pub fn new(threshold: f64, interval_estimate_ms: f64) -> Self {
        assert!(
            threshold.is_finite() && threshold > 0.0,
            "phi threshold must be positive, got {threshold}"
        );
        assert!(
            interval_estimate_ms.is_finite() && interval_estimate_ms > 0.0,
            "heartbeat interval estimate must be positive, got {interval_estimate_ms}"
        );
        FailureDetector {
            threshold,
            interval_estimate_ms,
            peers: HashMap::new(),
        }
    }

    /// A fresh heartbeat of `node` was observed (its gossiped heartbeat
    /// counter or generation advanced).
    pub fn heartbeat(&mut self, node: NodeId, now_ms: u64) {
        let peer = self.peer(node);
        peer.heartbeats.heartbeat(now_ms);
        peer.alive_at(now_ms);
    }

    /// A direct RPC to `node` failed at the transport level (connection
    /// refused, reset, timeout). Application errors (a full disk, a bad
    /// request) are answers, and must not be reported here.
    ///
    /// A failure stamped before the latest evidence of life is stale (the
    /// RPC's outcome was reported after something newer) and is ignored.
    pub fn rpc_failed(&mut self, node: NodeId, now_ms: u64) {
        let peer = self.peer(node);
        if peer.last_alive_ms().is_some_and(|alive| now_ms < alive) {
            return;
        }
        peer.rpc_failed_at_ms = peer.rpc_failed_at_ms.max(Some(now_ms));
    }

    /// A direct RPC to `node` succeeded.
    pub fn rpc_succeeded(&mut self, node: NodeId, now_ms: u64) {
        let peer = self.peer(node);
        peer.last_rpc_success_ms = peer.last_rpc_success_ms.max(Some(now_ms));
        peer.alive_at(now_ms);
    }

    /// This node's opinion of `node` at `now_ms`.
    pub fn liveness(&self, node: NodeId, now_ms: u64) -> Liveness {
        let Some(peer) = self.peers.get(&node) else {
            return Liveness::Dead;
        };
        let Some(alive) = peer.last_alive_ms() else {
            return Liveness::Dead;
        };
        if peer.rpc_failed_at_ms.is_some() {
            return Liveness::Dead;
        }
        let phi = peer.heartbeats.phi_after(now_ms.saturating_sub(alive));
        if phi >= self.threshold {
            Liveness::Dead
        } else if phi >= self.threshold * SUSPECT_FRACTION {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }

    /// Whether `node` should be routed to as a healthy replica.
    pub fn is_alive(&self, node: NodeId, now_ms: u64) -> bool {
        self.liveness(node, now_ms) == Liveness::Alive
    }

    /// Drops everything known about `node` (it left the cluster or was
    /// removed), so the table does not grow with departed peers.
    pub fn forget(&mut self, node: NodeId) {
        self.peers.remove(&node);
    }

    /// Suspicion for `node` given its silence since the latest heartbeat or
    /// successful RPC; 0 for a peer never heard from (which is nonetheless
    /// [`Liveness::Dead`]). Does not reflect RPC failures; for metrics and
    /// the admin API.
    pub fn phi(&self, node: NodeId, now_ms: u64) -> f64 {
        self.peers
            .get(&node)
            .and_then(|peer| {
                let alive = peer.last_alive_ms()?;
                Some(peer.heartbeats.phi_after(now_ms.saturating_sub(alive)))
            })
            .unwrap_or(0.0)
    }

    fn peer(&mut self, node: NodeId) -> &mut PeerHealth {
        let (estimate, threshold) = (self.interval_estimate_ms, self.threshold);
        self.peers.entry(node).or_insert_with(|| PeerHealth {
            heartbeats: PhiAccrual::new(estimate).with_reset_threshold(threshold),
            last_rpc_success_ms: None,
            rpc_failed_at_ms: None,
        })
    }
}

#[cfg(test)]
mod tests;
