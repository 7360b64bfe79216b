//! `mux.toml`: the types, their defaults, validation with messages that name the file, line and
//! key, and `~` / `$VAR` expansion.
//!
//! Compatible with the earlier rmcp-mux's keys (`socket`, `cmd`, `args`, `env`, `lazy_start`,
//! `max_active_clients`, …; `tray` is accepted and ignored). It must not start anything or do
//! I/O beyond reading the file in [`Config::load`].

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Unix socket paths must fit `sun_path` (104 bytes on macOS, 108 on Linux, both with a NUL).
pub const MAX_SOCKET_PATH: usize = 103;

/// Why a config could not be used. Every message names where the problem is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a value of the wrong type.
    #[error("{}:{line}:{col}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A value that parses but cannot work (duplicate socket, bad name, undefined variable…).
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending value (or its table).
        line: usize,
        /// The key, e.g. `servers.memory.socket`.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A server name on the command line that the config does not have.
    #[error("{hint}")]
    UnknownServer {
        /// The name given.
        name: String,
        /// The message, with a suggestion when one is close.
        hint: String,
    },
    /// `--only`/`--except` left nothing to run.
    #[error("no servers selected (check --only and --except)")]
    NothingSelected,
}

/// A whole config file, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; relative paths in it are relative to its folder.
    pub path: PathBuf,
    /// Daemon-wide settings.
    pub daemon: DaemonConfig,
    /// Every server, in file order.
    pub servers: Vec<ServerConfig>,
}

/// Daemon-wide settings (`[daemon]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Where the CLI finds the daemon.
    pub control_socket: PathBuf,
    /// Where servers without `socket` get `NAME.sock`.
    pub socket_dir: PathBuf,
    /// A JSON status snapshot rewritten on change, when set.
    pub status_file: Option<PathBuf>,
    /// Whether the menu-bar app shows desktop notifications (crashes, restart limit, refused
    /// reloads); `notifications = false` turns them off.
    pub notifications: bool,
    /// Where the Streamable HTTP front listens (`http = "127.0.0.1:PORT"`), when set: hosts
    /// that connect by URL then need no proxy process. Always a loopback address.
    pub http: Option<std::net::SocketAddr>,
}

/// Which capabilities the mux declares upstream. They change what servers offer
/// (server-everything registers its sampling tools only when sampling is declared), so they
/// are configured per server instead of copied from whichever client came first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Clients can answer `sampling/createMessage`.
    pub sampling: bool,
    /// Clients can answer `elicitation/create`.
    pub elicitation: bool,
    /// Clients can answer `roots/list`.
    pub roots: bool,
}

/// Where a server→client request goes when no capable client has a request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerRequestPolicy {
    /// To the capable client that sent a request most recently.
    #[default]
    MostRecent,
    /// Nowhere: answer the server with an error.
    InFlightOnly,
}

/// Who shares one child of a server (`share`). Browser and project-bound servers keep state
/// per session, which one child for every host would mix up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    /// One child for every client (stateless servers: time, fetch, search).
    #[default]
    Global,
    /// One child per project folder (the folder the host started the proxy in).
    Project,
    /// One child per client connection (one host session), stopped when it goes.
    Client,
}

impl Share {
    /// The config value: `global`, `project` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Share::Global => "global",
            Share::Project => "project",
            Share::Client => "client",
        }
    }
}

/// Which protocol era the mux speaks to a server's process (`era`). Each process speaks one:
/// no SDK serves both on one pipe, and a dual-era server is pinned by its first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Era {
    /// `initialize` first, as every handshake-era server needs; a dual-era server is content
    /// with it, and 2026-07-28 clients are served by translation.
    #[default]
    Handshake,
    /// 2026-07-28 only: no `initialize`, `server/discover` instead.
    Modern,
    /// Ask with `server/discover` first; fall back to `initialize` on the same process when
    /// the server does not speak 2026-07-28. The verdict is kept for the server's later
    /// processes.
    Auto,
}

impl Era {
    /// The name used in the config and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Handshake => "handshake",
            Era::Modern => "modern",
            Era::Auto => "auto",
        }
    }
}

/// What `${project}` stands for in `args`, `env` and `cwd` until an instance fills it in.
pub const PROJECT_VAR: &str = "${project}";

/// How long a project's child outlives its last client when `idle_stop_ms` is not set.
pub const PROJECT_IDLE_STOP: Duration = Duration::from_secs(60);

