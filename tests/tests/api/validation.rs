//! Bad client input, refused (INVALID_ARGUMENT) while the node keeps serving; forged contexts.

use super::*;

#[tokio::test]
async fn empty_key_is_invalid_for_every_method() {
    let node = start(&[]).await;
    assert_invalid(node.get(get_req("")).await, &["key", "empty"]);
    assert_invalid(node.put(put_req("", "v")).await, &["key", "empty"]);
    assert_invalid(node.delete(del_req("")).await, &["key", "empty"]);
    assert_invalid(node.local_get(b"").await, &["key", "got 0"]);
    let read = pb::LocalReadRequest {
        key: Default::default(),
    };
    assert_invalid(
        node.internal.clone().local_read(read).await,
        &["key", "got 0"],
    );
    let replicate = pb::ReplicateRequest {
        key: Default::default(),
        version_set: vec![0x01, 0x00, 0x00].into(),
        from: "test".to_string(),
        hint_for: String::new(),
    };
    assert_invalid(
        node.internal.clone().replicate(replicate).await,
        &["key", "got 0"],
    );
    node.assert_still_serving().await;
}

#[tokio::test]
async fn key_above_4096_bytes_is_invalid_and_4096_is_accepted() {
    let node = start(&[]).await;
    let long = vec![b'k'; MAX_KEY + 1];
    assert_invalid(node.get(get_req(&long)).await, &["4097", "4096"]);
    assert_invalid(node.put(put_req(&long, "v")).await, &["4097", "4096"]);
    assert_invalid(node.delete(del_req(&long)).await, &["4097", "4096"]);
    assert_invalid(node.local_get(&long).await, &["key", "4097"]);

    let at_limit = vec![b'k'; MAX_KEY];
    node.put(put_req(&at_limit, "at the limit")).await.unwrap();
    let reply = node.get(get_req(&at_limit)).await.unwrap();
    assert_eq!(reply.siblings.len(), 1);
    assert_eq!(reply.siblings[0].value.as_ref(), b"at the limit");
    assert!(node.local_get(&at_limit).await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn empty_value_is_invalid() {
    let node = start(&[]).await;
    assert_invalid(node.put(put_req("k", "")).await, &["value", "empty"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn value_limit_is_exactly_one_mebibyte() {
    let node = start(&[]).await;
    let at_limit: Vec<u8> = (0..MAX_VALUE).map(|i| (i % 251) as u8).collect();
    node.put(put_req("big", &at_limit))
        .await
        .expect("a value of exactly limits.max_value_bytes must be accepted");
    let reply = node.get(get_req("big")).await.unwrap();
    assert_eq!(reply.siblings.len(), 1);
    assert!(
        reply.siblings[0].value.as_ref() == at_limit.as_slice(),
        "1 MiB value read back differs"
    );

    let over = vec![b'x'; MAX_VALUE + 1];
    assert_invalid(
        node.put(put_req("big", &over)).await,
        &["1048577", "1048576"],
    );
    // The refused put left the stored value alone.
    let reply = node.get(get_req("big")).await.unwrap();
    assert_eq!(reply.siblings.len(), 1);
    assert_eq!(reply.siblings[0].value.len(), MAX_VALUE);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn malformed_contexts_are_invalid_and_change_nothing() {
    let node = start(&[]).await;
    let valid = node
        .put(put_req("ctx", "original"))
        .await
        .unwrap()
        .context
        .to_vec();
    assert!(!valid.is_empty());

    let mut wrong_format = valid.clone();
    wrong_format[0] = 0x7f;
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"\xde\xad\xbe\xef this is not a context".to_vec(),
        ),
        (
            "garbage after a valid format byte",
            vec![0x01, 0xff, 0xff, 0xff, 0xff],
        ),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("format byte only", valid[..1].to_vec()),
        ("wrong format byte", wrong_format),
        ("trailing byte", trailing),
        ("zero counter", context_bytes(&[(7, 0)])),
        ("nodes out of order", context_bytes(&[(9, 1), (7, 1)])),
        ("duplicate node", context_bytes(&[(7, 1), (7, 2)])),
        ("non-minimal varint", vec![0x01, 0x81, 0x00]),
        (
            "more than 1024 entries",
            context_bytes(&(1..=1025).map(|n| (n, 1)).collect::<Vec<_>>()),
        ),
    ];
    for (what, context) in &cases {
        let put = pb::PutRequest {
            context: context.clone().into(),
            ..put_req("ctx", "overwritten")
        };
        let result = node.put(put).await;
        assert!(result.is_err(), "{what}: put accepted a malformed context");
        assert_invalid(result, &["context"]);

        let delete = pb::DeleteRequest {
            context: context.clone().into(),
            ..del_req("ctx")
        };
        let result = node.delete(delete).await;
        assert!(
            result.is_err(),
            "{what}: delete accepted a malformed context"
        );
        assert_invalid(result, &["context"]);
    }
    assert_eq!(node.values("ctx").await, vec!["original"]);
    assert_eq!(node.local_get(b"ctx").await.unwrap().versions.len(), 1);

    // The untouched context is still good.
    node.put(put_with_context("ctx", "replaced", &valid))
        .await
        .unwrap();
    assert_eq!(node.values("ctx").await, vec!["replaced"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn unknown_level_is_invalid() {
    let node = start(&[]).await;
    let put = pb::PutRequest {
        consistency: level(99),
        ..put_req("k", "v")
    };
    assert_invalid(node.put(put).await, &["level", "99"]);
    let get = pb::GetRequest {
        consistency: level(99),
        ..get_req("k")
    };
    assert_invalid(node.get(get).await, &["level", "99"]);
    let delete = pb::DeleteRequest {
        consistency: level(-1),
        ..del_req("k")
    };
    assert_invalid(node.delete(delete).await, &["level", "-1"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn replica_count_outside_one_to_n_is_invalid() {
    let node = start(&[]).await;
    for (n, needles) in [(0, &["at least 1"][..]), (4, &["4", "N=3"][..])] {
        let put = pb::PutRequest {
            consistency: count(n),
            ..put_req("k", "v")
        };
        assert_invalid(node.put(put).await, needles);
        let get = pb::GetRequest {
            consistency: count(n),
            ..get_req("k")
        };
        assert_invalid(node.get(get).await, needles);
        let delete = pb::DeleteRequest {
            consistency: count(n),
            ..del_req("k")
        };
        assert_invalid(node.delete(delete).await, needles);
    }
    assert!(!node.get(get_req("k")).await.unwrap().found);

    // Every count up to the configured N is valid, capped at one member.
    for n in 1..=3 {
        let put = pb::PutRequest {
            consistency: count(n),
            ..put_req("k", format!("count {n}"))
        };
        let meta = node.put(put).await.unwrap().meta.unwrap();
        assert_eq!(meta.required, 1, "count {n} on a one-node cluster");
    }
    assert_eq!(node.values("k").await, vec!["count 3"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn zero_timeout_is_invalid() {
    let node = start(&[]).await;
    let zero = || {
        Some(pb::Consistency {
            timeout_ms: Some(0),
            ..Default::default()
        })
    };
    let put = pb::PutRequest {
        consistency: zero(),
        ..put_req("k", "v")
    };
    assert_invalid(node.put(put).await, &["timeout"]);
    let get = pb::GetRequest {
        consistency: zero(),
        ..get_req("k")
    };
    assert_invalid(node.get(get).await, &["timeout"]);
    let delete = pb::DeleteRequest {
        consistency: zero(),
        ..del_req("k")
    };
    assert_invalid(node.delete(delete).await, &["timeout"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);

    // The largest timeout is valid.
    let longest = Some(pb::Consistency {
        timeout_ms: Some(u32::MAX),
        ..Default::default()
    });
    let put = pb::PutRequest {
        consistency: longest,
        ..put_req("k", "patient")
    };
    node.put(put).await.unwrap();
    assert_eq!(node.values("k").await, vec!["patient"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn zero_ttl_is_invalid() {
    let node = start(&[]).await;
    let put = pb::PutRequest {
        ttl_ms: Some(0),
        ..put_req("k", "v")
    };
    assert_invalid(node.put(put).await, &["ttl"]);
    assert!(!node.get(get_req("k")).await.unwrap().found);

    // The largest TTL is valid: the value is readable.
    let put = pb::PutRequest {
        ttl_ms: Some(u64::MAX),
        ..put_req("k", "for ages")
    };
    node.put(put).await.unwrap();
    assert_eq!(node.values("k").await, vec!["for ages"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn unknown_resolve_is_invalid() {
    let node = start(&[]).await;
    node.put(put_req("k", "v")).await.unwrap();
    let get = pb::GetRequest {
        resolve: 7,
        ..get_req("k")
    };
    assert_invalid(node.get(get).await, &["resolve", "7"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn message_far_above_the_size_limit_is_refused_and_the_node_keeps_serving() {
    let node = start(&[]).await;
    let huge = vec![b'x'; 80 << 20];
    let result = tokio::time::timeout(Duration::from_secs(120), node.put(put_req("huge", huge)))
        .await
        .expect("an 80 MiB put got no answer at all");
    let status = result.expect_err("an 80 MiB message must be refused");
    assert_ne!(status.code(), Code::Ok);
    assert!(!node.local_get(b"huge").await.unwrap().found);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn forged_contexts_do_no_harm_and_impossible_counters_are_refused() {
    let node = start(&[]).await;
    let me = u64::from_str_radix(&node.node_status().await.node_id, 16).unwrap();
    // The largest context a client may send, of nodes that never wrote.
    let widest = context_bytes(&(1..=1024).map(|n| (n, 1)).collect::<Vec<_>>());
    node.put(put_with_context("wide", "v", &widest))
        .await
        .unwrap();
    assert_eq!(node.values("wide").await, vec!["v"]);
    // An empty vector is a valid context that covers nothing.
    node.put(put_with_context("wide", "w", &context_bytes(&[])))
        .await
        .unwrap();
    assert_eq!(node.values("wide").await, vec!["v", "w"]);

    // A context claiming this node's counter is already at u64::MAX: no
    // read returned it (counters are clock readings), and writing past it
    // would saturate onto a dot already issued. Refused, with a reason.
    let forged = context_bytes(&[(me, u64::MAX)]);
    node.put(put_req("forged", "a")).await.unwrap();
    for attempt in ["b", "c"] {
        let refused = node
            .put(put_with_context("forged", attempt, &forged))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("clock.max_offset_ms"),
            "{refused:?}"
        );
    }
    let delete = pb::DeleteRequest {
        context: forged.into(),
        ..del_req("forged")
    };
    let refused = node.delete(delete).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(node.values("forged").await, vec!["a"]);
    node.local_get(b"forged").await.unwrap();
    node.assert_still_serving().await;
}
