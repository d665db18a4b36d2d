//! Clusters of containers: the compose files in `deploy/compose`, started
//! from the image `deploy/docker/build.sh` makes, each test under its own
//! compose project with its own loopback ports.
//!
//! Faults are real: `docker kill` (SIGKILL), `docker pause` (the frozen
//! cgroup: the node holds its connections and answers nothing), and
//! `docker network disconnect` (the container leaves the cluster's
//! network). Containers are addressed by id; dropping a [`Compose`]
//! removes its containers by id, then its network and volumes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::Client;

use crate::free_port;

/// How long a cluster of containers may take to form.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(90);

/// The image under test: what `deploy/docker/build.sh` tags.
pub fn image() -> String {
    format!("ringkv:{}", env!("CARGO_PKG_VERSION"))
}

/// `docker …`, failing with its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    run(Command::new("docker").args(args), "docker")
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what}: is it installed?"))?;
    if !out.status.success() {
        bail!(
            "{what} {:?} failed ({}): {}",
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn compose_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose")
}

/// A running compose project.
pub struct Compose {
    project: String,
    files: Vec<PathBuf>,
    /// Loopback port each node's client port is published on.
    pub ports: Vec<u16>,
    /// Container id of each node, `ringkv-1` first.
    pub ids: Vec<String>,
}

impl Compose {
    /// Starts `nodes` (3 or 5) nodes from the compose files and waits
    /// until every node holds a layout with every node in it, alive.
    pub async fn up(nodes: usize) -> Result<Compose> {
        if docker(&["image", "inspect", &image()]).is_err() {
            bail!(
                "image {} not found: build it with deploy/docker/build.sh (scripts/test.sh does)",
                image()
            );
        }
        let mut files = vec![compose_dir().join("docker-compose.yml")];
        match nodes {
            3 => {}
            5 => files.push(compose_dir().join("docker-compose.five.yml")),
            _ => bail!("the compose files hold 3 or 5 nodes, not {nodes}"),
        }
        let project = format!("ringkv-test-{}-{nodes}", std::process::id());
        let ports = (0..nodes).map(|_| free_port()).collect();
        let mut compose = Compose {
            project,
            files,
            ports,
            ids: Vec::new(),
        };
        compose.compose(&["up", "-d", "--no-build"])?;
        for i in 1..=nodes {
            let id = compose.compose(&["ps", "-q", &format!("ringkv-{i}")])?;
            if id.is_empty() {
                bail!("no container for ringkv-{i}");
            }
            compose.ids.push(id);
        }
        compose.wait_formed(FORM_TIMEOUT).await?;
        Ok(compose)
    }

    /// `docker-compose` on this project, with its ports.
    pub fn compose(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p").arg(&self.project);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(args)
            .env("RINGKV_VERSION", env!("CARGO_PKG_VERSION"))
            .env("RINGKV_CLUSTER", &self.project);
        for (i, port) in self.ports.iter().enumerate() {
            cmd.env(format!("RINGKV_PORT_{}", i + 1), port.to_string());
        }
        run(&mut cmd, "docker-compose")
    }

    /// The client endpoint of node `i` (0-based), as the host reaches it.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// A client of every node, with partition-aware routing.
    pub fn client(&self) -> Result<Client> {
        let endpoints: Vec<String> = (0..self.ports.len()).map(|i| self.endpoint(i)).collect();
        Ok(Client::new(&endpoints)?)
    }

    /// A client of node `i` only.
    pub fn node(&self, i: usize) -> Result<Client> {
        Ok(Client::new(&[self.endpoint(i)])?.with_routing(false))
    }

    /// The cluster's private network.
    pub fn network(&self) -> Result<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let id = docker(&["network", "ls", "-q", "--filter", &label])?;
        if id.is_empty() || id.contains('\n') {
            bail!(
                "expected one network of project {}, found {id:?}",
                self.project
            );
        }
        Ok(id)
    }

    /// Takes node `i` off the cluster's network: a real partition.
    pub fn disconnect(&self, i: usize) -> Result<()> {
        docker(&["network", "disconnect", &self.network()?, &self.ids[i]]).map(drop)
    }

    /// Puts node `i` back on the network under its service name.
    pub fn reconnect(&self, i: usize) -> Result<()> {
        let alias = format!("ringkv-{}", i + 1);
        docker(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.network()?,
            &self.ids[i],
        ])
        .map(drop)
    }

    pub fn kill(&self, i: usize) -> Result<()> {
        docker(&["kill", &self.ids[i]]).map(drop)
    }

    pub fn start(&self, i: usize) -> Result<()> {
        docker(&["start", &self.ids[i]]).map(drop)
    }

    pub fn pause(&self, i: usize) -> Result<()> {
        docker(&["pause", &self.ids[i]]).map(drop)
    }

    pub fn unpause(&self, i: usize) -> Result<()> {
        docker(&["unpause", &self.ids[i]]).map(drop)
    }

    /// Stops node `i` with SIGTERM (SIGKILL after `grace`) and starts it
    /// again: what a rolling restart does to each node.
    pub fn restart(&self, i: usize, grace: Duration) -> Result<()> {
        let grace = grace.as_secs().to_string();
        docker(&["restart", "-t", &grace, &self.ids[i]]).map(drop)
    }

    /// Docker's view of node `i`'s health check (the image's HEALTHCHECK,
    /// `ringkv-server health`): "starting", "healthy" or "unhealthy".
    pub fn health(&self, i: usize) -> Result<String> {
        docker(&["inspect", "-f", "{{.State.Health.Status}}", &self.ids[i]])
    }

    /// Node `i`'s log, for a failure message.
    pub fn logs(&self, i: usize) -> String {
        docker(&["logs", "--tail", "40", &self.ids[i]])
            .unwrap_or_else(|e| format!("(no logs: {e})"))
    }

    /// Node ids, in node order (asked of each node).
    pub async fn node_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for i in 0..self.ports.len() {
            ids.push(self.node(i)?.node_status(0).await?.node_id);
        }
        Ok(ids)
    }

    /// Waits until every node holds the same layout, with every node in
    /// it and alive in every node's view.
    pub async fn wait_formed(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < timeout {
            match self.formed().await {
                Ok(None) => return Ok(()),
                Ok(Some(why)) => last = why,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "the cluster did not form within {timeout:?}: {last}\nlast log of ringkv-1:\n{}",
            self.logs(0)
        )
    }

    /// `None` when formed, else what is missing.
    async fn formed(&self) -> Result<Option<String>> {
        let ids = self.node_ids().await?;
        let mut version = None;
        for i in 0..ids.len() {
            let layout = self.node(i)?.layout().await?;
            if layout.version == 0 || version.is_some_and(|v| v != layout.version) {
                return Ok(Some(format!("node {i} holds layout v{}", layout.version)));
            }
            version = Some(layout.version);
            for id in &ids {
                let placed = layout.assignments.iter().any(|a| a.replicas.contains(id));
                let alive = layout
                    .members
                    .iter()
                    .any(|m| &m.node_id == id && m.liveness == "alive");
                if !placed || !alive {
                    return Ok(Some(format!(
                        "node {i} sees {id} placed={placed} alive={alive}"
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Hints held by every node, summed.
    pub async fn hints_pending(&self) -> Result<u64> {
        let mut total = 0;
        for i in 0..self.ports.len() {
            total += self
                .node(i)?
                .hints(0)
                .await?
                .iter()
                .map(|q| q.keys)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Who holds hints for whom, and each node's hint-delivery worker's
    /// last error: what a failure message needs.
    pub async fn hints_report(&self) -> String {
        let mut out = String::new();
        for i in 0..self.ports.len() {
            let Ok(node) = self.node(i) else { continue };
            let queues = node.hints(0).await.map(|q| {
                q.iter()
                    .map(|q| format!("{}: {} keys", q.target, q.keys))
                    .collect::<Vec<_>>()
            });
            let worker = node.workers(0).await.ok().and_then(|w| {
                w.into_iter()
                    .find(|w| w.name == "hint-delivery")
                    .map(|w| w.last_error)
            });
            out.push_str(&format!(
                "\nringkv-{}: hints {queues:?}, hint-delivery last error {worker:?}",
                i + 1
            ));
        }
        out
    }

    /// Partitions whose replicas do not all report the same Merkle root.
    pub async fn partitions_differing(&self) -> Result<usize> {
        let ids = self.node_ids().await?;
        let layout = self.node(0)?.layout().await?;
        let mut roots = Vec::new();
        for i in 0..ids.len() {
            let reported = self.node(i)?.merkle_roots(0).await?;
            roots.push(
                reported
                    .iter()
                    .map(|r| (r.partition, r.root))
                    .collect::<std::collections::BTreeMap<u32, u64>>(),
            );
        }
        let mut differing = 0;
        for (p, assignment) in layout.assignments.iter().enumerate() {
            let seen: Vec<Option<u64>> = assignment
                .replicas
                .iter()
                .map(|id| {
                    let i = ids.iter().position(|x| x == id)?;
                    roots[i].get(&(p as u32)).copied()
                })
                .collect();
            if seen.iter().any(Option::is_none) || seen.windows(2).any(|w| w[0] != w[1]) {
                differing += 1;
            }
        }
        Ok(differing)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        // Unpause first: a paused container cannot be removed.
        for id in &self.ids {
            let _ = docker(&["unpause", id]);
        }
        if !self.ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(self.ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
        // What is left of this test's own project: its network and volumes.
        let _ = self.compose(&["down", "-v", "--timeout", "1"]);
    }
}
