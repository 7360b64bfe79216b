//! A scriptable MCP stdio server for the tests and benchmarks: it crashes, prints garbage, sends
//! progress, sampling and elicitation requests on cue, ignores SIGTERM, leaves a grandchild
//! behind — everything no real server does on demand. Real servers cover the rest.
//!
//! Flags: `--counter-file PATH` (appends "start" per start), `--pid-file PATH` (our pid, then the
//! grandchild's), `--spawn-grandchild`, `--ignore-sigterm`, `--crash-on-start`,
//! `--crash-while-exists PATH` (exit status 1 at start while PATH exists),
//! `--exit-after-init` (with `--ignore-sigterm` it also outlives stdin EOF), `--startup-banner`, `--protocol-version V`, `--server-version V`,
//! `--era handshake|modern|dual`, `--exit-on-discover` (exits with status 4 when asked
//! `server/discover`, as a server that cannot take an unknown method).
//!
//! Eras: `handshake` (the default) speaks only the `initialize` era. `modern` speaks only
//! 2026-07-28: `initialize` is -32601, `server/discover` answers, every request must carry the
//! envelope (`_meta` with `io.modelcontextprotocol/protocolVersion` and `clientCapabilities`,
//! else -32602; an unknown version -32022), results carry `resultType` (and `ttlMs`/`cacheScope`
//! on the cacheable methods), `sample`/`elicit`/`roots` answer `input_required` and finish on
//! the retry carrying `inputResponses` and the exact `requestState`, and `subscriptions/listen`
//! opens a stream fed by `notify`. `dual` pins on the first request, as the Python SDK's servers
//! do: after `initialize` an enveloped request gets -32600; after an enveloped request or a
//! `server/discover`, `initialize` gets -32022.
//! Tools: echo, slow, crash, exit_after, close_stdout (closes stdout and lives on), garbage,
//! stats, sample, elicit, roots, notify, big, log, end_listens (modern), halves (writes the first half of a long
//! answer, then the rest once a `notifications/fake/finish` comes, or exits instead with
//! `"exit": true`), where (its pid, working folder, arguments, `FAKE_TAG` and the params of
//! the `initialize` it got).

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

type Out = Arc<Mutex<BufWriter<std::io::Stdout>>>;

/// Sends from worker threads: flushed at once.
fn send(out: &Out, msg: &Value) {
    queue(out, msg);
    let _ = out.lock().unwrap().flush();
}

/// Sends from the reader loop: flushed once the input is drained, so a burst of requests is
/// answered with few writes and the server is not the benchmarks' bottleneck.
fn queue(out: &Out, msg: &Value) {
    let mut w = out.lock().unwrap();
    let _ = serde_json::to_writer(&mut *w, msg);
    let _ = w.write_all(b"\n");
}

/// Keeps the heap as it grows (glibc): large messages come from it and it is never trimmed, so
/// a server that has answered a few 1 MiB messages answers the next without faulting in fresh
/// pages. Left to glibc's moving thresholds, how often a server gave its heap back and took it
/// again depended on the order of its earlier allocations: one process took ≈ 90 page faults per
/// 1 MiB answer and another, serving the same requests, ≈ 480 (≈ 1 ms here), which swamped what
/// the benchmark compares.
fn steady_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn send_raw(out: &Out, line: &str) {
    let mut w = out.lock().unwrap();
    let _ = w.write_all(line.as_bytes());
    let _ = w.write_all(b"\n");
    let _ = w.flush();
}

/// The era this process serves: not yet pinned (a dual-era server before its first request),
/// handshake or modern.
static ERA: AtomicU8 = AtomicU8::new(UNPINNED);
const UNPINNED: u8 = 0;
const HANDSHAKE: u8 = 1;
const MODERN: u8 = 2;

/// The modern protocol version this server speaks.
const MODERN_VERSION: &str = "2026-07-28";

fn modern() -> bool {
    ERA.load(Ordering::SeqCst) == MODERN
}

/// A result; in the modern era it says it is complete, as every modern result must.
fn result(id: &Value, mut result: Value) -> Value {
    if modern() {
        if let Some(o) = result.as_object_mut() {
            o.entry("resultType").or_insert(json!("complete"));
        }
    }
    json!({"jsonrpc":"2.0","id":id,"result":result})
}

fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = json!({"code":code,"message":message});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({"jsonrpc":"2.0","id":id,"error":e})
}

/// A cacheable modern result: `ttlMs` and `cacheScope` besides `resultType`.
fn cacheable(mut v: Value) -> Value {
    if modern() {
        v["ttlMs"] = json!(60000);
        v["cacheScope"] = json!("public");
    }
    v
}

/// Checks a modern request's envelope: the error to answer, if any.
fn envelope_error(id: &Value, meta: &Value) -> Option<Value> {
    let Some(version) = meta.get("io.modelcontextprotocol/protocolVersion") else {
        return Some(error(
            id,
            -32602,
            "missing io.modelcontextprotocol/protocolVersion",
            None,
        ));
    };
    if !meta["io.modelcontextprotocol/clientCapabilities"].is_object() {
        return Some(error(
            id,
            -32602,
            "missing io.modelcontextprotocol/clientCapabilities",
            None,
        ));
    }
    if version != MODERN_VERSION {
        return Some(error(
            id,
            -32022,
            "Unsupported protocol version",
            Some(json!({"supported":[MODERN_VERSION],"requested":version})),
        ));
    }
    None
}

/// One open `subscriptions/listen` stream: its id and what it asked for.
struct Listen {
    id: Value,
    notifications: Value,
}

/// Sends a frame of every listen `wants` selects, tagged with the listen's id.
fn to_listens(
    out: &Out,
    listens: &[Listen],
    method: &str,
    params: &Value,
    wants: impl Fn(&Value) -> bool,
) {
    for l in listens.iter().filter(|l| wants(&l.notifications)) {
        let mut p = params.clone();
        p["_meta"] = json!({"io.modelcontextprotocol/subscriptionId": l.id});
        send(out, &json!({"jsonrpc":"2.0","method":method,"params":p}));
    }
}

fn text_result(text: &str) -> Value {
    json!({"content":[{"type":"text","text":text}]})
}

#[derive(Default)]
struct Stats {
    initialize: u64,
    initialized: u64,
    requests: u64,
    cancelled: Vec<Value>,
    subscribe: Vec<Value>,
    unsubscribe: Vec<Value>,
    set_level: Vec<Value>,
    discover: u64,
    /// `tools/list` requests answered.
    tools_list: u64,
    /// The `_meta` of the latest modern requests (at most 50), oldest first.
    metas: Vec<Value>,
}

/// Requests of ours to the client, waiting for its answer: our id -> the tools/call id.
type Asked = Arc<Mutex<HashMap<String, Value>>>;

struct Flags {
    protocol: String,
    version: String,
    exit_after_init: bool,
}

#[cfg(unix)]
fn ignore_sigterm() {
    // libc is not a dependency; SIG_IGN is 1 and SIGTERM is 15 on every Unix we run on.
    extern "C" {
        fn signal(sig: i32, handler: usize) -> usize;
    }
    // SAFETY: installing SIG_IGN for SIGTERM has no preconditions.
    unsafe {
        signal(15, 1);
    }
}

