//! Small async helpers shared by the actor and the proxy: writing one line, sleeping until an
//! optional deadline, and writing lines to a socket or pipe without a task hop when it has room.
//! Kept here so every path writes lines the same way.

use std::future::Future;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::jsonrpc::Line;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Writes `line` and its newline into the buffer (no flush: callers batch before flushing).
pub(crate) async fn write_line<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    line: &[u8],
) -> std::io::Result<()> {
    out.write_all(line).await?;
    out.write_all(b"\n").await
}

/// Waits for `wake`, then until it has stayed quiet for `quiet` (a wake in between starts the
/// wait again): the end of a burst of events, to act on once. `false` when `token` is
/// cancelled first. Cancel safe: a permit stays stored in the `Notify`.
pub(crate) async fn after_burst(
    wake: &tokio::sync::Notify,
    quiet: std::time::Duration,
    token: &CancellationToken,
) -> bool {
    tokio::select! {
        () = wake.notified() => {}
        () = token.cancelled() => return false,
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(quiet) => return true,
            () = wake.notified() => {}
            () = token.cancelled() => return false,
        }
    }
}

/// Sleeps until `at`, or forever when there is no deadline (for an idle `select!` arm).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A socket or pipe that can be written through a shared reference: the actor writes to it
/// directly while its writer task is idle, and the writer task takes over when it is full.
pub(crate) trait TryWrite: Send + Sync + 'static {
    /// Writes what fits now, or fails with `WouldBlock`.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;
    /// Waits until the peer has room again.
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Whether [`TryWrite::lend`] hands lines over without copying them.
    fn lends(&self) -> bool {
        false
    }
    /// Writes what fits now of `slices`, the rest of `line` from some offset on; a peer that
    /// [`lends`](TryWrite::lends) refers to the line's memory instead of copying it, and keeps
    /// `line` for as long as it does.
    fn lend(&self, line: &Line, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let _ = line;
        self.try_write_vectored(slices)
    }
    /// Whether [`TryWrite::splice_from`] can move bytes into this peer.
    fn takes_splice(&self) -> bool {
        false
    }
    /// Moves up to `n` bytes from the front of pipe `from` into this peer without copying
    /// them (Linux `splice`); returns how many moved, 0 when it cannot or the peer is full
    /// now.
    fn splice_from(&self, from: std::os::fd::BorrowedFd<'_>, n: usize) -> std::io::Result<usize> {
        let _ = (from, n);
        Ok(0)
    }
}

impl TryWrite for crate::io::socket::SocketWriter {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        crate::io::socket::SocketWriter::try_write_vectored(self, bufs)
    }
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        crate::io::socket::SocketWriter::writable(self)
    }
}

impl TryWrite for tokio::net::unix::pipe::Sender {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        tokio::net::unix::pipe::Sender::try_write_vectored(self, bufs)
    }
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::unix::pipe::Sender::writable(self)
    }
}

/// Where a client's lines go: its socket, or, once its proxy handed the host's stdio over
/// (`crate::io::handoff`), the host's stdout, a pipe or a socket.
pub(crate) enum Sink {
    /// A socket (a client's own, or a host's stdout socket pair).
    Socket(crate::io::socket::SocketWriter),
    /// A host's stdout pipe, grown when large lines come (as the proxy does).
    Pipe(tokio::net::unix::pipe::Sender, PipeRoom),
}

impl TryWrite for Sink {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Sink::Socket(s) => crate::io::socket::SocketWriter::try_write_vectored(s, bufs),
            Sink::Pipe(p, room) => {
                room.want(p, bufs.iter().map(|b| b.len()).sum());
                p.try_write_vectored(bufs)
            }
        }
    }
    async fn writable(&self) -> std::io::Result<()> {
        match self {
            Sink::Socket(s) => crate::io::socket::SocketWriter::writable(s).await,
            Sink::Pipe(p, _) => p.writable().await,
        }
    }
    fn takes_splice(&self) -> bool {
        cfg!(target_os = "linux")
    }
    #[cfg(target_os = "linux")]
    fn splice_from(&self, from: std::os::fd::BorrowedFd<'_>, n: usize) -> std::io::Result<usize> {
        match self {
            // The socket has no registration to clear (the writer watches a duplicate only
            // while it waits), and a full one moves nothing. The kernel hands the pipe's pages
            // to the socket (`MSG_SPLICE_PAGES`, Linux 6.5 on) or, before, copies them itself:
            // either way the daemon does not (docs/performance.md, "What each optimisation bought").
            Sink::Socket(s) => moved(nix::fcntl::splice(from, None, s, None, n, splice_flags())),
            Sink::Pipe(p, room) => {
                // Only long lines are moved: room for all of one, so that it is not left
                // half in the child's pipe and half copied into the writer's queue.
                room.want(p, n.max(PIPE_MAX));
                // Through the runtime, so that a full pipe clears its readiness.
                nothing_when_full(p.try_io(|| {
                    nix::fcntl::splice(from, None, p, None, n, splice_flags())
                        .map_err(std::io::Error::from)
                }))
            }
        }
    }
}

