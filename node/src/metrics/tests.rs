use std::collections::BTreeSet;

use super::*;
use ringkv_storage::MemoryEngine;

/// Every `# HELP` and `# TYPE` line the hand-written exposition produced
/// before `prometheus-client` took over, plus the hint, anti-entropy and
/// membership figures DESIGN.md names, added since: names, types and help texts are what dashboards and alerts are
/// written against, so they must not move.
const EXPECTED_DESCRIPTORS: &str = "\
# HELP ringkv_requests_total Requests served, by operation and gRPC status.
# TYPE ringkv_requests_total counter
# HELP ringkv_request_duration_seconds Request latency, by operation and consistency level.
# TYPE ringkv_request_duration_seconds histogram
# HELP ringkv_transfer_bytes_total Bytes of keys and versions received by partition transfers.
# TYPE ringkv_transfer_bytes_total counter
# HELP ringkv_transfer_keys_total Keys received by partition transfers.
# TYPE ringkv_transfer_keys_total counter
# HELP ringkv_quorum_failures_total Requests that could not reach their replica count.
# TYPE ringkv_quorum_failures_total counter
# HELP ringkv_overloaded_total Requests refused by the concurrency limit.
# TYPE ringkv_overloaded_total counter
# HELP ringkv_siblings_collapsed_total Versions dropped by the sibling cap.
# TYPE ringkv_siblings_collapsed_total counter
# HELP ringkv_read_repairs_total Replicas sent the merged state by read repair.
# TYPE ringkv_read_repairs_total counter
# HELP ringkv_speculative_reads_total Replicas a read asked beyond R because one it asked was slow (cluster.speculative_read_ms) or failed.
# TYPE ringkv_speculative_reads_total counter
# HELP ringkv_internal_batches_total Batch calls of replica operations received from peers.
# TYPE ringkv_internal_batches_total counter
# HELP ringkv_internal_batch_items_total Replica operations (replicate, hint, local read) carried by those batch calls.
# TYPE ringkv_internal_batch_items_total counter
# HELP ringkv_hints_stored_total Hints stored by this node for replicas that could not take a write.
# TYPE ringkv_hints_stored_total counter
# HELP ringkv_hints_delivered_total Hints delivered to their replica (or to the partition's current replicas).
# TYPE ringkv_hints_delivered_total counter
# HELP ringkv_hints_dropped_total Hints dropped: expired after handoff.max_age_ms, or too large to deliver.
# TYPE ringkv_hints_dropped_total counter
# HELP ringkv_anti_entropy_keys_repaired_total Keys anti-entropy found behind on a replica and repaired.
# TYPE ringkv_anti_entropy_keys_repaired_total counter
# HELP ringkv_foreign_cluster_refusals_total Calls, gossip messages and layouts refused because they came from another cluster.
# TYPE ringkv_foreign_cluster_refusals_total counter
# HELP ringkv_gossip_entries_refused_total Gossiped member entries refused as out of bounds (impossible generation or heartbeat jumps, full member table).
# TYPE ringkv_gossip_entries_refused_total counter
# HELP ringkv_hints_pending Hints held by this node.
# TYPE ringkv_hints_pending gauge
# HELP ringkv_members Members in this node's view of the cluster (left ones excluded).
# TYPE ringkv_members gauge
# HELP ringkv_members_alive Members this node believes alive, itself included.
# TYPE ringkv_members_alive gauge
# HELP ringkv_storage_bytes Approximate bytes stored by the engine.
# TYPE ringkv_storage_bytes gauge
# HELP ringkv_storage_failed 1 once a WAL write or sync failed: the node refuses writes until restarted.
# TYPE ringkv_storage_failed gauge
# HELP ringkv_test_owned_total A counter owned elsewhere. It has two sentences.
# TYPE ringkv_test_owned_total counter
";

