//! etcd in `compare`: three members started fresh, then measured three
//! ways against the same cluster.
//!
//! - **round robin** ([`ETCD`]): linearizable ranges and puts spread over
//!   the members, as the ringkv client spreads its requests; a follower
//!   forwards each put, and the ReadIndex of each range, to the leader.
//!   This is the row the `÷ etcd` column divides by.
//! - **serializable** ([`ETCD_SERIALIZABLE`], gets only): each member
//!   answers from its own state without asking the leader, the
//!   counterpart of a ringkv read at R = ONE.
//! - **leader only** ([`ETCD_LEADER`]): every request to the leader, found
//!   with `Maintenance.Status`, which saves the forwarding hop but puts
//!   every client connection on one member, as a leader-aware client does.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use ringkv_tests::Process;

use super::procs::{find_program, free_port, spawn};
use super::row::{Op, ETCD, ETCD_LEADER, ETCD_SERIALIZABLE};
use super::runner::Runner;
use super::setup::wait_until;
use super::CLUSTER_SIZE;
use crate::config::Target as TargetKind;
use crate::etcd::{leader, EtcdKv};
use crate::target::Target;

impl Runner<'_> {
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
                self.args.worker_threads,
            )?);
        }
        self.note(&format!("started {} etcd members", procs.len()));
        let endpoints: Vec<String> = members
            .iter()
            .map(|(_, client, _)| format!("127.0.0.1:{client}"))
            .collect();
        let kv = EtcdKv::new(&endpoints)?;
        let mut refs: Vec<&mut Process> = procs.iter_mut().collect();
        // Ready when every member serves a linearizable range (so a leader
        // is elected) and every member names the same leader.
        let found = Mutex::new(None);
        let (probe_kv, endpoints_ref, found_ref) = (&kv, &endpoints, &found);
        wait_until(&mut refs, "the etcd cluster", move || async move {
            for i in 0..endpoints_ref.len() {
                let probe = crate::etcd::pb::RangeRequest {
                    key: bytes::Bytes::from_static(b"ringkv-bench-probe"),
                    ..Default::default()
                };
                if probe_kv.member(i).range(probe).await.is_err() {
                    return false;
                }
            }
            let leader = leader(endpoints_ref).await.ok().flatten();
            *found_ref.lock().unwrap_or_else(|p| p.into_inner()) = leader;
            leader.is_some()
        })
        .await?;
        let leader_at = found.into_inner().unwrap_or_else(|p| p.into_inner());
        let Some(leader_at) = leader_at else {
            bail!("no etcd leader");
        };
        let pids: Vec<u32> = procs.iter().filter_map(Process::pid).collect();
        let kind = TargetKind::Etcd;

        let round_robin = Arc::new(Target::Etcd(kv));
        let ops = [Op::Put, Op::Get];
        self.measure_ops(ETCD, kind, &ops, true, &round_robin, &pids)
            .await?;
        let serializable = Arc::new(Target::Etcd(
            EtcdKv::new(&endpoints)?.with_serializable_reads(),
        ));
        self.measure_ops(
            ETCD_SERIALIZABLE,
            kind,
            &[Op::Get],
            false,
            &serializable,
            &pids,
        )
        .await?;
        self.note(&format!(
            "etcd leader: member m{leader_at} at {}",
            endpoints[leader_at]
        ));
        let to_leader = Arc::new(Target::Etcd(EtcdKv::new(
            &endpoints[leader_at..=leader_at],
        )?));
        self.measure_ops(ETCD_LEADER, kind, &ops, false, &to_leader, &pids)
            .await?;
        // A leader change during the leader-only rows would have put a
        // forwarding hop back; say so rather than report it silently.
        if leader(&endpoints).await.ok().flatten() != Some(leader_at) {
            self.note("warning: the etcd leader changed during the leader-only rows");
        }
        Ok(())
    }
}
