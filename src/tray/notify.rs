//! Desktop notifications of the menu-bar app: which changes between two status snapshots
//! deserve one ([`changes`]), how a crash loop is kept from becoming a flood ([`RateLimit`]),
//! and, with the GUI half compiled in, showing them through notify-rust ([`show`]).
//!
//! Deciding is pure (time comes in as an argument), so it is unit-tested without a notification
//! daemon. It must not read clocks or touch the GUI; the only I/O is the D-Bus call in `show`.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::daemon::DaemonStatus;
use crate::status::ServerState;

/// One notification worth showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A server's child ended on its own and will be restarted.
    Crashed {
        /// The server.
        server: String,
        /// How it ended ("exited with status 1").
        reason: String,
        /// When the restart is due, if it is still waiting.
        restart_in_ms: Option<u64>,
    },
    /// A server reached its restart limit and stays down until the user restarts it.
    GaveUp {
        /// The server.
        server: String,
        /// Its `max_restarts`.
        restarts: u32,
    },
    /// A config reload was refused.
    ConfigRejected {
        /// Why.
        message: String,
    },
}

impl Notice {
    /// The notification's summary line.
    pub fn summary(&self) -> String {
        match self {
            Notice::Crashed { server, .. } => format!("{server} crashed"),
            Notice::GaveUp { server, .. } => format!("{server} failed"),
            Notice::ConfigRejected { .. } => "Config not applied".into(),
        }
    }

    /// The notification's body: "memory exited with status 1; restarting in 2 s".
    pub fn body(&self) -> String {
        match self {
            Notice::Crashed {
                server,
                reason,
                restart_in_ms,
            } => match restart_in_ms {
                Some(ms) => {
                    let s = ((ms + 500) / 1000).max(1);
                    format!("{server} {reason}; restarting in {s} s")
                }
                None => format!("{server} {reason}; restarting"),
            },
            Notice::GaveUp { server, restarts } => format!(
                "{server} stopped after {restarts} failed restart{} — click its menu item to restart",
                if *restarts == 1 { "" } else { "s" }
            ),
            Notice::ConfigRejected { message } => {
                format!("the running servers keep their old settings: {message}")
            }
        }
    }

    /// The server it is about, if any (the rate limit is per server).
    pub fn server(&self) -> Option<&str> {
        match self {
            Notice::Crashed { server, .. } | Notice::GaveUp { server, .. } => Some(server),
            Notice::ConfigRejected { .. } => None,
        }
    }
}

/// The notices that going from `prev` to `next` deserves, in server order.
///
/// A crash is a rise of a server's `restarts` (which counts restarts after crashes only, so a
/// user's restart or stop is no crash, and a crash between two snapshots is never missed); a
/// server that becomes `failed` gave up; a new `config_error` is a refused reload.
pub fn changes(prev: &DaemonStatus, next: &DaemonStatus) -> Vec<Notice> {
    let mut out = Vec::new();
    for s in &next.servers {
        // A removed server is out of service on purpose: nothing about it is news.
        if s.removed {
            continue;
        }
        let Some(before) = prev.servers.iter().find(|p| p.name == s.name && !p.removed) else {
            continue;
        };
        if s.restarts > before.restarts {
            out.push(Notice::Crashed {
                server: s.name.clone(),
                reason: s.last_exit.clone().unwrap_or_else(|| "exited".to_owned()),
                restart_in_ms: s.restart_in_ms,
            });
        }
        if s.state == ServerState::Failed && before.state != ServerState::Failed {
            out.push(Notice::GaveUp {
                server: s.name.clone(),
                restarts: s.max_restarts,
            });
        }
    }
    if let Some(message) = &next.config_error {
        if prev.config_error.as_ref() != Some(message) {
            out.push(Notice::ConfigRejected {
                message: message.clone(),
            });
        }
    }
    out
}

/// What the app compares its first snapshot with: the daemon was started by this process a
/// moment ago, so every crash and failure since then is news, even one that happened before the
/// first look (a server that crashes at once would otherwise go unannounced).
pub fn baseline(first: &DaemonStatus) -> DaemonStatus {
    let mut base = first.clone();
    for s in &mut base.servers {
        s.restarts = 0;
        s.state = ServerState::Starting;
    }
    base.config_error = None;
    base
}

/// Keeps a crash loop from flooding the desktop: at most one crash notice per server per
/// window. Giving up and refused reloads always pass: each needs the user, and each happens
/// once per episode.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    last_crash: HashMap<String, Instant>,
}

