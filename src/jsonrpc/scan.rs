//! A one-pass scanner for the JSON-RPC envelope: it validates the whole line as JSON and notes
//! where the top-level `jsonrpc`, `id`, `method`, `params`, `result` and `error` values are,
//! skipping string bodies with `memchr` instead of decoding them.
//!
//! It is the fast path of [`super::parse_one`], not a second JSON parser with its own opinions:
//! whenever a line is anything but plainly well formed (escapes in a key or method, control or
//! tab bytes, duplicate envelope keys, deep nesting, invalid syntax) it answers `None` and the
//! caller falls back to serde_json, so malformed input is classified exactly as before. What it
//! accepts, serde_json accepts with the same result (a property test checks this). No I/O here.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Nesting deeper than this goes to serde_json (which has its own recursion limit).
const MAX_DEPTH: usize = 64;

/// The envelope members found in a line, as slices of it. `None` means absent or `null`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    /// The `jsonrpc` string's contents (without quotes).
    pub jsonrpc: Option<&'a str>,
    /// The id, raw.
    pub id: Option<&'a str>,
    /// The method string's contents (without quotes).
    pub method: Option<&'a str>,
    /// The params, raw.
    pub params: Option<&'a str>,
    /// The result, raw.
    pub result: Option<&'a str>,
    /// The error, raw.
    pub error: Option<&'a str>,
    /// What [`request_meta`] finds in the params, read in the same scan when they are an
    /// object; `None` when they are not, or when that read asked for serde_json.
    pub params_meta: Option<Meta<'a>>,
}

/// Whether the bytes can be scanned without the slow checks: printable ASCII only needs no
/// UTF-8 validation and has no control characters (which JSON forbids inside strings).
fn plain(line: &[u8]) -> bool {
    // Written as a fold so that it vectorizes; one pass over the line.
    line.iter()
        .fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b))
}

/// Scans one line; `None` means "ask serde_json" (invalid, or merely unusual).
pub(crate) fn envelope(line: &[u8]) -> Option<Fields<'_>> {
    let text = if plain(line) {
        // SAFETY: `plain` has just checked that every byte is printable ASCII (0x20..0x7f),
        // and ASCII is valid UTF-8. Validating it again would be a second full pass, which
        // for a 1 MiB line was a third of the daemon's instructions.
        unsafe { std::str::from_utf8_unchecked(line) }
    } else {
        let text = std::str::from_utf8(line).ok()?;
        if line.iter().any(|&b| b < 0x20) {
            return None;
        }
        text
    };
    let mut c = Cursor {
        s: text,
        b: line,
        i: 0,
    };
    let mut f = Fields::default();
    let mut seen = [false; 6];
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if !c.eat_if(b'}') {
        loop {
            let key = c.plain_key()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            let start = c.i;
            if key == "params" && c.peek() == Some(b'{') {
                // Validated and read at once: the router needs the token, task and
                // 2026-07-28 envelope of every request's params, and a second scan of them
                // was a tenth of a modern request's instructions.
                f.params_meta = params_meta(&mut c, 2);
                if f.params_meta.is_none() {
                    c.i = start;
                    c.value(1)?;
                }
            } else {
                c.value(1)?;
            }
            let raw = &c.s[start..c.i];
            let slot = match key {
                "jsonrpc" => 0,
                "id" => 1,
                "method" => 2,
                "params" => 3,
                "result" => 4,
                "error" => 5,
                _ => usize::MAX,
            };
            if slot != usize::MAX {
                if seen[slot] {
                    return None; // serde_json reports a duplicate field
                }
                seen[slot] = true;
                let value = (raw != "null").then_some(raw);
                match slot {
                    0 => f.jsonrpc = plain_or_null(value)?,
                    1 => f.id = value,
                    2 => f.method = plain_or_null(value)?,
                    3 => f.params = value,
                    4 => f.result = value,
                    _ => f.error = value,
                }
            }
            c.ws();
            if c.eat_if(b',') {
                c.ws();
                continue;
            }
            c.eat(b'}')?;
            break;
        }
    }
    c.ws();
    (c.i == line.len()).then_some(f)
}

