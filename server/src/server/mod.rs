//! Wiring a node together: storage, replica, coordinator, gRPC services,
//! metrics, and the shutdown sequence.
//!
//! [`Node::start`] opens storage, loads the node's identity, binds the gRPC
//! and metrics listeners and spawns the servers; [`Node::stop`] (or a
//! SIGINT/SIGTERM through [`run`]) shuts down in order: report NOT_SERVING
//! on the health service, stop accepting, let in-flight requests finish,
//! stop background tasks, hand hints on to their live targets, flush
//! storage.
//!
//! When the storage fails (a WAL write or sync, see
//! [`ringkv_storage::health`]), the node keeps running for reads and
//! diagnosis, but the gRPC health service turns NOT_SERVING for the whole
//! node ("") and for the KV service, so load balancers and orchestrators
//! stop sending it writes.

mod identity;
mod peer_port;
mod reload;
mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_proto::v1::admin_server::AdminServer;
use ringkv_proto::v1::internal_server::InternalServer;
use ringkv_proto::v1::kv_server::KvServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

pub use shutdown::{channel as shutdown_channel, Shutdown, ShutdownTrigger};

use crate::api::admin::AdminParts;
use crate::api::{
    AdminService, AuthLayer, ClientAuth, FrameServer, Gate, GateLayer, InternalService, KvService,
    PeerAuth,
};
use crate::tls::{self, Port, Tls};
use crate::transport::{Transport, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use reload::RootToken;
use ringkv_core::error::{Error, Result};
use ringkv_core::version::NodeId;
use ringkv_node::assemble::{NodeParts, Wiring};
use ringkv_node::config::{Config, EngineKind};
use ringkv_node::metrics::{Metrics, RegisteredCounter};
use ringkv_node::replica::Replica;
use ringkv_node::worker::Workers;
use ringkv_peer::{AddressBook, ClusterIdentity, Faults};
use ringkv_storage::{Engine, MemoryEngine, RocksEngine};

/// Subdirectory of `node.data_dir` holding the RocksDB files.
const DB_DIR: &str = "db";

/// How long shutdown waits for in-flight requests and open connections
/// before closing them.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node.
pub struct Node {
    pub node_id: NodeId,
    /// Bound client port (differs from the configured one when it asked for port 0).
    pub grpc_addr: SocketAddr,
    /// Bound peer port.
    pub peer_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    trigger: ShutdownTrigger,
    close: ShutdownTrigger,
    gate: Gate,
    /// `node.stop_drain_ms`.
    stop_drain_ms: u64,
    grpc: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    metrics_task: Option<JoinHandle<()>>,
    workers: Arc<Workers>,
    replica: Arc<Replica>,
    health: tonic_health::server::HealthReporter,
    hints: ringkv_node::handoff::deliver::Delivery,
}

impl Node {
    pub async fn start(config: Config) -> Result<Node> {
        let config = Arc::new(config);
        // The ports are bound before storage opens: a caller that connects
        // while the node starts waits in the accept queue and is served once
        // it is up, rather than meeting a closed port (behind a container's
        // port proxy, a connection that breaks after the request was sent).
        let listener = TcpListener::bind(config.node.listen)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.node.listen)))?;
        let grpc_addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let peer_listener = TcpListener::bind(config.node.peer_listen)
            .await
            .map_err(|e| {
                Error::Config(format!(
                    "cannot listen on {} (node.peer_listen): {e}",
                    config.node.peer_listen
                ))
            })?;
        let peer_addr = peer_listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let engine = open_engine(&config)?;
        let node_id = match config.storage.engine {
            EngineKind::Rocksdb => identity::load_or_create_node_id(&config.node.data_dir)?,
            // Memory loses everything at exit, so each start is a new node.
            EngineKind::Memory => NodeId::random(),
        };
        let generation = identity::bump_generation(engine.as_ref())?;
        let metrics = Metrics::new();
        let identity = Arc::new(ClusterIdentity::new(metrics.foreign_cluster_refusals()));
        let addresses = Arc::new(AddressBook::default());
        let faults = Arc::new(Faults::default());
        let tls = Tls::load(&config.tls, &config.node.name)?;
        if let Some(tls) = &tls {
            metrics.register(RegisteredCounter {
                name: "ringkv_tls_handshake_failures_total",
                help: "TLS handshakes refused on the client and peer ports",
                value: tls.handshake_failures(),
            });
        }
        warn_if_exposed(&config);
        let transport = Arc::new(Transport::new(
            node_id,
            addresses.clone(),
            identity.clone(),
            faults.clone(),
            config.limits.max_message_bytes(),
            tls.clone(),
        ));
        let parts = NodeParts::assemble(
            config.clone(),
            engine.clone(),
            node_id,
            generation,
            metrics.clone(),
            Wiring {
                network: transport.clone(),
                addresses,
                identity: identity.clone(),
                faults,
            },
        )?;
        let NodeParts {
            replica,
            cluster,
            hints,
            repair,
            rebalance,
            tokens,
            coordinator,
            inbound,
            workers,
            ..
        } = &parts;
        let root_token = RootToken::new(config.auth.root_token_file.clone(), tokens.clone());
        root_token.load()?;
        let gate = Gate::new(config.limits.max_concurrent_requests, metrics.clone());
        let (trigger, _) = shutdown::channel();
        // Closes the ports: the last step of a stop (see `wait`).
        let (close, _) = shutdown::channel();

        let (metrics_addr, metrics_task) = if config.metrics.enabled {
            let l = TcpListener::bind(config.metrics.listen)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot listen on {} for metrics: {e}",
                        config.metrics.listen
                    ))
                })?;
            let addr = l.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
            let task = tokio::spawn(crate::metrics_http::serve(
                l,
                metrics.clone(),
                engine.clone(),
                trigger.subscribe(),
            ));
            (Some(addr), Some(task))
        } else {
            (None, None)
        };

        let max_message = config.limits.max_message_bytes();
        let kv = KvServer::new(KvService::new(coordinator.clone(), transport.clone()))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let info = crate::api::admin::NodeInfo {
            config: config.clone(),
            generation,
            started: Instant::now(),
        };
        let admin = AdminServer::new(AdminService::new(
            AdminParts {
                replica: replica.clone(),
                cluster: cluster.clone(),
                hints: hints.clone(),
                repair: repair.clone(),
                rebalance: rebalance.clone(),
                workers: workers.clone(),
                transport: transport.clone(),
                tokens: tokens.clone(),
            },
            info,
            metrics.clone(),
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
        let internal_service = InternalService::new(
            inbound.clone(),
            identity,
            gate.clone(),
            &config.limits,
            close.subscribe(),
        );
        let peer_auth = PeerAuth::new(cluster.clone(), tls.as_ref().is_some_and(|t| t.peer_port()));
        // Replica operations between nodes come on the replica stream
        // (api::frames), beside gRPC on the peer port.
        let frames = FrameServer::new(
            internal_service.clone(),
            peer_auth.clone(),
            close.subscribe(),
            max_message,
        );
        let internal = InternalServer::new(internal_service)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        health_reporter
            .set_not_serving::<KvServer<KvService>>()
            .await;
        tokio::spawn(report_ready(
            cluster.clone(),
            engine.health().subscribe(),
            health_reporter.clone(),
            trigger.subscribe(),
        ));
        tokio::spawn(report_storage_failure(
            engine.health().subscribe(),
            health_reporter.clone(),
            trigger.subscribe(),
        ));
        // Reflection in both versions: grpc.reflection.v1 for current
        // tools, v1alpha for those that know only it (Python's
        // grpcio-reflection, evans, older grpcurl). It lists what the client
        // port serves, not Internal, which it refuses.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("ringkv.v1.KV")
                .with_service_name("ringkv.v1.Admin")
                .with_service_name("grpc.health.v1.Health")
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| Error::Internal(format!("reflection service: {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| Error::Internal(format!("reflection service: {e}")))?;

        // The client port serves clients and operators; the peer port
        // serves the other nodes: the Internal service, and the KV and
        // Admin requests they forward. Internal is never on the client port.
        // Both listeners admit and meter calls in one layer (api::layer);
        // inside it, each checks who calls (api::auth). Both ping their
        // connections, so one whose caller vanished is closed.
        let client_router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(GateLayer::new(gate.clone()))
            .layer(AuthLayer::new(ClientAuth::new(tokens.clone())))
            .add_service(kv.clone())
            .add_service(admin.clone())
            .add_service(health.clone())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let peer_router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(GateLayer::new(gate.clone()))
            .layer(AuthLayer::new(peer_auth))
            .add_service(internal)
            .add_service(kv)
            .add_service(admin)
            .add_service(health);
        // A macro, not a closure: the two routers have different types.
        macro_rules! serve {
            ($router:expr, $listener:expr, $port:expr, $frames:expr, $plain:expr) => {{
                let mut stop = close.subscribe();
                let until = async move { stop.recv().await };
                let serving: Serving = match tls.as_ref().filter(|t| t.serves($port)) {
                    Some(tls) => Box::pin($router.serve_with_incoming_shutdown(
                        tls::incoming($listener, tls.clone(), $port, $frames, close.subscribe()),
                        until,
                    )),
                    None => {
                        Box::pin($router.serve_with_incoming_shutdown(($plain)($listener), until))
                    }
                };
                serving
            }};
        }
        let client_port = serve!(
            client_router,
            listener,
            Port::Client,
            None,
            incoming_nodelay
        );
        let peer_port = serve!(
            peer_router,
            peer_listener,
            Port::Peer,
            Some(frames.clone()),
            |listener| peer_port::incoming(listener, frames.clone(), close.subscribe())
        );
        let grpc =
            tokio::spawn(async move { tokio::try_join!(client_port, peer_port).map(|_| ()) });
        tokio::spawn(reload::watch(
            tls.clone(),
            root_token,
            Duration::from_millis(config.tls.reload_check_ms),
            trigger.subscribe(),
        ));
        parts.spawn_workers(&trigger);
        info!(
            node_id = %node_id,
            name = %config.node.name,
            grpc = %grpc_addr,
            peer = %peer_addr,
            metrics = ?metrics_addr,
            generation,
            engine = engine.name(),
            sync = ?config.storage.sync,
            "ringkv node serving"
        );
        Ok(Node {
            node_id,
            grpc_addr,
            peer_addr,
            metrics_addr,
            trigger,
            close,
            gate,
            stop_drain_ms: config.node.stop_drain_ms,
            grpc,
            metrics_task,
            workers: workers.clone(),
            replica: replica.clone(),
            health: health_reporter,
            hints: parts.delivery(),
        })
    }

    /// A handle that stops the node when triggered (signal handlers, tests).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Runs until the shutdown signal fires, then stops in order:
    ///
    /// 1. the health service reports NOT_SERVING, and data requests are
    ///    refused with UNAVAILABLE (nothing applied: callers go elsewhere);
    /// 2. the requests in flight finish (at most [`SHUTDOWN_DRAIN_TIMEOUT`],
    ///    so a stuck client cannot hold the node up);
    /// 3. the metrics endpoint and the workers stop;
    /// 4. the hints go to their live targets (at most
    ///    [`SHUTDOWN_DRAIN_TIMEOUT`]; the rest stay on disk);
    /// 5. storage is flushed;
    /// 6. the ports close, `node.stop_drain_ms` after step 1 at the
    ///    earliest.
    ///
    /// The ports stay open until the end so that callers hear the refusal
    /// rather than find a closed port mid-request.
    pub async fn wait(self) -> Result<()> {
        let Node {
            trigger,
            close,
            gate,
            stop_drain_ms,
            mut grpc,
            metrics_task,
            workers,
            replica,
            health,
            hints,
            ..
        } = self;
        let mut stop = trigger.subscribe();
        let failed = tokio::select! {
            served = &mut grpc => Some(served),
            _ = stop.recv() => None,
        };
        gate.stop();
        health.set_not_serving::<KvServer<KvService>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        info!("stopping: health NOT_SERVING, data requests refused, finishing those in flight");
        let drained = Instant::now() + Duration::from_millis(stop_drain_ms);
        if !gate.wait_idle(SHUTDOWN_DRAIN_TIMEOUT).await {
            warn!("requests still in flight after {SHUTDOWN_DRAIN_TIMEOUT:?}; stopping anyway");
        }
        trigger.trigger();
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        if tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, workers.join())
            .await
            .is_err()
        {
            warn!("background workers still running after {SHUTDOWN_DRAIN_TIMEOUT:?}; stopping anyway");
        }
        let (handed, left) = hints.hand_over(SHUTDOWN_DRAIN_TIMEOUT).await;
        if handed > 0 || left > 0 {
            info!(
                handed,
                left, "hints handed on; those left stay on disk for the next start"
            );
        }
        replica.flush().await?;
        tokio::time::sleep_until(drained.into()).await;
        info!("storage flushed; closing the ports");
        close.trigger();
        let served = match failed {
            Some(served) => served,
            None => match tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, &mut grpc).await {
                Ok(served) => served,
                Err(_) => {
                    warn!("connections still open after {SHUTDOWN_DRAIN_TIMEOUT:?}; closing them");
                    grpc.abort();
                    Ok(Ok(()))
                }
            },
        };
        info!("node stopped");
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Internal(format!("gRPC server failed: {e}"))),
            Err(e) => Err(Error::Internal(format!("gRPC server task failed: {e}"))),
        }
    }

    /// Triggers shutdown and waits for it to complete.
    pub async fn stop(self) -> Result<()> {
        self.trigger.trigger();
        self.wait().await
    }
}

