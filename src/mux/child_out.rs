//! The child's stdout as the actor reads it: a bounded read at a time, and, while a long answer
//! goes on to a client, a peek that leaves the bytes in the pipe so that they can be moved on
//! to the client's pipe or socket instead of copied (Linux `tee` and `splice`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;

/// What one read of the child's stdout takes at most (64 KiB measured the same; 256 KiB and
/// no cap slower through the proxy; docs/performance.md, "What each optimisation bought").
pub(crate) const READ_CAP: usize = 128 * 1024;

/// The child's stdout, read at most [`READ_CAP`] bytes at a time: a long answer then goes on
/// to its client in pieces, each written while the next is read, instead of one read of the
/// whole pipe and then one write of all of it (each holds its pipe's lock for the whole copy,
/// so the host could not start reading before the daemon had finished writing).
///
/// While peeking ([`ChildOut::set_peeking`], Linux), a read duplicates the front of the pipe
/// into a scratch pipe (`tee`) and reads the copy from there: the framing and the router see
/// every byte, and the bytes stay in the child's pipe ([`ChildOut::owed`]) until the actor
/// moves them to the client (`splice`, [`ChildOut::moved`]) or the next read drops them. A byte
/// passed on is then copied once in the daemon instead of twice (read, then written), which
/// on this machine class takes a 1 MiB answer's pass through the daemon from ≈ 0.4 ms to
/// ≈ 0.15 ms (docs/performance.md, "What each optimisation bought").
pub(crate) struct ChildOut {
    rx: pipe::Receiver,
    /// Bytes at the front of the pipe that a peek already gave the framing.
    owed: usize,
    #[cfg(target_os = "linux")]
    peek: Option<peek::Scratch>,
    peeking: bool,
}

impl ChildOut {
    pub(crate) fn new(rx: pipe::Receiver) -> Self {
        ChildOut {
            rx,
            owed: 0,
            #[cfg(target_os = "linux")]
            peek: None,
            peeking: false,
        }
    }

    /// Peek from the next read on (or read again). Where peeking is not possible (not Linux,
    /// or no scratch pipe to be had) reads stay plain, which is only slower.
    pub(crate) fn set_peeking(&mut self, on: bool) {
        #[cfg(target_os = "linux")]
        if on && self.peek.is_none() {
            match peek::Scratch::new() {
                Ok(s) => self.peek = Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "no scratch pipe: long answers are copied");
                    return;
                }
            }
        }
        self.peeking = on && cfg!(target_os = "linux");
    }

    /// Bytes the last read peeked at that are still at the front of the pipe: what the actor
    /// may move on with `splice` from [`ChildOut::fd`].
    pub(crate) fn owed(&self) -> usize {
        self.owed
    }

    /// `n` of the owed bytes were moved out of the pipe.
    pub(crate) fn moved(&mut self, n: usize) {
        self.owed -= n.min(self.owed);
    }

    /// The pipe, to move owed bytes out of.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Drops the owed bytes from the pipe: they were read already.
    fn drop_owed(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(scratch) = &self.peek {
            while self.owed > 0 {
                let n = scratch.drop_front(self.rx.as_fd(), self.owed)?;
                self.owed -= n;
            }
        }
        Ok(())
    }
}

