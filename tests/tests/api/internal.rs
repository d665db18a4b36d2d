//! The node-to-node service: peer port only, bad version sets, per-item Batch answers.

use super::*;

/// The node-to-node service is served on the peer port only: the client
/// port refuses it with PERMISSION_DENIED (DESIGN.md's code for a client
/// calling Internal), while KV and Admin answer on both.
#[tokio::test]
async fn the_internal_service_is_never_served_on_the_client_port() {
    let node = start(&[]).await;
    let read = || pb::LocalReadRequest {
        key: "k".as_bytes().to_vec().into(),
    };
    let mut on_client_port = InternalClient::new(connect(&node.server.grpc).await);
    let refused = on_client_port.local_read(read()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("peer port"), "{refused:?}");
    let mut on_peer_port = InternalClient::new(connect(&node.server.peer).await);
    assert!(on_peer_port.local_read(read()).await.is_ok());
    let status = AdminClient::new(connect(&node.server.grpc).await)
        .node_status(pb::NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.address, node.server.grpc);
    assert_eq!(status.peer_address, node.server.peer);
}

/// Puts `value` under `key` and returns the node's stored version set of
/// it, as `Internal.LocalRead` gives it.
async fn stored_version_set(node: &Node, key: &str, value: &str) -> Vec<u8> {
    node.put(put_req(key, value)).await.unwrap();
    let read = node
        .internal
        .clone()
        .local_read(pb::LocalReadRequest {
            key: key.as_bytes().to_vec().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.found, "{key} was just written");
    read.version_set.to_vec()
}

#[tokio::test]
async fn replicate_with_a_bad_version_set_is_invalid_and_stores_nothing() {
    let node = start(&[]).await;
    let valid = stored_version_set(&node, "source", "v").await;

    let mut wrong_format = valid.clone();
    wrong_format[0] = 0x7f;
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "garbage",
            b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage".to_vec(),
        ),
        ("wrong format byte", wrong_format),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("trailing byte", trailing),
    ];
    for (i, (what, version_set)) in cases.into_iter().enumerate() {
        let key = format!("target-{i}");
        let req = pb::ReplicateRequest {
            key: key.clone().into_bytes().into(),
            version_set: version_set.into(),
            from: "test".to_string(),
            hint_for: String::new(),
        };
        let result = node.internal.clone().replicate(req).await;
        assert!(
            result.is_err(),
            "{what}: replicate accepted a bad version set"
        );
        assert_invalid(result, &["version set"]);
        let copy = node.local_get(key.as_bytes()).await.unwrap();
        assert!(!copy.found, "{what}: something was stored: {copy:?}");
        assert!(!node.get(get_req(&key)).await.unwrap().found, "{what}");
    }

    // The valid bytes, by contrast, are merged and stored.
    let req = pb::ReplicateRequest {
        key: b"target-valid".to_vec().into(),
        version_set: valid.into(),
        from: "test".to_string(),
        hint_for: String::new(),
    };
    node.internal.clone().replicate(req).await.unwrap();
    assert_eq!(node.values("target-valid").await, vec!["v"]);
    node.assert_still_serving().await;
}

#[tokio::test]
async fn batch_answers_each_item_on_its_own() {
    let node = start(&[]).await;
    let valid = stored_version_set(&node, "source", "v").await;
    let replicate = |key: &str, version_set: Vec<u8>| pb::BatchItem {
        op: Some(pb::batch_item::Op::Replicate(pb::ReplicateRequest {
            key: key.as_bytes().to_vec().into(),
            version_set: version_set.into(),
            from: "test".to_string(),
            hint_for: String::new(),
        })),
    };
    let read = |key: &str| pb::BatchItem {
        op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
            key: key.as_bytes().to_vec().into(),
        })),
    };
    let items = vec![
        replicate("batch-ok", valid.clone()),
        replicate("batch-bad", b"garbage".to_vec()),
        read("source"),
        read(""),
        pb::BatchItem { op: None },
        read("batch-missing"),
    ];
    let results = node
        .internal
        .clone()
        .batch(pb::BatchRequest { items, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 6, "one result per item: {results:?}");
    let code = |i: usize| Code::from_i32(results[i].code);
    assert_eq!(code(0), Code::Ok, "{:?}", results[0]);
    assert_eq!(code(1), Code::InvalidArgument, "{:?}", results[1]);
    assert!(
        results[1].message.contains("version set"),
        "{:?}",
        results[1]
    );
    assert_eq!(code(2), Code::Ok, "{:?}", results[2]);
    assert!(results[2].found);
    assert_eq!(
        results[2].version_set, valid,
        "the read returns the stored bytes"
    );
    assert_eq!(code(3), Code::InvalidArgument, "{:?}", results[3]);
    assert!(results[3].message.contains("key"), "{:?}", results[3]);
    assert_eq!(code(4), Code::InvalidArgument, "{:?}", results[4]);
    assert_eq!(code(5), Code::Ok, "{:?}", results[5]);
    assert!(!results[5].found);

    // The good item was applied, the bad one stored nothing.
    assert_eq!(node.values("batch-ok").await, vec!["v"]);
    assert!(!node.local_get(b"batch-bad").await.unwrap().found);
    node.assert_still_serving().await;
}
