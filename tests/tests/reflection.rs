//! gRPC server reflection on a real node: a client that has no .proto
//! file learns the API from the node itself and uses it.
//!
//! The client port serves reflection in two versions,
//! `grpc.reflection.v1` for current tools and `grpc.reflection.v1alpha`
//! for those that know only it (Python's grpcio-reflection, evans, older
//! grpcurl). Both must list the KV and health services, and both must be
//! enough for a generic client to Put and Get: the Python example
//! `deploy/examples/python/reflect_put_get.py` builds its message classes
//! from the descriptors reflection returns and calls the methods by path,
//! with no generated stubs.

use std::process::Output;

use anyhow::{ensure, Context as _, Result};
use ringkv_tests::{python, TestCluster};
use tonic::transport::Channel;

/// Reflection versions the client port serves, as the example names them.
const VERSIONS: [&str; 2] = ["v1", "v1alpha"];

/// Services every reflection version must list.
const SERVICES: [&str; 2] = ["ringkv.v1.KV", "grpc.health.v1.Health"];

async fn channel(address: &str) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?)
}

/// The service names one reflection version lists. A macro because v1
/// and v1alpha are distinct generated types of the same shape.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .context(concat!("reflection ", stringify!($version)))?
            .into_inner();
        match answers.message().await?.map(|a| a.message_response) {
            Some(Some(MessageResponse::ListServicesResponse(list))) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => anyhow::bail!("{}: unexpected answer {other:?}", stringify!($version)),
        }
    }};
}

/// Both reflection versions list the KV and health services, and not the
/// Internal service the client port refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reflection_versions_list_the_kv_and_health_services() -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let channel = channel(&cluster.nodes[0].grpc).await?;
    let listed = [
        ("v1", list_services!(v1, channel.clone())),
        ("v1alpha", list_services!(v1alpha, channel.clone())),
    ];
    for (version, services) in listed {
        for service in SERVICES {
            ensure!(
                services.iter().any(|s| s == service),
                "reflection {version} does not list {service}: {services:?}"
            );
        }
        // Internal is served to nodes on the peer port only: the client
        // port does not advertise it.
        ensure!(
            !services.iter().any(|s| s == "ringkv.v1.Internal"),
            "reflection {version} on the client port lists ringkv.v1.Internal: {services:?}"
        );
    }
    Ok(())
}

/// A Python grpcio client with no .proto and no generated stubs discovers
/// the KV service through each reflection version and puts and gets a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_discovers_the_api_by_reflection_and_puts_and_gets() -> Result<()> {
    let python = python()?;
    let cluster = TestCluster::start(1, &[]).await?;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/python/reflect_put_get.py");
    for version in VERSIONS {
        let out: Output = std::process::Command::new(&python)
            .arg(&example)
            .args(["--endpoint", &cluster.nodes[0].grpc])
            .args(["--reflection", version])
            .output()
            .context("running the Python example")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "reflection {version}: the example failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        for line in [
            "method /ringkv.v1.KV/Put(ringkv.v1.PutRequest) -> ringkv.v1.PutResponse",
            "method /ringkv.v1.KV/Get(ringkv.v1.GetRequest) -> ringkv.v1.GetResponse",
            &format!("round trip ok: {version} discovered ringkv.v1.KV"),
        ] {
            ensure!(
                stdout.contains(line),
                "reflection {version}: no {line:?} in the output\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
    }
    Ok(())
}
