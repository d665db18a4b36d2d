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

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::Conn;

/// Time between two probes of a node that is not SERVING.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The suspect nodes, by address.
#[derive(Clone, Default)]
pub(crate) struct Suspects {
    marked: Arc<Mutex<HashSet<String>>>,
}

impl Suspects {
    #[cfg(test)]
    pub(crate) fn contains(&self, address: &str) -> bool {
        self.lock().contains(address)
    }

    /// `targets` with the suspects moved to the back, in their order: they
    /// are still tried when nothing else answers.
    pub(crate) fn order(&self, targets: Vec<String>) -> Vec<String> {
        let marked = self.lock();
        let (mut healthy, suspect): (Vec<String>, Vec<String>) =
            targets.into_iter().partition(|t| !marked.contains(t));
        healthy.extend(suspect);
        healthy
    }

    /// Marks `address` suspect and, unless it already was, starts probing
    /// it with connections from `connect`. The probe ends when the node
    /// answers SERVING, or when the client is dropped.
    pub(crate) fn suspect<C, F>(&self, address: &str, connect: C)
    where
        C: Fn() -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Option<Conn>> + Send,
    {
        if !self.lock().insert(address.to_string()) {
            return;
        }
        let marked = Arc::downgrade(&self.marked);
        let address = address.to_string();
        tokio::spawn(async move {
            loop {
                if serving(&connect).await {
                    if let Some(marked) = marked.upgrade() {
                        marked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&address);
                    }
                    return;
                }
                tokio::time::sleep(PROBE_EVERY).await;
                if Weak::strong_count(&marked) == 0 {
                    return;
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.marked.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    async fn suspects_go_to_the_back_until_a_probe_clears_them() {
        let suspects = Suspects::default();
        let targets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Nothing answers this probe: the node stays a suspect.
        suspects.suspect("b:1", || async { None });
        assert!(suspects.contains("b:1"));
        assert_eq!(
            suspects.order(targets(&["a:1", "b:1", "c:1"])),
            targets(&["a:1", "c:1", "b:1"])
        );
        tokio::time::sleep(PROBE_EVERY * 2).await;
        assert!(suspects.contains("b:1"), "cleared without a SERVING answer");
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
        client.suspect(&address);
        tokio::time::sleep(PROBE_EVERY * 3).await;
        assert!(
            client.suspects.contains(&address),
            "cleared while NOT_SERVING"
        );
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let deadline = std::time::Instant::now() + PROBE_EVERY * 6;
        while client.suspects.contains(&address) {
            assert!(
                std::time::Instant::now() < deadline,
                "still a suspect after it answered SERVING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
    }
}
