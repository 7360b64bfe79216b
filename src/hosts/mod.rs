//! MCP hosts and their config files: which hosts exist, where each keeps its servers (user and
//! project files, macOS and Linux paths), and the servers found there.
//!
//! This module owns the model ([`Host`], [`HostFile`], [`Entry`], [`Launch`]) and reading. The
//! per-format parsing is pure ([`json`], [`codex`]); edits and their undo record live in
//! [`rewire`], copying servers into `mux.toml` in [`import`]. Nothing here starts a process, and
//! nothing in this file writes a file.

pub mod codex;
pub mod connect;
pub mod import;
pub mod json;
pub mod rewire;
pub mod share;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why a host config could not be read, parsed or changed. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A host name on the command line that is not one of [`Host::ALL`].
    #[error("{hint}")]
    UnknownHost {
        /// The message, with the known names and a suggestion when one is close.
        hint: String,
    },
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The host's file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid JSON(C) or TOML.
    #[error("{}:{line}:{col}: {message}", path.display())]
    Parse {
        /// The host's file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the parser expected.
        message: String,
    },
    /// Valid syntax, but a key holds the wrong kind of value (e.g. `mcpServers` is a list).
    #[error("{}: {key}: {message}", path.display())]
    Shape {
        /// The host's file.
        path: PathBuf,
        /// The key, e.g. `mcpServers.memory`.
        key: String,
        /// What was expected.
        message: String,
    },
    /// Writing a file (or its backup, temp file or record) failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The undo record of an earlier rewire is not readable.
    #[error("bad rewire record {}: {message}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// `rmcp-mux-proxy` is neither next to this program nor on PATH.
    #[error("cannot find rmcp-mux-proxy next to {} or on PATH; install it (cargo install --path .)", exe.display())]
    NoProxy {
        /// The running executable.
        exe: PathBuf,
    },
    /// `rewire --via http` for a host that only starts commands.
    #[error("{host} connects to servers only by command; use `--via proxy`")]
    NoUrlForm {
        /// The host.
        host: Host,
    },
}

/// One MCP host application. The names are what `--host` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// Claude Desktop (`claude_desktop_config.json`).
    ClaudeDesktop,
    /// Claude Code (`~/.claude.json`, per-project entries inside it, and `.mcp.json`).
    ClaudeCode,
    /// Cursor (`~/.cursor/mcp.json`, `.cursor/mcp.json`).
    Cursor,
    /// VS Code (`mcp.json` with `servers`).
    Vscode,
    /// Windsurf (`~/.codeium/windsurf/mcp_config.json`).
    Windsurf,
    /// OpenAI Codex CLI (`~/.codex/config.toml`).
    Codex,
    /// Gemini CLI (`~/.gemini/settings.json`).
    Gemini,
    /// Zed (`settings.json`, `context_servers`).
    Zed,
}

