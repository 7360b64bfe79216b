//! Small async helpers shared by the actor and the proxy: writing one line, sleeping until an
//! optional deadline. Kept here so both paths write lines the same way.

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

/// Writes `line` and its newline into the buffer (no flush: callers batch before flushing).
pub(crate) async fn write_line<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    line: &[u8],
) -> std::io::Result<()> {
    out.write_all(line).await?;
    out.write_all(b"\n").await
}

/// Sleeps until `at`, or forever when there is no deadline (for an idle `select!` arm).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
