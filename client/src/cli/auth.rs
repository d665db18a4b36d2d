//! `ringkv auth token create | list | revoke`: the cluster's client
//! tokens (admin scope).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use ringkv_client::{Client, Error, TokenRequest};
use ringkv_proto::v1 as pb;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (once: no node keeps it, only its hash).
    Create {
        /// A label for lists and logs.
        name: String,
        /// What it may do: read, write, admin (comma separated).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Lifetime (e.g. 1h, 30d); none: no expiry.
        #[arg(long, value_parser = super::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Every token: id, name, scopes, prefix, expiry, revoked.
    List,
    /// Revoke a token by its id (from `list`); every node refuses it once
    /// it hears, the live ones at once.
    Revoke { id: String },
}

fn info_json(t: &pb::TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id, "name": t.name, "scopes": t.scopes,
        "prefix": t.prefix.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()),
        "created_ms": t.created_ms,
        "expires_ms": (t.expires_ms > 0).then_some(t.expires_ms),
        "revoked": t.revoked,
    })
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub async fn token(
    client: &Client,
    command: TokenCommand,
    json: bool,
    stdout: &mut impl Write,
) -> Result<ExitCode, Error> {
    match command {
        TokenCommand::Create {
            name,
            scopes,
            prefix,
            ttl,
        } => {
            let created = client
                .create_token(TokenRequest {
                    name,
                    scopes,
                    prefix: prefix.map(|p| p.into_bytes().into()),
                    ttl,
                })
                .await?;
            let info = created.info.unwrap_or_default();
            if json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    json!({ "token": created.token, "info": info_json(&info), "reached": created.reached })
                );
            } else {
                let _ = writeln!(stdout, "{}", created.token);
                eprintln!(
                    "token {} ({}): scopes {}, expires {}; held by this node and {} live member(s); it is shown only this once",
                    info.id,
                    info.name,
                    info.scopes.join(","),
                    when(info.expires_ms),
                    created.reached
                );
            }
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await?;
            if json {
                let list: Vec<_> = tokens.iter().map(info_json).collect();
                let _ = writeln!(stdout, "{}", json!({ "tokens": list }));
            } else {
                let _ = writeln!(
                    stdout,
                    "{:<17} {:<20} {:<18} {:<12} {:<21} STATE",
                    "ID", "NAME", "SCOPES", "PREFIX", "EXPIRES"
                );
                for t in &tokens {
                    let prefix = t
                        .prefix
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_else(|| "*".into());
                    let _ = writeln!(
                        stdout,
                        "{:<17} {:<20} {:<18} {:<12} {:<21} {}",
                        t.id,
                        t.name,
                        t.scopes.join(","),
                        prefix,
                        when(t.expires_ms),
                        if t.revoked { "revoked" } else { "active" }
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let revoked = client.revoke_token(&id).await?;
            if json {
                let _ = writeln!(stdout, "{}", json!({ "id": id, "revoked": revoked }));
            } else if revoked {
                let _ = writeln!(stdout, "revoked {id}");
            } else {
                let _ = writeln!(stdout, "{id} was revoked already");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
