//! `ringkv cluster status | layout` and `ringkv repair`: what the cluster
//! looks like and what a node's background work is doing.

use std::io::Write;
use std::process::ExitCode;

use ringkv_client::{Client, Error};
use serde_json::json;

/// Members with their liveness and share of the data, and with `workers`
/// the first endpoint's workers and hints.
pub async fn members(
    client: &Client,
    workers: bool,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let members = client.members().await?;
    let total: u32 = members.iter().map(|m| m.partitions_owned).sum();
    let share = |owned: u32| {
        if total == 0 {
            0.0
        } else {
            100.0 * owned as f64 / total as f64
        }
    };
    if json {
        let list: Vec<_> = members.iter().map(|m| json!({
            "node_id": m.node_id, "name": m.name, "address": m.address, "zone": m.zone,
            "weight": m.weight, "status": m.status, "liveness": m.liveness,
            "partitions_owned": m.partitions_owned, "share_percent": share(m.partitions_owned),
            "generation": m.generation, "layout_version": m.layout_version,
        })).collect();
        // The cluster id as the answering node knows it (empty
        // while it has none), so scripts can tell clusters apart.
        let cluster_id = client
            .node_status(0)
            .await
            .map(|s| s.cluster_id)
            .unwrap_or_default();
        let _ = writeln!(
            stdout,
            "{}",
            json!({ "members": list, "cluster_id": cluster_id })
        );
    } else {
        let _ = writeln!(
            stdout,
            "{:<18} {:<10} {:<22} {:<10} {:<8} {:<8} {:>10} {:>7}",
            "NODE", "NAME", "ADDRESS", "ZONE", "STATUS", "LIVENESS", "PARTITIONS", "SHARE"
        );
        for m in &members {
            let _ = writeln!(
                stdout,
                "{:<18} {:<10} {:<22} {:<10} {:<8} {:<8} {:>10} {:>6.1}%",
                m.node_id,
                m.name,
                m.address,
                m.zone,
                m.status,
                m.liveness,
                m.partitions_owned,
                share(m.partitions_owned)
            );
        }
    }
    if workers {
        print_workers(client, json, stdout).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs anti-entropy now on the first endpoint's node.
pub async fn repair(
    client: &Client,
    partition: Option<u32>,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let r = client.repair(0, partition).await?;
    if json {
        let out = json!({
            "partitions": r.partitions, "partitions_differing": r.partitions_differing,
            "keys_repaired": r.keys_repaired, "tombstones_purged": r.tombstones_purged,
            "errors": r.errors,
        });
        let _ = writeln!(stdout, "{out}");
    } else {
        let _ = writeln!(
            stdout,
            "repaired {} keys in {} of {} partitions; purged {} tombstones",
            r.keys_repaired, r.partitions_differing, r.partitions, r.tombstones_purged
        );
        for e in &r.errors {
            eprintln!("error: {e}");
        }
    }
    Ok(if r.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(7)
    })
}

/// Each partition's replicas in preference order.
pub async fn layout(
    client: &Client,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let layout = client.layout().await?;
    if layout.version == 0 {
        return Err(Error::Unavailable(
            "the cluster is still forming: no layout yet (waiting for cluster.bootstrap_expect members)".into(),
        ));
    }
    let names: std::collections::HashMap<&str, &str> = layout
        .members
        .iter()
        .map(|m| (m.node_id.as_str(), m.name.as_str()))
        .collect();
    if json {
        let parts: Vec<_> = layout
            .assignments
            .iter()
            .map(|a| {
                json!({
                    "partition": a.partition, "replicas": a.replicas,
                })
            })
            .collect();
        let out = json!({
            "version": layout.version, "partitions": layout.partitions,
            "replication": layout.replication, "assignments": parts,
        });
        let _ = writeln!(stdout, "{out}");
    } else {
        let _ = writeln!(
            stdout,
            "layout v{}: {} partitions, {} replicas each",
            layout.version, layout.partitions, layout.replication
        );
        for a in &layout.assignments {
            let replicas: Vec<String> = a
                .replicas
                .iter()
                .map(|id| match names.get(id.as_str()) {
                    Some(name) => format!("{name}({id})"),
                    None => id.clone(),
                })
                .collect();
            let _ = writeln!(stdout, "{:>5}  {}", a.partition, replicas.join(" "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the first endpoint's background workers and the hints it holds.
async fn print_workers(client: &Client, json: bool, stdout: &mut impl Write) -> Result<(), Error> {
    let list = client.workers(0).await?;
    let hints = client.hints(0).await?;
    if json {
        let ws: Vec<_> = list
            .iter()
            .map(|w| {
                json!({
                    "name": w.name, "state": w.state, "errors": w.errors,
                    "last_error": w.last_error, "counters": w.counters,
                })
            })
            .collect();
        let hs: Vec<_> = hints
            .iter()
            .map(|h| json!({ "target": h.target, "keys": h.keys, "bytes": h.bytes }))
            .collect();
        let _ = writeln!(stdout, "{}", json!({ "workers": ws, "hints": hs }));
        return Ok(());
    }
    let _ = writeln!(stdout, "\nworkers on {}:", client.endpoints()[0]);
    let _ = writeln!(
        stdout,
        "{:<16} {:<8} {:>6}  COUNTERS",
        "WORKER", "STATE", "ERRORS"
    );
    for w in &list {
        let counters: Vec<String> = w.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            stdout,
            "{:<16} {:<8} {:>6}  {}",
            w.name,
            w.state,
            w.errors,
            counters.join(" ")
        );
        if !w.last_error.is_empty() {
            let _ = writeln!(stdout, "{:<32}  last error: {}", "", w.last_error);
        }
    }
    let total: u64 = hints.iter().map(|h| h.keys).sum();
    let _ = writeln!(stdout, "hints held: {total}");
    for h in &hints {
        let _ = writeln!(
            stdout,
            "  for {}: {} keys, {} bytes",
            h.target, h.keys, h.bytes
        );
    }
    Ok(())
}
