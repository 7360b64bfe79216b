//! The stdio <-> socket bridge that hosts run as a server's command (`rmcp-mux-proxy`).
//!
//! It passes lines both ways untouched and keeps just enough of the session to be a good
//! citizen: which requests the host is still owed an answer for (so stdin EOF does not drop
//! them, and a lost daemon answers them with an error instead of silence), and the host's
//! handshake (so after a daemon restart it reconnects and replays it, and the host session
//! survives). It never routes: the daemon does that.
//!
//! Once the session is quiet after the handshake, it hands the host's stdin and stdout to the
//! daemon (`crate::io::handoff`) and only keeps the socket open as the link: the daemon then reads
//! and writes the host's pipes itself, without this process in between. When the link ends
//! the daemon is gone (or done): the proxy takes the host's stdio back and reconnects (sending
//! first what the daemon handed back of the host's stdin), or exits when the host has closed
//! stdin. A terminal or a file on stdio, a daemon that refuses, and
//! `RMCP_MUX_PROXY_COPY=1` keep the copying bridge.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use crate::jsonrpc::framing::{Frame, LineCodec};
use crate::jsonrpc::{self, codes, reasons, Kind, Parsed};

/// Ids looked up for every line: a fast fixed-seed hasher (ids come from the host itself).
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::FixedState>;

/// How the proxy behaves; [`ProxyOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The server's socket.
    pub socket: PathBuf,
    /// The longest line passed either way.
    pub max_line: usize,
    /// How long to keep trying when the daemon went away.
    pub reconnect_timeout: Duration,
    /// After stdin EOF, how long to wait for answers still owed.
    pub drain_timeout: Duration,
}

impl ProxyOptions {
    /// Defaults: 64 MiB lines, 30 s to reconnect, 60 s to drain.
    pub fn new(socket: PathBuf) -> Self {
        ProxyOptions {
            socket,
            max_line: 64 << 20,
            reconnect_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs the bridge on the process's stdin and stdout until the host goes away.
///
/// Pipes and sockets (what hosts give their servers) are read and written directly on the
/// runtime's thread; anything else (a terminal, a file) goes through tokio's blocking pool,
/// which costs two thread switches per read or write.
///
/// # Errors
/// The socket cannot be reached at start, or not again within `reconnect_timeout`.
pub async fn run(opts: ProxyOptions) -> anyhow::Result<()> {
    let (input, output) = stdio::open();
    let handoff = handoff_allowed();
    if !handoff {
        debug!("copying every line (stdio is not a pipe or socket, or RMCP_MUX_PROXY_COPY=1)");
    }
    run_inner(opts, input, output, handoff).await
}

/// Whether the host's stdin and stdout may be handed to the daemon: both pipes or sockets,
/// and `RMCP_MUX_PROXY_COPY` is not `1`.
fn handoff_allowed() -> bool {
    use std::os::fd::AsFd;
    if std::env::var_os("RMCP_MUX_PROXY_COPY").is_some_and(|v| v == "1") {
        return false;
    }
    crate::io::handoff::kind(std::io::stdin().as_fd()).is_some()
        && crate::io::handoff::kind(std::io::stdout().as_fd()).is_some()
}

type Input = FramedRead<Box<dyn AsyncRead + Send + Unpin>, LineCodec>;
type Output = BufWriter<Box<dyn AsyncWrite + Send + Unpin>>;

/// The host's side of the bridge: stdin framed with the line limit, stdout buffered (at start,
/// and again when the daemon gives the host's stdio back).
fn host_streams(
    opts: &ProxyOptions,
    input: Box<dyn AsyncRead + Send + Unpin>,
    output: Box<dyn AsyncWrite + Send + Unpin>,
) -> (Input, Output) {
    (
        FramedRead::new(input, LineCodec::new(opts.max_line)),
        BufWriter::with_capacity(64 * 1024, output),
    )
}

/// Non-blocking stdin and stdout for pipes and sockets.
mod stdio {
    use std::os::fd::{AsFd, OwnedFd};

    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::unix::pipe;

    use crate::io::handoff::Kind;
    use crate::io::lines::Growing;

    /// A duplicate of fd 0 or 1, so that the process's own stdio handles stay valid. (It
    /// shares the open file, so the process's stdin and stdout become non-blocking too; the
    /// proxy writes nothing else to them.)
    fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
        fd.try_clone_to_owned().ok()
    }

    /// The process's stdin and stdout, directly when they are pipes or sockets.
    pub(super) fn open() -> (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    ) {
        let input: Box<dyn AsyncRead + Send + Unpin> = match reader() {
            Some(r) => r,
            None => Box::new(tokio::io::stdin()),
        };
        let output: Box<dyn AsyncWrite + Send + Unpin> = match writer() {
            Some(w) => w,
            None => Box::new(tokio::io::stdout()),
        };
        (input, output)
    }

    /// Whether the host hung up stdin with nothing left in it (a pipe's writers all closed,
    /// a socket's peer shut down).
    pub(super) fn stdin_hung_up() -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsRawFd;
        let stdin = std::io::stdin();
        // The peer of a socket shutting down its writing side (Linux names it; elsewhere a
        // socket whose peer closed reports POLLHUP).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let rdhup = PollFlags::empty();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN | rdhup)];
        if poll(&mut fds, PollTimeout::ZERO).is_err() {
            return false;
        }
        let got = fds[0].revents().unwrap_or(PollFlags::empty());
        let hup = PollFlags::POLLHUP | rdhup;
        if got.contains(PollFlags::POLLNVAL) {
            return true;
        }
        // A socket at its end is also "readable" (the end is read): ask what is really left.
        let mut left: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, to `left`.
        let asked = unsafe { nix::libc::ioctl(stdin.as_raw_fd(), nix::libc::FIONREAD, &mut left) };
        got.intersects(hup) && (asked != 0 || left == 0)
    }

    pub(super) fn reader() -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        let fd = dup(std::io::stdin().as_fd())?;
        let kind = crate::io::handoff::kind(fd.as_fd())?;
        crate::io::handoff::reader(fd, kind).ok()
    }