/// Turns the health service SERVING once the node holds a layout: before
/// that (a fresh node waiting for its cluster to form or to be let in) it
/// can answer nothing, and readiness probes should say so. A restarted
/// node has its layout on disk and is ready at once.
async fn report_ready(
    cluster: Arc<ringkv_node::membership::Cluster>,
    storage_failure: tokio::sync::watch::Receiver<Option<String>>,
    reporter: tonic_health::server::HealthReporter,
    mut stop: Shutdown,
) {
    let ready = async {
        while cluster.layout().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = ready => {}
        _ = stop.recv() => return,
    }
    // A storage failure before this moment keeps the node NOT_SERVING.
    if storage_failure.borrow().is_some() {
        return;
    }
    reporter.set_serving::<KvServer<KvService>>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
}

/// Turns the health service NOT_SERVING once the storage fails; the
/// failure itself was logged where it happened. Returns at shutdown.
async fn report_storage_failure(
    mut failure: tokio::sync::watch::Receiver<Option<String>>,
    reporter: tonic_health::server::HealthReporter,
    mut stop: Shutdown,
) {
    let failed = tokio::select! {
        failed = failure.wait_for(Option::is_some) => failed.is_ok(),
        _ = stop.recv() => false,
    };
    if failed {
        reporter.set_not_serving::<KvServer<KvService>>().await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        warn!("health service set to NOT_SERVING: the storage failed");
    }
}

