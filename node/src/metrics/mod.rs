//! Prometheus metrics: counters, gauges and latency histograms.
//!
//! The metrics live in a `prometheus-client` [`Registry`]: each handle
//! (counter, gauge, labelled family) is a cheap clone sharing its atomics
//! with the registry, so the request path bumps atomics and never takes the
//! registry's lock. A scrape encodes the registry in the Prometheus text
//! format (0.0.4, the format and content type served before the library was
//! adopted), then the storage gauges, read from the engine at scrape time.
//! The server crate's `metrics_http::serve` answers `GET /metrics` on `metrics.listen`.
//!
//! Names: `prometheus-client` appends `_total` to every counter and a `.` to
//! every help text it is given, so counters are registered without the
//! suffix and help texts without the final stop; the exposed names and help
//! texts are the ones listed in docs/operations.md.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use ringkv_storage::Engine;

/// Latency bucket bounds in seconds: 100 µs to 10 s, roughly ×2.5 apart.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Labels of `ringkv_requests_total`, in exposition order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    code: &'static str,
}

/// Labels of `ringkv_request_duration_seconds`, in exposition order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    op: &'static str,
    level: &'static str,
}

/// A gauge of a non-negative quantity.
type UGauge = Gauge<u64, AtomicU64>;

/// Node-wide metrics.
pub struct Metrics {
    /// Every metric below that is exposed; behind a lock only because
    /// [`Metrics::register`] adds to it after start.
    registry: Mutex<Registry>,
    /// (operation, status code) → requests.
    requests: Family<RequestLabels, Counter>,
    /// (operation, consistency level) → latency.
    latency: Family<LatencyLabels, Histogram>,
    /// Requests that failed for want of replicas (UNAVAILABLE or DEADLINE_EXCEEDED).
    quorum_failures: Counter,
    /// Requests refused because `limits.max_concurrent_requests` were running.
    overloaded: Counter,
    /// Versions dropped by the sibling cap.
    siblings_collapsed: Counter,
    /// Replicas sent the merged state by read repair.
    read_repairs: Counter,
    speculative_reads: Counter,
    /// Hints stored by this node as a fallback.
    hints_stored: Counter,
    /// Hints delivered to their target and deleted.
    hints_delivered: Counter,
    /// Hints dropped, expired or too large to deliver.
    hints_dropped: Counter,
    /// Hints currently held.
    hints_pending: UGauge,
    /// Keys anti-entropy found behind on a replica and repaired.
    anti_entropy_repaired: Counter,
    /// Members in this node's table (left ones excluded), and those of them
    /// it believes alive (itself included); set after each gossip round.
    members: UGauge,
    members_alive: UGauge,
    /// Bytes of keys and versions received by partition transfers.
    transfer_bytes: Counter,
    /// Keys received by partition transfers.
    transfer_keys: Counter,
    /// Internal batch calls received from peers.
    batches: Counter,
    /// Replica operations those batch calls carried.
    batch_items: Counter,
    /// Calls, gossip and layouts refused because they came from another cluster.
    foreign_cluster_refusals: Counter,
    /// Gossiped member entries refused as out of bounds (a generation or
    /// heartbeat jump no node issues, or a full member table).
    gossip_entries_refused: Counter,
}

/// A counter owned elsewhere (e.g. by the replica) and exposed here.
#[derive(Debug)]
pub struct RegisteredCounter {
    /// The exposed name, `_total` included.
    pub name: &'static str,
    /// The exposed help text, as written.
    pub help: &'static str,
    pub value: Arc<AtomicU64>,
}

