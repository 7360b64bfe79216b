//! `rmcp-mux import`: copies the stdio servers found in host configs into `mux.toml`,
//! deduplicated by command, arguments and environment.
//!
//! [`plan`] and [`render_tables`] are pure; [`run`] reads and writes the mux config. The
//! existing file is never rewritten: new `[servers.NAME]` tables (rendered by `toml_edit`) are
//! appended, the result is validated before it is written, and it is written 0600 when it holds
//! copied env values. Env values are never part of any message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, ServerConfig, Share};

use super::{rewire, Entry, Host, HostError, Launch, Paths, Stdio};

/// Why an import failed: the host side or the mux config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A host file could not be read or parsed, or the mux config not written.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The mux config is not valid (before or after the import).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What identifies a server for dedup: the command line and environment after the mux's own
/// expansion (`~`), so a host entry and the mux server it was imported as compare equal; and
/// the working directory, which only project entries with relative paths set
/// ([`Entry::effective`]), so that `fs .` of two projects stays two servers.
pub type Key = (
    String,
    Vec<String>,
    BTreeMap<String, String>,
    Option<String>,
);

/// A host value as a `mux.toml` literal: the mux expands `$VAR`, hosts pass `$` through.
pub fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// The dedup key of a host entry, expanded as the mux will expand the imported copy.
pub fn host_key(s: &Stdio, home: &Path) -> Key {
    let x = |v: &str| {
        crate::config::expand(&literal(v), home, |_| None).unwrap_or_else(|_| v.to_owned())
    };
    (
        x(&s.command),
        s.args.iter().map(|a| x(a)).collect(),
        s.env.iter().map(|(k, v)| (k.clone(), x(v))).collect(),
        s.cwd.as_deref().map(x),
    )
}

/// The dedup key of a server of the mux config.
pub fn server_key(s: &ServerConfig) -> Key {
    (
        s.cmd.clone(),
        s.args.clone(),
        s.env.clone(),
        s.cwd.as_ref().map(|c| c.display().to_string()),
    )
}

/// One server to add to `mux.toml`.
#[derive(Clone, Debug)]
pub struct NewServer {
    /// Its name in `mux.toml`.
    pub name: String,
    /// What it runs.
    pub stdio: Stdio,
    /// Where it was found (host, file), first one first.
    pub from: Vec<(Host, PathBuf)>,
    /// Who shares one child of it, from the table of known servers.
    pub share: super::share::Suggestion,
}

/// What an import will do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Servers to add.
    pub add: Vec<NewServer>,
    /// One line per entry that is not added, or added under another name, saying why.
    pub notes: Vec<String>,
}

/// A host's name as a mux server name (letters, digits, `_`, `.`, `-`; they name sockets).
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let s = s.trim_matches(['-', '.']).to_owned();
    if s.is_empty() {
        "server".into()
    } else {
        s
    }
}

