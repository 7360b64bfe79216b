//! Line framing: any bytes, cut into any chunks, decode to the frames of a plain split on
//! newlines (a line over the bound reported once as too long, blank lines skipped), and the
//! buffer never keeps more than the bound between reads.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rmcp_mux::jsonrpc::framing::{Frame, LineCodec};
use tokio_util::codec::Decoder;

#[derive(Arbitrary, Debug)]
struct Case {
    max: u8,
    report_at: Option<u8>,
    cuts: Vec<u8>,
    quiet_every: u8,
    data: Vec<u8>,
}

/// What the codec must give: split on `\n`, trailing `\r`/space/tab trimmed, whitespace-only
/// lines skipped, a line (untrimmed) over `max` bytes reported as too long.
fn expected(data: &[u8], max: usize) -> Vec<Frame> {
    let mut out = vec![];
    let mut parts: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    // The text after the last newline is a line at EOF (empty when the data ends in one).
    let last = parts.pop().unwrap_or_default();
    for p in parts.iter().chain(std::iter::once(&last)) {
        if p.len() > max {
            out.push(Frame::TooLong { limit: max });
            continue;
        }
        let mut end = p.len();
        while end > 0 && matches!(p[end - 1], b'\r' | b' ' | b'\t') {
            end -= 1;
        }
        let line = &p[..end];
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        out.push(Frame::Line(Bytes::copy_from_slice(line)));
    }
    out
}

fuzz_target!(|case: Case| {
    let max = usize::from(case.max) + 1;
    let mut codec = match case.report_at {
        Some(at) => LineCodec::reporting(max, usize::from(at) + 1),
        None => LineCodec::new(max),
    };
    let mut buf = BytesMut::new();
    let mut frames = vec![];
    let mut at = 0;
    let mut i = 0;
    while at < case.data.len() {
        let cut = case
            .cuts
            .get(i % case.cuts.len().max(1))
            .copied()
            .unwrap_or(7);
        let n = (usize::from(cut) + 1).min(case.data.len() - at);
        buf.extend_from_slice(&case.data[at..at + n]);
        at += n;
        i += 1;
        while let Some(f) = codec.decode(&mut buf).expect("decode never fails") {
            match &f {
                Frame::Line(l) => {
                    assert!(l.len() <= max, "a line over the bound came through");
                    assert!(!l.contains(&b'\n'));
                }
                Frame::Partial => {
                    assert!(case.report_at.is_some(), "only a reporting codec reports");
                    assert!(!buf.contains(&b'\n'), "a partial line holds no newline");
                    if case.quiet_every > 0 && i % usize::from(case.quiet_every) == 0 {
                        codec.quiet();
                    }
                }
                Frame::TooLong { limit } => assert_eq!(*limit, max),
            }
            frames.push(f);
        }
        assert!(
            buf.len() <= max,
            "the buffer holds {} bytes with a bound of {max}",
            buf.len()
        );
    }
    while let Some(f) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        frames.push(f);
    }
    frames.retain(|f| *f != Frame::Partial);
    assert_eq!(frames, expected(&case.data, max));
});