/// One server (`[servers.NAME]`), with defaults applied and paths expanded.
///
/// Equality compares every field (env values included, without showing them): a reload
/// restarts a server whose config is not equal to the one it runs.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The table's name; also names the socket and the log lines.
    pub name: String,
    /// Where clients connect.
    pub socket: PathBuf,
    /// The program, executed directly (no shell).
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Added to its environment. Secrets: never printed.
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    pub cwd: Option<PathBuf>,
    /// A disabled server is not started (unless named with `--only`).
    pub enabled: bool,
    /// Start the child on the first client request instead of at daemon start.
    pub lazy_start: bool,
    /// Connections beyond this are refused with `too_many_clients`.
    pub max_active_clients: usize,
    /// Client lines longer than this are refused without being buffered.
    pub max_request_bytes: usize,
    /// Child lines longer than this are dropped.
    pub max_response_bytes: usize,
    /// A request unanswered this long is cancelled upstream and failed.
    pub request_timeout: Duration,
    /// First restart delay; doubles per consecutive crash.
    pub restart_backoff: Duration,
    /// The longest restart delay.
    pub restart_backoff_max: Duration,
    /// Consecutive crashes before giving up (0 = never).
    pub max_restarts: u32,
    /// Between SIGTERM and SIGKILL.
    pub shutdown_grace: Duration,
    /// Declared upstream in the mux's own `initialize`.
    pub capabilities: Capabilities,
    /// The protocol era spoken to the server's process.
    pub era: Era,
    /// When set, `roots/list` is answered with these URIs.
    pub roots: Option<Vec<String>>,
    /// Where server→client requests go without an obvious client.
    pub server_request_policy: ServerRequestPolicy,
    /// A JSON status snapshot for this server alone, when set.
    pub status_file: Option<PathBuf>,
    /// One child for all, one per project, or one per client.
    pub share: Share,
    /// Stop the child after this long without a client (`None`: never for `global`,
    /// [`PROJECT_IDLE_STOP`] for a project's child; a client's child stops with its client).
    pub idle_stop: Option<Duration>,
    /// The most children a `project` or `client` server runs at once.
    pub max_instances: usize,
}

impl ServerConfig {
    /// The config of one instance of a `project` or `client` server: `${project}` replaced by
    /// the project folder in `args`, `env` and `cwd`, and the child started in the project
    /// unless `cwd` is set. Without a project (a client that gave none) `home` stands in,
    /// which is where such hosts start their servers themselves.
    pub fn for_project(&self, project: Option<&Path>, home: &Path) -> ServerConfig {
        let dir = project.unwrap_or(home);
        let text = dir.to_string_lossy();
        let fill = |s: &str| s.replace(PROJECT_VAR, &text);
        let mut cfg = self.clone();
        cfg.args = self.args.iter().map(|a| fill(a)).collect();
        cfg.env = self.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
        cfg.cwd = match &self.cwd {
            Some(c) => Some(PathBuf::from(fill(&c.to_string_lossy()))),
            None if self.share == Share::Project => Some(dir.to_owned()),
            None => None,
        };
        cfg
    }

    /// How long this server's child outlives its last client, if it is ever stopped for it.
    pub fn idle_stop_after(&self) -> Option<Duration> {
        match self.share {
            Share::Global => self.idle_stop,
            Share::Project => Some(self.idle_stop.unwrap_or(PROJECT_IDLE_STOP)),
            Share::Client => Some(self.idle_stop.unwrap_or(Duration::ZERO)),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.keys().map(|k| format!("{k}=<redacted>")).collect();
        f.debug_struct("ServerConfig")
            .field("name", &self.name)
            .field("socket", &self.socket)
            .field("cmd", &self.cmd)
            .field("args", &self.args)
            .field("env", &env)
            .field("cwd", &self.cwd)
            .field("enabled", &self.enabled)
            .field("lazy_start", &self.lazy_start)
            .field("max_active_clients", &self.max_active_clients)
            .field("request_timeout", &self.request_timeout)
            .field("max_restarts", &self.max_restarts)
            .field("share", &self.share)
            .field("era", &self.era)
            .finish_non_exhaustive()
    }
}

/// Which servers of a config a daemon runs (`--only` / `--except`). Kept by the daemon so
/// that a reload picks from the new file by the same rule as at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Exactly these (enabled or not); empty means every enabled server.
    pub only: Vec<String>,
    /// Never these.
    pub except: Vec<String>,
}

/// The home folder and variables used for expansion; tests pass their own.
#[derive(Debug, Clone)]
pub struct Env {
    /// What `~` means.
    pub home: PathBuf,
    /// What `$VAR` means.
    pub vars: HashMap<String, String>,
}

impl Env {
    /// The process's own HOME and environment.
    pub fn from_process() -> Env {
        Env {
            home: home_dir(),
            vars: std::env::vars().collect(),
        }
    }
}

