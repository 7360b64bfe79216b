//! `rmcp-mux-proxy`: what an MCP host runs as a server's command. Bridges its stdio to the
//! server's socket; all the work is in `crate::proxy`.
//!
//! One proxy runs per host session, so its memory counts many times over (DESIGN.md,
//! "Performance": RSS ≤ 2.5 MB). It therefore parses its three flags with `lexopt` instead of
//! clap (clap was a tenth of the binary's code), and takes a plain log level instead of tracing-subscriber's `EnvFilter` (whose regex
//! engine was a fifth of the binary's code). It must accept exactly what `rmcp-mux proxy`
//! accepts, exit with the same codes (0 ok, 1 failure, 2 usage error) and write nothing but the
//! protocol to stdout.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing::level_filters::LevelFilter;

const USAGE: &str = "Usage: rmcp-mux-proxy --socket <PATH> [--autostart] [--config <FILE>]";

const HELP: &str = "\
Bridge stdio to an rmcp-mux server socket (use it as the host's MCP server command)

Usage: rmcp-mux-proxy --socket <PATH> [--autostart] [--config <FILE>]

Options:
      --socket <PATH>  The server's socket, e.g. ~/.rmcp-mux/sockets/memory.sock
      --autostart      When nothing listens on the socket, start the daemon detached (`rmcp-mux
                       daemon start`, found next to this program or on PATH; inside rmcp-mux.app,
                       the app itself) and wait up to 20 s for it
      --config <FILE>  With --autostart: the config the daemon runs (default: $RMCP_MUX_CONFIG
                       or ~/.rmcp-mux/mux.toml)
  -h, --help           Print help
  -V, --version        Print version

Logs go to stderr; RMCP_MUX_LOG sets the level (error, warn, info, debug, trace; default warn).
After the handshake the host's stdin and stdout are handed to the daemon; RMCP_MUX_PROXY_COPY=1
keeps copying every line instead.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Run {
        socket: PathBuf,
        autostart: bool,
        config: Option<PathBuf>,
    },
    Help,
    Version,
}

/// Parses the arguments after the program name; the error is the message for stderr.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    use lexopt::Arg::{Long, Short};
    let mut socket: Option<PathBuf> = None;
    let mut autostart = false;
    let mut config: Option<PathBuf> = None;
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        };
        let (slot, flag) = match arg {
            Short('h') | Long("help") => return Ok(Cli::Help),
            Short('V') | Long("version") => return Ok(Cli::Version),
            Long("autostart") => {
                if parser.optional_value().is_some() {
                    return Err("unexpected value for '--autostart'".to_owned());
                }
                if autostart {
                    return Err("the argument '--autostart' cannot be used multiple times".into());
                }
                autostart = true;
                continue;
            }
            Long("socket") => (&mut socket, "--socket <PATH>"),
            Long("config") => (&mut config, "--config <FILE>"),
            Long(other) => return Err(format!("unexpected argument '--{other}'")),
            Short(other) => return Err(format!("unexpected argument '-{other}'")),
            lexopt::Arg::Value(v) => {
                return Err(format!("unexpected argument '{}'", v.to_string_lossy()))
            }
        };
        if slot.is_some() {
            return Err(format!(
                "the argument '{flag}' cannot be used multiple times"
            ));
        }
        match parser.value() {
            Ok(v) if !v.is_empty() => *slot = Some(PathBuf::from(v)),
            _ => return Err(format!("a value is required for '{flag}'")),
        }
    }
    let Some(socket) = socket else {
        return Err(
            "the following required arguments were not provided:\n  --socket <PATH>".into(),
        );
    };
    if config.is_some() && !autostart {
        return Err(
            "the following required arguments were not provided:\n  --autostart".to_owned(),
        );
    }
    Ok(Cli::Run {
        socket,
        autostart,
        config,
    })
}

