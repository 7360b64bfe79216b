//! Bounded line framing: one JSON-RPC message per line, never more than the bound of one line
//! held in memory, a line over the bound reported once and skipped up to its newline.
//!
//! Pure codec over a buffer (tokio-util's `Decoder`); it does no I/O of its own.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// One decoded unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A line without its `\n` (and without a trailing `\r`).
    Line(Bytes),
    /// A line longer than the bound was seen; it is being discarded up to its newline.
    /// Emitted once per such line, as soon as the bound is crossed.
    TooLong {
        /// The bound in bytes.
        limit: usize,
    },
    /// More of a long line arrived, still without its newline (only from a codec made with
    /// [`LineCodec::reporting`], once the line is that long, and until [`LineCodec::quiet`]).
    /// The line so far is the front of the read buffer; it stays there until it is complete.
    Partial,
}

/// How many lines as long as the longest seen a read buffer has room for when it is empty
/// (and a byte more).
const ROOM_LINES: usize = 8;
/// The most room [`ROOM_LINES`] asks for (tokio-util's default read buffer): a client of
/// short lines keeps a small buffer, one of lines over 8 KiB gets room for one, as before.
const ROOM_MAX: usize = 8 * 1024;

/// A newline codec with a hard bound per line.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// How far the buffer was already searched for a newline.
    scanned: usize,
    /// Inside an over-long line: drop bytes until the next newline.
    discarding: bool,
    /// The longest line seen so far (within the bound): a partial line gets this much room
    /// at once, so a peer that sends large lines fills one buffer instead of doubling it
    /// (and copying it) from 8 KiB up for every line.
    longest: usize,
    /// Report a partial line as [`Frame::Partial`] once it is this long.
    report_at: Option<usize>,
    /// How much of the current line was reported (or `usize::MAX`: not this line).
    reported: usize,
}

impl LineCodec {
    /// A codec that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max: max_line,
            scanned: 0,
            discarding: false,
            longest: 0,
            report_at: None,
            reported: 0,
        }
    }

    /// A codec that also reports a partial line of `at` bytes or more each time more of it
    /// arrives, so that its reader can pass it on before it is complete.
    pub fn reporting(max_line: usize, at: usize) -> Self {
        LineCodec {
            report_at: Some(at),
            ..LineCodec::new(max_line)
        }
    }

    /// No more [`Frame::Partial`] for the current line (its reader does not want it).
    pub fn quiet(&mut self) {
        self.reported = usize::MAX;
    }

    /// The bound in bytes.
    pub fn max_line(&self) -> usize {
        self.max
    }

    /// Whether it is skipping the rest of a line over the bound (up to its newline).
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

