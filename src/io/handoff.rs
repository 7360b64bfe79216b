//! Handing the host's stdin and stdout from the proxy to the daemon over the server socket
//! (`SCM_RIGHTS`), so that after the handshake the daemon reads and writes the host's pipes
//! itself and the proxy drops out of the data path (it keeps the socket open as the link).
//!
//! This module owns the few lines of the hand-off and the `sendmsg`/`recvmsg` calls that carry
//! descriptors, and the check of what kind of descriptor came. It does no framing, routing or
//! session keeping: the proxy (`crate::proxy`) decides when to attach, the actor
//! (`crate::mux::actor`) what to do with what came. The exchange, on the server socket:
//!
//! 1. proxy → daemon: a request `rmcp-mux/attach` under an id of the proxy's own, with the
//!    host's stdin and stdout attached. An old daemon passes it on like any request and an
//!    error comes back; the proxy keeps bridging.
//! 2. daemon → proxy: the answer (`{}`), after every line the daemon had for this client; from
//!    now on the daemon reads the host's stdin and holds what it has for the host.
//! 3. proxy → daemon: `rmcp-mux/go` once the proxy has written everything before the answer to
//!    stdout; the daemon writes to the host's stdout from then on.
//! 4. daemon → proxy: `rmcp-mux/input-closed` when the host closed stdin; the daemon closes the
//!    link once the answers still owed are written, and the proxy exits.
//! 5. daemon → proxy: `rmcp-mux/unread` when the daemon lets the host go while it lives on (a
//!    reload or a stop closes the client): it has stopped reading the host's stdin, and these
//!    bytes it read there had not reached the router (a partial line, or whole lines not yet
//!    passed on). The link closes once the answers to the rest are written to the host's
//!    stdout; the proxy then reads the host's stdin again, these bytes first.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use crate::jsonrpc::mux_methods::{ATTACH, GO, INPUT_CLOSED, UNREAD};

/// The `go` line (no newline).
pub fn go_line() -> bytes::Bytes {
    crate::jsonrpc::notification(GO, "{}")
}

/// The `input-closed` line (no newline).
pub fn input_closed_line() -> bytes::Bytes {
    crate::jsonrpc::notification(INPUT_CLOSED, "{}")
}

/// The `unread` line for `bytes` (no newline): carried as hex, since a partial line may end
/// inside a UTF-8 sequence.
pub fn unread_line(bytes: &[u8]) -> bytes::Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2 + 9);
    hex.push_str("{\"hex\":\"");
    for b in bytes {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    hex.push_str("\"}");
    crate::jsonrpc::notification(UNREAD, &hex)
}

/// The bytes an `unread` line carries; `None` when it is not one or is malformed.
pub fn parse_unread(line: &[u8]) -> Option<Vec<u8>> {
    let env = crate::jsonrpc::parse_one(line).ok()?;
    if env.method.as_deref() != Some(UNREAD) {
        return None;
    }
    let hex = crate::jsonrpc::field(env.params, "hex")?.get();
    let hex = hex.strip_prefix('"')?.strip_suffix('"')?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    hex.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Whether a line on the link is the notification `method` (the link carries only the
/// mux's own lines, so a look for the method's name is enough).
pub fn is_notice(line: &[u8], method: &str) -> bool {
    let quoted = format!("\"{method}\"");
    memchr::memmem::find(line, quoted.as_bytes()).is_some()
}

/// What a passed descriptor is: only these two can be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A pipe (FIFO).
    Pipe,
    /// A socket (libuv-based hosts give their children socket pairs).
    Socket,
}

/// The kind of `fd`, or `None` for a terminal, a file or anything else.
pub fn kind(fd: BorrowedFd<'_>) -> Option<Kind> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    let fmt = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    if fmt == nix::sys::stat::SFlag::S_IFIFO {
        Some(Kind::Pipe)
    } else if fmt == nix::sys::stat::SFlag::S_IFSOCK {
        Some(Kind::Socket)
    } else {
        None
    }
}

/// A non-blocking reader of `fd`, a pipe or a socket of `kind`: the proxy's own stdin, and an
/// attached host's stdin in the daemon. Pipes grow for large lines (`crate::io::lines::Growing`);
/// sockets are registered for reading only (`crate::io::socket::SocketReader`).
///
/// # Errors
/// The descriptor cannot be registered with the runtime.
pub fn reader(fd: OwnedFd, kind: Kind) -> io::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
    Ok(match kind {
        Kind::Pipe => Box::new(crate::io::lines::Growing::new(
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?,
        )),
        Kind::Socket => Box::new(crate::io::socket::SocketReader::new(
            std::os::unix::net::UnixStream::from(fd),
        )?),
    })
}

/// Sends `data` on a non-blocking socket with `fds` attached to its first byte; returns how
/// many bytes went (the caller writes the rest normally; the descriptors went with the first).
///
/// # Errors
/// `WouldBlock` when the socket is full (nothing was sent), anything else when it is broken.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)
}

