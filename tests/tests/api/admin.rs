//! Admin.LocalGet and Admin.NodeStatus.

use super::*;

#[tokio::test]
async fn local_get_shows_stored_versions_and_tombstones() {
    let node = start(&[]).await;
    let id = node.node_status().await.node_id;

    let absent = node.local_get(b"k").await.unwrap();
    assert!(!absent.found);
    assert!(absent.versions.is_empty());

    node.put(put_req("k", "v")).await.unwrap();
    let copy = node.local_get(b"k").await.unwrap();
    assert!(copy.found);
    assert_eq!(
        copy.partition, absent.partition,
        "a key's partition never changes"
    );
    assert!(copy.partition < 256);
    assert_eq!(copy.versions.len(), 1);
    let v = &copy.versions[0];
    assert_eq!(v.node, id);
    assert!(v.counter >= 1);
    assert!(!v.tombstone);
    assert_eq!(v.value.as_ref(), b"v");
    assert!(!copy.context.is_empty());

    node.delete(del_req("k")).await.unwrap();
    let copy = node.local_get(b"k").await.unwrap();
    assert!(copy.found, "the tombstone is stored");
    assert_eq!(copy.versions.len(), 1, "{copy:?}");
    let t = &copy.versions[0];
    assert!(t.tombstone);
    assert!(t.value.is_empty());
    assert_eq!(t.node, id);
    assert!(
        t.counter > v.counter,
        "the tombstone's dot follows the value's"
    );
}

#[tokio::test]
async fn node_status_describes_the_node() {
    let mut node = start(&[]).await;
    let status = node.node_status().await;
    assert_eq!(status.node_id.len(), 16, "{status:?}");
    assert!(
        status.node_id.chars().all(|c| c.is_ascii_hexdigit()),
        "node id {:?} is not hex",
        status.node_id
    );
    assert_eq!(status.storage_engine, "rocksdb");
    assert_eq!(status.partitions, 256);
    assert_eq!(status.replication, 3);
    assert_eq!(status.address, node.server.grpc);
    let port = node.server.grpc.rsplit(':').next().unwrap();
    assert_eq!(status.name, format!("test-{port}"));
    assert!(status.generation >= 1);

    // The id is permanent; the generation counts starts.
    node.server.restart().await.unwrap();
    node.admin = AdminClient::new(connect(&node.server.grpc).await);
    let again = node.node_status().await;
    assert_eq!(again.node_id, status.node_id);
    assert_eq!(again.generation, status.generation + 1);
}
