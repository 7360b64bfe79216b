//! Turns the load benchmark's `results.json` into the table of DESIGN.md targets (each with
//! "met" or "not met", side by side with direct stdio) and the SVG plot. It only reads the
//! numbers measured in one run; it measures nothing itself.

use plotters::prelude::*;
use serde_json::Value;

/// One DESIGN.md target: what is measured, the value of this run, and whether it holds.
struct Row {
    measure: String,
    direct: String,
    value: String,
    target: &'static str,
    met: Option<bool>,
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(f64::NAN)
}

fn rows(r: &Value) -> Vec<Row> {
    let lat = |kind: &str, p: &str| f(r, &["latency", kind, p]);
    let one = |kind: &str, p: &str| f(r, &["latency_one_core", kind, p]);
    let big = |key: &str, kind: &str| f(r, &[key, kind, "p50_us"]);
    let tp = |k: &str| f(r, &["throughput", k]);
    let add_p50 = lat("proxy", "p50_us") - lat("direct", "p50_us");
    let add_p99 = lat("proxy", "p99_us") - lat("direct", "p99_us");
    let add_one = one("proxy", "p50_us") - one("direct", "p50_us");
    let base = tp("direct_512_in_flight");
    let ratio_mux = tp("mux_64") / base;
    let ratio_proxy = tp("proxy_64") / base;
    let rounds = r["throughput"]["rounds_64"]["mux"]
        .as_array()
        .map_or(0, Vec::len);
    let rss100 = f(r, &["rss_kib", "daemon_10_with_100_clients"]) * 1024.0 / 1e6;
    let rss_proxy = f(r, &["rss_kib", "proxy"]) * 1024.0 / 1e6;
    let pss_proxy = f(r, &["rss_kib", "proxy_pss"]) * 1024.0 / 1e6;
    let start = f(r, &["start_10_servers_ms"]);
    let many = f(r, &["many_clients", "req_per_s"]);
    let us = |v: f64| format!("{v:.1} µs");
    let lat_rounds = r["latency"]["proxy"]["rounds_p50_us"]
        .as_array()
        .map_or(1, Vec::len);
    let of = if lat_rounds > 1 {
        format!(", medians of {lat_rounds} rounds")
    } else {
        String::new()
    };
    let relay = lat("relay", "p50_us") - lat("direct", "p50_us");
    let relay_one = one("relay", "p50_us") - one("direct", "p50_us");
    let mut out = vec![if costly_crossings(r) && relay.is_finite() {
        // A fixed figure would judge where the scheduler put the processes; the null relay,
        // measured in the same rounds, pays the same crossings (DESIGN.md, Performance).
        Row {
            measure: format!(
                "added latency p50, proxy + mux, above what the null relay adds (scheduled{of})"
            ),
            direct: us(lat("direct", "p50_us")),
            value: format!(
                "{:+.1} µs (mux {add_p50:+.1}, relay {relay:+.1} µs)",
                add_p50 - relay
            ),
            target: "≤ 15 µs",
            met: Some(add_p50 - relay <= 15.0),
        }
    } else {
        Row {
            measure: format!("added latency p50, proxy + mux{of}"),
            direct: us(lat("direct", "p50_us")),
            value: format!("{add_p50:+.1} µs ({:.1} µs)", lat("proxy", "p50_us")),
            target: "≤ 50 µs",
            met: Some(add_p50 <= 50.0),
        }
    }];
    out.extend([
        Row {
            measure: format!("added latency p99, proxy + mux{of}"),
            direct: us(lat("direct", "p99_us")),
            value: format!("{add_p99:+.1} µs ({:.1} µs)", lat("proxy", "p99_us")),
            target: "≤ 250 µs",
            met: Some(add_p99 <= 250.0),
        },
        Row {
            measure: "added latency p50, proxy + mux, all on one core".into(),
            direct: us(one("direct", "p50_us")),
            value: format!("{add_one:+.1} µs ({:.1} µs)", one("proxy", "p50_us")),
            target: "≤ 30 µs",
            met: Some(add_one <= 30.0),
        },
        Row {
            measure: "added latency p50, mux socket only".into(),
            direct: us(lat("direct", "p50_us")),
            value: format!("{:+.1} µs", lat("mux", "p50_us") - lat("direct", "p50_us")),
            target: "—",
            met: None,
        },
    ]);
    // References, not targets: the proxy as libuv-based hosts run it, what one more process
    // that only copies the bytes adds here, and what the machine charges for a wake-up on
    // another CPU (docs/performance.md, "A wake-up on another vCPU").
    let pair = lat("proxy_socketpair", "p50_us") - lat("direct", "p50_us");
    if pair.is_finite() {
        out.push(Row {
            measure: format!(
                "added latency p50, proxy + mux with socket pairs for stdio (as libuv-based \
                 hosts give them){of}"
            ),
            direct: us(lat("direct", "p50_us")),
            value: format!(
                "{pair:+.1} µs ({:.1} µs)",
                lat("proxy_socketpair", "p50_us")
            ),
            target: "—",
            met: None,
        });
    }
    if relay.is_finite() {
        out.push(Row {
            measure: format!(
                "added latency p50, null relay, for reference: a process that only copies the \
                 bytes (scheduled{of} / all on one core)"
            ),
            direct: us(lat("direct", "p50_us")),
            value: format!("{relay:+.1} µs / {relay_one:+.1} µs"),
            target: "—",
            met: None,
        });
    }
    let wake = |k: &str| f(r, &["pipe_round_trip_us", k]);
    if wake("two_cpus").is_finite() {
        out.push(Row {
            measure: "pipe round trip between two processes, for reference: on one CPU (left), \
                      across two (right)"
                .into(),
            direct: us(wake("one_cpu")),
            value: us(wake("two_cpus")),
            target: "—",
            met: None,
        });
    }
    out.extend([
        Row {
            measure: format!(
                "throughput, 64 clients × 8 in flight (mux) / direct with 512 in flight, \
                 medians of {rounds} rounds"
            ),
            direct: format!("{base:.0} req/s"),
            value: format!("{ratio_mux:.2}× ({:.0} req/s)", tp("mux_64")),
            target: "≥ 0.70×",
            met: Some(ratio_mux >= 0.70),
        },
        Row {
            measure: "throughput, 64 proxies × 8 in flight / direct with 512 in flight, medians"
                .into(),
            direct: format!("{base:.0} req/s"),
            value: format!("{ratio_proxy:.2}× ({:.0} req/s)", tp("proxy_64")),
            target: "—",
            met: None,
        },
    ]);
    // Where the two cores went in those rounds: the sum of the three processes' CPU per answer
    // and the share left idle bound the ratio (docs/performance.md, "Under throughput").
    let cpu = |path: &str, k: &str| f(r, &["throughput", "cpu_64", path, k]);
    if cpu("mux", "server_us").is_finite() {
        out.push(Row {
            measure: "CPU per answer in those rounds (mux), and the machine's idle share".into(),
            direct: format!(
                "server {:.2} + generator {:.2} µs, {:.0} % idle",
                cpu("direct", "server_us"),
                cpu("direct", "generator_us"),
                cpu("direct", "idle") * 100.0
            ),
            value: format!(
                "server {:.2} + daemon {:.2} + generator {:.2} µs, {:.0} % idle",
                cpu("mux", "server_us"),
                cpu("mux", "daemon_us"),
                cpu("mux", "generator_us"),
                cpu("mux", "idle") * 100.0
            ),
            target: "—",
            met: None,
        });
    }
    for (key, what) in [("one_mib", "result"), ("one_mib_request", "request")] {
        for kind in ["mux", "proxy", "relay"] {
            // Each path is measured in turn with a direct connection of its own pass.
            let paired = format!("direct_with_{kind}");
            let direct = match big(key, &paired) {
                d if d.is_nan() => big(key, "direct"),
                d => d,
            };
            let ratio = big(key, kind) / direct;
            // The null relay is a reference for what a process in between costs, not a target.
            let (measure, target, met) = match kind {
                "relay" if ratio.is_nan() => continue,
                "relay" => (
                    format!("1 MiB {what}, null relay / direct (p50), for reference: a process that only copies the bytes"),
                    "—",
                    None,
                ),
                _ => (format!("1 MiB {what}, {kind} / direct (p50)"), "≤ 1.3×", Some(ratio <= 1.3)),
            };
            out.push(Row {
                measure,
                direct: format!("{:.2} ms", direct / 1e3),
                value: format!("{ratio:.2}× ({:.2} ms)", big(key, kind) / 1e3),
                target,
                met,
            });
        }
    }
    out.extend([
        Row {
            measure: "daemon RSS, 10 idle servers + 100 clients".into(),
            direct: "—".into(),
            value: format!("{rss100:.2} MB"),
            target: "≤ 8 MB",
            met: Some(rss100 > 0.0 && rss100 <= 8.0),
        },
        Row {
            measure: "proxy RSS".into(),
            direct: "—".into(),
            value: format!("{rss_proxy:.2} MB (PSS {pss_proxy:.2} MB)"),
            target: "≤ 2.5 MB",
            met: Some(rss_proxy > 0.0 && rss_proxy <= 2.5),
        },
        Row {
            measure: "1,000 clients × 4 in flight, every answer checked".into(),
            direct: "—".into(),
            value: format!(
                "all served, {many:.0} req/s, connect + initialize {:.0} ms",
                f(r, &["many_clients", "connect_init_ms"])
            ),
            target: "all served",
            // throughput() panics on a lost, misrouted or late answer, so reaching here is it.
            met: Some(many > 0.0),
        },
        Row {
            measure: "daemon start to 10 sockets ready (median)".into(),
            direct: "—".into(),
            value: format!("{start:.1} ms"),
            target: "≤ 10 ms",
            met: Some(start <= 10.0),
        },
    ]);
    out.extend(share_rows(r));
    out.extend(era_rows(r));
    out.extend(http_rows(r));
    out
}

