//! `scan`, `import`, `rewire` and `unwire` with the real `rmcp-mux` binary, on fixture configs of
//! every host written into a temp HOME and XDG_CONFIG_HOME; and one real end-to-end run where a
//! rewired Claude-Desktop-style entry, started as a host starts it, reaches the real
//! server-memory through the daemon.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};
use support::*;

const SECRET: &str = "s3cr3t-token-value";
const OTHER_SECRET: &str = "another-s3cr3t";

/// A temp HOME with every host's config written in it.
struct Setup {
    dir: Arc<tempfile::TempDir>,
}

impl Setup {
    fn empty() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for d in ["home", "xdg", "proj"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Setup { dir: Arc::new(dir) }
    }

    fn new() -> Setup {
        let s = Setup::empty();
        for (rel, text) in fixtures() {
            s.write(&rel, &text);
        }
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn mux_toml(&self) -> PathBuf {
        self.path("home/.rmcp-mux/mux.toml")
    }

    /// Runs `rmcp-mux ARGS` in the project folder; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(MUX)
            .args(args)
            .current_dir(self.path("proj"))
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env_remove("RMCP_MUX_CONFIG")
            .env_remove("CODEX_HOME")
            .env_remove("RMCP_MUX_LOG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "rmcp-mux {args:?} failed:\n{out}\n{err}");
        out
    }

    fn scan_json(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["scan", "--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Every file under the temp dir with its bytes (to prove what changed and what did not).
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    fn records(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.path("home/.rmcp-mux/rewire")) {
            Ok(l) => l.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    }
}

fn claude_desktop_rel() -> &'static str {
    if cfg!(target_os = "macos") {
        "home/Library/Application Support/Claude/claude_desktop_config.json"
    } else {
        "xdg/Claude/claude_desktop_config.json"
    }
}

fn vscode_rel() -> &'static str {
    if cfg!(target_os = "macos") {
        "home/Library/Application Support/Code/User/mcp.json"
    } else {
        "xdg/Code/User/mcp.json"
    }
}

const MEMORY_ARGS: &str = r#"["-y", "@modelcontextprotocol/server-memory"]"#;

/// (relative path, text) of every host's fixture.
fn fixtures() -> Vec<(String, String)> {
    vec![
        (
            claude_desktop_rel().into(),
            format!(
                r#"{{
  "mcpServers": {{
    "memory": {{
      "command": "npx",
      "args": {MEMORY_ARGS},
      "env": {{ "API_TOKEN": "{SECRET}" }}
    }},
    "everything": {{
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-everything"]
    }}
  }},
  "globalShortcut": "Ctrl+Space"
}}
"#
            ),
        ),
        (
            "home/.claude.json".into(),
            format!(
                r#"{{
  "numStartups": 12,
  "mcpServers": {{
    "time": {{ "type": "stdio", "command": "uvx", "args": ["mcp-server-time"], "env": {{}} }}
  }},
  "projects": {{
    "/work/app": {{
      "allowedTools": [],
      "mcpServers": {{
        "memory": {{
          "type": "stdio",
          "command": "npx",
          "args": {MEMORY_ARGS},
          "env": {{ "API_TOKEN": "{SECRET}" }}
        }},
        "linear": {{ "type": "http", "url": "https://mcp.linear.app/mcp" }}
      }}
    }}
  }}
}}
"#
            ),
        ),
        (
            "proj/.mcp.json".into(),
            r#"{"mcpServers": {"fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."]}}}
"#
            .into(),
        ),
        (
            "home/.cursor/mcp.json".into(),
            format!(
                r#"{{
    "mcpServers": {{
        "memory": {{
            "command": "npx",
            "args": {MEMORY_ARGS},
            "env": {{ "API_TOKEN": "{SECRET}" }}
        }},
        "search": {{ "url": "https://mcp.example.com/sse?token=url-token-123" }}
    }}
}}
"#
            ),
        ),
        (
            "proj/.cursor/mcp.json".into(),
            format!(
                r#"{{
  "mcpServers": {{
    "memory": {{ "command": "npx", "args": {MEMORY_ARGS}, "env": {{ "API_TOKEN": "{OTHER_SECRET}" }} }}
  }}
}}
"#
            ),
        ),
        (
            vscode_rel().into(),
            format!(
                "// VS Code MCP servers\n{{\n\t\"inputs\": [\n\t\t{{ \"type\": \"promptString\", \"id\": \"gh-token\", \"description\": \"GitHub token\", \"password\": true }},\n\t],\n\t\"servers\": {{\n\t\t// the knowledge graph\n\t\t\"memory\": {{\n\t\t\t\"type\": \"stdio\",\n\t\t\t\"command\": \"npx\",\n\t\t\t\"args\": [\"-y\", \"@modelcontextprotocol/server-memory\",],\n\t\t\t\"env\": {{ \"API_TOKEN\": \"{SECRET}\" }},\n\t\t}},\n\t\t\"github\": {{\n\t\t\t\"type\": \"stdio\",\n\t\t\t\"command\": \"docker\",\n\t\t\t\"args\": [\"run\", \"-i\", \"--rm\", \"ghcr.io/github/github-mcp-server\"],\n\t\t\t\"env\": {{ \"GITHUB_TOKEN\": \"${{input:gh-token}}\" }}\n\t\t}},\n\t\t\"remote\": {{ \"type\": \"http\", \"url\": \"https://api.example.com/mcp\" }}, /* remote */\n\t}},\n}}\n"
            ),
        ),
        (
            "home/.codeium/windsurf/mcp_config.json".into(),
            r#"{
    "mcpServers": {
        "everything": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-everything"]
        },
        "deepwiki": { "serverUrl": "https://mcp.deepwiki.com/sse" }
    }
}
"#
            .into(),
        ),
        (
            "home/.codex/config.toml".into(),
            format!(
                r#"# Codex config
model = "o3"  # the default model

[mcp_servers.memory]
# the knowledge graph
command = "npx"
args = {MEMORY_ARGS}
env = {{ API_TOKEN = "{SECRET}" }}
startup_timeout_sec = 20

[mcp_servers.docs]
url = "https://docs.example.com/mcp"

[profiles.fast]
model = "o4-mini"
"#
            ),
        ),
        (
            "home/.gemini/settings.json".into(),
            r#"{
  "theme": "Dracula",
  "mcpServers": {
    "time": { "command": "uvx", "args": ["mcp-server-time"], "timeout": 30000, "trust": false },
    "api": { "httpUrl": "https://api.example.com/mcp" }
  }
}
"#
            .into(),
        ),
        (
            "xdg/zed/settings.json".into(),
            format!(
                r#"// Zed settings
{{
  "theme": "One Dark",
  "context_servers": {{
    // the old shape
    "memory": {{
      "command": {{
        "path": "npx",
        "args": {MEMORY_ARGS},
        "env": {{ "API_TOKEN": "{SECRET}" }},
      }},
      "settings": {{}},
    }},
    "time": {{ "source": "custom", "command": "uvx", "args": ["mcp-server-time"] }},
    "postgres": {{ "settings": {{ "database_url": "postgres://localhost/db" }} }},
  }},
}}
"#
            ),
        ),
    ]
}

