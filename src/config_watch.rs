//! Watches the daemon's config file and reloads the daemon when it changes.
//!
//! It watches the file's folder, not the file: editors save by writing a temporary file and
//! renaming it over the old one, which replaces the inode a file watch would follow. Events
//! for other files of the folder are ignored, and a burst of events (truncate, write, rename)
//! is debounced into one reload. It decides nothing about what a reload does ([`Shared::reload`]
//! does).

use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::daemon::Shared;

/// How long the file must stay quiet before a reload: long enough to cover an editor's
/// write-then-rename, short enough to feel immediate.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Starts watching `shared`'s config file until `token` is cancelled. A folder that cannot
/// be watched is logged (reloads then need SIGHUP or `rmcp-mux reload`), never fatal.
pub(crate) fn spawn(shared: Arc<Shared>, token: CancellationToken, tracker: &TaskTracker) {
    let path = shared.config_path().to_owned();
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        warn!(config = %path.display(), "config path has no folder; not watching it");
        return;
    };
    let name = name.to_owned();
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let debouncer = new_debouncer(DEBOUNCE, move |res: DebounceEventResult| match res {
        Ok(events) => {
            if events
                .iter()
                .any(|e| e.path.file_name() == Some(name.as_os_str()))
            {
                // Runs on the debouncer's thread; a stored permit coalesces bursts further.
                waker.notify_one();
            }
        }
        Err(e) => warn!(error = %e, "config watcher error"),
    });
    let mut debouncer = match debouncer {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot watch the config; reload with SIGHUP or `rmcp-mux reload`");
            return;
        }
    };
    if let Err(e) = debouncer.watcher().watch(dir, RecursiveMode::NonRecursive) {
        warn!(
            folder = %dir.display(),
            error = %e,
            "cannot watch the config's folder; reload with SIGHUP or `rmcp-mux reload`"
        );
        return;
    }
    debug!(folder = %dir.display(), "watching the config");
    tracker.spawn(async move {
        // Dropping the debouncer stops its thread and the watch.
        let _debouncer = debouncer;
        loop {
            tokio::select! {
                // Cancel safe: a permit stays stored in the Notify.
                () = wake.notified() => {
                    info!(config = %path.display(), "config file changed; reloading");
                    // The outcome is logged (and shown in status) by reload itself.
                    let _ = shared.reload().await;
                }
                () = token.cancelled() => break,
            }
        }
    });
}