/// A server shared per client (`share = "client"`): the first answer with the child's start
/// included, and the daemon's memory with 30 such children. References: no target.
fn share_rows(r: &Value) -> Vec<Row> {
    let first = |k: &str| f(r, &["share", "first_answer_ms", k]);
    let mut out = Vec::new();
    if first("mux").is_finite() {
        let n = r["share"]["first_answer_ms"]["rounds"]
            .as_array()
            .map_or(0, Vec::len);
        out.push(Row {
            measure: format!(
                "share = \"client\": connect to first answer, the server's start included, mux \
                 socket / proxy (direct: start the server, initialize, answer; medians of {n})"
            ),
            direct: format!("{:.2} ms", first("direct")),
            value: format!(
                "{:.2} ms / {:.2} ms ({:.2}× / {:.2}×)",
                first("mux"),
                first("proxy"),
                first("mux") / first("direct"),
                first("proxy") / first("direct")
            ),
            target: "—",
            met: None,
        });
    }
    let rss = |k: &str| f(r, &["share", "daemon_rss_kib_10x3", k]) * 1024.0 / 1e6;
    if rss("client").is_finite() {
        out.push(Row {
            measure: "daemon RSS, 10 servers × 3 clients, share = \"client\" (30 children; \
                      in brackets the same clients of 10 global servers)"
                .into(),
            direct: "—".into(),
            value: format!("{:.2} MB ({:.2} MB)", rss("client"), rss("global")),
            target: "—",
            met: None,
        });
    }
    out
}

