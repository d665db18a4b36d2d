//! Starting ringkv nodes for `compare`, and waiting for a started system
//! (ringkv nodes, the echo server, etcd members) to answer.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::{Client, Level, RequestOptions};
use ringkv_tests::Process;

use super::procs::{free_port, spawn};
use super::CompareArgs;
use crate::target::Target;

/// How long a started system may take to answer before the run gives up
/// on it (a 3-node cluster forms within a few gossip rounds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between readiness probes.
const READY_POLL: Duration = Duration::from_millis(100);

/// A ringkv node started by `compare`.
pub(super) struct Node {
    pub(super) proc: Process,
    pub(super) grpc: String,
}

/// Starts `n` ringkv nodes that form one cluster, with `storage.sync` =
/// `sync`, their data and logs under `dir`.
pub(super) fn start_ringkv(
    args: &CompareArgs,
    dir: &Path,
    n: usize,
    sync: &str,
) -> Result<Vec<Node>> {
    let server = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding ringkv-bench's own path")?
            .with_file_name("ringkv-server"),
    };
    if !server.is_file() {
        bail!(
            "{} not found: build it with cargo build --release -p ringkv-server, or pass --server-bin",
            server.display()
        );
    }
    let addresses: Vec<(String, String)> = (0..n)
        .map(|_| {
            Ok((
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
            ))
        })
        .collect::<Result<_>>()?;
    let seeds = addresses
        .iter()
        .map(|(grpc, _)| grpc.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::with_capacity(n);
    for (i, (grpc, metrics)) in addresses.into_iter().enumerate() {
        let name = format!("node{}", i + 1);
        let mut node_args: Vec<String> = [
            "--name",
            &name,
            "--listen",
            &grpc,
            "--metrics-listen",
            &metrics,
            "--data-dir",
            &dir.join(&name).display().to_string(),
            "--sync",
            sync,
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if n > 1 {
            node_args.extend([
                "--seeds".to_string(),
                seeds.clone(),
                "--bootstrap-expect".to_string(),
                n.to_string(),
            ]);
        }
        let proc = spawn(
            &format!("ringkv {name}"),
            &server,
            &node_args,
            &dir.join(format!("{name}.log")),
        )?;
        nodes.push(Node { proc, grpc });
    }
    eprintln!(
        "ringkv-bench compare: started {n} ringkv node(s), sync {sync}, on {}",
        seeds
    );
    Ok(nodes)
}

/// Waits until every node holds a layout in which every member is alive.
pub(super) async fn wait_ringkv(nodes: &mut [Node], endpoints: &[String]) -> Result<()> {
    let mut procs: Vec<&mut Process> = nodes.iter_mut().map(|n| &mut n.proc).collect();
    wait_until(&mut procs, "the ringkv nodes", move || async move {
        for endpoint in endpoints {
            let Ok(client) = Client::new(std::slice::from_ref(endpoint)) else {
                return false;
            };
            let Ok(layout) = client.layout().await else {
                return false;
            };
            let alive = layout
                .members
                .iter()
                .filter(|m| m.liveness == "alive")
                .count();
            if layout.version == 0 || alive != endpoints.len() {
                return false;
            }
        }
        true
    })
    .await
}

pub(super) fn ringkv_target(endpoints: &[String], routing: bool) -> Result<Target> {
    let level = RequestOptions::level(Level::Quorum);
    Ok(Target::Ringkv {
        client: Client::new(endpoints)?.with_routing(routing),
        read: level,
        write: level,
    })
}

/// Polls `ready` until it holds, failing early (with the log) when one of
/// `procs` exits, or after [`READY_TIMEOUT`].
pub(super) async fn wait_until<F, Fut>(
    procs: &mut [&mut Process],
    what: &str,
    ready: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for proc in procs.iter_mut() {
            proc.check_running()?;
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.log_tail()).collect();
            bail!(
                "{what} did not become ready within {READY_TIMEOUT:?}; logs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}
