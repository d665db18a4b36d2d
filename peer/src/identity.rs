//! Which cluster this node belongs to, as its calls say and check it.
//!
//! Every message between nodes carries the sender's cluster id in its
//! [`Envelope`](super::Envelope), and gossip answers and refusals carry the
//! answering node's. A node that knows its cluster id refuses every call, gossip
//! message and layout of another cluster, counts it in
//! `ringkv_foreign_cluster_refusals_total` and says so in its log, at most
//! once per [`REFUSAL_LOG_INTERVAL`] so a misconfigured peer gossiping
//! several times a second does not flood it.
//!
//! A node learns its id once and keeps it for its life: bootstrap draws it,
//! a fresh node (no layout, no data) takes it from the first layout it
//! installs, and a node from before cluster ids (a stored layout without
//! one) takes it from a member of its own layout, or draws it if it is
//! that layout's lowest member (see `membership`). A call without the
//! header comes from a node that does not know its id yet (a fresh joiner,
//! or a node from before cluster ids during a rolling upgrade): it is let
//! through, but gossip from it may only introduce nodes, never bring in
//! members of some other layout ([`admit`]).
//!
//! The rules ([`admit`]) are a pure function; this file's state is the id
//! itself (set once) and the refusal log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::warn;

use prometheus_client::metrics::counter::Counter;
use ringkv_core::error::Error;
use ringkv_core::ring::ClusterId;

/// At most one log line about refused foreign traffic per this interval;
/// the refusals in between are counted and reported with the next line.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How a message from a peer is treated, given both sides' cluster ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Same cluster (or neither side knows its id yet): take everything.
    Accept,
    /// The peer does not say its cluster: take only what cannot harm, a
    /// fresh node introducing itself and news of this node's own layout
    /// members (see [`admit`]).
    Introductions,
    /// This node, from before cluster ids, learns its id from a member of
    /// its own layout: store the id, then take everything.
    Adopt(ClusterId),
    /// Another cluster: take nothing.
    Refuse,
}

/// The rule for a gossip message (or answer) from `sender`, claiming
/// cluster `theirs`, at a node whose own id is `mine`. `holds_layout`: this
/// node has a layout; `sender_is_member`: the sender is in it (or in the
/// layout it replaces).
///
/// * Both ids known: equal is [`Admission::Accept`], different is
///   [`Admission::Refuse`].
/// * Only mine known: the peer is fresh or from before cluster ids,
///   [`Admission::Introductions`].
/// * Mine unknown and no layout (a fresh node): [`Admission::Accept`]; the
///   id comes with the first layout installed.
/// * Mine unknown with a layout (a node from before cluster ids): an id
///   offered by a member of my layout is mine, [`Admission::Adopt`]; one
///   offered by a stranger is another cluster's, [`Admission::Refuse`].
pub fn admit(
    mine: Option<ClusterId>,
    holds_layout: bool,
    theirs: Option<ClusterId>,
    sender_is_member: bool,
) -> Admission {
    match (mine, theirs) {
        (Some(mine), Some(theirs)) if mine == theirs => Admission::Accept,
        (Some(_), Some(_)) => Admission::Refuse,
        (Some(_), None) => Admission::Introductions,
        (None, _) if !holds_layout => Admission::Accept,
        (None, None) => Admission::Accept,
        (None, Some(theirs)) if sender_is_member => Admission::Adopt(theirs),
        (None, Some(_)) => Admission::Refuse,
    }
}

/// This node's cluster id, once known, and its refusals of other clusters.
pub struct ClusterIdentity {
    /// Set once (bootstrap, the first layout, or adoption) and never
    /// changed: a node never moves to another cluster by itself.
    id: OnceLock<ClusterId>,
    /// Where refusals are counted (`ringkv_foreign_cluster_refusals`).
    counter: Counter,
    /// When the last refusal was logged; refusals not logged since.
    log: Mutex<(Option<Instant>, u64)>,
    /// Refusals since start, for tests and status.
    refusals: AtomicU64,
}

impl ClusterIdentity {
    /// `counter` counts every refusal (the node's metrics registry owns it).
    pub fn new(counter: Counter) -> Self {
        Self {
            id: OnceLock::new(),
            counter,
            log: Mutex::new((None, 0)),
            refusals: AtomicU64::new(0),
        }
    }

