//! Codex's `config.toml`: reading its `[mcp_servers.NAME]` tables and pointing one at the
//! proxy through `toml_edit`, so comments and layout elsewhere survive.
//!
//! Pure: text in, text out. It must not touch keys outside the table it changes; the change is
//! described as the smallest run of whole lines that differs, which is what unwire puts back.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;

use toml_edit::{DocumentMut, Item, TableLike};

use super::{line_col, Launch, RawEntry, Stdio, SyntaxError};

const KEY: &str = "mcp_servers";

fn parse(text: &str) -> Result<DocumentMut, SyntaxError> {
    text.parse::<DocumentMut>().map_err(|e| {
        let (line, col) = line_col(text, e.span().map_or(0, |s| s.start));
        SyntaxError {
            line,
            col,
            message: e.message().trim().to_owned(),
            key: None,
        }
    })
}

fn str_of(item: Option<&Item>) -> Option<String> {
    item?.as_str().map(str::to_owned)
}

/// Every `[mcp_servers.NAME]` of the file, in file order.
///
/// # Errors
/// A TOML syntax error, or `mcp_servers` that is not a table.
pub fn entries(text: &str) -> Result<Vec<RawEntry>, SyntaxError> {
    let doc = parse(text)?;
    let Some(servers) = doc.get(KEY) else {
        return Ok(vec![]);
    };
    let servers = servers
        .as_table_like()
        .ok_or_else(|| SyntaxError::shape(KEY, "expected a table"))?;
    let mut out = Vec::new();
    for (name, item) in servers.iter() {
        let launch = match item.as_table_like() {
            Some(t) => launch(t),
            None => Launch::Unsupported {
                why: "the entry is not a table".into(),
            },
        };
        out.push(RawEntry {
            key_path: vec![KEY.to_owned(), name.to_owned()],
            name: name.to_owned(),
            project: None,
            launch,
        });
    }
    Ok(out)
}

fn launch(t: &dyn TableLike) -> Launch {
    if let Some(url) = str_of(t.get("url")) {
        return Launch::Remote { url };
    }
    let Some(command) = str_of(t.get("command")) else {
        return Launch::Unsupported {
            why: "no command".into(),
        };
    };
    let args = match t.get("args") {
        None => Some(vec![]),
        Some(a) => a
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect()),
    };
    let Some(args) = args else {
        return Launch::Unsupported {
            why: "`args` is not a list of strings".into(),
        };
    };
    let env = match t.get("env") {
        None => Some(BTreeMap::new()),
        Some(e) => e.as_table_like().and_then(|e| {
            e.iter()
                .map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned())))
                .collect()
        }),
    };
    let Some(env) = env else {
        return Launch::Unsupported {
            why: "`env` is not a table of strings".into(),
        };
    };
    Launch::Stdio(Stdio {
        command,
        args,
        env,
        cwd: str_of(t.get("cwd")),
    })
}

/// Every string under an `env` or `http_headers` table anywhere in the file: what output
/// (such as a diff) must mask.
///
/// # Errors
/// A syntax error.
pub fn secret_values(text: &str) -> Result<Vec<String>, SyntaxError> {
    fn walk(t: &dyn TableLike, out: &mut Vec<String>) {
        for (k, item) in t.iter() {
            if let Some(sub) = item.as_table_like() {
                if matches!(k, "env" | "http_headers") {
                    out.extend(
                        sub.iter()
                            .filter_map(|(_, v)| v.as_str().map(str::to_owned)),
                    );
                }
                walk(sub, out);
            }
        }
    }
    let doc = parse(text)?;
    let mut out = Vec::new();
    walk(doc.as_table(), &mut out);
    Ok(out)
}

/// One change of the file: the whole lines that differ, before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Byte offset where the lines start (the same before and after).
    pub start: usize,
    /// The lines before.
    pub original: String,
    /// The lines after.
    pub written: String,
}

