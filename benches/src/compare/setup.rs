//! Starting ringkv nodes for `compare`, and waiting for a started system
//! (ringkv nodes, the echo server, etcd members) to answer.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::{Client, Level, RequestOptions, Security};
use ringkv_tests::secure::{Secure, Secured};
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

/// Nodes started by `compare`, and how clients reach them.
pub(super) struct Started {
    pub(super) nodes: Vec<Node>,
    /// TLS and the token, when the nodes run secured.
    pub(super) security: Security,
}

impl Started {
    pub(super) fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.grpc.clone()).collect()
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.proc.pid()).collect()
    }

    /// Waits until every node holds a layout in which every member is alive.
    pub(super) async fn wait(&mut self) -> Result<()> {
        let endpoints = self.endpoints();
        wait_ringkv(&mut self.nodes, &endpoints, &self.security).await
    }

    /// A target over `endpoints` (a subset of the nodes) that writes at
    /// QUORUM and reads at `read`.
    pub(super) fn target(
        &self,
        endpoints: &[String],
        routing: bool,
        read: Level,
    ) -> Result<Target> {
        ringkv_target(endpoints, routing, read, &self.security)
    }
}

/// Starts `n` ringkv nodes that form one cluster, with `storage.sync` =
/// `sync`, their data and logs under `dir`; with `secure`, with TLS,
/// mutual TLS and tokens (certificates made under `dir`).
pub(super) fn start_ringkv(
    args: &CompareArgs,
    dir: &Path,
    n: usize,
    sync: &str,
    secure: bool,
) -> Result<Started> {
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
    let port = || Ok::<_, anyhow::Error>(format!("127.0.0.1:{}", free_port()?));
    let addresses: Vec<(String, String, String)> = (0..n)
        .map(|_| Ok((port()?, port()?, port()?)))
        .collect::<Result<_>>()?;
    // Seeds name peer ports.
    let seeds = addresses
        .iter()
        .map(|(_, peer, _)| peer.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let names: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
    let secured = if secure {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs)?;
        Some(Secured::make(&certs, &names, Secure::AUTH)?)
    } else {
        None
    };
    let mut nodes = Vec::with_capacity(n);
    for ((grpc, peer, metrics), name) in addresses.into_iter().zip(&names) {
        let mut node_args: Vec<String> = [
            "--name",
            name,
            "--listen",
            &grpc,
            "--peer-listen",
            &peer,
            "--metrics-listen",
            &metrics,
            "--data-dir",
            &dir.join(name).display().to_string(),
            "--sync",
            sync,
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(secured) = &secured {
            // The node's TLS and auth settings (the harness's environment
            // variables), as a configuration file.
            let config = dir.join(format!("{name}.toml"));
            let mut sections: std::collections::BTreeMap<String, String> = Default::default();
            for (key, value) in secured.env_for(name) {
                let key = key.trim_start_matches("RINGKV__").to_ascii_lowercase();
                let (section, field) = key.split_once("__").context("a sectioned key")?;
                let lines = sections.entry(section.to_string()).or_default();
                lines.push_str(&format!("{field} = {value:?}\n"));
            }
            let toml: String = sections
                .iter()
                .map(|(section, lines)| format!("[{section}]\n{lines}"))
                .collect();
            std::fs::write(&config, toml)?;
            node_args.extend(["--config".to_string(), config.display().to_string()]);
        }
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
            args.worker_threads,
        )?;
        nodes.push(Node { proc, grpc });
    }
    eprintln!(
        "ringkv-bench compare: started {n} ringkv node(s), sync {sync}{}, peers on {}",
        if secure { ", TLS+mTLS+token" } else { "" },
        seeds
    );
    Ok(Started {
        nodes,
        security: secured.map(|s| s.security()).unwrap_or_default(),
    })
}

/// Waits until every node holds a layout in which every member is alive.
async fn wait_ringkv(nodes: &mut [Node], endpoints: &[String], security: &Security) -> Result<()> {
    let mut procs: Vec<&mut Process> = nodes.iter_mut().map(|n| &mut n.proc).collect();
    wait_until(&mut procs, "the ringkv nodes", move || async move {
        for endpoint in endpoints {
            let Ok(client) = Client::new(std::slice::from_ref(endpoint))
                .and_then(|c| c.with_security(security.clone()))
            else {
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

fn ringkv_target(
    endpoints: &[String],
    routing: bool,
    read: Level,
    security: &Security,
) -> Result<Target> {
    Ok(Target::Ringkv {
        client: Client::new(endpoints)?
            .with_security(security.clone())?
            .with_routing(routing),
        read: RequestOptions::level(read),
        write: RequestOptions::level(Level::Quorum),
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