impl Host {
    /// Every host, in the order `scan` lists them.
    pub const ALL: [Host; 8] = [
        Host::ClaudeDesktop,
        Host::ClaudeCode,
        Host::Cursor,
        Host::Vscode,
        Host::Windsurf,
        Host::Codex,
        Host::Gemini,
        Host::Zed,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Host::ClaudeDesktop => "claude-desktop",
            Host::ClaudeCode => "claude-code",
            Host::Cursor => "cursor",
            Host::Vscode => "vscode",
            Host::Windsurf => "windsurf",
            Host::Codex => "codex",
            Host::Gemini => "gemini",
            Host::Zed => "zed",
        }
    }

    /// The application's own name, as its users know it ("Claude Desktop").
    pub fn label(self) -> &'static str {
        match self {
            Host::ClaudeDesktop => "Claude Desktop",
            Host::ClaudeCode => "Claude Code",
            Host::Cursor => "Cursor",
            Host::Vscode => "VS Code",
            Host::Windsurf => "Windsurf",
            Host::Codex => "Codex",
            Host::Gemini => "Gemini CLI",
            Host::Zed => "Zed",
        }
    }

    /// What the user does for the host to read a changed config: hosts read their MCP servers
    /// at start (a CLI at the start of a session), so a change is seen only after that.
    pub fn restart_hint(self) -> String {
        match self {
            Host::ClaudeCode | Host::Codex | Host::Gemini => {
                format!("start a new {} session to pick it up", self.label())
            }
            _ => format!("restart {} to pick it up", self.label()),
        }
    }

    /// A host by its command-line name.
    ///
    /// # Errors
    /// [`HostError::UnknownHost`] listing the names, with the closest one suggested.
    pub fn from_name(name: &str) -> Result<Host, HostError> {
        if let Some(h) = Host::ALL.iter().find(|h| h.name() == name) {
            return Ok(*h);
        }
        let names: Vec<&str> = Host::ALL.iter().map(|h| h.name()).collect();
        let best = names
            .iter()
            .map(|c| (strsim::jaro_winkler(name, c), *c))
            .filter(|(s, _)| *s > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let hint = match best {
            Some((_, b)) => format!(
                "unknown host `{name}`; did you mean `{b}`? (known: {})",
                names.join(", ")
            ),
            None => format!("unknown host `{name}`; known hosts: {}", names.join(", ")),
        };
        Err(HostError::UnknownHost { hint })
    }

    /// The files this host reads its servers from, user-level first, then the project's.
    pub fn files(self, paths: &Paths) -> Vec<HostFile> {
        let user = |path: PathBuf, format| HostFile {
            host: self,
            path,
            scope: Scope::User,
            format,
            project: None,
        };
        let project = |rel: &str, format| {
            paths.project.as_ref().map(|p| HostFile {
                host: self,
                path: p.join(rel),
                scope: Scope::Project,
                format,
                project: Some(p.clone()),
            })
        };
        let app_support = |rel: &str| {
            if cfg!(target_os = "macos") {
                paths.home.join("Library/Application Support").join(rel)
            } else {
                paths.config.join(rel)
            }
        };
        let mut files = match self {
            Host::ClaudeDesktop => vec![user(
                app_support("Claude/claude_desktop_config.json"),
                Format::McpServers,
            )],
            Host::ClaudeCode => vec![user(paths.home.join(".claude.json"), Format::ClaudeCode)],
            Host::Cursor => vec![user(
                paths.home.join(".cursor/mcp.json"),
                Format::McpServers,
            )],
            Host::Vscode => vec![user(app_support("Code/User/mcp.json"), Format::Vscode)],
            Host::Windsurf => vec![user(
                paths.home.join(".codeium/windsurf/mcp_config.json"),
                Format::McpServers,
            )],
            Host::Codex => vec![user(paths.codex_home.join("config.toml"), Format::Codex)],
            Host::Gemini => vec![user(
                paths.home.join(".gemini/settings.json"),
                Format::McpServers,
            )],
            Host::Zed => vec![user(paths.config.join("zed/settings.json"), Format::Zed)],
        };
        files.extend(match self {
            Host::ClaudeCode => project(".mcp.json", Format::McpServers),
            Host::Cursor => project(".cursor/mcp.json", Format::McpServers),
            Host::Vscode => project(".vscode/mcp.json", Format::Vscode),
            Host::Gemini => project(".gemini/settings.json", Format::McpServers),
            Host::Zed => project(".zed/settings.json", Format::Zed),
            _ => None,
        });
        // Run from the home folder, a project file can be the user file itself.
        let mut seen = Vec::new();
        files.retain(|f| {
            let fresh = !seen.contains(&f.path);
            seen.push(f.path.clone());
            fresh
        });
        files
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `--host` values; none means every host.
///
/// # Errors
/// The first unknown name.
pub fn hosts_from_names(names: &[String]) -> Result<Vec<Host>, HostError> {
    if names.is_empty() {
        return Ok(Host::ALL.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        let h = Host::from_name(n)?;
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

/// Where to look: the home folder, the XDG config folder, Codex's home and the project folder.
/// Resolved from the environment so that tests can point everything into a temp dir.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$HOME`.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME`, or `~/.config`.
    pub config: PathBuf,
    /// `$CODEX_HOME`, or `~/.codex`.
    pub codex_home: PathBuf,
    /// The project whose `.mcp.json`, `.vscode/mcp.json`, … are read (none: user files only).
    pub project: Option<PathBuf>,
}

impl Paths {
    /// From `$HOME`, `$XDG_CONFIG_HOME` and `$CODEX_HOME`.
    pub fn from_env(project: Option<PathBuf>) -> Paths {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::config::expand_home(Path::new("~")));
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Paths {
            config: var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config")),
            codex_home: var("CODEX_HOME").unwrap_or_else(|| home.join(".codex")),
            home,
            project,
        }
    }
}

/// Whether a file belongs to the user or to one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The user's own config (applies everywhere).
    User,
    /// A project's config (checked in with the project, usually).
    Project,
}

/// How a file keeps its servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON with a top-level `mcpServers` object (Claude Desktop, Cursor, Windsurf, Gemini, `.mcp.json`).
    McpServers,
    /// `~/.claude.json`: top-level `mcpServers` and `projects.<dir>.mcpServers`.
    ClaudeCode,
    /// VS Code: JSONC with `servers` (and `inputs`, kept as they are).
    Vscode,
    /// Zed: JSONC with `context_servers`, flat or with a nested `command` object.
    Zed,
    /// Codex: TOML with `[mcp_servers.NAME]` tables.
    Codex,
}

/// One config file of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFile {
    /// The host that reads it.
    pub host: Host,
    /// Where it is.
    pub path: PathBuf,
    /// User or project.
    pub scope: Scope,
    /// Its format.
    pub format: Format,
    /// For a project file: the project folder (where the host runs its servers).
    pub project: Option<PathBuf>,
}