/// Decides what to add (pure).
pub fn plan(existing: &[ServerConfig], entries: &[Entry], home: &Path) -> Plan {
    let mut plan = Plan::default();
    let mut by_key: BTreeMap<Key, Result<usize, String>> = existing
        .iter()
        .map(|s| (server_key(s), Err(s.name.clone())))
        .collect();
    let mut taken: Vec<String> = existing.iter().map(|s| s.name.clone()).collect();
    for e in entries {
        let at = format!("{} ({}, {})", e.name, e.host, e.file.display());
        let s = match &e.launch {
            Launch::Remote { .. } => {
                plan.notes.push(format!(
                    "skipped {at}: remote server; the mux runs local commands"
                ));
                continue;
            }
            Launch::Unsupported { why } => {
                plan.notes.push(format!("skipped {at}: {why}"));
                continue;
            }
            Launch::Stdio(s) if s.is_proxy() => {
                plan.notes
                    .push(format!("skipped {at}: already runs rmcp-mux-proxy"));
                continue;
            }
            Launch::Stdio(_) => match e.effective() {
                Some(s) => s,
                None => continue,
            },
        };
        let share = super::share::suggest(&s);
        let mut s = s;
        if share.share == Share::Project && s.cwd.is_some() && s.cwd == e.project {
            // Run in whichever project a host starts it in, not in the one it was found in
            // (the same server of two projects is then one server).
            s.cwd = None;
        }
        let key = host_key(&s, home);
        match by_key.get(&key) {
            Some(Err(name)) => {
                plan.notes
                    .push(format!("skipped {at}: already in mux.toml as `{name}`"));
                continue;
            }
            Some(Ok(i)) => {
                let i = *i;
                plan.add[i].from.push((e.host, e.file.clone()));
                let name = plan.add[i].name.clone();
                plan.notes.push(format!(
                    "skipped {at}: same server as `{name}` (added once)"
                ));
                continue;
            }
            None => {}
        }
        let base = sanitize(&e.name);
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        if name != e.name {
            let why = if base != e.name {
                "names may only use letters, digits, `_`, `.` and `-`".to_owned()
            } else {
                format!("a different server is already called `{}`", e.name)
            };
            plan.notes.push(format!("renamed {at} to `{name}`: {why}"));
        }
        taken.push(name.clone());
        by_key.insert(key, Ok(plan.add.len()));
        plan.add.push(NewServer {
            name,
            stdio: s,
            from: vec![(e.host, e.file.clone())],
            share,
        });
    }
    plan
}

/// The `[servers.NAME]` tables for `add`, rendered by `toml_edit` (quoting and escaping).
pub fn render_tables(add: &[NewServer]) -> String {
    use toml_edit::{value, Array, DocumentMut, InlineTable, Item, Table};
    let mut out = String::new();
    for s in add {
        let mut t = Table::new();
        t["cmd"] = value(literal(&s.stdio.command));
        let args: Array = s.stdio.args.iter().map(|a| literal(a)).collect();
        t["args"] = value(args);
        if !s.stdio.env.is_empty() {
            let mut env = InlineTable::new();
            for (k, v) in &s.stdio.env {
                env.insert(k, literal(v).into());
            }
            t["env"] = value(env);
        }
        if let Some(cwd) = &s.stdio.cwd {
            t["cwd"] = value(literal(cwd));
        }
        if s.share.share != Share::Global {
            t["share"] = value(s.share.share.as_str());
        }
        let mut servers = Table::new();
        servers.set_implicit(true);
        servers.insert(&s.name, Item::Table(t));
        let mut doc = DocumentMut::new();
        doc.insert("servers", Item::Table(servers));
        let from: Vec<String> = s
            .from
            .iter()
            .map(|(h, f)| format!("{h} ({})", f.display()))
            .collect();
        out.push_str(&format!("\n# imported from {}\n", from.join(", ")));
        out.push_str(&doc.to_string());
    }
    out
}

/// What `run` did, for the user.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per server added.
    pub added: Vec<String>,
    /// One line per entry skipped or renamed.
    pub notes: Vec<String>,
    /// The config written (or that would have been).
    pub config: PathBuf,
    /// When the config written has no HTTP front: how to turn it on, with a port free now.
    pub http_hint: Option<String>,
    /// The hosts the added servers came from, each once, in the order they were read.
    pub from: Vec<Host>,
}

/// The port suggested for the HTTP front: the first of 7311..=7330 free on 127.0.0.1 (a fixed
/// port is easier to recognise and stays put across imports), else any free one; `None` when
/// loopback cannot be bound at all.
pub fn free_port() -> Option<u16> {
    let bind = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).ok();
    (7311..=7330)
        .find(|p| bind(*p).is_some())
        .or_else(|| bind(0)?.local_addr().ok().map(|a| a.port()))
}

/// The commented `[daemon] http` lines import adds to a config without a `[daemon]` table.
fn http_block(port: u16) -> String {
    format!(
        "\n# The HTTP front: hosts that connect by URL reach the servers with no process of their\n\
         # own (`rmcp-mux rewire --host NAME --via http`). Uncomment to turn it on; the port was\n\
         # free when `rmcp-mux import` wrote this.\n\
         # [daemon]\n\
         # http = \"127.0.0.1:{port}\"\n"
    )
}

