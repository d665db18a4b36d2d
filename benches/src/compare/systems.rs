//! The systems `compare` measures, one method of the [`Runner`] each: the
//! echo servers, RocksDB in process, one ringkv node, three ringkv nodes,
//! six ringkv nodes and secured ringkv, each started, measured and stopped (etcd is in
//! [`super::etcd`]).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use ringkv_client::Level;
use ringkv_tests::Process;

use super::procs::{free_port, spawn};
use super::row::{
    Op, Spec, CLUSTER, CLUSTER_ALWAYS, CLUSTER_ONE_NODE, CLUSTER_READ_ONE, ECHO, ECHO_3,
    SECURE_CLUSTER, SECURE_SINGLE, SINGLE, SIX, SIX_ONE_NODE, STORAGE, STORAGE_ALWAYS,
};
use super::runner::Runner;
use super::setup::{start_ringkv, wait_until};
use super::{CLUSTER_SIZE, ROUTING_SIZE};
use crate::config::{StorageSync, Target as TargetKind};
use crate::echo::EchoClient;
use crate::target::{StorageTarget, Target};

impl Runner<'_> {
    /// One echo server, then three with the requests spread over them in
    /// turn, as the ringkv client spreads its requests over three nodes.
    pub(super) async fn echo(&mut self) -> Result<()> {
        for (label, servers) in [(ECHO, 1), (ECHO_3, CLUSTER_SIZE)] {
            self.begin(label);
            self.echo_servers(label, servers).await?;
        }
        Ok(())
    }

    async fn echo_servers(&mut self, label: &'static str, servers: usize) -> Result<()> {
        let dir = self.dir(&format!("echo-{servers}"))?;
        let exe = std::env::current_exe().context("finding ringkv-bench's own path")?;
        let mut procs = Vec::with_capacity(servers);
        let mut addresses = Vec::with_capacity(servers);
        for i in 1..=servers {
            let address = format!("127.0.0.1:{}", free_port()?);
            procs.push(spawn(
                &format!("echo server {i}"),
                &exe,
                &["echo-server".into(), "--listen".into(), address.clone()],
                &dir.join(format!("echo{i}.log")),
                self.args.worker_threads,
            )?);
            addresses.push(address);
        }
        self.note(&format!(
            "started {servers} echo server(s) on {}",
            addresses.join(",")
        ));
        // Ready when each server answers on its own.
        let probes: Vec<EchoClient> = addresses
            .iter()
            .map(|a| EchoClient::new(std::slice::from_ref(a), self.args.value_size))
            .collect::<Result<_>>()?;
        let probes = &probes;
        let mut refs: Vec<&mut Process> = procs.iter_mut().collect();
        wait_until(&mut refs, "the echo servers", move || async move {
            for probe in probes {
                if probe
                    .get(bytes::Bytes::from_static(b"probe"))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            true
        })
        .await?;
        let client = EchoClient::new(&addresses, self.args.value_size)?;
        let target = Arc::new(Target::Echo(client));
        let pids: Vec<u32> = procs.iter().filter_map(Process::pid).collect();
        // Nothing to preload: the echo servers store nothing.
        let ops = [Op::Put, Op::Get];
        self.measure_ops(label, TargetKind::Echo, &ops, false, &target, &pids)
            .await
    }

    pub(super) async fn storage(&mut self) -> Result<()> {
        let me = [std::process::id()];
        for (label, sync) in [
            (STORAGE, StorageSync::Periodic),
            (STORAGE_ALWAYS, StorageSync::Always),
        ] {
            self.begin(label);
            self.note(&format!("opening RocksDB in process, sync {sync:?}"));
            let dir = self.dir(&format!("rocksdb-{sync:?}").to_lowercase())?;
            let target = Arc::new(Target::Storage(StorageTarget::open(
                Some(&dir),
                sync.mode(),
            )?));
            // Sync changes only writes; reads are measured once.
            let ops: &[Op] = if sync == StorageSync::Periodic {
                &[Op::Put, Op::Get]
            } else {
                &[Op::Put]
            };
            self.measure_ops(label, TargetKind::Storage, ops, true, &target, &me)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn single(&mut self) -> Result<()> {
        let dir = self.dir("single")?;
        let mut nodes = start_ringkv(self.args, &dir, 1, "periodic", false)?;
        nodes.wait().await?;
        let target = Arc::new(nodes.target(&nodes.endpoints(), true, Level::Quorum)?);
        let pids = nodes.pids();
        let ops = [Op::Put, Op::Get];
        self.measure_ops(SINGLE, TargetKind::Ringkv, &ops, true, &target, &pids)
            .await?;
        self.half_load(SINGLE, &target, &pids).await
    }

    pub(super) async fn cluster(&mut self) -> Result<()> {
        {
            let dir = self.dir("cluster")?;
            let mut nodes = start_ringkv(self.args, &dir, CLUSTER_SIZE, "periodic", false)?;
            nodes.wait().await?;
            let endpoints = nodes.endpoints();
            let pids = nodes.pids();
            let routed = Arc::new(nodes.target(&endpoints, true, Level::Quorum)?);
            let ops = [Op::Put, Op::Get];
            self.measure_ops(CLUSTER, TargetKind::Ringkv, &ops, true, &routed, &pids)
                .await?;
            // Reads from the first replica that answers, the counterpart
            // of etcd's serializable reads.
            let read_one = Arc::new(nodes.target(&endpoints, true, Level::One)?);
            let spec = Spec {
                read_level: Some(Level::One),
                ..Spec::new(CLUSTER_READ_ONE, Op::Get, TargetKind::Ringkv)
            };
            self.measure(spec, &read_one, &pids).await?;
            self.half_load(CLUSTER, &routed, &pids).await?;
            // The same cluster with every request sent to node 1, which
            // coordinates or forwards it.
            let via_one = Arc::new(nodes.target(&endpoints[..1], false, Level::Quorum)?);
            let kind = TargetKind::Ringkv;
            self.measure_ops(CLUSTER_ONE_NODE, kind, &ops, false, &via_one, &pids)
                .await?;
        }
        // A fresh cluster whose replicas fsync before acknowledging, the
        // counterpart of etcd's puts.
        self.begin(CLUSTER_ALWAYS);
        let dir = self.dir("cluster-always")?;
        let mut nodes = start_ringkv(self.args, &dir, CLUSTER_SIZE, "always", false)?;
        nodes.wait().await?;
        let pids = nodes.pids();
        let target = Arc::new(nodes.target(&nodes.endpoints(), true, Level::Quorum)?);
        let kind = TargetKind::Ringkv;
        self.measure_ops(CLUSTER_ALWAYS, kind, &[Op::Put], true, &target, &pids)
            .await
    }

    /// Six nodes, N = 3: routed (each request to one of its key's
    /// replicas), then every request to node 1, which coordinates the half
    /// of the keys it holds and forwards the rest: the routing target.
    /// Closed loop for each, then both open loop at one rate, half of what
    /// node 1 alone reached, so their latencies compare at equal load (the
    /// rows marked `@50%`).
    pub(super) async fn six(&mut self) -> Result<()> {
        let dir = self.dir("six")?;
        let mut nodes = start_ringkv(self.args, &dir, ROUTING_SIZE, "periodic", false)?;
        nodes.wait().await?;
        let endpoints = nodes.endpoints();
        let pids = nodes.pids();
        let routed = Arc::new(nodes.target(&endpoints, true, Level::Quorum)?);
        let via_one = Arc::new(nodes.target(&endpoints[..1], false, Level::Quorum)?);
        for op in [Op::Put, Op::Get] {
            let closed = |system| Spec::new(system, op, TargetKind::Ringkv);
            let first = match op {
                Op::Put => closed(SIX).preloaded(),
                _ => closed(SIX),
            };
            self.measure(first, &routed, &pids).await?;
            let max = self.measure(closed(SIX_ONE_NODE), &via_one, &pids).await?;
            if max > 0.0 {
                let open = |system| Spec {
                    target_rate: Some(max / 2.0),
                    ..closed(system)
                };
                self.measure(open(SIX), &routed, &pids).await?;
                self.measure(open(SIX_ONE_NODE), &via_one, &pids).await?;
            }
        }
        Ok(())
    }

    /// One node and three nodes as [`Runner::single`] and
    /// [`Runner::cluster`] measure them (periodic, routed), with TLS on the
    /// client port, mutual TLS between the nodes and a token on every
    /// request.
    pub(super) async fn secure(&mut self) -> Result<()> {
        for (label, n) in [(SECURE_SINGLE, 1), (SECURE_CLUSTER, CLUSTER_SIZE)] {
            self.begin(label);
            let dir = self.dir(if n == 1 {
                "secure-single"
            } else {
                "secure-cluster"
            })?;
            let mut nodes = start_ringkv(self.args, &dir, n, "periodic", true)?;
            nodes.wait().await?;
            let pids = nodes.pids();
            let target = Arc::new(nodes.target(&nodes.endpoints(), true, Level::Quorum)?);
            let ops = [Op::Put, Op::Get];
            self.measure_ops(label, TargetKind::Ringkv, &ops, true, &target, &pids)
                .await?;
        }
        Ok(())
    }
}
