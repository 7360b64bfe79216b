//! The project a client works in, as the proxy tells it: the one line it sends first on every
//! connection, how the daemon recognises it, and which folders count as no project at all.
//!
//! The line is a JSON-RPC notification, so a daemon or server that does not know it treats it
//! as any unknown notification; the router swallows it. This module does no I/O.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};

/// The notification the proxy sends first: `params.dir` is its working folder.
pub const PROJECT: &str = "rmcp-mux/project";

/// How every project line starts (the proxy writes exactly this), so that the daemon can tell
/// from the first bytes of a connection whether one is coming without reading past it.
pub const PREFIX: &[u8] = br#"{"jsonrpc":"2.0","method":"rmcp-mux/project","params":{"dir":"#;

/// The longest project line the daemon waits for; a longer first line is not one.
pub const MAX_LINE: usize = 8192;

/// The project line for `dir` (no newline).
pub fn line(dir: &Path) -> Vec<u8> {
    let mut out = PREFIX.to_vec();
    let dir = serde_json::Value::from(dir.to_string_lossy().into_owned());
    out.extend_from_slice(dir.to_string().as_bytes());
    out.extend_from_slice(b"}}");
    out
}

/// What the first bytes of a connection say about a project line.
#[derive(Debug, PartialEq, Eq)]
pub enum First {
    /// Too few bytes yet to tell.
    NeedMore,
    /// The connection does not start with a project line (a plain client).
    NotProject,
    /// A project line of `len` bytes with its newline, naming this folder (`None`: no usable
    /// folder, the "no project" instance).
    Project {
        /// Bytes to consume, newline included.
        len: usize,
        /// The folder, when it names a project.
        dir: Option<PathBuf>,
    },
}

/// Reads the start of a connection (`peeked`, possibly partial) against the project line.
pub fn first(peeked: &[u8], home: &Path) -> First {
    let n = peeked.len().min(PREFIX.len());
    if peeked[..n] != PREFIX[..n] {
        return First::NotProject;
    }
    let Some(end) = memchr::memchr(b'\n', peeked) else {
        return if peeked.len() >= MAX_LINE {
            First::NotProject
        } else {
            First::NeedMore
        };
    };
    #[derive(serde::Deserialize)]
    struct Params {
        dir: String,
    }
    #[derive(serde::Deserialize)]
    struct Note {
        params: Params,
    }
    let dir = serde_json::from_slice::<Note>(&peeked[..end])
        .ok()
        .map(|n| PathBuf::from(n.params.dir));
    First::Project {
        len: end + 1,
        dir: dir.and_then(|d| named(&d, home)),
    }
}

/// `dir` as a project, or `None` where a host starts servers outside any project: a relative
/// path, `/`, or the home folder (Claude Desktop starts its servers in one of those).
pub fn named(dir: &Path, home: &Path) -> Option<PathBuf> {
    (dir.is_absolute() && dir != Path::new("/") && dir != home).then(|| dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_recognised_from_its_first_bytes_and_root_and_home_are_no_project() {
        let home = Path::new("/home/me");
        let mut l = line(Path::new("/src/a \"b\""));
        l.push(b'\n');
        l.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":1}\n");
        let len = l.iter().position(|b| *b == b'\n').unwrap() + 1;
        assert_eq!(
            first(&l, home),
            First::Project {
                len,
                dir: Some(PathBuf::from("/src/a \"b\""))
            }
        );
        assert_eq!(first(&l[..10], home), First::NeedMore);
        assert_eq!(first(&l[..len - 1], home), First::NeedMore);
        assert_eq!(
            first(b"{\"jsonrpc\":\"2.0\",\"id\":1", home),
            First::NotProject
        );
        assert_eq!(first(b"{\"id\":1}\n", home), First::NotProject);
        for none in ["/", "/home/me", "relative"] {
            let mut l = line(Path::new(none));
            l.push(b'\n');
            assert!(
                matches!(first(&l, home), First::Project { dir: None, .. }),
                "{none}"
            );
        }
        let mut long = PREFIX.to_vec();
        long.resize(MAX_LINE, b'x');
        assert_eq!(first(&long, home), First::NotProject);
    }
}
