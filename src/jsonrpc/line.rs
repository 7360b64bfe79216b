//! An outgoing line as the shared buffers it is made of: a line that was passed on unchanged
//! is one buffer, a large line with a new id or token spliced in is the original's bytes
//! around each edit with the new bytes between them, so a 1 MiB result is never copied to
//! rewrite its id (the writer hands the pieces to one `writev`).
//!
//! Pure data: it owns no socket and does no I/O.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Below this size a rewritten line is copied into one buffer: the copy costs less than
/// tracking pieces, and small lines (nearly all of them) stay one buffer each.
pub const SHARE_MIN: usize = 16 * 1024;

/// One message to write, without its newline.
#[derive(Clone, Default)]
pub struct Line(Parts);

#[derive(Clone)]
enum Parts {
    One(Bytes),
    /// Never empty, and no piece is empty.
    Many(Vec<Bytes>),
    /// Part of a line that is still arriving (a long answer passed on as it comes): written
    /// without a newline, the rest of the line follows.
    Piece(Bytes),
}

impl Default for Parts {
    fn default() -> Self {
        Parts::One(Bytes::new())
    }
}

impl Line {
    /// The buffers that make up the line, in order.
    pub fn parts(&self) -> &[Bytes] {
        match &self.0 {
            Parts::One(b) | Parts::Piece(b) => std::slice::from_ref(b),
            Parts::Many(v) => v,
        }
    }

    /// The line's length in bytes.
    pub fn len(&self) -> usize {
        match &self.0 {
            Parts::One(b) | Parts::Piece(b) => b.len(),
            Parts::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    /// Part of a line still arriving: written as it is, with no newline after it.
    pub fn piece(bytes: Bytes) -> Line {
        Line(Parts::Piece(bytes))
    }

    /// Whether a newline follows it (every line except a [`Line::piece`]).
    pub fn ends_line(&self) -> bool {
        !matches!(self.0, Parts::Piece(_))
    }

    /// The bytes it takes on the wire: the line and its newline.
    pub fn wire_len(&self) -> usize {
        self.len() + usize::from(self.ends_line())
    }

    /// Whether the line has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The line as one buffer (a copy only when it is made of pieces).
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Parts::One(b) | Parts::Piece(b) => b.clone(),
            Parts::Many(v) => {
                let mut out = BytesMut::with_capacity(self.len());
                for p in v {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// Drops the first `n` bytes (what a partial write took); all of it when `n` is longer.
    pub fn advance(&mut self, n: usize) {
        match &mut self.0 {
            Parts::One(b) | Parts::Piece(b) => *b = b.slice(n.min(b.len())..),
            Parts::Many(v) => {
                let mut n = n;
                let whole = v
                    .iter()
                    .take_while(|p| {
                        let drop = p.len() <= n;
                        if drop {
                            n -= p.len();
                        }
                        drop
                    })
                    .count();
                v.drain(..whole);
                match v.first_mut() {
                    Some(first) => *first = first.slice(n..),
                    None => self.0 = Parts::One(Bytes::new()),
                }
            }
        }
    }

    /// `line` passed on unchanged: shared when it is large, copied when it is small (so a
    /// small line waiting in a queue does not keep its whole read buffer alive).
    pub fn share(line: &Bytes) -> Line {
        if line.len() < SHARE_MIN {
            Line::from(Bytes::copy_from_slice(line))
        } else {
            Line::from(line.clone())
        }
    }

    /// `line` with each range replaced by its bytes (ranges must not overlap). A line of
    /// [`SHARE_MIN`] bytes or more keeps sharing the original's buffer; a shorter one is
    /// copied once.
    ///
    /// # Panics
    /// A range outside the line (a programming error: ranges come from [`super::span_in`]).
    pub fn splice(line: &Bytes, edits: &mut [(Range<usize>, &[u8])]) -> Line {
        if line.len() < SHARE_MIN {
            return Line::from(super::splice(line, edits));
        }
        edits.sort_by_key(|(r, _)| r.start);
        let mut parts = Vec::with_capacity(2 * edits.len() + 1);
        let mut at = 0;
        for (range, bytes) in edits.iter() {
            parts.push(line.slice(at..range.start));
            parts.push(Bytes::copy_from_slice(bytes));
            at = range.end;
        }
        parts.push(line.slice(at..));
        parts.retain(|p| !p.is_empty());
        if parts.is_empty() {
            return Line::default();
        }
        Line(Parts::Many(parts))
    }
}

impl From<Bytes> for Line {
    fn from(b: Bytes) -> Line {
        Line(Parts::One(b))
    }
}

impl PartialEq for Line {
    fn eq(&self, other: &Line) -> bool {
        match (&self.0, &other.0) {
            (Parts::One(a), Parts::One(b)) => a == b,
            _ => {
                self.ends_line() == other.ends_line()
                    && self.len() == other.len()
                    && self.to_bytes() == other.to_bytes()
            }
        }
    }
}

impl Eq for Line {}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(id: &str, token: &str) -> Bytes {
        let pad = "x".repeat(SHARE_MIN);
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"params":{{"_meta":{{"progressToken":{token}}},"pad":"{pad}"}}}}"#
        ))
    }

    #[test]
    fn a_large_line_is_rewritten_without_copying_its_payload() {
        let line = big("7", "\"tok\"");
        let text = std::str::from_utf8(&line).unwrap();
        let id = text.find("7").unwrap();
        let tok = text.find("\"tok\"").unwrap();
        // Edits out of order, as the router may give them.
        let out = Line::splice(
            &line,
            &mut [(tok..tok + 5, &b"12"[..]), (id..id + 1, &b"12"[..])],
        );
        assert_eq!(
            out.to_bytes(),
            Bytes::from(text.replace("7", "12").replace("\"tok\"", "12"))
        );
        assert_eq!(out.parts().len(), 5);
        let payload = out.parts().last().unwrap();
        let base = line.as_ptr() as usize;
        let at = payload.as_ptr() as usize;
        assert!(
            at >= base && at < base + line.len(),
            "the payload is a slice of the original buffer"
        );
    }

    #[test]
    fn a_small_line_is_one_buffer() {
        let line = Bytes::from_static(br#"{"id":7}"#);
        let out = Line::splice(&line, &mut [(6..7, &b"\"a\""[..])]);
        assert_eq!(out.parts().len(), 1);
        assert_eq!(out, Line::from(Bytes::from_static(br#"{"id":"a"}"#)));
    }

    #[test]
    fn advance_drops_whole_pieces_and_cuts_the_next() {
        let line = big("7", "1");
        let text = std::str::from_utf8(&line).unwrap();
        let id = text.find("7").unwrap();
        let mut out = Line::splice(&line, &mut [(id..id + 1, &b"99"[..])]);
        let full = out.to_bytes();
        for step in [1, id - 1, 1, 1, 1000, usize::MAX] {
            let before = out.to_bytes();
            out.advance(step);
            let n = step.min(before.len());
            assert_eq!(out.to_bytes(), before.slice(n..));
        }
        assert!(out.is_empty());
        assert!(full.len() > SHARE_MIN);
    }
}