impl RateLimit {
    /// How long after one crash notice the same server's next crashes are only logged.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

    /// A limiter with the given window.
    pub fn new(window: Duration) -> RateLimit {
        RateLimit {
            window,
            last_crash: HashMap::new(),
        }
    }

    /// Whether `notice` may be shown at `now` (and, if so, counts it).
    pub fn allow(&mut self, notice: &Notice, now: Instant) -> bool {
        let Notice::Crashed { server, .. } = notice else {
            return true;
        };
        match self.last_crash.get(server) {
            Some(t) if now.saturating_duration_since(*t) < self.window => false,
            _ => {
                self.last_crash.insert(server.clone(), now);
                true
            }
        }
    }
}

/// Sets, once and before the first notification, which app macOS shows notifications as:
/// the app's bundle id ([`super::start::BUNDLE_ID`]). Read in mac-notification-sys 0.6.15's
/// sources: the first send otherwise sets it to Finder's id (`get_bundle_identifier_or_default`
/// of a made-up name), even inside the bundle, and any setting installs a hook through which
/// the main bundle answers `com.apple.Terminal` when the id is unknown to LaunchServices (a
/// bare binary and no installed app): that failure is logged, and notifications then show as
/// Terminal's. Only one attempt is possible per process. A no-op elsewhere.
#[cfg(any(feature = "tray", target_os = "macos"))]
pub fn init_app_id() {
    #[cfg(target_os = "macos")]
    if let Err(e) = notify_rust::set_application(super::start::BUNDLE_ID) {
        tracing::warn!(
            error = %e,
            bundle_id = super::start::BUNDLE_ID,
            "notifications cannot be shown as rmcp-mux (is rmcp-mux.app installed?); they show as Terminal's"
        );
    }
}

/// Shows one notice on the desktop.
///
/// # Errors
/// No notification daemon on the session bus (Linux), or the system refused it.
#[cfg(any(feature = "tray", target_os = "macos"))]
pub async fn show(notice: &Notice) -> anyhow::Result<()> {
    show_text(&notice.summary(), &notice.body()).await
}

