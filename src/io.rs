//! Small async helpers shared by the actor and the proxy: writing one line, sleeping until an
//! optional deadline, writing lines to a socket or pipe without a task hop when it has room,
//! and reading a client's lines without holding a buffer while it is idle.
//! Kept here so every path reads and writes lines the same way.

use std::cell::RefCell;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::jsonrpc::framing::{Frame, LineCodec};

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

/// A socket or pipe that can be written through a shared reference: the actor writes to it
/// directly while its writer task is idle, and the writer task takes over when it is full.
pub(crate) trait TryWrite: Send + Sync + 'static {
    /// Writes what fits now, or fails with `WouldBlock`.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;
    /// Waits until the peer has room again.
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl TryWrite for tokio::net::unix::OwnedWriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        tokio::net::unix::OwnedWriteHalf::try_write_vectored(self, bufs)
    }
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::unix::OwnedWriteHalf::writable(self)
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

/// At most this many lines go into one `writev` (well under every IOV_MAX).
const MAX_LINES_PER_WRITE: usize = 64;

/// Writes as much of `lines` (each followed by a newline) as fits right now; returns the bytes
/// written (`0` when the peer is full).
fn try_write_lines<W: TryWrite>(w: &W, lines: &[Bytes], skip: usize) -> std::io::Result<usize> {
    let mut slices = Vec::with_capacity(2 * lines.len().min(MAX_LINES_PER_WRITE));
    let mut skip = skip;
    for line in lines.iter().take(MAX_LINES_PER_WRITE) {
        let whole = line.len() + 1;
        if skip >= whole {
            skip -= whole;
            continue;
        }
        if skip < line.len() {
            slices.push(IoSlice::new(&line[skip..]));
            slices.push(IoSlice::new(b"\n"));
        } else {
            slices.push(IoSlice::new(b"\n"));
        }
        skip = 0;
    }
    match w.try_write_vectored(&slices) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// One writer of lines: written in place while nothing is queued, otherwise (or for what does
/// not fit) handed to its writer task, which waits for room. Order is kept because the actor
/// only writes in place when the task has nothing left to write.
pub(crate) struct LineWriter<W: TryWrite> {
    w: Arc<W>,
    queue: mpsc::Sender<Bytes>,
    /// Lines handed to the writer task and not yet fully written.
    queued: Arc<AtomicUsize>,
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
    /// A writer and the task that drains what did not fit; `queue` lines may wait.
    pub(crate) fn new(w: W, queue: usize) -> (Self, impl Future<Output = ()> + Send) {
        let w = Arc::new(w);
        let (tx, rx) = mpsc::channel(queue);
        let queued = Arc::new(AtomicUsize::new(0));
        let task = drain(w.clone(), rx, queued.clone());
        (
            LineWriter {
                w,
                queue: tx,
                queued,
            },
            task,
        )
    }

    /// Writes `lines` in order, without waiting.
    pub(crate) fn send(&self, lines: &mut Vec<Bytes>) -> Result<(), WriteError> {
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
                while done < lines.len() && skip > lines[done].len() {
                    skip -= lines[done].len() + 1;
                    done += 1;
                }
            }
            if done < lines.len() && skip > 0 {
                // The rest of a line that was cut: its tail (possibly just the newline).
                let line = &lines[done];
                lines[done] = line.slice(skip.min(line.len())..);
            }
        }
        for line in lines.drain(..).skip(done) {
            self.queued.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = self.queue.try_send(line) {
                return Err(match e {
                    mpsc::error::TrySendError::Full(_) => WriteError::Full,
                    mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
                });
            }
        }
        Ok(())
    }
}