/// A listener's gRPC server, running until shutdown.
type Serving = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), tonic::transport::Error>> + Send>,
>;

/// Warns when a port is reachable beyond this machine without TLS.
fn warn_if_exposed(config: &Config) {
    for warning in exposure_warnings(config) {
        warn!("{warning}");
    }
}

/// What [`warn_if_exposed`] says: one line per port that listens beyond
/// loopback without (mutual) TLS.
fn exposure_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if !config.node.listen.ip().is_loopback() && !config.tls.client_port_tls() {
        out.push(format!(
            "the client port {} listens beyond loopback without TLS: anyone on the network can read the traffic{}; set tls.cert and tls.key (docs/security.md)",
            config.node.listen,
            if config.auth.enabled {
                ", tokens included"
            } else {
                " and, without auth.enabled, read and write every key"
            }
        ));
    }
    if !config.node.peer_listen.ip().is_loopback() && !config.tls.peer_tls() {
        out.push(format!(
            "the peer port {} listens beyond loopback without mutual TLS: anyone who reaches it can replicate into, gossip to or read from this node; set tls.peer_ca, tls.peer_cert and tls.peer_key (docs/security.md)",
            config.node.peer_listen
        ));
    }
    out
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames
/// would otherwise wait for delayed ACKs (tonic's own `tcp_nodelay` setting
/// does not apply to a caller-supplied listener).
fn incoming_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    })
}