/// Flags of every `splice` and `tee` here: the daemon never blocks on a pipe, and a whole page
/// is moved rather than copied where the kernel can.
#[cfg(target_os = "linux")]
pub(crate) fn splice_flags() -> nix::fcntl::SpliceFFlags {
    nix::fcntl::SpliceFFlags::SPLICE_F_NONBLOCK | nix::fcntl::SpliceFFlags::SPLICE_F_MOVE
}

/// What a non-blocking `splice` or `tee` moved: a full or empty pipe moved nothing.
#[cfg(target_os = "linux")]
pub(crate) fn moved(r: nix::Result<usize>) -> std::io::Result<usize> {
    nothing_when_full(r.map_err(std::io::Error::from))
}

/// The largest pipe asked for: a 1 MiB line then crosses in one write and one read.
/// (`fs.pipe-max-size`, 1 MiB by default, is what an unprivileged user may set.)
#[cfg(target_os = "linux")]
const PIPE_MAX: usize = 1 << 20;

/// What a host's stdin or stdout pipe holds, grown (Linux `F_SETPIPE_SZ`) once more moves at
/// once than it holds, so a host that passes large lines does not pay one write, one read and
/// two wake-ups per 64 KiB of them. Sessions with small lines keep the default pipe, which
/// matters because the kernel counts every user's pipe space against one limit. Shared by the
/// proxy and, for attached hosts, the daemon.
pub(crate) struct PipeRoom {
    /// What the pipe holds now; `usize::MAX` once growing is refused or done.
    room: AtomicUsize,
}

impl PipeRoom {
    /// The room of pipe `fd` now.
    pub(crate) fn of(fd: &impl AsFd) -> PipeRoom {
        #[cfg(target_os = "linux")]
        let room = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ)
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        #[cfg(not(target_os = "linux"))]
        let room = {
            let _ = fd;
            usize::MAX
        };
        PipeRoom {
            room: AtomicUsize::new(room),
        }
    }

    /// Grows pipe `fd` when `n` bytes are about to move and it holds fewer.
    pub(crate) fn want(&self, fd: &impl AsFd, n: usize) {
        if n > self.room.load(Ordering::Relaxed) {
            self.grow(fd, n);
        }
    }

    #[cfg(target_os = "linux")]
    fn grow(&self, fd: &impl AsFd, n: usize) {
        let size = n.next_power_of_two().min(PIPE_MAX);
        let asked = i32::try_from(size).unwrap_or(i32::MAX);
        let room = match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(asked)) {
            Ok(got) if size < PIPE_MAX => usize::try_from(got).unwrap_or(usize::MAX),
            // At the largest size, or refused (over the user's pipe limit): stop asking.
            _ => usize::MAX,
        };
        self.room.store(room, Ordering::Relaxed);
    }

    /// Pipes cannot be grown here: never ask again.
    #[cfg(not(target_os = "linux"))]
    fn grow(&self, _fd: &impl AsFd, _n: usize) {
        self.room.store(usize::MAX, Ordering::Relaxed);
    }
}

/// A pipe read or written through [`PipeRoom`]: grown when a read asks for more room (the
/// framing leaves room for the longest line seen) or a write is larger than the pipe.
pub(crate) struct Growing<P> {
    inner: P,
    room: PipeRoom,
}

impl<P: AsFd> Growing<P> {
    /// Wraps pipe `inner`.
    pub(crate) fn new(inner: P) -> Self {
        let room = PipeRoom::of(&inner);
        Growing { inner, room }
    }
}

