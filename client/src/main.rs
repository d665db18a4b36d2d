//! `ringkv`: the command-line client.
//!
//! Exit codes: 0 success; 1 key not found (get); 2 invalid usage or
//! argument; 3 refused before anything was applied, e.g. not enough
//! replicas (retry later); 4 outcome unknown (timed out, or the write was
//! applied somewhere but not confirmed, or a connection broke after it was
//! sent): a write may have been applied; 5 overloaded; 6 no node reachable;
//! 7 other errors; 8 refused: no valid token, or it lacks the scope.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cli::{kv, status};
use ringkv_client::{Client, Error, RequestOptions, Security};
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
    #[arg(long, global = true, value_parser = cli::parse_duration)]
    timeout: Option<Duration>,
    /// PEM CA bundle the nodes' certificates must chain to; given, the
    /// CLI speaks TLS.
    #[arg(long, env = "RINGKV_CACERT", global = true)]
    cacert: Option<PathBuf>,
    /// PEM client certificate, for nodes that require one (tls.client_ca).
    #[arg(long, env = "RINGKV_CERT", global = true)]
    cert: Option<PathBuf>,
    /// PEM private key of --cert. (The field is not called `key`: that
    /// name is the subcommands' KEY argument.)
    #[arg(long = "key", env = "RINGKV_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// The name the nodes' certificates must carry, when it is not the
    /// endpoint's host.
    #[arg(long, env = "RINGKV_TLS_SERVER_NAME", global = true)]
    tls_server_name: Option<String>,
    /// Bearer token for nodes with auth enabled.
    #[arg(long, env = "RINGKV_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
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
    Put(kv::PutArgs),
    /// Read a value. Exit code 1 when the key is not found.
    Get(kv::GetArgs),
    /// Delete a key.
    Delete(kv::DeleteArgs),
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
    /// Client tokens (admin scope).
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuthCommand {
    /// Create, list and revoke bearer tokens.
    Token {
        #[command(subcommand)]
        command: cli::auth::TokenCommand,
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

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidArgument(_) | Error::FailedPrecondition(_) => 2,
        Error::Denied(_) => 8,
        Error::Unavailable(_) => 3,
        Error::Timeout(_) | Error::Indeterminate(_) => 4,
        Error::Overloaded(_) => 5,
        Error::Unreachable(_) => 6,
        Error::Internal(_) => 7,
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let client = Client::new(&cli.endpoints)?.with_security(security(&cli)?)?;
    let json = cli.output == Output::Json;
    let base = RequestOptions {
        timeout: cli.timeout,
        ..RequestOptions::default()
    };
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Put(args) => kv::put(&client, args, base, json, &mut stdout).await,
        Command::Get(args) => kv::get(&client, args, base, json, &mut stdout).await,
        Command::Delete(args) => kv::delete(&client, args, base, json, &mut stdout).await,
        Command::LocalGet { key } => kv::local_get(&client, &key, json, &mut stdout).await,
        Command::Cluster {
            command: ClusterCommand::Status { workers },
        } => status::members(&client, workers, json, &mut stdout).await,
        Command::Repair { partition } => {
            status::repair(&client, partition, json, &mut stdout).await
        }
        Command::Cluster {
            command: ClusterCommand::Join { seed },
        } => cli::changes::join(&client, &seed, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Leave { node },
        } => cli::changes::leave(&client, node.as_deref(), json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Remove { node },
        } => cli::changes::remove(&client, &node, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Plan { moves },
        } => cli::changes::plan(&client, moves, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Commit { wait },
        } => cli::changes::commit(&client, wait, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Transfers { all },
        } => cli::changes::transfers(&client, all, json, &mut stdout)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Cluster {
            command: ClusterCommand::Layout,
        } => status::layout(&client, json, &mut stdout).await,
        Command::Auth {
            command: AuthCommand::Token { command },
        } => cli::auth::token(&client, command, json, &mut stdout).await,
    }
}

/// TLS files and the token, as the flags (or their environment
/// variables) give them.
fn security(cli: &Cli) -> Result<Security, Error> {
    let read = |path: &Option<PathBuf>, flag: &str| -> Result<Option<Vec<u8>>, Error> {
        path.as_ref()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| Error::InvalidArgument(format!("{flag} {}: {e}", p.display())))
            })
            .transpose()
    };
    Ok(Security {
        ca_pem: read(&cli.cacert, "--cacert")?,
        cert_pem: read(&cli.cert, "--cert")?,
        key_pem: read(&cli.tls_key, "--key")?,
        server_name: cli.tls_server_name.clone(),
        token: cli.token.clone().filter(|t| !t.trim().is_empty()),
    })
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