/// How an entry starts its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// A local command over stdio: what the mux can run.
    Stdio(Stdio),
    /// A URL (SSE or streamable HTTP): listed, never imported or rewired.
    Remote {
        /// The server's URL.
        url: String,
    },
    /// Something the mux cannot run as it is (an extension's server, host-only variables, …).
    Unsupported {
        /// Why, for the user.
        why: String,
    },
}

/// A stdio server's command line and environment, as the host has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stdio {
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its added environment. Secrets: never printed.
    pub env: BTreeMap<String, String>,
    /// Its working directory, when the host sets one.
    pub cwd: Option<String>,
}

impl Stdio {
    /// Whether this entry already runs the mux's proxy (so it was rewired, or set up by hand).
    pub fn is_proxy(&self) -> bool {
        let base = Path::new(&self.command)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        base == "rmcp-mux-proxy"
            || (base == "rmcp-mux" && self.args.first().is_some_and(|a| a == "proxy"))
    }
}

/// One server entry found in a host file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The host.
    pub host: Host,
    /// The file it is in.
    pub file: PathBuf,
    /// User or project file.
    pub scope: Scope,
    /// The project folder the entry belongs to: that of a project file, or the key of Claude
    /// Code's per-project entries in `~/.claude.json`. Hosts run such servers in it.
    pub project: Option<String>,
    /// The keys leading to the entry, e.g. `["mcpServers", "memory"]`.
    pub key_path: Vec<String>,
    /// The server's name in the host.
    pub name: String,
    /// How it starts.
    pub launch: Launch,
}

impl Entry {
    /// The stdio launch, when the mux could run it (not remote, not already the proxy).
    pub fn runnable(&self) -> Option<&Stdio> {
        match &self.launch {
            Launch::Stdio(s) if !s.is_proxy() => Some(s),
            _ => None,
        }
    }

    /// The launch as the mux must run it: a project's entry whose arguments name relative paths
    /// (`.`, `./x`, `../x`), or that has a relative `cwd`, runs in the project folder, as the
    /// host runs it.
    pub fn effective(&self) -> Option<Stdio> {
        let mut s = self.runnable()?.clone();
        let Some(project) = &self.project else {
            return Some(s);
        };
        let relative =
            |a: &str| a == "." || a == ".." || a.starts_with("./") || a.starts_with("../");
        s.cwd = match s.cwd.take() {
            Some(c) if Path::new(&c).is_relative() && !c.starts_with('~') => {
                Some(Path::new(project).join(c).display().to_string())
            }
            Some(c) => Some(c),
            None if s.args.iter().any(|a| relative(a)) => Some(project.clone()),
            None => None,
        };
        Some(s)
    }
}

/// An entry as the format parsers see it, before the host and file are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// The keys leading to the entry.
    pub key_path: Vec<String>,
    /// The server's name.
    pub name: String,
    /// Claude Code's project folder for per-project entries.
    pub project: Option<String>,
    /// How it starts.
    pub launch: Launch,
}

/// A syntax error at a 1-based line and column, before the file name is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What was wrong.
    pub message: String,
    /// When the syntax is fine but the shape is not: the key.
    pub key: Option<String>,
}

