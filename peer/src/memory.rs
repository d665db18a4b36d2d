//! An in-memory network for simulations: nodes in one process, messages
//! delivered by direct calls to each node's [`Handler`], with faults chosen
//! by the test and by a seeded generator.
//!
//! Faults behave as a real network's do, not as refusals: a message across
//! a partition, to a stopped node, or dropped is silently lost, and its
//! sender learns only that no answer came within its timeout. A dropped
//! message is lost either on the way there (never applied) or on the way
//! back (applied, unanswered), as the generator decides. A duplicated
//! request is delivered twice. Delays are drawn from a range.
//!
//! Every random choice comes from one generator seeded by the test, and
//! waits use tokio's clock, so a simulation on a paused current-thread
//! runtime replays exactly from its seed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BoxFuture, Envelope, Failure, Handler, Network, Peer, PeerError, Request, Response};
use ringkv_core::version::NodeId;

/// Message counts, for tests to check what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// One process's nodes and the network between them.
pub struct MemoryNetwork {
    inner: Mutex<Inner>,
}

struct Inner {
    rng: StdRng,
    handlers: HashMap<NodeId, Arc<dyn Handler>>,
    addresses: HashMap<String, NodeId>,
    /// (from, to) pairs whose messages are lost.
    cut: HashSet<(NodeId, NodeId)>,
    /// (node, message name) pairs: those messages, sent by or to the node,
    /// are lost.
    muted: HashSet<(NodeId, &'static str)>,
    drop_rate: f64,
    duplicate_rate: f64,
    delay: (Duration, Duration),
    counts: Counts,
}

/// What happens to one message.
enum Fate {
    Lost,
    /// Delivered after the delay; `answered`: the answer makes it back;
    /// `twice`: the request arrives twice.
    Delivered {
        delay: Duration,
        answered: bool,
        twice: bool,
        handler: Arc<dyn Handler>,
    },
}

impl MemoryNetwork {
    /// A network with no faults, whose random choices follow `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                rng: StdRng::seed_from_u64(seed),
                handlers: HashMap::new(),
                addresses: HashMap::new(),
                cut: HashSet::new(),
                muted: HashSet::new(),
                drop_rate: 0.0,
                duplicate_rate: 0.0,
                delay: (Duration::ZERO, Duration::ZERO),
                counts: Counts::default(),
            }),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Attaches a node: messages to `node` or to `address` reach `handler`.
    pub fn attach(&self, node: NodeId, address: &str, handler: Arc<dyn Handler>) {
        self.with(|n| {
            n.handlers.insert(node, handler);
            n.addresses.insert(address.to_string(), node);
        });
    }

    /// Detaches a node (it stopped): messages to it are lost.
    pub fn detach(&self, node: NodeId) {
        self.with(|n| {
            n.handlers.remove(&node);
        });
    }

    /// Loses every message between the two groups, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut_one_way(*x, *y);
                self.cut_one_way(*y, *x);
            }
        }
    }

    /// Loses every message from `from` to `to` (not the other way).
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.with(|n| n.cut.insert((from, to)));
    }

    /// Loses every message of kind `name` ([`Request::name`]) sent by or
    /// to `node`, the rest of its traffic flowing: a node that, say, never
    /// manages to fetch a layout while its gossip and replication work.
    pub fn mute(&self, node: NodeId, name: &'static str) {
        self.with(|n| n.muted.insert((node, name)));
    }

    /// Ends every partition and every [`mute`](Self::mute).
    pub fn heal(&self) {
        self.with(|n| {
            n.cut.clear();
            n.muted.clear();
        });
    }

    /// Each message is lost with probability `rate`.
    pub fn set_drop_rate(&self, rate: f64) {
        self.with(|n| n.drop_rate = rate.clamp(0.0, 1.0));
    }

    /// Each request is delivered twice with probability `rate`.
    pub fn set_duplicate_rate(&self, rate: f64) {
        self.with(|n| n.duplicate_rate = rate.clamp(0.0, 1.0));
    }

    /// Each message takes between `min` and `max` to arrive.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.with(|n| n.delay = (min, max.max(min)));
    }

    pub fn counts(&self) -> Counts {
        self.with(|n| n.counts)
    }

    fn fate(&self, from: Option<NodeId>, to: &Peer, name: &'static str) -> Fate {
        self.with(|n| {
            let target = match to {
                Peer::Node(id) => Some(*id),
                Peer::Seed(address) => n.addresses.get(address).copied(),
            };
            let handler = target.and_then(|t| n.handlers.get(&t).cloned());
            let cut = match (from, target) {
                (Some(f), Some(t)) => n.cut.contains(&(f, t)),
                _ => false,
            };
            let muted = [from, target]
                .into_iter()
                .flatten()
                .any(|node| n.muted.contains(&(node, name)));
            let cut = cut || muted;
            let Some(handler) = handler.filter(|_| !cut) else {
                n.counts.lost += 1;
                return Fate::Lost;
            };
            let (min, max) = n.delay;
            let delay = if max > min {
                n.rng.random_range(min..=max)
            } else {
                min
            };
            let dropped = n.drop_rate > 0.0 && n.rng.random_bool(n.drop_rate);
            // Half the drops lose the request, half the answer.
            if dropped && n.rng.random_bool(0.5) {
                n.counts.lost += 1;
                return Fate::Lost;
            }
            let twice = n.duplicate_rate > 0.0 && n.rng.random_bool(n.duplicate_rate);
            n.counts.delivered += 1;
            if dropped {
                n.counts.lost += 1;
            }
            if twice {
                n.counts.duplicated += 1;
            }
            Fate::Delivered {
                delay,
                answered: !dropped,
                twice,
                handler,
            }
        })
    }
}