/// The page as `name{labels}` → value, the way the integration tests and
/// Prometheus read it.
fn samples(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("a sample line has a value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

fn value(text: &str, name: &str) -> Option<String> {
    samples(text)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

#[test]
fn names_types_and_help_texts_are_unchanged() {
    let m = Metrics::new();
    m.request("put", "quorum", "OK", Duration::from_millis(1));
    m.register(RegisteredCounter {
        name: "ringkv_test_owned_total",
        help: "A counter owned elsewhere. It has two sentences.",
        value: Arc::new(AtomicU64::new(0)),
    });
    let text = m.render(&MemoryEngine::new());
    let got: BTreeSet<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let expected: BTreeSet<&str> = EXPECTED_DESCRIPTORS.lines().collect();
    assert_eq!(got, expected, "{text}");
    for (name, _) in samples(&text) {
        assert!(!name.contains("_total_total"), "{name}");
    }
}

#[test]
fn renders_counters_and_cumulative_buckets() {
    let m = Metrics::new();
    m.request("put", "quorum", "OK", Duration::from_micros(300));
    m.request("put", "quorum", "OK", Duration::from_millis(3));
    m.request("get", "one", "UNAVAILABLE", Duration::from_millis(1));
    m.transferred(1234, 5);
    m.hints_pending(7);
    let text = m.render(&MemoryEngine::new());
    let v = |name: &str| value(&text, name);
    assert_eq!(
        v(r#"ringkv_requests_total{op="put",code="OK"}"#).as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(v("ringkv_quorum_failures_total").as_deref(), Some("1"));
    assert_eq!(v("ringkv_transfer_bytes_total").as_deref(), Some("1234"));
    assert_eq!(v("ringkv_transfer_keys_total").as_deref(), Some("5"));
    assert_eq!(v("ringkv_hints_pending").as_deref(), Some("7"));
    assert_eq!(v("ringkv_storage_failed").as_deref(), Some("0"));
    let bucket = |le| {
        v(&format!(
            r#"ringkv_request_duration_seconds_bucket{{op="put",level="quorum",le="{le}"}}"#
        ))
    };
    assert_eq!(bucket("0.00025").as_deref(), Some("0"), "{text}");
    assert_eq!(bucket("0.0005").as_deref(), Some("1"), "{text}");
    assert_eq!(bucket("0.005").as_deref(), Some("2"));
    assert_eq!(bucket("10").as_deref(), Some("2"));
    assert_eq!(bucket("+Inf").as_deref(), Some("2"));
    assert_eq!(
        v(r#"ringkv_request_duration_seconds_count{op="put",level="quorum"}"#).as_deref(),
        Some("2")
    );
    let sum: f64 = v(r#"ringkv_request_duration_seconds_sum{op="put",level="quorum"}"#)
        .and_then(|s| s.parse().ok())
        .expect("a sum");
    assert!((sum - 0.0033).abs() < 1e-9, "{sum}");
    assert_eq!(m.transfer_bytes(), 1234);

    let failed = MemoryEngine::new();
    failed.health().fail("test".into());
    assert_eq!(
        value(&m.render(&failed), "ringkv_storage_failed").as_deref(),
        Some("1")
    );
}

#[test]
fn registered_counters_are_read_at_scrape_time() {
    let m = Metrics::new();
    let owned = Arc::new(AtomicU64::new(3));
    m.register(RegisteredCounter {
        name: "ringkv_test_owned_total",
        help: "Owned elsewhere.",
        value: owned.clone(),
    });
    let engine = MemoryEngine::new();
    assert_eq!(
        value(&m.render(&engine), "ringkv_test_owned_total").as_deref(),
        Some("3")
    );
    owned.fetch_add(2, Ordering::Relaxed);
    assert_eq!(
        value(&m.render(&engine), "ringkv_test_owned_total").as_deref(),
        Some("5")
    );
}

#[test]
fn hint_anti_entropy_and_member_figures_are_exposed() {
    // DESIGN.md's metrics name hints delivered and dropped, anti-entropy
    // keys repaired, members and live members, and the operations guide
    // tells operators to watch them: the node counts them, so the page
    // must show them.
    let m = Metrics::new();
    m.hints_stored(3);
    m.hints_delivered(2);
    m.hints_dropped(1);
    m.anti_entropy_repaired(5);
    m.members(4, 3);
    let text = m.render(&MemoryEngine::new());
    let v = |name: &str| value(&text, name);
    assert_eq!(
        v("ringkv_hints_stored_total").as_deref(),
        Some("3"),
        "{text}"
    );
    assert_eq!(
        v("ringkv_hints_delivered_total").as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        v("ringkv_hints_dropped_total").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        v("ringkv_anti_entropy_keys_repaired_total").as_deref(),
        Some("5"),
        "{text}"
    );
    assert_eq!(v("ringkv_members").as_deref(), Some("4"), "{text}");
    assert_eq!(v("ringkv_members_alive").as_deref(), Some("3"), "{text}");
}