    /// The cluster id, once this node knows it.
    pub fn get(&self) -> Option<ClusterId> {
        self.id.get().copied()
    }

    /// Sets the id if none is set yet. Returns whether the id is now `id`
    /// (false: the node already belongs to another cluster). Callers store
    /// the id durably first.
    pub fn set(&self, id: ClusterId) -> bool {
        *self.id.get_or_init(|| id) == id
    }

    /// Counts a refusal of `what` (a call, gossip, a layout) from `peer`,
    /// which belongs to cluster `theirs`, and logs it unless a line was
    /// logged less than [`REFUSAL_LOG_INTERVAL`] ago.
    pub fn refused(&self, what: &str, peer: &str, theirs: ClusterId) {
        self.refused_at(what, peer, theirs, Instant::now());
    }

    fn refused_at(&self, what: &str, peer: &str, theirs: ClusterId, now: Instant) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        self.counter.inc();
        let mine = self
            .get()
            .map(|id| id.to_string())
            .unwrap_or_else(|| "(none yet)".to_string());
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let due = log
            .0
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if !due {
            log.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.1);
        log.0 = Some(now);
        drop(log);
        warn!(
            %peer,
            foreign_cluster = %theirs,
            cluster = %mine,
            suppressed,
            "refused {what} from {peer}: it belongs to cluster {theirs}, this node to cluster {mine}; \
             a node never joins another cluster by itself (check cluster.seeds)"
        );
    }

    /// Refusals since start.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The refusal of a call from cluster `theirs`. The answer carries
    /// this node's id (the transport adds it to every refusal), so the
    /// caller can tell why.
    pub fn refusal(&self, theirs: ClusterId) -> Error {
        let mine = self.get().map(|id| id.to_string()).unwrap_or_default();
        Error::FailedPrecondition(format!(
            "this node belongs to cluster {mine}, the call came from cluster {theirs}; \
             nodes never join another cluster: check cluster.seeds"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: ClusterId = ClusterId(1);
    const Y: ClusterId = ClusterId(2);

    #[test]
    fn admission_rules() {
        use Admission::*;
        // A node that knows its cluster.
        assert_eq!(admit(Some(X), true, Some(X), false), Accept);
        assert_eq!(admit(Some(X), true, Some(Y), true), Refuse);
        assert_eq!(admit(Some(X), false, Some(Y), false), Refuse);
        assert_eq!(admit(Some(X), true, None, false), Introductions);
        // A fresh node takes anybody's gossip; the layout decides.
        assert_eq!(admit(None, false, Some(Y), false), Accept);
        assert_eq!(admit(None, false, None, false), Accept);
        // A node from before cluster ids adopts only from its own members.
        assert_eq!(admit(None, true, Some(Y), true), Adopt(Y));
        assert_eq!(admit(None, true, Some(Y), false), Refuse);
        assert_eq!(admit(None, true, None, false), Accept);
    }

    #[test]
    fn the_id_is_set_once() {
        let identity = ClusterIdentity::new(Counter::default());
        assert_eq!(identity.get(), None);
        assert!(identity.set(X));
        assert!(identity.set(X));
        assert!(!identity.set(Y));
        assert_eq!(identity.get(), Some(X));
    }

    #[test]
    fn refusals_are_all_counted_but_logged_at_most_once_per_interval() {
        let identity = ClusterIdentity::new(Counter::default());
        identity.set(X);
        let start = Instant::now();
        for i in 0..100 {
            identity.refused_at("gossip", "peer", Y, start + Duration::from_millis(i));
        }
        assert_eq!(identity.refusals(), 100);
        assert_eq!(identity.log.lock().unwrap().1, 99, "one line, 99 held back");
        identity.refused_at("gossip", "peer", Y, start + REFUSAL_LOG_INTERVAL);
        assert_eq!(
            identity.log.lock().unwrap().1,
            0,
            "logged again with the count"
        );
        let refusal = identity.refusal(Y);
        assert!(matches!(refusal, Error::FailedPrecondition(_)));
        assert!(refusal.to_string().contains(&Y.to_string()));
    }
}
