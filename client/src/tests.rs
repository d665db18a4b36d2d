//! Failover against a node that answers and one that cannot be reached.

use ringkv_proto::v1 as pb;
use ringkv_proto::v1::kv_server::{Kv, KvServer};
use tonic::{Request, Response, Status};

use super::*;

/// A node that answers every write UNAVAILABLE, as a coordinator does
/// when too few replicas are reachable from it.
struct ShortOfReplicas;

const SHORT: &str = "1 of 3 replicas reachable, 3 needed; unreachable: 00000000000000aa";

#[tonic::async_trait]
impl Kv for ShortOfReplicas {
    async fn get(&self, _: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Err(Status::unavailable(SHORT))
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Err(Status::unavailable(SHORT))
    }
    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unavailable(SHORT))
    }
}

/// When every node fails, the error is the answering node's UNAVAILABLE,
/// whichever order the two were tried in (a dead node, once suspect, is
/// tried last: its "cannot connect" used to be the error reported).
#[tokio::test]
async fn a_nodes_unavailable_outweighs_failing_to_reach_another() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let answering = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(ShortOfReplicas))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let client = Client::new(&[answering.as_str(), dead.as_str()])
        .unwrap()
        .with_routing(false);
    // Endpoints are taken in turn: four writes try both orders.
    for i in 0..4 {
        let failed = client
            .put(format!("k{i}"), "v", PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&failed, Error::Unavailable(m) if m.contains("unreachable: 00000000000000aa")),
            "write {i}: {failed:?}"
        );
    }
}
