//! `rmcp-mux-proxy`: what an MCP host runs as a server's command. Bridges its stdio to the
//! server's socket; all the work is in `rmcp_mux::proxy`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rmcp-mux-proxy",
    version,
    about = "Bridge stdio to an rmcp-mux server socket (use it as the host's MCP server command)"
)]
struct Cli {
    /// The server's socket, e.g. ~/.rmcp-mux/sockets/memory.sock.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// When nothing listens on the socket, start the daemon detached (`rmcp-mux daemon
    /// start`, found next to this program or on PATH) and wait up to 20 s for it.
    #[arg(long)]
    autostart: bool,
    /// With --autostart: the config the daemon runs (default: $RMCP_MUX_CONFIG or
    /// ~/.rmcp-mux/mux.toml).
    #[arg(long, value_name = "FILE", requires = "autostart")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RMCP_MUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rmcp-mux-proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let socket = rmcp_mux::config::expand_home(&cli.socket);
    if cli.autostart {
        let config = cli
            .config
            .map(|c| rmcp_mux::config::expand_home(&c))
            .unwrap_or_else(rmcp_mux::config::Config::default_path);
        if let Err(err) =
            rmcp_mux::lifecycle::autostart(&socket, &config, rmcp_mux::lifecycle::AUTOSTART_TIMEOUT)
        {
            eprintln!("rmcp-mux-proxy: {err:#}");
            return ExitCode::from(1);
        }
    }
    match runtime.block_on(rmcp_mux::proxy::run(rmcp_mux::proxy::ProxyOptions::new(
        socket,
    ))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rmcp-mux-proxy: {err:#}");
            ExitCode::from(1)
        }
    }
}