impl SyntaxError {
    fn shape(key: impl Into<String>, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            line: 0,
            col: 0,
            message: message.into(),
            key: Some(key.into()),
        }
    }

    /// Attaches the file.
    pub fn in_file(self, path: &Path) -> HostError {
        match self.key {
            Some(key) => HostError::Shape {
                path: path.to_owned(),
                key,
                message: self.message,
            },
            None => HostError::Parse {
                path: path.to_owned(),
                line: self.line,
                col: self.col,
                message: self.message,
            },
        }
    }
}

/// The entries of one file's text (pure).
///
/// # Errors
/// A syntax error or a key with the wrong kind of value.
pub fn parse_entries(text: &str, format: Format) -> Result<Vec<RawEntry>, SyntaxError> {
    match format {
        Format::Codex => codex::entries(text),
        _ => json::entries(text, format),
    }
}

/// Reads a file if it exists (`None` when it does not).
///
/// # Errors
/// [`HostError::Read`] for anything but "not found".
pub fn read_optional(path: &Path) -> Result<Option<String>, HostError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Every entry of one host file; an absent file has none.
///
/// # Errors
/// The file cannot be read or parsed.
pub fn scan_file(file: &HostFile) -> Result<Vec<Entry>, HostError> {
    let Some(text) = read_optional(&file.path)? else {
        return Ok(vec![]);
    };
    let raw = parse_entries(&text, file.format).map_err(|e| e.in_file(&file.path))?;
    Ok(raw
        .into_iter()
        .map(|r| Entry {
            host: file.host,
            file: file.path.clone(),
            scope: file.scope,
            project: r
                .project
                .or_else(|| file.project.as_ref().map(|p| p.display().to_string())),
            key_path: r.key_path,
            name: r.name,
            launch: r.launch,
        })
        .collect())
}

/// Every entry of every file of `hosts`. A file that cannot be parsed is an error for the
/// whole scan: a half-read setup would import or rewire the wrong thing.
///
/// # Errors
/// The first file that cannot be read or parsed.
pub fn scan(hosts: &[Host], paths: &Paths) -> Result<Vec<Entry>, HostError> {
    let mut out = Vec::new();
    for h in hosts {
        for f in h.files(paths) {
            out.extend(scan_file(&f)?);
        }
    }
    Ok(out)
}

/// One entry as `scan --json` prints it. Env values are masked.
#[derive(Debug, Serialize)]
pub struct ScanItem {
    /// The host's name.
    pub host: &'static str,
    /// The server's name in the host.
    pub name: String,
    /// `stdio`, `remote` or `unsupported`.
    pub kind: &'static str,
    /// The program (stdio only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments (empty for remote entries).
    pub args: Vec<String>,
    /// Env keys with masked values.
    pub env: BTreeMap<String, String>,
    /// The URL of a remote server, without its query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why the mux cannot run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The file it is in.
    pub file: PathBuf,
    /// `user` or `project`.
    pub scope: Scope,
    /// Claude Code's project folder for per-project entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Whether it already runs rmcp-mux-proxy.
    pub rewired: bool,
    /// The `share` an import would give it (stdio only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<crate::config::Share>,
    /// Why that share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_reason: Option<&'static str>,
}

/// What env values look like in output.
pub const MASK: &str = "***";

/// A URL without a password, query or fragment (they often carry tokens).
pub fn display_url(url: &str) -> String {
    let mut out = match url.find(['?', '#']) {
        Some(i) => format!("{}?{MASK}", &url[..i]),
        None => url.to_owned(),
    };
    let authority = out.find("://").map(|i| i + 3);
    if let Some(start) = authority {
        let end = out[start..].find('/').map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@') {
            out.replace_range(start..start + at, MASK);
        }
    }
    out
}

impl From<&Entry> for ScanItem {
    fn from(e: &Entry) -> ScanItem {
        let mut item = ScanItem {
            host: e.host.name(),
            name: e.name.clone(),
            kind: "stdio",
            command: None,
            args: vec![],
            env: BTreeMap::new(),
            url: None,
            reason: None,
            file: e.file.clone(),
            scope: e.scope,
            project: e.project.clone(),
            rewired: false,
            share: None,
            share_reason: None,
        };
        match &e.launch {
            Launch::Stdio(s) => {
                item.command = Some(s.command.clone());
                item.args = s.args.clone();
                item.env = s.env.keys().map(|k| (k.clone(), MASK.to_owned())).collect();
                item.rewired = s.is_proxy();
                let suggested = share::suggest(s);
                item.share = Some(suggested.share);
                item.share_reason = Some(suggested.why);
            }
            Launch::Remote { url } => {
                item.kind = "remote";
                item.url = Some(display_url(url));
            }
            Launch::Unsupported { why } => {
                item.kind = "unsupported";
                item.reason = Some(why.clone());
            }
        }
        item
    }
}

