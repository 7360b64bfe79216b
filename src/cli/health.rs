//! `rmcp-mux health`: proves a server answers MCP end to end, through its socket and the mux,
//! with a real handshake and a ping.
//!
//! It is a client like any host; it must not reach into the daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Connects to `socket`, initializes and pings; returns how long the whole exchange took.
///
/// # Errors
/// Nothing listening, an error answer (for example `server_unavailable`), or no answer within
/// `timeout`.
pub async fn check(socket: &Path, timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    tokio::time::timeout(timeout, exchange(socket))
        .await
        .with_context(|| format!("no answer from {} within {timeout:?}", socket.display()))??;
    Ok(start.elapsed())
}

async fn exchange(socket: &Path) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let init = r#"{"jsonrpc":"2.0","id":"health-1","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"rmcp-mux-health","version":"1"}}}"#;
    let ping = r#"{"jsonrpc":"2.0","id":"health-2","method":"ping"}"#;
    write.write_all(format!("{init}\n").as_bytes()).await?;
    expect_result(&mut lines, "health-1").await?;
    write
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await?;
    write.write_all(format!("{ping}\n").as_bytes()).await?;
    expect_result(&mut lines, "health-2").await
}

async fn expect_result(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    id: &str,
) -> anyhow::Result<()> {
    while let Some(line) = lines.next_line().await? {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg.get("id").and_then(|v| v.as_str()) != Some(id) {
            continue; // notifications and other traffic
        }
        if let Some(err) = msg.get("error") {
            let message = err
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("error");
            bail!("{message}");
        }
        return Ok(());
    }
    bail!("the connection closed before an answer")
}
