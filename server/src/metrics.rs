//! Prometheus metrics: counters and latency histograms, served as text.
//!
//! The registry is a handful of maps behind `std` mutexes: each request
//! takes a lock for a few nanoseconds to bump a counter, which is far below
//! the cost of the request itself, and keeps the exposition code small.
//! Metrics are served at `http://<metrics.listen>/metrics` by a minimal HTTP
//! responder that answers GET requests only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_common::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::storage::Engine;

/// Latency bucket bounds in seconds: 100 µs to 10 s, roughly ×2.5 apart.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Largest HTTP request head the metrics endpoint reads.
const MAX_HTTP_REQUEST_BYTES: usize = 8 * 1024;

/// How long a scraper may take to send its request.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative; summed at exposition).
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Node-wide metrics.
#[derive(Default)]
pub struct Metrics {
    /// (operation, status code) → requests.
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (operation, consistency level) → latency.
    latency: Mutex<BTreeMap<(&'static str, String), Histogram>>,
    /// Requests that failed for want of replicas (UNAVAILABLE or DEADLINE_EXCEEDED).
    quorum_failures: AtomicU64,
    /// Requests refused because `limits.max_concurrent_requests` were running.
    overloaded: AtomicU64,
    /// Versions dropped by the sibling cap.
    siblings_collapsed: AtomicU64,
    /// Replicas sent the merged state by read repair.
    read_repairs: AtomicU64,
    /// Hints stored by this node as a fallback.
    hints_stored: AtomicU64,
    /// Hints delivered to their target and deleted.
    hints_delivered: AtomicU64,
    /// Hints dropped (expired or undecodable).
    hints_dropped: AtomicU64,
    /// Hints currently held.
    hints_pending: AtomicU64,
    /// Keys anti-entropy found behind on a replica and repaired.
    anti_entropy_repaired: AtomicU64,
    /// Bytes of keys and versions received by partition transfers.
    transfer_bytes: AtomicU64,
    /// Keys received by partition transfers.
    transfer_keys: AtomicU64,
    /// Internal batch calls received from peers.
    batches: AtomicU64,
    /// Replica operations those batch calls carried.
    batch_items: AtomicU64,
    /// Calls, gossip and layouts refused because they came from another cluster.
    foreign_cluster_refusals: AtomicU64,
    /// Gossiped member entries refused as out of bounds (a generation or
    /// heartbeat jump no node issues, or a full member table).
    gossip_entries_refused: AtomicU64,
    /// Counters kept by other parts of the node (name, help, value),
    /// registered once at start and rendered with the rest.
    registered: Mutex<Vec<RegisteredCounter>>,
}

/// A counter owned elsewhere (e.g. by the replica) and exposed here.
pub struct RegisteredCounter {
    pub name: &'static str,
    pub help: &'static str,
    pub value: Arc<AtomicU64>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Exposes a counter owned by another part of the node.
    pub fn register(&self, counter: RegisteredCounter) {
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(counter);
    }