/// Reads what is there into `dst` like `read(2)`, and any descriptors that came with it into
/// `fds` (replacing, and so closing, any left there from before: at most one set is kept).
/// Received descriptors are close-on-exec, so no child of the daemon inherits them.
///
/// # Errors
/// As `recvmsg(2)`; `WouldBlock` when there is nothing to read.
pub fn recv_with_fds(
    sock: RawFd,
    dst: &mut [MaybeUninit<u8>],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // u64s for the alignment cmsghdr needs: room for a few descriptors (two are expected; the
    // kernel closes any that do not fit).
    let mut control = [0u64; 8];
    let mut iov = nix::libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: nix::libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1 as _;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = nix::libc::MSG_CMSG_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = 0;
    // SAFETY: `msg` points at `iov` (which covers exactly `dst`, written by the kernel only)
    // and at `control`, both alive for the call.
    let n = unsafe { nix::libc::recvmsg(sock, &mut msg, flags) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut got = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // `msg_controllen`; each SCM_RIGHTS payload is an array of descriptors now ours.
    unsafe {
        let mut c = nix::libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == nix::libc::SOL_SOCKET && (*c).cmsg_type == nix::libc::SCM_RIGHTS {
                let data = nix::libc::CMSG_DATA(c);
                let header = data as usize - c as usize;
                let len = ((*c).cmsg_len as usize).saturating_sub(header);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    got.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = nix::libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if !got.is_empty() {
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        for fd in &got {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
        *fds = got;
    }
    Ok(n)
}

/// The host's stdin and stdout as they arrived with an attach, checked to be pipes or sockets.
pub struct HostFds {
    /// The host's stdin (read end).
    pub stdin: (OwnedFd, Kind),
    /// The host's stdout (write end).
    pub stdout: (OwnedFd, Kind),
}

impl HostFds {
    /// Exactly two descriptors, stdin then stdout, each a pipe or a socket; anything else is
    /// refused (and closed).
    pub fn from_vec(mut fds: Vec<OwnedFd>) -> Option<HostFds> {
        if fds.len() != 2 {
            return None;
        }
        let stdout = fds.pop()?;
        let stdin = fds.pop()?;
        let kin = kind(stdin.as_fd())?;
        let kout = kind(stdout.as_fd())?;
        Some(HostFds {
            stdin: (stdin, kin),
            stdout: (stdout, kout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Descriptors sent with a line arrive with its bytes, in order, as working descriptors.
    #[test]
    fn descriptors_cross_with_their_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pr, pw) = nix::unistd::pipe().unwrap();
        let (sa, _sb) = UnixStream::pair().unwrap();
        let line = b"{\"hello\":1}\n";
        let n = send_with_fds(a.as_fd(), line, &[pr.as_fd(), sa.as_fd()]).unwrap();
        assert_eq!(n, line.len());
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        let mut fds = Vec::new();
        let got = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(got, line.len());
        // SAFETY: recvmsg wrote `got` bytes.
        let bytes: Vec<u8> = buf[..got]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(bytes, line);
        let host = HostFds::from_vec(fds).expect("a pipe and a socket");
        assert_eq!(host.stdin.1, Kind::Pipe);
        assert_eq!(host.stdout.1, Kind::Socket);
        // The passed pipe is the same pipe: what is written to the original arrives.
        nix::unistd::write(&pw, b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&host.stdin.0, &mut one).unwrap(), 1);
        assert_eq!(&one, b"x");
        // A plain read gets no descriptors and keeps none from before.
        let mut fds = Vec::new();
        std::io::Write::write_all(&mut &a, b"y").unwrap();
        recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        assert!(fds.is_empty());
    }

    #[test]
    fn a_file_or_a_single_descriptor_is_refused() {
        let file = tempfile::tempfile().unwrap();
        let (pr, _pw) = nix::unistd::pipe().unwrap();
        assert_eq!(kind(file.as_fd()), None);
        assert!(HostFds::from_vec(vec![pr.try_clone().unwrap()]).is_none());
        assert!(HostFds::from_vec(vec![pr, OwnedFd::from(file)]).is_none());
    }

    #[test]
    fn unread_bytes_cross_whole_even_when_cut_inside_a_character() {
        let bytes = "{\"id\":1}\n{\"text\":\"é".as_bytes();
        let cut = &bytes[..bytes.len() - 1];
        let line = unread_line(cut);
        assert!(is_notice(&line, UNREAD));
        assert_eq!(parse_unread(&line).as_deref(), Some(cut));
        assert_eq!(parse_unread(&go_line()), None);
        assert_eq!(
            parse_unread(br#"{"jsonrpc":"2.0","method":"rmcp-mux/unread","params":{"hex":"0g"}}"#),
            None
        );
    }

    #[test]
    fn notices_are_told_by_method() {
        assert!(is_notice(&go_line(), GO));
        assert!(!is_notice(&go_line(), INPUT_CLOSED));
        assert!(is_notice(&input_closed_line(), INPUT_CLOSED));
    }
}
