//! `ringkv`: the command-line client.
//!
//! Exit codes: 0 success; 1 key not found (get); 2 invalid usage or
//! argument; 3 refused before anything was applied, e.g. not enough
//! replicas (retry later); 4 outcome unknown (timed out, or the write was
//! applied somewhere but not confirmed, or a connection broke after it was
//! sent): a write may have been applied; 5 overloaded; 6 no node reachable;
//! 7 other errors.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cli::{kv, status};
use ringkv_client::{Client, Error, RequestOptions};
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
        Error::InvalidArgument(_) | Error::FailedPrecondition(_) | Error::Denied(_) => 2,
        Error::Unavailable(_) => 3,
        Error::Timeout(_) | Error::Indeterminate(_) => 4,
        Error::Overloaded(_) => 5,
        Error::Unreachable(_) => 6,
        Error::Internal(_) => 7,
    }
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
    }
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