fn trim(mut line: BytesMut) -> Option<Bytes> {
    while line
        .last()
        .is_some_and(|b| *b == b'\r' || *b == b' ' || *b == b'\t')
    {
        line.truncate(line.len() - 1);
    }
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        Some(line.freeze())
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            let found = memchr(&buf[self.scanned..]).map(|i| self.scanned + i);
            if self.discarding {
                match found {
                    Some(at) => {
                        buf.advance(at + 1);
                        self.scanned = 0;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        self.scanned = 0;
                        return Ok(None);
                    }
                }
            }
            match found {
                Some(at) if at <= self.max => {
                    self.longest = self.longest.max(at);
                    let mut line = buf.split_to(at + 1);
                    line.truncate(at);
                    self.scanned = 0;
                    self.reported = 0;
                    match trim(line) {
                        Some(line) => return Ok(Some(Frame::Line(line))),
                        None => continue,
                    }
                }
                Some(at) => {
                    // Over the bound, and its end is already here.
                    buf.advance(at + 1);
                    self.scanned = 0;
                    self.reported = 0;
                    return Ok(Some(Frame::TooLong { limit: self.max }));
                }
                None if buf.len() > self.max => {
                    buf.clear();
                    self.scanned = 0;
                    self.reported = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::TooLong { limit: self.max }));
                }
                None => {
                    self.scanned = buf.len();
                    if self
                        .report_at
                        .is_some_and(|at| buf.len() >= at && buf.len() > self.reported)
                    {
                        self.reported = buf.len();
                        return Ok(Some(Frame::Partial));
                    }
                    // Room for a line as long as the longest so far (and its newline),
                    // also when the buffer is empty, so the next large line arrives in one
                    // read (asking only once a line has started measured no gain). The room
                    // is untouched memory until a line fills it.
                    let one = self.longest.max(buf.len()).min(self.max) + 1;
                    // And for a few lines of that length, so that a client with several
                    // requests in flight gets them in one read: with room for one, 8 requests
                    // of 280 bytes (a 2026-07-28 envelope each) took 3–4 reads where 8 of
                    // 110 bytes took one, and the daemon spent 1.4× the CPU per answer.
                    // Asking only once less than one line was left took a handshake client
                    // from 8 answers per read to 5 under load (one new buffer per read
                    // instead costs ≈ 0.4 k instructions per sequential request). A byte
                    // more than those lines: a whole window of them is then a short read,
                    // which tells the socket's reader it is drained; a read that filled the
                    // room exactly was followed by one more that found nothing (twice the
                    // reads per window of 8 such requests).
                    let want = one.max(
                        (one * ROOM_LINES + 1)
                            .min(ROOM_MAX)
                            .min(self.max.saturating_add(1)),
                    );
                    if want > buf.capacity() {
                        buf.reserve(want - buf.len());
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.scanned = 0;
        self.reported = 0;
        if self.discarding {
            self.discarding = false;
            buf.clear();
            return Ok(None);
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let line = buf.split();
        Ok(trim(line).map(Frame::Line))
    }
}

/// The next newline: memchr (SIMD), since a 1 MiB line is searched once as it arrives.
fn memchr(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    #[test]
    fn a_partial_line_gets_room_for_the_longest_line_seen() {
        let mut codec = LineCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'x'; 100_000]);
        buf.extend_from_slice(b"\n{\"a\"");
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::Line(l))) if l.len() == 100_000));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() > 100_000, "capacity {}", buf.capacity());
        assert_eq!(&buf[..], b"{\"a\"");
    }

    #[test]
    fn an_empty_buffer_gets_room_for_several_lines_of_the_longest_length() {
        let mut codec = LineCodec::new(1 << 20);
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(&[b'x'; 279]);
        buf.extend_from_slice(b"\n");
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::Line(l))) if l.len() == 279));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() > 8 * 280, "capacity {}", buf.capacity());
        // Capped at 8 KiB.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'x'; 5_000]);
        buf.extend_from_slice(b"\n");
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            (5_001..16 * 1024).contains(&buf.capacity()),
            "capacity {}",
            buf.capacity()
        );
    }

    use super::*;
    use proptest::prelude::*;

    fn run(codec: &mut LineCodec, chunks: &[&[u8]]) -> (Vec<Frame>, usize) {
        let mut buf = BytesMut::new();
        let mut out = vec![];
        let mut peak = 0;
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            peak = peak.max(buf.len());
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            peak = peak.max(buf.len());
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        (out, peak)
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_lines_and_skips_blank_ones() {
        let mut c = LineCodec::new(100);
        let (out, _) = run(&mut c, &[b"a\r\n\n  \nb", b"c\nlast"]);
        assert_eq!(out, vec![line("a"), line("bc"), line("last")]);
    }

    #[test]
    fn long_line_is_reported_once_as_soon_as_it_crosses_the_bound() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::TooLong { limit: 4 })
        );
        assert!(buf.is_empty(), "nothing of it is kept");
        buf.extend_from_slice(b"6789");
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"0\nok\n");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(line("ok")));
    }

    /// A reporting codec says "partial" once per read of a long line that brought more of it,
    /// never for a short one, not again once told to be quiet, and the line still comes whole.
    #[test]
    fn a_long_partial_line_is_reported_as_it_grows() {
        let mut c = LineCodec::reporting(1000, 10);
        let mut buf = BytesMut::from(&b"short"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"-now-long");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Frame::Partial));
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            None,
            "nothing new, nothing reported"
        );
        assert_eq!(
            &buf[..],
            b"short-now-long",
            "the line so far stays in the buffer"
        );
        buf.extend_from_slice(b"-longer");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Frame::Partial));
        buf.extend_from_slice(b"-end\nnext-line-also-long");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(line("short-now-long-longer-end"))
        );
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Frame::Partial));
        c.quiet();
        buf.extend_from_slice(b"-more");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            None,
            "quiet until this line ends"
        );
        buf.extend_from_slice(b"\nthird-line-long-again");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(line("next-line-also-long-more"))
        );
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Partial),
            "the next line is reported"
        );
        let mut plain = LineCodec::new(1000);
        let mut buf = BytesMut::from(&b"a line far longer than ten bytes"[..]);
        assert_eq!(
            plain.decode(&mut buf).unwrap(),
            None,
            "only a reporting codec reports"
        );
    }

    #[test]
    fn exactly_the_bound_passes() {
        let mut c = LineCodec::new(4);
        let (out, _) = run(&mut c, &[b"1234\n12345\nab\n"]);
        assert_eq!(
            out,
            vec![line("1234"), Frame::TooLong { limit: 4 }, line("ab")]
        );
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_frames(
            lines in prop::collection::vec("[a-z]{1,40}", 1..20),
            cut in prop::collection::vec(1usize..17, 1..50),
        ) {
            let max = 20;
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let bytes = text.as_bytes();
            let mut chunks = vec![];
            let mut at = 0;
            let mut i = 0;
            while at < bytes.len() {
                let n = cut[i % cut.len()].min(bytes.len() - at);
                chunks.push(&bytes[at..at + n]);
                at += n;
                i += 1;
            }
            let expected: Vec<Frame> = lines
                .iter()
                .map(|l| if l.len() > max { Frame::TooLong { limit: max } } else { line(l) })
                .collect();
            let mut c = LineCodec::new(max);
            let (out, peak) = run(&mut c, &chunks);
            prop_assert_eq!(out, expected);
            prop_assert!(peak <= max + 1 + 16, "buffer grew to {}", peak);
        }
    }
}
