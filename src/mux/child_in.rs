//! The child's stdin as the actor writes it: short lines copied in with `write`, long ones
//! (Linux) lent to the pipe with `vmsplice`, which hands it the pages the line already sits in
//! instead of copying them, and keeps the line until the child has read it.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};

use tokio::net::unix::pipe;

use crate::io::lines::TryWrite;
#[cfg(target_os = "linux")]
use crate::jsonrpc::Line;

/// The child's stdin pipe.
///
/// A line of [`LEND_MIN`] bytes or more is lent to the pipe (`vmsplice`): the pipe then refers
/// to the line's own memory, and the child's read copies from there, so a 1 MiB request is
/// copied once in the daemon (read from its client) instead of twice (on this machine class
/// the write of 1 MiB into a pipe took ≈ 0.25 ms, the lending ≈ 0.035 ms; docs/performance.md,
/// "What each optimisation bought"). That memory must not change until the child has read it: the line (its
/// buffers are immutable and shared) is kept until the bytes the pipe still holds, its
/// `FIONREAD`, come after it.
pub(crate) struct ChildIn {
    tx: pipe::Sender,
    /// Bytes the pipe took since the child started.
    #[cfg(target_os = "linux")]
    written: std::sync::atomic::AtomicU64,
    #[cfg(target_os = "linux")]
    lent: std::sync::Mutex<lend::Lent>,
    /// Whether `lent` holds any line: writes and answers take its lock only then, so a server
    /// that never gets a long line pays two atomic operations per write for this.
    #[cfg(target_os = "linux")]
    lending: std::sync::atomic::AtomicBool,
}

/// Lines this long are lent rather than copied: the length from which answers are streamed
/// too (`STREAM_AT`). Shorter lines are copied as before; where lending starts to pay was not
/// measured.
pub(crate) const LEND_MIN: usize = 64 * 1024;

impl ChildIn {
    pub(crate) fn new(tx: pipe::Sender) -> Self {
        ChildIn {
            tx,
            #[cfg(target_os = "linux")]
            written: std::sync::atomic::AtomicU64::new(0),
            #[cfg(target_os = "linux")]
            lent: std::sync::Mutex::default(),
            #[cfg(target_os = "linux")]
            lending: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets go of the lines the child has read: called when it answers (by then it read the
    /// request) and on every write.
    pub(crate) fn release(&self) {
        #[cfg(target_os = "linux")]
        if self.lending.load(std::sync::atomic::Ordering::Acquire) {
            self.release_locked(&mut self.lock());
        }
    }

    #[cfg(target_os = "linux")]
    fn lock(&self) -> std::sync::MutexGuard<'_, lend::Lent> {
        self.lent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`ChildIn::release`] with the lock held.
    #[cfg(target_os = "linux")]
    fn release_locked(&self, lent: &mut lend::Lent) {
        // The count first, then what the pipe holds: a write in between makes the child seem
        // to have read less, never more.
        let written = self.written.load(std::sync::atomic::Ordering::Acquire);
        let holding = lent.release(self.tx.as_fd(), written);
        self.lending
            .store(holding, std::sync::atomic::Ordering::Release);
    }

    /// How many lent lines the pipe may still refer to.
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn lent(&self) -> usize {
        self.lock().held.len()
    }
}

impl Drop for ChildIn {
    fn drop(&mut self) {
        self.release();
    }
}

impl AsFd for ChildIn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tx.as_fd()
    }
}

impl TryWrite for ChildIn {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.tx.try_write_vectored(bufs)?;
        #[cfg(target_os = "linux")]
        {
            self.written
                .fetch_add(n as u64, std::sync::atomic::Ordering::AcqRel);
            self.release();
        }
        Ok(n)
    }

    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        self.tx.writable()
    }

    #[cfg(target_os = "linux")]
    fn lends(&self) -> bool {
        true
    }

    #[cfg(target_os = "linux")]
    fn lend(&self, line: &Line, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut lent = self.lock();
        // Through the runtime, so that a full pipe clears its readiness and the writer task
        // then waits for room instead of trying again at once.
        let n = self.tx.try_io(|| {
            nix::fcntl::vmsplice(
                &self.tx,
                slices,
                nix::fcntl::SpliceFFlags::SPLICE_F_NONBLOCK,
            )
            .map_err(io::Error::from)
        })?;
        if n > 0 {
            let end = self
                .written
                .fetch_add(n as u64, std::sync::atomic::Ordering::AcqRel)
                + n as u64;
            lent.held.push_back((end, line.clone()));
        }
        self.release_locked(&mut lent);
        Ok(n)
    }
}

#[cfg(target_os = "linux")]
mod lend {
    use std::collections::VecDeque;
    use std::os::fd::{AsRawFd, BorrowedFd};

    use crate::jsonrpc::Line;

    /// The lines lent to the pipe, with where each ends.
    #[derive(Default)]
    pub(super) struct Lent {
        /// Lent lines, each with the count of bytes written when its last lent byte went in.
        pub(super) held: VecDeque<(u64, Line)>,
    }