/// A 2026-07-28 client against the handshake client, through the mux to the same
/// handshake-era server in the same run: the translation must cost under 10 % more.
fn era_rows(r: &Value) -> Vec<Row> {
    let lat = |k: &str| f(r, &["eras", "latency_us", k]);
    let tp = |k: &str| f(r, &["eras", "throughput_64", k]);
    let mut out = Vec::new();
    if lat("modern_p50").is_finite() {
        let ratio = lat("modern_p50") / lat("handshake_p50");
        out.push(Row {
            measure: "latency p50, 2026-07-28 client / handshake client, mux socket, the same \
                      handshake-era server, taken in turn"
                .into(),
            direct: "—".into(),
            value: format!(
                "{ratio:.2}× ({:.1} µs against {:.1} µs)",
                lat("modern_p50"),
                lat("handshake_p50")
            ),
            target: "≤ 1.10×",
            met: Some(ratio <= 1.10),
        });
    }
    if tp("modern").is_finite() {
        let ratio = tp("modern") / tp("handshake");
        out.push(Row {
            measure: "throughput, 64 clients × 8 in flight, 2026-07-28 / handshake, mux socket \
                      (under 10 % more cost per answer)"
                .into(),
            direct: "—".into(),
            value: format!(
                "{ratio:.2}× ({:.0} req/s against {:.0} req/s)",
                tp("modern"),
                tp("handshake")
            ),
            target: "≥ 0.91×",
            met: Some(ratio >= 1.0 / 1.1),
        });
    }
    let cpu = |k: &str| f(r, &["eras", "cpu_per_answer_us", k]);
    if cpu("daemon_modern").is_finite() {
        out.push(Row {
            measure: "CPU per answer in those rounds, handshake / 2026-07-28: daemon, load \
                      generator"
                .into(),
            direct: "—".into(),
            value: format!(
                "daemon {:.2} / {:.2} µs, generator {:.2} / {:.2} µs",
                cpu("daemon_handshake"),
                cpu("daemon_modern"),
                cpu("generator_handshake"),
                cpu("generator_modern")
            ),
            target: "—",
            met: None,
        });
    }
    let cache = |k: &str| f(r, &["eras", "list_cache", k]);
    if cache("requests").is_finite() {
        out.push(Row {
            measure: format!(
                "child round trips for {} × {} `tools/list` (one client after another) from a \
                 modern server marking its list public: 2026-07-28 clients (shared cache) / \
                 handshake clients (not cached)",
                cache("clients"),
                cache("times")
            ),
            direct: "—".into(),
            value: format!(
                "{} / {} ({} saved: cache hits)",
                cache("child_round_trips_cached"),
                cache("child_round_trips_uncached"),
                cache("cache_hits")
            ),
            target: "—",
            met: None,
        });
    }
    out
}

