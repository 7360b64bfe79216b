//! Watches the daemon's config file and reloads the daemon when it changes.
//!
//! It watches the file's folder, not the file: editors save by writing a temporary file and
//! renaming it over the old one, which replaces the inode a file watch would follow. Events
//! for other files of the folder are ignored, and so are mere opens and reads (the reload
//! itself reads the file: counting those would reload forever). A burst of events (truncate,
//! write, rename) is debounced into one reload once the file has been quiet for
//! [`DEBOUNCE`]. The debounce is done here rather than by `notify-debouncer-mini`, whose
//! events no longer say what kind they were, so opens could not be told from writes. It
//! decides nothing about what a reload does ([`Shared::reload`] does).

use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::daemon::Shared;

/// How long the file must stay quiet before a reload: long enough to cover an editor's
/// write-then-rename, short enough to feel immediate.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Starts watching `shared`'s config file until `token` is cancelled. A folder that cannot
/// be watched is logged (reloads then need SIGHUP or `rmcp-mux reload`), never fatal; so is
/// `RMCP_MUX_WATCH=0`, for configs on file systems without change events or users who want
/// reloads only on request.
pub(crate) fn spawn(shared: Arc<Shared>, token: CancellationToken, tracker: &TaskTracker) {
    if std::env::var_os("RMCP_MUX_WATCH").is_some_and(|v| v == "0") {
        info!(
            "not watching the config (RMCP_MUX_WATCH=0): reload with SIGHUP or `rmcp-mux reload`"
        );
        return;
    }
    let path = shared.config_path().to_owned();
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        warn!(config = %path.display(), "config path has no folder; not watching it");
        return;
    };
    let name = name.to_owned();
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()));
                if ours && !matches!(event.kind, EventKind::Access(_)) {
                    // Runs on notify's thread; a stored permit coalesces bursts.
                    waker.notify_one();
                }
            }
            Err(e) => warn!(error = %e, "config watcher error"),
        });
    let mut watcher: RecommendedWatcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the config; reload with SIGHUP or `rmcp-mux reload`");
            return;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        warn!(
            folder = %dir.display(),
            error = %e,
            "cannot watch the config's folder; reload with SIGHUP or `rmcp-mux reload`"
        );
        return;
    }
    debug!(folder = %dir.display(), "watching the config");
    tracker.spawn(async move {
        // Dropping the watcher ends the watch and its thread.
        let _watcher = watcher;
        // Once the file has been quiet for DEBOUNCE.
        while crate::io::lines::after_burst(&wake, DEBOUNCE, &token).await {
            info!(config = %path.display(), "config file changed; reloading");
            // The outcome is logged (and shown in status) by reload itself.
            let _ = shared.reload().await;
        }
    });
}