    pub(super) fn writer() -> Option<Box<dyn AsyncWrite + Send + Unpin>> {
        let fd = dup(std::io::stdout().as_fd())?;
        match crate::io::handoff::kind(fd.as_fd())? {
            // Node-based hosts (libuv) give their children socket pairs, not pipes: written
            // through a one-way registration, the host reading each line costs no wake-up here.
            Kind::Socket => {
                let s = std::os::unix::net::UnixStream::from(fd);
                Some(Box::new(crate::io::socket::SocketWriter::new(s).ok()?))
            }
            Kind::Pipe => pipe::Sender::from_owned_fd(fd)
                .ok()
                .map(|w| Box::new(Growing::new(w)) as Box<dyn AsyncWrite + Send + Unpin>),
        }
    }
}

/// The write buffer in front of the socket; a line this long is written from where it was read.
const SOCKET_BUFFER: usize = 64 * 1024;

/// Send buffer asked for the socket (doubled by the kernel, within `net.core.wmem_max`; memory
/// is only held for what is queued).
const SNDBUF: usize = 1 << 20;

enum Outcome {
    /// The host is gone or nothing more is owed: exit.
    Done,
    /// The daemon went away: reconnect.
    SocketLost,
}

#[derive(Default)]
struct Session {
    init: Option<Bytes>,
    initialized: Option<Bytes>,
    set_level: Option<Bytes>,
    owed: HashSet<Bytes>,
    replay: HashSet<Bytes>,
    replays: u64,
    /// The id of the attach request waiting for its answer.
    attach_id: Option<Bytes>,
    attaches: u64,
    /// What the daemon read from the host's stdin and handed back when it let the host go:
    /// read before anything more from stdin.
    unread: Vec<u8>,
}

/// Where the hand-off stands on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handoff {
    /// Not on this connection (not allowed, or the daemon refused).
    Off,
    /// To be asked once the session is quiet.
    Ready,
    /// Asked; stdin is not read until the answer.
    Asked,
}

/// The same bridge over any pair of streams (tests use in-memory pipes); it never hands them
/// over (they are not the process's stdio).
///
/// # Errors
/// As [`run`].
pub async fn run_with<I, O>(opts: ProxyOptions, input: I, output: O) -> anyhow::Result<()>
where
    I: AsyncRead + Send + Unpin + 'static,
    O: AsyncWrite + Send + Unpin + 'static,
{
    run_inner(opts, Box::new(input), Box::new(output), false).await
}

async fn run_inner(
    opts: ProxyOptions,
    input: Box<dyn AsyncRead + Send + Unpin>,
    output: Box<dyn AsyncWrite + Send + Unpin>,
    handoff: bool,
) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(&opts.socket).await.with_context(|| {
        format!(
            "cannot connect to {} (is rmcp-mux running?)",
            opts.socket.display()
        )
    })?;
    let (mut input, mut out) = host_streams(&opts, input, output);
    let mut session = Session::default();
    let mut input_done = false;
    loop {
        let outcome = bridge(
            &opts,
            stream,
            &mut input,
            &mut input_done,
            &mut out,
            &mut session,
            handoff,
        )
        .await?;
        match outcome {
            Outcome::Done => return Ok(()),
            Outcome::SocketLost => {
                // Whatever was in flight is lost with the connection: say so.
                let data = format!(r#"{{"reason":"{}"}}"#, reasons::UPSTREAM_EXITED);
                for id in session.owed.drain() {
                    let line = jsonrpc::error(
                        &id,
                        codes::INTERNAL_ERROR,
                        "rmcp-mux connection lost; request aborted",
                        Some(&data),
                    );
                    if crate::io::lines::write_line(&mut out, &line).await.is_err() {
                        return Ok(());
                    }
                }
                if out.flush().await.is_err() {
                    return Ok(());
                }
                session.replay.clear();
                if input_done {
                    return Ok(());
                }
                warn!(socket = %opts.socket.display(), "lost the daemon; reconnecting");
                stream = reconnect(&opts).await?;
                info!("reconnected");
            }
        }
    }
}