impl Network for MemoryNetwork {
    fn call(
        &self,
        to: Peer,
        envelope: Envelope,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response, PeerError>> {
        let fate = self.fate(envelope.from, &to, request.name());
        Box::pin(async move {
            let no_answer = || {
                PeerError::new(
                    Failure::Timeout,
                    format!("no answer from {to:?} within {timeout:?}"),
                )
            };
            let Fate::Delivered {
                delay,
                answered,
                twice,
                handler,
            } = fate
            else {
                tokio::time::sleep(timeout).await;
                return Err(no_answer());
            };
            let delivery = async {
                tokio::time::sleep(delay).await;
                if twice {
                    let _ = handler.handle(envelope, request.clone()).await;
                }
                handler.handle(envelope, request).await
            };
            match tokio::time::timeout(timeout, delivery).await {
                Ok(_) if !answered => {
                    tokio::time::sleep(timeout.saturating_sub(delay)).await;
                    Err(no_answer())
                }
                Ok(Ok(response)) => Ok(response),
                Ok(Err(refused)) => Err(PeerError::refused(&refused)),
                Err(_) => Err(no_answer()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::error::{Error, Result};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts the requests it handles; refuses reads.
    #[derive(Default)]
    struct Counter(AtomicU64);

    impl Handler for Counter {
        fn handle(&self, _: Envelope, request: Request) -> BoxFuture<'_, Result<Response>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match request {
                    Request::Read { .. } => Err(Error::InvalidArgument("no reads".into())),
                    _ => Ok(Response::Done),
                }
            })
        }

        fn handle_batch(
            &self,
            envelope: Envelope,
            requests: Vec<Request>,
        ) -> BoxFuture<'_, Vec<Result<Response>>> {
            Box::pin(async move {
                let mut answers = Vec::new();
                for r in requests {
                    answers.push(self.handle(envelope, r).await);
                }
                answers
            })
        }
    }

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn from(node: NodeId) -> Envelope {
        Envelope {
            from: Some(node),
            ..Envelope::default()
        }
    }

    fn replicate() -> Request {
        Request::Replicate {
            key: "k".into(),
            versions: "v".into(),
        }
    }

    const T: Duration = Duration::from_millis(100);

    #[tokio::test(start_paused = true)]
    async fn delivers_refuses_and_loses_across_partitions() {
        let net = MemoryNetwork::new(1);
        let b = Arc::new(Counter::default());
        net.attach(B, "b:1", b.clone());
        assert_eq!(
            net.call(Peer::Node(B), from(A), replicate(), T).await,
            Ok(Response::Done)
        );
        assert_eq!(
            net.call(Peer::Seed("b:1".into()), from(A), replicate(), T)
                .await,
            Ok(Response::Done)
        );
        let refused = net
            .call(Peer::Node(B), from(A), Request::Read { key: "k".into() }, T)
            .await
            .unwrap_err();
        assert_eq!(
            refused.failure,
            Failure::Refused(ringkv_core::error::Code::InvalidArgument)
        );

        net.cut_one_way(A, B);
        let started = tokio::time::Instant::now();
        let lost = net
            .call(Peer::Node(B), from(A), replicate(), T)
            .await
            .unwrap_err();
        assert_eq!(lost.failure, Failure::Timeout);
        assert_eq!(
            started.elapsed(),
            T,
            "a black hole answers nothing until the timeout"
        );
        // The other direction still works.
        net.attach(A, "a:1", Arc::new(Counter::default()));
        assert!(net
            .call(Peer::Node(A), from(B), replicate(), T)
            .await
            .is_ok());
        net.heal();
        assert!(net
            .call(Peer::Node(B), from(A), replicate(), T)
            .await
            .is_ok());
        net.detach(B);
        assert!(net
            .call(Peer::Node(B), from(A), replicate(), T)
            .await
            .is_err());
        assert_eq!(b.0.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_muted_message_kind_is_lost_to_and_from_its_node_only() {
        let net = MemoryNetwork::new(1);
        net.attach(A, "a:1", Arc::new(Counter::default()));
        net.attach(B, "b:1", Arc::new(Counter::default()));
        net.mute(B, "get_layout");
        let to_b = net
            .call(Peer::Node(B), from(A), Request::GetLayout, T)
            .await;
        assert_eq!(to_b.unwrap_err().failure, Failure::Timeout);
        let from_b = net
            .call(Peer::Node(A), from(B), Request::GetLayout, T)
            .await;
        assert_eq!(from_b.unwrap_err().failure, Failure::Timeout);
        // Other kinds still flow, and other nodes are untouched.
        assert!(net
            .call(Peer::Node(B), from(A), replicate(), T)
            .await
            .is_ok());
        net.attach(C, "c:1", Arc::new(Counter::default()));
        assert!(net
            .call(Peer::Node(C), from(A), Request::GetLayout, T)
            .await
            .is_ok());
        net.heal();
        assert!(net
            .call(Peer::Node(B), from(A), Request::GetLayout, T)
            .await
            .is_ok());
    }

    /// Runs 200 calls under drops, duplicates and delays; returns what the
    /// receiver saw, what the senders saw, and the network's counts.
    async fn run(seed: u64) -> (u64, Vec<bool>, Counts) {
        let net = MemoryNetwork::new(seed);
        let b = Arc::new(Counter::default());
        net.attach(B, "b:1", b.clone());
        net.set_drop_rate(0.2);
        net.set_duplicate_rate(0.1);
        net.set_delay(Duration::from_millis(1), Duration::from_millis(20));
        let mut outcomes = Vec::new();
        for _ in 0..200 {
            outcomes.push(
                net.call(Peer::Node(B), from(A), replicate(), T)
                    .await
                    .is_ok(),
            );
        }
        (b.0.load(Ordering::SeqCst), outcomes, net.counts())
    }

    #[tokio::test(start_paused = true)]
    async fn faults_follow_the_seed_exactly() {
        let (handled, outcomes, counts) = run(7).await;
        let ok = outcomes.iter().filter(|o| **o).count() as u64;
        // Some requests were lost, some applied without an answer, some
        // applied twice.
        assert!(ok < 200 && ok > 100, "{ok} answered");
        assert!(counts.duplicated > 0 && counts.lost > 0, "{counts:?}");
        assert_eq!(handled, counts.delivered + counts.duplicated);
        assert!(handled > ok, "answers were lost after delivery");
        assert_eq!(run(7).await, (handled, outcomes.clone(), counts));
        assert_ne!(run(8).await.1, outcomes, "another seed, other faults");
    }
}