/// The human `scan` listing: one block per file, one line per server.
pub fn render_scan(entries: &[Entry]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut last: Option<(&'static str, &Path)> = None;
    for e in entries {
        if last != Some((e.host.name(), e.file.as_path())) {
            let _ = writeln!(
                out,
                "{} ({}): {}",
                e.host,
                scope_name(e.scope),
                e.file.display()
            );
            last = Some((e.host.name(), e.file.as_path()));
        }
        let item = ScanItem::from(e);
        let what = match &e.launch {
            Launch::Stdio(s) => {
                let mut w = shell_words(&s.command, &s.args);
                if !s.env.is_empty() {
                    let env: Vec<String> = s.env.keys().map(|k| format!("{k}={MASK}")).collect();
                    let _ = write!(w, "  [env {}]", env.join(" "));
                }
                if s.is_proxy() {
                    w.push_str("  (rewired)");
                }
                w
            }
            Launch::Remote { .. } => item.url.clone().unwrap_or_default(),
            Launch::Unsupported { why } => why.clone(),
        };
        let project = e
            .project
            .as_ref()
            .map(|p| format!(" [project {p}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {:<20} {:<11} {what}{project}", e.name, item.kind);
    }
    if out.is_empty() {
        out.push_str("no MCP servers found in any known host config\n");
    }
    out
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::User => "user",
        Scope::Project => "project",
    }
}

/// A command line for display, quoting words with spaces.
fn shell_words(command: &str, args: &[String]) -> String {
    std::iter::once(command)
        .chain(args.iter().map(String::as_str))
        .map(|w| {
            if w.is_empty() || w.contains([' ', '"', '\'']) {
                format!("{w:?}")
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_host_suggests_the_closest() {
        let e = Host::from_name("claude-dekstop").unwrap_err().to_string();
        assert!(e.contains("did you mean `claude-desktop`"), "{e}");
        let e = Host::from_name("emacs").unwrap_err().to_string();
        assert!(
            e.contains("known hosts: claude-desktop, claude-code"),
            "{e}"
        );
    }

    #[test]
    fn files_follow_home_and_xdg() {
        let paths = Paths {
            home: "/h".into(),
            config: "/x".into(),
            codex_home: "/h/.codex".into(),
            project: Some("/p".into()),
        };
        let f: Vec<PathBuf> = Host::Vscode
            .files(&paths)
            .into_iter()
            .map(|f| f.path)
            .collect();
        if cfg!(target_os = "macos") {
            assert_eq!(
                f[0],
                PathBuf::from("/h/Library/Application Support/Code/User/mcp.json")
            );
        } else {
            assert_eq!(f[0], PathBuf::from("/x/Code/User/mcp.json"));
        }
        assert_eq!(f[1], PathBuf::from("/p/.vscode/mcp.json"));
        assert_eq!(
            Host::Zed.files(&paths)[0].path,
            PathBuf::from("/x/zed/settings.json")
        );
        assert_eq!(
            Host::Codex.files(&paths)[0].path,
            PathBuf::from("/h/.codex/config.toml")
        );
    }

    #[test]
    fn proxy_commands_are_recognised() {
        let s = |c: &str, a: &[&str]| Stdio {
            command: c.into(),
            args: a.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
        };
        assert!(s("/usr/local/bin/rmcp-mux-proxy", &["--socket", "x"]).is_proxy());
        assert!(s("rmcp-mux", &["proxy", "--socket", "x"]).is_proxy());
        assert!(!s("npx", &["rmcp-mux-proxy"]).is_proxy());
    }

    #[test]
    fn urls_lose_their_query() {
        assert_eq!(display_url("https://a/b?key=s3cret"), "https://a/b?***");
        assert_eq!(display_url("https://a/b"), "https://a/b");
        assert_eq!(display_url("https://me:pw@a/b?x"), "https://***@a/b?***");
    }
}