/// `Some(None)` for null, `Some(Some(contents))` for a string without escapes, `None` (ask
/// serde_json) for anything else.
fn plain_or_null(value: Option<&str>) -> Option<Option<&str>> {
    match value {
        None => Some(None),
        Some(raw) => plain_string(raw).map(Some),
    }
}

/// The contents of a JSON string without escapes; `None` for other values or escapes.
fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// What [`request_meta`] found (`None` from it means: ask serde_json).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta<'a> {
    /// `_meta.progressToken`, raw; `None` when absent or `null`.
    pub token: Option<&'a str>,
    /// Whether `task` is set (not `null`).
    pub task: bool,
    /// The `_meta` object, raw, when it is one.
    pub meta: Option<&'a str>,
    /// `_meta`'s 2026-07-28 envelope members, raw: protocol version, client capabilities, log
    /// level (of one written twice, the last, as serde_json reads it).
    pub envelope: [Option<&'a str>; 3],
    /// Whether `_meta` has a member that a handshake-era child gets besides a progress token:
    /// one not named `io.modelcontextprotocol/*`, or a `null` token.
    pub foreign: bool,
}

/// `params._meta.progressToken` and whether `params.task` is set, from params that were
/// already validated by [`envelope`] or serde_json. `None` means "ask serde_json" (escaped or
/// duplicate keys, a `_meta` that is not an object).
pub(crate) fn request_meta(params: &str) -> Option<Meta<'_>> {
    let mut c = Cursor {
        s: params,
        b: params.as_bytes(),
        i: 0,
    };
    params_meta(&mut c, 1)
}

/// [`request_meta`] of the object at the cursor, its members' values `depth` deep: the one
/// scan that both validates a request's params (for [`envelope`]) and reads them. `None` as
/// in [`request_meta`]; the cursor is then anywhere.
fn params_meta<'a>(c: &mut Cursor<'a>, depth: usize) -> Option<Meta<'a>> {
    let mut token = None;
    let mut task = false;
    let mut meta = None;
    let mut envelope = [None; 3];
    let mut foreign = false;
    let (mut seen_meta, mut seen_task) = (false, false);
    c.members(|c, key| {
        match key {
            "_meta" => {
                if std::mem::replace(&mut seen_meta, true) {
                    return None;
                }
                if c.peek()? == b'{' {
                    let mut seen_token = false;
                    let start = c.i;
                    c.members(|c, key| {
                        let start = c.i;
                        c.value(depth + 1)?;
                        let raw = &c.s[start..c.i];
                        if key == "progressToken" {
                            if std::mem::replace(&mut seen_token, true) {
                                return None;
                            }
                            token = (raw != "null").then_some(raw);
                            foreign |= token.is_none();
                        } else if let Some(name) = key.strip_prefix(super::era::PREFIX) {
                            match name {
                                "protocolVersion" => envelope[0] = Some(raw),
                                "clientCapabilities" => envelope[1] = Some(raw),
                                "logLevel" => envelope[2] = Some(raw),
                                _ => {}
                            }
                        } else {
                            foreign = true;
                        }
                        Some(())
                    })?;
                    meta = Some(&c.s[start..c.i]);
                    return Some(());
                }
                let start = c.i;
                c.value(depth)?;
                // `"_meta": null` is no meta; anything else fails serde_json's typed parse.
                (&c.s[start..c.i] == "null").then_some(())
            }
            "task" => {
                if std::mem::replace(&mut seen_task, true) {
                    return None;
                }
                let start = c.i;
                c.value(depth)?;
                task = &c.s[start..c.i] != "null";
                Some(())
            }
            _ => c.value(depth),
        }
    })?;
    Some(Meta {
        token,
        task,
        meta,
        envelope,
        foreign,
    })
}

