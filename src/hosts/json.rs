//! The JSON(C) host files: reading their server entries (comments and trailing commas allowed)
//! and replacing one entry's value by splicing its exact byte span.
//!
//! Pure: text in, text out. It must not reserialize a file: every byte outside the entries it
//! changes stays as it was, and the text it inserts follows the file's indentation.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;

use jsonc_parser::ast::{Object, ObjectProp, Value};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};

use super::{line_col, Format, Launch, RawEntry, Stdio, SyntaxError};

/// What the hosts accept: JSON plus comments and trailing commas (VS Code's and Zed's JSONC);
/// nothing looser, so that a file this accepts is one the host reads the same way.
fn options() -> ParseOptions {
    ParseOptions {
        allow_comments: true,
        allow_loose_object_property_names: false,
        allow_trailing_commas: true,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// Parses JSONC (comments, trailing commas), as the hosts themselves do.
///
/// # Errors
/// The first syntax error, at its line and column.
pub fn parse(text: &str) -> Result<Option<Value<'_>>, SyntaxError> {
    jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options())
        .map(|r| r.value)
        .map_err(|e| {
            let (line, col) = line_col(text, e.range().start);
            SyntaxError {
                line,
                col,
                message: e.kind().to_string(),
                key: None,
            }
        })
}

/// The text with a leading byte-order mark (editors on Windows write one) blanked to three
/// spaces: the parser refuses it, and spaces keep every byte offset where it was.
fn blank_bom(text: &str) -> std::borrow::Cow<'_, str> {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => format!("   {rest}").into(),
        None => text.into(),
    }
}

/// The key under which a format keeps its servers.
fn servers_key(format: Format) -> &'static str {
    match format {
        Format::Vscode => "servers",
        Format::Zed => "context_servers",
        _ => "mcpServers",
    }
}

fn object<'a, 'b>(v: &'b Value<'a>, key: &str) -> Result<&'b Object<'a>, SyntaxError> {
    v.as_object()
        .ok_or_else(|| SyntaxError::shape(key, "expected an object"))
}

/// The property `name` of an object as the hosts read it: a key written twice means its last
/// occurrence (JSON.parse and the other readers hosts use keep the last one).
fn get<'b, 'a>(o: &'b Object<'a>, name: &str) -> Option<&'b ObjectProp<'a>> {
    o.properties.iter().rev().find(|p| p.name.as_str() == name)
}