/// The writer task: writes queued lines as the peer makes room; ends when the `LineWriter`
/// is dropped and everything queued is written, or when the peer is gone.
async fn drain<W: TryWrite>(w: Arc<W>, mut rx: mpsc::Receiver<Bytes>, queued: Arc<AtomicUsize>) {
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
        let total: usize = batch.iter().map(|l| l.len() + 1).sum();
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

/// How much one read into the scratch buffer takes at most.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    /// Where a client's read lands while it has no partial line, one per worker thread: what
    /// was read is copied out at once, so an idle client holds no read buffer of its own
    /// (tokio-util's `FramedRead` keeps 8 KiB per connection, which was most of the daemon's
    /// memory per client).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Reads the lines of one client socket (framed by [`LineCodec`]): between messages it holds
/// no buffer; a read copies whole lines out of the thread's scratch buffer into one buffer of
/// their size, and only a line that is still arriving gets a buffer of its own, with room for
/// the longest line seen.
pub(crate) struct LineReader {
    read: OwnedReadHalf,
    codec: LineCodec,
    /// Bytes read and not yet framed; empty (and unallocated) between messages.
    buf: BytesMut,
    eof: bool,
}

impl LineReader {
    /// A reader of lines of at most `max_line` bytes.
    pub(crate) fn new(read: OwnedReadHalf, max_line: usize) -> Self {
        LineReader {
            read,
            codec: LineCodec::new(max_line),
            buf: BytesMut::new(),
            eof: false,
        }
    }

    /// The next frame, or `None` once the peer has closed and everything is framed.
    ///
    /// Cancel safe: it only waits for the socket to become readable, and what it read stays
    /// in the reader.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if !self.buf.is_empty() {
                let frame = if self.eof {
                    self.codec.decode_eof(&mut self.buf)?
                } else {
                    self.codec.decode(&mut self.buf)?
                };
                if self.buf.is_empty() {
                    // Nothing partial: let go of the buffer (the lines keep what they use).
                    self.buf = BytesMut::new();
                }
                if frame.is_some() {
                    return Ok(frame);
                }
            }
            if self.eof {
                return Ok(None);
            }
            if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                self.eof = true;
            }
        }
    }

    /// Reads what is there: into the partial line's buffer when there is one, otherwise into
    /// the scratch buffer and from there into a buffer of exactly that size (or, when it ends
    /// inside a line, of the room the codec asks for). Reads through `AsyncRead`, whose
    /// readiness wait costs less than `readable()`'s list of waiters.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let read = Pin::new(&mut self.read);
        if !self.buf.is_empty() {
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(1);
            }
            return tokio_util::io::poll_read_buf(read, cx, &mut self.buf);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut filled = ReadBuf::new(scratch);
            ready!(read.poll_read(cx, &mut filled))?;
            let data = filled.filled();
            if !data.is_empty() {
                let cap = if data.last() == Some(&b'\n') {
                    data.len()
                } else {
                    self.codec.room(data.len())
                };
                let mut buf = BytesMut::with_capacity(cap);
                buf.extend_from_slice(data);
                self.buf = buf;
            }
            Poll::Ready(Ok(data.len()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Lines written in place, cut by a full socket and finished by the writer task arrive
    /// whole and in order.
    #[tokio::test]
    async fn line_writer_keeps_order_across_a_full_peer() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = a.into_split();
        let (writer, task) = LineWriter::new(write, 1 << 16);
        let task = tokio::spawn(task);
        let mut expected = Vec::new();
        // Far more than a socket buffer holds, in lines of varied size, without reading.
        for i in 0..400usize {
            let line = format!("{i}:{}", "z".repeat(i * 37 % 5000));
            expected.extend_from_slice(line.as_bytes());
            expected.push(b'\n');
            let mut lines = vec![Bytes::from(line)];
            writer.send(&mut lines).unwrap();
        }
        assert!(
            writer.queued.load(Ordering::Acquire) > 0,
            "the peer should have filled up and the task taken over"
        );
        drop(writer);
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), b.read_to_end(&mut got))
            .await
            .expect("the writer task finished and closed the socket")
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_gone_peer_is_reported() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        drop(b);
        let (_read, write) = a.into_split();
        let (writer, _task) = LineWriter::new(write, 4);
        let mut lines = vec![Bytes::from_static(b"x")];
        assert_eq!(writer.send(&mut lines), Err(WriteError::Closed));
    }

    async fn frames(reader: &mut LineReader) -> Vec<Frame> {
        let mut out = Vec::new();
        let deadline = std::time::Duration::from_secs(30);
        while let Some(f) = tokio::time::timeout(deadline, reader.next())
            .await
            .expect("a frame or the end in time")
            .unwrap()
        {
            out.push(f);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Lines cut anywhere, a line longer than the scratch buffer, one over the bound and an
    /// unterminated last line come out as the codec frames them.
    #[tokio::test]
    async fn line_reader_frames_lines_however_they_arrive() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (read, _write) = a.into_split();
        let mut reader = LineReader::new(read, 100_000);
        let big = "b".repeat(3 * SCRATCH_LEN);
        let writer = tokio::spawn(async move {
            let huge = "h".repeat(150_000);
            for piece in [
                "one\ntw",
                "o\n",
                big.as_str(),
                "\n",
                huge.as_str(),
                "\nthree\n\nlast",
            ] {
                b.write_all(piece.as_bytes()).await.unwrap();
                b.flush().await.unwrap();
            }
        });
        let got = frames(&mut reader).await;
        writer.await.unwrap();
        let expected = vec![
            line("one"),
            line("two"),
            line(&"b".repeat(3 * SCRATCH_LEN)),
            Frame::TooLong { limit: 100_000 },
            line("three"),
            line("last"),
        ];
        assert_eq!(
            got.len(),
            expected.len(),
            "{:?}",
            got.iter()
                .map(|f| match f {
                    Frame::Line(l) => l.len(),
                    Frame::TooLong { .. } => 0,
                })
                .collect::<Vec<_>>()
        );
        assert!(got == expected, "frames differ");
    }

    /// Between messages a client holds no read buffer; a line still arriving does.
    #[tokio::test]
    async fn an_idle_line_reader_holds_no_buffer() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (read, _write) = a.into_split();
        let mut reader = LineReader::new(read, 1 << 20);
        b.write_all(b"{\"id\":1}\n{\"id\":2}\n{\"id\"")
            .await
            .unwrap();
        assert_eq!(reader.next().await.unwrap(), Some(line("{\"id\":1}")));
        assert_eq!(reader.next().await.unwrap(), Some(line("{\"id\":2}")));
        assert!(reader.buf.capacity() > 0, "the partial line is kept");
        b.write_all(b":3}\n").await.unwrap();
        assert_eq!(reader.next().await.unwrap(), Some(line("{\"id\":3}")));
        assert_eq!(reader.buf.capacity(), 0, "nothing is held between messages");
    }
}