impl<P: AsyncRead + AsFd + Unpin> AsyncRead for Growing<P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.room.want(&this.inner, buf.remaining());
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<P: AsyncWrite + AsFd + Unpin> AsyncWrite for Growing<P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.room.want(&this.inner, buf.len());
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// At most this many lines go into one `writev` (with up to five pieces and a newline each,
/// well under every IOV_MAX).
const MAX_LINES_PER_WRITE: usize = 64;

/// Writes as much of `lines` (each followed by a newline) as fits right now, after skipping
/// the first `skip` bytes; returns the bytes written (`0` when the peer is full). A line made
/// of pieces (a large line with a new id) goes out as its pieces, never copied together.
pub(crate) fn try_write_lines<W: TryWrite>(
    w: &W,
    lines: &[Line],
    skip: usize,
) -> std::io::Result<usize> {
    // Lines already written whole are passed over (the writer task counts `skip` across a
    // batch), so that the first line is the one to go on with.
    let (mut lines, mut skip) = (lines, skip);
    while lines.len() > 1 && skip >= lines[0].wire_len() {
        skip -= lines[0].wire_len();
        lines = &lines[1..];
    }
    if w.lends() && lines[0].wire_len() >= crate::mux::LEND_MIN {
        // A long line on its own, lent; the lines after it go in the next write.
        let mut slices = Vec::with_capacity(lines[0].parts().len() + 1);
        let (mut skip, mut emit) = (skip, |s| slices.push(IoSlice::new(s)));
        line_from_offset(&lines[0], &mut skip, &mut emit);
        return nothing_when_full(w.lend(&lines[0], &slices));
    }
    if lines.len() > 1 && lines[0].wire_len() < GATHER_MAX {
        return GATHERED.with_borrow_mut(|buf| {
            gather(buf, lines, skip);
            try_write(w, &[IoSlice::new(buf)])
        });
    }
    let mut slices = Vec::with_capacity(2 * lines.len().min(MAX_LINES_PER_WRITE));
    let (mut skip, mut emit) = (skip, |s| slices.push(IoSlice::new(s)));
    for line in lines.iter().take(MAX_LINES_PER_WRITE) {
        line_from_offset(line, &mut skip, &mut emit);
    }
    try_write(w, &slices)
}

/// Hands `emit` what of `line` (its parts, then its newline when it ends) lies past `skip`,
/// slice by slice, and counts `skip` down by what lies before it: how a write that stopped
/// part-way goes on.
fn line_from_offset<'a>(line: &'a Line, skip: &mut usize, emit: &mut impl FnMut(&'a [u8])) {
    for part in line.parts() {
        from_offset(part, skip, emit);
    }
    if line.ends_line() {
        from_offset(b"\n", skip, emit);
    }
}

/// [`line_from_offset`] for one slice.
fn from_offset<'a>(s: &'a [u8], skip: &mut usize, emit: &mut impl FnMut(&'a [u8])) {
    if *skip >= s.len() {
        *skip -= s.len();
    } else {
        emit(&s[*skip..]);
        *skip = 0;
    }
}

/// Short lines are copied into one buffer and written with one `write` of it: a `writev` of
/// two slices per line (the line and its newline) cost the kernel more per line, in setting
/// up and walking the slices, than the copy does (they are mostly a few hundred bytes).
const GATHER_MAX: usize = 32 * 1024;

thread_local! {
    /// The buffer short lines are gathered in (one per worker thread, reused).
    static GATHERED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies the bytes of `lines` from `skip` on, with their newlines, into `buf`: whole lines
/// while they fit in [`GATHER_MAX`] (at least the first).
fn gather(buf: &mut Vec<u8>, lines: &[Line], skip: usize) {
    buf.clear();
    // How many lines go in: each while the bytes gathered before it leave room for it.
    let (mut before, mut take) = (0usize, 0);
    for line in lines.iter().take(MAX_LINES_PER_WRITE) {
        let gathered = before.saturating_sub(skip);
        if gathered > 0 && gathered + line.wire_len() > GATHER_MAX {
            break;
        }
        before += line.wire_len();
        take += 1;
    }
    let (mut skip, mut emit) = (skip, |s: &[u8]| buf.extend_from_slice(s));
    for line in &lines[..take] {
        line_from_offset(line, &mut skip, &mut emit);
    }
}

/// Writes what fits of `slices` now; `0` when the peer is full.
fn try_write<W: TryWrite>(w: &W, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
    nothing_when_full(w.try_write_vectored(slices))
}

/// A write, `splice` or `tee` that found its pipe full (or empty) moved nothing.
fn nothing_when_full(r: std::io::Result<usize>) -> std::io::Result<usize> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        r => r,
    }
}

