//! The `rmcp-mux` command: parses arguments, sets up logging, calls the library and maps the
//! result to an exit code (0 ok, 1 failure, 2 usage or config error). The binaries in `src/bin/`
//! only call [`main`] and [`proxy::main`], so that every line of the commands is library code
//! the tests can reach.
//!
//! - [`health`]: `rmcp-mux health`, an MCP handshake and ping through a server's socket.
//! - [`proxy`]: `rmcp-mux-proxy`, whose arguments are parsed without clap to keep it small.

pub mod health;
pub mod proxy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{default_state_dir, find_control_socket, Config, ConfigError, Env, Selection};
use crate::daemon::control::{self, ReloadRefused, Request};
use crate::daemon::lifecycle::{self, Instance, LifecycleError, Paths, Probe};
use crate::daemon::logfile::{self, RotatingFile};
use crate::hosts::{self, HostError};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rmcp-mux",
    version,
    about = "Run each MCP server once and share it between every MCP host on the machine",
    after_help = "Without a subcommand, runs every server of the config in the foreground\n\
                  (`rmcp-mux daemon start` runs it in the background).\n\
                  Logs go to stderr (or --log-file; with --tui, to the config's log file);\n\
                  set RMCP_MUX_LOG (e.g. debug, rmcp_mux=trace) to change the level."
)]
struct Cli {
    /// The config file (default: $RMCP_MUX_CONFIG or ~/.rmcp-mux/mux.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    pick: Pick,
    /// Print the running daemon's status and exit (same as `rmcp-mux status`).
    #[arg(long, alias = "status")]
    show_status: bool,
    /// Restart one server of the running daemon and exit (same as `rmcp-mux restart NAME`).
    #[arg(long, value_name = "NAME")]
    restart_service: Option<String>,
    /// With --show-status: print JSON.
    #[arg(long)]
    json: bool,
    /// Log to this file (rotated at 5 MiB, 5 kept) instead of stderr; without a path, to the
    /// config's log file in the log folder (where `rmcp-mux logs` looks).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    log_file: Option<Option<PathBuf>>,
    /// Run the servers and a live dashboard of them in this terminal; `q` stops both. The
    /// log goes to the config's log file (or --log-file) meanwhile.
    #[arg(long, conflicts_with_all = ["show_status", "restart_service"])]
    tui: bool,
    /// Run the servers with the menu-bar app (macOS; on Linux, builds with `--features tray`).
    /// The log goes to the config's log file (or --log-file): a menu-bar app has no terminal.
    /// Inside rmcp-mux.app, running with no arguments means this.
    #[arg(long, conflicts_with_all = ["tui", "show_status", "restart_service"])]
    tray: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bridge stdio to a server's socket (what a host runs as its MCP server command).
    #[command(
        after_help = "After the handshake the host's stdin and stdout are handed to the daemon; \
                      RMCP_MUX_PROXY_COPY=1 keeps copying every line instead."
    )]
    Proxy {
        /// The server's socket.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// When nothing listens on the socket, start the daemon detached and wait for it.
        #[arg(long)]
        autostart: bool,
        /// With --autostart: the config the daemon runs.
        #[arg(long, value_name = "FILE", requires = "autostart")]
        config: Option<PathBuf>,
    },
    /// The background daemon: start (detached), stop, status, restart.
    Daemon {
        #[command(subcommand)]
        cmd: DaemonCmd,
    },
    /// Show the daemon's log (only NAME's lines when given); works without a running daemon.
    Logs {
        /// A server's name.
        name: Option<String>,
        /// Keep printing lines as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        /// The config whose daemon's log to show.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How many lines to show first.
        #[arg(short = 'n', value_name = "N", default_value_t = 100)]
        lines: usize,
    },
    /// Show every server of the running daemon.
    #[command(alias = "daemon-status")]
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// List the instances of servers shared per project or per client.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Restart one server, every instance of it (also clears a failed state).
    Restart(InstanceTarget),
    /// Stop one server, every instance of it; its clients get `server_unavailable` until it
    /// starts again.
    Stop(InstanceTarget),
    /// Start a stopped or failed server.
    Start(NamedTarget),
    /// Make the running daemon read its config again (as SIGHUP does) and print what changed.
    Reload(Target),
    /// A live terminal dashboard of the running daemon (keys: j/k move, r restart, s stop,
    /// S start, l log, q quit).
    Dashboard {
        #[command(flatten)]
        target: Target,
    },
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
    /// List every MCP server found in the known hosts' config files (env values masked).
    Scan {
        /// Only these hosts (repeatable; default: all).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Print JSON instead of a listing.
        #[arg(long)]
        json: bool,
        /// The project whose .mcp.json, .vscode/mcp.json, … are read (default: the current folder).
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
    },
    /// Add the hosts' stdio servers to mux.toml (deduplicated by command, args and env).
    Import {
        /// Only these hosts (repeatable; default: all).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// The mux config to add to (created when missing).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The project whose files are read (default: the current folder).
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
    },
    /// Point a host's entries at rmcp-mux-proxy for the servers the mux runs.
    Rewire {
        /// The host.
        #[arg(long, value_name = "NAME")]
        host: String,
        /// Print the diff and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The mux config whose servers (and sockets) are used.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The project whose files are rewired too (default: the current folder).
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
        /// How the host reaches the mux: `proxy` (a command, every host) or `http` (by URL
        /// through the daemon's `[daemon] http` front, no process per host).
        #[arg(long, value_name = "HOW", default_value = "proxy", value_parser = ["proxy", "http"])]
        via: String,
    },
    /// Put back the entries rewire changed in a host's files.
    Unwire {
        /// The host.
        #[arg(long, value_name = "NAME")]
        host: String,
        /// Only this project's files and the user's (default: every file rewire changed).
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DaemonCmd {
    /// Start the daemon detached; prints its PID once every socket is ready.
    Start {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        pick: Pick,
    },
    /// SIGTERM the daemon, SIGKILL after 10 s; removes its PID file.
    Stop {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Whether the daemon runs: PID, uptime, servers (exit 1 when not running).
    Status {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop, then start again with the same config and server selection.
    Restart {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Which servers of the config run: the foreground daemon, `--tui`, `--tray` and `daemon start`
/// take the same two flags.
#[derive(Args, Clone)]
struct Pick {
    /// Start only these servers (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// Start every server except these (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    except: Vec<String>,
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
struct InstanceTarget {
    /// The server's name.
    name: String,
    /// Only the instance of this project (a server with share = "project").
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

impl InstanceTarget {
    /// The request for the whole server, or for one project's instance.
    fn request(self, action: control::InstanceAction) -> Request {
        let server = self.name;
        match self.project {
            Some(dir) => Request::Instance {
                server,
                // As the proxy names it: absolute, symbolic links resolved.
                project: std::fs::canonicalize(&dir).unwrap_or(dir),
                action,
            },
            None => match action {
                control::InstanceAction::Restart => Request::Restart { server },
                control::InstanceAction::Stop => Request::Stop { server },
                control::InstanceAction::Start => Request::Start { server },
            },
        }
    }
}

#[derive(Args)]
struct NamedTarget {
    /// The server's name.
    name: String,
    #[command(flatten)]
    target: Target,
}

/// The runtime's worker threads for `RMCP_MUX_THREADS` (`None`: a current-thread runtime).
///
/// One unless it says otherwise. The daemon moves small lines between processes. With a worker
/// per core it spent the same CPU per answer under load, but a fifth of the two cores sat idle
/// between hand-offs (12-16 % with one worker), and 64 clients through the mux reached
/// 0.71-0.76x of direct stdio, against 0.76-0.85x with one worker (docs/performance.md,
/// "What each optimisation bought"). The multi-thread flavour even for one, so that the tray's event loop can own the main
/// thread while the worker drives the daemon: under `--tray`, `0` means one worker.
fn worker_threads(env: Option<&str>, tray: bool) -> Option<usize> {
    match env.and_then(|v| v.parse().ok()).unwrap_or(1) {
        0 if !tray => None,
        n => Some(n.max(1)),
    }
}

/// Runs `rmcp-mux` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    // First, while this is the only thread: a `daemon start` may be waiting on a pipe.
    lifecycle::take_ready_fd();
    // Inside rmcp-mux.app with no arguments the program is the app (`--tray`).
    let exe = std::env::current_exe().ok();
    let cli = Cli::parse_from(crate::tray::start::bundle_args(
        std::env::args_os().collect(),
        exe.as_deref(),
    ));
    if cli.tui && cli.command.is_some() {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tui runs the servers itself; it cannot be combined with a subcommand \
                 (use `rmcp-mux dashboard` for a running daemon)",
            )
            .exit();
    }
    let proxy = matches!(cli.command, Some(Cmd::Proxy { .. }));
    let dashboard = matches!(cli.command, Some(Cmd::Dashboard { .. }));
    let log_file = match &cli.log_file {
        // The daemon runs under the dashboard (its log must not draw over the screen) or the
        // menu-bar app (started from a bundle or at login, it has no terminal).
        None if (cli.tui || cli.tray) && cli.command.is_none() => {
            let config = cli.config.clone().unwrap_or_else(Config::default_path);
            if cli.tray {
                // First, so the log is named after the file as it will be found (a first launch
                // creates it from the template); a failure is reported by the app.
                let _ = crate::tray::start::ensure_config(&config);
            }
            match crate::dashboard::tui_log_file(&config) {
                Ok(path) => Some(path),
                Err(err) => return fail(&err),
            }
        }
        None => None,
        Some(Some(path)) => Some(path.clone()),
        Some(None) => {
            let config = cli.config.clone().unwrap_or_else(Config::default_path);
            match Paths::for_config(&config) {
                Ok(p) => Some(p.log_file),
                Err(err) => return fail(&err),
            }
        }
    };
    match log_file {
        Some(path) => {
            if let Err(err) = init_file_logging(&path) {
                return fail(&err);
            }
        }
        // The dashboard owns the terminal and logs nothing of its own.
        None if dashboard => {}
        None => init_logging(if proxy { "warn" } else { "info" }),
    }
    let tray_app = cli.tray && cli.command.is_none();
    let threads = std::env::var("RMCP_MUX_THREADS").ok();
    let mut builder = match worker_threads(threads.as_deref(), tray_app) {
        None => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut multi = tokio::runtime::Builder::new_multi_thread();
            multi.worker_threads(n);
            multi
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rmcp-mux: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = if tray_app {
        tray(runtime, &cli)
    } else {
        runtime.block_on(run(cli))
    };
    match result {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

/// Prints the error, tells a waiting `daemon start` (and the log) about it, and picks the
/// exit code: 2 for config errors (also a detached daemon's), 1 otherwise.
fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("rmcp-mux: {err:#}");
    let config = err.chain().any(|e| {
        e.downcast_ref::<ConfigError>().is_some()
            || e.downcast_ref::<ReloadRefused>().is_some()
            || matches!(e.downcast_ref(), Some(HostError::UnknownHost { .. }))
    });
    let child = err.chain().find_map(|e| match e.downcast_ref() {
        Some(LifecycleError::ChildFailed { code, .. }) => Some(*code),
        _ => None,
    });
    let code = child.unwrap_or(if config { 2 } else { 1 });
    if logfile::active().is_some() {
        tracing::error!("{err:#}");
    }
    lifecycle::notify_failed(code, &format!("{err:#}"));
    ExitCode::from(code)
}

/// Logs into a size-capped rotating file, without colours; the daemon's stderr may be
/// /dev/null, so this is where its errors end up.
fn init_file_logging(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        lifecycle::private_dir(dir)?;
    }
    let file = RotatingFile::open(path, logfile::DEFAULT_MAX_BYTES, logfile::DEFAULT_KEEP)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RMCP_MUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
    logfile::set_active(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()));
    // A detached daemon's stderr is /dev/null: put a panic where `rmcp-mux logs` shows it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        default_hook(info);
    }));
    Ok(())
}

/// The one-daemon-per-config lock that the foreground daemon, `--tui` and `--tray` all take
/// before running servers; held until it is dropped.
fn lock(cfg: &Config, pick: &Pick) -> anyhow::Result<Instance> {
    Instance::acquire(&Paths::for_config(&cfg.path)?, &pick.only, &pick.except)
}

/// `--tray`: the mux and the menu-bar app in this process; returns only on a startup error.
#[cfg(any(feature = "tray", target_os = "macos"))]
fn tray(runtime: tokio::runtime::Runtime, cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.clone().unwrap_or_else(Config::default_path);
    match crate::tray::app::main(runtime, &config, &cli.pick.only, &cli.pick.except)? {}
}

#[cfg(not(any(feature = "tray", target_os = "macos")))]
fn tray(_runtime: tokio::runtime::Runtime, _cli: &Cli) -> anyhow::Result<ExitCode> {
    eprintln!(
        "rmcp-mux: this build has no menu-bar app; build with `cargo build --features tray` \
         (needs libgtk-3-dev and libayatana-appindicator3-dev)"
    );
    Ok(ExitCode::from(2))
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
        Some(Cmd::Proxy {
            socket,
            autostart,
            config,
        }) => {
            let socket = crate::config::expand_home(&socket);
            if autostart {
                let config =
                    config.map_or_else(Config::default_path, |c| crate::config::expand_home(&c));
                let s = socket.clone();
                tokio::task::spawn_blocking(move || {
                    lifecycle::autostart(&s, &config, lifecycle::AUTOSTART_TIMEOUT)
                })
                .await??;
            }
            crate::proxy::run(crate::proxy::ProxyOptions::new(socket)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Daemon { cmd }) => tokio::task::spawn_blocking(move || daemon(cmd)).await?,
        Some(Cmd::Logs {
            name,
            follow,
            config,
            lines,
        }) => tokio::task::spawn_blocking(move || logs(config, name, follow, lines)).await?,
        Some(Cmd::Status {
            target,
            json,
            verbose,
        }) => status(&target, json, verbose).await,
        Some(Cmd::Restart(t)) => {
            let target = t.target.clone();
            command(&target, t.request(control::InstanceAction::Restart)).await
        }
        Some(Cmd::Stop(t)) => {
            let target = t.target.clone();
            command(&target, t.request(control::InstanceAction::Stop)).await
        }
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
        Some(Cmd::Dashboard { target }) => {
            let options = crate::dashboard::Options {
                control_socket: control_socket(&target)?,
            };
            crate::dashboard::run(options, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
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
            let took = crate::cli::health::check(&socket, Duration::from_millis(timeout_ms))
                .await
                .with_context(|| format!("{name} is not healthy"))?;
            println!("ok: {name} answered in {} ms", took.as_millis());
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Scan {
            hosts,
            json,
            project,
        }) => scan(&hosts, json, project),
        Some(Cmd::Import {
            hosts,
            config,
            project,
        }) => import(&hosts, config.or(cli.config), project),
        Some(Cmd::Rewire {
            host,
            dry_run,
            config,
            project,
            via,
        }) => rewire(
            &host,
            dry_run,
            config.or(cli.config).as_deref(),
            project,
            via == "http",
        ),
        Some(Cmd::Unwire { host, project }) => unwire(&host, project),
        None if cli.show_status => status(&legacy_target, cli.json, false).await,
        None if cli.restart_service.is_some() => {
            let server = cli.restart_service.unwrap_or_default();
            command(&legacy_target, Request::Restart { server }).await
        }
        None if cli.tui => {
            let cfg = load(cli.config.as_deref())?;
            let servers = cfg.select(&cli.pick.only, &cli.pick.except)?;
            // The same one-daemon-per-config lock as the foreground daemon below.
            let instance = lock(&cfg, &cli.pick)?;
            crate::dashboard::run_with_daemon(&cfg, servers, stop_signal(true)).await?;
            drop(instance);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let cfg = load(cli.config.as_deref())?;
            let selection = Selection {
                only: cli.pick.only.clone(),
                except: cli.pick.except.clone(),
            };
            // Refuse an unknown name before taking the lock.
            cfg.select_by(&selection)?;
            // Started by launchd or a GUI host's proxy: the servers get the user's PATH.
            if crate::daemon::login_path::wanted(false, std::env::var_os("PATH").as_deref()) {
                crate::daemon::login_path::adopt(
                    crate::daemon::login_path::login_shell().as_deref(),
                );
            }
            // One daemon per config, held until the daemon has stopped everything.
            let instance = lock(&cfg, &cli.pick)?;
            crate::daemon::run_selected(&cfg, selection, shutdown_signal()).await?;
            drop(instance);
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

async fn status(target: &Target, json: bool, verbose: bool) -> anyhow::Result<ExitCode> {
    let socket = control_socket(target)?;
    let response = control::request(&socket, &Request::Status).await?;
    let status = response
        .status
        .context("the daemon answered without a status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!(
            "{}",
            crate::status::table::render_table_with(&status, verbose)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn command(target: &Target, req: Request) -> anyhow::Result<ExitCode> {
    let socket = control_socket(target)?;
    let what = match &req {
        Request::Restart { server } => format!("restarting {server}"),
        Request::Stop { server } => format!("stopping {server}"),
        Request::Start { server } => format!("starting {server}"),
        Request::Instance {
            server,
            project,
            action,
        } => format!(
            "{} {server} in {}",
            match action {
                control::InstanceAction::Restart => "restarting",
                control::InstanceAction::Stop => "stopping",
                control::InstanceAction::Start => "starting",
            },
            project.display()
        ),
        Request::Status | Request::Reload => String::new(),
    };
    control::request(&socket, &req).await?;
    println!("{what}");
    Ok(ExitCode::SUCCESS)
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The host paths, with the project folder (default: the current one).
fn host_paths(project: Option<PathBuf>) -> hosts::Paths {
    let project = project.or_else(|| std::env::current_dir().ok());
    hosts::Paths::from_env(project)
}

fn scan(names: &[String], json: bool, project: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let list = hosts::hosts_from_names(names)?;
    let entries = hosts::scan(&list, &host_paths(project))?;
    if json {
        let items: Vec<hosts::ScanItem> = entries.iter().map(hosts::ScanItem::from).collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        print!("{}", hosts::render_scan(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

fn import(
    names: &[String],
    config: Option<PathBuf>,
    project: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let list = hosts::hosts_from_names(names)?;
    let path = config.unwrap_or_else(Config::default_path);
    let report = hosts::import::run(&path, &list, &host_paths(project)).map_err(|e| match e {
        hosts::import::ImportError::Config(e) => anyhow::Error::from(e),
        hosts::import::ImportError::Host(e) => anyhow::Error::from(e),
    })?;
    for line in report.notes.iter().chain(&report.added) {
        println!("{line}");
    }
    if report.added.is_empty() {
        println!("nothing to add to {}", report.config.display());
    } else {
        println!(
            "{} added to {}; start the daemon with `rmcp-mux --config {}`, then `rmcp-mux rewire --host NAME`",
            count(report.added.len(), "server", "servers"),
            report.config.display(),
            report.config.display()
        );
    }
    if let Some(hint) = &report.http_hint {
        println!("{hint}");
    }
    Ok(ExitCode::SUCCESS)
}

fn rewire(
    name: &str,
    dry_run: bool,
    config: Option<&Path>,
    project: Option<PathBuf>,
    by_url: bool,
) -> anyhow::Result<ExitCode> {
    let host = hosts::Host::from_name(name)?;
    let path = config.map_or_else(Config::default_path, Path::to_path_buf);
    let want = if by_url {
        hosts::connect::Want::Http
    } else {
        hosts::connect::Want::Proxy
    };
    let hosts::connect::Connected { report, cfg, .. } = hosts::connect::connect(
        host,
        &host_paths(project),
        &path,
        want,
        &default_state_dir(),
        dry_run,
    )?;
    for line in &report.lines {
        println!("{line}");
    }
    for diff in &report.diffs {
        print!("{diff}");
    }
    if report.lines.is_empty() {
        println!("no {host} config found");
    } else if dry_run {
        println!(
            "dry run: {} would change; nothing written",
            count(report.changed, "entry", "entries")
        );
    } else if report.changed == 0 {
        println!("nothing changed");
    } else {
        println!(
            "{} rewired; `rmcp-mux unwire --host {host}` puts them back",
            count(report.changed, "entry", "entries")
        );
        if by_url && !cfg.daemon.control_socket.exists() {
            println!(
                "note: the daemon is not running, and a URL starts nothing: start it now (`rmcp-mux daemon start --config {}`) and keep it running (the menu-bar app or a login service)",
                cfg.path.display()
            );
        } else if !cfg.daemon.control_socket.exists() {
            println!(
                "note: the daemon is not running; {host} starts it when it next starts these servers (the proxy's --autostart), or start it now: `rmcp-mux daemon start --config {}`",
                cfg.path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn unwire(name: &str, project: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let host = hosts::Host::from_name(name)?;
    let report =
        hosts::rewire::unwire(host, &hosts::Paths::from_env(project), &default_state_dir())?;
    for line in &report.lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM. (SIGHUP reloads the config instead; `daemon::run_selected` handles it.)
async fn shutdown_signal() {
    stop_signal(false).await
}

/// SIGINT or SIGTERM; with `hangup`, SIGHUP too. `--tui` stops on SIGHUP because it means its
/// terminal closed: nobody is left to see the dashboard, and dying of the signal's default
/// action would orphan the servers and leave their sockets. (A plain daemon reloads instead.)
async fn stop_signal(hangup: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let mut hup = if hangup {
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        }
    } else {
        None
    };
    let hung_up = async {
        match hup.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        () = hung_up => tracing::info!("SIGHUP received (the terminal closed); stopping"),
    }
}

fn config_or_default(config: Option<PathBuf>) -> PathBuf {
    config.unwrap_or_else(Config::default_path)
}

/// `rmcp-mux daemon ...` (blocking: signals, locks and a pipe, no async work).
fn daemon(cmd: DaemonCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DaemonCmd::Start { config, pick } => {
            start(&config_or_default(config), &pick.only, &pick.except)
        }
        DaemonCmd::Stop { config } => {
            let (pid, notes) = lifecycle::stop(&config_or_default(config))?;
            for note in notes {
                eprintln!("rmcp-mux: {note}");
            }
            println!("stopped (PID {pid})");
            Ok(ExitCode::SUCCESS)
        }
        DaemonCmd::Status { config, json } => daemon_status(&config_or_default(config), json),
        DaemonCmd::Restart { config } => {
            let config = config_or_default(config);
            let paths = Paths::for_config(&config)?;
            // The running daemon's selection, read before its PID file goes away.
            let selection = match lifecycle::probe(&paths)? {
                Probe::Running(Some(info)) => Some((info.only, info.except)),
                _ => None,
            };
            match lifecycle::stop(&config) {
                Ok((pid, notes)) => {
                    for note in notes {
                        eprintln!("rmcp-mux: {note}");
                    }
                    println!("stopped (PID {pid})");
                }
                Err(e) if is_not_running(&e) => eprintln!("rmcp-mux: was not running; starting"),
                Err(e) => return Err(e),
            }
            let (only, except) = selection.unwrap_or_default();
            start(&config, &only, &except)
        }
    }
}

fn is_not_running(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<LifecycleError>(),
            Some(LifecycleError::NotRunning { .. })
        )
    })
}

fn start(config: &Path, only: &[String], except: &[String]) -> anyhow::Result<ExitCode> {
    let started = lifecycle::start_detached(config, only, except)?;
    for note in &started.notes {
        eprintln!("rmcp-mux: {note}");
    }
    println!("started (PID {})", started.pid);
    Ok(ExitCode::SUCCESS)
}

fn daemon_status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let paths = Paths::for_config(config)?;
    let info = match lifecycle::probe(&paths)? {
        Probe::Running(info) => info,
        Probe::NotRunning { stale } => {
            if let Some(pid) = stale {
                eprintln!("rmcp-mux: removed a stale PID file (PID {pid} held no lock)");
            }
            return Err(LifecycleError::NotRunning {
                config: paths.config,
            }
            .into());
        }
    };
    let pid = info.map_or_else(|| "unknown".to_owned(), |i| i.pid.to_string());
    // Found leniently: a daemon whose config was just broken runs on and shows the error.
    let socket = control_socket(&Target {
        config: Some(paths.config.clone()),
        control_socket: None,
    })?;
    // On a blocking-pool thread of the CLI's runtime, so its handle may block on this.
    let answer =
        tokio::runtime::Handle::current().block_on(control::request(&socket, &Request::Status));
    let status = match answer.map(|r| r.status) {
        Ok(Some(status)) => status,
        Ok(None) => anyhow::bail!("the daemon (PID {pid}) answered without a status"),
        Err(e) => {
            return Err(e.context(format!(
                "running (PID {pid}) but its control socket did not answer"
            )))
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "running (PID {}), up {}",
        status.pid,
        crate::status::table::human_duration(status.uptime_ms)
    );
    println!("config: {}", status.config.display());
    if let Some(log) = &status.log_file {
        println!("log: {}", log.display());
    }
    print!("{}", crate::status::table::render_table(&status));
    Ok(ExitCode::SUCCESS)
}

/// `rmcp-mux logs`: the log file is found from the config alone, daemon or not.
fn logs(
    config: Option<PathBuf>,
    name: Option<String>,
    follow: bool,
    lines: usize,
) -> anyhow::Result<ExitCode> {
    let paths = Paths::for_config(&config_or_default(config))?;
    let path = &paths.log_file;
    let (shown, position) = logfile::tail_at(path, name.as_deref(), lines).with_context(|| {
        format!(
            "no log for {} yet (the detached daemon writes {})",
            paths.config.display(),
            path.display()
        )
    })?;
    let mut out = std::io::stdout().lock();
    for line in shown {
        if writeln!(out, "{line}").is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let _ = out.flush();
    if follow {
        logfile::follow(path, Some(position), name.as_deref(), &mut out, None)
            .with_context(|| format!("cannot follow {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn one_worker_unless_rmcp_mux_threads_says_otherwise() {
        assert_eq!(worker_threads(None, false), Some(1));
        assert_eq!(worker_threads(None, true), Some(1));
        assert_eq!(worker_threads(Some("3"), false), Some(3));
        assert_eq!(worker_threads(Some("0"), false), None);
        // The tray's loop owns the main thread: a current-thread runtime would never run.
        assert_eq!(worker_threads(Some("0"), true), Some(1));
        assert_eq!(worker_threads(Some("many"), false), Some(1));
    }
}