fn home_dir() -> PathBuf {
    directories::BaseDirs::new()
        .map(|b| b.home_dir().to_owned())
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `~/.rmcp-mux`: the control socket, sockets and (later) PID and log files live here.
pub fn default_state_dir() -> PathBuf {
    home_dir().join(".rmcp-mux")
}

/// Expands a leading `~` (hosts pass arguments without a shell, so nobody else will).
pub fn expand_home(path: &Path) -> PathBuf {
    match path.to_str() {
        Some("~") => home_dir(),
        Some(s) if s.starts_with("~/") => home_dir().join(&s[2..]),
        _ => path.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: Option<RawDaemon>,
    servers: Option<BTreeMap<String, Spanned<RawServer>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    control_socket: Option<Spanned<String>>,
    socket_dir: Option<Spanned<String>>,
    status_file: Option<Spanned<String>>,
    notifications: Option<bool>,
    http: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    socket: Option<Spanned<String>>,
    cmd: Spanned<String>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    cwd: Option<Spanned<String>>,
    enabled: Option<bool>,
    lazy_start: Option<bool>,
    max_active_clients: Option<Spanned<u64>>,
    max_request_bytes: Option<Spanned<u64>>,
    max_response_bytes: Option<Spanned<u64>>,
    request_timeout_ms: Option<Spanned<u64>>,
    restart_backoff_ms: Option<u64>,
    restart_backoff_max_ms: Option<Spanned<u64>>,
    max_restarts: Option<u32>,
    shutdown_grace_ms: Option<u64>,
    capabilities: Option<RawCaps>,
    era: Option<Spanned<String>>,
    roots: Option<Vec<Spanned<String>>>,
    server_request_policy: Option<Spanned<String>>,
    status_file: Option<Spanned<String>>,
    share: Option<Spanned<String>>,
    idle_stop_ms: Option<Spanned<u64>>,
    max_instances: Option<Spanned<u64>>,
    /// The earlier tool's per-server tray switch; the tray now shows every server.
    #[allow(dead_code)]
    tray: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaps {
    sampling: Option<bool>,
    elicitation: Option<bool>,
    roots: Option<bool>,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a Env,
    /// Whether the server being read is shared per project (`${project}` is allowed).
    project: std::cell::Cell<bool>,
}

impl Ctx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
    }

    fn invalid(&self, offset: usize, key: String, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line_col(offset).0,
            key,
            message: message.into(),
        }
    }

    fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let project = self.project.get();
        expand(value.get_ref(), &self.env.home, |v| {
            if v == "project" {
                // Kept for each instance to fill in (`ServerConfig::for_project`).
                return project.then(|| PROJECT_VAR.to_owned());
            }
            self.env.vars.get(v).cloned()
        })
        .map_err(|m| {
            let m = if m.contains("`project` is not set") {
                "`${project}` names the project folder, which only a server with \
                 share = \"project\" has"
                    .to_owned()
            } else {
                m
            };
            self.invalid(value.span().start, key.to_owned(), m)
        })
    }

    fn path(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let p = PathBuf::from(self.expand(value, key)?);
        // A path under the project is complete once an instance fills the project in.
        Ok(if p.is_relative() && !p.starts_with(PROJECT_VAR) {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        })
    }

    fn socket(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let p = self.path(value, key)?;
        check_socket_len(&p).map_err(|m| self.invalid(value.span().start, key.to_owned(), m))?;
        Ok(p)
    }
}

fn check_socket_len(p: &Path) -> Result<(), String> {
    let len = p.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "socket path is {len} bytes; Unix sockets allow at most {MAX_SOCKET_PATH} (use a shorter socket_dir)"
        ));
    }
    Ok(())
}

/// Expands `~` at the start, `$VAR` and `${VAR}` anywhere; `$$` is a literal `$`.
///
/// # Errors
/// A variable that is not set, or a `${` without its `}`.
pub fn expand(
    value: &str,
    home: &Path,
    var: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    if rest == "~" || rest.starts_with("~/") {
        out.push_str(&home.to_string_lossy());
        rest = &rest[1..];
    }
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|(_, c)| *c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                let start = i + 2;
                let end = rest[start..]
                    .find('}')
                    .ok_or_else(|| format!("`${{` without a closing `}}` in {value:?}"))?;
                let name = &rest[start..start + end];
                out.push_str(
                    &var(name)
                        .ok_or_else(|| format!("environment variable `{name}` is not set"))?,
                );
                while chars.peek().is_some_and(|(j, _)| *j <= start + end) {
                    chars.next();
                }
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let start = i + 1;
                let mut end = start;
                while let Some((j, c)) = chars.peek().copied() {
                    if c == '_' || c.is_ascii_alphanumeric() {
                        end = j + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let name = &rest[start..end];
                out.push_str(
                    &var(name)
                        .ok_or_else(|| format!("environment variable `{name}` is not set"))?,
                );
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a message with a hint.
fn explain(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, expected)) = rest.split_once('`') {
            let options: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return match suggest(name, options.iter().copied()) {
                Some(best) => format!("unknown key `{name}`; did you mean `{best}`?"),
                None => format!(
                    "unknown key `{name}`; expected one of: {}",
                    options.join(", ")
                ),
            };
        }
    }
    message.replace("missing field", "missing key")
}

/// Parses `[daemon] http`: an IP address and a port, loopback only. The front has no TLS and
/// guards its sessions with a bearer token, so it must never be reachable from another host.
fn http_address(text: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("`{text}` is not an address and port; write \"127.0.0.1:PORT\""))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "`{text}` is not a loopback address; the HTTP front only listens on 127.0.0.1 or [::1]"
        ));
    }
    if addr.port() == 0 {
        return Err("the port must not be 0; hosts need a fixed URL".into());
    }
    Ok(addr)
}

/// Where a daemon running `text` listens for control requests, read as leniently as
/// possible: the CLI must reach a daemon whose config the user has just broken (to show
/// the error in `status`, or to `reload`). Tries the TOML's `[daemon] control_socket`, then
/// a line `control_socket = "..."` when the TOML does not even parse, then the default.
pub fn find_control_socket(text: &str, path: &Path, env: &Env) -> PathBuf {
    let resolve = |raw: &str| -> Option<PathBuf> {
        let expanded = expand(raw, &env.home, |v| env.vars.get(v).cloned()).ok()?;
        let p = PathBuf::from(expanded);
        Some(if p.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        })
    };
    let default = env.home.join(".rmcp-mux").join("control.sock");
    if let Ok(table) = text.parse::<toml::Table>() {
        return table
            .get("daemon")
            .and_then(|d| d.get("control_socket"))
            .and_then(|v| v.as_str())
            .and_then(resolve)
            .unwrap_or(default);
    }
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("control_socket"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .filter_map(|v| {
            let v = v.trim();
            let quote = v.chars().next().filter(|c| matches!(c, '"' | '\''))?;
            let inner = &v[1..];
            inner.find(quote).map(|end| inner[..end].to_owned())
        })
        .find_map(|v| resolve(&v))
        .unwrap_or(default)
}