    /// Records one finished request.
    pub fn request(&self, op: &'static str, level: &str, code: &'static str, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, code))
            .or_default() += 1;
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, level.to_string()))
            .or_default()
            .observe(elapsed.as_secs_f64());
        if code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED" {
            self.quorum_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hints_stored(&self, n: u64) {
        self.hints_stored.fetch_add(n, Ordering::Relaxed);
    }

    pub fn hints_delivered(&self, n: u64) {
        self.hints_delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub fn hints_dropped(&self, n: u64) {
        self.hints_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn hints_pending(&self, n: u64) {
        self.hints_pending.store(n, Ordering::Relaxed);
    }

    pub fn anti_entropy_repaired(&self, n: u64) {
        self.anti_entropy_repaired.fetch_add(n, Ordering::Relaxed);
    }

    pub fn transferred(&self, bytes: u64, keys: u64) {
        self.transfer_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.transfer_keys.fetch_add(keys, Ordering::Relaxed);
    }

    /// Bytes received by partition transfers since the node started.
    pub fn transfer_bytes(&self) -> u64 {
        self.transfer_bytes.load(Ordering::Relaxed)
    }

    /// Records one batch call received, carrying `items` operations.
    pub fn batch_received(&self, items: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_items.fetch_add(items as u64, Ordering::Relaxed);
    }

    /// Records one call, gossip message or layout refused as another cluster's.
    pub fn foreign_cluster_refused(&self) {
        self.foreign_cluster_refusals
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records gossiped member entries refused as out of bounds.
    pub fn gossip_entries_refused(&self, n: usize) {
        self.gossip_entries_refused
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn read_repaired(&self, n: usize) {
        self.read_repairs.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn siblings_collapsed(&self, n: usize) {
        self.siblings_collapsed
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self, engine: &dyn Engine) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP ringkv_requests_total Requests served, by operation and gRPC status.\n",
        );
        out.push_str("# TYPE ringkv_requests_total counter\n");
        for ((op, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ringkv_requests_total{{op=\"{op}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP ringkv_request_duration_seconds Request latency, by operation and consistency level.\n");
        out.push_str("# TYPE ringkv_request_duration_seconds histogram\n");
        for ((op, level), h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += h.buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "ringkv_request_duration_seconds_bucket{{op=\"{op}\",level=\"{level}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "ringkv_request_duration_seconds_bucket{{op=\"{op}\",level=\"{level}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ringkv_request_duration_seconds_sum{{op=\"{op}\",level=\"{level}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ringkv_request_duration_seconds_count{{op=\"{op}\",level=\"{level}\"}} {}",
                h.count
            );
        }
        let counters = [
            (
                "ringkv_transfer_bytes_total",
                "Bytes of keys and versions received by partition transfers.",
                &self.transfer_bytes,
            ),
            (
                "ringkv_transfer_keys_total",
                "Keys received by partition transfers.",
                &self.transfer_keys,
            ),
            (
                "ringkv_quorum_failures_total",
                "Requests that could not reach their replica count.",
                &self.quorum_failures,
            ),
            (
                "ringkv_overloaded_total",
                "Requests refused by the concurrency limit.",
                &self.overloaded,
            ),
            (
                "ringkv_siblings_collapsed_total",
                "Versions dropped by the sibling cap.",
                &self.siblings_collapsed,
            ),
            (
                "ringkv_read_repairs_total",
                "Replicas sent the merged state by read repair.",
                &self.read_repairs,
            ),
            (
                "ringkv_internal_batches_total",
                "Batch calls of replica operations received from peers.",
                &self.batches,
            ),
            (
                "ringkv_internal_batch_items_total",
                "Replica operations (replicate, hint, local read) carried by those batch calls.",
                &self.batch_items,
            ),
            (
                "ringkv_foreign_cluster_refusals_total",
                "Calls, gossip messages and layouts refused because they came from another cluster.",
                &self.foreign_cluster_refusals,
            ),
            (
                "ringkv_gossip_entries_refused_total",
                "Gossiped member entries refused as out of bounds (impossible generation or heartbeat jumps, full member table).",
                &self.gossip_entries_refused,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for c in self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.value.load(Ordering::Relaxed),
                name = c.name,
                help = c.help,
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringkv_hints_pending Hints held by this node.\n# TYPE ringkv_hints_pending gauge\nringkv_hints_pending {}",
            self.hints_pending.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_storage_bytes Approximate bytes stored by the engine.\n# TYPE ringkv_storage_bytes gauge\nringkv_storage_bytes {}",
            engine.approximate_size_bytes()
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_storage_failed 1 once a WAL write or sync failed: the node refuses writes until restarted.\n# TYPE ringkv_storage_failed gauge\nringkv_storage_failed {}",
            u8::from(engine.health().failure().is_some())
        );
        out
    }
}

/// Serves `/metrics` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: Arc<dyn Engine>,
    mut shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_HTTP_REQUEST_BYTES];
            let mut len = 0;
            let read = tokio::time::timeout(HTTP_READ_TIMEOUT, async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (status, body) = if head.starts_with("GET /metrics ") || head.starts_with("GET / ")
            {
                let body = tokio::task::spawn_blocking(move || metrics.render(engine.as_ref()))
                    .await
                    .unwrap_or_default();
                ("200 OK", body)
            } else {
                (
                    "404 Not Found",
                    "not found: metrics are at /metrics\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new();
        m.request("put", "quorum", "OK", Duration::from_micros(300));
        m.request("put", "quorum", "OK", Duration::from_millis(3));
        m.request("get", "one", "UNAVAILABLE", Duration::from_millis(1));
        let text = m.render(&MemoryEngine::new());
        assert!(
            text.contains("ringkv_requests_total{op=\"put\",code=\"OK\"} 2"),
            "{text}"
        );
        assert!(text.contains("ringkv_quorum_failures_total 1"), "{text}");
        assert!(text.contains("\nringkv_storage_failed 0\n"), "{text}");
        let failed = MemoryEngine::new();
        failed.health().fail("test".into());
        assert!(m.render(&failed).contains("\nringkv_storage_failed 1\n"));
        assert!(text.contains(
            "ringkv_request_duration_seconds_bucket{op=\"put\",level=\"quorum\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "ringkv_request_duration_seconds_bucket{op=\"put\",level=\"quorum\",le=\"0.005\"} 2"
        ));
        assert!(
            text.contains("ringkv_request_duration_seconds_count{op=\"put\",level=\"quorum\"} 2")
        );
    }
}