async fn reconnect(opts: &ProxyOptions) -> anyhow::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + opts.reconnect_timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        match UnixStream::connect(&opts.socket).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() + delay > deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "lost {} and could not reconnect within {:?}",
                        opts.socket.display(),
                        opts.reconnect_timeout
                    )
                })
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn bridge(
    opts: &ProxyOptions,
    stream: UnixStream,
    input: &mut Input,
    input_done: &mut bool,
    out: &mut Output,
    session: &mut Session,
    handoff: bool,
) -> anyhow::Result<Outcome> {
    // As the daemon does for its side: a 1 MiB line leaves in one write, not five.
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &SNDBUF);
    let Ok((read, write)) = crate::io::socket::split_tokio(stream) else {
        return Ok(Outcome::SocketLost);
    };
    let mut sock_in = FramedRead::new(read, LineCodec::new(opts.max_line));
    let mut sock_out = BufWriter::with_capacity(SOCKET_BUFFER, write);
    // First on every connection: the folder the host started us in, which picks the instance
    // of a server shared per project (`crate::mux::project`); flushed with the replay below.
    if let Ok(dir) = std::env::current_dir() {
        if crate::io::lines::write_line(&mut sock_out, &crate::mux::project::line(&dir))
            .await
            .is_err()
        {
            return Ok(Outcome::SocketLost);
        }
    }
    // After a reconnect: the host's handshake again, under private ids, answers swallowed.
    if replay(session, &mut sock_out).await.is_err()
        || resend_unread(session, input, &mut sock_out, out)
            .await
            .is_err()
    {
        return Ok(Outcome::SocketLost);
    }
    let mut drain_deadline = None;
    let mut handoff = if handoff {
        Handoff::Ready
    } else {
        Handoff::Off
    };
    loop {
        if *input_done && session.owed.is_empty() {
            return Ok(Outcome::Done);
        }
        if handoff == Handoff::Ready && !*input_done && quiet(session, input) {
            if send_attach(&mut sock_out, session).await.is_err() {
                return Ok(Outcome::SocketLost);
            }
            handoff = Handoff::Asked;
        }
        tokio::select! {
            // Cancel safe: FramedRead keeps partial lines in its buffer.
            frame = input.next(), if !*input_done && handoff != Handoff::Asked => {
                let mut next = Some(frame);
                while let Some(frame) = next.take() {
                    match frame {
                        Some(Ok(Frame::Line(line))) => {
                            // A large line goes out before its envelope is read here, so the
                            // daemon works on it meanwhile. (Its answer is read only after.)
                            let mut sent = crate::io::lines::write_line(&mut sock_out, &line).await;
                            if sent.is_ok() && line.len() >= SOCKET_BUFFER {
                                sent = sock_out.flush().await;
                            }
                            note_host_line(session, &line);
                            if sent.is_err() {
                                return Ok(Outcome::SocketLost);
                            }
                        }
                        // Not a reporting codec: never given.
                        Some(Ok(Frame::Partial)) => {}
                        Some(Ok(Frame::TooLong { limit })) => {
                            let msg = format!("message exceeds {limit} bytes");
                            if crate::io::lines::write_line(out, &jsonrpc::error(b"null", codes::INVALID_REQUEST, &msg, None)).await.is_err() {
                                return Ok(Outcome::Done);
                            }
                        }
                        Some(Err(_)) | None => {
                            debug!(owed = session.owed.len(), "host closed stdin");
                            *input_done = true;
                            drain_deadline = Some(tokio::time::Instant::now() + opts.drain_timeout);
                        }
                    }
                    if !*input_done {
                        // Take whatever else is already buffered before one flush.
                        next = input.next().now_or_never();
                    }
                }
                if sock_out.flush().await.is_err() {
                    return Ok(Outcome::SocketLost);
                }
                if out.flush().await.is_err() {
                    return Ok(Outcome::Done);
                }
            }
            frame = sock_in.next() => {
                let mut next = Some(frame);
                while let Some(frame) = next.take() {
                    match frame {
                        Some(Ok(Frame::Line(line))) if handoff == Handoff::Asked => {
                            match attach_answer(session, &line) {
                                Some(true) => {
                                    // Everything before the answer is written before `go`.
                                    if out.flush().await.is_err() {
                                        return Ok(Outcome::Done);
                                    }
                                    let go = crate::io::handoff::go_line();
                                    if crate::io::lines::write_line(&mut sock_out, &go).await.is_err()
                                        || sock_out.flush().await.is_err()
                                    {
                                        return Ok(Outcome::SocketLost);
                                    }
                                    return Ok(
                                        attached(opts, sock_in, sock_out, input, out, session)
                                            .await,
                                    );
                                }
                                Some(false) => {
                                    info!("the daemon does not take the host's stdio (an older daemon?); copying every line");
                                    handoff = Handoff::Off;
                                }
                                None => {
                                    if crate::io::lines::write_line(out, &line).await.is_err() {
                                        return Ok(Outcome::Done);
                                    }
                                }
                            }
                        }
                        Some(Ok(Frame::Line(line))) => {
                            if keep_socket_line(session, &line)
                                && crate::io::lines::write_line(out, &line).await.is_err()
                            {
                                return Ok(Outcome::Done);
                            }
                        }
                        Some(Ok(Frame::Partial)) => {}
                        Some(Ok(Frame::TooLong { limit })) => {
                            warn!(limit, "the daemon sent a line over the bound; dropped");
                        }
                        Some(Err(_)) | None => {
                            let _ = out.flush().await;
                            return Ok(Outcome::SocketLost);
                        }
                    }
                    next = sock_in.next().now_or_never();
                }
                if out.flush().await.is_err() {
                    return Ok(Outcome::Done);
                }
            }
            () = crate::io::lines::sleep_until(drain_deadline) => {
                warn!(owed = session.owed.len(), "gave up waiting for answers after stdin closed");
                return Ok(Outcome::Done);
            }
        }
    }
}

