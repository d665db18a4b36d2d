//! `ringkv-server`: runs one ringkv node.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringkv_node::config::{Config, LogFormat};

/// A ringkv node. Configuration layers: built-in defaults, then --config
/// FILE, then RINGKV__SECTION__KEY environment variables, then these flags.
#[derive(Parser, Debug)]
#[command(
    name = "ringkv-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see deploy/ringkv.toml).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// node.name
    #[arg(long)]
    name: Option<String>,
    /// node.listen: gRPC address for clients and operators (the client port).
    #[arg(long)]
    listen: Option<String>,
    /// node.advertise: address clients dial.
    #[arg(long)]
    advertise: Option<String>,
    /// node.peer_listen: gRPC address for the other nodes (the peer port).
    #[arg(long)]
    peer_listen: Option<String>,
    /// node.peer_advertise: address the other nodes dial.
    #[arg(long)]
    peer_advertise: Option<String>,
    /// node.data_dir
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cluster.seeds: nodes to contact at start, comma separated host:port
    /// of their peer ports.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// cluster.bootstrap_expect: members to wait for before forming the cluster.
    #[arg(long)]
    bootstrap_expect: Option<usize>,
    /// metrics.listen: Prometheus endpoint address.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// storage.engine: rocksdb or memory.
    #[arg(long)]
    engine: Option<String>,
    /// storage.sync: always, periodic or never.
    #[arg(long)]
    sync: Option<String>,
    /// log.level (a tracing filter such as info or ringkv_server=debug).
    #[arg(long)]
    log_level: Option<String>,
    /// log.format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make certificates for a local or test cluster: three CAs (ca,
    /// peer-ca, client-ca; kept if present), each node's client-port and
    /// peer certificates, and client certificates (docs/security.md).
    Cert {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// Node names (node.name), comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        node: Vec<String>,
        /// Extra DNS names or IP addresses of the client-port certificates.
        #[arg(long, value_delimiter = ',')]
        host: Vec<String>,
        /// Client certificate names, comma separated.
        #[arg(long, value_delimiter = ',')]
        client: Vec<String>,
    },
    /// Ask this node's gRPC health service how it is, for container health
    /// checks and exec probes. Reads the node's configuration (--config,
    /// RINGKV__… variables) and calls its peer port on loopback. Exits 0
    /// when the node is SERVING (with --live: when it answers at all), 1
    /// when it answered otherwise, 2 when it could not be asked.
    Health {
        /// The node's TOML configuration file, if it has one.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Liveness: succeed on any answer, NOT_SERVING included.
        #[arg(long)]
        live: bool,
        /// Peer address to call instead of the configured peer port.
        #[arg(long)]
        address: Option<String>,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

fn health(
    config: Option<&std::path::Path>,
    live: bool,
    address: Option<&str>,
    timeout_ms: u64,
) -> ExitCode {
    use ringkv_server::probe::{self, Probe};
    let config = match Config::load(config, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv-server health: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv-server health: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let target = probe::target(&config, address);
    let timeout = std::time::Duration::from_millis(timeout_ms);
    let answer = runtime.block_on(probe::check(&config, &target, timeout));
    let probe = if live { Probe::Live } else { Probe::Ready };
    match &answer {
        Ok(status) => println!("{target}: {}", status.as_str_name()),
        Err(e) => eprintln!("ringkv-server health: {e}"),
    }
    ExitCode::from(probe::exit_code(probe, &answer))
}

fn cert(dir: &std::path::Path, nodes: &[String], hosts: &[String], clients: &[String]) -> ExitCode {
    match ringkv_server::certs::make_local(dir, nodes, hosts, clients) {
        Ok(written) => {
            for file in written.files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkv-server cert: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push((key.to_string(), v));
            }
        };
        add("node.name", self.name.clone());
        add("node.listen", self.listen.clone());
        add("node.advertise", self.advertise.clone());
        add("node.peer_listen", self.peer_listen.clone());
        add("node.peer_advertise", self.peer_advertise.clone());
        add(
            "node.data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        add("metrics.listen", self.metrics_listen.clone());
        add(
            "cluster.bootstrap_expect",
            self.bootstrap_expect.map(|n| n.to_string()),
        );
        add("storage.engine", self.engine.clone());
        add("storage.sync", self.sync.clone());
        add("log.level", self.log_level.clone());
        add("log.format", self.log_format.clone());
        if !self.seeds.is_empty() {
            out.push(("cluster.seeds".to_string(), self.seeds.join(",")));
        }
        out
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match &args.command {
        Some(Command::Cert {
            dir,
            node,
            host,
            client,
        }) => return cert(dir, node, host, client),
        Some(Command::Health {
            config,
            live,
            address,
            timeout_ms,
        }) => return health(config.as_deref(), *live, address.as_deref(), *timeout_ms),
        None => {}
    }
    let config = match Config::load(args.config.as_deref(), &args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv-server: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match config.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.node.worker_threads > 0 {
        runtime.worker_threads(config.node.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ringkv_server::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ringkv-server: {e}");
            ExitCode::FAILURE
        }
    }
}