/// Shows a notification with this summary and body.
///
/// # Errors
/// As [`show`].
#[cfg(any(feature = "tray", target_os = "macos"))]
pub async fn show_text(summary: &str, body: &str) -> anyhow::Result<()> {
    let mut n = notify_rust::Notification::new();
    n.summary(summary).body(body).appname("rmcp-mux");
    #[cfg(target_os = "macos")]
    {
        // macOS's call blocks until the notification is delivered: keep it off the workers.
        tokio::task::spawn_blocking(move || n.show().map(drop)).await??;
    }
    #[cfg(not(target_os = "macos"))]
    {
        n.show_async().await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::daemon::ServerReport;

    use crate::daemon::fixtures::status;

    fn server(name: &str, state: ServerState, restarts: u32) -> ServerReport {
        ServerReport {
            restarts,
            ..crate::daemon::fixtures::report(name, state)
        }
    }

    #[test]
    fn a_crash_says_why_and_when_it_restarts() {
        let prev = status(vec![server("memory", ServerState::Running, 0)]);
        let mut crashed = server("memory", ServerState::Backoff, 1);
        crashed.last_exit = Some("exited with status 1".into());
        crashed.restart_in_ms = Some(1_980);
        let next = status(vec![crashed]);
        let notes = changes(&prev, &next);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].summary(), "memory crashed");
        assert_eq!(
            notes[0].body(),
            "memory exited with status 1; restarting in 2 s"
        );
        assert_eq!(notes[0].server(), Some("memory"));
        // Uptime churn and a second look at the same state say nothing.
        let mut later = next.clone();
        later.uptime_ms += 100;
        later.servers[0].restart_in_ms = Some(1_880);
        assert!(changes(&next, &later).is_empty());
    }

    #[test]
    fn what_happened_before_the_first_look_is_news() {
        let mut first = status(vec![
            server("ok", ServerState::Running, 0),
            server("crasher", ServerState::Backoff, 1),
        ]);
        first.servers[1].last_exit = Some("exited with status 1".into());
        let notes = changes(&baseline(&first), &first);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].summary(), "crasher crashed");
        let failed = status(vec![server("f", ServerState::Failed, 5)]);
        let notes = changes(&baseline(&failed), &failed);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(matches!(notes[1], Notice::GaveUp { .. }));
    }

    #[test]
    fn a_removed_server_is_no_news_and_not_mistaken_for_its_successor() {
        let removed = |restarts, state| ServerReport {
            removed: true,
            ..server("memory", state, restarts)
        };
        // Listed first, with more restarts than the new server of its name.
        let prev = status(vec![
            removed(4, ServerState::Stopped),
            server("memory", ServerState::Running, 0),
        ]);
        let mut crashed = server("memory", ServerState::Backoff, 1);
        crashed.last_exit = Some("exited with status 1".into());
        let next = status(vec![removed(4, ServerState::Stopped), crashed]);
        let notes = changes(&prev, &next);
        assert_eq!(notes.len(), 1, "the new server's crash: {notes:?}");
        assert_eq!(notes[0].summary(), "memory crashed");
        // The removed one's own changes say nothing.
        let later = status(vec![removed(5, ServerState::Failed)]);
        assert!(changes(&prev, &later).is_empty());
        assert!(changes(&baseline(&later), &later).is_empty());
    }

    #[test]
    fn a_short_backoff_still_reads_well() {
        let n = Notice::Crashed {
            server: "x".into(),
            reason: "killed by signal 9 (SIGKILL)".into(),
            restart_in_ms: Some(120),
        };
        assert_eq!(
            n.body(),
            "x killed by signal 9 (SIGKILL); restarting in 1 s"
        );
        let n = Notice::Crashed {
            server: "x".into(),
            reason: "exited with status 3".into(),
            restart_in_ms: None,
        };
        assert_eq!(n.body(), "x exited with status 3; restarting");
    }

    #[test]
    fn reaching_the_limit_is_one_notice() {
        let prev = status(vec![server("memory", ServerState::Backoff, 5)]);
        let next = status(vec![server("memory", ServerState::Failed, 5)]);
        let notes = changes(&prev, &next);
        assert_eq!(
            notes,
            vec![Notice::GaveUp {
                server: "memory".into(),
                restarts: 5
            }]
        );
        assert_eq!(notes[0].summary(), "memory failed");
        assert_eq!(
            notes[0].body(),
            "memory stopped after 5 failed restarts — click its menu item to restart"
        );
        assert!(changes(&next, &next).is_empty(), "still failed is no news");
        let one = Notice::GaveUp {
            server: "m".into(),
            restarts: 1,
        };
        assert_eq!(
            one.body(),
            "m stopped after 1 failed restart — click its menu item to restart"
        );
    }

    #[test]
    fn user_actions_are_no_crash() {
        let prev = status(vec![server("a", ServerState::Running, 2)]);
        for state in [
            ServerState::Stopped,
            ServerState::Starting,
            ServerState::Running,
        ] {
            let next = status(vec![server("a", state, 2)]);
            assert!(changes(&prev, &next).is_empty(), "{state:?}");
        }
        // A server that appears or disappears (reload) is no crash either.
        let next = status(vec![
            server("a", ServerState::Running, 2),
            server("b", ServerState::Failed, 9),
        ]);
        assert!(changes(&prev, &next).is_empty());
    }

    #[test]
    fn a_refused_reload_is_told_once() {
        let prev = status(vec![]);
        let mut next = status(vec![]);
        next.config_error = Some("mux.toml line 3: unknown key `cmdd`".into());
        let notes = changes(&prev, &next);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].summary(), "Config not applied");
        assert_eq!(
            notes[0].body(),
            "the running servers keep their old settings: mux.toml line 3: unknown key `cmdd`"
        );
        assert_eq!(notes[0].server(), None);
        assert!(changes(&next, &next).is_empty());
        let mut other = next.clone();
        other.config_error = Some("line 4: bad".into());
        assert_eq!(changes(&next, &other).len(), 1, "a different error is news");
    }

    #[test]
    fn a_crash_loop_is_not_a_flood() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(Duration::from_secs(60));
        let crash = |s: &str| Notice::Crashed {
            server: s.into(),
            reason: "exited with status 1".into(),
            restart_in_ms: Some(1000),
        };
        assert!(limit.allow(&crash("a"), t0));
        assert!(!limit.allow(&crash("a"), t0 + Duration::from_secs(1)));
        assert!(!limit.allow(&crash("a"), t0 + Duration::from_secs(59)));
        assert!(
            limit.allow(&crash("b"), t0 + Duration::from_secs(2)),
            "per server"
        );
        let gave_up = Notice::GaveUp {
            server: "a".into(),
            restarts: 5,
        };
        assert!(limit.allow(&gave_up, t0 + Duration::from_secs(3)));
        assert!(limit.allow(&gave_up, t0 + Duration::from_secs(4)));
        assert!(limit.allow(&crash("a"), t0 + Duration::from_secs(60)));
    }
}
