//! `ringkv`: the command-line client.
//!
//! Exit codes: 0 success; 1 key not found (get); 2 invalid usage or
//! argument; 3 refused before anything was applied, e.g. not enough
//! replicas (retry later); 4 outcome unknown (timed out, or the write was
//! applied somewhere but not confirmed, or a connection broke after it was
//! sent): a write may have been applied; 5 overloaded; 6 no node reachable;
//! 7 other errors.

mod changes;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use ringkv_client::{Client, Context, Error, Level, PutOptions, ReplyMeta, RequestOptions};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "ringkv", version, about = "Command-line client for ringkv")]
struct Cli {
    /// Nodes to contact, comma separated host:port.
    #[arg(
        long,
        env = "RINGKV_ENDPOINTS",
        default_value = "127.0.0.1:7379",
        value_delimiter = ',',
        global = true
    )]
    endpoints: Vec<String>,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// Request timeout (e.g. 500ms, 5s); defaults to the node's setting.
    #[arg(long, global = true, value_parser = parse_duration)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store a value.
    Put {
        key: String,
        /// The value; or use --file.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from a file ("-" for stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Write consistency: one, quorum, all or a replica count.
        #[arg(short = 'w', long = "write", value_parser = parse_level)]
        w: Option<Level>,
        /// Count only the key's own replicas toward W (no fallbacks).
        #[arg(long)]
        strict: bool,
        /// Expire the value after this long (e.g. 30s, 10m, 1h).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Context from a get (--show-context) to supersede what it read.
        #[arg(long)]
        context: Option<String>,
        /// Print the new context.
        #[arg(long)]
        show_context: bool,
    },
    /// Read a value. Exit code 1 when the key is not found.
    Get {
        key: String,
        /// Read consistency: one, quorum, all or a replica count.
        #[arg(short = 'r', long = "read", value_parser = parse_level)]
        r: Option<Level>,
        /// How to present concurrent versions: lww returns only the newest.
        #[arg(long, value_enum)]
        resolve: Option<ResolveArg>,
        /// Print the context (on stderr in text mode) for a later put or delete.
        #[arg(long)]
        show_context: bool,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(short = 'w', long = "write", value_parser = parse_level)]
        w: Option<Level>,
        #[arg(long)]
        strict: bool,
        #[arg(long)]
        context: Option<String>,
    },
    /// Show one node's stored copy of a key, without coordination
    /// (the first endpoint is asked).
    LocalGet { key: String },
    /// Cluster inspection and changes (join, leave, remove, plan, commit).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run anti-entropy now on the first endpoint's node (all its
    /// partitions, or one) and report what was repaired.
    Repair {
        #[arg(long)]
        partition: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Members, their status, liveness (as the first reachable endpoint sees
    /// them), partitions owned and share of the data.
    Status {
        /// Also list the first endpoint's background workers and its hints.
        #[arg(long)]
        workers: bool,
    },
    /// The layout: each partition's replicas in preference order.
    Layout,
    /// Make the fresh node at the first endpoint join the cluster SEED
    /// belongs to (with cluster.auto_join = false; otherwise it joins when
    /// started with seeds).
    Join { seed: String },
    /// Stage a node's departure (the first endpoint's node without NODE):
    /// its partitions are drained to the others at the next commit.
    Leave { node: Option<String> },
    /// Stage the removal of a dead node: its partitions are re-replicated
    /// from the survivors at the next commit.
    Remove { node: String },
    /// Show the moves the staged changes would make.
    Plan {
        /// List every partition move, not only the totals per receiver.
        #[arg(long)]
        moves: bool,
    },
    /// Publish the staged changes as the next layout version.
    Commit {
        /// Follow the transfers with a progress bar until they are done.
        #[arg(long)]
        wait: bool,
    },
    /// Progress of the change being transferred: per receiving node, and
    /// each partition transfer running now.
    Transfers {
        /// List finished and queued transfers too.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ResolveArg {
    Lww,
    All,
}

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse::<Level>().map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 1h)"))?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

fn parse_context(s: &str) -> Result<Context, Error> {
    URL_SAFE_NO_PAD
        .decode(s.trim())
        .map(|b| Context(Bytes::from(b)))
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "--context is not a context printed by ringkv ({e}); copy it exactly from get --show-context"
            ))
        })
}

fn encode_context(c: &Context) -> String {
    URL_SAFE_NO_PAD.encode(&c.0)
}

/// A value as JSON: text when it is UTF-8, base64 otherwise.
fn json_value(v: &Bytes) -> serde_json::Value {
    match std::str::from_utf8(v) {
        Ok(s) => json!({ "value": s }),
        Err(_) => json!({ "value_base64": base64::engine::general_purpose::STANDARD.encode(v) }),
    }
}

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidArgument(_) | Error::FailedPrecondition(_) | Error::Denied(_) => 2,
        Error::Unavailable(_) => 3,
        Error::Timeout(_) | Error::Indeterminate(_) => 4,
        Error::Overloaded(_) => 5,
        Error::Unreachable(_) => 6,
        Error::Internal(_) => 7,
    }
}