/// Whether the session can be handed over: the handshake done, no answer owed, no replay
/// waiting, and nothing read from stdin that has not been sent.
fn quiet(session: &Session, input: &Input) -> bool {
    session.init.is_some()
        && session.initialized.is_some()
        && session.owed.is_empty()
        && session.replay.is_empty()
        && input.read_buffer().is_empty()
}

/// Sends the attach request with the process's stdin and stdout attached.
async fn send_attach(
    sock: &mut BufWriter<crate::io::socket::SocketWriter>,
    session: &mut Session,
) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    sock.flush().await?;
    session.attaches += 1;
    let id = format!("\"rmcp-mux-proxy-attach-{}\"", session.attaches);
    let line = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{}\",\"params\":{{}}}}\n",
        crate::io::handoff::ATTACH
    );
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let fds = [stdin.as_fd(), stdout.as_fd()];
    let sent = loop {
        match crate::io::handoff::send_with_fds(sock.get_ref().as_fd(), line.as_bytes(), &fds) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sock.get_ref().writable().await?;
            }
            Err(e) => return Err(e),
        }
    };
    if sent < line.len() {
        sock.get_mut().write_all(&line.as_bytes()[sent..]).await?;
    }
    session.attach_id = Some(Bytes::from(id));
    debug!("asked the daemon to take the host's stdio");
    Ok(())
}

/// Whether `line` answers the attach request: `Some(true)` taken, `Some(false)` refused.
fn attach_answer(session: &Session, line: &[u8]) -> Option<bool> {
    let want = session.attach_id.as_deref()?;
    let Ok(Parsed::Single(env)) = jsonrpc::parse(line) else {
        return None;
    };
    let answer = matches!(env.kind, Kind::Response | Kind::Error);
    (answer && env.id?.get().as_bytes() == want).then_some(env.kind == Kind::Response)
}

/// Attached: the daemon reads and writes the host's stdio; this process only holds the link
/// until it ends. Then either the host closed stdin (done) or the daemon went away: the
/// host's stdio is taken back for a reconnect.
async fn attached(
    opts: &ProxyOptions,
    mut link: FramedRead<crate::io::socket::SocketReader, LineCodec>,
    sock_out: BufWriter<crate::io::socket::SocketWriter>,
    input: &mut Input,
    out: &mut Output,
    session: &mut Session,
) -> Outcome {
    // Stop watching the host's stdio: dropping them deregisters them from this runtime, so
    // the host's traffic wakes only the daemon.
    *input = FramedRead::new(Box::new(tokio::io::empty()), LineCodec::new(opts.max_line));
    *out = BufWriter::new(Box::new(tokio::io::sink()));
    info!("attached: the daemon reads and writes the host's stdio directly");
    let mut input_closed = false;
    loop {
        match link.next().await {
            Some(Ok(Frame::Line(line)))
                if crate::io::handoff::is_notice(&line, crate::io::handoff::INPUT_CLOSED) =>
            {
                debug!("the daemon saw the host close stdin");
                input_closed = true;
            }
            Some(Ok(Frame::Line(line)))
                if crate::io::handoff::is_notice(&line, crate::io::handoff::UNREAD) =>
            {
                match crate::io::handoff::parse_unread(&line) {
                    Some(bytes) => {
                        debug!(
                            bytes = bytes.len(),
                            "the daemon handed back what it read of stdin"
                        );
                        session.unread.extend_from_slice(&bytes);
                    }
                    None => warn!("a malformed hand-back of the host's stdin on the link; dropped"),
                }
            }
            Some(Ok(_)) => debug!("ignored a line on the link"),
            Some(Err(_)) | None => break,
        }
    }
    drop(sock_out);
    // Lines handed back are sent even when the host has closed stdin since.
    if input_closed || (session.unread.is_empty() && stdio::stdin_hung_up()) {
        return Outcome::Done;
    }
    let (i, o) = stdio::open();
    (*input, *out) = host_streams(opts, i, o);
    Outcome::SocketLost
}

