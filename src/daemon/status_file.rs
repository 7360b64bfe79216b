//! The `status_file` snapshots: `[daemon] status_file` gets the whole [`DaemonStatus`] as JSON,
//! a server's `status_file` that server's [`ServerReport`]. Each is rewritten atomically (a
//! temporary file in the same folder, 0600, renamed over the old one), so a reader never sees
//! half a file.
//!
//! What counts as a change: a server's state, pid, client count, restart count, last exit,
//! socket or limit; a server added or removed; the config error set or cleared; the file's
//! path itself. Not a change: the pending-request count and the uptimes, which move with
//! every request and every second; they are written as they are when something else changes.
//! Writes are coalesced to at most one per [`MIN_INTERVAL`]. At shutdown every file is
//! written one last time with the servers' final state (`stopped`, no pid), and a server
//! removed by a reload leaves its file in that final state too: a reader can tell "stopped"
//! from "never ran". It only reads snapshots; it never talks to an actor.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::daemon::{DaemonStatus, ServerReport, Shared};
use crate::mux::actor::{ServerHandle, ServerStatus};

/// At most one round of writes per this interval, however fast the state changes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How soon a status file that could not be written is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Writes `bytes` to `path` atomically: a private temporary file beside it, renamed over it.
/// Missing folders are created 0700; existing ones are left as they are.
///
/// # Errors
/// The folder cannot be created or written, or the rename fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut text = Vec::with_capacity(bytes.len() + 1);
    text.extend_from_slice(bytes);
    text.push(b'\n');
    crate::io::atomic_file::replace(path, &text, 0o600)
}

/// A server's status with what is not a change (pending requests, cache hits) left out.
fn server_key(s: &ServerStatus) -> ServerStatus {
    ServerStatus {
        pending: 0,
        cache_hits: 0,
        instances: s
            .instances
            .iter()
            .map(|i| crate::mux::actor::InstanceStatus {
                status: server_key(&i.status),
                ..i.clone()
            })
            .collect(),
        ..s.clone()
    }
}

/// A report with what is not a change (pending requests, uptime, cache hits) left out.
fn report_key(r: &ServerReport) -> ServerReport {
    ServerReport {
        pending: 0,
        cache_hits: 0,
        uptime_ms: r.uptime_ms.map(|_| 0),
        // A countdown, like the uptime: entering or leaving backoff is the change.
        restart_in_ms: r.restart_in_ms.map(|_| 0),
        // Memory moves all the time: not a change either.
        rss_bytes: None,
        instances: r
            .instances
            .iter()
            .map(|i| crate::daemon::InstanceReport {
                pending: 0,
                uptime_ms: i.uptime_ms.map(|_| 0),
                rss_bytes: None,
                ..i.clone()
            })
            .collect(),
        ..r.clone()
    }
}

fn daemon_key(s: &DaemonStatus) -> DaemonStatus {
    DaemonStatus {
        uptime_ms: 0,
        servers: s.servers.iter().map(report_key).collect(),
        rss_bytes: None,
        total_rss_bytes: None,
        saved_bytes: None,
        ..s.clone()
    }
}

/// One file and what was last written to it (its change key).
struct Target<K> {
    path: PathBuf,
    last: Option<K>,
    failing: bool,
}

impl<K: PartialEq> Target<K> {
    fn new(path: PathBuf) -> Self {
        Target {
            path,
            last: None,
            failing: false,
        }
    }

    /// Writes `json` when `key` differs from the last one written, when the last write
    /// failed, or when `force`.
    fn write(&mut self, key: K, json: impl FnOnce() -> Vec<u8>, force: bool) {
        if !force && !self.failing && self.last.as_ref() == Some(&key) {
            return;
        }
        match write_atomic(&self.path, &json()) {
            Ok(()) => {
                if self.failing {
                    info!(path = %self.path.display(), "status file written again");
                }
                self.failing = false;
                self.last = Some(key);
            }
            Err(e) => {
                // Once per failing spell, not on every change.
                if !self.failing {
                    warn!(path = %self.path.display(), error = %e, "cannot write the status file");
                }
                self.failing = true;
            }
        }
    }
}

/// A server the writer follows: its handle, and its own file when it has one.
struct Followed {
    handle: ServerHandle,
    file: Option<Target<ServerReport>>,
    /// Whether a task wakes the writer on this server's changes (only needed while some file
    /// shows it, so that servers without one cost nothing per status change).
    forwarding: bool,
}

/// Starts the writer. It runs until `token` is cancelled, which the daemon does after the
/// servers have stopped, and then writes the final snapshots.
pub(crate) fn spawn(shared: Arc<Shared>, token: CancellationToken, tracker: &TaskTracker) {
    let tracker2 = tracker.clone();
    tracker.spawn(async move { run(shared, token, tracker2).await });
}

