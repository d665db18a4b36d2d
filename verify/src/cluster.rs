//! A cluster for one run: node processes in their own namespaces on the
//! run's private network, members and spares, and the waits that say when
//! it is whole again and when its replicas agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ringkv_client::Client;

use crate::net::Network;
use crate::node::Node;

/// How a run's cluster is made.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Members at the start (they bootstrap together).
    pub members: usize,
    /// Slots kept free for nodes that join during the run.
    pub spares: usize,
    /// Size of each node's filesystem.
    pub disk_mb: u64,
    /// Environment for every node beyond [`BASE_ENV`] (later wins).
    pub env: Vec<(String, String)>,
}

/// Settings of every node of a run: fast gossip, handoff and
/// anti-entropy so a run of a minute sees many rounds of each; the fault
/// switch on (clock offsets, the storage fault point); tombstones purged
/// after a grace short enough to happen during a run, and hints that
/// live a little less than that grace, as configuration demands.
pub const BASE_ENV: &[(&str, &str)] = &[
    ("RINGKV__GOSSIP__INTERVAL_MS", "200"),
    ("RINGKV__DEBUG__FAULT_INJECTION", "true"),
    ("RINGKV__HANDOFF__INTERVAL_MS", "200"),
    ("RINGKV__HANDOFF__MAX_AGE_MS", "15000"),
    ("RINGKV__REPAIR__INTERVAL_MS", "1000"),
    ("RINGKV__REPAIR__TOMBSTONE_GRACE_MS", "20000"),
];

/// How long the cluster may take to be whole after a heal.
const WHOLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Fields drop in order: the processes (and their filesystems) first,
/// then the network they ran in, then their files.
pub struct Cluster {
    /// Every slot, running or not.
    pub nodes: Vec<Node>,
    /// Slots that are members of the layout (running or not).
    pub members: BTreeSet<usize>,
    pub net: Network,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Makes the network, starts the first `spec.members` slots as one
    /// cluster and waits until it is whole.
    pub async fn start(spec: &ClusterSpec, keep_in: &Path) -> Result<Cluster> {
        let slots = spec.members + spec.spares;
        let net = Network::create(slots)?;
        std::fs::create_dir_all(keep_in)?;
        let dir = tempfile::Builder::new()
            .prefix("ringkv-run-")
            .tempdir_in(keep_in)?;
        let seeds: Vec<String> = (0..spec.members)
            .map(|i| format!("{}:{}", net.ip(i), crate::node::PEER_PORT))
            .collect();
        let mut env: Vec<(String, String)> = BASE_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(spec.env.iter().cloned());
        let mut nodes = Vec::with_capacity(slots);
        for slot in 0..slots {
            let mut args = vec!["--seeds".to_string(), seeds.join(",")];
            if slot < spec.members {
                args.push("--bootstrap-expect".into());
                args.push(spec.members.to_string());
            }
            nodes.push(Node::prepare(
                slot,
                &net.ip(slot),
                net.namespace(slot),
                dir.path(),
                spec.disk_mb,
                args,
                env.clone(),
            )?);
        }
        let mut cluster = Cluster {
            net,
            nodes,
            members: (0..spec.members).collect(),
            _dir: dir,
        };
        for slot in 0..spec.members {
            cluster.nodes[slot].spawn()?;
        }
        for slot in 0..spec.members {
            cluster.nodes[slot].wait_ready().await?;
        }
        cluster.wait_whole().await?;
        Ok(cluster)
    }