fn find<'a>(items: &'a [Value], host: &str, name: &str) -> &'a Value {
    items
        .iter()
        .find(|v| v["host"] == host && v["name"] == name)
        .unwrap_or_else(|| panic!("no {host}/{name} in {items:#?}"))
}

#[test]
fn scan_lists_every_host_with_secrets_masked() {
    let s = Setup::new();
    let (code, out, err) = s.run(&["scan", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(SECRET) && !out.contains(OTHER_SECRET) && !out.contains("url-token-123"),
        "a secret was printed:\n{out}"
    );
    let items: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(items.len(), 21, "{items:#?}");

    let m = find(&items, "claude-desktop", "memory");
    assert_eq!(m["kind"], "stdio");
    assert_eq!(m["command"], "npx");
    assert_eq!(
        m["args"],
        json!(["-y", "@modelcontextprotocol/server-memory"])
    );
    assert_eq!(m["env"], json!({"API_TOKEN": "***"}));
    assert_eq!(
        m["file"],
        s.path(claude_desktop_rel()).display().to_string()
    );
    assert_eq!(m["rewired"], false);

    let cc: Vec<&Value> = items
        .iter()
        .filter(|v| v["host"] == "claude-code")
        .collect();
    let names: Vec<(&str, &str)> = cc
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("time", "stdio"),
            ("memory", "stdio"),
            ("linear", "remote"),
            ("fs", "stdio")
        ]
    );
    assert_eq!(cc[1]["project"], "/work/app");
    assert_eq!(cc[3]["scope"], "project");
    assert_eq!(
        cc[3]["file"],
        s.path("proj/.mcp.json").display().to_string()
    );

    let search = find(&items, "cursor", "search");
    assert_eq!(search["kind"], "remote");
    assert_eq!(search["url"], "https://mcp.example.com/sse?***");

    let vs = find(&items, "vscode", "memory");
    assert_eq!(
        vs["args"],
        json!(["-y", "@modelcontextprotocol/server-memory"])
    );
    assert_eq!(find(&items, "vscode", "github")["kind"], "unsupported");
    assert_eq!(find(&items, "vscode", "remote")["kind"], "remote");
    assert_eq!(find(&items, "windsurf", "deepwiki")["kind"], "remote");
    let codex = find(&items, "codex", "memory");
    assert_eq!(codex["command"], "npx");
    assert_eq!(codex["env"], json!({"API_TOKEN": "***"}));
    assert_eq!(find(&items, "codex", "docs")["kind"], "remote");
    assert_eq!(
        find(&items, "gemini", "time")["args"],
        json!(["mcp-server-time"])
    );
    assert_eq!(find(&items, "gemini", "api")["kind"], "remote");
    assert_eq!(find(&items, "zed", "memory")["command"], "npx");
    assert_eq!(
        find(&items, "zed", "memory")["env"],
        json!({"API_TOKEN": "***"})
    );
    assert_eq!(find(&items, "zed", "time")["command"], "uvx");
    assert_eq!(find(&items, "zed", "postgres")["kind"], "unsupported");

    // --host narrows the scan; the human listing masks too.
    let only = s.scan_json(&["--host", "gemini", "--host", "zed"]);
    assert_eq!(only.len(), 5);
    let text = s.ok(&["scan"]);
    assert!(
        text.contains("API_TOKEN=***") && !text.contains(SECRET),
        "{text}"
    );
    assert!(text.contains("vscode (user): "), "{text}");
}

