//! Put/get/delete semantics: contexts, siblings, LWW, tombstones, TTL, reply meta, sibling cap.

use super::*;

#[tokio::test]
async fn put_then_get_returns_the_value_and_a_context() {
    let node = start(&[]).await;
    let put = node.put(put_req("alpha", "one")).await.unwrap();
    assert!(
        !put.context.is_empty(),
        "put must return the new version's context"
    );

    let reply = node.get(get_req("alpha")).await.unwrap();
    assert!(reply.found);
    assert_eq!(reply.siblings.len(), 1);
    assert_eq!(reply.siblings[0].value.as_ref(), b"one");
    assert!(reply.siblings[0].timestamp > 0);
    assert_eq!(reply.siblings[0].expires_at_ms, None);
    assert!(!reply.context.is_empty());

    let missing = node.get(get_req("never-written")).await.unwrap();
    assert!(!missing.found);
    assert!(missing.siblings.is_empty());
}

#[tokio::test]
async fn blind_overwrite_leaves_one_sibling() {
    let node = start(&[]).await;
    for v in ["v1", "v2", "v3"] {
        node.put(put_req("k", v)).await.unwrap();
    }
    assert_eq!(node.values("k").await, vec!["v3"]);
    assert_eq!(node.local_get(b"k").await.unwrap().versions.len(), 1);
}

/// Writes v1, then v2 and v3 both with v1's context: two concurrent
/// siblings. Returns the context of the v2 put.
async fn make_two_siblings(node: &Node, key: &str) -> Vec<u8> {
    let first = node.put(put_req(key, "v1")).await.unwrap().context;
    let second = node
        .put(put_with_context(key, "v2", &first))
        .await
        .unwrap()
        .context;
    node.put(put_with_context(key, "v3", &first)).await.unwrap();
    second.to_vec()
}

#[tokio::test]
async fn puts_with_the_same_context_make_siblings_that_a_put_with_their_context_resolves() {
    let node = start(&[]).await;
    make_two_siblings(&node, "k").await;

    let reply = node.get(get_req("k")).await.unwrap();
    let values: Vec<&[u8]> = reply.siblings.iter().map(|s| s.value.as_ref()).collect();
    assert_eq!(
        values,
        vec![&b"v2"[..], &b"v3"[..]],
        "siblings, oldest first"
    );
    assert_eq!(node.local_get(b"k").await.unwrap().versions.len(), 2);

    node.put(put_with_context("k", "merged", &reply.context))
        .await
        .unwrap();
    assert_eq!(node.values("k").await, vec!["merged"]);
    assert_eq!(node.local_get(b"k").await.unwrap().versions.len(), 1);
}

#[tokio::test]
async fn resolve_lww_returns_exactly_the_latest_sibling() {
    let node = start(&[]).await;
    make_two_siblings(&node, "k").await;
    let all = node.get(get_req("k")).await.unwrap();
    assert_eq!(all.siblings.len(), 2);
    let latest = all.siblings.iter().map(|s| s.timestamp).max().unwrap();

    let lww = node
        .get(pb::GetRequest {
            resolve: pb::Resolve::Lww as i32,
            ..get_req("k")
        })
        .await
        .unwrap();
    assert!(lww.found);
    assert_eq!(lww.siblings.len(), 1);
    assert_eq!(lww.siblings[0].value.as_ref(), b"v3");
    assert_eq!(lww.siblings[0].timestamp, latest);
    // LWW is a read-side choice: both siblings are still stored.
    assert_eq!(node.values("k").await, vec!["v2", "v3"]);
}

#[tokio::test]
async fn delete_then_get_is_not_found() {
    let node = start(&[]).await;
    node.put(put_req("k", "v")).await.unwrap();
    node.delete(del_req("k")).await.unwrap();
    let reply = node.get(get_req("k")).await.unwrap();
    assert!(!reply.found);
    assert!(reply.siblings.is_empty());
    // Deleting a key that never existed is fine too.
    node.delete(del_req("never-written")).await.unwrap();
    assert!(!node.get(get_req("never-written")).await.unwrap().found);
}