/// The level RMCP_MUX_LOG asks for. The daemon takes any `tracing` filter there; the proxy
/// takes the most verbose level named in it (so `debug` and `rmcp_mux=debug` both mean debug),
/// and warn when it names none.
fn log_level(value: Option<&str>) -> LevelFilter {
    let named = value
        .unwrap_or("")
        .split(',')
        .filter_map(|directive| {
            let level = directive
                .rsplit_once('=')
                .map_or(directive, |(_, l)| l)
                .trim();
            // (tracing reads "" as error; a bare target names no level.)
            (!level.is_empty())
                .then(|| level.parse::<LevelFilter>().ok())
                .flatten()
        })
        .max();
    named.unwrap_or(LevelFilter::WARN)
}

/// Runs `rmcp-mux-proxy` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let (socket, autostart, config) = match parse(std::env::args_os().skip(1)) {
        Ok(Cli::Run {
            socket,
            autostart,
            config,
        }) => (socket, autostart, config),
        Ok(Cli::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Version) => {
            println!("rmcp-mux-proxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("error: {msg}\n\n{USAGE}\n\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
    let level = log_level(std::env::var("RMCP_MUX_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        .with_max_level(level)
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
    let socket = crate::config::expand_home(&socket);
    if autostart {
        let config = config
            .map(|c| crate::config::expand_home(&c))
            .unwrap_or_else(crate::config::Config::default_path);
        if let Err(err) = crate::daemon::lifecycle::autostart(
            &socket,
            &config,
            crate::daemon::lifecycle::AUTOSTART_TIMEOUT,
        ) {
            eprintln!("rmcp-mux-proxy: {err:#}");
            return ExitCode::from(1);
        }
    }
    match runtime.block_on(crate::proxy::run(crate::proxy::ProxyOptions::new(socket))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rmcp-mux-proxy: {err:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Cli, String> {
        parse(a.iter().map(OsString::from))
    }

    #[test]
    fn accepts_what_the_subcommand_accepts() {
        assert_eq!(
            args(&["--socket", "~/s.sock"]),
            Ok(Cli::Run {
                socket: "~/s.sock".into(),
                autostart: false,
                config: None
            })
        );
        assert_eq!(
            args(&["--autostart", "--config=/c.toml", "--socket=/s"]),
            Ok(Cli::Run {
                socket: "/s".into(),
                autostart: true,
                config: Some("/c.toml".into())
            })
        );
        assert_eq!(args(&["--socket", "/s", "--help"]), Ok(Cli::Help));
        assert_eq!(args(&["-V"]), Ok(Cli::Version));
    }

    #[test]
    fn refuses_what_clap_refused() {
        let err = |a: &[&str]| args(a).unwrap_err();
        assert!(err(&[]).contains("--socket <PATH>"));
        assert!(err(&["--socket"]).contains("a value is required"));
        assert!(err(&["--socket="]).contains("a value is required"));
        assert!(err(&["--socket", "/a", "--socket", "/b"]).contains("multiple times"));
        assert!(err(&["--socket", "/a", "--config", "/c"]).contains("--autostart"));
        assert!(err(&["--socket", "/a", "--autostart=yes"]).contains("unexpected value"));
        assert!(err(&["--socket", "/a", "extra"]).contains("'extra'"));
        assert!(err(&["--sock", "/a"]).contains("'--sock'"));
    }

    #[test]
    fn log_level_takes_the_most_verbose_level_named() {
        assert_eq!(log_level(None), LevelFilter::WARN);
        assert_eq!(log_level(Some("debug")), LevelFilter::DEBUG);
        assert_eq!(log_level(Some("rmcp_mux=trace,warn")), LevelFilter::TRACE);
        assert_eq!(log_level(Some("off")), LevelFilter::OFF);
        assert_eq!(log_level(Some("nonsense")), LevelFilter::WARN);
        assert_eq!(log_level(Some("")), LevelFilter::WARN);
        assert_eq!(log_level(Some("rmcp_mux=,info")), LevelFilter::INFO);
    }
}
