//! Unix stream sockets split into a reading half that the runtime watches for readability only
//! and a writing half that asks to be told of room only while it waits for some.
//!
//! Why not `tokio::net::UnixStream`: tokio registers a socket for both directions at once,
//! edge-triggered, and a Unix socket reports "writable" every time its peer reads. So each
//! message the peer read from us woke this process once more, to find nothing to do: one
//! wasted wake-up per message, on the daemon's client sockets and on the proxy's socket alike.
//! (Pipes do not do this: a pipe's writer is woken only when the pipe was full.)
//!
//! This module owns only that registration; framing and queueing stay with their callers.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits a connected socket into its two one-way halves.
///
/// # Errors
/// When the socket cannot be registered with the runtime (outside one, or out of resources).
pub fn split(stream: UnixStream) -> io::Result<(SocketReader, SocketWriter)> {
    stream.set_nonblocking(true)?;
    let sock = Arc::new(stream);
    let read = watch(sock.clone(), Interest::READABLE)?;
    Ok((
        SocketReader {
            fd: read,
            fds: None,
        },
        SocketWriter {
            sock,
            waiting: None,
            shutdown_on_drop: true,
        },
    ))
}

/// The same for a socket the runtime already watches (one from `UnixListener::accept`).
///
/// # Errors
/// As [`split`].
pub fn split_tokio(stream: tokio::net::UnixStream) -> io::Result<(SocketReader, SocketWriter)> {
    split(stream.into_std()?)
}

/// Registers a socket the caller owns (alone or shared through an `Arc`) for one direction.
fn watch<T: AsRawFd>(sock: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `sock` is an open `UnixStream` (or an `Arc` of one) that the `AsyncFd` owns, so
    // its descriptor stays open and the same until the registration is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(sock, interest) }?)
}

/// The reading half: woken only when there is something to read (or the peer is gone).
pub struct SocketReader {
    fd: AsyncFd<Arc<UnixStream>>,
    /// Descriptors that came with the bytes read, once [`SocketReader::accept_fds`] asked for
    /// them (reads then use `recvmsg`; without it the kernel closes any that are sent).
    fds: Option<Vec<OwnedFd>>,
}

impl SocketReader {
    /// Reads a socket that is only ever read here (the proxy's stdin when a host gave it one).
    ///
    /// # Errors
    /// As [`split`].
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(SocketReader {
            fd: watch(Arc::new(stream), Interest::READABLE)?,
            fds: None,
        })
    }

    /// From now on, reads keep the descriptors a peer sends with its bytes (`SCM_RIGHTS`):
    /// the daemon's client sockets, where a proxy hands over the host's stdin and stdout.
    pub fn accept_fds(&mut self) {
        self.fds.get_or_insert_with(Vec::new);
    }

    /// The descriptors that came with the bytes read so far (the latest set only).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.fds.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// After the end was read: whether the peer closed the connection both ways (it is gone),
    /// rather than only shutting down its writing side (it still reads what it is owed). On
    /// Linux a socket whose peer closed reports a hang-up and one the peer only half-closed
    /// does not. Where a system does not tell them apart this way, a closed peer is taken for
    /// a half-closed one: the first answer written to it fails, which ends the client then.
    pub fn peer_closed(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.get_ref().as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_none_or(|got| got.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            Err(_) => true,
        }
    }
}

