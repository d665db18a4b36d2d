//! `ringkv put | get | delete | local-get`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use ringkv_client::{Client, Error, Level, PutOptions, RequestOptions};
use serde_json::json;

use super::{encode_context, json_value, parse_context, print_meta_json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResolveArg {
    Lww,
    All,
}

/// Arguments of `ringkv put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    key: String,
    /// The value; or use --file.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    value: Option<String>,
    /// Read the value from a file ("-" for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Write consistency: one, quorum, all or a replica count.
    #[arg(short = 'w', long = "write", value_parser = super::parse_level)]
    w: Option<Level>,
    /// Count only the key's own replicas toward W (no fallbacks).
    #[arg(long)]
    strict: bool,
    /// Expire the value after this long (e.g. 30s, 10m, 1h).
    #[arg(long, value_parser = super::parse_duration)]
    ttl: Option<Duration>,
    /// Context from a get (--show-context) to supersede what it read.
    #[arg(long)]
    context: Option<String>,
    /// Print the new context.
    #[arg(long)]
    show_context: bool,
}

/// Arguments of `ringkv get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    key: String,
    /// Read consistency: one, quorum, all or a replica count.
    #[arg(short = 'r', long = "read", value_parser = super::parse_level)]
    r: Option<Level>,
    /// How to present concurrent versions: lww returns only the newest.
    #[arg(long, value_enum)]
    resolve: Option<ResolveArg>,
    /// Print the context (on stderr in text mode) for a later put or delete.
    #[arg(long)]
    show_context: bool,
}

/// Arguments of `ringkv delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    key: String,
    #[arg(short = 'w', long = "write", value_parser = super::parse_level)]
    w: Option<Level>,
    #[arg(long)]
    strict: bool,
    #[arg(long)]
    context: Option<String>,
}

pub async fn put(
    client: &Client,
    args: PutArgs,
    base: RequestOptions,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let PutArgs {
        key,
        value,
        file,
        w,
        strict,
        ttl,
        context,
        show_context,
    } = args;
    let value =
        match (value, file) {
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
            (None, None) => return Err(Error::InvalidArgument("give a value or --file".into())),
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

pub async fn get(
    client: &Client,
    args: GetArgs,
    base: RequestOptions,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let GetArgs {
        key,
        r,
        resolve,
        show_context,
    } = args;
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

pub async fn delete(
    client: &Client,
    args: DeleteArgs,
    base: RequestOptions,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let DeleteArgs {
        key,
        w,
        strict,
        context,
    } = args;
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

pub async fn local_get(
    client: &Client,
    key: &str,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    let copy = client.local_get(0, key.to_string()).await?;
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