/// One writer of lines: written in place while nothing is queued, otherwise (or for what does
/// not fit) handed to its writer task, which waits for room. Order is kept because the actor
/// only writes in place when the task has nothing left to write. The task and its queue are
/// made the first time the peer is full, so a peer that keeps up (nearly every client) costs
/// neither (≈ 2 KiB each: the queue's first block and the task).
pub(crate) struct LineWriter<W: TryWrite> {
    w: Arc<W>,
    /// The writer task's queue, once there is one.
    queue: Option<mpsc::Sender<Line>>,
    /// How many lines may wait in it.
    queue_len: usize,
    /// Lines handed to the writer task and not yet fully written.
    queued: Arc<AtomicUsize>,
    tracker: TaskTracker,
    span: tracing::Span,
    /// Cancels its token when the writer is done: dropped with nothing queued, or (moved into
    /// the writer task) once the task has written everything or the peer is gone.
    done: Option<DropGuard>,
}

/// Why lines could not be written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The writer task's queue is full: the peer is not reading.
    Full,
    /// The peer is gone.
    Closed,
}

impl<W: TryWrite> LineWriter<W> {
    /// A writer whose task (when it needs one) runs on `tracker` in `span`, with at most
    /// `queue` lines waiting; `done` is cancelled when the writer is dropped and everything
    /// it took is written (or the peer is gone).
    pub(crate) fn new(
        w: W,
        queue: usize,
        tracker: &TaskTracker,
        span: tracing::Span,
        done: Option<CancellationToken>,
    ) -> Self {
        LineWriter {
            w: Arc::new(w),
            queue: None,
            queue_len: queue,
            queued: Arc::new(AtomicUsize::new(0)),
            tracker: tracker.clone(),
            span,
            done: done.map(CancellationToken::drop_guard),
        }
    }

    /// The writer task's queue, starting the task the first time.
    fn queue(&mut self) -> &mpsc::Sender<Line> {
        self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.queue_len);
            let task = drain(self.w.clone(), rx, self.queued.clone());
            let done = self.done.take();
            self.tracker.spawn(
                async move {
                    task.await;
                    drop(done);
                }
                .instrument(self.span.clone()),
            );
            tx
        })
    }

    /// Writes `lines` in order, without waiting.
    pub(crate) fn send(&mut self, lines: &mut Vec<Line>) -> Result<(), WriteError> {
        let mut done = 0; // whole lines written
        if self.queued.load(Ordering::Acquire) == 0 {
            let mut skip = 0; // bytes written of lines[done]
            while done < lines.len() {
                let n = try_write_lines(&*self.w, &lines[done..], skip)
                    .map_err(|_| WriteError::Closed)?;
                if n == 0 {
                    break;
                }
                skip += n;
                while done < lines.len() && skip >= lines[done].wire_len() {
                    skip -= lines[done].wire_len();
                    done += 1;
                }
            }
            if done < lines.len() && skip > 0 {
                // The rest of a line that was cut: its tail (possibly just the newline).
                lines[done].advance(skip);
            }
        }
        if done == lines.len() {
            lines.clear();
            return Ok(());
        }
        // A clone (the slow path only) so that the loop can count on `self.queued`.
        let queue = self.queue().clone();
        for line in lines.drain(..).skip(done) {
            self.queued.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = queue.try_send(line) {
                return Err(match e {
                    mpsc::error::TrySendError::Full(_) => WriteError::Full,
                    mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
                });
            }
        }
        Ok(())
    }

    /// The peer written to.
    pub(crate) fn peer(&self) -> &W {
        &self.w
    }

    /// The peer, shared, for a test to look at after the writer is gone.
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn peer_arc(&self) -> Arc<W> {
        self.w.clone()
    }

    /// Whether [`LineWriter::splice_piece`] can move bytes to this peer.
    pub(crate) fn takes_splice(&self) -> bool {
        self.w.takes_splice()
    }

    /// Moves up to `n` bytes of a line still arriving from the front of pipe `from` to the
    /// peer without copying them, when nothing is queued before them and the peer has room;
    /// returns how many moved (the caller sends the rest with [`LineWriter::send_piece`]).
    pub(crate) fn splice_piece(
        &mut self,
        from: std::os::fd::BorrowedFd<'_>,
        n: usize,
    ) -> Result<usize, WriteError> {
        if self.queued.load(Ordering::Acquire) != 0 {
            return Ok(0);
        }
        self.w.splice_from(from, n).map_err(|_| WriteError::Closed)
    }

    /// Writes `pieces`, part of a line still arriving (no newline), after what was sent
    /// before, without waiting: in place when nothing is queued, and only what does not fit
    /// now is copied (into the writer task's queue), so a long answer passed on as it arrives
    /// is not copied once more on its way.
    pub(crate) fn send_piece(&mut self, pieces: &[&[u8]]) -> Result<(), WriteError> {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let mut written = 0;
        if self.queued.load(Ordering::Acquire) == 0 {
            let slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
            written = try_write(&*self.w, &slices).map_err(|_| WriteError::Closed)?;
        }
        if written >= total {
            return Ok(());
        }
        let mut rest = bytes::BytesMut::with_capacity(total - written);
        let (mut skip, mut emit) = (written, |s: &[u8]| rest.extend_from_slice(s));
        for p in pieces {
            from_offset(p, &mut skip, &mut emit);
        }
        self.send(&mut vec![Line::piece(rest.freeze())])
    }
}

