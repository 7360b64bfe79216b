//! Which `share` an imported server gets: a table of known servers that keep state per session
//! (a browser per client, a repository or project per folder), with the reason shown to the
//! user. (The run-time hint for a `global` server whose tools look per-session is the router's.)
//!
//! Pure: it reads names, never a file or a process.

use std::path::Path;

use super::Stdio;
use crate::config::Share;

/// A suggestion and the reason given for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suggestion {
    /// The `share` to write.
    pub share: Share,
    /// Why, in a few words, for the import's output and `scan --json`.
    pub why: &'static str,
}

/// Known browser and automation servers: one browser (pages, cookies, profile lock) per
/// session, so one child per client.
const PER_CLIENT: &[&str] = &[
    "@playwright/mcp",
    "@executeautomation/playwright-mcp-server",
    "@modelcontextprotocol/server-puppeteer",
    "puppeteer-mcp-server",
    "chrome-devtools-mcp",
    "@browsermcp/mcp",
    "@browserbasehq/mcp",
    "@agent-infra/mcp-server-browser",
    "browser-use",
    "mcp-server-browser-use",
    "mcp-selenium",
];

/// Known servers that work on "the current project": one child per project folder.
const PER_PROJECT: &[&str] = &[
    "mcp-server-git",
    "@cyanheads/git-mcp-server",
    "@modelcontextprotocol/server-git",
    "serena",
    "serena-mcp-server",
];

/// The filesystem server: per project when given a folder relative to where it starts.
const FILESYSTEM: &str = "@modelcontextprotocol/server-filesystem";

/// A command-line word as a package name: a version (`pkg@1.2`, `@scope/pkg@latest`) and a
/// `git+https://…/NAME` source reduced to the name.
fn package(word: &str) -> &str {
    let word = word.trim_end_matches(".git");
    let word = match word.rfind('/') {
        Some(i) if word.contains("://") => &word[i + 1..],
        _ => word,
    };
    let at = if let Some(rest) = word.strip_prefix('@') {
        rest.find('@').map(|i| i + 1)
    } else {
        word.find('@')
    };
    match at {
        Some(i) => &word[..i],
        None => word,
    }
}

/// The share to import `s` with, and why.
pub fn suggest(s: &Stdio) -> Suggestion {
    let words: Vec<&str> = std::iter::once(s.command.as_str())
        .chain(s.args.iter().map(String::as_str))
        .map(|w| {
            Path::new(w)
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|_| !w.starts_with('@') && !w.contains("://"))
                .unwrap_or(w)
        })
        .map(package)
        .collect();
    let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
    if has(PER_CLIENT) {
        return Suggestion {
            share: Share::Client,
            why: "a browser or automation server keeps one browser (pages, cookies, profile) per session",
        };
    }
    if has(PER_PROJECT) {
        return Suggestion {
            share: Share::Project,
            why: "it works on the repository or project it was started in",
        };
    }
    let relative = |a: &str| a == "." || a == ".." || a.starts_with("./") || a.starts_with("../");
    if words.contains(&FILESYSTEM) && s.args.iter().any(|a| relative(a)) {
        return Suggestion {
            share: Share::Project,
            why: "a filesystem server given a relative folder serves the project it was started in",
        };
    }
    Suggestion {
        share: Share::Global,
        why: "no per-session state known: one child for every host",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(cmd: &str, args: &[&str]) -> Stdio {
        Stdio {
            command: cmd.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Default::default(),
            cwd: None,
        }
    }

    #[test]
    fn known_servers_get_their_share_with_a_reason() {
        let client = [
            stdio("npx", &["-y", "@playwright/mcp@latest"]),
            stdio("npx", &["chrome-devtools-mcp@0.9"]),
            stdio(
                "/usr/local/bin/npx",
                &["-y", "@modelcontextprotocol/server-puppeteer"],
            ),
            stdio("uvx", &["mcp-server-browser-use"]),
        ];
        for s in &client {
            let got = suggest(s);
            assert_eq!(got.share, Share::Client, "{s:?}");
            assert!(got.why.contains("browser"));
        }
        let project = [
            stdio("uvx", &["mcp-server-git"]),
            stdio(
                "uvx",
                &[
                    "--from",
                    "git+https://github.com/oraios/serena",
                    "serena",
                    "start-mcp-server",
                ],
            ),
            stdio(
                "npx",
                &["-y", "@modelcontextprotocol/server-filesystem", "."],
            ),
        ];
        for s in &project {
            assert_eq!(suggest(s).share, Share::Project, "{s:?}");
        }
        let global = [
            stdio(
                "npx",
                &["-y", "@modelcontextprotocol/server-filesystem", "/data"],
            ),
            stdio("npx", &["-y", "@modelcontextprotocol/server-memory"]),
            stdio("uvx", &["mcp-server-time"]),
            stdio("node", &["/opt/playwright-notes/index.js"]),
        ];
        for s in &global {
            assert_eq!(suggest(s).share, Share::Global, "{s:?}");
        }
    }
}
