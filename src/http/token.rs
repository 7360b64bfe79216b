//! The HTTP front's bearer token: 32 random bytes as hex, made on first use and kept in a 0600
//! file in the user's state folder, so that hosts configured once keep working across
//! restarts and only this user can read it. Status shows the file, never the token.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The token file: `http-token` in the state folder (see
/// [`crate::daemon::lifecycle::state_dir`]).
///
/// # Errors
/// No home folder to find the state folder in.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(crate::daemon::lifecycle::state_dir()?.join("http-token"))
}

/// Reads the token from `path`, or makes one and writes it there (0600, in a 0700 folder)
/// when the file does not exist. A file others can read is made private again.
///
/// # Errors
/// The file cannot be read or created, or holds no token.
pub fn load_or_create(path: &Path) -> anyhow::Result<String> {
    if let Some(dir) = path.parent() {
        crate::daemon::lifecycle::private_dir(dir)?;
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut f) => {
            let token = random_hex(32)?;
            f.write_all(token.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} private", path.display()))?;
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let token = text.trim();
            anyhow::ensure!(
                token.len() >= 32 && token.bytes().all(|b| b.is_ascii_graphic()),
                "{} holds no usable token; delete it to have a new one made",
                path.display()
            );
            Ok(token.to_owned())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// `n` random bytes from the system as lowercase hex.
///
/// # Errors
/// `/dev/urandom` cannot be read.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/http-token");
        let t = load_or_create(&path).unwrap();
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), t);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), t);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(random_hex(16).unwrap(), random_hex(16).unwrap());
    }
}