/// The writer task: writes queued lines as the peer makes room; ends when the `LineWriter`
/// is dropped and everything queued is written, or when the peer is gone.
async fn drain<W: TryWrite>(w: Arc<W>, mut rx: mpsc::Receiver<Line>, queued: Arc<AtomicUsize>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_LINES_PER_WRITE {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let mut skip = 0;
        let total: usize = batch.iter().map(Line::wire_len).sum();
        while skip < total {
            match try_write_lines(&*w, &batch, skip) {
                Ok(0) => {
                    if w.writable().await.is_err() {
                        return;
                    }
                }
                Ok(n) => skip += n,
                Err(_) => return,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    /// Bytes moved into a host's pipe arrive as they were, and the pipe is grown to the
    /// largest size at once (grown only to the piece's size, the rest of a long answer was left
    /// to be copied into the writer's queue).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_splice_into_a_host_pipe_moves_the_bytes_and_grows_the_pipe_at_once() {
        use tokio::io::AsyncWriteExt;
        let (mut src_tx, src_rx) = tokio::net::unix::pipe::pipe().unwrap();
        let (sink_tx, mut sink_rx) = tokio::net::unix::pipe::pipe().unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        src_tx.write_all(&data).await.unwrap();
        let room = PipeRoom::of(&sink_tx);
        let sink = Sink::Pipe(sink_tx, room);
        sink.writable().await.unwrap();
        assert!(sink.takes_splice());
        assert_eq!(
            sink.splice_from(src_rx.as_fd(), data.len()).unwrap(),
            data.len()
        );
        let Sink::Pipe(tx, _) = &sink else {
            unreachable!()
        };
        let size = nix::fcntl::fcntl(tx, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
        assert_eq!(size as usize, PIPE_MAX);
        let mut got = vec![0u8; data.len()];
        sink_rx.read_exact(&mut got).await.unwrap();
        assert!(got == data, "moved bytes differ");
    }

    /// Bytes moved into a client's socket arrive as they were, and a full socket moves nothing
    /// rather than failing (the rest of a long answer is then copied into the writer's queue).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_splice_into_a_socket_moves_the_bytes_and_nothing_when_it_is_full() {
        use tokio::io::AsyncWriteExt;
        let (mut src_tx, src_rx) = tokio::net::unix::pipe::pipe().unwrap();
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = crate::io::socket::split_tokio(a).unwrap();
        let sink = Sink::Socket(write);
        assert!(sink.takes_splice());
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        src_tx.write_all(&data).await.unwrap();
        assert_eq!(
            sink.splice_from(src_rx.as_fd(), data.len()).unwrap(),
            data.len()
        );
        let mut got = vec![0u8; data.len()];
        b.read_exact(&mut got).await.unwrap();
        assert!(got == data, "moved bytes differ");
        // Fill the socket without reading, then ask for more: nothing moves, nothing fails.
        let fill = vec![b'f'; 1 << 16];
        let mut filled = 0;
        while let Ok(n @ 1..) = sink.try_write_vectored(&[IoSlice::new(&fill)]) {
            filled += n;
        }
        src_tx.write_all(&data).await.unwrap();
        assert_eq!(sink.splice_from(src_rx.as_fd(), data.len()).unwrap(), 0);
        let mut drained = vec![0u8; filled];
        b.read_exact(&mut drained).await.unwrap();
        assert!(drained.iter().all(|&c| c == b'f'));
        assert_eq!(
            sink.splice_from(src_rx.as_fd(), data.len()).unwrap(),
            data.len()
        );
        b.read_exact(&mut got).await.unwrap();
        assert!(got == data, "bytes moved after the socket drained differ");
    }

    /// A writer on one end of a socket pair (`queue` lines may wait), the other end, and the
    /// tracker and token the writer reports to.
    fn writer_and_peer(
        queue: usize,
    ) -> (
        LineWriter<crate::io::socket::SocketWriter>,
        tokio::net::UnixStream,
        TaskTracker,
        CancellationToken,
    ) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = crate::io::socket::split_tokio(a).unwrap();
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let writer = LineWriter::new(
            write,
            queue,
            &tracker,
            tracing::Span::none(),
            Some(token.clone()),
        );
        (writer, b, tracker, token)
    }

    /// Lines written in place, cut by a full socket and finished by the writer task arrive
    /// whole and in order.
    #[tokio::test]
    async fn line_writer_keeps_order_across_a_full_peer() {
        let (mut writer, mut b, tracker, token) = writer_and_peer(1 << 16);
        let mut expected = Vec::new();
        // Far more than a socket buffer holds, in lines of varied size, without reading.
        for i in 0..400usize {
            let mut lines = if i % 7 == 3 {
                // A large line with an edit: pieces of a shared buffer, cut anywhere.
                let original = Bytes::from(format!("{i}:ID:{}", "q".repeat(20_000 + i)));
                let at = original.iter().position(|&b| b == b'I').unwrap();
                let line = Line::splice(&original, &mut [(at..at + 2, &b"new-id"[..])]);
                assert!(line.parts().len() > 1);
                vec![line]
            } else {
                vec![Line::from(Bytes::from(format!(
                    "{i}:{}",
                    "z".repeat(i * 37 % 5000)
                )))]
            };
            for line in &lines {
                expected.extend_from_slice(&line.to_bytes());
                expected.push(b'\n');
            }
            writer.send(&mut lines).unwrap();
        }
        assert!(
            writer.queued.load(Ordering::Acquire) > 0,
            "the peer should have filled up and the task taken over"
        );
        assert_eq!(tracker.len(), 1, "one writer task");
        drop(writer);
        assert!(
            !token.is_cancelled(),
            "not done before the queue is written"
        );
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), b.read_to_end(&mut got))
            .await
            .expect("the writer task finished and closed the socket")
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        tracker.close();
        tracker.wait().await;
        assert!(token.is_cancelled(), "done once everything is written");
    }

    /// Gathering copies exactly the bytes a `writev` of the same lines would write, from any
    /// offset (the rest of a line a write cut), and stops before a line that would take it
    /// over its bound.
    #[test]
    fn gathered_lines_are_the_bytes_from_the_offset_on() {
        let lines = vec![
            Line::from(Bytes::from_static(b"{\"a\":1}")),
            Line::from(Bytes::new()),
            Line::piece(Bytes::from_static(b"{\"part")),
            Line::from(Bytes::from_static(b"\":2}")),
        ];
        let whole = b"{\"a\":1}\n\n{\"part\":2}\n";
        let mut buf = Vec::new();
        for skip in 0..whole.len() {
            gather(&mut buf, &lines, skip);
            assert_eq!(buf, &whole[skip..], "from {skip}");
        }
        let big = |c: u8| Line::from(Bytes::from(vec![c; GATHER_MAX / 2 + 10]));
        let lines = vec![big(b'x'), big(b'y'), Line::from(Bytes::from_static(b"z"))];
        gather(&mut buf, &lines, 3);
        assert_eq!(
            buf.len(),
            GATHER_MAX / 2 + 10 - 3 + 1,
            "only the first line fits"
        );
        assert!(buf[..buf.len() - 1].iter().all(|&b| b == b'x'));
    }

    /// Batches of short lines (gathered into one write) and long ones (written as their
    /// pieces), cut anywhere by a peer that fills up, arrive whole and in order.
    #[tokio::test]
    async fn batches_of_short_and_long_lines_keep_order_across_a_full_peer() {
        let (mut writer, mut b, tracker, _token) = writer_and_peer(1 << 16);
        let mut expected = Vec::new();
        for i in 0..300usize {
            let mut lines: Vec<Line> = (0..i % 9 + 1)
                .map(|k| {
                    let len = if (i + k) % 11 == 5 {
                        40_000
                    } else {
                        (i * 31 + k * 7) % 900
                    };
                    Line::from(Bytes::from(format!("{i}.{k}:{}", "w".repeat(len))))
                })
                .collect();
            for line in &lines {
                expected.extend_from_slice(&line.to_bytes());
                expected.push(b'\n');
            }
            writer.send(&mut lines).unwrap();
        }
        finish_and_read_all(writer, &mut b, &tracker, &expected).await;
    }

    /// Pieces of lines still arriving (no newline after them) and the lines that end them,
    /// through a peer that fills up, arrive as one stream of bytes in order.
    #[tokio::test]
    async fn pieces_and_lines_keep_order_across_a_full_peer() {
        let (mut writer, mut b, tracker, _token) = writer_and_peer(1 << 16);
        let mut expected = Vec::new();
        for i in 0..200usize {
            let head = format!("{i}:");
            let body = "p".repeat(30_000 + i);
            writer
                .send_piece(&[head.as_bytes(), body.as_bytes()])
                .unwrap();
            writer.send_piece(&[b"-more-"]).unwrap();
            let tail = format!(":end{i}");
            writer
                .send(&mut vec![Line::from(Bytes::from(tail.clone()))])
                .unwrap();
            for part in [
                head.as_bytes(),
                body.as_bytes(),
                b"-more-",
                tail.as_bytes(),
                b"\n",
            ] {
                expected.extend_from_slice(part);
            }
        }
        finish_and_read_all(writer, &mut b, &tracker, &expected).await;
    }

    /// Checks that the peer filled up (the writer task took over), drops the writer, and
    /// reads until the task closes the socket: exactly `expected` arrives.
    async fn finish_and_read_all(
        writer: LineWriter<crate::io::socket::SocketWriter>,
        b: &mut tokio::net::UnixStream,
        tracker: &TaskTracker,
        expected: &[u8],
    ) {
        assert!(
            writer.queued.load(Ordering::Acquire) > 0,
            "the peer should have filled up and the task taken over"
        );
        drop(writer);
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), b.read_to_end(&mut got))
            .await
            .expect("the writer task finished")
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        tracker.close();
        tracker.wait().await;
    }

    /// A peer that keeps up gets its lines written in place: no writer task or queue is made,
    /// and dropping the writer says it is done at once.
    #[tokio::test]
    async fn a_peer_that_keeps_up_costs_no_task() {
        let (mut writer, mut b, tracker, token) = writer_and_peer(4);
        for i in 0..100 {
            let mut lines = vec![Line::from(Bytes::from(format!("line {i}")))];
            writer.send(&mut lines).unwrap();
            let mut got = vec![0; 64];
            let n = b.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], format!("line {i}\n").as_bytes());
        }
        assert!(writer.queue.is_none(), "no queue was made");
        assert_eq!(tracker.len(), 0, "no task was started");
        drop(writer);
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn a_gone_peer_is_reported() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        drop(b);
        let (_read, write) = crate::io::socket::split_tokio(a).unwrap();
        let mut writer =
            LineWriter::new(write, 4, &TaskTracker::new(), tracing::Span::none(), None);
        let mut lines = vec![Line::from(Bytes::from_static(b"x"))];
        assert_eq!(writer.send(&mut lines), Err(WriteError::Closed));
    }
}