async fn run(shared: Arc<Shared>, token: CancellationToken, tracker: TaskTracker) {
    let changed = shared.changed.clone();
    let mut daemon_file: Option<Target<DaemonStatus>> = None;
    let mut followed: Vec<Followed> = Vec::new();
    let mut stopping = false;
    loop {
        let (daemon_path, servers) = shared.status_files();
        let watch_all = daemon_path.is_some();
        if daemon_file.as_ref().map(|t| &t.path) != daemon_path.as_ref() {
            daemon_file = daemon_path.map(Target::new);
        }
        // Servers that left the set: their final state, unless a successor took the file.
        followed.retain_mut(|f| {
            if servers.iter().any(|(h, _)| h.same(&f.handle)) {
                return true;
            }
            if let Some(file) = f.file.as_mut() {
                let reused = servers
                    .iter()
                    .any(|(_, p)| p.as_deref() == Some(file.path.as_path()));
                if !reused {
                    let report = ServerReport::from_status(&f.handle.status(), Instant::now());
                    file.write(report_key(&report), || to_json(&report), true);
                }
            }
            false
        });
        for (handle, path) in servers {
            let i = match followed.iter().position(|f| f.handle.same(&handle)) {
                Some(i) => i,
                None => {
                    followed.push(Followed {
                        handle,
                        file: None,
                        forwarding: false,
                    });
                    followed.len() - 1
                }
            };
            let f = &mut followed[i];
            if f.file.as_ref().map(|t| &t.path) != path.as_ref() {
                f.file = path.map(Target::new);
            }
            if !f.forwarding && (watch_all || f.file.is_some()) {
                follow(&f.handle, changed.clone(), &tracker);
                f.forwarding = true;
            }
        }
        let now = Instant::now();
        for f in &mut followed {
            if let Some(file) = f.file.as_mut() {
                let report = ServerReport::from_status(&f.handle.status(), now);
                file.write(report_key(&report), || to_json(&report), stopping);
            }
        }
        if let Some(file) = daemon_file.as_mut() {
            let status = shared.status();
            file.write(daemon_key(&status), || to_json(&status), stopping);
        }
        if stopping {
            debug!("final status files written");
            return;
        }
        let wrote_at = tokio::time::Instant::now();
        // A file that could not be written is tried again now and then, change or not.
        let failing = daemon_file.as_ref().is_some_and(|t| t.failing)
            || followed
                .iter()
                .any(|f| f.file.as_ref().is_some_and(|t| t.failing));
        let retry = failing.then(|| wrote_at + RETRY);
        tokio::select! {
            // Cancel safe: a permit stays stored in the Notify.
            () = changed.notified() => {}
            () = crate::io::lines::sleep_until(retry) => {}
            () = token.cancelled() => stopping = true,
        }
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep_until(wrote_at + MIN_INTERVAL) => {}
                () = token.cancelled() => stopping = true,
            }
        }
    }
}

/// Wakes the writer when the part of a server's status that counts as a change moves; ends
/// with the actor.
fn follow(handle: &ServerHandle, changed: Arc<Notify>, tracker: &TaskTracker) {
    let mut rx = handle.watch();
    // Taken now, before the writer reads the status it writes first: taken in the task, it
    // could already be a later state (the server came up meanwhile), and that change would
    // never be noticed (the file stayed `starting`, one run in eight).
    let mut last = server_key(&rx.borrow_and_update());
    tracker.spawn(async move {
        while rx.changed().await.is_ok() {
            let key = server_key(&rx.borrow_and_update());
            if key != last {
                last = key;
                changed.notify_one();
            }
        }
        changed.notify_one();
    });
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn atomic_write_is_private_and_replaces_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/status.json");
        write_atomic(&path, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        let before = std::fs::metadata(&path).unwrap();
        write_atomic(&path, b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":2}\n");
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            before.ino(),
            std::fs::metadata(&path).unwrap().ino(),
            "replaced by rename, not rewritten in place"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("new"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    }

    #[test]
    fn pending_and_uptime_are_not_changes() {
        let r = ServerReport {
            name: "a".into(),
            state: crate::status::ServerState::Running,
            socket: "/s".into(),
            pid: Some(1),
            clients: 1,
            max_clients: 4,
            pending: 3,
            restarts: 0,
            uptime_ms: Some(10),
            last_exit: None,
            restart_in_ms: None,
            max_restarts: 5,
            ..crate::daemon::fixtures::report("", crate::status::ServerState::Lazy)
        };
        let busier = ServerReport {
            pending: 9,
            uptime_ms: Some(5000),
            ..r.clone()
        };
        assert_eq!(report_key(&r), report_key(&busier));
        let restarted = ServerReport {
            pid: Some(2),
            ..r.clone()
        };
        assert_ne!(report_key(&r), report_key(&restarted));
        let more = ServerReport {
            clients: 2,
            ..r.clone()
        };
        assert_ne!(report_key(&r), report_key(&more));
    }
}
