//! `ringkv-server health`: asks a node's gRPC health service how it is,
//! for container health checks and Kubernetes exec probes (an image with
//! no shell has no other way to ask).
//!
//! The probe reads the node's own configuration (file and `RINGKV__…`
//! environment) and calls the peer port on loopback: under mutual TLS it
//! dials with the node's own peer certificate, so it needs no credential
//! of its own whatever the node's security settings, and the peer port
//! answers health checks from any holder of a cluster certificate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::tls::Tls;
use crate::transport::dial::TlsDial;
use crate::transport::FROM_HEADER;
use ringkv_core::error::{Error, Result};
use ringkv_core::version::NodeId;
use ringkv_node::config::Config;

/// What the probe asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Liveness: the process answers at all, even NOT_SERVING.
    Live,
    /// Readiness: the node serves requests (SERVING).
    Ready,
}

/// The address the probe dials: `address`, or the peer port with an
/// unspecified listen address (0.0.0.0, ::) replaced by loopback.
pub fn target(config: &Config, address: Option<&str>) -> String {
    if let Some(address) = address {
        return address.to_string();
    }
    let listen = config.node.peer_listen;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// Asks the node at `address` (see [`target`]) for its overall status
/// within `timeout`. `Ok(status)` when it answered; an error when it
/// could not be reached or the TLS files could not be read.
pub async fn check(config: &Config, address: &str, timeout: Duration) -> Result<ServingStatus> {
    let tls = Tls::load(&config.tls, &config.node.name)?.filter(|t| t.peer_port());
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::InvalidArgument(format!("bad address {address:?}: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = match tls {
        Some(tls) => {
            endpoint
                .connect_with_connector(TlsDial::new(tls, timeout))
                .await
        }
        None => endpoint.connect().await,
    }
    .map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach {address}: {}",
            crate::transport::root_cause(&e)
        ))
    })?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    // Under mutual TLS every peer call names a sender; an id no member
    // holds is a stranger, whom the peer port still answers health checks.
    let from = NodeId::random().to_string();
    request.metadata_mut().insert(
        FROM_HEADER,
        from.parse()
            .map_err(|_| Error::Internal("a node id that is not ASCII".into()))?,
    );
    let reply = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|s| Error::Unreachable(format!("{address} answered {s}")))?;
    Ok(reply.into_inner().status())
}

/// The exit status of `ringkv-server health`: 0 when the probe holds, 1
/// when the node answered otherwise, 2 when it could not be asked.
pub fn exit_code(probe: Probe, answer: &Result<ServingStatus>) -> u8 {
    match (probe, answer) {
        (_, Err(_)) => 2,
        (Probe::Live, Ok(_)) => 0,
        (Probe::Ready, Ok(ServingStatus::Serving)) => 0,
        (Probe::Ready, Ok(_)) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_dials_loopback_for_an_unspecified_listen_address() {
        let mut config = Config::default();
        config.node.peer_listen = "0.0.0.0:7380".parse().unwrap();
        assert_eq!(target(&config, None), "127.0.0.1:7380");
        config.node.peer_listen = "[::]:7381".parse().unwrap();
        assert_eq!(target(&config, None), "[::1]:7381");
        config.node.peer_listen = "10.1.2.3:7380".parse().unwrap();
        assert_eq!(target(&config, None), "10.1.2.3:7380");
        assert_eq!(target(&config, Some("db:9")), "db:9");
    }

    #[test]
    fn readiness_needs_serving_and_liveness_any_answer() {
        let down: Result<ServingStatus> = Err(Error::Unreachable("refused".into()));
        assert_eq!(exit_code(Probe::Live, &down), 2);
        assert_eq!(exit_code(Probe::Ready, &down), 2);
        assert_eq!(exit_code(Probe::Live, &Ok(ServingStatus::NotServing)), 0);
        assert_eq!(exit_code(Probe::Ready, &Ok(ServingStatus::NotServing)), 1);
        assert_eq!(exit_code(Probe::Ready, &Ok(ServingStatus::Serving)), 0);
    }
}