/// The Streamable HTTP front against the proxy and direct stdio in the same rounds, its
/// throughput with 64 sessions and its memory per session. References: no target.
fn http_rows(r: &Value) -> Vec<Row> {
    let lat = |k: &str| f(r, &["http", "latency_us", k]);
    let mut out = Vec::new();
    if lat("http_p50").is_finite() {
        out.push(Row {
            measure: "added latency p50 / p99, HTTP front (one session on a keep-alive \
                      connection); in brackets the proxy's, taken in turn"
                .into(),
            direct: format!("{:.1} µs / {:.1} µs", lat("direct_p50"), lat("direct_p99")),
            value: format!(
                "{:+.1} µs / {:+.1} µs (proxy {:+.1} µs / {:+.1} µs)",
                lat("http_p50") - lat("direct_p50"),
                lat("http_p99") - lat("direct_p99"),
                lat("proxy_p50") - lat("direct_p50"),
                lat("proxy_p99") - lat("direct_p99")
            ),
            target: "—",
            met: None,
        });
    }
    let tp = |k: &str| f(r, &["http", "throughput_64x1", k]);
    if tp("http").is_finite() {
        out.push(Row {
            measure: "throughput, 64 HTTP sessions / 64 proxies, one request in flight each".into(),
            direct: "—".into(),
            value: format!(
                "{:.2}× ({:.0} req/s against {:.0} req/s)",
                tp("http") / tp("proxy"),
                tp("http"),
                tp("proxy")
            ),
            target: "—",
            met: None,
        });
    }
    let per = f(r, &["http", "rss_kib", "per_session"]);
    if per.is_finite() {
        out.push(Row {
            measure: "daemon RSS per open HTTP session (100 sessions, each answered once)".into(),
            direct: "—".into(),
            value: format!("{per:.1} KiB"),
            target: "—",
            met: None,
        });
    }
    out
}

/// Whether every target row holds.
pub fn all_met(r: &Value) -> bool {
    rows(r).iter().all(|row| row.met != Some(false))
}

/// The markdown table: one row per DESIGN.md target, with direct stdio from the same run.
pub fn table(r: &Value) -> String {
    let load = r["load_average_at_start"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut md = String::from(
        "| measure | direct stdio | this run | target (DESIGN.md) | |\n|---|---|---|---|---|\n",
    );
    for row in rows(r) {
        let met = match row.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "",
        };
        md += &format!(
            "| {} | {} | {} | {} | {met} |\n",
            row.measure, row.direct, row.value, row.target
        );
    }
    md += &format!("\nLoad average when the run started: {load}.\n");
    md += &placement_note(r);
    md
}

