//! `wid`: Workload Identity for any Kubernetes cluster and for a laptop.
//!
//! This file only parses arguments, resolves them into each component's settings, and runs the
//! component; everything else lives in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use wid_runtime::logging::{self, LogFormat};

mod allocator;
mod dev;
mod google_setup;
mod node;
#[cfg(test)]
mod tidy;

#[derive(Parser, Debug)]
#[command(
    name = "wid",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WID_SOURCE_COMMIT"), ")"),
    about = "Workload Identity, as GKE has it, for any Kubernetes cluster and for a laptop"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The token service and its admin CLI, shaped like `gcloud iam`.
    Iam(IamArgs),
    /// The node agent: the GKE metadata server.
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// The token service and the metadata server in one process on loopback, bootstrapped for
    /// a laptop or CI; prints the lines to paste for Google's clients.
    #[command(long_about = dev::LONG_ABOUT)]
    Dev(dev::DevArgs),
    /// Print a completion script for a shell, e.g. `wid completion bash > ~/.local/share/bash-completion/completions/wid`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum MetadataCommand {
    /// Run the metadata server for the pods of this node.
    Serve(Box<node::MetadataServeArgs>),
    /// Print the gcloud commands that let this cluster's pods reach Google Cloud through
    /// Workload Identity Federation (a pool, the cluster's issuer as its OIDC provider, a
    /// binding for one KSA), and the agent's flags for it.
    #[command(name = "google-setup")]
    GoogleSetup(Box<google_setup::GoogleSetupArgs>),
}

#[derive(Args, Debug)]
struct IamArgs {
    #[command(subcommand)]
    command: IamCommand,
}

#[derive(Subcommand, Debug)]
enum IamCommand {
    /// Run the token service: Google's IAM API at Google's paths, on an embedded store.
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(wid_cli::AdminCommand),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// How a long-running command logs (to standard error).
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: text for people (coloured on a terminal unless NO_COLOR is set), json for
    /// collectors.
    #[arg(long, value_enum, env = "WID_LOG_FORMAT", default_value = "text")]
    log_format: LogFormatArg,
    /// Log filter: a level (error, warn, info, debug) or per-module directives, e.g.
    /// `warn,wid::audit=info`.
    #[arg(long, env = "WID_LOG", default_value = "info")]
    log: String,
}