#[tokio::test]
async fn delete_with_a_context_removes_exactly_what_it_covers() {
    let node = start(&[]).await;
    // Siblings v2 and v3; v2's put context covers v2 but not v3.
    let covers_v2 = make_two_siblings(&node, "k").await;
    let delete = pb::DeleteRequest {
        context: covers_v2.into(),
        ..del_req("k")
    };
    node.delete(delete).await.unwrap();
    assert_eq!(
        node.values("k").await,
        vec!["v3"],
        "the delete must spare the sibling it did not see"
    );

    let seen = node.get(get_req("k")).await.unwrap().context;
    let delete = pb::DeleteRequest {
        context: seen,
        ..del_req("k")
    };
    node.delete(delete).await.unwrap();
    assert!(!node.get(get_req("k")).await.unwrap().found);
    let copy = node.local_get(b"k").await.unwrap();
    assert_eq!(copy.versions.len(), 1, "{copy:?}");
    assert!(copy.versions[0].tombstone);
}

#[tokio::test]
async fn ttl_values_are_readable_then_expire() {
    let node = start(&[]).await;
    let put = pb::PutRequest {
        ttl_ms: Some(1000),
        ..put_req("ephemeral", "soon gone")
    };
    node.put(put).await.unwrap();
    let reply = node.get(get_req("ephemeral")).await.unwrap();
    assert_eq!(
        reply.siblings.len(),
        1,
        "a TTL'd value is readable right after the put"
    );
    assert_eq!(reply.siblings[0].value.as_ref(), b"soon gone");
    assert!(reply.siblings[0].expires_at_ms.is_some());

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    loop {
        if !node.get(get_req("ephemeral")).await.unwrap().found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 1 s TTL value is still readable after 12.5 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn reply_meta_names_this_node_and_the_capped_replication() {
    let node = start(&[]).await;
    let id = node.node_status().await.node_id;
    let quorum = || level(pb::Level::Quorum as i32);

    let put = pb::PutRequest {
        consistency: quorum(),
        ..put_req("k", "v")
    };
    let get = pb::GetRequest {
        consistency: quorum(),
        ..get_req("k")
    };
    let delete = pb::DeleteRequest {
        consistency: quorum(),
        ..del_req("k")
    };
    let metas = [
        ("put", node.put(put).await.unwrap().meta),
        ("get", node.get(get).await.unwrap().meta),
        ("delete", node.delete(delete).await.unwrap().meta),
        (
            "default put",
            node.put(put_req("k", "v")).await.unwrap().meta,
        ),
    ];
    for (op, meta) in metas {
        let meta = meta.unwrap_or_else(|| panic!("{op}: reply has no meta"));
        assert_eq!(meta.coordinator, id, "{op}");
        assert_eq!(meta.replicas, vec![id.clone()], "{op}");
        assert!(meta.fallbacks.is_empty(), "{op}");
        assert_eq!(meta.replication, 1, "{op}");
        assert!(meta.replication_capped, "{op}");
        assert_eq!(meta.required, 1, "{op}");
    }
}

/// Default `limits.max_siblings`.
const SIBLING_CAP: usize = 32;

/// Writes v0, then `SIBLING_CAP + extra` puts that all carry v0's context,
/// so each adds one concurrent sibling: `extra` more than the cap allows.
async fn overfill_siblings(node: &Node, key: &str, extra: usize) {
    let first = node.put(put_req(key, "v0")).await.unwrap().context;
    for i in 1..=SIBLING_CAP + extra {
        node.put(put_with_context(key, &format!("s{i:02}"), &first))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn siblings_past_the_cap_are_collapsed_oldest_first() {
    const EXTRA: usize = 8;
    let node = start(&[]).await;
    overfill_siblings(&node, "crowded", EXTRA).await;
    let kept = node.values("crowded").await;
    let newest: Vec<String> = (EXTRA + 1..=SIBLING_CAP + EXTRA)
        .map(|i| format!("s{i:02}"))
        .collect();
    assert_eq!(
        kept, newest,
        "the cap keeps the {SIBLING_CAP} newest siblings"
    );
    assert_eq!(
        node.local_get(b"crowded").await.unwrap().versions.len(),
        SIBLING_CAP
    );
}

#[tokio::test]
async fn collapsed_siblings_are_counted_in_metrics() {
    const EXTRA: usize = 8;
    let node = start(&[]).await;
    overfill_siblings(&node, "crowded", EXTRA).await;
    assert_eq!(node.values("crowded").await.len(), SIBLING_CAP);
    let metrics = scrape(&node.server.metrics);
    assert_eq!(
        metrics.get("ringkv_siblings_collapsed_total"),
        Some(&(EXTRA as f64)),
        "every collapsed sibling is counted"
    );
}
