//! Criterion micro-benchmarks of the mux's hot paths: parsing the envelope (the scanner and
//! the serde_json path it replaced, side by side), reading and stripping a 2026-07-28
//! request's `_meta` envelope (likewise), rewriting an id in a 1 MiB response (as the router
//! does it, sharing the payload, and by copying, as it did before), and routing one request
//! and its answer through the router, from a handshake client and from a 2026-07-28 client.
//! Pure CPU work: no sockets, no processes. `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmcp_mux::config::Config;
use rmcp_mux::jsonrpc::{self, era, Line};
use rmcp_mux::mux::router::{Action, ClientId, Input, Router};

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello, world","pad":0},"_meta":{"progressToken":"p-17"}}}"#;

/// [`REQUEST`] from a 2026-07-28 client: the envelope in `_meta` beside the progress token.
const MODERN_REQUEST: &str = r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello, world","pad":0},"_meta":{"progressToken":"p-17","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}"#;

fn big_response() -> Vec<u8> {
    let text = "x".repeat(1 << 20);
    format!(
        r#"{{"jsonrpc":"2.0","id":42,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
    )
    .into_bytes()
}

fn envelope(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    g.bench_function("request/scanner", |b| {
        b.iter(|| {
            jsonrpc::parse_one(black_box(REQUEST.as_bytes()))
                .unwrap()
                .kind
        })
    });
    g.bench_function("request/serde_json", |b| {
        b.iter(|| {
            jsonrpc::parse_one_serde(black_box(REQUEST.as_bytes()))
                .unwrap()
                .kind
        })
    });
    let env = jsonrpc::parse_one(MODERN_REQUEST.as_bytes()).unwrap();
    let meta = jsonrpc::request_meta(env.params).meta.unwrap();
    g.bench_function("modern_meta/scanner", |b| {
        b.iter(|| {
            let m = black_box(meta);
            (
                era::read(m).unwrap().unwrap().version.len(),
                era::strip(m, Some(b"3")),
            )
        })
    });
    g.bench_function("modern_meta/serde_json", |b| {
        b.iter(|| {
            let m = black_box(meta);
            (
                era::read_serde(m).unwrap().unwrap().version.len(),
                era::strip_serde(m, Some(b"3")),
            )
        })
    });
    let big = big_response();
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("1mib_result/scanner", |b| {
        b.iter(|| jsonrpc::parse_one(black_box(&big)).unwrap().kind)
    });
    g.bench_function("1mib_result/serde_json", |b| {
        b.iter(|| jsonrpc::parse_one_serde(black_box(&big)).unwrap().kind)
    });
    g.finish();
}

fn rewrite_id(c: &mut Criterion) {
    let big = Bytes::from(big_response());
    let mut g = c.benchmark_group("rewrite_id");
    g.throughput(Throughput::Bytes(big.len() as u64));
    // What the router does: scan, then the line as pieces around the new id.
    g.bench_function("1mib_response", |b| {
        b.iter(|| {
            let line = black_box(&big);
            let env = jsonrpc::parse_one(line).unwrap();
            let span = jsonrpc::span_in(line, env.id.unwrap().get());
            Line::splice(line, &mut [(span, &b"\"client-7\""[..])])
        })
    });
    // The copy it replaced: scan, then one new buffer with the id spliced in.
    g.bench_function("1mib_response/copy", |b| {
        b.iter(|| {
            let line = black_box(&big[..]);
            let env = jsonrpc::parse_one(line).unwrap();
            let span = jsonrpc::span_in(line, env.id.unwrap().get());
            jsonrpc::splice(line, &mut [(span, &b"\"client-7\""[..])])
        })
    });
    g.finish();
}

/// A router whose child is running and one client that finished its handshake.
fn running_router() -> Router {
    let cfg = Config::from_toml(
        "[servers.s]\ncmd = \"srv\"\nmax_active_clients = 4096\n",
        Path::new("/tmp/bench.toml"),
    )
    .expect("bench config")
    .server("s")
    .expect("server s")
    .clone();
    let now = Instant::now();
    let mut r = Router::new(cfg);
    let drain =
        |r: &mut Router| -> Vec<Action> { std::iter::from_fn(|| r.poll_action()).collect() };
    drain(&mut r);
    r.handle(now, Input::ChildSpawned { pid: 1 });
    let init = drain(&mut r);
    let Some(Action::ToChild(line)) = init.first() else {
        panic!("no upstream initialize: {init:?}");
    };
    let line = line.to_bytes();
    let env = jsonrpc::parse_one(&line).unwrap();
    let id = env.id.unwrap().get().to_owned();
    r.handle(
        now,
        Input::ChildLine(Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"s","version":"1"}}}}}}"#
        ))),
    );
    drain(&mut r);
    r.handle(now, Input::ClientConnected(ClientId(1)));
    r.handle(
        now,
        Input::ClientLine(
            ClientId(1),
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}"#),
        ),
    );
    r.handle(
        now,
        Input::ClientLine(
            ClientId(1),
            Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
        ),
    );
    drain(&mut r);
    r
}

fn router(c: &mut Criterion) {
    let mut r = running_router();
    r.handle(Instant::now(), Input::ClientConnected(ClientId(2)));
    for (name, client, request) in [
        ("router/request_and_answer", ClientId(1), REQUEST),
        (
            "router/modern_request_and_answer",
            ClientId(2),
            MODERN_REQUEST,
        ),
    ] {
        request_and_answer(c, &mut r, name, client, request);
    }
}

/// One request of `client` through the router, the child's answer, and the answer routed back.
fn request_and_answer(
    c: &mut Criterion,
    r: &mut Router,
    name: &str,
    client: ClientId,
    request: &'static str,
) {
    let now = Instant::now();
    let request = Bytes::from_static(request.as_bytes());
    c.bench_function(name, |b| {
        b.iter(|| {
            r.handle(now, Input::ClientLine(client, request.clone()));
            let Some(Action::ToChild(up)) = r.poll_action() else {
                panic!("request not forwarded");
            };
            // The child's answer, under the upstream id the router chose.
            let up = up.to_bytes();
            let env = jsonrpc::parse_one(&up).unwrap();
            let answer = format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"content":[]}}}}"#,
                env.id.unwrap().get()
            );
            r.handle(now, Input::ChildLine(Bytes::from(answer)));
            let Some(Action::ToClient(to, out)) = r.poll_action() else {
                panic!("answer not routed back");
            };
            assert_eq!(to, client);
            black_box(out)
        })
    });
}

criterion_group!(benches, envelope, rewrite_id, router);
criterion_main!(benches);