impl LogArgs {
    fn init(&self) {
        let format = match self.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
        logging::init(format, &self.log);
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WID_ADDR", default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Directory of the database and the bootstrap admin token (created with mode 0700)
    /// [default: $XDG_DATA_HOME/wid or ~/.local/share/wid].
    #[arg(long, env = "WID_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    /// Seconds between fetches of keys that come from OIDC discovery.
    #[arg(long, env = "WID_JWKS_REFRESH_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    jwks_refresh_seconds: u64,
    /// The issuer of the tokens this service signs (the `iss` claim, and the base of its OIDC
    /// discovery document) [default: http://ADDR as bound].
    #[arg(long, env = "WID_ISSUER")]
    issuer: Option<String>,
    /// Seconds each OIDC discovery request may take.
    #[arg(long, env = "WID_DISCOVERY_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    discovery_timeout_seconds: u64,
    /// How long audit records are kept: a number and a unit, s, m, h or d (e.g. 90d, 12h).
    #[arg(long, env = "WID_AUDIT_RETENTION", default_value = "30d", value_parser = parse_retention)]
    audit_retention: Duration,
    /// An admin listener with /healthz and Prometheus /metrics (no credentials: bind it where
    /// only the scraper reaches).
    #[arg(long, env = "WID_ADMIN_ADDR")]
    admin_addr: Option<std::net::SocketAddr>,
    /// HTTPS: the certificate chain (PEM), read again when the file changes (cert-manager
    /// renews it in place); HTTP/2 and HTTP/1.1 by ALPN.
    #[arg(long, env = "WID_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WID_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback's (tokens then cross the network in
    /// clear): without it, and without --tls-cert, the service refuses to start there.
    #[arg(long, env = "WID_INSECURE_LISTEN")]
    insecure_listen: bool,
    /// A PostgreSQL database shared by several replicas of the service
    /// (postgres://USER[:PASSWORD]@HOST:PORT/DB, libpq's query parameters allowed: sslmode,
    /// sslrootcert, host=/socket/dir); migrated at start. Default: SQLite in --data-dir.
    #[arg(
        long,
        env = "WID_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// The bootstrap admin secret's file (a Kubernetes Secret's, say), made there (mode 0600)
    /// if missing. Default: admin-token in --data-dir.
    #[arg(long, env = "WID_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

/// `90d`, `12h`, `30m` or `3600s`: at least a minute, at most ten years.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let shape = || {
        format!("'{text}' is not a retention: give a number and a unit, s, m, h or d (e.g. 30d)")
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(shape)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| shape())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(shape()),
    };
    let seconds = number.checked_mul(unit).ok_or_else(shape)?;
    if !(60..=10 * 365 * 86_400).contains(&seconds) {
        return Err(format!(
            "'{text}': the retention must be between 1 minute and 10 years"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// `$XDG_DATA_HOME/wid`, else `~/.local/share/wid`, else `./wid-data`.
fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("wid");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/wid"),
        None => PathBuf::from("wid-data"),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = wid_token_service::Config {
        addr: args.addr,
        data_dir: args.data_dir.unwrap_or_else(default_data_dir),
        jwks_refresh_interval: Duration::from_secs(args.jwks_refresh_seconds),
        discovery_timeout: Duration::from_secs(args.discovery_timeout_seconds),
        issuer: args.issuer,
        audit_retention: args.audit_retention,
        admin_addr: args.admin_addr,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| wid_runtime::tls::TlsFiles { cert, key }),
        insecure_listen: args.insecure_listen,
        database: args.database,
        admin_token_file: args.admin_token_file,
    };
    let service = wid_token_service::TokenService::start(config)
        .await
        .map_err(|e| wid_cli::report::if_in_use(e.into(), "--addr"))?;
    service.serve(wid_runtime::serve::shutdown_signal()).await?;
    tracing::info!("token service stopped");
    Ok(())
}

async fn admin(command: wid_cli::AdminCommand) -> anyhow::Result<()> {
    let default_token = std::env::var_os("WID_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_data_dir)
        .join(wid_token_service::ADMIN_TOKEN_FILE);
    let default_token = default_token.is_file().then_some(default_token);
    wid_cli::run(command, default_token).await
}

/// How many threads a command's runtime has.
enum Threads {
    One,
    PerCore,
}

/// Runs `work` on a runtime of its own and turns its outcome into the exit code, printing a
/// failure once, with what to try.
fn run(threads: Threads, work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", wid_cli::report::render(&e));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Metadata(MetadataCommand::Serve(args)) => {
            args.log.init();
            run(
                Threads::PerCore,
                node::metadata_serve(*args, default_data_dir().join("dev")),
            )
        }
        Command::Metadata(MetadataCommand::GoogleSetup(args)) => {
            run(Threads::One, google_setup::google_setup(*args))
        }
        Command::Dev(args) => {
            args.log.init();
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| default_data_dir().join("dev"));
            run(Threads::PerCore, async {
                node::raise_open_files();
                let config = dev::settings(args, data_dir)?;
                wid_dev::run(config, wid_runtime::serve::shutdown_signal()).await
            })
        }
        Command::Iam(IamArgs {
            command: IamCommand::Serve(args),
        }) => {
            args.log.init();
            run(Threads::PerCore, serve(args))
        }
        Command::Iam(IamArgs {
            command: IamCommand::Admin(command),
        }) => run(Threads::One, admin(command)),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "wid", &mut script);
            wid_cli::output::emit(&String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "wid", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
