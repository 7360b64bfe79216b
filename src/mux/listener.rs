//! Binding a socket safely: a private folder (0700), a private socket (0600), a stale socket
//! replaced, a live one never stolen, a user's file never deleted; and the peer check that
//! keeps other users out.
//!
//! It does not accept or serve connections; the actor and the control server do.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// A live process answers on the path: another daemon is serving it.
    #[error("socket {} is already served by a running rmcp-mux (another daemon?)", .0.display())]
    InUse(PathBuf),
    /// Something that is not a socket is in the way; it is left untouched.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// The folder or socket could not be created or secured.
    #[error("cannot bind socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound socket that remembers which file is its own.
pub struct BoundSocket {
    /// The listener to accept from.
    pub listener: tokio::net::UnixListener,
    /// Where it is bound.
    pub path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl BoundSocket {
    /// Removes the socket file, but only if it is still ours (same device and inode), so a
    /// newer daemon's socket at the same path is never deleted.
    pub fn unlink(&self) {
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else {
            return;
        };
        if Some((meta.dev(), meta.ino())) == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Binds `path`; see the module docs for the rules. Must be called within a tokio runtime.
///
/// # Errors
/// [`ListenerError::InUse`] for a live socket, [`ListenerError::NotASocket`] for another kind
/// of file, [`ListenerError::Io`] for everything else.
pub fn bind(path: &Path) -> Result<BoundSocket, ListenerError> {
    let io = |source| ListenerError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
        let meta = std::fs::metadata(dir).map_err(io)?;
        if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ListenerError::NotASocket(path.to_owned()))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ListenerError::InUse(path.to_owned())),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                tracing::info!(path = %path.display(), "replacing a stale socket");
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
        identity,
    })
}

/// Whether the peer runs as the same user as this process. Errors count as "no".
pub fn peer_is_owner(stream: &tokio::net::UnixStream) -> bool {
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn folder_and_socket_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/s.sock");
        let s = bind(&path).unwrap();
        assert_eq!(mode(&dir.path().join("new/dir")), 0o700);
        assert_eq!(mode(&path), 0o600);
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (server, _) = s.listener.accept().await.unwrap();
        assert!(peer_is_owner(&server));
        drop(client);
        drop(s);
        assert!(!path.exists(), "removed on drop");
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&path).unwrap();
        match bind(&path) {
            Err(ListenerError::InUse(p)) => assert_eq!(p, path),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a live socket was stolen"),
        }
        assert!(path.exists());
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(live);
    }

    #[tokio::test]
    async fn a_regular_file_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "keep me").unwrap();
        let Err(e) = bind(&path) else {
            panic!("bound over a file")
        };
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn unlink_spares_a_newer_socket_at_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let old = bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let newer = std::os::unix::net::UnixListener::bind(&path).unwrap();
        old.unlink();
        assert!(path.exists(), "the newer socket must survive");
        drop(newer);
    }
}