/// Visits each member of the JSON object `obj` (a [`super::Raw`] value, so already valid
/// JSON) in the order written: its name, where the member starts in `obj` (its name's opening
/// quote) and where its value is. `None` means "ask serde_json", as everywhere in this scanner
/// (an escaped name, which only serde_json decodes, deep nesting, or `visit` giving up).
/// What the envelope's `_meta` and a capabilities object are read with: no map is built and
/// nothing is allocated.
pub(crate) fn each_member<'a>(
    obj: &'a str,
    mut visit: impl FnMut(&'a str, usize, std::ops::Range<usize>) -> Option<()>,
) -> Option<()> {
    let mut c = Cursor {
        s: obj,
        b: obj.as_bytes(),
        i: 0,
    };
    c.members(|c, key| {
        // The name is a slice of `obj` right after its opening quote.
        let member = (key.as_ptr() as usize - obj.as_ptr() as usize).checked_sub(1)?;
        let start = c.i;
        c.value(1)?;
        visit(key, member, start..c.i)
    })?;
    c.ws();
    (c.i == obj.len()).then_some(())
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        self.i = ws(self.b, self.i);
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.eat_if(b).then_some(())
    }

    fn eat_if(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Visits each member of the object at the cursor; `visit` must consume the value.
    fn members(&mut self, mut visit: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.ws();
        self.eat(b'{')?;
        self.ws();
        if self.eat_if(b'}') {
            return Some(());
        }
        loop {
            let key = self.plain_key()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            visit(self, key)?;
            self.ws();
            if self.eat_if(b',') {
                self.ws();
                continue;
            }
            return self.eat(b'}');
        }
    }

    /// A member name without escapes (escaped names go to serde_json, which decodes them).
    fn plain_key(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = quote_or_escape(self.b, start)?;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        Some(&self.s[start..end])
    }

    /// Skips one value at nesting `depth`, checking its syntax.
    fn value(&mut self, depth: usize) -> Option<()> {
        self.i = skip_value(self.b, self.i, depth)?;
        Some(())
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = b.get(i) {
        i += 1;
    }
    i
}

/// Skips the value starting at `i` (nested `depth` deep) and returns where it ends.
///
/// One loop with an explicit stack instead of a call per value: the envelopes are mostly
/// small tokens, where calls and their `Option` plumbing cost more than the bytes. Bit `k` of
/// `objects` says whether the container `k + 1` levels in is an object (else an array).
fn skip_value(b: &[u8], mut i: usize, depth: usize) -> Option<usize> {
    let mut objects: u64 = 0;
    let mut open = 0usize;
    loop {
        // A value starts at `i`.
        match *b.get(i)? {
            b'"' => i = string_end(b, i + 1)?,
            c @ (b'{' | b'[') => {
                if depth + open > MAX_DEPTH {
                    return None;
                }
                let close = if c == b'{' { b'}' } else { b']' };
                i = ws(b, i + 1);
                if b.get(i) == Some(&close) {
                    i += 1;
                } else {
                    if c == b'{' {
                        objects |= 1 << open;
                        i = member_value(b, i)?;
                    } else {
                        objects &= !(1 << open);
                    }
                    open += 1;
                    continue;
                }
            }
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number(b, i)?,
            _ => return None,
        }
        // A value ended at `i`: close containers until the next element starts.
        loop {
            if open == 0 {
                return Some(i);
            }
            i = ws(b, i);
            let object = objects >> (open - 1) & 1 == 1;
            match b.get(i)? {
                b',' => {
                    i = ws(b, i + 1);
                    if object {
                        i = member_value(b, i)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            open -= 1;
            i += 1;
        }
    }
}

/// Skips a member name and its colon at `i`; returns where the member's value starts.
#[inline(always)]
fn member_value(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = ws(b, string_end(b, i + 1)?);
    if b.get(i) != Some(&b':') {
        return None;
    }
    Some(ws(b, i + 1))
}

/// Where the next `"` or `\\` is at or after `from`: eight bytes at a time for the short keys,
/// ids and methods of an envelope and the 40-odd-byte names of a 2026-07-28 one, memchr once a
/// string turns out to be over 64 bytes long (its set-up costs more than it saves on fewer).
#[inline(always)]
pub(crate) fn quote_or_escape(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// The high bit set in exactly the bytes of `w` that equal `c` (no false positives: the
    /// additions cannot carry from one byte into the next).
    fn bytes_equal(w: u64, c: u8) -> u64 {
        let x = w ^ (ONES * u64::from(c));
        !(((x & LOW) + LOW) | x) & HIGH
    }
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let hits = bytes_equal(w, b'"') | bytes_equal(w, b'\\');
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
        if i - from >= 64 {
            return memchr::memchr2(b'"', b'\\', &b[i..]).map(|k| i + k);
        }
    }
    let rest = b.get(i..)?;
    rest.iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|k| i + k)
}

/// The end of a string whose body starts at `i` (after its opening quote); escapes are
/// checked (control characters were ruled out for the whole line before scanning).
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let at = quote_or_escape(b, i)?;
        if b[at] == b'"' {
            return Some(at + 1);
        }
        match *b.get(at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i = at + 2,
            b'u' => {
                let hex = b.get(at + 2..at + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                i = at + 6;
            }
            _ => return None,
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        if !b.get(i + 1)?.is_ascii_digit() {
            return None;
        }
        i = digits(i + 1);
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        if !b.get(i)?.is_ascii_digit() {
            return None;
        }
        i = digits(i);
    }
    // A number runs into nothing but a delimiter (`01` and `1x` are errors).
    match b.get(i) {
        None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') => Some(i),
        _ => None,
    }
}

/// The id of an answer whose id comes before its payload (`{"jsonrpc":"2.0","id":7,"result":`,
/// in either order of the first two), and where that id is in `head`, which may be only the
/// start of a line: what is needed to pass a long answer on while it is still arriving. `None`
/// for anything else (another shape, escapes, a key other than these, an id that is not a
/// plain integer); the whole line is still checked once it is complete.
pub(crate) fn answer_head(head: &[u8]) -> Option<(u64, std::ops::Range<usize>)> {
    let mut i = ws(head, 0);
    if head.get(i) != Some(&b'{') {
        return None;
    }
    let mut id = None;
    let mut jsonrpc = false;
    loop {
        i = ws(head, i + 1);
        if head.get(i) != Some(&b'"') {
            return None;
        }
        let end = quote_or_escape(head, i + 1)?;
        if head[end] != b'"' {
            return None;
        }
        let key = &head[i + 1..end];
        i = ws(head, end + 1);
        if head.get(i) != Some(&b':') {
            return None;
        }
        i = ws(head, i + 1);
        match key {
            b"jsonrpc" if !jsonrpc => {
                if head.get(i..i + 5)? != b"\"2.0\"" {
                    return None;
                }
                jsonrpc = true;
                i += 5;
            }
            b"id" if id.is_none() => {
                let digits = head[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let raw = &head[i..i + digits];
                if digits == 0 || (digits > 1 && raw[0] == b'0') {
                    return None;
                }
                let n: u64 = std::str::from_utf8(raw).ok()?.parse().ok()?;
                id = Some((n, i..i + digits));
                i += digits;
            }
            b"result" | b"error" => return id,
            _ => return None,
        }
        i = ws(head, i);
        if head.get(i) != Some(&b',') {
            return None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    #[test]
    fn answer_head_finds_an_id_before_the_payload() {
        let line = br#"{"id":42,"jsonrpc":"2.0","result":{"content":[{"text":"xx"#;
        let (id, span) = answer_head(line).unwrap();
        assert_eq!(id, 42);
        assert_eq!(&line[span], b"42");
        let line = br#" { "jsonrpc" : "2.0" , "id" : 7 , "error":{"code":1"#;
        let (id, span) = answer_head(line).unwrap();
        assert_eq!((id, &line[span]), (7, &b"7"[..]));
        let line = br#"{"jsonrpc":"2.0","id":0,"result":"#;
        assert_eq!(answer_head(line).map(|a| a.0), Some(0));
    }

    #[test]
    fn answer_head_refuses_every_other_shape() {
        for head in [
            // The TypeScript SDK's order: the id comes after the payload.
            &br#"{"result":{"content":[]},"jsonrpc":"2.0","id":3}"#[..],
            br#"{"jsonrpc":"2.0","result":{}"#,
            br#"{"id":"abc","result":{}"#,
            br#"{"id":07,"result":{}"#,
            br#"{"id":-1,"result":{}"#,
            br#"{"id":1.5,"result":{}"#,
            br#"{"id":99999999999999999999,"result":{}"#,
            br#"{"id":1,"id":2,"result":{}"#,
            br#"{"id":1,"method":"x","params":{}"#,
            br#"{"i\u0064":1,"result":{}"#,
            br#"{"jsonrpc":"1.0","id":1,"result":{}"#,
            br#"{"id":1 "result":{}"#,
            br#"[{"id":1,"result":{}"#,
            br#"{"id":1,"#,
            b"",
        ] {
            assert_eq!(answer_head(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    use super::*;

    #[test]
    fn finds_the_members() {
        let f = envelope(br#" {"jsonrpc":"2.0","id":"a\"b","method":"x/y","params":{"k":[1,2.5e3,-0,true,null]}} "#)
            .unwrap();
        assert_eq!(f.jsonrpc, Some("2.0"));
        assert_eq!(f.id, Some(r#""a\"b""#));
        assert_eq!(f.method, Some("x/y"));
        assert_eq!(f.params, Some(r#"{"k":[1,2.5e3,-0,true,null]}"#));
        assert_eq!(f.result, None);
    }

    #[test]
    fn unusual_or_invalid_lines_are_left_to_serde() {
        for line in [
            &br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#[..],
            br#"{"jsonrpc":"2.0","i\u0064":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":01,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x",}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x"} x"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"a\u00"}"#,
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\tb\"}",
            br#"{"jsonrpc":"2.0","id":1,"method":"x""#,
            br#"[1]"#,
        ] {
            assert_eq!(envelope(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn strings_end_at_the_right_quote_at_every_offset() {
        // Around the eight-byte words and the switch to memchr after 64 bytes.
        for len in 0..144 {
            for at in 0..=len {
                let mut body = "a".repeat(len);
                body.insert_str(at, r#"\""#);
                let line = format!(r#"{{"jsonrpc":"2.0","id":"{body}","method":"m"}}"#);
                let f = envelope(line.as_bytes()).unwrap();
                assert_eq!(f.id, Some(&*format!("\"{body}\"")), "{line}");
                assert_eq!(f.method, Some("m"));
            }
        }
        assert_eq!(envelope(br#"{"jsonrpc":"2.0","id":"aaaaaaaaaaaa\"}"#), None);
    }

    #[test]
    fn nesting_is_scanned_to_the_limit_then_left_to_serde() {
        let line = |n: usize| {
            let (open, close) = (
                "[{\"k\":".repeat(n / 2) + &"[".repeat(n % 2),
                "]".repeat(n % 2) + &"}]".repeat(n / 2),
            );
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{open}1{close}}}"#)
        };
        for n in [1, 2, 63, 64] {
            assert!(envelope(line(n).as_bytes()).is_some(), "{n} levels");
        }
        assert_eq!(envelope(line(65).as_bytes()), None);
        // Brackets that do not pair up.
        assert_eq!(
            envelope(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":[{"k":1]}}"#),
            None
        );
        assert_eq!(
            envelope(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"k":1,}}"#),
            None
        );
        assert_eq!(
            envelope(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"k"}}"#),
            None
        );
    }

    #[test]
    fn request_meta_reads_token_and_task() {
        assert_eq!(
            request_meta(r#"{"a":{"b":[]},"_meta":{"x":1,"progressToken":"t"},"task":{}}"#),
            Some(Meta {
                token: Some(r#""t""#),
                task: true,
                meta: Some(r#"{"x":1,"progressToken":"t"}"#),
                envelope: [None; 3],
                foreign: true,
            })
        );
        assert_eq!(
            request_meta(r#"{"_meta":null,"task":null}"#),
            Some(Meta::default())
        );
        assert_eq!(request_meta(r#"{"_meta":5}"#), None);
        assert_eq!(request_meta(r#"{"task":1,"task":2}"#), None);
    }
}