/// Imports every runnable server of `hosts` into the config at `config_path` (created when
/// missing). Importing twice adds nothing.
///
/// # Errors
/// A host file that cannot be parsed, an invalid mux config, or a failed write.
pub fn run(config_path: &Path, hosts: &[Host], paths: &Paths) -> Result<Report, ImportError> {
    let entries = super::scan(hosts, paths)?;
    let existing_text = super::read_optional(config_path)?;
    let text = existing_text.clone().unwrap_or_default();
    let has_servers = text
        .parse::<toml_edit::DocumentMut>()
        .ok()
        .and_then(|d| {
            d.get("servers")
                .and_then(|s| s.as_table_like())
                .map(|t| !t.is_empty())
        })
        .unwrap_or(false);
    let existing = if has_servers
        || (existing_text.is_some() && text.parse::<toml_edit::DocumentMut>().is_err())
    {
        Config::from_toml(&text, config_path)?.servers
    } else {
        vec![]
    };
    let plan = plan(&existing, &entries, &paths.home);
    let mut report = Report {
        notes: plan.notes.clone(),
        config: config_path.to_owned(),
        ..Report::default()
    };
    if plan.add.is_empty() {
        return Ok(report);
    }
    let mut new_text = if existing_text.is_none() {
        "# rmcp-mux config (see the README's \"Configuration\" section).\n".to_owned()
    } else {
        text.clone()
    };
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&render_tables(&plan.add));
    // Never write a config the daemon would refuse.
    let cfg = Config::from_toml(&new_text, config_path)?;
    if cfg.daemon.http.is_none() {
        if let Some(port) = free_port() {
            let has_daemon = new_text
                .parse::<toml_edit::DocumentMut>()
                .is_ok_and(|d| d.contains_key("daemon"));
            let addr = format!("http = \"127.0.0.1:{port}\"");
            report.http_hint = Some(if has_daemon {
                format!(
                    "the HTTP front is off: add `{addr}` under [daemon] (port {port} is free now) so that hosts that connect by URL need no process of their own (`rmcp-mux rewire --host NAME --via http`)"
                )
            } else {
                // Suggested by an earlier import already: that line stays the suggestion.
                let (what, port_note) = if new_text.contains("# http = \"127.0.0.1:") {
                    (
                        "the `# [daemon]` and `# http = …` lines in".to_owned(),
                        String::new(),
                    )
                } else {
                    new_text.push_str(&http_block(port));
                    Config::from_toml(&new_text, config_path)?;
                    (
                        format!("`[daemon]` and `{addr}` at the end of"),
                        format!(" (port {port} is free now)"),
                    )
                };
                format!(
                    "the HTTP front is off: uncomment {what} {}{port_note} so that hosts that connect by URL need no process of their own (`rmcp-mux rewire --host NAME --via http`)",
                    config_path.display()
                )
            });
        }
    }
    let secrets = plan.add.iter().any(|s| !s.stdio.env.is_empty());
    if let Some(dir) = config_path.parent() {
        rewire::create_private_dir(dir)?;
    }
    rewire::write_atomic(config_path, new_text.as_bytes(), secrets.then_some(0o600))?;
    for s in &plan.add {
        for (h, _) in &s.from {
            if !report.from.contains(h) {
                report.from.push(*h);
            }
        }
        let from: Vec<String> = s.from.iter().map(|(h, _)| h.to_string()).collect();
        let env = if s.stdio.env.is_empty() {
            String::new()
        } else {
            format!(
                " [env {}]",
                s.stdio
                    .env
                    .keys()
                    .map(|k| format!("{k}={}", super::MASK))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        report.added.push(format!(
            "added {} (from {}): {}{env}; share = \"{}\": {}",
            s.name,
            from.join(", "),
            s.stdio.command,
            s.share.share.as_str(),
            s.share.why
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::Scope;

    fn entry(host: Host, name: &str, cmd: &str, env: &[(&str, &str)]) -> Entry {
        Entry {
            host,
            file: "/f".into(),
            scope: Scope::User,
            project: None,
            key_path: vec![],
            name: name.into(),
            launch: Launch::Stdio(Stdio {
                command: cmd.into(),
                args: vec!["-y".into()],
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                cwd: None,
            }),
        }
    }

    #[test]
    fn dedups_across_hosts_and_suffixes_clashes() {
        let e = vec![
            entry(Host::Cursor, "memory", "npx", &[("K", "v")]),
            entry(Host::ClaudeDesktop, "mem", "npx", &[("K", "v")]),
            entry(Host::Zed, "memory", "uvx", &[]),
            entry(Host::Zed, "my server", "x", &[]),
        ];
        let p = plan(&[], &e, Path::new("/h"));
        let names: Vec<&str> = p.add.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["memory", "memory-2", "my-server"]);
        assert_eq!(p.add[0].from.len(), 2);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("renamed memory (zed") && n.contains("memory-2")),
            "{:?}",
            p.notes
        );
        assert!(!p.notes.iter().any(|n| n.contains('v') && n.contains("K=")));
    }

    #[test]
    fn share_is_chosen_from_known_servers_and_a_project_folder_is_left_to_each_host() {
        let with = |name: &str, project: Option<&str>, args: &[&str]| Entry {
            project: project.map(Into::into),
            scope: if project.is_some() {
                Scope::Project
            } else {
                Scope::User
            },
            launch: Launch::Stdio(Stdio {
                command: "npx".into(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                env: BTreeMap::new(),
                cwd: None,
            }),
            ..entry(Host::Cursor, name, "npx", &[])
        };
        let e = vec![
            with("playwright", None, &["-y", "@playwright/mcp@latest"]),
            with(
                "fs",
                Some("/src/a"),
                &["-y", "@modelcontextprotocol/server-filesystem", "."],
            ),
            with(
                "fs",
                Some("/src/b"),
                &["-y", "@modelcontextprotocol/server-filesystem", "."],
            ),
            with(
                "memory",
                None,
                &["-y", "@modelcontextprotocol/server-memory"],
            ),
        ];
        let p = plan(&[], &e, Path::new("/h"));
        let got: Vec<(&str, Share, Option<&str>)> = p
            .add
            .iter()
            .map(|s| (s.name.as_str(), s.share.share, s.stdio.cwd.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("playwright", Share::Client, None),
                ("fs", Share::Project, None),
                ("memory", Share::Global, None)
            ],
            "the filesystem server of two projects is one server per project"
        );
        let t = render_tables(&p.add);
        let cfg = Config::from_toml(&t, Path::new("/c/mux.toml")).unwrap();
        let shares: Vec<Share> = cfg.servers.iter().map(|s| s.share).collect();
        assert_eq!(shares, [Share::Client, Share::Project, Share::Global]);
        assert!(
            !t.contains("share = \"global\""),
            "the default is not written: {t}"
        );
    }

    #[test]
    fn tables_escape_dollars_and_keep_env() {
        let e = vec![entry(Host::Cursor, "m", "$HOME/bin/x", &[("K", "a\"b")])];
        let p = plan(&[], &e, Path::new("/h"));
        let t = render_tables(&p.add);
        assert!(
            t.contains(
                "[servers.m]\ncmd = \"$$HOME/bin/x\"\nargs = [\"-y\"]\nenv = { K = 'a\"b' }\n"
            ),
            "{t}"
        );
        let cfg = Config::from_toml(&t, Path::new("/c/mux.toml")).unwrap();
        assert_eq!(cfg.servers[0].cmd, "$HOME/bin/x");
        assert_eq!(
            server_key(&cfg.servers[0]),
            host_key(
                match &e[0].launch {
                    Launch::Stdio(s) => s,
                    _ => unreachable!(),
                },
                Path::new("/h")
            )
        );
    }
}