/// The bytes the daemon handed back, read again as the start of the host's stdin: its whole
/// lines go to the daemon now, as the bridge sends what it reads; a partial line waits in the
/// read buffer for its rest (and keeps the session from being handed over meanwhile).
async fn resend_unread(
    session: &mut Session,
    input: &mut Input,
    sock: &mut BufWriter<crate::io::socket::SocketWriter>,
    out: &mut Output,
) -> std::io::Result<()> {
    use tokio_util::codec::Decoder;
    if session.unread.is_empty() {
        return Ok(());
    }
    let mut buf = bytes::BytesMut::from(&std::mem::take(&mut session.unread)[..]);
    buf.extend_from_slice(input.read_buffer());
    *input.read_buffer_mut() = buf;
    // The codec and the buffer are borrowed together: the codec is taken out meanwhile.
    let mut codec = std::mem::replace(input.decoder_mut(), LineCodec::new(0));
    let mut sent = Ok(());
    while sent.is_ok() {
        match codec.decode(input.read_buffer_mut()) {
            Ok(Some(Frame::Line(line))) => {
                sent = crate::io::lines::write_line(sock, &line).await;
                note_host_line(session, &line);
            }
            Ok(Some(Frame::TooLong { limit })) => {
                let msg = format!("message exceeds {limit} bytes");
                let line = jsonrpc::error(b"null", codes::INVALID_REQUEST, &msg, None);
                // A host gone from stdout shows again at the next write.
                let _ = crate::io::lines::write_line(out, &line).await;
            }
            Ok(Some(Frame::Partial)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    *input.decoder_mut() = codec;
    sent?;
    sock.flush().await
}

async fn replay<W: AsyncWrite + Unpin>(
    session: &mut Session,
    sock: &mut BufWriter<W>,
) -> std::io::Result<()> {
    let lines = [session.init.clone(), session.set_level.clone()];
    for (i, line) in lines.into_iter().enumerate() {
        let Some(line) = line else { continue };
        session.replays += 1;
        let id = format!("\"rmcp-mux-proxy-replay-{}\"", session.replays);
        let Some(rewritten) = with_id(&line, id.as_bytes()) else {
            continue;
        };
        session.replay.insert(Bytes::from(id));
        crate::io::lines::write_line(sock, &rewritten).await?;
        if i == 0 {
            if let Some(initialized) = &session.initialized {
                crate::io::lines::write_line(sock, initialized).await?;
            }
        }
    }
    sock.flush().await
}

fn with_id(line: &[u8], id: &[u8]) -> Option<Bytes> {
    let env = jsonrpc::parse_one(line).ok()?;
    let span = jsonrpc::span_in(line, env.id?.get());
    Some(jsonrpc::splice(line, &mut [(span, id)]))
}

/// Records what the host sent that matters for owed answers and replays.
fn note_host_line(session: &mut Session, line: &Bytes) {
    if let Some((id, method)) = fast_request(line) {
        session.owed.insert(Bytes::copy_from_slice(id));
        match method {
            b"initialize" => session.init = Some(line.clone()),
            b"logging/setLevel" => session.set_level = Some(line.clone()),
            _ => {}
        }
        return;
    }
    match jsonrpc::parse(line) {
        Ok(Parsed::Single(env)) => note_envelope(session, line, &env),
        Ok(Parsed::Batch(items)) => {
            for raw in items {
                if let Ok(env) = jsonrpc::parse_one(raw.get().as_bytes()) {
                    note_envelope(session, line, &env);
                }
            }
        }
        Err(_) => {}
    }
}

fn note_envelope(session: &mut Session, line: &Bytes, env: &jsonrpc::Envelope<'_>) {
    match (env.kind, env.method.as_deref()) {
        (Kind::Request, method) => {
            if let Some(id) = env.id {
                session
                    .owed
                    .insert(Bytes::copy_from_slice(id.get().as_bytes()));
            }
            match method {
                Some("initialize") => session.init = Some(line.clone()),
                Some("logging/setLevel") => session.set_level = Some(line.clone()),
                _ => {}
            }
        }
        (Kind::Notification, Some("notifications/initialized")) => {
            session.initialized = Some(line.clone());
        }
        // The daemon never answers a cancelled request (nor does a server, directly): it is
        // no longer owed, so stdin EOF, a lost daemon and the hand-off do not wait for it.
        (Kind::Notification, Some("notifications/cancelled")) => {
            if let Some(id) = jsonrpc::field(env.params, "requestId") {
                session.owed.remove(id.get().as_bytes());
            }
        }
        _ => {}
    }
}

/// Settles owed answers; returns false for answers to the proxy's own replays.
fn keep_socket_line(session: &mut Session, line: &[u8]) -> bool {
    if session.owed.is_empty() && session.replay.is_empty() {
        return true;
    }
    if let Some(id) = fast_response_id(line) {
        return settle(session, id);
    }
    match jsonrpc::parse(line) {
        Ok(Parsed::Single(env)) => {
            if matches!(env.kind, Kind::Response | Kind::Error) {
                if let Some(id) = env.id {
                    return settle(session, id.get().as_bytes());
                }
            }
            true
        }
        Ok(Parsed::Batch(items)) => {
            for raw in items {
                if let Ok(env) = jsonrpc::parse_one(raw.get().as_bytes()) {
                    if let (Kind::Response | Kind::Error, Some(id)) = (env.kind, env.id) {
                        session.owed.remove(id.get().as_bytes());
                    }
                }
            }
            true
        }
        Err(_) => true,
    }
}

fn settle(session: &mut Session, id: &[u8]) -> bool {
    if session.replay.remove(id) {
        return false;
    }
    session.owed.remove(id);
    true
}

/// The id of a response, found without parsing a possibly huge payload when the line has one
/// of the common shapes: `{"jsonrpc":"2.0","id":ID,"result"…` (Python SDK, the mux's own
/// errors), `{"id":ID,"jsonrpc"…` (serde_json), or `…,"id":ID}` at the very end (TypeScript
/// SDK). Anything else returns `None` and is parsed in full.
fn fast_response_id(line: &[u8]) -> Option<&[u8]> {
    let Some((id, after, _)) = leading_id(line) else {
        return trailing_id(line);
    };
    let is_response = after.starts_with(br#","result""#)
        || after.starts_with(br#","error""#)
        || (after.starts_with(br#","jsonrpc":"2.0","#)
            && (after[17..].starts_with(br#""result""#) || after[17..].starts_with(br#""error""#)));
    is_response.then_some(id)
}

/// The id at the start of a line in the Python SDK's (`{"jsonrpc":"2.0","id":ID…`) or
/// serde_json's (`{"id":ID…`) shape, what follows it, and whether it was the id-first shape.
fn leading_id(line: &[u8]) -> Option<(&[u8], &[u8], bool)> {
    let (rest, id_first) = if let Some(rest) = line.strip_prefix(br#"{"jsonrpc":"2.0","id":"#) {
        (rest, false)
    } else {
        (line.strip_prefix(br#"{"id":"#)?, true)
    };
    let end = scalar_end(rest)?;
    Some((&rest[..end], &rest[end..], id_first))
}

/// The id and method of a host request in one of the common shapes, found without parsing its
/// params: `{"jsonrpc":"2.0","id":ID,"method":"M"…` (Python SDK), `{"id":ID,"jsonrpc":"2.0",
/// "method":"M"…` (serde_json) and `{"method":"M",…,"id":N}` (TypeScript SDK). Anything else
/// (notifications, batches, other orders, escapes in the method) returns `None` and is parsed
/// in full; the daemon validates every line either way.
fn fast_request(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if !line.ends_with(b"}") {
        return None;
    }
    let (id, rest) = if let Some((id, after, id_first)) = leading_id(line) {
        let after = if id_first {
            after.strip_prefix(br#","jsonrpc":"2.0""#)?
        } else {
            after
        };
        (id, after.strip_prefix(br#","method":"#)?)
    } else if let Some(rest) = line.strip_prefix(br#"{"method":"#) {
        let id = trailing_number_id(line)?;
        (id, rest)
    } else {
        return None;
    };
    let method = rest.strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', method)?;
    (method[end] == b'"').then_some((id, &method[..end]))
}

/// `…,"id":N}` closing a line: the last `}` closes the top-level object, so the member right
/// before it is a top-level member.
fn trailing_number_id(line: &[u8]) -> Option<&[u8]> {
    let body = line.strip_suffix(b"}")?;
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (head, id) = body.split_at(body.len() - digits);
    head.strip_suffix(br#","id":"#).map(|_| id)
}

/// Where a JSON number or string at the start of `s` ends.
fn scalar_end(s: &[u8]) -> Option<usize> {
    match s.first()? {
        b'"' => {
            let mut i = 1;
            loop {
                match s.get(i)? {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        b'-' | b'0'..=b'9' => s.iter().position(|b| !(b.is_ascii_digit() || *b == b'-')),
        _ => None,
    }
}

/// `…,"id":ID}` at the end of a line: the last `}` closes the top-level object, so a member
/// right before it is a top-level member. Only numeric ids (what the mux hands out) qualify,
/// and the line must not be a request (no top-level "method" can follow a trailing id, but one
/// could precede it, so requests are told apart by the caller's full parse).
fn trailing_id(line: &[u8]) -> Option<&[u8]> {
    let id = trailing_number_id(line)?;
    // A response has "result" or "error" right at the top level; checking the start is cheap
    // and covers the TypeScript shape `{"result":…` / `{"error":…` / `{"jsonrpc":"2.0","result"…`.
    let starts = [
        &br#"{"result":"#[..],
        br#"{"error":"#,
        br#"{"jsonrpc":"2.0","result":"#,
        br#"{"jsonrpc":"2.0","error":"#,
    ];
    starts.iter().any(|p| line.starts_with(p)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn fast_request_path_finds_id_and_method_or_defers() {
        let py = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"id":9}}"#;
        assert_eq!(fast_request(py), Some((&b"3"[..], &b"tools/call"[..])));
        let serde = br#"{"id":"a\"b","jsonrpc":"2.0","method":"initialize","params":{}}"#;
        assert_eq!(
            fast_request(serde),
            Some((&br#""a\"b""#[..], &b"initialize"[..]))
        );
        let ts = br#"{"method":"tools/call","params":{"x":{"id":5}},"jsonrpc":"2.0","id":12}"#;
        assert_eq!(fast_request(ts), Some((&b"12"[..], &b"tools/call"[..])));
        // Deferred to the full parse: a notification, an id nested at the end, an escaped
        // method, a batch, a line that does not close.
        for line in [
            &br#"{"method":"notifications/initialized","jsonrpc":"2.0"}"#[..],
            br#"{"method":"x","params":{"id":5}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
        ] {
            assert_eq!(
                fast_request(line),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // Whatever the fast path finds, the full parse finds too.
        for line in [&py[..], serde, ts] {
            let Ok(Parsed::Single(env)) = jsonrpc::parse(line) else {
                panic!("not a single envelope")
            };
            let (id, method) = fast_request(line).unwrap();
            assert_eq!(env.id.unwrap().get().as_bytes(), id);
            assert_eq!(env.method.as_deref().unwrap().as_bytes(), method);
            assert_eq!(env.kind, Kind::Request);
        }
    }

    #[test]
    fn the_attach_answer_is_told_by_its_id_and_kind() {
        let mut session = Session::default();
        let ok = br#"{"jsonrpc":"2.0","id":"rmcp-mux-proxy-attach-1","result":{}}"#;
        assert_eq!(attach_answer(&session, ok), None, "nothing asked yet");
        session.attach_id = Some(Bytes::from_static(b"\"rmcp-mux-proxy-attach-1\""));
        assert_eq!(attach_answer(&session, ok), Some(true));
        let refused = br#"{"jsonrpc":"2.0","id":"rmcp-mux-proxy-attach-1","error":{"code":-32601,"message":"Method not found"}}"#;
        assert_eq!(attach_answer(&session, refused), Some(false));
        // Another answer, a notification, a request with the same id: passed to the host.
        for line in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{}}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":"rmcp-mux-proxy-attach-1","method":"x"}"#,
            b"not json",
        ] {
            assert_eq!(attach_answer(&session, line), None);
        }
    }

    #[test]
    fn fast_path_finds_ids_of_the_common_shape() {
        assert_eq!(
            fast_response_id(br#"{"jsonrpc":"2.0","id":12,"result":{}}"#),
            Some(&b"12"[..])
        );
        assert_eq!(
            fast_response_id(br#"{"jsonrpc":"2.0","id":"a\"b","error":{}}"#),
            Some(&br#""a\"b""#[..])
        );
        assert_eq!(
            fast_response_id(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#),
            None
        );
        // serde_json's shape (the fake server, Rust servers): the id first.
        assert_eq!(
            fast_response_id(br#"{"id":1,"jsonrpc":"2.0","result":{}}"#),
            Some(&b"1"[..])
        );
        assert_eq!(
            fast_response_id(br#"{"id":"x","error":{"code":1}}"#),
            Some(&br#""x""#[..])
        );
        // A request from the server with the id first is not an answer.
        assert_eq!(
            fast_response_id(br#"{"id":1,"jsonrpc":"2.0","method":"x"}"#),
            None
        );
    }

    struct Host {
        stdin: tokio::io::DuplexStream,
        stdout: tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    fn start(socket: PathBuf) -> Host {
        let (stdin, proxy_in) = tokio::io::duplex(1 << 16);
        let (proxy_out, stdout) = tokio::io::duplex(1 << 16);
        let mut opts = ProxyOptions::new(socket);
        opts.reconnect_timeout = Duration::from_secs(5);
        let task = tokio::spawn(run_with(opts, proxy_in, proxy_out));
        Host {
            stdin,
            stdout: BufReader::new(stdout).lines(),
            task,
        }
    }

    async fn send<W: AsyncWrite + Unpin>(w: &mut W, v: Value) {
        w.write_all(format!("{v}\n").as_bytes()).await.unwrap();
    }

    async fn recv<R: tokio::io::AsyncBufRead + Unpin>(
        r: &mut tokio::io::Lines<R>,
    ) -> Option<Value> {
        let line = tokio::time::timeout(T, r.next_line())
            .await
            .expect("timed out")
            .unwrap()?;
        Some(serde_json::from_str(&line).unwrap())
    }

    async fn accept(
        l: &UnixListener,
    ) -> (
        tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        let (s, _) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
        let (r, w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        // Every connection starts with the proxy's working folder.
        let first = recv(&mut lines).await.expect("no project line");
        assert_eq!(first["method"], crate::mux::project::PROJECT);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(first["params"]["dir"], cwd.to_str().unwrap());
        (lines, w)
    }

    #[tokio::test]
    async fn bridges_tracks_owed_ids_by_type_and_drains_after_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        let mut host = start(path);
        let (mut mux_in, mut mux_out) = accept(&l).await;
        send(
            &mut host.stdin,
            json!({"jsonrpc":"2.0","id":1,"method":"a"}),
        )
        .await;
        send(
            &mut host.stdin,
            json!({"jsonrpc":"2.0","id":"1","method":"b"}),
        )
        .await;
        assert_eq!(recv(&mut mux_in).await.unwrap()["method"], "a");
        assert_eq!(recv(&mut mux_in).await.unwrap()["method"], "b");
        // The host goes quiet; the answers still owed must arrive before the proxy exits.
        drop(host.stdin);
        send(
            &mut mux_out,
            json!({"jsonrpc":"2.0","id":1,"result":{"n":1}}),
        )
        .await;
        assert_eq!(recv(&mut host.stdout).await.unwrap()["result"]["n"], 1);
        assert!(!host.task.is_finished(), "\"1\" is still owed");
        send(
            &mut mux_out,
            json!({"jsonrpc":"2.0","id":"1","result":{"n":2}}),
        )
        .await;
        assert_eq!(recv(&mut host.stdout).await.unwrap()["result"]["n"], 2);
        tokio::time::timeout(T, host.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn host_gone_ends_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        let host = start(path);
        let (_mux_in, mut mux_out) = accept(&l).await;
        drop(host.stdout);
        send(
            &mut mux_out,
            json!({"jsonrpc":"2.0","method":"notifications/x"}),
        )
        .await;
        drop(host.stdin);
        tokio::time::timeout(T, host.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn reconnects_and_replays_the_handshake_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        let mut host = start(path);
        let (mut mux_in, mut mux_out) = accept(&l).await;
        send(
            &mut host.stdin,
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"capabilities":{}}}),
        )
        .await;
        recv(&mut mux_in).await.unwrap();
        send(&mut mux_out, json!({"jsonrpc":"2.0","id":0,"result":{}})).await;
        recv(&mut host.stdout).await.unwrap();
        send(
            &mut host.stdin,
            json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        )
        .await;
        send(
            &mut host.stdin,
            json!({"jsonrpc":"2.0","id":5,"method":"slow"}),
        )
        .await;
        recv(&mut mux_in).await.unwrap();
        recv(&mut mux_in).await.unwrap();
        // The daemon goes away with request 5 in flight.
        drop((mux_in, mux_out));
        let err = recv(&mut host.stdout).await.unwrap();
        assert_eq!(err["id"], 5);
        assert_eq!(err["error"]["data"]["reason"], "upstream_exited");
        let (mut mux_in, mut mux_out) = accept(&l).await;
        let init = recv(&mut mux_in).await.unwrap();
        assert_eq!(init["method"], "initialize");
        assert_eq!(init["id"], "rmcp-mux-proxy-replay-1");
        assert_eq!(
            recv(&mut mux_in).await.unwrap()["method"],
            "notifications/initialized"
        );
        send(
            &mut mux_out,
            json!({"jsonrpc":"2.0","id":"rmcp-mux-proxy-replay-1","result":{}}),
        )
        .await;
        send(
            &mut host.stdin,
            json!({"jsonrpc":"2.0","id":6,"method":"next"}),
        )
        .await;
        assert_eq!(recv(&mut mux_in).await.unwrap()["id"], 6);
        send(&mut mux_out, json!({"jsonrpc":"2.0","id":6,"result":{}})).await;
        let got = recv(&mut host.stdout).await.unwrap();
        assert_eq!(got["id"], 6, "the replay's answer never reaches the host");
    }

    #[tokio::test]
    async fn missing_socket_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let err = run_with(
            ProxyOptions::new(path),
            tokio::io::empty(),
            tokio::io::sink(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("gone.sock"));
    }
}
