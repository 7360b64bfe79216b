//! The `rmcp-mux` command: parses arguments, sets up logging, calls the library and maps the
//! result to an exit code (0 ok, 1 failure, 2 usage or config error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rmcp_mux::config::{
    default_state_dir, find_control_socket, Config, ConfigError, Env, Selection,
};
use rmcp_mux::control::{self, ReloadRefused, Request};

#[derive(Parser)]
#[command(
    name = "rmcp-mux",
    version,
    about = "Run each MCP server once and share it between every MCP host on the machine",
    after_help = "Without a subcommand, runs every server of the config in the foreground.\n\
                  Logs go to stderr; set RMCP_MUX_LOG (e.g. debug, rmcp_mux=trace) to change the level."
)]
struct Cli {
    /// The config file (default: $RMCP_MUX_CONFIG or ~/.rmcp-mux/mux.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Start only these servers (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// Start every server except these (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    except: Vec<String>,
    /// Print the running daemon's status and exit (same as `rmcp-mux status`).
    #[arg(long, alias = "status")]
    show_status: bool,
    /// Restart one server of the running daemon and exit (same as `rmcp-mux restart NAME`).
    #[arg(long, value_name = "NAME")]
    restart_service: Option<String>,
    /// With --show-status: print JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bridge stdio to a server's socket (what a host runs as its MCP server command).
    Proxy {
        /// The server's socket.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Show every server of the running daemon.
    #[command(alias = "daemon-status")]
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restart one server (also clears a failed state).
    Restart(NamedTarget),
    /// Stop one server; its clients get `server_unavailable` until it starts again.
    Stop(NamedTarget),
    /// Start a stopped or failed server.
    Start(NamedTarget),
    /// Make the running daemon read its config again (as SIGHUP does) and print what changed.
    Reload(Target),
    /// Exit 0 when a server answers an MCP handshake and ping through its socket.
    Health {
        /// The server's socket.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["config", "service"])]
        socket: Option<PathBuf>,
        /// The config file that names the server.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The server's name in the config.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// How long to wait for the answers.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        timeout_ms: u64,
    },
}

/// Which daemon a control command talks to.
#[derive(Args, Clone)]
struct Target {
    /// The config the daemon runs (its control socket is read from it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's control socket, directly.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    control_socket: Option<PathBuf>,
}

#[derive(Args)]
struct NamedTarget {
    /// The server's name.
    name: String,
    #[command(flatten)]
    target: Target,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let proxy = matches!(cli.command, Some(Cmd::Proxy { .. }));
    init_logging(if proxy { "warn" } else { "info" });
    // RMCP_MUX_THREADS sets the worker count (default: tokio's, one per core).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("RMCP_MUX_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rmcp-mux: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rmcp-mux: {err:#}");
            let config = err.chain().any(|e| {
                e.downcast_ref::<ConfigError>().is_some()
                    || e.downcast_ref::<ReloadRefused>().is_some()
            });
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RMCP_MUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let legacy_target = Target {
        config: cli.config.clone(),
        control_socket: None,
    };
    match cli.command {
        Some(Cmd::Proxy { socket }) => {
            rmcp_mux::proxy::run(rmcp_mux::proxy::ProxyOptions::new(socket)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Status { target, json }) => status(&target, json).await,
        Some(Cmd::Restart(t)) => command(&t.target, Request::Restart { server: t.name }).await,
        Some(Cmd::Stop(t)) => command(&t.target, Request::Stop { server: t.name }).await,
        Some(Cmd::Start(t)) => command(&t.target, Request::Start { server: t.name }).await,
        Some(Cmd::Reload(target)) => {
            let socket = control_socket(&target)?;
            let report = control::reload(&socket).await?;
            print!("{}", report.render());
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Cmd::Health {
            socket,
            config,
            service,
            timeout_ms,
        }) => {
            let (socket, name) = match (socket, service) {
                (Some(s), _) => (s.clone(), s.display().to_string()),
                (None, Some(service)) => {
                    let cfg = load(config.as_deref())?;
                    (cfg.server(&service)?.socket.clone(), service)
                }
                (None, None) => anyhow::bail!("health needs --socket PATH or --service NAME"),
            };
            let took = rmcp_mux::health::check(&socket, Duration::from_millis(timeout_ms))
                .await
                .with_context(|| format!("{name} is not healthy"))?;
            println!("ok: {name} answered in {} ms", took.as_millis());
            Ok(ExitCode::SUCCESS)
        }
        None if cli.show_status => status(&legacy_target, cli.json).await,
        None if cli.restart_service.is_some() => {
            let server = cli.restart_service.unwrap_or_default();
            command(&legacy_target, Request::Restart { server }).await
        }
        None => {
            let cfg = load(cli.config.as_deref())?;
            let selection = Selection {
                only: cli.only,
                except: cli.except,
            };
            rmcp_mux::daemon::run_selected(&cfg, selection, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let path = path.map_or_else(Config::default_path, Path::to_path_buf);
    Ok(Config::load(&path)?)
}

/// The control socket of the daemon a command is meant for. A config that does not load
/// still names its daemon's socket (read leniently): the daemon is running the previous good
/// config and `status` / `reload` must reach it to show the error.
fn control_socket(target: &Target) -> anyhow::Result<PathBuf> {
    if let Some(p) = &target.control_socket {
        return Ok(p.clone());
    }
    let path = match &target.config {
        Some(path) => path.clone(),
        None => {
            let path = Config::default_path();
            if !path.exists() {
                return Ok(default_state_dir().join("control.sock"));
            }
            path
        }
    };
    match Config::load(&path) {
        Ok(cfg) => Ok(cfg.daemon.control_socket),
        Err(err @ ConfigError::Read { .. }) => Err(err.into()),
        Err(_) => {
            // Readable but invalid: find the socket leniently.
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            Ok(find_control_socket(&text, &path, &Env::from_process()))
        }
    }
}

async fn status(target: &Target, json: bool) -> anyhow::Result<ExitCode> {
    let socket = control_socket(target)?;
    let response = control::request(&socket, &Request::Status).await?;
    let status = response
        .status
        .context("the daemon answered without a status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", rmcp_mux::status::render_table(&status));
    }
    Ok(ExitCode::SUCCESS)
}

async fn command(target: &Target, req: Request) -> anyhow::Result<ExitCode> {
    let socket = control_socket(target)?;
    let what = match &req {
        Request::Restart { server } => format!("restarting {server}"),
        Request::Stop { server } => format!("stopping {server}"),
        Request::Start { server } => format!("starting {server}"),
        Request::Status | Request::Reload => String::new(),
    };
    control::request(&socket, &req).await?;
    println!("{what}");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM. (SIGHUP reloads the config instead; `daemon::run_selected` handles it.)
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