#[test]
fn unknown_hosts_and_bad_files_are_clear_errors() {
    let s = Setup::new();
    let (code, _, err) = s.run(&["scan", "--host", "curosr"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "rmcp-mux: unknown host `curosr`; did you mean `cursor`? (known: claude-desktop, claude-code, cursor, vscode, windsurf, codex, gemini, zed)"
    );
    s.write(
        "home/.cursor/mcp.json",
        "{\n  \"mcpServers\": {\n    \"a\": { \"command\": \"x\" \"args\": [] }\n  }\n}\n",
    );
    let (code, _, err) = s.run(&["scan"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        format!(
            "rmcp-mux: {}:3:26: Expected comma",
            s.path("home/.cursor/mcp.json").display()
        )
    );
    s.write("home/.codex/config.toml", "[mcp_servers.x]\ncommand = \n");
    let (code, _, err) = s.run(&["scan", "--host", "codex"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "rmcp-mux: {}:2:",
            s.path("home/.codex/config.toml").display()
        )),
        "{err}"
    );
}

#[test]
fn import_dedups_across_hosts_masks_secrets_and_is_idempotent() {
    let s = Setup::new();
    let (code, out, err) = s.run(&["import"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for text in [&out, &err] {
        assert!(
            !text.contains(SECRET) && !text.contains(OTHER_SECRET),
            "a secret was printed:\n{text}"
        );
    }
    let toml_text = std::fs::read_to_string(s.mux_toml()).unwrap();
    let mode = std::fs::metadata(s.mux_toml())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "mux.toml holds secrets");
    let doc: toml::Table = toml::from_str(&toml_text).unwrap();
    let servers = doc["servers"].as_table().unwrap();
    let mut names: Vec<&str> = servers.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["everything", "fs", "memory", "memory-2", "time"],
        "{toml_text}"
    );
    assert_eq!(servers["memory"]["cmd"].as_str(), Some("npx"));
    assert_eq!(servers["memory"]["env"]["API_TOKEN"].as_str(), Some(SECRET));
    assert_eq!(
        servers["memory-2"]["env"]["API_TOKEN"].as_str(),
        Some(OTHER_SECRET)
    );
    assert!(out.contains("renamed memory (cursor, "), "{out}");
    assert!(
        out.contains("to `memory-2`: a different server is already called `memory`"),
        "{out}"
    );
    assert!(out.contains("skipped search (cursor, "), "{out}");
    assert!(out.contains(": remote server"), "{out}");
    assert!(out.contains("skipped github (vscode, "), "{out}");
    assert!(out.contains("added memory (from claude-desktop, claude-code, cursor, vscode, codex, zed): npx [env API_TOKEN=***]"), "{out}");
    assert!(out.contains("5 servers added to"), "{out}");
    // The mux accepts what import wrote.
    assert_the_mux_loads(&s);

    let before = s.snapshot();
    let out = s.ok(&["import"]);
    assert!(out.contains("nothing to add"), "{out}");
    assert!(out.contains("already in mux.toml as `memory`"), "{out}");
    assert_eq!(s.snapshot(), before, "importing twice changed something");
}

#[test]
fn import_appends_to_an_existing_config_without_touching_it() {
    let s = Setup::new();
    let existing = "# my mux\n[daemon]\nsocket_dir = \"~/socks\"  # short paths\n\n[servers.mem]\ncmd = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-memory\"]\nenv = { API_TOKEN = \"s3cr3t-token-value\" }\n";
    s.write("home/.rmcp-mux/mux.toml", existing);
    let out = s.ok(&["import", "--host", "claude-desktop"]);
    assert!(out.contains("skipped memory (claude-desktop, "), "{out}");
    assert!(out.contains("already in mux.toml as `mem`"), "{out}");
    let text = std::fs::read_to_string(s.mux_toml()).unwrap();
    assert!(text.starts_with(existing), "{text}");
    assert!(text[existing.len()..].contains("[servers.everything]\ncmd = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-everything\"]\n"), "{text}");
    // Its [daemon] table has no HTTP front: the line to add is said, not written.
    assert!(!text.contains("# http ="), "{text}");
    assert!(
        out.contains("the HTTP front is off: add `http = \"127.0.0.1:")
            && out.contains("under [daemon]"),
        "{out}"
    );
}

#[test]
fn import_suggests_a_free_port_for_the_http_front() {
    let s = Setup::new();
    let out = s.ok(&["import"]);
    let toml = std::fs::read_to_string(s.mux_toml()).unwrap();
    let port: u16 = toml
        .lines()
        .find_map(|l| l.strip_prefix("# http = \"127.0.0.1:"))
        .and_then(|p| p.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no suggested http line in {toml}"))
        .parse()
        .unwrap();
    assert!(toml.contains("\n# [daemon]\n# http = "), "{toml}");
    assert!(
        out.contains("the HTTP front is off: uncomment `[daemon]` and ")
            && out.contains(&format!("(port {port} is free now)")),
        "{out}"
    );
    // Uncommented, the mux takes it and the front is on that port.
    let on = toml
        .replace("# [daemon]\n", "[daemon]\n")
        .replace("# http = ", "http = ");
    std::fs::write(s.mux_toml(), &on).unwrap();
    assert_the_mux_loads(&s);
    // With the front on, a later import suggests nothing.
    s.write(
        "home/.cursor/mcp.json",
        r#"{"mcpServers": {"extra": {"command": "extra-server"}}}"#,
    );
    let out = s.ok(&["import", "--host", "cursor"]);
    assert!(out.contains("added extra"), "{out}");
    assert!(!out.contains("HTTP front is off"), "{out}");
    let after = std::fs::read_to_string(s.mux_toml()).unwrap();
    assert_eq!(after.matches("http = ").count(), 1, "{after}");
}

/// The files a host's rewire may change.
fn host_files(host: &str) -> Vec<String> {
    match host {
        "claude-desktop" => vec![claude_desktop_rel().into()],
        "claude-code" => vec!["home/.claude.json".into(), "proj/.mcp.json".into()],
        "cursor" => vec![
            "home/.cursor/mcp.json".into(),
            "proj/.cursor/mcp.json".into(),
        ],
        "vscode" => vec![vscode_rel().into()],
        "windsurf" => vec!["home/.codeium/windsurf/mcp_config.json".into()],
        "codex" => vec!["home/.codex/config.toml".into()],
        "gemini" => vec!["home/.gemini/settings.json".into()],
        "zed" => vec!["xdg/zed/settings.json".into()],
        _ => unreachable!(),
    }
}

fn proxy() -> String {
    std::fs::canonicalize(PROXY).unwrap().display().to_string()
}

#[test]
fn rewire_then_unwire_is_byte_identical_for_every_host() {
    let s = Setup::new();
    s.ok(&["import"]);
    let mux = || {
        std::fs::canonicalize(s.mux_toml())
            .unwrap()
            .display()
            .to_string()
    };
    let sock = |name: &str| {
        s.home()
            .join(format!(".rmcp-mux/sockets/{name}.sock"))
            .display()
            .to_string()
    };
    for host in [
        "claude-desktop",
        "claude-code",
        "cursor",
        "vscode",
        "windsurf",
        "codex",
        "gemini",
        "zed",
    ] {
        let files = host_files(host);
        let originals: Vec<String> = files.iter().map(|f| s.read(f)).collect();
        let out = s.ok(&["rewire", "--host", host]);
        assert!(
            out.contains("note: the daemon is not running"),
            "{host}: {out}"
        );
        assert!(
            out.contains("rewired; `rmcp-mux unwire --host"),
            "{host}: {out}"
        );
        let after: Vec<String> = files.iter().map(|f| s.read(f)).collect();
        for (f, (a, o)) in files.iter().zip(after.iter().zip(&originals)) {
            assert_ne!(a, o, "{host}: {f} unchanged:\n{out}");
            assert!(
                a.contains(&proxy()),
                "{host}: {f} does not run the proxy:\n{a}"
            );
            assert!(
                !a.contains(SECRET) && !a.contains(OTHER_SECRET),
                "{host}: the secret stayed in {f}:\n{a}"
            );
            // A backup of the original sits next to the file.
            let dir = s.path(f).parent().unwrap().to_owned();
            let base = s
                .path(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let backups: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{base}.rmcp-mux-backup-")))
                .collect();
            assert_eq!(backups.len(), 1, "{host}: {backups:?}");
            assert_eq!(&std::fs::read_to_string(dir.join(&backups[0])).unwrap(), o);
        }
        // The scan sees them as rewired; a second rewire changes nothing.
        let items = s.scan_json(&["--host", host]);
        assert!(
            items.iter().any(|v| v["rewired"] == true),
            "{host}: {items:#?}"
        );
        let snap = s.snapshot();
        let again = s.ok(&["rewire", "--host", host]);
        assert!(
            again.contains("already rewired") && again.contains("nothing changed"),
            "{host}: {again}"
        );
        assert_eq!(
            s.snapshot(),
            snap,
            "{host}: the second rewire wrote something"
        );
        // Records are private.
        for r in s.records() {
            assert_eq!(
                std::fs::metadata(&r).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let out = s.ok(&["unwire", "--host", host]);
        assert!(out.contains("restored "), "{host}: {out}");
        for (f, o) in files.iter().zip(&originals) {
            assert_eq!(&s.read(f), o, "{host}: {f} is not back byte for byte");
        }
        assert!(
            s.records().is_empty(),
            "{host}: record left: {:?}",
            s.records()
        );
    }
    // Spot checks of the shapes each host keeps.
    s.ok(&["rewire", "--host", "vscode"]);
    let vs = s.read(vscode_rel());
    assert!(vs.contains(&format!("\t\t\"memory\": {{\n\t\t\t\"type\": \"stdio\",\n\t\t\t\"command\": \"{}\",\n\t\t\t\"args\": [\"--socket\", \"{}\", \"--autostart\", \"--config\", \"{}\"]\n\t\t}},\n", proxy(), sock("memory"), mux())), "{vs}");
    assert!(
        vs.contains("\"GITHUB_TOKEN\": \"${input:gh-token}\""),
        "{vs}"
    );
    assert!(vs.starts_with("// VS Code MCP servers\n{\n\t\"inputs\": [\n\t\t{ \"type\": \"promptString\", \"id\": \"gh-token\""), "{vs}");
    s.ok(&["rewire", "--host", "codex"]);
    let cx = s.read("home/.codex/config.toml");
    assert!(cx.contains(&format!("[mcp_servers.memory]\n# the knowledge graph\ncommand = \"{}\"\nargs = [\"--socket\", \"{}\", \"--autostart\", \"--config\", \"{}\"]\nstartup_timeout_sec = 20\n", proxy(), sock("memory"), mux())), "{cx}");
    assert!(
        cx.starts_with("# Codex config\nmodel = \"o3\"  # the default model\n"),
        "{cx}"
    );
    s.ok(&["rewire", "--host", "zed"]);
    let zed = s.read("xdg/zed/settings.json");
    assert!(zed.contains(&format!("\"command\": {{ \"path\": \"{}\", \"args\": [\"--socket\", \"{}\", \"--autostart\", \"--config\", \"{}\"] }},\n      \"settings\": {{}}\n    }},", proxy(), sock("memory"), mux())), "{zed}");
    assert!(zed.contains(&format!("\"time\": {{ \"source\": \"custom\", \"command\": \"{}\", \"args\": [\"--socket\", \"{}\", \"--autostart\", \"--config\", \"{}\"] }}", proxy(), sock("time"), mux())), "{zed}");
    let cc = s.ok(&["rewire", "--host", "claude-code"]);
    assert!(cc.contains("left linear in "), "{cc}");
    let claude = s.read("home/.claude.json");
    assert!(claude.contains("\"numStartups\": 12"), "{claude}");
    assert!(
        claude.contains(&format!(
            "\"memory\": {{\n          \"type\": \"stdio\",\n          \"command\": \"{}\",",
            proxy()
        )),
        "{claude}"
    );
}

#[test]
fn unwire_keeps_the_users_later_edits() {
    let s = Setup::new();
    s.ok(&["import", "--host", "claude-desktop"]);
    let rel = claude_desktop_rel();
    let original = s.read(rel);
    s.ok(&["rewire", "--host", "claude-desktop"]);
    // The user changes another part of the file, and then the `everything` entry itself.
    let edited = s.read(rel).replace("Ctrl+Space", "Alt+Space");
    s.write(rel, &edited);
    let out = s.ok(&["unwire", "--host", "claude-desktop"]);
    assert!(
        out.contains("restored memory in ") && out.contains("restored everything in "),
        "{out}"
    );
    assert_eq!(s.read(rel), original.replace("Ctrl+Space", "Alt+Space"));

    s.ok(&["rewire", "--host", "claude-desktop"]);
    let sock = s.home().join(".rmcp-mux/sockets/everything.sock");
    let text = s.read(rel);
    assert!(text.contains(sock.to_str().unwrap()), "{text}");
    s.write(
        rel,
        &text.replace(sock.to_str().unwrap(), "/somewhere/else.sock"),
    );
    let out = s.ok(&["unwire", "--host", "claude-desktop"]);
    assert!(
        out.contains("left everything in ") && out.contains("changed since rewire (the backup "),
        "{out}"
    );
    assert!(out.contains("restored memory in "), "{out}");
    let now: Value = serde_json::from_str(&s.read(rel)).unwrap();
    assert_eq!(
        now["mcpServers"]["everything"]["args"].as_array().unwrap()[..2],
        [json!("--socket"), json!("/somewhere/else.sock")]
    );
    assert_eq!(now["mcpServers"]["memory"]["command"], "npx");
    assert_eq!(now["mcpServers"]["memory"]["env"]["API_TOKEN"], SECRET);
    assert!(s.records().is_empty());
    let out = s.ok(&["unwire", "--host", "claude-desktop"]);
    assert!(
        out.contains("nothing to unwire for claude-desktop"),
        "{out}"
    );
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let s = Setup::new();
    s.ok(&["import", "--host", "cursor"]);
    let before = s.snapshot();
    let out = s.ok(&["rewire", "--host", "cursor", "--dry-run"]);
    assert_eq!(s.snapshot(), before, "dry run wrote something");
    let file = s.path("home/.cursor/mcp.json").display().to_string();
    assert!(
        out.contains(&format!("--- {file}\n+++ {file} (rewired)\n@@ ")),
        "{out}"
    );
    assert!(
        out.contains("-            \"command\": \"npx\",\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("+            \"command\": \"{}\",\n", proxy())),
        "{out}"
    );
    assert!(
        out.contains("left search in ") && out.contains("alone: remote server"),
        "{out}"
    );
    assert!(
        out.contains("dry run: 2 entries would change; nothing written"),
        "{out}"
    );
    assert!(
        !out.contains(SECRET),
        "the diff shows a secret line:\n{out}"
    );
    assert!(out.contains("\"env\": { \"API_TOKEN\": \"***\" }"), "{out}");
    assert!(
        !out.contains("url-token-123"),
        "the diff shows a URL's token:\n{out}"
    );
}

#[test]
fn rewire_leaves_servers_the_mux_does_not_run() {
    let s = Setup::new();
    s.ok(&["import", "--host", "gemini"]);
    let out = s.ok(&["rewire", "--host", "windsurf"]);
    assert!(
        out.contains("left everything in ")
            && out.contains("not run by the mux (add it with `rmcp-mux import --host windsurf`)"),
        "{out}"
    );
    assert!(out.contains("nothing changed"), "{out}");
    assert!(s.records().is_empty());
    let (code, _, err) = Setup::empty().run(&["rewire", "--host", "zed"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no mux config at ") && err.contains("run `rmcp-mux import --host zed` first"),
        "{err}"
    );
}

/// A line-oriented MCP session over a child's stdio.
struct Session {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Session {
    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        use std::io::{BufRead, Write};
        let line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        loop {
            let mut l = String::new();
            assert_ne!(
                self.out.read_line(&mut l).unwrap(),
                0,
                "EOF before the answer to {method}"
            );
            let v: Value = serde_json::from_str(&l).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }
}

impl Session {
    /// Starts a host entry's command and args as a host does (directly, no shell, none of
    /// the user's environment) and initializes an MCP session.
    fn start(command: &str, args: &[String]) -> Session {
        let mut child = Command::new(command)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut session = Session { child, out };
        let init = session.request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "host-test", "version": "1"}}),
        );
        assert_eq!(
            init["result"]["serverInfo"]["name"], "memory-server",
            "{init}"
        );
        use std::io::Write;
        let stdin = session.child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )
        .unwrap();
        session
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// The command and args of a rewired entry, as the host will read them.
fn rewired_entry(s: &Setup, host: &str) -> (String, Vec<String>) {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    match host {
        "codex" => {
            let t: toml::Table = toml::from_str(&s.read("home/.codex/config.toml")).unwrap();
            let e = &t["mcp_servers"]["memory"];
            assert!(
                e.get("env").is_none(),
                "the secret stays in mux.toml only: {e}"
            );
            let args = e["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (e["command"].as_str().unwrap().to_owned(), args)
        }
        _ => {
            let rel = if host == "cursor" {
                "home/.cursor/mcp.json"
            } else {
                claude_desktop_rel()
            };
            let v: Value = serde_json::from_str(&s.read(rel)).unwrap();
            let e = &v["mcpServers"]["memory"];
            assert!(
                e.get("env").is_none(),
                "the secret stays in mux.toml only: {e}"
            );
            (
                e["command"].as_str().unwrap().to_owned(),
                strings(&e["args"]),
            )
        }
    }
}

/// The issue's "done when": three hosts with the same server, one import, a rewire per host;
/// each host's entry, started as the host starts it, reaches the one real server-memory.
#[test]
fn three_rewired_hosts_share_one_real_memory_server() {
    let Some(peers) = peers() else { return };
    let s = Setup::empty();
    let server = peers.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    let memory_file = s.path("memory.jsonl");
    let desktop = serde_json::to_string_pretty(&json!({
        "mcpServers": {
            "memory": {
                "command": "node",
                "args": [server],
                "env": { "MEMORY_FILE_PATH": memory_file, "API_TOKEN": SECRET }
            }
        }
    }))
    .unwrap();
    let cursor = desktop.replace("  ", "    ");
    let codex = format!(
        "# codex\n[mcp_servers.memory]\ncommand = \"node\"\nargs = [{:?}]\nenv = {{ MEMORY_FILE_PATH = {:?}, API_TOKEN = \"{SECRET}\" }}\n",
        server.display().to_string(),
        memory_file.display().to_string()
    );
    s.write(claude_desktop_rel(), &desktop);
    s.write("home/.cursor/mcp.json", &cursor);
    s.write("home/.codex/config.toml", &codex);
    let out = s.ok(&["import"]);
    assert!(
        out.contains("added memory (from claude-desktop, cursor, codex): node [env API_TOKEN=*** MEMORY_FILE_PATH=***]"),
        "{out}"
    );
    assert!(out.contains("1 server added to"), "{out}");
    assert!(!out.contains(SECRET));
    let mux = Mux::start_config(s.dir.clone(), s.mux_toml(), &s.home());
    let socket = s
        .home()
        .join(".rmcp-mux/sockets/memory.sock")
        .display()
        .to_string();
    for (i, host) in ["claude-desktop", "cursor", "codex"]
        .into_iter()
        .enumerate()
    {
        let out = s.ok(&["rewire", "--host", host]);
        assert!(!out.contains("daemon is not running"), "{out}");
        let (command, args) = rewired_entry(&s, host);
        assert!(Path::new(&command).is_absolute(), "{command}");
        assert_eq!(command, proxy());
        let config = std::fs::canonicalize(s.mux_toml())
            .unwrap()
            .display()
            .to_string();
        assert_eq!(
            args,
            [
                "--socket",
                socket.as_str(),
                "--autostart",
                "--config",
                config.as_str()
            ]
        );
        let mut session = Session::start(&command, &args);
        let tools = session.request(2, "tools/list", json!({}));
        let names: Vec<&str> = tools["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{tools}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for want in ["create_entities", "read_graph", "search_nodes"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let created = session.request(
            3,
            "tools/call",
            json!({"name": "create_entities", "arguments": {"entities": [{"name": host, "entityType": "host", "observations": ["via the mux"]}]}}),
        );
        assert!(created["result"]["isError"] != true, "{created}");
        let graph = text(&session.request(
            4,
            "tools/call",
            json!({"name": "read_graph", "arguments": {}}),
        ));
        // One server, one graph: every host so far is in it.
        for earlier in ["claude-desktop", "cursor", "codex"].iter().take(i + 1) {
            assert!(
                graph.contains(&format!("\"{earlier}\"")),
                "{earlier} missing from {graph}"
            );
        }
        session.finish();
    }
    // The server ran under the mux with the env import copied: it wrote where MEMORY_FILE_PATH says.
    let saved = std::fs::read_to_string(&memory_file).unwrap();
    assert!(saved.contains("via the mux"), "{saved}");
    mux.log.wait_for(&["child started"]);
    assert_eq!(
        mux.log.text().matches("child started").count(),
        1,
        "one copy of the server"
    );
    assert!(
        !mux.log.text().contains(SECRET),
        "the daemon logged a secret"
    );
    drop(mux);
    for host in ["claude-desktop", "cursor", "codex"] {
        let out = s.ok(&["unwire", "--host", host]);
        assert!(out.contains("restored memory in "), "{out}");
    }
    assert_eq!(s.read(claude_desktop_rel()), desktop);
    assert_eq!(s.read("home/.cursor/mcp.json"), cursor);
    assert_eq!(s.read("home/.codex/config.toml"), codex);
}

/// Claude Code rewrites `~/.claude.json` with its own layout at every start; unwire still
/// recognises the entries it wrote and puts the originals back.
#[test]
fn unwire_after_the_host_reformats_its_file() {
    let s = Setup::new();
    s.ok(&["import", "--host", "claude-code"]);
    let original: Value = serde_json::from_str(&s.read("home/.claude.json")).unwrap();
    s.ok(&["rewire", "--host", "claude-code"]);
    let mut v: Value = serde_json::from_str(&s.read("home/.claude.json")).unwrap();
    v["numStartups"] = json!(13);
    s.write(
        "home/.claude.json",
        &serde_json::to_string_pretty(&v).unwrap(),
    );
    let out = s.ok(&["unwire", "--host", "claude-code"]);
    assert!(
        out.contains("restored time in ") && out.contains("restored memory in "),
        "{out}"
    );
    let mut want = original;
    want["numStartups"] = json!(13);
    let now: Value = serde_json::from_str(&s.read("home/.claude.json")).unwrap();
    assert_eq!(now, want);
}

#[test]
fn import_chooses_share_from_known_servers_and_says_why_and_scan_shows_it() {
    let s = Setup::empty();
    s.write(
        "home/.cursor/mcp.json",
        r#"{"mcpServers": {
            "playwright": {"command": "npx", "args": ["-y", "@playwright/mcp@latest"]},
            "git": {"command": "uvx", "args": ["mcp-server-git"]},
            "time": {"command": "uvx", "args": ["mcp-server-time"]}
        }}"#,
    );
    let items = s.scan_json(&["--host", "cursor"]);
    assert_eq!(find(&items, "cursor", "playwright")["share"], "client");
    assert!(find(&items, "cursor", "playwright")["share_reason"]
        .as_str()
        .unwrap()
        .contains("browser"));
    assert_eq!(find(&items, "cursor", "git")["share"], "project");
    assert_eq!(find(&items, "cursor", "time")["share"], "global");
    let out = s.ok(&["import", "--host", "cursor"]);
    assert!(
        out.contains("added playwright (from cursor): npx; share = \"client\": a browser"),
        "{out}"
    );
    assert!(
        out.contains("added git (from cursor): uvx; share = \"project\""),
        "{out}"
    );
    assert!(
        out.contains("added time (from cursor): uvx; share = \"global\""),
        "{out}"
    );
    let doc: toml::Table = toml::from_str(&s.read("home/.rmcp-mux/mux.toml")).unwrap();
    let servers = doc["servers"].as_table().unwrap();
    assert_eq!(servers["playwright"]["share"].as_str(), Some("client"));
    assert_eq!(servers["git"]["share"].as_str(), Some("project"));
    assert!(
        servers["time"].get("share").is_none(),
        "global is the default"
    );
}

/// `rewire --via http`: each host that connects by URL gets the HTTP front's URL for the
/// server in its own form, with the bearer token; unwire puts every file back byte for byte.
#[test]
fn rewire_via_http_writes_each_hosts_url_form_and_unwire_restores_it() {
    let s = Setup::new();
    s.ok(&["import"]);
    let toml = std::fs::read_to_string(s.mux_toml()).unwrap();
    assert!(!toml.lines().any(|l| l == "[daemon]"), "{toml}");
    // Without the front configured, there is no URL to write.
    let (code, _, err) = s.run(&["rewire", "--host", "cursor", "--via", "http"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("http = \\\"127.0.0.1:PORT\\\"") || err.contains("no HTTP front"),
        "{err}"
    );
    std::fs::write(
        s.mux_toml(),
        format!("[daemon]\nhttp = \"127.0.0.1:7311\"\n\n{toml}"),
    )
    .unwrap();
    for host in ["claude-desktop", "zed"] {
        let (code, _, err) = s.run(&["rewire", "--host", host, "--via", "http"]);
        assert_ne!(code, 0, "{host}");
        assert!(
            err.contains("only by command; use `--via proxy`"),
            "{host}: {err}"
        );
    }
    let url = "http://127.0.0.1:7311/memory/mcp";
    let user_files = ["home/.claude.json", "home/.cursor/mcp.json"];
    for (host, key) in [
        ("claude-code", "\"type\": \"http\""),
        ("cursor", "\"type\": \"http\""),
        ("vscode", "\"type\": \"http\""),
        ("windsurf", "\"serverUrl\": "),
        ("gemini", "\"httpUrl\": "),
        ("codex", "url = "),
    ] {
        let files = host_files(host);
        let originals: Vec<String> = files.iter().map(|f| s.read(f)).collect();
        let dry = s.ok(&["rewire", "--host", host, "--via", "http", "--dry-run"]);
        let out = s.ok(&["rewire", "--host", host, "--via", "http"]);
        // The token was made by the first rewire, in the state folder.
        let token = s
            .snapshot()
            .into_iter()
            .find(|(p, _)| p.ends_with("rmcp-mux/http-token"))
            .map(|(_, b)| String::from_utf8(b).unwrap().trim().to_owned())
            .expect("no token file");
        assert!(
            !dry.contains(&token),
            "{host}: the dry run shows the token:\n{dry}"
        );
        assert!(out.contains("a URL starts nothing"), "{host}: {out}");
        for (f, o) in files.iter().zip(&originals) {
            let a = s.read(f);
            assert_ne!(&a, o, "{host}: {f} unchanged:\n{out}");
            if user_files.contains(&f.as_str()) {
                assert!(a.contains(url), "{host}: {f}:\n{a}");
            }
            assert!(
                a.contains("http://127.0.0.1:7311/") && a.contains(key),
                "{host}: {f}:\n{a}"
            );
            assert!(a.contains(&format!("Bearer {token}")), "{host}: {f}:\n{a}");
            assert!(!a.contains(&proxy()), "{host}: {f} runs the proxy:\n{a}");
            assert!(
                !a.contains(SECRET),
                "{host}: the secret stayed in {f}:\n{a}"
            );
        }
        let snap = s.snapshot();
        let again = s.ok(&["rewire", "--host", host, "--via", "http"]);
        assert!(
            again.contains("already rewired") && again.contains("nothing changed"),
            "{host}: {again}"
        );
        assert_eq!(
            s.snapshot(),
            snap,
            "{host}: the second rewire wrote something"
        );
        let out = s.ok(&["unwire", "--host", host]);
        assert!(out.contains("restored "), "{host}: {out}");
        for (f, o) in files.iter().zip(&originals) {
            assert_eq!(&s.read(f), o, "{host}: {f} is not back byte for byte");
        }
    }
    // The shapes as the hosts read them.
    s.ok(&["rewire", "--host", "codex", "--via", "http"]);
    let t: toml::Table = toml::from_str(&s.read("home/.codex/config.toml")).unwrap();
    let e = &t["mcp_servers"]["memory"];
    assert_eq!(e["url"].as_str(), Some(url));
    assert!(e["http_headers"]["Authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));
    assert!(e.get("command").is_none() && e.get("env").is_none(), "{e}");
    assert_eq!(
        e["startup_timeout_sec"].as_integer(),
        Some(20),
        "other keys kept: {e}"
    );
    s.ok(&["rewire", "--host", "windsurf", "--via", "http"]);
    let v: Value = serde_json::from_str(&s.read("home/.codeium/windsurf/mcp_config.json")).unwrap();
    let e = &v["mcpServers"]["everything"];
    assert_eq!(
        e["serverUrl"].as_str(),
        Some("http://127.0.0.1:7311/everything/mcp")
    );
    assert!(e["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));
    assert!(
        e.get("command").is_none() && e.get("args").is_none() && e.get("type").is_none(),
        "{e}"
    );
}

/// The mux loads the config import wrote: `health` gets as far as naming a server it lacks
/// (a config error would be exit 2 with the file and line instead).
fn assert_the_mux_loads(s: &Setup) {
    let (code, _, err) = s.run(&[
        "health",
        "--config",
        s.mux_toml().to_str().unwrap(),
        "--service",
        "nope",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown server `nope`"), "{err}");
}