fn main() {
    steady_heap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(path) = value("--counter-file") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "start").unwrap();
    }
    if has("--crash-on-start") {
        eprintln!("fake: crashing on start as asked");
        std::process::exit(3);
    }
    // Crashes like --crash-on-start while PATH exists: a test removes it to let a restart work.
    if let Some(path) = value("--crash-while-exists") {
        if std::path::Path::new(&path).exists() {
            eprintln!("fake: crashing on start while {path} exists");
            std::process::exit(1);
        }
    }
    if has("--ignore-sigterm") {
        ignore_sigterm();
    }
    let mut pids = vec![std::process::id()];
    if has("--spawn-grandchild") {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eprintln!("grandchild_pid={}", child.id());
        pids.push(child.id());
        // Deliberately never waited for: the test checks that the mux kills it with the group.
        std::mem::forget(child);
    }
    if let Some(path) = value("--pid-file") {
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(path, text).unwrap();
    }
    let stubborn = has("--ignore-sigterm");
    let flags = Flags {
        protocol: value("--protocol-version").unwrap_or_else(|| "2025-11-25".into()),
        version: value("--server-version").unwrap_or_else(|| "1.0".into()),
        exit_after_init: has("--exit-after-init"),
    };
    let dual = match value("--era").as_deref() {
        None | Some("handshake") => {
            ERA.store(HANDSHAKE, Ordering::SeqCst);
            false
        }
        Some("modern") => {
            ERA.store(MODERN, Ordering::SeqCst);
            false
        }
        Some("dual") => true,
        Some(other) => {
            eprintln!("fake: unknown --era {other}");
            std::process::exit(2);
        }
    };
    let mut listens: Vec<Listen> = Vec::new();
    // requestState -> (the tool call's name, the key of its input request).
    let mut states: HashMap<String, String> = HashMap::new();
    let out: Out = Arc::new(Mutex::new(BufWriter::with_capacity(
        1 << 16,
        std::io::stdout(),
    )));
    if has("--startup-banner") {
        send_raw(&out, "fake server starting (not JSON)");
    }
    let stats = Arc::new(Mutex::new(Stats::default()));
    let running: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>> = Arc::default();
    let asked: Asked = Arc::default();
    let mut next_ask = 1000u64;
    let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin());
    let mut line = String::new();
    let mut finish: Option<std::sync::mpsc::Sender<()>> = None;
    let mut init_params = Value::Null;
    loop {
        if input.buffer().is_empty() {
            let _ = out.lock().unwrap().flush();
        }
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            eprintln!("fake: ignoring a line that is not JSON");
            continue;
        };
        let id = msg.get("id").cloned();
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        if method.is_empty() {
            // A client's answer to one of our requests.
            if let Some(call) = id
                .as_ref()
                .and_then(|i| asked.lock().unwrap().remove(&i.to_string()))
            {
                let answer = msg
                    .get("result")
                    .or(msg.get("error"))
                    .cloned()
                    .unwrap_or(Value::Null);
                send(&out, &result(&call, text_result(&answer.to_string())));
            }
            continue;
        }
        let Some(id) = id else {
            match method {
                "notifications/initialized" => stats.lock().unwrap().initialized += 1,
                "notifications/fake/finish" => {
                    if let Some(go) = finish.take() {
                        let _ = go.send(());
                    }
                }
                "notifications/cancelled" => {
                    let req = params["requestId"].clone();
                    listens.retain(|l| l.id != req);
                    if let Some(flag) = running.lock().unwrap().remove(&req.to_string()) {
                        flag.store(true, Ordering::SeqCst);
                    }
                    stats.lock().unwrap().cancelled.push(req);
                }
                _ => {}
            }
            continue;
        };
        stats.lock().unwrap().requests += 1;
        let meta = params["_meta"].clone();
        let enveloped = meta
            .get("io.modelcontextprotocol/protocolVersion")
            .is_some();
        if dual && ERA.load(Ordering::SeqCst) == UNPINNED {
            let era = if method == "initialize" {
                HANDSHAKE
            } else if enveloped || method == "server/discover" {
                MODERN
            } else {
                UNPINNED
            };
            ERA.store(era, Ordering::SeqCst);
        }
        if method == "server/discover" && has("--exit-on-discover") {
            let _ = out.lock().unwrap().flush();
            std::process::exit(4);
        }
        let era = ERA.load(Ordering::SeqCst);
        if dual && era == HANDSHAKE && enveloped {
            send(&out, &error(&id, -32600, "this connection serves the handshake protocol era; requests carrying the 2026-07-28 envelope are not accepted on it", None));
            continue;
        }
        if era == MODERN {
            if method == "initialize" {
                match dual {
                    true => send(
                        &out,
                        &error(
                            &id,
                            -32022,
                            "Unsupported protocol version",
                            Some(
                                json!({"supported":[MODERN_VERSION],"requested":params["protocolVersion"]}),
                            ),
                        ),
                    ),
                    false => send(&out, &error(&id, -32601, "Method not found", None)),
                }
                continue;
            }
            if let Some(e) = envelope_error(&id, &meta) {
                send(&out, &e);
                continue;
            }
            let mut s = stats.lock().unwrap();
            s.metas.push(meta.clone());
            if s.metas.len() > 50 {
                s.metas.remove(0);
            }
        }
        let caps = &meta["io.modelcontextprotocol/clientCapabilities"];
        match method {
            "server/discover" if era == MODERN => {
                stats.lock().unwrap().discover += 1;
                send(
                    &out,
                    &result(
                        &id,
                        cacheable(json!({
                            "supportedVersions": [MODERN_VERSION],
                            "capabilities": {"tools":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"logging":{},"prompts":{"listChanged":true}},
                            "instructions": "a fake server for tests",
                            "_meta": {"io.modelcontextprotocol/serverInfo": {"name":"mcp-fake-server","version":flags.version}}
                        })),
                    ),
                );
            }
            "subscriptions/listen" if era == MODERN => {
                let asked = params["notifications"].clone();
                let mut honoured = serde_json::Map::new();
                for key in [
                    "toolsListChanged",
                    "promptsListChanged",
                    "resourcesListChanged",
                ] {
                    if asked[key] == json!(true) {
                        honoured.insert(key.into(), json!(true));
                    }
                }
                if let Some(uris) = asked.get("resourceSubscriptions") {
                    honoured.insert("resourceSubscriptions".into(), uris.clone());
                }
                send(
                    &out,
                    &json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":honoured,"_meta":{"io.modelcontextprotocol/subscriptionId":id}}}),
                );
                listens.push(Listen {
                    id,
                    notifications: Value::Object(honoured),
                });
            }
            "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe"
                if era == MODERN =>
            {
                send(&out, &error(&id, -32601, "Method not found", None));
            }
            "initialize" => {
                stats.lock().unwrap().initialize += 1;
                init_params = params.clone();
                send(
                    &out,
                    &result(
                        &id,
                        json!({
                            "protocolVersion": flags.protocol,
                            "capabilities": {"tools":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"logging":{},"prompts":{"listChanged":true}},
                            "serverInfo": {"name":"mcp-fake-server","version":flags.version}
                        }),
                    ),
                );
                if flags.exit_after_init {
                    std::process::exit(2);
                }
            }
            "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => {
                let mut s = stats.lock().unwrap();
                match method {
                    "logging/setLevel" => s.set_level.push(params["level"].clone()),
                    "resources/subscribe" => s.subscribe.push(params["uri"].clone()),
                    "resources/unsubscribe" => s.unsubscribe.push(params["uri"].clone()),
                    _ => {}
                }
                drop(s);
                send(&out, &result(&id, json!({})));
            }
            "tools/list" => {
                stats.lock().unwrap().tools_list += 1;
                let names = [
                    "echo",
                    "halves",
                    "slow",
                    "crash",
                    "exit_after",
                    "garbage",
                    "stats",
                    "sample",
                    "elicit",
                    "roots",
                    "notify",
                    "big",
                    "log",
                    "where",
                    "end_listens",
                ];
                let tools: Vec<Value> = names
                    .iter()
                    .map(|n| json!({"name":n,"inputSchema":{"type":"object"}}))
                    .collect();
                send(&out, &result(&id, cacheable(json!({ "tools": tools }))));
            }
            "tools/call" => {
                let name = params["name"].as_str().unwrap_or("");
                let a = &params["arguments"];
                match name {
                    "echo" => {
                        let mut text = a["text"].as_str().unwrap_or("").to_owned();
                        text.push_str(&"x".repeat(a["pad"].as_u64().unwrap_or(0) as usize));
                        queue(&out, &result(&id, text_result(&text)));
                    }
                    "halves" => {
                        // The head and first half now, whole-line order kept by writing nothing
                        // else until the rest (the test sends nothing else meanwhile).
                        let n = a["bytes"].as_u64().unwrap_or(0) as usize;
                        let exit = a["exit"].as_bool().unwrap_or(false);
                        {
                            let mut w = out.lock().unwrap();
                            let _ = write!(
                                w,
                                r#"{{"id":{id},"jsonrpc":"2.0","result":{{"content":[{{"text":"{}"#,
                                "h".repeat(n / 2)
                            );
                            let _ = w.flush();
                        }
                        let (go, wait) = std::sync::mpsc::channel();
                        finish = Some(go);
                        let out = out.clone();
                        std::thread::spawn(move || {
                            if wait.recv().is_err() || exit {
                                std::process::exit(3);
                            }
                            let mut w = out.lock().unwrap();
                            let _ = w.write_all("h".repeat(n - n / 2).as_bytes());
                            let _ = w.write_all(b"\",\"type\":\"text\"}]}}\n");
                            let _ = w.flush();
                        });
                    }
                    "big" => {
                        let text = "b".repeat(a["bytes"].as_u64().unwrap_or(0) as usize);
                        send(&out, &result(&id, text_result(&text)));
                    }
                    "slow" => {
                        let ms = a["ms"].as_u64().unwrap_or(100);
                        let steps = a["steps"].as_u64().unwrap_or(3).max(1);
                        let token = params["_meta"]["progressToken"].clone();
                        let cancelled = Arc::new(AtomicBool::new(false));
                        running
                            .lock()
                            .unwrap()
                            .insert(id.to_string(), cancelled.clone());
                        let (out, running) = (out.clone(), running.clone());
                        std::thread::spawn(move || {
                            for i in 1..=steps {
                                std::thread::sleep(Duration::from_millis(ms / steps));
                                if cancelled.load(Ordering::SeqCst) {
                                    return;
                                }
                                if !token.is_null() {
                                    send(
                                        &out,
                                        &json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":i,"total":steps}}),
                                    );
                                }
                            }
                            running.lock().unwrap().remove(&id.to_string());
                            if !cancelled.load(Ordering::SeqCst) {
                                send(&out, &result(&id, text_result(&format!("slept {ms}"))));
                            }
                        });
                    }
                    "close_stdout" => {
                        // No answer: stdout is gone; the process goes on reading stdin.
                        let _ = out.lock().unwrap().flush();
                        extern "C" {
                            fn close(fd: i32) -> i32;
                        }
                        // SAFETY: closing fd 1; every later write to it just fails (and is
                        // ignored by `send`).
                        unsafe {
                            close(1);
                        }
                    }
                    "crash" => {
                        let _ = out.lock().unwrap().flush();
                        std::process::exit(a["code"].as_i64().unwrap_or(1) as i32);
                    }
                    "exit_after" => {
                        send(&out, &result(&id, json!({})));
                        let ms = a["ms"].as_u64().unwrap_or(0);
                        let code = a["code"].as_i64().unwrap_or(0) as i32;
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_millis(ms));
                            std::process::exit(code);
                        });
                    }
                    "garbage" => {
                        send_raw(&out, "this is not json");
                        send_raw(&out, r#"{"jsonrpc":"2.0""#);
                        send(&out, &result(&id, text_result("ok")));
                    }
                    "stats" => {
                        let s = stats.lock().unwrap();
                        let v = json!({"initialize":s.initialize,"initialized":s.initialized,"requests":s.requests,"cancelled":s.cancelled,"subscribe":s.subscribe,"unsubscribe":s.unsubscribe,"set_level":s.set_level,"discover":s.discover,"tools_list":s.tools_list,"metas":s.metas,"listens":listens.len(),"pid":std::process::id()});
                        drop(s);
                        send(
                            &out,
                            &result(
                                &id,
                                json!({"content":[{"type":"text","text":v.to_string()}],"structuredContent":v}),
                            ),
                        );
                    }
                    "where" => {
                        let v = json!({
                            "pid": std::process::id(),
                            "cwd": std::env::current_dir().ok(),
                            "args": std::env::args().skip(1).collect::<Vec<_>>(),
                            "tag": std::env::var("FAKE_TAG").ok(),
                            "initialize": init_params,
                        });
                        send(
                            &out,
                            &result(
                                &id,
                                json!({"content":[{"type":"text","text":v.to_string()}],"structuredContent":v}),
                            ),
                        );
                    }
                    "log" => {
                        eprintln!("{}", a["text"].as_str().unwrap_or(""));
                        send(&out, &result(&id, json!({})));
                    }
                    "sample" | "elicit" | "roots" if era == MODERN => {
                        let (m, p, cap) = match name {
                            "sample" => (
                                "sampling/createMessage",
                                json!({"messages":[{"role":"user","content":{"type":"text","text":a["text"]}}],"maxTokens":10}),
                                "sampling",
                            ),
                            "elicit" => (
                                "elicitation/create",
                                json!({"message":a["message"],"requestedSchema":{"type":"object","properties":{}}}),
                                "elicitation",
                            ),
                            _ => ("roots/list", json!({}), "roots"),
                        };
                        let retry = params["requestState"].as_str().map(str::to_owned);
                        match retry {
                            Some(state) => match states.remove(&state) {
                                Some(key) => {
                                    let answer = params["inputResponses"][key.as_str()].clone();
                                    send(&out, &result(&id, text_result(&answer.to_string())));
                                }
                                None => {
                                    send(&out, &error(&id, -32602, "unknown requestState", None))
                                }
                            },
                            None if caps.get(cap).is_none_or(Value::is_null) => send(
                                &out,
                                &error(
                                    &id,
                                    -32021,
                                    "Missing required client capability",
                                    Some(json!({"requiredCapabilities":{cap:{}}})),
                                ),
                            ),
                            None => {
                                next_ask += 1;
                                let state = format!("fake-state-{next_ask}");
                                let key = format!("ask{next_ask}");
                                states.insert(state.clone(), key.clone());
                                send(
                                    &out,
                                    &result(
                                        &id,
                                        json!({"resultType":"input_required","inputRequests":{key:{"method":m,"params":p}},"requestState":state}),
                                    ),
                                );
                            }
                        }
                    }
                    "sample" | "elicit" | "roots" => {
                        next_ask += 1;
                        let ask = json!(next_ask);
                        let (m, p) = match name {
                            "sample" => (
                                "sampling/createMessage",
                                json!({"messages":[{"role":"user","content":{"type":"text","text":a["text"]}}],"maxTokens":10}),
                            ),
                            "elicit" => (
                                "elicitation/create",
                                json!({"message":a["message"],"requestedSchema":{"type":"object","properties":{}}}),
                            ),
                            _ => ("roots/list", json!({})),
                        };
                        asked.lock().unwrap().insert(ask.to_string(), id.clone());
                        send(
                            &out,
                            &json!({"jsonrpc":"2.0","id":ask,"method":m,"params":p}),
                        );
                    }
                    "notify" if era == MODERN => {
                        let kind = a["kind"].as_str().unwrap_or("");
                        match kind {
                            "updated" => {
                                let uri = a["uri"].clone();
                                to_listens(
                                    &out,
                                    &listens,
                                    "notifications/resources/updated",
                                    &json!({"uri":uri}),
                                    |n| {
                                        n["resourceSubscriptions"]
                                            .as_array()
                                            .is_some_and(|u| u.contains(&uri))
                                    },
                                );
                            }
                            "message" => send(
                                &out,
                                &json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":a["level"],"logger":"fake","data":a["data"]}}),
                            ),
                            _ => {
                                let (method, key) = match kind {
                                    "tools_changed" => {
                                        ("notifications/tools/list_changed", "toolsListChanged")
                                    }
                                    "resources_changed" => (
                                        "notifications/resources/list_changed",
                                        "resourcesListChanged",
                                    ),
                                    _ => {
                                        ("notifications/prompts/list_changed", "promptsListChanged")
                                    }
                                };
                                to_listens(&out, &listens, method, &json!({}), |n| {
                                    n[key] == json!(true)
                                });
                            }
                        }
                        send(&out, &result(&id, json!({})));
                    }
                    "end_listens" => {
                        // Ends every listen from the server's side, with a final result.
                        for l in listens.drain(..) {
                            send(
                                &out,
                                &result(
                                    &l.id,
                                    json!({"_meta":{"io.modelcontextprotocol/subscriptionId":l.id}}),
                                ),
                            );
                        }
                        send(&out, &result(&id, json!({})));
                    }
                    "notify" => {
                        let note = match a["kind"].as_str().unwrap_or("") {
                            "tools_changed" => {
                                json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})
                            }
                            "resources_changed" => {
                                json!({"jsonrpc":"2.0","method":"notifications/resources/list_changed"})
                            }
                            "updated" => {
                                json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":a["uri"]}})
                            }
                            "message" => {
                                json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":a["level"],"logger":"fake","data":a["data"]}})
                            }
                            _ => {
                                json!({"jsonrpc":"2.0","method":"notifications/prompts/list_changed"})
                            }
                        };
                        send(&out, &note);
                        send(&out, &result(&id, json!({})));
                    }
                    other => send(
                        &out,
                        &json!({"jsonrpc":"2.0","id":id,"error":{"code":-32602,"message":format!("unknown tool {other}")}}),
                    ),
                }
            }
            _ => send(&out, &error(&id, -32601, "Method not found", None)),
        }
    }
    if stubborn {
        // A stubborn server outlives stdin EOF too: only SIGKILL ends it.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
