//! Replacing a small file whole and atomically: host configs, `mux.toml` on import, status files
//! and the PID file. A reader (a host, a status bar, `rmcp-mux daemon stop`) sees the old file
//! or the new one, never half of one, and a crash in between leaves the old file as it was.
//!
//! It knows nothing of what the files hold; callers choose the path (following symlinks is
//! theirs to decide) and the permissions.

use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path` (created 0600, so nothing is ever readable by
/// others even for a moment), gives it `mode`, syncs it, renames it over `path` and syncs the
/// folder. The folder must exist.
///
/// # Errors
/// Any I/O error; `path` is untouched and the temporary file removed then.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rmcp-mux-{}.tmp", std::process::id()));
    // A leftover of a crashed write may have other permissions: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if mode != 0o600 {
            f.set_permissions(Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Makes the rename itself durable; a folder that cannot be opened is not an error.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_whole_with_the_given_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, "old").unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        replace(&path, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
        assert_ne!(meta.ino(), before, "renamed over, not written in place");
        replace(&path, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("f");
        assert!(replace(&path, b"x", 0o600).is_err());
        assert!(!path.exists());
    }
}