fn print_meta_json(meta: &ReplyMeta) -> serde_json::Value {
    serde_json::to_value(meta).unwrap_or(serde_json::Value::Null)
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let client = Client::new(&cli.endpoints)?;
    let json = cli.output == Output::Json;
    let base = RequestOptions {
        timeout: cli.timeout,
        ..RequestOptions::default()
    };
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Put {
            key,
            value,
            file,
            w,
            strict,
            ttl,
            context,
            show_context,
        } => {
            let value = match (value, file) {
                (Some(v), _) => Bytes::from(v),
                (None, Some(path)) if path.as_os_str() == "-" => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .map_err(|e| Error::InvalidArgument(format!("reading stdin: {e}")))?;
                    Bytes::from(buf)
                }
                (None, Some(path)) => Bytes::from(std::fs::read(&path).map_err(|e| {
                    Error::InvalidArgument(format!("cannot read {}: {e}", path.display()))
                })?),
                (None, None) => {
                    return Err(Error::InvalidArgument("give a value or --file".into()))
                }
            };
            let opts = PutOptions {
                consistency: RequestOptions {
                    level: w,
                    sloppy: strict.then_some(false),
                    ..base
                },
                context: context.as_deref().map(parse_context).transpose()?,
                ttl,
            };
            let r = client.put(key, value, opts).await?;
            if json {
                let out = json!({ "ok": true, "context": encode_context(&r.context), "meta": print_meta_json(&r.meta) });
                let _ = writeln!(stdout, "{out}");
            } else {
                let _ = writeln!(stdout, "OK");
                if show_context {
                    let _ = writeln!(stdout, "context: {}", encode_context(&r.context));
                }
                if r.meta.replication_capped {
                    eprintln!(
                        "note: stored on {} replica(s); the cluster has fewer members than the replication factor",
                        r.meta.replication
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            key,
            r,
            resolve,
            show_context,
        } => {
            let opts = RequestOptions { level: r, ..base };
            let lww = resolve == Some(ResolveArg::Lww);
            let res = client.get(key.clone(), opts, lww).await?;
            if json {
                let values: Vec<_> = res
                    .siblings
                    .iter()
                    .map(|s| {
                        let mut v = json_value(&s.value);
                        v["timestamp"] = json!(s.timestamp);
                        if let Some(e) = s.expires_at_ms {
                            v["expires_at_ms"] = json!(e);
                        }
                        v
                    })
                    .collect();
                let out = json!({
                    "found": res.found(),
                    "siblings": values,
                    "context": encode_context(&res.context),
                    "meta": print_meta_json(&res.meta),
                });
                let _ = writeln!(stdout, "{out}");
                return Ok(if res.found() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            if !res.found() {
                eprintln!("not found: {key}");
                if show_context && !res.context.is_empty() {
                    eprintln!("context: {}", encode_context(&res.context));
                }
                return Ok(ExitCode::from(1));
            }
            for s in &res.siblings {
                let _ = stdout.write_all(&s.value);
                let _ = stdout.write_all(b"\n");
            }
            if res.siblings.len() > 1 {
                eprintln!(
                    "{} siblings (concurrent writes); put the merged value with --context to resolve them",
                    res.siblings.len()
                );
            }
            if show_context {
                eprintln!("context: {}", encode_context(&res.context));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete {
            key,
            w,
            strict,
            context,
        } => {
            let opts = RequestOptions {
                level: w,
                sloppy: strict.then_some(false),
                ..base
            };
            let context = context.as_deref().map(parse_context).transpose()?;
            let meta = client.delete(key, context, opts).await?;
            if json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    json!({ "ok": true, "meta": print_meta_json(&meta) })
                );
            } else {
                let _ = writeln!(stdout, "OK");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::LocalGet { key } => {
            let copy = client.local_get(0, key.clone()).await?;
            if json {
                let versions: Vec<_> = copy
                    .versions
                    .iter()
                    .map(|v| {
                        let mut o = json_value(&v.value);
                        o["node"] = json!(v.node);
                        o["counter"] = json!(v.counter);
                        o["timestamp"] = json!(v.timestamp);
                        o["tombstone"] = json!(v.tombstone);
                        o
                    })
                    .collect();
                let out = json!({ "found": copy.found, "partition": copy.partition, "versions": versions, "context": encode_context(&copy.context) });
                let _ = writeln!(stdout, "{out}");
            } else if !copy.found {
                eprintln!(
                    "not stored on {}: {key} (partition {})",
                    client.endpoints()[0],
                    copy.partition
                );
                return Ok(ExitCode::from(1));
            } else {
                let _ = writeln!(stdout, "partition {}", copy.partition);
                for v in &copy.versions {
                    let shown = if v.tombstone {
                        "<tombstone>".to_string()
                    } else {
                        String::from_utf8_lossy(&v.value).into_owned()
                    };
                    let _ = writeln!(
                        stdout,
                        "{}:{} ts={} {}",
                        v.node, v.counter, v.timestamp, shown
                    );
                }
            }
            Ok(if copy.found {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Cluster {
            command: ClusterCommand::Status { workers },
        } => {
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
                print_workers(&client, json, &mut stdout).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { partition } => {
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
        Command::Cluster {
            command: ClusterCommand::Join { seed },
        } => changes::join(&client, &seed, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Leave { node },
        } => changes::leave(&client, node.as_deref(), json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Remove { node },
        } => changes::remove(&client, &node, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Plan { moves },
        } => changes::plan(&client, moves, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Commit { wait },
        } => changes::commit(&client, wait, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Transfers { all },
        } => changes::transfers(&client, all, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Layout,
        } => {
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
    }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.output == Output::Json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv: cannot start: {e}");
            return ExitCode::from(7);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                let kind = format!("{e:?}")
                    .split('(')
                    .next()
                    .unwrap_or("Error")
                    .to_string();
                println!(
                    "{}",
                    json!({ "ok": false, "error": e.to_string(), "kind": kind, "retryable": e.is_retryable() })
                );
            }
            eprintln!("ringkv: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