/// Reads a [`RegisteredCounter`] at scrape time: its atomic belongs to its
/// owner, so it cannot become a registry `Counter`.
impl Collector for RegisteredCounter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let counter = ConstCounter::new(self.value.load(Ordering::Relaxed));
        // The encoder appends `_total` itself.
        let name = self.name.strip_suffix("_total").unwrap_or(self.name);
        let metric = encoder.encode_descriptor(name, self.help, None, counter.metric_type())?;
        counter.encode(metric)
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Exposes a counter owned by another part of the node.
    pub fn register(&self, counter: RegisteredCounter) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register_collector(Box::new(counter));
    }

    /// Records one finished request.
    pub fn request(
        &self,
        op: &'static str,
        level: &'static str,
        code: &'static str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels { op, code })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { op, level })
            .observe(elapsed.as_secs_f64());
        if code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED" {
            self.quorum_failures.inc();
        }
    }

    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    pub fn hints_stored(&self, n: u64) {
        self.hints_stored.inc_by(n);
    }

    pub fn hints_delivered(&self, n: u64) {
        self.hints_delivered.inc_by(n);
    }

    pub fn hints_dropped(&self, n: u64) {
        self.hints_dropped.inc_by(n);
    }

    pub fn hints_pending(&self, n: u64) {
        self.hints_pending.set(n);
    }

    pub fn anti_entropy_repaired(&self, n: u64) {
        self.anti_entropy_repaired.inc_by(n);
    }

    /// Records this node's view of the membership: `members` known, of
    /// which `alive` are believed alive.
    pub fn members(&self, members: u64, alive: u64) {
        self.members.set(members);
        self.members_alive.set(alive);
    }

    pub fn transferred(&self, bytes: u64, keys: u64) {
        self.transfer_bytes.inc_by(bytes);
        self.transfer_keys.inc_by(keys);
    }

    /// Bytes received by partition transfers since the node started.
    pub fn transfer_bytes(&self) -> u64 {
        self.transfer_bytes.get()
    }

    /// Records one batch call received, carrying `items` operations.
    pub fn batch_received(&self, items: usize) {
        self.batches.inc();
        self.batch_items.inc_by(items as u64);
    }

    /// The counter of calls, gossip messages and layouts refused as another
    /// cluster's; the peer layer's `ClusterIdentity` increments it.
    pub fn foreign_cluster_refusals(&self) -> Counter {
        self.foreign_cluster_refusals.clone()
    }

    /// Records gossiped member entries refused as out of bounds.
    pub fn gossip_entries_refused(&self, n: usize) {
        self.gossip_entries_refused.inc_by(n as u64);
    }

    pub fn read_repaired(&self, n: usize) {
        self.read_repairs.inc_by(n as u64);
    }

    /// Records replicas a read asked beyond R (one was slow or failed).
    pub fn speculative_reads(&self, n: usize) {
        self.speculative_reads.inc_by(n as u64);
    }

    pub fn siblings_collapsed(&self, n: usize) {
        self.siblings_collapsed.inc_by(n as u64);
    }

    /// Prometheus text exposition format (0.0.4).
    pub fn render(&self, engine: &dyn Engine) -> String {
        // Read now: facts about storage and the runtime, not events
        // counted as they happen.
        let mut read_now = Registry::default();
        let bytes = UGauge::default();
        bytes.set(engine.approximate_size_bytes());
        read_now.register(
            "ringkv_storage_bytes",
            "Approximate bytes stored by the engine",
            bytes,
        );
        let failed = UGauge::default();
        failed.set(u64::from(engine.health().failure().is_some()));
        read_now.register(
            "ringkv_storage_failed",
            "1 once a WAL write or sync failed: the node refuses writes until restarted",
            failed,
        );

        // The runtime serving this scrape is the node's (its worker count
        // is `node.worker_threads`, or one per CPU).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let workers = UGauge::default();
            workers.set(runtime.metrics().num_workers() as u64);
            read_now.register(
                "ringkv_runtime_workers",
                "Worker threads of the runtime serving requests (node.worker_threads, or one per CPU)",
                workers,
            );
        }

        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing to a String fails only if an encoder reports an error,
        // which none of ours do; a partial page is still worth serving.
        if let Err(e) = prometheus_text::encode(&mut out, &registry)
            .and_then(|()| prometheus_text::encode(&mut out, &read_now))
        {
            tracing::error!("encoding metrics failed: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            requests,
            latency,
            quorum_failures: Counter::default(),
            overloaded: Counter::default(),
            siblings_collapsed: Counter::default(),
            read_repairs: Counter::default(),
            speculative_reads: Counter::default(),
            hints_stored: Counter::default(),
            hints_delivered: Counter::default(),
            hints_dropped: Counter::default(),
            hints_pending: UGauge::default(),
            anti_entropy_repaired: Counter::default(),
            members: UGauge::default(),
            members_alive: UGauge::default(),
            transfer_bytes: Counter::default(),
            transfer_keys: Counter::default(),
            batches: Counter::default(),
            batch_items: Counter::default(),
            foreign_cluster_refusals: Counter::default(),
            gossip_entries_refused: Counter::default(),
        };
        metrics.register_all();
        metrics
    }
}