/// Every server entry of a JSON host file, in file order (a name written twice counts once,
/// as its last definition).
///
/// # Errors
/// A syntax error, or a servers key that is not an object.
pub fn entries(text: &str, format: Format) -> Result<Vec<RawEntry>, SyntaxError> {
    let src = blank_bom(text);
    let Some(root) = parse(&src)? else {
        return Ok(vec![]);
    };
    let root = object(&root, "(top level)")?;
    let key = servers_key(format);
    let mut out = Vec::new();
    if let Some(servers) = get(root, key) {
        collect(&servers.value, &[key.to_owned()], None, format, &mut out)?;
    }
    if format == Format::ClaudeCode {
        if let Some(projects) = get(root, "projects") {
            let projects = object(&projects.value, "projects")?;
            for p in &projects.properties {
                let dir = p.name.as_str().to_owned();
                let Some(proj) = p.value.as_object() else {
                    continue;
                };
                if let Some(servers) = get(proj, key) {
                    let path = ["projects".to_owned(), dir.clone(), key.to_owned()];
                    collect(&servers.value, &path, Some(dir), format, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

fn collect(
    servers: &Value<'_>,
    path: &[String],
    project: Option<String>,
    format: Format,
    out: &mut Vec<RawEntry>,
) -> Result<(), SyntaxError> {
    let servers = object(servers, &path.join("."))?;
    for (i, prop) in servers.properties.iter().enumerate() {
        let name = prop.name.as_str().to_owned();
        // A name written again later is that later entry (the one the host runs).
        if servers.properties[i + 1..]
            .iter()
            .any(|p| p.name.as_str() == name)
        {
            continue;
        }
        let mut key_path = path.to_vec();
        key_path.push(name.clone());
        let launch = match prop.value.as_object() {
            Some(o) => launch(o, format),
            None => Launch::Unsupported {
                why: "the entry is not an object".into(),
            },
        };
        out.push(RawEntry {
            key_path,
            name,
            project: project.clone(),
            launch,
        });
    }
    Ok(())
}

fn string(v: &Value<'_>) -> Option<String> {
    match v {
        Value::StringLit(s) => Some(s.value.to_string()),
        _ => None,
    }
}

fn strings(v: &Value<'_>) -> Option<Vec<String>> {
    v.as_array()?.elements.iter().map(string).collect()
}

fn string_map(v: &Value<'_>) -> Option<BTreeMap<String, String>> {
    v.as_object()?
        .properties
        .iter()
        .map(|p| {
            let value = match &p.value {
                Value::StringLit(s) => s.value.to_string(),
                Value::NumberLit(n) => n.value.to_owned(),
                Value::BooleanLit(b) => b.value.to_string(),
                _ => return None,
            };
            Some((p.name.as_str().to_owned(), value))
        })
        .collect()
}

fn unsupported(why: &str) -> Launch {
    Launch::Unsupported { why: why.into() }
}

/// How an entry object starts its server.
fn launch(o: &Object<'_>, format: Format) -> Launch {
    for k in ["url", "serverUrl", "httpUrl"] {
        if let Some(url) = get(o, k).and_then(|p| string(&p.value)) {
            return Launch::Remote { url };
        }
    }
    let kind = get(o, "type").and_then(|p| string(&p.value));
    if let Some(t) = kind.as_deref() {
        if t != "stdio" {
            return Launch::Remote {
                url: format!("({t} without a url)"),
            };
        }
    }
    // Zed before 0.19x: "command": {"path", "args", "env"}; newer Zed and everyone else: flat.
    let (command, args, env) = match get(o, "command").map(|p| &p.value) {
        Some(Value::Object(nested)) if format == Format::Zed => (
            get(nested, "path").map(|p| &p.value),
            get(nested, "args").map(|p| &p.value),
            get(nested, "env").map(|p| &p.value),
        ),
        Some(c) => (
            Some(c),
            get(o, "args").map(|p| &p.value),
            get(o, "env").map(|p| &p.value),
        ),
        None if format == Format::Zed => {
            return unsupported("provided by a Zed extension (no command)")
        }
        None => return unsupported("no command"),
    };
    let Some(command) = command.and_then(string) else {
        return unsupported("`command` is not a string");
    };
    let args = match args {
        None | Some(Value::NullKeyword(_)) => vec![],
        Some(v) => match strings(v) {
            Some(a) => a,
            None => return unsupported("`args` is not a list of strings"),
        },
    };
    let env = match env {
        None | Some(Value::NullKeyword(_)) => BTreeMap::new(),
        Some(v) => match string_map(v) {
            Some(e) => e,
            None => return unsupported("`env` is not an object of strings"),
        },
    };
    if get(o, "envFile").is_some() {
        return unsupported("uses `envFile`, which the mux does not read");
    }
    let cwd = get(o, "cwd").and_then(|p| string(&p.value));
    let uses_vars = std::iter::once(&command)
        .chain(&args)
        .chain(env.values())
        .chain(&cwd)
        .any(|s| s.contains("${"));
    if uses_vars {
        return unsupported("uses `${…}` variables that only the host fills in");
    }
    if command.trim().is_empty() {
        return unsupported("empty command");
    }
    Launch::Stdio(Stdio {
        command,
        args,
        env,
        cwd,
    })
}

/// Every string under an `env` or `headers` object anywhere in the file: what output (such as
/// a diff) must mask.
///
/// # Errors
/// A syntax error.
pub fn secret_values(text: &str) -> Result<Vec<String>, SyntaxError> {
    fn walk(v: &Value<'_>, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for p in &o.properties {
                    if matches!(p.name.as_str(), "env" | "headers") {
                        if let Some(map) = p.value.as_object() {
                            out.extend(map.properties.iter().filter_map(|q| string(&q.value)));
                        }
                    }
                    walk(&p.value, out);
                }
            }
            Value::Array(a) => a.elements.iter().for_each(|e| walk(e, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(root) = parse(&blank_bom(text))? {
        walk(&root, &mut out);
    }
    Ok(out)
}

/// A value without its layout, to compare two texts of it.
fn to_serde(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::StringLit(s) => serde_json::Value::String(s.value.to_string()),
        Value::NumberLit(n) => serde_json::from_str(n.value).unwrap_or(serde_json::Value::Null),
        Value::BooleanLit(b) => serde_json::Value::Bool(b.value),
        Value::Object(o) => serde_json::Value::Object(
            o.properties
                .iter()
                .map(|p| (p.name.as_str().to_owned(), to_serde(&p.value)))
                .collect(),
        ),
        Value::Array(a) => serde_json::Value::Array(a.elements.iter().map(to_serde).collect()),
        Value::NullKeyword(_) => serde_json::Value::Null,
    }
}

/// The property at `key_path` (each step an object key).
fn find<'a, 'b>(root: &'b Value<'a>, key_path: &[String]) -> Option<&'b ObjectProp<'a>> {
    let (last, parents) = key_path.split_last()?;
    let mut v = root;
    for k in parents {
        v = &get(v.as_object()?, k)?.value;
    }
    get(v.as_object()?, last)
}

/// The whitespace that starts the line containing `offset`.
fn indent_at(text: &str, offset: usize) -> &str {
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// The file's indentation step: the first indented line's whitespace (two spaces if none).
fn indent_unit(text: &str) -> &str {
    text.lines()
        .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
        .find(|w| !w.is_empty())
        .map_or("  ", |w| if w.starts_with('\t') { "\t" } else { w })
}

fn quote(s: &str) -> String {
    // A JSON string literal; serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn args_text(args: &[String]) -> String {
    format!(
        "[{}]",
        args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
    )
}

/// What rewire puts in place of an entry: the proxy command, in the entry's own shape, with
/// the keys that do not start the server (`disabled`, `timeout`, Zed's `settings`, …) kept as
/// they were written.
fn render(
    text: &str,
    prop: &ObjectProp<'_>,
    format: Format,
    command: &str,
    args: &[String],
) -> Option<String> {
    let obj = prop.value.as_object()?;
    let mut parts: Vec<String> = Vec::new();
    let has_args = get(obj, "args").is_some();
    if format == Format::Vscode && get(obj, "type").is_none() {
        parts.push(format!("{}: {}", quote("type"), quote("stdio")));
    }
    for p in &obj.properties {
        let key = p.name.as_str();
        match key {
            "type" => parts.push(format!("{}: {}", quote("type"), quote("stdio"))),
            "command" if matches!(p.value, Value::Object(_)) => parts.push(format!(
                "{}: {{ {}: {}, {}: {} }}",
                quote("command"),
                quote("path"),
                quote(command),
                quote("args"),
                args_text(args)
            )),
            "command" => {
                parts.push(format!("{}: {}", quote("command"), quote(command)));
                if !has_args {
                    parts.push(format!("{}: {}", quote("args"), args_text(args)));
                }
            }
            "args"
                if !matches!(
                    get(obj, "command").map(|c| &c.value),
                    Some(Value::Object(_))
                ) =>
            {
                parts.push(format!("{}: {}", quote("args"), args_text(args)));
            }
            "args" | "env" | "envFile" | "cwd" => {}
            _ => parts.push(p.text(text).to_owned()),
        }
    }
    layout(text, prop, &parts)
}

/// What rewire `--via http` puts in place of an entry: `kind` as its `type` (when the host
/// wants one), the URL under `url_key`, `headers`, and the keys that do not start the server
/// kept as they were written.
fn render_http(
    text: &str,
    prop: &ObjectProp<'_>,
    kind: Option<&str>,
    url_key: &str,
    url: &str,
    headers: &[(String, String)],
) -> Option<String> {
    let obj = prop.value.as_object()?;
    let mut parts: Vec<String> = Vec::new();
    if let Some(k) = kind {
        parts.push(format!("{}: {}", quote("type"), quote(k)));
    }
    parts.push(format!("{}: {}", quote(url_key), quote(url)));
    let headers: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
        .collect();
    parts.push(format!(
        "{}: {{ {} }}",
        quote("headers"),
        headers.join(", ")
    ));
    for p in &obj.properties {
        match p.name.as_str() {
            "type" | "transport" | "command" | "args" | "env" | "envFile" | "cwd" | "url"
            | "serverUrl" | "httpUrl" | "headers" => {}
            _ => parts.push(p.text(text).to_owned()),
        }
    }
    layout(text, prop, &parts)
}

/// An entry's new value from its parts, laid out as the old one was: on one line if it was,
/// else one part per line at the entry's indentation.
fn layout(text: &str, prop: &ObjectProp<'_>, parts: &[String]) -> Option<String> {
    let obj = prop.value.as_object()?;
    let r = obj.range;
    let body = &text[r.start..r.end];
    if !body.contains('\n') {
        let pad = if body.starts_with("{ ") { " " } else { "" };
        return Some(format!("{{{pad}{}{pad}}}", parts.join(", ")));
    }
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let close_indent = indent_at(text, r.end.saturating_sub(1));
    let inner = match obj.properties.first() {
        Some(first) if text[r.start..first.start()].contains('\n') => {
            indent_at(text, first.start()).to_owned()
        }
        _ => format!("{}{}", indent_at(text, prop.start()), indent_unit(text)),
    };
    Some(format!(
        "{{{nl}{inner}{}{nl}{close_indent}}}",
        parts.join(&format!(",{nl}{inner}"))
    ))
}

/// One entry replaced: where, what was there, what is there now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splice {
    /// Byte offset of the entry's value in the text before the change.
    pub start: usize,
    /// Its end (exclusive) before the change.
    pub end: usize,
    /// The value's text before.
    pub original: String,
    /// The value's text after.
    pub written: String,
}

/// The splice that points the entry at `key_path` at `command args` (the proxy).
///
/// # Errors
/// A syntax error; `Ok(None)` when the entry is gone or not an object.
pub fn rewire_splice(
    text: &str,
    format: Format,
    key_path: &[String],
    command: &str,
    args: &[String],
) -> Result<Option<Splice>, SyntaxError> {
    let src = blank_bom(text);
    let Some(root) = parse(&src)? else {
        return Ok(None);
    };
    let Some(prop) = find(&root, key_path) else {
        return Ok(None);
    };
    let Some(written) = render(text, prop, format, command, args) else {
        return Ok(None);
    };
    let r = prop.value.range();
    Ok(Some(Splice {
        start: r.start,
        end: r.end,
        original: text[r.start..r.end].to_owned(),
        written,
    }))
}

/// The splice that points the entry at `key_path` at `url` with `headers` (the HTTP front),
/// in the host's URL form: `kind` as `type` when it wants one, the URL under `url_key`.
///
/// # Errors
/// A syntax error; `Ok(None)` when the entry is gone or not an object.
pub fn http_splice(
    text: &str,
    key_path: &[String],
    kind: Option<&str>,
    url_key: &str,
    url: &str,
    headers: &[(String, String)],
) -> Result<Option<Splice>, SyntaxError> {
    let src = blank_bom(text);
    let Some(root) = parse(&src)? else {
        return Ok(None);
    };
    let Some(prop) = find(&root, key_path) else {
        return Ok(None);
    };
    let Some(written) = render_http(text, prop, kind, url_key, url, headers) else {
        return Ok(None);
    };
    let r = prop.value.range();
    Ok(Some(Splice {
        start: r.start,
        end: r.end,
        original: text[r.start..r.end].to_owned(),
        written,
    }))
}

/// Applies splices of one text (they must not overlap), last first so offsets stay valid.
pub fn apply(text: &str, splices: &[Splice]) -> String {
    let mut sorted: Vec<&Splice> = splices.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.start));
    let mut out = text.to_owned();
    for s in sorted {
        out.replace_range(s.start..s.end, &s.written);
    }
    out
}

/// Why an entry could not be put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrestorable {
    /// The entry is no longer in the file.
    Gone,
    /// It is there, but not as rewire wrote it (the user changed it since).
    Changed,
}

/// Puts back one recorded entry: its value must still be exactly what rewire wrote.
///
/// # Errors
/// A syntax error; `Ok(Err(_))` when the entry is gone or was changed since.
pub fn restore(
    text: &str,
    key_path: &[String],
    original: &str,
    written: &str,
) -> Result<Result<String, Unrestorable>, SyntaxError> {
    let src = blank_bom(text);
    let Some(root) = parse(&src)? else {
        return Ok(Err(Unrestorable::Gone));
    };
    let Some(prop) = find(&root, key_path) else {
        return Ok(Err(Unrestorable::Gone));
    };
    let r = prop.value.range();
    // Hosts that rewrite their file (Claude Code does, at every start) change the layout but
    // not the value: the same value still counts as what rewire wrote.
    let same = &text[r.start..r.end] == written
        || parse(written)
            .ok()
            .flatten()
            .is_some_and(|w| to_serde(&w) == to_serde(&prop.value));
    if !same {
        return Ok(Err(Unrestorable::Changed));
    }
    let mut out = text.to_owned();
    out.replace_range(r.start..r.end, original);
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn proxy_args() -> Vec<String> {
        path(&["--socket", "/s/memory.sock"])
    }

    #[test]
    fn reads_jsonc_with_comments_and_trailing_commas() {
        let text = r#"{
  // my servers
  "servers": {
    "memory": { "type": "stdio", "command": "npx", "args": ["-y", "m",], "env": {"K": "v"}, },
    "web": { "type": "http", "url": "https://x/mcp" },
    /* asks */ "gh": { "command": "gh", "env": { "T": "${input:token}" } },
  },
  "inputs": [{ "id": "token", "type": "promptString" }],
}"#;
        let e = entries(text, Format::Vscode).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].key_path, path(&["servers", "memory"]));
        match &e[0].launch {
            Launch::Stdio(s) => {
                assert_eq!(s.command, "npx");
                assert_eq!(s.args, path(&["-y", "m"]));
                assert_eq!(s.env.get("K").map(String::as_str), Some("v"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e[1].launch,
            Launch::Remote {
                url: "https://x/mcp".into()
            }
        );
        assert!(matches!(e[2].launch, Launch::Unsupported { .. }));
    }

    /// A key written twice means what the hosts read (JSON.parse and the like): the last one.
    /// The entry is listed once, as its last definition, and rewire changes that one.
    #[test]
    fn a_duplicated_key_counts_once_as_its_last_occurrence() {
        let text = r#"{"mcpServers": {
            "gh": {"cmd": "old"},
            "gh": {"command": "gh", "command": "gh2", "args": ["a"]}
        }}"#;
        let e = entries(text, Format::McpServers).unwrap();
        assert_eq!(e.len(), 1, "{e:?}");
        match &e[0].launch {
            Launch::Stdio(s) => assert_eq!(
                (s.command.as_str(), &s.args[..]),
                ("gh2", &["a".to_owned()][..])
            ),
            other => panic!("{other:?}"),
        }
        let key = path(&["mcpServers", "gh"]);
        let s = rewire_splice(
            text,
            Format::McpServers,
            &key,
            "/bin/rmcp-mux-proxy",
            &proxy_args(),
        )
        .unwrap()
        .unwrap();
        assert!(
            s.original.contains("gh2"),
            "the last entry is the one rewired: {s:?}"
        );
        let new = apply(text, std::slice::from_ref(&s));
        match &entries(&new, Format::McpServers).unwrap()[0].launch {
            Launch::Stdio(p) => assert!(p.is_proxy(), "{p:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            restore(&new, &key, &s.original, &s.written)
                .unwrap()
                .unwrap(),
            text
        );
    }

    #[test]
    fn claude_code_has_per_project_entries() {
        let text = r#"{"mcpServers": {"a": {"command": "a"}}, "projects": {"/p": {"mcpServers": {"b": {"command": "b"}}}, "/q": {}}}"#;
        let e = entries(text, Format::ClaudeCode).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].key_path, path(&["projects", "/p", "mcpServers", "b"]));
        assert_eq!(e[1].project.as_deref(), Some("/p"));
    }

    #[test]
    fn zed_reads_both_shapes() {
        let text = r#"{"context_servers": {
            "old": {"command": {"path": "o", "args": ["1"], "env": {}}, "settings": {}},
            "new": {"command": "n", "args": ["2"]},
            "ext": {"settings": {"k": 1}}
        }}"#;
        let e = entries(text, Format::Zed).unwrap();
        let cmd = |i: usize| match &e[i].launch {
            Launch::Stdio(s) => (s.command.clone(), s.args.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(cmd(0), ("o".into(), path(&["1"])));
        assert_eq!(cmd(1), ("n".into(), path(&["2"])));
        assert!(matches!(e[2].launch, Launch::Unsupported { .. }));
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = entries(
            "{\n  \"mcpServers\": {\n    \"a\": [1 2 }\n}",
            Format::McpServers,
        )
        .unwrap_err();
        assert_eq!((e.line, e.col), (3, 12), "{e:?}");
        assert_eq!(e.message, "Expected comma");
        let e = entries("{\"mcpServers\": []}", Format::McpServers).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("mcpServers"));
    }

    #[test]
    fn splice_keeps_everything_else_and_the_indentation() {
        let text = "{\n\t\"mcpServers\": {\n\t\t\"memory\": {\n\t\t\t\"command\": \"npx\", // why\n\t\t\t\"args\": [\"-y\"],\n\t\t\t\"env\": {\"K\": \"s\"},\n\t\t\t\"disabled\": false\n\t\t},\n\t\t\"x\": {}\n\t}\n}\n";
        let s = rewire_splice(
            text,
            Format::McpServers,
            &path(&["mcpServers", "memory"]),
            "/bin/rmcp-mux-proxy",
            &proxy_args(),
        )
        .unwrap()
        .unwrap();
        let out = apply(text, std::slice::from_ref(&s));
        assert_eq!(
            out,
            "{\n\t\"mcpServers\": {\n\t\t\"memory\": {\n\t\t\t\"command\": \"/bin/rmcp-mux-proxy\",\n\t\t\t\"args\": [\"--socket\", \"/s/memory.sock\"],\n\t\t\t\"disabled\": false\n\t\t},\n\t\t\"x\": {}\n\t}\n}\n"
        );
        let back = restore(
            &out,
            &path(&["mcpServers", "memory"]),
            &s.original,
            &s.written,
        )
        .unwrap()
        .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn vscode_keeps_type_and_zed_keeps_its_nested_shape() {
        let text = r#"{"servers": {"m": { "command": "npx" }}}"#;
        let s = rewire_splice(
            text,
            Format::Vscode,
            &path(&["servers", "m"]),
            "/p",
            &proxy_args(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.written,
            r#"{ "type": "stdio", "command": "/p", "args": ["--socket", "/s/memory.sock"] }"#
        );
        let text =
            r#"{"context_servers": {"m": {"command": {"path": "o", "args": []}, "settings": {}}}}"#;
        let s = rewire_splice(
            text,
            Format::Zed,
            &path(&["context_servers", "m"]),
            "/p",
            &proxy_args(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.written,
            r#"{"command": { "path": "/p", "args": ["--socket", "/s/memory.sock"] }, "settings": {}}"#
        );
    }

    #[test]
    fn restore_accepts_the_same_value_in_another_layout() {
        let written = r#"{ "command": "/p", "args": ["--socket", "/s"] }"#;
        let text = "{\n  \"mcpServers\": {\n    \"m\": {\n      \"command\": \"/p\",\n      \"args\": [\n        \"--socket\",\n        \"/s\"\n      ]\n    }\n  }\n}";
        let back = restore(
            text,
            &path(&["mcpServers", "m"]),
            r#"{"command": "npx"}"#,
            written,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            back,
            "{\n  \"mcpServers\": {\n    \"m\": {\"command\": \"npx\"}\n  }\n}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_kept() {
        let text = "\u{feff}{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}";
        assert_eq!(entries(text, Format::McpServers).unwrap().len(), 1);
        let s = rewire_splice(
            text,
            Format::McpServers,
            &path(&["mcpServers", "a"]),
            "/p",
            &[],
        )
        .unwrap()
        .unwrap();
        let out = apply(text, std::slice::from_ref(&s));
        assert_eq!(
            out,
            "\u{feff}{\"mcpServers\": {\"a\": {\"command\": \"/p\", \"args\": []}}}"
        );
        let back = restore(&out, &path(&["mcpServers", "a"]), &s.original, &s.written).unwrap();
        assert_eq!(back.unwrap(), text);
    }

    #[test]
    fn restore_refuses_an_entry_the_user_changed() {
        let text = r#"{"mcpServers": {"m": {"command": "/p"}}}"#;
        let r = restore(
            text,
            &path(&["mcpServers", "m"]),
            "{}",
            r#"{"command": "/q"}"#,
        )
        .unwrap();
        assert_eq!(r, Err(Unrestorable::Changed));
        let r = restore(text, &path(&["mcpServers", "n"]), "{}", "{}").unwrap();
        assert_eq!(r, Err(Unrestorable::Gone));
    }
}