    impl Lent {
        /// Drops the lines the child has read past, `written` bytes having gone into pipe
        /// `fd`, which holds its last `FIONREAD`; returns whether any is still held.
        pub(super) fn release(&mut self, fd: BorrowedFd<'_>, written: u64) -> bool {
            if self.held.is_empty() {
                return false;
            }
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int, into `queued`.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut queued) } != 0 {
                return true; // keep everything; asked again on the next write
            }
            let read = written.saturating_sub(u64::try_from(queued).unwrap_or(0));
            while self.held.front().is_some_and(|(end, _)| *end <= read) {
                self.held.pop_front();
            }
            !self.held.is_empty()
        }
    }

    impl Drop for Lent {
        fn drop(&mut self) {
            // The pipe may outlive the daemon's end (a grandchild holding the child's stdin)
            // and still refer to these lines' memory: if it was reused, whoever reads the pipe
            // would read other clients' bytes. What was never read is kept for good (at most
            // the child's unread input, once per child that exits with some).
            for (_, line) in self.held.drain(..) {
                std::mem::forget(line);
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    /// Long lines (lent) and short ones (copied), some of them cut into pieces, through a pipe
    /// that fills up so that the writer task takes batches of them: one stream of bytes in
    /// order, and nothing still held once it is all read.
    #[tokio::test]
    async fn long_and_short_lines_keep_order_through_a_full_pipe() {
        use crate::io::lines::LineWriter;
        let (tx, mut rx) = pipe::pipe().unwrap();
        let tracker = tokio_util::task::TaskTracker::new();
        let mut w = LineWriter::new(
            ChildIn::new(tx),
            1 << 16,
            &tracker,
            tracing::Span::none(),
            None,
        );
        let mut expected = Vec::new();
        for i in 0..40usize {
            let len = if i % 3 == 0 {
                10 + i
            } else {
                LEND_MIN + 5_000 * i
            };
            let body: Vec<u8> = (0..len).map(|k| b'a' + ((k * 7 + i) % 26) as u8).collect();
            let body = Bytes::from(body);
            let line = if i % 2 == 0 {
                Line::from(body.clone())
            } else {
                Line::splice(&body, &mut [(1..3, &b"ID"[..])])
            };
            for part in line.parts() {
                expected.extend_from_slice(part);
            }
            expected.push(b'\n');
            w.send(&mut vec![line]).unwrap();
        }
        let child_in = std::sync::Arc::clone(&w.peer_arc());
        drop(w);
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while got.len() < expected.len() {
                let mut buf = vec![0u8; 1 << 16];
                let n = rx.read(&mut buf).await.unwrap();
                assert!(n > 0, "the pipe closed early");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("everything arrives");
        assert!(got == expected, "bytes differ");
        tracker.close();
        tracker.wait().await;
        child_in.release();
        assert_eq!(child_in.lent(), 0);
    }

    /// The writer task counts what it wrote across its batch: past a long line written whole,
    /// the write goes on with the next line (it once lent the first one's nothing, forever).
    #[tokio::test]
    async fn a_batch_goes_on_past_a_long_line_written_whole() {
        let (tx, mut rx) = pipe::pipe().unwrap();
        let w = ChildIn::new(tx);
        w.writable().await.unwrap();
        let long = |c: u8| Line::from(Bytes::from(vec![c; LEND_MIN]));
        let batch = [long(b'a'), long(b'b')];
        let n = crate::io::lines::try_write_lines(&w, &batch, LEND_MIN + 1).unwrap();
        assert!(n > 0, "nothing written past the first line");
        let mut got = vec![0u8; n];
        rx.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&c| c == b'b' || c == b'\n'));
    }

    /// A lent line reaches the reader whole, and is held exactly until the reader has read
    /// past it.
    #[tokio::test]
    async fn a_lent_line_is_held_until_it_is_read() {
        let (tx, mut rx) = pipe::pipe().unwrap();
        let w = ChildIn::new(tx);
        let body: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let line = Line::from(Bytes::from(body.clone()));
        let slices = [IoSlice::new(&line.parts()[0]), IoSlice::new(b"\n")];
        w.writable().await.unwrap();
        assert_eq!(w.lend(&line, &slices).unwrap(), body.len() + 1);
        assert_eq!(w.lent(), 1);
        let mut got = vec![0u8; body.len() / 2];
        rx.read_exact(&mut got).await.unwrap();
        w.release();
        assert_eq!(w.lent(), 1, "let go before the reader read it all");
        let mut rest = vec![0u8; body.len() + 1 - got.len()];
        rx.read_exact(&mut rest).await.unwrap();
        w.release();
        assert_eq!(w.lent(), 0);
        got.extend_from_slice(&rest);
        assert_eq!(&got[..body.len()], &body[..]);
        assert_eq!(got[body.len()], b'\n');
        // Bytes copied in after it count too: a lent line behind them is held until read.
        assert_eq!(
            w.try_write_vectored(&[IoSlice::new(b"short\n")]).unwrap(),
            6
        );
        assert_eq!(w.lend(&line, &slices).unwrap(), body.len() + 1);
        let mut short = [0u8; 6];
        rx.read_exact(&mut short).await.unwrap();
        w.release();
        assert_eq!(w.lent(), 1);
    }
}