/// The lines that differ between `old` and `new`, widened to whole lines.
pub fn fragment(old: &str, new: &str) -> Option<Fragment> {
    if old == new {
        return None;
    }
    let p = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let s = old.as_bytes()[p..]
        .iter()
        .rev()
        .zip(new.as_bytes()[p..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let start = old[..p].rfind('\n').map_or(0, |i| i + 1);
    let (old_end, new_end) = (old.len() - s, new.len() - s);
    // Both texts share the suffix, so the same number of bytes finishes the line in each.
    let tail = &old.as_bytes()[old_end..];
    let ext = tail
        .iter()
        .position(|b| *b == b'\n')
        .map_or(tail.len(), |i| i + 1);
    let ext = if old_end > 0
        && old.as_bytes()[old_end - 1] == b'\n'
        && new_end > 0
        && new.as_bytes()[new_end - 1] == b'\n'
    {
        0
    } else {
        ext
    };
    Some(Fragment {
        start,
        original: old[start..old_end + ext].to_owned(),
        written: new[start..new_end + ext].to_owned(),
    })
}

/// Points `[mcp_servers.NAME]` at `command args`: sets both, drops `env` and `cwd` (the mux
/// has them now), keeps every other key.
///
/// # Errors
/// A syntax error; `Ok(None)` when the table is gone or nothing would change.
pub fn rewire(
    text: &str,
    name: &str,
    command: &str,
    args: &[String],
) -> Result<Option<Fragment>, SyntaxError> {
    let mut doc = parse(text)?;
    let Some(t) = doc
        .get_mut(KEY)
        .and_then(Item::as_table_like_mut)
        .and_then(|s| s.get_mut(name))
        .and_then(Item::as_table_like_mut)
    else {
        return Ok(None);
    };
    let arr: toml_edit::Array = args.iter().map(String::as_str).collect();
    set(t, "command", toml_edit::value(command));
    set(t, "args", toml_edit::value(arr));
    t.remove("env");
    t.remove("cwd");
    Ok(fragment(text, &doc.to_string()))
}

/// Points `[mcp_servers.NAME]` at `url` with `headers` (the HTTP front, Codex's
/// `url` and `http_headers`): drops what started the server, keeps every other key.
///
/// # Errors
/// A syntax error; `Ok(None)` when the table is gone or nothing would change.
pub fn rewire_http(
    text: &str,
    name: &str,
    url: &str,
    headers: &[(String, String)],
) -> Result<Option<Fragment>, SyntaxError> {
    let mut doc = parse(text)?;
    let Some(t) = doc
        .get_mut(KEY)
        .and_then(Item::as_table_like_mut)
        .and_then(|s| s.get_mut(name))
        .and_then(Item::as_table_like_mut)
    else {
        return Ok(None);
    };
    let mut h = toml_edit::InlineTable::new();
    for (k, v) in headers {
        h.insert(k, v.as_str().into());
    }
    for k in ["command", "args", "env", "cwd"] {
        t.remove(k);
    }
    set(t, "url", toml_edit::value(url));
    set(t, "http_headers", toml_edit::value(h));
    Ok(fragment(text, &doc.to_string()))
}

fn set(t: &mut dyn TableLike, key: &str, value: Item) {
    match t.get_mut(key) {
        Some(item) => *item = value,
        None => {
            t.insert(key, value);
        }
    }
}

/// Puts back one recorded fragment: the written lines must still be in the file (the
/// occurrence nearest to where they were written is taken).
pub fn restore(text: &str, f: &Fragment) -> Option<String> {
    let at = text
        .match_indices(&f.written)
        .map(|(i, _)| i)
        .min_by_key(|i| i.abs_diff(f.start))?;
    let mut out = text.to_owned();
    out.replace_range(at..at + f.written.len(), &f.original);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# Codex settings
model = "o3"

# the servers
[mcp_servers.memory]
command = "npx"   # from npm
args = ["-y", "@modelcontextprotocol/server-memory"]
env = { API_KEY = "s3cret" }
startup_timeout_sec = 20

[mcp_servers.web]
url = "https://example.com/mcp"

[profiles.x]
model = "gpt"
"#;

    #[test]
    fn reads_tables_and_remote_entries() {
        let e = entries(TEXT).unwrap();
        assert_eq!(e.len(), 2);
        match &e[0].launch {
            Launch::Stdio(s) => {
                assert_eq!(s.command, "npx");
                assert_eq!(s.env.get("API_KEY").map(String::as_str), Some("s3cret"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(e[1].launch, Launch::Remote { .. }));
    }

    #[test]
    fn rewire_changes_only_the_table_and_restores_byte_for_byte() {
        let args = vec!["--socket".to_owned(), "/s/memory.sock".to_owned()];
        let f = rewire(TEXT, "memory", "/bin/rmcp-mux-proxy", &args)
            .unwrap()
            .unwrap();
        let new = format!(
            "{}{}{}",
            &TEXT[..f.start],
            f.written,
            &TEXT[f.start + f.original.len()..]
        );
        assert!(new.starts_with(
            "# Codex settings\nmodel = \"o3\"\n\n# the servers\n[mcp_servers.memory]\n"
        ));
        assert!(new.contains("command = \"/bin/rmcp-mux-proxy\"\nargs = [\"--socket\", \"/s/memory.sock\"]\nstartup_timeout_sec = 20\n"), "{new}");
        assert!(!new.contains("s3cret"));
        assert!(new.ends_with("[mcp_servers.web]\nurl = \"https://example.com/mcp\"\n\n[profiles.x]\nmodel = \"gpt\"\n"));
        // The user edits another part of the file; unwire still puts the entry back.
        let edited = new.replace("model = \"gpt\"", "model = \"gpt-5\"");
        let back = restore(&edited, &f).unwrap();
        assert_eq!(back, TEXT.replace("model = \"gpt\"", "model = \"gpt-5\""));
        assert_eq!(restore(&new, &f).unwrap(), TEXT);
    }

    #[test]
    fn inline_and_sub_tables_are_rewired_and_restored() {
        let args = vec!["--socket".to_owned(), "/s/m.sock".to_owned()];
        for text in [
            "[mcp_servers]\nm = { command = \"npx\", args = [\"-y\"] } # inline\nother = 1\n",
            "[mcp_servers.m]\ncommand = \"npx\"\n\n[mcp_servers.m.env]\nK = \"secret\"\n\n[after]\nx = 1\n",
        ] {
            let f = rewire(text, "m", "/p", &args).unwrap().unwrap();
            let new = format!("{}{}{}", &text[..f.start], f.written, &text[f.start + f.original.len()..]);
            let e = entries(&new).unwrap();
            match &e[0].launch {
                Launch::Stdio(s) => {
                    assert_eq!((s.command.as_str(), s.args.clone(), s.env.len()), ("/p", args.clone(), 0), "{new}");
                }
                other => panic!("{other:?}"),
            }
            assert!(!new.contains("secret"), "{new}");
            assert_eq!(restore(&new, &f).unwrap(), text);
        }
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = entries("a = 1\n[mcp_servers.x\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn fragments_are_whole_lines() {
        let f = fragment("a\nbcd\ne\n", "a\nbXd\ne\n").unwrap();
        assert_eq!(
            (f.start, f.original.as_str(), f.written.as_str()),
            (2, "bcd\n", "bXd\n")
        );
        let f = fragment("a\nb\n", "a\nb\nc\n").unwrap();
        assert_eq!((f.original.as_str(), f.written.as_str()), ("", "c\n"));
    }
}