impl Metrics {
    /// Registers every exposed metric under its name (counters without
    /// `_total`) and help text (without the final stop).
    fn register_all(&self) {
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "ringkv_requests",
            "Requests served, by operation and gRPC status",
            self.requests.clone(),
        );
        r.register(
            "ringkv_request_duration_seconds",
            "Request latency, by operation and consistency level",
            self.latency.clone(),
        );
        let counters = [
            (
                "ringkv_transfer_bytes",
                "Bytes of keys and versions received by partition transfers",
                &self.transfer_bytes,
            ),
            (
                "ringkv_transfer_keys",
                "Keys received by partition transfers",
                &self.transfer_keys,
            ),
            (
                "ringkv_quorum_failures",
                "Requests that could not reach their replica count",
                &self.quorum_failures,
            ),
            (
                "ringkv_overloaded",
                "Requests refused by the concurrency limit",
                &self.overloaded,
            ),
            (
                "ringkv_siblings_collapsed",
                "Versions dropped by the sibling cap",
                &self.siblings_collapsed,
            ),
            (
                "ringkv_read_repairs",
                "Replicas sent the merged state by read repair",
                &self.read_repairs,
            ),
            (
                "ringkv_speculative_reads",
                "Replicas a read asked beyond R because one it asked was slow (cluster.speculative_read_ms) or failed",
                &self.speculative_reads,
            ),
            (
                "ringkv_internal_batches",
                "Batch calls of replica operations received from peers",
                &self.batches,
            ),
            (
                "ringkv_internal_batch_items",
                "Replica operations (replicate, hint, local read) carried by those batch calls",
                &self.batch_items,
            ),
            (
                "ringkv_hints_stored",
                "Hints stored by this node for replicas that could not take a write",
                &self.hints_stored,
            ),
            (
                "ringkv_hints_delivered",
                "Hints delivered to their replica (or to the partition's current replicas)",
                &self.hints_delivered,
            ),
            (
                "ringkv_hints_dropped",
                "Hints dropped: expired after handoff.max_age_ms, or too large to deliver",
                &self.hints_dropped,
            ),
            (
                "ringkv_anti_entropy_keys_repaired",
                "Keys anti-entropy found behind on a replica and repaired",
                &self.anti_entropy_repaired,
            ),
            (
                "ringkv_foreign_cluster_refusals",
                "Calls, gossip messages and layouts refused because they came from another cluster",
                &self.foreign_cluster_refusals,
            ),
            (
                "ringkv_gossip_entries_refused",
                "Gossiped member entries refused as out of bounds (impossible generation or heartbeat jumps, full member table)",
                &self.gossip_entries_refused,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        r.register(
            "ringkv_hints_pending",
            "Hints held by this node",
            self.hints_pending.clone(),
        );
        r.register(
            "ringkv_members",
            "Members in this node's view of the cluster (left ones excluded)",
            self.members.clone(),
        );
        r.register(
            "ringkv_members_alive",
            "Members this node believes alive, itself included",
            self.members_alive.clone(),
        );
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

#[cfg(test)]
mod tests;