impl Config {
    /// `$RMCP_MUX_CONFIG`, or `~/.rmcp-mux/mux.toml`.
    pub fn default_path() -> PathBuf {
        std::env::var_os("RMCP_MUX_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_state_dir().join("mux.toml"))
    }

    /// Reads and validates a config file.
    ///
    /// # Errors
    /// Any [`ConfigError`]; each names the file and, where it applies, the line and key.
    #[allow(clippy::disallowed_methods)] // the one read this module does
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // An absolute path, so that status shows where the file really is.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        Self::from_toml_with(&text, &path, &Env::from_process())
    }

    /// Validates config text as if read from `path`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::from_toml_with(text, path, &Env::from_process())
    }

    /// Validates config text with an explicit home folder and environment.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_with(text: &str, path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            path,
            text,
            env,
            project: std::cell::Cell::new(false),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = ctx.line_col(e.span().map_or(0, |s| s.start));
            let mut message = explain(e.message());
            if message.starts_with("invalid") {
                // Name the key: it is what stands before `=` on that line.
                let key = text.lines().nth(line - 1).and_then(|l| l.split_once('='));
                if let Some((key, _)) = key {
                    message = format!(
                        "`{}`: {}",
                        key.trim(),
                        message
                            .replace("u32", "a whole number")
                            .replace("u64", "a whole number")
                    );
                }
            }
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                col,
                message,
            }
        })?;
        let state = env.home.join(".rmcp-mux");
        let daemon = raw.daemon.unwrap_or(RawDaemon {
            control_socket: None,
            socket_dir: None,
            status_file: None,
            notifications: None,
            http: None,
        });
        let control_socket = match &daemon.control_socket {
            Some(v) => ctx.socket(v, "daemon.control_socket")?,
            None => state.join("control.sock"),
        };
        let socket_dir = match &daemon.socket_dir {
            Some(v) => ctx.path(v, "daemon.socket_dir")?,
            None => state.join("sockets"),
        };
        let status_file = daemon
            .status_file
            .as_ref()
            .map(|v| ctx.path(v, "daemon.status_file"))
            .transpose()?;
        let http = daemon
            .http
            .as_ref()
            .map(|v| {
                http_address(v.get_ref())
                    .map_err(|m| ctx.invalid(v.span().start, "daemon.http".into(), m))
            })
            .transpose()?;
        let mut raw_servers: Vec<(String, Spanned<RawServer>)> =
            raw.servers.unwrap_or_default().into_iter().collect();
        if raw_servers.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                key: "servers".into(),
                message: "no servers defined; add a [servers.NAME] table with a `cmd`".into(),
            });
        }
        raw_servers.sort_by_key(|(_, s)| s.span().start);
        let mut servers: Vec<ServerConfig> = Vec::with_capacity(raw_servers.len());
        let mut sockets: HashMap<PathBuf, String> = HashMap::new();
        sockets.insert(control_socket.clone(), "daemon.control_socket".into());
        for (name, spanned) in raw_servers {
            let at = spanned.span().start;
            let raw = spanned.into_inner();
            let key = |k: &str| format!("servers.{name}.{k}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(ctx.invalid(
                    at,
                    format!("servers.{name}"),
                    "server names may only use letters, digits, `_`, `.` and `-` (they name socket files)",
                ));
            }
            let share = match raw
                .share
                .as_ref()
                .map(|v| (v.get_ref().as_str(), v.span().start))
            {
                None | Some(("global", _)) => Share::Global,
                Some(("project", _)) => Share::Project,
                Some(("client", _)) => Share::Client,
                Some((other, pos)) => {
                    return Err(ctx.invalid(
                        pos,
                        key("share"),
                        format!(
                        "`{other}` is not a share; expected \"global\", \"project\" or \"client\""
                    ),
                    ))
                }
            };
            // `${project}` is read from here on only for this server's args, env and cwd.
            ctx.project.set(false);
            let cmd = ctx.expand(&raw.cmd, &key("cmd"))?;
            if cmd.trim().is_empty() {
                return Err(ctx.invalid(raw.cmd.span().start, key("cmd"), "must not be empty"));
            }
            let socket = match &raw.socket {
                Some(v) => ctx.socket(v, &key("socket"))?,
                None => {
                    let p = socket_dir.join(format!("{name}.sock"));
                    check_socket_len(&p).map_err(|m| ctx.invalid(at, key("socket"), m))?;
                    p
                }
            };
            if let Some(other) = sockets.insert(socket.clone(), format!("servers.{name}")) {
                let pos = raw.socket.as_ref().map_or(at, |s| s.span().start);
                return Err(ctx.invalid(
                    pos,
                    key("socket"),
                    format!(
                        "{} is already used by {other}; every server needs its own socket",
                        socket.display()
                    ),
                ));
            }
            ctx.project.set(share == Share::Project);
            let args = raw
                .args
                .iter()
                .enumerate()
                .map(|(i, a)| ctx.expand(a, &format!("servers.{name}.args[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut envs = BTreeMap::new();
            for (k, v) in &raw.env {
                envs.insert(
                    k.clone(),
                    ctx.expand(v, &format!("servers.{name}.env.{k}"))?,
                );
            }
            let cwd = raw
                .cwd
                .as_ref()
                .map(|v| ctx.path(v, &key("cwd")))
                .transpose()?;
            ctx.project.set(false);
            let at_least = |v: &Option<Spanned<u64>>, k: &str, min: u64, default: u64| match v {
                None => Ok(default),
                Some(v) if *v.get_ref() >= min => Ok(*v.get_ref()),
                Some(v) => {
                    Err(ctx.invalid(v.span().start, key(k), format!("must be at least {min}")))
                }
            };
            let backoff = raw.restart_backoff_ms.unwrap_or(1000);
            let backoff_max = at_least(
                &raw.restart_backoff_max_ms,
                "restart_backoff_max_ms",
                backoff,
                30_000.max(backoff),
            )?;
            let policy = match raw
                .server_request_policy
                .as_ref()
                .map(|v| (v.get_ref().as_str(), v.span().start))
            {
                None | Some(("most_recent", _)) => ServerRequestPolicy::MostRecent,
                Some(("in_flight_only", _)) => ServerRequestPolicy::InFlightOnly,
                Some((other, pos)) => {
                    return Err(ctx.invalid(
                        pos,
                        key("server_request_policy"),
                        format!(
                        "`{other}` is not a policy; expected \"most_recent\" or \"in_flight_only\""
                    ),
                    ))
                }
            };
            let era = match raw.era.as_ref().map(|v| (v.get_ref().as_str(), v.span().start)) {
                None | Some(("handshake", _)) => Era::Handshake,
                Some(("modern", _)) => Era::Modern,
                Some(("auto", _)) => Era::Auto,
                Some((other, pos)) => {
                    return Err(ctx.invalid(
                        pos,
                        key("era"),
                        format!(
                            "`{other}` is not a protocol era; expected \"handshake\" (initialize, the default), \"modern\" (2026-07-28 only) or \"auto\" (ask the server)"
                        ),
                    ))
                }
            };
            let caps = raw.capabilities.as_ref();
            servers.push(ServerConfig {
                era,
                socket,
                cmd,
                args,
                env: envs,
                cwd,
                enabled: raw.enabled.unwrap_or(true),
                lazy_start: raw.lazy_start.unwrap_or(false),
                max_active_clients: at_least(&raw.max_active_clients, "max_active_clients", 1, 64)?
                    as usize,
                max_request_bytes: at_least(
                    &raw.max_request_bytes,
                    "max_request_bytes",
                    1024,
                    1 << 20,
                )? as usize,
                max_response_bytes: at_least(
                    &raw.max_response_bytes,
                    "max_response_bytes",
                    1024,
                    64 << 20,
                )? as usize,
                request_timeout: Duration::from_millis(at_least(
                    &raw.request_timeout_ms,
                    "request_timeout_ms",
                    1,
                    30_000,
                )?),
                restart_backoff: Duration::from_millis(backoff),
                restart_backoff_max: Duration::from_millis(backoff_max),
                max_restarts: raw.max_restarts.unwrap_or(5),
                shutdown_grace: Duration::from_millis(raw.shutdown_grace_ms.unwrap_or(2000)),
                capabilities: Capabilities {
                    sampling: caps.and_then(|c| c.sampling).unwrap_or(true),
                    elicitation: caps.and_then(|c| c.elicitation).unwrap_or(true),
                    roots: caps.and_then(|c| c.roots).unwrap_or(false),
                },
                roots: raw
                    .roots
                    .as_ref()
                    .map(|r| r.iter().map(|v| ctx.expand(v, &key("roots"))).collect())
                    .transpose()?,
                server_request_policy: policy,
                status_file: raw
                    .status_file
                    .as_ref()
                    .map(|v| ctx.path(v, &key("status_file")))
                    .transpose()?,
                share,
                idle_stop: raw
                    .idle_stop_ms
                    .as_ref()
                    .map(|v| at_least(&Some(v.clone()), "idle_stop_ms", 1, 0))
                    .transpose()?
                    .map(Duration::from_millis),
                max_instances: at_least(&raw.max_instances, "max_instances", 1, 16)? as usize,
                name,
            });
        }
        Ok(Config {
            path: path.to_owned(),
            daemon: DaemonConfig {
                control_socket,
                socket_dir,
                status_file,
                notifications: daemon.notifications.unwrap_or(true),
                http,
            },
            servers,
        })
    }

    /// The servers a [`Selection`] picks; see [`Config::select`].
    ///
    /// # Errors
    /// As [`Config::select`].
    pub fn select_by(&self, selection: &Selection) -> Result<Vec<ServerConfig>, ConfigError> {
        self.select(&selection.only, &selection.except)
    }

    /// The servers to run: enabled ones, or exactly those in `only`, minus `except`.
    ///
    /// # Errors
    /// An unknown name in either list (with a suggestion), or nothing left.
    pub fn select(
        &self,
        only: &[String],
        except: &[String],
    ) -> Result<Vec<ServerConfig>, ConfigError> {
        for name in only.iter().chain(except) {
            self.server(name)?;
        }
        let picked: Vec<ServerConfig> = self
            .servers
            .iter()
            .filter(|s| {
                if only.is_empty() {
                    s.enabled
                } else {
                    only.contains(&s.name)
                }
            })
            .filter(|s| !except.contains(&s.name))
            .cloned()
            .collect();
        if picked.is_empty() {
            return Err(ConfigError::NothingSelected);
        }
        Ok(picked)
    }

    /// One server by name.
    ///
    /// # Errors
    /// [`ConfigError::UnknownServer`] with the closest name suggested.
    pub fn server(&self, name: &str) -> Result<&ServerConfig, ConfigError> {
        self.servers.iter().find(|s| s.name == name).ok_or_else(|| {
            let names = self.servers.iter().map(|s| s.name.as_str());
            let hint = match suggest(name, names) {
                Some(best) => format!(
                    "unknown server `{name}` in {}; did you mean `{best}`?",
                    self.path.display()
                ),
                None => format!(
                    "unknown server `{name}` in {}; it defines: {}",
                    self.path.display(),
                    self.servers
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            ConfigError::UnknownServer {
                name: name.to_owned(),
                hint,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            home: PathBuf::from("/home/me"),
            vars: [("PROJ", "/work/p"), ("TOKEN", "t0k")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, Path::new("/etc/mux/mux.toml"), &env())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply() {
        let c = parse("[servers.memory]\ncmd = \"npx\"\n").unwrap();
        let s = &c.servers[0];
        assert_eq!(
            s.socket,
            PathBuf::from("/home/me/.rmcp-mux/sockets/memory.sock")
        );
        assert_eq!(
            c.daemon.control_socket,
            PathBuf::from("/home/me/.rmcp-mux/control.sock")
        );
        assert_eq!(
            (s.max_active_clients, s.max_request_bytes, s.max_restarts),
            (64, 1 << 20, 5)
        );
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(
            (s.restart_backoff, s.restart_backoff_max),
            (Duration::from_secs(1), Duration::from_secs(30))
        );
        assert_eq!(s.shutdown_grace, Duration::from_secs(2));
        assert_eq!(s.era, Era::Handshake);
        assert_eq!(
            s.capabilities,
            Capabilities {
                sampling: true,
                elicitation: true,
                roots: false
            }
        );
        assert!(s.enabled && !s.lazy_start && s.roots.is_none());
        assert!(c.daemon.notifications, "notifications are on by default");
    }

    #[test]
    fn every_key_parses_in_file_order_with_expansion() {
        let c = parse(
            r#"
[daemon]
control_socket = "~/.mux/ctl.sock"
socket_dir = "run"
status_file = "$PROJ/status.json"
notifications = false

[servers.zeta]
cmd = "${PROJ}/bin/server"
args = ["--root", "~/docs", "$$HOME"]
env = { API_KEY = "$TOKEN", PATH_LIKE = "~/x" }
cwd = "~"
enabled = false
lazy_start = true
max_active_clients = 3
max_request_bytes = 2048
max_response_bytes = 4096
request_timeout_ms = 5
restart_backoff_ms = 10
restart_backoff_max_ms = 20
max_restarts = 0
shutdown_grace_ms = 7
capabilities = { roots = true }
era = "auto"
roots = ["file://~/p"]
server_request_policy = "in_flight_only"
status_file = "z.json"
tray = true

[servers.alpha]
socket = "/tmp/a.sock"
cmd = "a"
"#,
        )
        .unwrap();
        assert_eq!(
            c.daemon.control_socket,
            PathBuf::from("/home/me/.mux/ctl.sock")
        );
        assert_eq!(c.daemon.socket_dir, PathBuf::from("/etc/mux/run"));
        assert_eq!(
            c.daemon.status_file,
            Some(PathBuf::from("/work/p/status.json"))
        );
        assert!(!c.daemon.notifications);
        let names: Vec<&str> = c.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"], "file order");
        let z = &c.servers[0];
        assert_eq!(z.cmd, "/work/p/bin/server");
        assert_eq!(z.args, ["--root", "/home/me/docs", "$HOME"]);
        assert_eq!(z.env["API_KEY"], "t0k");
        assert_eq!(z.env["PATH_LIKE"], "/home/me/x");
        assert_eq!(z.cwd, Some(PathBuf::from("/home/me")));
        assert_eq!(z.socket, PathBuf::from("/etc/mux/run/zeta.sock"));
        assert!(!z.enabled && z.lazy_start);
        assert_eq!(
            (
                z.max_active_clients,
                z.max_request_bytes,
                z.max_response_bytes
            ),
            (3, 2048, 4096)
        );
        assert_eq!(z.request_timeout, Duration::from_millis(5));
        assert_eq!(z.max_restarts, 0);
        assert_eq!(z.era, Era::Auto);
        assert_eq!(
            z.capabilities,
            Capabilities {
                sampling: true,
                elicitation: true,
                roots: true
            }
        );
        assert_eq!(
            z.roots.as_deref(),
            Some(&["file://~/p".to_owned()][..]),
            "~ expands only at the start"
        );
        assert_eq!(z.server_request_policy, ServerRequestPolicy::InFlightOnly);
        assert_eq!(z.status_file, Some(PathBuf::from("/etc/mux/z.json")));
        assert_eq!(c.servers[1].socket, PathBuf::from("/tmp/a.sock"));
    }

    #[test]
    fn the_earlier_readme_examples_still_parse() {
        let c = parse(
            r#"
[servers.memory]
socket = "~/mcp-sockets/memory.sock"
cmd = "npx"
args = ["-y", "@modelcontextprotocol/server-memory"]
max_active_clients = 5
tray = true

[servers.brave-search]
socket = "~/mcp-sockets/brave.sock"
cmd = "npx"
args = ["-y", "@anthropic/mcp-server-brave-search"]
env = { BRAVE_API_KEY = "your-api-key" }
request_timeout_ms = 60000
status_file = "/tmp/brave.json"
"#,
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[1].name, "brave-search");
    }

    #[test]
    fn the_http_front_is_loopback_only() {
        let c = parse("[daemon]\nhttp = \"127.0.0.1:7311\"\n[servers.m]\ncmd = \"x\"\n").unwrap();
        assert_eq!(c.daemon.http, Some("127.0.0.1:7311".parse().unwrap()));
        let c = parse("[daemon]\nhttp = \"[::1]:7311\"\n[servers.m]\ncmd = \"x\"\n").unwrap();
        assert_eq!(c.daemon.http, Some("[::1]:7311".parse().unwrap()));
        let c = parse("[servers.m]\ncmd = \"x\"\n").unwrap();
        assert_eq!(c.daemon.http, None);
        for bad in ["0.0.0.0:7311", "192.168.1.2:80", "[::]:7311"] {
            let e = err(&format!(
                "[daemon]\nhttp = \"{bad}\"\n[servers.m]\ncmd = \"x\"\n"
            ));
            assert!(e.starts_with("/etc/mux/mux.toml:2: daemon.http: "), "{e}");
            assert!(e.contains("not a loopback address"), "{e}");
        }
        let e = err("[daemon]\nhttp = \"localhost\"\n[servers.m]\ncmd = \"x\"\n");
        assert!(
            e.contains(":2: daemon.http: ") && e.contains("127.0.0.1:PORT"),
            "{e}"
        );
        let e = err("[daemon]\nhttp = \"127.0.0.1:0\"\n[servers.m]\ncmd = \"x\"\n");
        assert!(e.contains("daemon.http") && e.contains("port"), "{e}");
    }

    #[test]
    fn unknown_keys_say_where_and_suggest() {
        let e = err("[servers.memory]\ncmd = \"npx\"\nsoket = \"/tmp/x\"\n");
        assert!(e.starts_with("/etc/mux/mux.toml:3:1: "), "{e}");
        assert!(
            e.contains("unknown key `soket`; did you mean `socket`?"),
            "{e}"
        );
        let e = err("[servers.m]\ncmd = \"x\"\ncapabilities = { sampling = true, sampels = 1 }\n");
        assert!(e.contains("`sampels`") && e.contains(":3:"), "{e}");
        let e = err("[deamon]\n[servers.m]\ncmd = \"x\"\n");
        assert!(
            e.contains("did you mean `daemon`?") && e.contains(":1:"),
            "{e}"
        );
        let e = err("[servers.m]\ncmd = \"x\"\nzzzz = 1\n");
        assert!(e.contains("expected one of: socket, cmd"), "{e}");
    }

    #[test]
    fn wrong_types_and_syntax_say_where() {
        let e = err("[servers.m]\ncmd = \"x\"\nmax_restarts = \"five\"\n");
        assert!(
            e.contains("mux.toml:3:")
                && e.contains("`max_restarts`: invalid type")
                && e.contains("a whole number"),
            "{e}"
        );
        let e = err("[servers.m]\ncmd = \"x\"\nargs = [\n");
        assert!(e.starts_with("/etc/mux/mux.toml:"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = err("[servers.m]\nargs = []\n");
        assert!(e.contains("missing key `cmd`") && e.contains(":1:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = err("[servers.a]\ncmd = \"x\"\nsocket = \"/tmp/s.sock\"\n[servers.b]\ncmd = \"y\"\nsocket = \"/tmp/s.sock\"\n");
        assert!(
            e.contains(":6: servers.b.socket") && e.contains("already used by servers.a"),
            "{e}"
        );
        let e = err("[servers.\"a b\"]\ncmd = \"x\"\n");
        assert!(
            e.contains("servers.a b") && e.contains("letters, digits"),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"  \"\n");
        assert!(e.contains("servers.a.cmd: must not be empty"), "{e}");
        let long = "x".repeat(120);
        let e = err(&format!(
            "[servers.a]\ncmd = \"x\"\nsocket = \"/tmp/{long}.sock\"\n"
        ));
        assert!(
            e.contains(":3: servers.a.socket") && e.contains("at most 103"),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"$NOPE/x\"\n");
        assert!(
            e.contains("servers.a.cmd") && e.contains("`NOPE` is not set"),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"x\"\nmax_active_clients = 0\n");
        assert!(
            e.contains("servers.a.max_active_clients: must be at least 1"),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"x\"\nserver_request_policy = \"random\"\n");
        assert!(e.contains("most_recent"), "{e}");
        let e = err("[servers.a]\ncmd = \"x\"\nera = \"2026-07-28\"\n");
        assert!(
            e.contains("servers.a.era")
                && e.contains("`2026-07-28` is not a protocol era")
                && e.contains("\"auto\""),
            "{e}"
        );
        assert!(err("").contains("no servers defined"));
    }

    #[test]
    fn expansion_rules() {
        let home = Path::new("/h");
        let var = |n: &str| (n == "A").then(|| "1".to_owned());
        assert_eq!(expand("~", home, var).unwrap(), "/h");
        assert_eq!(
            expand("~/x/$A/${A}b/$$/$", home, var).unwrap(),
            "/h/x/1/1b/$/$"
        );
        assert_eq!(expand("a~/b", home, var).unwrap(), "a~/b");
        assert!(expand("${A", home, var).is_err());
        assert!(expand("$B", home, var).unwrap_err().contains("`B`"));
    }

    #[test]
    fn select_only_except_and_unknown_names() {
        let c = parse("[servers.a]\ncmd = \"x\"\n[servers.b]\ncmd = \"x\"\nenabled = false\n[servers.c]\ncmd = \"x\"\n").unwrap();
        let names = |v: Vec<ServerConfig>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(c.select(&[], &[]).unwrap()), ["a", "c"]);
        assert_eq!(
            names(c.select(&["b".into()], &[]).unwrap()),
            ["b"],
            "--only starts a disabled server"
        );
        assert_eq!(names(c.select(&[], &["c".into()]).unwrap()), ["a"]);
        let e = c.select(&["cc".into()], &[]).unwrap_err().to_string();
        assert!(
            e.contains("unknown server `cc`") && e.contains("did you mean `c`?"),
            "{e}"
        );
        assert!(matches!(
            c.select(&["a".into()], &["a".into()]),
            Err(ConfigError::NothingSelected)
        ));
    }

    #[test]
    fn the_control_socket_is_found_in_a_broken_config() {
        let p = Path::new("/etc/mux/mux.toml");
        let valid_but_wrong =
            "[daemon]\ncontrol_socket = \"~/c.sock\"\n[servers.a]\ncmdd = \"x\"\n";
        assert_eq!(
            find_control_socket(valid_but_wrong, p, &env()),
            PathBuf::from("/home/me/c.sock")
        );
        let not_toml = "[daemon]\ncontrol_socket = 'run/c.sock'\n[servers.a\ncmd = \n";
        assert_eq!(
            find_control_socket(not_toml, p, &env()),
            PathBuf::from("/etc/mux/run/c.sock")
        );
        assert_eq!(
            find_control_socket("[servers.a]\ncmd = \"x\"\n", p, &env()),
            PathBuf::from("/home/me/.rmcp-mux/control.sock")
        );
    }

    #[test]
    fn share_defaults_to_global_and_project_servers_keep_their_placeholder() {
        let c = parse("[servers.a]\ncmd = \"x\"\n").unwrap();
        let a = &c.servers[0];
        assert_eq!(
            (a.share, a.idle_stop, a.max_instances),
            (Share::Global, None, 16)
        );
        assert_eq!(
            a.idle_stop_after(),
            None,
            "a global server is never stopped"
        );
        let c = parse(
            r#"
[servers.git]
cmd = "git-mcp"
share = "project"
args = ["--repo", "${project}", "$PROJ"]
env = { REPO = "${project}/.git" }
cwd = "${project}/sub"
idle_stop_ms = 500
max_instances = 3

[servers.browser]
cmd = "npx"
share = "client"
"#,
        )
        .unwrap();
        let git = &c.servers[0];
        assert_eq!(git.share, Share::Project);
        assert_eq!(git.args, ["--repo", "${project}", "/work/p"]);
        assert_eq!(git.cwd, Some(PathBuf::from("${project}/sub")));
        assert_eq!(git.idle_stop, Some(Duration::from_millis(500)));
        assert_eq!(git.max_instances, 3);
        let one = git.for_project(Some(Path::new("/src/app")), Path::new("/home/me"));
        assert_eq!(one.args, ["--repo", "/src/app", "/work/p"]);
        assert_eq!(one.env["REPO"], "/src/app/.git");
        assert_eq!(one.cwd, Some(PathBuf::from("/src/app/sub")));
        let none = git.for_project(None, Path::new("/home/me"));
        assert_eq!(none.args[1], "/home/me", "no project: the home folder");
        let browser = &c.servers[1];
        assert_eq!(browser.share, Share::Client);
        assert_eq!(browser.idle_stop_after(), Some(Duration::ZERO));
        let mut plain = git.clone();
        plain.cwd = None;
        assert_eq!(
            plain
                .for_project(Some(Path::new("/src/b")), Path::new("/h"))
                .cwd,
            Some(PathBuf::from("/src/b")),
            "a project's child runs in the project"
        );
        assert_eq!(plain.idle_stop_after(), Some(Duration::from_millis(500)));
        plain.idle_stop = None;
        assert_eq!(plain.idle_stop_after(), Some(PROJECT_IDLE_STOP));
    }

    #[test]
    fn share_errors_name_the_key_and_line() {
        let e = err("[servers.a]\ncmd = \"x\"\nshare = \"session\"\n");
        assert!(
            e.contains(":3: servers.a.share") && e.contains("\"project\""),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"x\"\nargs = [\"${project}\"]\n");
        assert!(
            e.contains(":3: servers.a.args[0]") && e.contains("share = \"project\""),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"${project}/bin\"\nshare = \"project\"\n");
        assert!(e.contains("servers.a.cmd"), "only args, env and cwd: {e}");
        let e = err("[servers.a]\ncmd = \"x\"\nshare = \"client\"\nmax_instances = 0\n");
        assert!(
            e.contains(":4: servers.a.max_instances: must be at least 1"),
            "{e}"
        );
        let e = err("[servers.a]\ncmd = \"x\"\nidle_stop_ms = 0\n");
        assert!(
            e.contains("servers.a.idle_stop_ms: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn debug_never_shows_env_values() {
        let c = parse("[servers.a]\ncmd = \"x\"\nenv = { API_KEY = \"super-secret\" }\n").unwrap();
        let shown = format!("{:?} {:?}", c.servers[0], c);
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("API_KEY=<redacted>"));
    }
}
