//! The systems `compare` measures, one method of the [`Runner`] each:
//! the echo server, RocksDB in process, one ringkv node, three ringkv
//! nodes and three etcd members, each started, measured and stopped.

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ringkv_tests::Process;

use super::procs::{find_program, free_port, spawn};
use super::setup::{start_ringkv, wait_until};
use super::{
    Op, Runner, Spec, CLUSTER, CLUSTER_ALWAYS, CLUSTER_ONE_NODE, CLUSTER_SIZE, ECHO, ETCD,
    SECURE_CLUSTER, SECURE_SINGLE, SINGLE, STORAGE, STORAGE_ALWAYS,
};
use crate::config::{StorageSync, Target as TargetKind};
use crate::echo::EchoClient;
use crate::etcd::EtcdKv;
use crate::target::{StorageTarget, Target};

impl Runner<'_> {
    pub(super) async fn echo(&mut self) -> Result<()> {
        let dir = self.dir("echo")?;
        let exe = std::env::current_exe().context("finding ringkv-bench's own path")?;
        let address = format!("127.0.0.1:{}", free_port()?);
        self.note(&format!("starting the echo server on {address}"));
        let mut server = spawn(
            "echo server",
            &exe,
            &["echo-server".into(), "--listen".into(), address.clone()],
            &dir.join("echo.log"),
        )?;
        let client = EchoClient::new(std::slice::from_ref(&address), self.args.value_size)?;
        wait_until(&mut [&mut server], "the echo server", || async {
            client
                .get(bytes::Bytes::from_static(b"probe"))
                .await
                .is_ok()
        })
        .await?;
        let target = Arc::new(Target::Echo(client));
        let pids: Vec<u32> = server.pid().into_iter().collect();
        // Nothing to preload: the echo server stores nothing.
        self.measure(
            Spec {
                system: ECHO,
                op: Op::Put,
                kind: TargetKind::Echo,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.measure(
            Spec {
                system: ECHO,
                op: Op::Get,
                kind: TargetKind::Echo,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        Ok(())
    }

    pub(super) async fn storage(&mut self) -> Result<()> {
        let me = [std::process::id()];
        for (label, sync) in [
            (STORAGE, StorageSync::Periodic),
            (STORAGE_ALWAYS, StorageSync::Always),
        ] {
            self.note(&format!("opening RocksDB in process, sync {sync:?}"));
            let dir = self.dir(&format!("rocksdb-{sync:?}").to_lowercase())?;
            let target = Arc::new(Target::Storage(StorageTarget::open(
                Some(&dir),
                sync.mode(),
            )?));
            self.measure(
                Spec {
                    system: label,
                    op: Op::Put,
                    kind: TargetKind::Storage,
                    preload: true,
                    target_rate: None,
                },
                &target,
                &me,
            )
            .await?;
            // Sync changes only writes; reads are measured once.
            if sync == StorageSync::Periodic {
                self.measure(
                    Spec {
                        system: label,
                        op: Op::Get,
                        kind: TargetKind::Storage,
                        preload: false,
                        target_rate: None,
                    },
                    &target,
                    &me,
                )
                .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn single(&mut self) -> Result<()> {
        let dir = self.dir("single")?;
        let mut nodes = start_ringkv(self.args, &dir, 1, "periodic", false)?;
        nodes.wait().await?;
        let target = Arc::new(nodes.target(&nodes.endpoints(), true)?);
        let pids = nodes.pids();
        self.measure(
            Spec {
                system: SINGLE,
                op: Op::Put,
                kind: TargetKind::Ringkv,
                preload: true,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.measure(
            Spec {
                system: SINGLE,
                op: Op::Get,
                kind: TargetKind::Ringkv,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.half_load(SINGLE, &target, &pids).await?;
        Ok(())
    }

    pub(super) async fn cluster(&mut self) -> Result<()> {
        {
            let dir = self.dir("cluster")?;
            let mut nodes = start_ringkv(self.args, &dir, CLUSTER_SIZE, "periodic", false)?;
            nodes.wait().await?;
            let endpoints = nodes.endpoints();
            let pids = nodes.pids();
            let routed = Arc::new(nodes.target(&endpoints, true)?);
            self.measure(
                Spec {
                    system: CLUSTER,
                    op: Op::Put,
                    kind: TargetKind::Ringkv,
                    preload: true,
                    target_rate: None,
                },
                &routed,
                &pids,
            )
            .await?;
            self.measure(
                Spec {
                    system: CLUSTER,
                    op: Op::Get,
                    kind: TargetKind::Ringkv,
                    preload: false,
                    target_rate: None,
                },
                &routed,
                &pids,
            )
            .await?;
            self.half_load(CLUSTER, &routed, &pids).await?;
            // The same cluster with every request sent to node 1, which
            // coordinates or forwards it.
            let via_one = Arc::new(nodes.target(&endpoints[..1], false)?);
            for op in [Op::Put, Op::Get] {
                self.measure(
                    Spec {
                        system: CLUSTER_ONE_NODE,
                        op,
                        kind: TargetKind::Ringkv,
                        preload: false,
                        target_rate: None,
                    },
                    &via_one,
                    &pids,
                )
                .await?;
            }
        }
        // A fresh cluster whose replicas fsync before acknowledging, the
        // counterpart of etcd's puts.
        let dir = self.dir("cluster-always")?;
        let mut nodes = start_ringkv(self.args, &dir, CLUSTER_SIZE, "always", false)?;
        nodes.wait().await?;
        let pids = nodes.pids();
        let target = Arc::new(nodes.target(&nodes.endpoints(), true)?);
        self.measure(
            Spec {
                system: CLUSTER_ALWAYS,
                op: Op::Put,
                kind: TargetKind::Ringkv,
                preload: true,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        Ok(())
    }

    /// One node and three nodes as [`Runner::single`] and
    /// [`Runner::cluster`] measure them (periodic, routed), with TLS on the
    /// client port, mutual TLS between the nodes and a token on every
    /// request.
    pub(super) async fn secure(&mut self) -> Result<()> {
        for (label, n) in [(SECURE_SINGLE, 1), (SECURE_CLUSTER, CLUSTER_SIZE)] {
            let dir = self.dir(if n == 1 {
                "secure-single"
            } else {
                "secure-cluster"
            })?;
            let mut nodes = start_ringkv(self.args, &dir, n, "periodic", true)?;
            nodes.wait().await?;
            let pids = nodes.pids();
            let target = Arc::new(nodes.target(&nodes.endpoints(), true)?);
            for (op, preload) in [(Op::Put, true), (Op::Get, false)] {
                self.measure(
                    Spec {
                        system: label,
                        op,
                        kind: TargetKind::Ringkv,
                        preload,
                        target_rate: None,
                    },
                    &target,
                    &pids,
                )
                .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn etcd(&mut self) -> Result<()> {
        let Some(etcd) = find_program(&self.args.etcd_bin) else {
            bail!(
                "{} not found: install Debian's etcd-server (benches/compare.sh does) or pass --etcd-bin",
                self.args.etcd_bin.display()
            );
        };
        let dir = self.dir("etcd")?;
        let members: Vec<(String, u16, u16)> = (0..CLUSTER_SIZE)
            .map(|i| Ok((format!("m{i}"), free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial_cluster = members
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = Vec::new();
        for (name, client, peer) in &members {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args: Vec<String> = [
                "--name",
                name,
                "--data-dir",
                &dir.join(name).display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "ringkv-bench",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            procs.push(spawn(
                &format!("etcd {name}"),
                &etcd,
                &args,
                &dir.join(format!("{name}.log")),
            )?);
        }
        self.note(&format!("started {} etcd members", procs.len()));
        let endpoints: Vec<String> = members
            .iter()
            .map(|(_, client, _)| format!("127.0.0.1:{client}"))
            .collect();
        let kv = EtcdKv::new(&endpoints)?;
        let mut refs: Vec<&mut Process> = procs.iter_mut().collect();
        let (members, probe_kv) = (endpoints.len(), &kv);
        wait_until(&mut refs, "the etcd cluster", move || async move {
            for i in 0..members {
                let probe = crate::etcd::pb::RangeRequest {
                    key: bytes::Bytes::from_static(b"ringkv-bench-probe"),
                    ..Default::default()
                };
                if probe_kv.member(i).range(probe).await.is_err() {
                    return false;
                }
            }
            true
        })
        .await?;
        let pids: Vec<u32> = procs.iter().filter_map(Process::pid).collect();
        let target = Arc::new(Target::Etcd(kv));
        self.measure(
            Spec {
                system: ETCD,
                op: Op::Put,
                kind: TargetKind::Etcd,
                preload: true,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        self.measure(
            Spec {
                system: ETCD,
                op: Op::Get,
                kind: TargetKind::Etcd,
                preload: false,
                target_rate: None,
            },
            &target,
            &pids,
        )
        .await?;
        Ok(())
    }
}