/// Whether a wake-up on another CPU costs far more than one on the same CPU (more than five
/// times, by the pipe round trips the bench measured): a virtual machine whose vCPUs wake through
/// the hypervisor. There any process in the path pays the crossings, so the scheduled p50 is
/// judged against the null relay instead of a fixed figure.
fn costly_crossings(r: &Value) -> bool {
    let (one, two) = (
        f(r, &["pipe_round_trip_us", "one_cpu"]),
        f(r, &["pipe_round_trip_us", "two_cpus"]),
    );
    one.is_finite() && two.is_finite() && two > 5.0 * one
}

/// A warning under the table when a wake-up on another CPU costs far more than one on the same
/// CPU (a virtual machine whose vCPUs wake through the hypervisor): then each scheduled row
/// compares where the scheduler put the processes as much as the paths, direct stdio included,
/// and only the one-core row measures the mux by itself.
fn placement_note(r: &Value) -> String {
    if !costly_crossings(r) {
        return String::new();
    }
    let (one, two) = (
        f(r, &["pipe_round_trip_us", "one_cpu"]),
        f(r, &["pipe_round_trip_us", "two_cpus"]),
    );
    let direct: Vec<f64> = r["latency"]["direct"]["rounds_p50_us"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let spread = if direct.len() > 1 {
        let lo = direct.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = direct.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(" Direct stdio itself took {lo:.1}–{hi:.1} µs at p50 across the rounds.")
    } else {
        String::new()
    };
    format!(
        "\nOn this machine a wake-up on another CPU costs about {:.0} µs (a pipe round trip \
         between two processes: {one:.1} µs on one CPU, {two:.1} µs across two), so the \
         scheduled rows depend on whether the scheduler keeps the processes on one CPU.{spread} \
         The one-core row measures the mux by itself, and the scheduled p50 is judged by what \
         the mux adds above the null relay, which pays the same crossings.\n",
        (two - one) / 2.0
    )
}

/// The SVG: latency percentiles per path (left) and throughput against the number of
/// clients (right).
pub fn plot(r: &Value, path: &std::path::Path) {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (left, right) = root.split_horizontally(500);
    let paths = [("direct", BLUE), ("mux", GREEN), ("proxy", RED)];

    let pcts = [("p50_us", 50.0), ("p90_us", 90.0), ("p99_us", 99.0)];
    let max_lat = paths
        .iter()
        .flat_map(|(k, _)| pcts.iter().map(move |(p, _)| f(r, &["latency", k, p])))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("latency, one request in flight", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(45.0..100.0, 0.0..max_lat * 1.1)
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("µs")
        .draw()
        .unwrap();
    for (kind, color) in paths {
        let pts: Vec<(f64, f64)> = pcts
            .iter()
            .map(|(p, x)| (*x, f(r, &["latency", kind, p])))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .unwrap()
            .label(kind)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .unwrap();
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .unwrap();

    let counts = [1.0f64, 8.0, 64.0, 512.0];
    let series = [
        ("mux (N clients × 8)", "mux", GREEN),
        ("proxy (N clients × 8)", "proxy", RED),
        ("direct (1 conn, N × 8 in flight)", "direct", BLUE),
    ];
    let max_tp = series
        .iter()
        .flat_map(|(_, k, _)| {
            counts
                .iter()
                .map(move |n| f(r, &["throughput", &format!("{k}_{n}")]))
        })
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("throughput against clients", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0.8f64..700.0).log_scale(), 0.0..max_tp * 1.1 / 1e3)
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("thousand answers / s")
        .draw()
        .unwrap();
    for (label, kind, color) in series {
        let pts: Vec<(f64, f64)> = counts
            .iter()
            .map(|n| (*n, f(r, &["throughput", &format!("{kind}_{n}")]) / 1e3))
            .filter(|(_, v)| v.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .unwrap()
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .unwrap();
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .unwrap();
    root.present().unwrap();
}