impl AsFd for ChildOut {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

impl AsyncRead for ChildOut {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.drop_owed()?;
        let cap = READ_CAP.min(buf.remaining());
        #[cfg(target_os = "linux")]
        if this.peeking {
            if let Some(scratch) = &this.peek {
                loop {
                    std::task::ready!(this.rx.poll_read_ready(cx))?;
                    let fd = this.rx.as_fd();
                    match this.rx.try_io(|| scratch.peek(fd, cap)) {
                        Ok(0) => return Poll::Ready(Ok(())), // end of file
                        Ok(n) => {
                            // SAFETY: `take` only writes bytes into `room`, never
                            // de-initialises any.
                            let room = unsafe { &mut buf.unfilled_mut()[..n] };
                            scratch.take(room)?;
                            // SAFETY: `take` filled all of `room`, the unfilled front of `buf`.
                            unsafe { buf.assume_init(n) };
                            buf.advance(n);
                            this.owed = n;
                            return Poll::Ready(Ok(()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
        let inner = Pin::new(&mut this.rx);
        if buf.remaining() <= cap {
            return inner.poll_read(cx, buf);
        }
        let mut part = buf.take(cap);
        let ready = inner.poll_read(cx, &mut part)?;
        let n = part.filled().len();
        // SAFETY: `part` is the unfilled front of `buf`; the read initialised its first `n`.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        ready.map(Ok)
    }
}

#[cfg(target_os = "linux")]
mod peek {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

    use crate::io::lines::{moved, splice_flags};

    /// The scratch pipe peeks go through, and `/dev/null` for dropping what was peeked at.
    pub(super) struct Scratch {
        read: OwnedFd,
        write: OwnedFd,
        null: std::fs::File,
    }

    impl Scratch {
        pub(super) fn new() -> io::Result<Scratch> {
            use nix::fcntl::OFlag;
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            // Room for one whole read; a refusal leaves the default, and peeks are smaller.
            let _ = nix::fcntl::fcntl(
                &write,
                nix::fcntl::FcntlArg::F_SETPIPE_SZ(super::READ_CAP as i32),
            );
            let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
            Ok(Scratch { read, write, null })
        }

        /// Duplicates up to `n` bytes from the front of `from` into the scratch pipe, which
        /// is empty; `WouldBlock` when `from` is empty, 0 at its end.
        pub(super) fn peek(&self, from: BorrowedFd<'_>, n: usize) -> io::Result<usize> {
            match nix::fcntl::tee(from, &self.write, n, splice_flags()) {
                Err(nix::errno::Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
                r => r.map_err(io::Error::from),
            }
        }

        /// Reads what the last peek put in the scratch pipe, exactly `room.len()` bytes.
        pub(super) fn take(&self, room: &mut [MaybeUninit<u8>]) -> io::Result<()> {
            let mut done = 0;
            while done < room.len() {
                let rest = &mut room[done..];
                // SAFETY: reads into `rest`, which is valid for writes of its length.
                let n = unsafe {
                    libc::read(self.read.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len())
                };
                match n {
                    n if n > 0 => done += n as usize,
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    _ => return Err(io::Error::last_os_error()),
                }
            }
            Ok(())
        }

        /// Drops up to `n` bytes from the front of `from` (bytes a peek already gave).
        pub(super) fn drop_front(&self, from: BorrowedFd<'_>, n: usize) -> io::Result<usize> {
            match moved(nix::fcntl::splice(
                from,
                None,
                self.null.as_fd(),
                None,
                n,
                splice_flags(),
            ))? {
                0 => Err(io::Error::other(
                    "peeked bytes are gone from the child's stdout",
                )),
                n => Ok(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pipe_pair() -> (pipe::Sender, ChildOut) {
        let (tx, rx) = pipe::pipe().unwrap();
        (tx, ChildOut::new(rx))
    }

    /// Peeked bytes are read like any others; dropped when not moved, moved when the reader
    /// says so, and what follows comes next either way, in order and whole.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn peeked_bytes_are_moved_or_dropped_and_nothing_else_is_lost() {
        let (mut tx, mut out) = pipe_pair();
        let (mut sink_tx, mut sink_rx) = pipe::pipe().unwrap();
        out.set_peeking(true);
        tx.write_all(b"abcdef").await.unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(out.read(&mut buf).await.unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(out.owed(), 4);
        // Two of the four move on; the other two are dropped before the next read.
        let n = crate::io::lines::moved(nix::fcntl::splice(
            out.fd(),
            None,
            &sink_tx,
            None,
            2,
            crate::io::lines::splice_flags(),
        ))
        .unwrap();
        assert_eq!(n, 2);
        out.moved(2);
        let mut moved = [0u8; 2];
        sink_rx.read_exact(&mut moved).await.unwrap();
        assert_eq!(&moved, b"ab");
        let mut rest = [0u8; 8];
        assert_eq!(out.read(&mut rest).await.unwrap(), 2);
        assert_eq!(&rest[..2], b"ef");
        // Plain reads again, after the last peek was dropped.
        out.set_peeking(false);
        tx.write_all(b"gh").await.unwrap();
        drop(tx);
        let mut tail = Vec::new();
        out.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"gh");
        assert_eq!(out.owed(), 0);
        sink_tx.shutdown().await.unwrap();
    }

    /// A read, plain or peeking, takes at most the cap; the reads together give back every
    /// byte in order, and the end of the pipe is an end of file.
    #[tokio::test]
    async fn reads_are_capped_and_lose_nothing() {
        for peeking in [false, true] {
            let (mut tx, mut out) = pipe_pair();
            out.set_peeking(peeking);
            let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
            let writer = tokio::spawn(async move {
                tx.write_all(&data).await.unwrap();
                data
            });
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = out.read(&mut buf).await.unwrap();
                assert!(n <= READ_CAP, "read {n} bytes");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, writer.await.unwrap(), "peeking: {peeking}");
        }
    }
}