impl AsyncRead for SocketReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_read_ready(cx))?;
            let room = buf.remaining();
            // SAFETY: the bytes are handed only to read(2), which writes (never reads) at most
            // `room` of them; `assume_init` below covers exactly the `n` it wrote. Zeroing
            // instead would clear the whole spare capacity on every read, and a framing buffer
            // keeps up to a whole large line of it.
            let dst = unsafe { buf.unfilled_mut() };
            let fds = &mut this.fds;
            let read = guard.try_io(|s| match fds {
                Some(fds) => {
                    crate::io::handoff::recv_with_fds(s.as_raw_fd(), &mut dst[..room], fds)
                }
                None => {
                    let n =
                        unsafe { nix::libc::read(s.as_raw_fd(), dst.as_mut_ptr().cast(), room) };
                    usize::try_from(n).map_err(|_| io::Error::last_os_error())
                }
            });
            match read {
                Ok(Ok(n)) => {
                    // SAFETY: read(2) initialised these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    // A short read drained the socket: the next read would only fail with
                    // EAGAIN, so wait for the next edge instead (tokio does the same).
                    if n > 0 && n < room {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The writing half: writes straight to the socket and registers for writability (on a
/// duplicate descriptor) only while a write waits for room. Dropping the half of a [`split`]
/// shuts the socket down for writing, so the peer sees the end even while the reading half
/// lives on.
pub struct SocketWriter {
    sock: Arc<UnixStream>,
    /// The registration a blocked [`AsyncWrite`] write waits on; gone once a write succeeds.
    waiting: Option<AsyncFd<UnixStream>>,
    /// Whether this half owns the socket's write direction (from [`split`]).
    shutdown_on_drop: bool,
}

impl SocketWriter {
    /// Writes a socket that is only ever written here (the proxy's stdout when a host gave it
    /// one); dropping it leaves the socket open for whoever else holds it.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(SocketWriter {
            sock: Arc::new(stream),
            waiting: None,
            shutdown_on_drop: false,
        })
    }

    /// Writes what fits now; `WouldBlock` when nothing does.
    ///
    /// # Errors
    /// `WouldBlock` when the peer is full, anything else when it is gone.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self.sock).write_vectored(bufs)
    }

    /// Waits until the peer has room.
    ///
    /// # Errors
    /// When the socket cannot be watched (out of descriptors) or is broken.
    pub async fn writable(&self) -> io::Result<()> {
        let watch = watch(self.sock.try_clone()?, Interest::WRITABLE)?;
        let _ready = watch.writable().await?;
        Ok(())
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let watch = match &mut self.waiting {
            Some(w) => w,
            slot @ None => slot.insert(watch(self.sock.try_clone()?, Interest::WRITABLE)?),
        };
        let mut guard = ready!(watch.poll_write_ready(cx))?;
        // Try the write again; if it still does not fit, wait for the next edge.
        guard.clear_ready();
        Poll::Ready(Ok(()))
    }

    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&UnixStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(&self.sock) {
                Ok(n) => {
                    self.waiting = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.poll_room(cx))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsRawFd for SocketWriter {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl std::os::fd::AsFd for SocketWriter {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        if !self.shutdown_on_drop {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

impl AsyncWrite for SocketWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_with(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.sock.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Far more than a socket buffer holds crosses whole and in order, the writer waiting for
    /// room many times, and the reader sees the end once the writer is dropped.
    #[tokio::test]
    async fn bytes_cross_whole_through_a_full_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_ra, mut wa) = split(a).unwrap();
        let (mut rb, _wb) = split(b).unwrap();
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            wa.write_all(&sent).await.unwrap();
            drop(wa);
        });
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), rb.read_to_end(&mut got))
            .await
            .expect("the reader saw the end")
            .unwrap();
        writer.await.unwrap();
        assert!(
            got == data,
            "bytes differ ({} of {})",
            got.len(),
            data.len()
        );
    }

    /// The `&self` writer used by the actor: `WouldBlock` when full, `writable` resolves once
    /// the peer reads.
    #[tokio::test]
    async fn try_write_reports_full_and_writable_waits_for_room() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_ra, wa) = split(a).unwrap();
        let (mut rb, _wb) = split(b).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        loop {
            match wa.try_write_vectored(&[IoSlice::new(&chunk)]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert!(written > 0);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; written];
            rb.read_exact(&mut buf).await.unwrap();
            rb
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), wa.writable())
            .await
            .expect("room came back")
            .unwrap();
        assert!(wa.try_write_vectored(&[IoSlice::new(b"x")]).unwrap() == 1);
        reader.await.unwrap();
    }
}
