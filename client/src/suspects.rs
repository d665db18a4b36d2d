//! Nodes the client saw fail, kept at the back of every target list until
//! their health service answers SERVING again, as a driver marks a host
//! down and reconnects to it in the background.
//!
//! A request that failed in a way that says "try elsewhere" (unreachable,
//! UNAVAILABLE, a broken connection, a deadline) makes its node a suspect
//! and starts one background probe of it: `grpc.health.v1.Health/Check`
//! at once, then every [`PROBE_EVERY`] until it answers SERVING. Until
//! then requests try the other nodes first, so a node that is stopping
//! (it refuses with UNAVAILABLE while it drains), restarting (its port may
//! be a container runtime's proxy with nothing behind it) or gone costs
//! at most the one request that found out. A healthy node that refused one
//! request (too few replicas reachable from it) is cleared by the first
//! probe, a round trip later.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::nodes::Node;
use crate::Conn;

/// Time between two probes of a node that is not SERVING.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Marks `node` suspect and, unless it already was, starts probing it
/// with connections from `connect`. The probe ends when the node answers
/// SERVING, or when the client no longer knows the node (it was dropped,
/// or the node left its layout).
pub(crate) fn suspect<C, F>(node: &Arc<Node>, connect: C)
where
    C: Fn() -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Option<Conn>> + Send,
{
    if !node.mark_suspect() {
        return;
    }
    let node: Weak<Node> = Arc::downgrade(node);
    tokio::spawn(async move {
        loop {
            if serving(&connect).await {
                if let Some(node) = node.upgrade() {
                    node.clear_suspect();
                }
                return;
            }
            tokio::time::sleep(PROBE_EVERY).await;
            if node.strong_count() == 0 {
                return;
            }
        }
    });
}

/// Whether the node behind `connect` answers SERVING within
/// [`PROBE_TIMEOUT`].
async fn serving<C, F>(connect: &C) -> bool
where
    C: Fn() -> F,
    F: std::future::Future<Output = Option<Conn>>,
{
    let probe = async {
        let conn = connect().await?;
        let reply = HealthClient::new(conn)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(reply.into_inner().status() == ServingStatus::Serving)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_suspect_stays_one_until_a_probe_clears_it() {
        let node = Arc::new(Node::new("b:1"));
        // Nothing answers this probe: the node stays a suspect.
        suspect(&node, || async { None });
        assert!(node.is_suspect());
        tokio::time::sleep(PROBE_EVERY * 2).await;
        assert!(node.is_suspect(), "cleared without a SERVING answer");
    }

    /// A node that answers NOT_SERVING stays a suspect; once it answers
    /// SERVING the probe clears it.
    #[tokio::test]
    async fn a_probe_clears_a_suspect_once_it_answers_serving() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(addr),
        );
        let address = addr.to_string();
        let client = crate::Client::new(&[address.as_str()]).unwrap();
        let node = client.nodes.get(&address);
        client.suspect(&node);
        tokio::time::sleep(PROBE_EVERY * 3).await;
        assert!(node.is_suspect(), "cleared while NOT_SERVING");
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let deadline = std::time::Instant::now() + PROBE_EVERY * 6;
        while node.is_suspect() {
            assert!(
                std::time::Instant::now() < deadline,
                "still a suspect after it answered SERVING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
    }
}