fn open_engine(config: &Config) -> Result<Arc<dyn Engine>> {
    match config.storage.engine {
        EngineKind::Memory => Ok(Arc::new(MemoryEngine::new())),
        EngineKind::Rocksdb => {
            let dir = &config.node.data_dir;
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Storage(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
            Ok(Arc::new(RocksEngine::open(
                &dir.join(DB_DIR),
                &config.storage.options(),
            )?))
        }
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    let node = Node::start(config).await?;
    let trigger = node.shutdown_trigger();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received: draining requests");
        trigger.trigger();
    });
    node.wait().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            warn!("cannot install signal handlers; stopping on ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_beyond_loopback_without_tls_is_warned_about() {
        let mut config = Config::default();
        assert!(
            exposure_warnings(&config).is_empty(),
            "a local node is quiet"
        );
        config.node.listen = "0.0.0.0:7379".parse().unwrap();
        config.node.peer_listen = "10.0.0.1:7380".parse().unwrap();
        let warnings = exposure_warnings(&config);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("client port 0.0.0.0:7379"));
        assert!(warnings[1].contains("peer port 10.0.0.1:7380"));
        config.tls.cert = Some("/c".into());
        config.tls.key = Some("/k".into());
        config.tls.peer_ca = Some("/ca".into());
        config.tls.peer_cert = Some("/p".into());
        config.tls.peer_key = Some("/pk".into());
        assert!(exposure_warnings(&config).is_empty());
    }
}
