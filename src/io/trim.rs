//! Gives heap memory freed after large messages back to the system. glibc keeps what a
//! program frees in its arenas, and after the first large buffer is freed it raises its mmap
//! threshold, so later large buffers come from the arenas too: a daemon that once carried a
//! few 1 MiB messages kept ≈ 9 MB it no longer used (docs/performance.md, "Daemon memory").
//! Once no large line has passed for a moment, the trim task calls `malloc_trim`.
//!
//! It must stay off the hot path: the actor only compares each line's length with
//! [`LARGE_LINE`]. It does nothing except with glibc (macOS's allocator returns memory itself).

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A line at least this long leaves buffers behind that are worth returning.
pub(crate) const LARGE_LINE: usize = 256 * 1024;

/// How long no large line must pass before the trim (a burst of them is trimmed once).
const QUIET: Duration = Duration::from_secs(1);

/// Woken by every large line.
static LARGE: Notify = Notify::const_new();

/// Notes a line of `len` bytes that the daemon read or wrote.
#[inline]
pub(crate) fn note_line(len: usize) {
    if len >= LARGE_LINE {
        LARGE.notify_one();
    }
}

/// Starts the trim task of a daemon; it ends when `token` is cancelled.
pub(crate) fn spawn(token: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(run(&LARGE, QUIET, trim, token));
}

/// Waits for a large line, then for `quiet` without one, then trims; until cancelled.
async fn run(large: &Notify, quiet: Duration, mut trim: impl FnMut(), token: CancellationToken) {
    while crate::io::lines::after_burst(large, quiet, &token).await {
        trim();
    }
}

/// Returns the free memory of every arena to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks; the
        // argument is the padding to keep at the top of the heap.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released, "returned freed heap memory to the system");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn wait_for(count: &AtomicUsize, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count.load(Ordering::SeqCst) < n {
            assert!(tokio::time::Instant::now() < deadline, "no trim in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A burst of large lines is trimmed once it is over; a later one is trimmed again.
    #[tokio::test]
    async fn trims_after_each_quiet_burst() {
        let large = Arc::new(Notify::new());
        let trims = Arc::new(AtomicUsize::new(0));
        let token = CancellationToken::new();
        let task = tokio::spawn({
            let (large, trims, token) = (large.clone(), trims.clone(), token.clone());
            async move {
                let count = || {
                    trims.fetch_add(1, Ordering::SeqCst);
                };
                run(&large, Duration::from_millis(20), count, token).await;
            }
        });
        for _ in 0..5 {
            large.notify_one();
        }
        wait_for(&trims, 1).await;
        large.notify_one();
        wait_for(&trims, 2).await;
        token.cancel();
        task.await.unwrap();
        assert_eq!(trims.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn only_large_lines_count() {
        note_line(LARGE_LINE - 1);
        let woke = tokio::time::timeout(Duration::from_millis(50), LARGE.notified()).await;
        assert!(woke.is_err(), "a small line woke the trim task");
        note_line(LARGE_LINE);
        tokio::time::timeout(Duration::from_secs(30), LARGE.notified())
            .await
            .expect("a large line wakes the trim task");
    }
}