    /// Where the run's files are (node logs, filesystems' mount points).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Running members.
    pub fn running(&self) -> Vec<usize> {
        self.members
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// A client over every member's client port, with routing.
    pub fn client(&self) -> Client {
        let endpoints: Vec<&str> = self
            .members
            .iter()
            .map(|&i| self.nodes[i].grpc.as_str())
            .collect();
        Client::new(&endpoints).expect("valid endpoints")
    }

    /// The slot of node id `id`.
    pub fn slot_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Waits until every running member holds the same layout, with no
    /// transfer in progress, sees every running member alive, and the
    /// layout's members are exactly [`Cluster::members`].
    pub async fn wait_whole(&self) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let why = match self.not_whole().await {
                Ok(None) => return Ok(started.elapsed()),
                Ok(Some(why)) => why,
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() >= WHOLE_TIMEOUT {
                bail!("the cluster was not whole within {WHOLE_TIMEOUT:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Why the cluster is not whole, or `None` when it is.
    async fn not_whole(&self) -> Result<Option<String>> {
        let running = self.running();
        if running.is_empty() {
            return Ok(Some("no member runs".into()));
        }
        let mut version = None;
        for &i in &running {
            let layout = self.nodes[i].client().layout().await?;
            if layout.version == 0 {
                return Ok(Some(format!("node {i} has no layout")));
            }
            if layout.previous_version != 0 {
                return Ok(Some(format!(
                    "node {i} holds layout v{} still in transition from v{}",
                    layout.version, layout.previous_version
                )));
            }
            if let Some(v) = version.filter(|v| *v != layout.version) {
                return Ok(Some(format!(
                    "node {i} holds layout v{}, another node v{v}",
                    layout.version
                )));
            }
            version = Some(layout.version);
            let in_layout: BTreeSet<usize> = layout
                .assignments
                .iter()
                .flat_map(|a| a.replicas.iter())
                .filter_map(|id| self.slot_of(id))
                .collect();
            if in_layout != self.members {
                return Ok(Some(format!(
                    "node {i}'s layout v{} places nodes {in_layout:?}, the members are {:?}",
                    layout.version, self.members
                )));
            }
            for &j in &running {
                let alive = layout
                    .members
                    .iter()
                    .any(|m| m.node_id == self.nodes[j].id && m.liveness == "alive");
                if !alive {
                    return Ok(Some(format!("node {i} does not see node {j} alive")));
                }
            }
        }
        Ok(None)
    }

    /// Hints waiting on all running members.
    pub async fn hints_pending(&self) -> Result<u64> {
        let mut pending = 0;
        for i in self.running() {
            let queues = self.nodes[i].client().hints(0).await?;
            pending += queues.iter().map(|q| q.keys).sum::<u64>();
        }
        Ok(pending)
    }

    /// Partitions whose replicas (by the layout) do not all report the
    /// same Merkle root.
    pub async fn partitions_differing(&self) -> Result<usize> {
        let layout = self.client().layout().await?;
        let mut roots: BTreeMap<usize, BTreeMap<u32, u64>> = BTreeMap::new();
        for i in self.running() {
            let reported = self.nodes[i]
                .client()
                .merkle_roots(0)
                .await
                .with_context(|| format!("Admin.MerkleRoots on node {i}"))?;
            roots.insert(i, reported.iter().map(|r| (r.partition, r.root)).collect());
        }
        let mut differing = 0;
        for (p, assignment) in layout.assignments.iter().enumerate() {
            let p = p as u32;
            let seen: Vec<Option<u64>> = assignment
                .replicas
                .iter()
                .map(|id| {
                    self.slot_of(id)
                        .and_then(|i| roots.get(&i))
                        .and_then(|r| r.get(&p).copied())
                })
                .collect();
            if seen.iter().any(Option::is_none) || seen.windows(2).any(|w| w[0] != w[1]) {
                differing += 1;
            }
        }
        Ok(differing)
    }

    /// Waits until hints have drained and every partition's replicas
    /// agree, up to `bound`; returns how long that took.
    pub async fn wait_converged(&self, bound: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let pending = self.hints_pending().await.unwrap_or(u64::MAX);
            if pending == 0 && self.partitions_differing().await.ok() == Some(0) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > bound {
                let differing = self.partitions_differing().await?;
                bail!(
                    "not converged {bound:?} after the last heal: {pending} hints pending, \
                     {differing} partitions differ between replicas"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
