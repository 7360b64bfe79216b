//! The menu-bar app (`rmcp-mux --tray`): the tao event loop on the main thread owns the tray
//! icon and its muda menu; the tokio runtime runs the mux on its own threads. A driver task
//! polls the daemon's status, shows notifications and sends every snapshot that changes the
//! menu to the loop through an [`EventLoopProxy`]; menu clicks go back as daemon commands. The
//! Hosts actions and "Set up from your apps…" run on threads of their own (`HostJobs`), since
//! they wait for native dialogs, and send the hosts' new state back to the loop.
//!
//! It renders [`model::TrayModel`]s and decides nothing the model can decide. It must not block
//! the main thread on the daemon (commands run on the runtime) and must not exit before every
//! server has been stopped (Quit and SIGTERM take the daemon's own shutdown path).
//!
//! Known trap (DESIGN.md, Platforms): with tray-icon's `libappindicator` backend on Linux a
//! submenu's `set_text` never reaches the tray host. There the submenu carries the model's
//! steady label ("memory", "memory — failed") and the live state sits in the submenu's first
//! item, which does update in place; the menu is rebuilt only when a steady label changes (a
//! server fails or recovers) or the server set does. macOS relabels submenus in place.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use muda::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu};
use tao::event::{Event, StartCause};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder, TrayIconEvent};

use super::login::LoginItem;
use super::model::{self, Action, HostsView, IconState, Item, Login, TrayModel};
use super::notify::{self, RateLimit};
use super::start::{ensure_config, Prepared};
use crate::config::Selection;
use crate::daemon::lifecycle::{Instance, LifecycleError, Paths};
use crate::daemon::{DaemonStatus, Shared};

/// How often the driver looks at the status: well inside the 250 ms the menu may lag behind.
const POLL: Duration = Duration::from_millis(100);

/// Whether this platform's tray host shows a submenu's new label after `set_text`.
const LIVE_SUBMENU_LABELS: bool = cfg!(target_os = "macos");

/// What the runtime's threads tell the event loop.
#[derive(Debug)]
enum UserEvent {
    /// A snapshot that changes what the menu shows.
    Status(Box<DaemonStatus>),
    /// A menu item was clicked (its id).
    Menu(String),
    /// The hosts' files were read again (after a Hosts action or a config change).
    Hosts(HostsView),
    /// Every server has stopped; the loop may exit.
    Stopped,
}

/// `rmcp-mux --tray`: prepares what a menu-bar app needs that a terminal's daemon has (the
/// user's PATH for the servers, the home folder as working folder, a config), takes the
/// config's lock and runs the app ([`run`]) until Quit, SIGTERM, SIGINT or the system ends it.
///
/// A missing config is created from the template and a broken one shown in the menu
/// ([`super::start::prepare`]); what still stops the app from starting (another daemon holds
/// the lock, a socket is taken) is told in a desktop notification as well as the log, since
/// nobody sees the app's stderr.
///
/// # Errors
/// No graphical session, the lock is held, the config cannot be created, or the daemon cannot
/// start; never once the loop runs.
pub fn main(
    runtime: Runtime,
    config: &Path,
    only: &[String],
    except: &[String],
) -> anyhow::Result<Infallible> {
    #[cfg(not(target_os = "macos"))]
    {
        let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
        anyhow::ensure!(
            set("DISPLAY") || set("WAYLAND_DISPLAY"),
            "--tray needs a graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); \
             run `rmcp-mux` without --tray for the daemon alone"
        );
    }
    // Set once, before any notification (see notify::init_app_id).
    notify::init_app_id();
    let started = (|| {
        // Absolute before the working folder changes.
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
        let (path, _) =
            crate::daemon::login_path::adopt(crate::daemon::login_path::login_shell().as_deref());
        if let Some(home) = directories::BaseDirs::new() {
            if let Err(e) = std::env::set_current_dir(home.home_dir()) {
                warn!(error = %e, "cannot change to the home folder");
            }
        }
        let selection = Selection {
            only: only.to_vec(),
            except: except.to_vec(),
        };
        let prepared = super::start::prepare(&config, selection)?;
        if prepared.created {
            info!(config = %prepared.config.path.display(), "created the config from the template");
        }
        let paths = Paths::for_config(&prepared.config.path)?;
        let instance = Instance::acquire(&paths, only, except)?;
        let Prepared {
            config,
            servers,
            selection,
            error,
            ..
        } = prepared;
        // The servers start before the loop, so that a socket that cannot be bound is an
        // ordinary error.
        let daemon = runtime.block_on(crate::daemon::Daemon::start_selected(
            &config, servers, selection,
        ))?;
        if error.is_some() {
            // Reads the file again: the refusal lands in the status ("Config not applied: …")
            // as any later one does, and the watcher applies the file once it is fixed.
            let _ = runtime.block_on(daemon.shared().reload());
        }
        anyhow::Ok((daemon, config, instance, path))
    })();
    match started {
        // `run` never returns (its type says so; macOS's rustc then calls the match unreachable).
        #[allow(unreachable_code)]
        Ok((daemon, config, instance, path)) => {
            let child_path = path.to_string_lossy().into_owned();
            match run(runtime, daemon, config, instance, child_path) {}
        }
        Err(e) => {
            alert(&runtime, &e);
            Err(e)
        }
    }
}

/// Tells the user, in a notification, why the app cannot start (bounded: a desktop without a
/// notification service must not keep the process).
fn alert(runtime: &Runtime, err: &anyhow::Error) {
    let running = err.chain().find_map(|e| match e.downcast_ref() {
        Some(LifecycleError::AlreadyRunning { pid }) => Some(*pid),
        _ => None,
    });
    let (summary, body) = match running {
        Some(pid) => (
            "rmcp-mux is already running".to_owned(),
            format!(
                "another rmcp-mux{} runs this config without the menu bar; stop it \
                 (`rmcp-mux daemon stop`) and open the app again",
                pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
            ),
        ),
        None => ("rmcp-mux could not start".to_owned(), format!("{err:#}")),
    };
    let shown = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), notify::show_text(&summary, &body)).await
    });
    match shown {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = format!("{e:#}"), "cannot show the start-up error"),
        Err(_) => warn!("the start-up error notification timed out"),
    }
}

/// Runs the tray over a started daemon until Quit, SIGTERM, SIGINT or the system ends the app
/// (logout, restart, Activity Monitor's Quit: tao's `LoopDestroyed`); never returns: the
/// process exits after every server has stopped. All three ways out take one path: the driver
/// task stops the daemon and releases the lock, and the loop waits for that.
///
/// Must be called on the main thread (tao panics otherwise).
fn run(
    runtime: Runtime,
    daemon: crate::daemon::Daemon,
    config: crate::config::Config,
    instance: Instance,
    child_path: String,
) -> Infallible {
    let shared = daemon.shared();
    let quit = CancellationToken::new();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<Infallible>();

    let mut event_loop = EventLoopBuilder::<UserEvent>::with_user_event().build();
    #[cfg(target_os = "macos")]
    {
        use tao::platform::macos::{ActivationPolicy, EventLoopExtMacOS};
        // No dock icon when started outside the bundle (the bundle says so in Info.plist).
        event_loop.set_activation_policy(ActivationPolicy::Accessory);
        // tao activates the app ignoring other apps by default: a menu-bar app started at
        // login or by a host must not take the focus from what the user is doing.
        event_loop.set_activate_ignoring_other_apps(false);
    }
    #[cfg(not(target_os = "macos"))]
    let _ = &mut event_loop;
    let proxy = event_loop.create_proxy();
    {
        let proxy = proxy.clone();
        // Wakes the loop (ControlFlow::Wait) on every click, as muda's tao example does.
        MenuEvent::set_event_handler(Some(move |e: MenuEvent| {
            let _ = proxy.send_event(UserEvent::Menu(e.id.0));
        }));
    }
    // With no handler tray-icon queues every pointer event over the icon (macOS: enter, move,
    // leave, click) in a global unbounded channel nobody drains; the menu is all the app uses.
    TrayIconEvent::set_event_handler(Some(|_: TrayIconEvent| {}));
    runtime.spawn(shared.clone().reload_on_sighup());
    runtime.spawn(drive(
        daemon,
        instance,
        proxy.clone(),
        quit.clone(),
        config.daemon.notifications,
        stopped_tx,
    ));

    let login = LoginItem::new(&config.path, &child_path);
    match login.refresh() {
        Ok(true) => info!("rewrote the launch-at-login entry for this executable"),
        Ok(false) => {}
        Err(e) => warn!(
            error = format!("{e:#}"),
            "cannot update the launch-at-login entry"
        ),
    }
    let config_path = config.path.clone();
    let notifications = config.daemon.notifications;
    // Kept for the app's life: on X11 the copied text is served by its owner, so a clipboard
    // dropped right after copying would take the text with it.
    let mut clipboard: Option<arboard::Clipboard> = None;
    let mut ui: Option<Ui> = None;
    let mut exit_code = 0;
    let mut status = shared.status();
    // A few small files, read once here; later reads run off the loop (HostJobs::refresh).
    let mut hosts_view = super::hosts::view(&config_path, &crate::hosts::Paths::from_env(None));
    let jobs = HostJobs {
        handle: runtime.handle().clone(),
        shared: shared.clone(),
        config: config_path.clone(),
        proxy: proxy.clone(),
        notifications,
        busy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    event_loop.run(move |event, _, control_flow| {
        if !matches!(*control_flow, ControlFlow::ExitWithCode(_)) {
            *control_flow = ControlFlow::Wait;
        }
        match event {
            // macOS wants the icon created once the loop runs (tray-icon's docs).
            Event::NewEvents(StartCause::Init) => match Ui::new(&status, login.state(), &hosts_view) {
                Ok(u) => ui = Some(u),
                Err(e) => {
                    eprintln!("rmcp-mux: cannot show the tray icon: {e:#}");
                    exit_code = 1;
                    quit.cancel();
                }
            },
            Event::UserEvent(UserEvent::Status(next)) => {
                // A config applied or refused changes what the hosts' counts and the first-run
                // entry mean: read the hosts again.
                let names = |s: &DaemonStatus| -> Vec<String> {
                    s.servers.iter().map(|x| x.name.clone()).collect()
                };
                if names(&next) != names(&status)
                    || next.config_error.is_some() != status.config_error.is_some()
                {
                    jobs.refresh();
                }
                status = *next;
                if let Some(ui) = ui.as_mut() {
                    ui.show(&status, login.state(), &hosts_view);
                }
            }
            Event::UserEvent(UserEvent::Hosts(view)) => {
                hosts_view = view;
                if let Some(ui) = ui.as_mut() {
                    ui.show(&status, login.state(), &hosts_view);
                }
            }
            Event::UserEvent(UserEvent::Menu(id)) => {
                let Some(action) = Action::parse(&id) else {
                    return;
                };
                debug!(%id, "menu click");
                match action {
                    Action::Server(name, cmd) => command(&runtime, &shared, name, cmd),
                    Action::Instance(name, key, cmd) => {
                        let shared = shared.clone();
                        runtime.spawn(async move {
                            info!(server = %name, instance = %key, ?cmd, "command from the menu");
                            if let Err(e) = shared.command_instance_key(&name, &key, cmd).await {
                                warn!(server = %name, error = format!("{e:#}"), "menu command failed");
                            }
                        });
                    }
                    Action::RestartAll => {
                        if let Some(ui) = &ui {
                            for name in ui.model.restart_all_targets() {
                                command(&runtime, &shared, name, crate::status::Command::Restart);
                            }
                        }
                    }
                    Action::OpenConfig => match ensure_config(&config_path) {
                        Ok(_) => open(&runtime, &config_path, true),
                        Err(e) => warn!(error = format!("{e:#}"), "cannot open the config"),
                    },
                    Action::OpenLogs => {
                        if let Some(log) = &status.log_file {
                            open(&runtime, log, false);
                        }
                    }
                    Action::ToggleLogin => {
                        let on = login.state() != Login::On;
                        match login.set(on) {
                            Ok(()) => info!(on, "launch at login changed"),
                            Err(e) => warn!(error = format!("{e:#}"), "launch at login"),
                        }
                        // The check item shows the disk, whatever the click toggled.
                        if let Some(ui) = ui.as_mut() {
                            ui.show(&status, login.state(), &hosts_view);
                            ui.rendered.login.set_checked(ui.model.login_checked);
                        }
                    }
                    Action::CopyEntry(name) => {
                        let copied = copy_entry(&mut clipboard, &status, &name, &config_path);
                        let (summary, body) = match copied {
                            Ok(()) => {
                                info!(server = %name, "copied its host entry");
                                (
                                    format!("Copied {name}'s host entry"),
                                    "Paste it into your app's MCP servers under a name of your \
                                     choice."
                                        .to_owned(),
                                )
                            }
                            Err(e) => {
                                warn!(server = %name, error = format!("{e:#}"), "copy host entry");
                                (format!("Cannot copy {name}'s host entry"), format!("{e:#}"))
                            }
                        };
                        if notifications {
                            runtime.spawn(async move {
                                let shown = tokio::time::timeout(
                                    Duration::from_secs(5),
                                    notify::show_text(&summary, &body),
                                )
                                .await;
                                if !matches!(shown, Ok(Ok(()))) {
                                    warn!("cannot show the copy notification");
                                }
                            });
                        }
                    }
                    Action::Setup => jobs.spawn("setup", HostJobs::setup),
                    Action::HostConnect(name) => match crate::hosts::Host::from_name(&name) {
                        Ok(host) => jobs.spawn("connect", move |j| j.connect(host)),
                        Err(e) => warn!(error = %e, "menu"),
                    },
                    Action::HostRestore(name) => match crate::hosts::Host::from_name(&name) {
                        Ok(host) => jobs.spawn("restore", move |j| j.restore(host)),
                        Err(e) => warn!(error = %e, "menu"),
                    },
                    Action::HostOpen(name) => {
                        if let Some(h) = hosts_view.hosts.iter().find(|h| h.host.name() == name) {
                            open(&runtime, &h.file, true);
                        }
                    }
                    Action::Quit => {
                        info!("quit from the menu");
                        quit.cancel();
                    }
                }
            }
            Event::UserEvent(UserEvent::Stopped) => {
                // Drop the icon first so the tray host forgets it before the process ends.
                ui = None;
                *control_flow = ControlFlow::ExitWithCode(exit_code);
            }
            // The last event. After Quit or a signal the daemon has stopped already and this
            // returns at once; when the system ended the app (`terminate:` at logout, restart
            // or Activity Monitor's Quit; AppKit calls `exit()` right after), it runs the same
            // stop and waits for it, so that no server, socket or PID file is left.
            Event::LoopDestroyed => {
                ui = None;
                stop_and_wait(&quit, &stopped_rx);
            }
            _ => {}
        }
    })
}

/// Puts the host entry of server `name` ([`crate::hosts::rewire::host_entry`], the proxy next
/// to this executable) on the clipboard, opening the clipboard on first use.
fn copy_entry(
    clipboard: &mut Option<arboard::Clipboard>,
    status: &DaemonStatus,
    name: &str,
    config: &Path,
) -> anyhow::Result<()> {
    let server = status
        .servers
        .iter()
        .find(|s| s.name == name && !s.removed)
        .with_context(|| format!("no server {name}"))?;
    let proxy = crate::hosts::rewire::proxy_path()?;
    let entry = crate::hosts::rewire::host_entry(&proxy, &server.socket, config);
    let board = match clipboard {
        Some(b) => b,
        None => clipboard.insert(arboard::Clipboard::new().context("cannot open the clipboard")?),
    };
    board
        .set_text(entry)
        .context("cannot put the entry on the clipboard")
}

/// The Hosts actions and the first-run setup. Each runs on a thread of its own, since it asks
/// and tells in blocking dialogs ([`super::dialog`]), and calls the same functions as the CLI:
/// `rmcp-mux import` ([`crate::hosts::import::run`]), `rewire`
/// ([`crate::hosts::connect::connect`], once as a dry run for the confirmation, then for real)
/// and `unwire` ([`crate::hosts::rewire::unwire`]). One runs at a time.
#[derive(Clone)]
struct HostJobs {
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
    config: PathBuf,
    proxy: EventLoopProxy<UserEvent>,
    notifications: bool,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl HostJobs {
    /// Runs `job` on its own thread, unless another one still runs (its dialog is open).
    fn spawn(&self, what: &'static str, job: impl FnOnce(&HostJobs) + Send + 'static) {
        use std::sync::atomic::Ordering;
        if self.busy.swap(true, Ordering::AcqRel) {
            info!(what, "a Hosts action is already running; click ignored");
            return;
        }
        /// Frees the slot however the job ends (a panic included).
        struct Done(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let jobs = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rmcp-mux-{what}"))
            .spawn(move || {
                let done = Done(jobs.busy.clone());
                job(&jobs);
                drop(done);
                jobs.refresh_now();
            });
        if let Err(e) = spawned {
            warn!(error = %e, what, "cannot start the Hosts action");
            self.busy.store(false, Ordering::Release);
        }
    }

    /// Reads the hosts again off the loop and sends the result to it.
    fn refresh(&self) {
        let jobs = self.clone();
        self.handle.spawn_blocking(move || jobs.refresh_now());
    }

    fn refresh_now(&self) {
        let view = super::hosts::view(&self.config, &crate::hosts::Paths::from_env(None));
        let _ = self.proxy.send_event(UserEvent::Hosts(view));
    }

    /// Shows a notification (bounded, as every notification of the app).
    fn notify(&self, (summary, body): (String, String)) {
        info!(%summary, %body, "notification");
        if !self.notifications {
            return;
        }
        let shown = self.handle.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), notify::show_text(&summary, &body)).await
        });
        if !matches!(shown, Ok(Ok(()))) {
            warn!(%summary, "cannot show a notification");
        }
    }

    /// "Set up from your apps…": imports every host's servers into the config (as `rmcp-mux
    /// import` with no `--host`), applies it, and says what it found.
    fn setup(&self) {
        let paths = crate::hosts::Paths::from_env(None);
        if !super::hosts::is_first_run(&self.config) {
            info!("setup: the config is no longer the template; nothing done");
            return;
        }
        let report = match crate::hosts::import::run(&self.config, &crate::hosts::Host::ALL, &paths)
        {
            Ok(r) => r,
            Err(e) => {
                super::dialog::error("Cannot set up rmcp-mux from your apps", &format!("{e:#}"));
                return;
            }
        };
        for line in report.notes.iter().chain(&report.added) {
            info!(%line, "setup");
        }
        if !report.added.is_empty() {
            // The watcher would apply it too; this starts the servers now.
            if let Err(e) = self.handle.block_on(self.shared.reload()) {
                super::dialog::error(
                    "The new config was not applied",
                    &format!("{}: {e:#}", self.config.display()),
                );
                return;
            }
        }
        self.notify(model::setup_notice(report.added.len(), &report.from));
    }

    /// "Connect to rmcp-mux": a dry run lists the entries in a confirmation, then the rewire.
    fn connect(&self, host: crate::hosts::Host) {
        use crate::hosts::connect::{connect, Want};
        let paths = crate::hosts::Paths::from_env(None);
        let state = crate::config::default_state_dir();
        let failed = |e: anyhow::Error| {
            super::dialog::error(
                &format!("Cannot connect {} to rmcp-mux", host.label()),
                &format!("{e:#}"),
            );
        };
        let plan = match connect(host, &paths, &self.config, Want::Auto, &state, true) {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        if plan.report.changed == 0 {
            super::dialog::inform(
                &format!("Nothing to connect in {}", host.label()),
                &plan.report.lines.join("\n"),
            );
            return;
        }
        let (title, text) = model::connect_question(host, &plan.report.entries, plan.by_url);
        if !super::dialog::confirm(&title, &text, "Connect") {
            info!(host = %host, "connect cancelled");
            return;
        }
        match connect(host, &paths, &self.config, Want::Auto, &state, false) {
            Ok(done) => {
                for line in &done.report.lines {
                    info!(host = %host, %line, "connect");
                }
                self.notify(model::connected_notice(host, done.report.changed));
            }
            Err(e) => failed(e),
        }
    }

    /// "Restore original": puts back what Connect changed (as `rmcp-mux unwire`).
    fn restore(&self, host: crate::hosts::Host) {
        let paths = crate::hosts::Paths::from_env(None);
        let state = crate::config::default_state_dir();
        match crate::hosts::rewire::unwire(host, &paths, &state) {
            Ok(report) => {
                for line in &report.lines {
                    info!(host = %host, %line, "restore");
                }
                self.notify(model::restored_notice(host, report.changed, &report.lines));
            }
            Err(e) => super::dialog::error(
                &format!("Cannot restore {}'s config", host.label()),
                &e.to_string(),
            ),
        }
    }
}

/// Sends one command to a server on the runtime; the next snapshot shows its effect.
fn command(runtime: &Runtime, shared: &Arc<Shared>, name: String, cmd: crate::status::Command) {
    let shared = shared.clone();
    runtime.spawn(async move {
        info!(server = %name, ?cmd, "command from the menu");
        if let Err(e) = shared.command(&name, cmd).await {
            warn!(server = %name, error = format!("{e:#}"), "menu command failed");
        }
    });
}

/// The task on the runtime that owns the daemon: polls its status, notifies, feeds the loop,
/// and on Quit or a signal stops every server before telling the loop to exit. It also owns the
/// one-daemon-per-config lock, released (PID file removed) once every server has stopped: the
/// loop ends the process without running destructors.
async fn drive(
    daemon: crate::daemon::Daemon,
    instance: crate::daemon::lifecycle::Instance,
    proxy: EventLoopProxy<UserEvent>,
    quit: CancellationToken,
    notifications: bool,
    stopped: std::sync::mpsc::Sender<Infallible>,
) {
    let shared = daemon.shared();
    let first = shared.status();
    let mut shown = model::build(&first, Login::Off);
    // The loop may have drawn an older snapshot than this one.
    let _ = proxy.send_event(UserEvent::Status(Box::new(first.clone())));
    let mut prev = notify::baseline(&first);
    let mut limit = RateLimit::new(RateLimit::DEFAULT_WINDOW);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            // All three are cancel safe: an interval tick, a token, a signal stream future.
            _ = tick.tick() => {}
            _ = quit.cancelled() => break,
            _ = &mut signal => break,
        }
        let next = shared.status();
        for notice in notify::changes(&prev, &next) {
            if !notifications {
                continue;
            }
            if !limit.allow(&notice, Instant::now()) {
                debug!(summary = %notice.summary(), "notification rate-limited");
                continue;
            }
            info!(summary = %notice.summary(), body = %notice.body(), "notification");
            tokio::spawn(async move {
                if let Err(e) = notify::show(&notice).await {
                    warn!(error = format!("{e:#}"), "cannot show a notification");
                }
            });
        }
        // Send only what changes the menu: uptime and backoff countdowns do not.
        let menu = model::build(&next, Login::Off);
        if menu != shown
            && proxy
                .send_event(UserEvent::Status(Box::new(next.clone())))
                .is_err()
        {
            break;
        }
        shown = menu;
        prev = next;
    }
    daemon.shutdown().await;
    drop(instance);
    // Dropping the sender is the signal `stop_and_wait` waits for.
    drop(stopped);
    let _ = proxy.send_event(UserEvent::Stopped);
}

/// How long the loop's end waits for the daemon's stop, which bounds itself (each server's
/// grace period, then a kill); this only guards against a stop that never ends.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// Starts the one shutdown (unless Quit or a signal already ran it to its end) and waits until
/// the driver has stopped every server and released the lock.
fn stop_and_wait(quit: &CancellationToken, stopped: &std::sync::mpsc::Receiver<Infallible>) {
    use std::sync::mpsc::TryRecvError;
    if let Err(TryRecvError::Disconnected) = stopped.try_recv() {
        return;
    }
    info!("the app is being ended; stopping every server");
    quit.cancel();
    if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(STOP_WAIT) {
        warn!("the servers did not stop in time");
    }
}

/// SIGTERM or SIGINT: the same stop as the foreground daemon's.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        },
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The tray icon, its menu as rendered, and the model it shows.
struct Ui {
    tray: TrayIcon,
    rendered: Rendered,
    model: TrayModel,
}

impl Ui {
    fn new(status: &DaemonStatus, login: Login, hosts: &HostsView) -> anyhow::Result<Ui> {
        let model = model::build_with(status, login, hosts);
        let rendered = Rendered::new(&model)?;
        let builder = TrayIconBuilder::new()
            .with_id("rmcp-mux")
            .with_menu(Box::new(rendered.menu.clone()))
            .with_tooltip(&model.tooltip);
        #[cfg(target_os = "macos")]
        let builder = builder.with_icon_templated(icon(model.icon)?);
        #[cfg(not(target_os = "macos"))]
        let builder = builder.with_icon(icon(model.icon)?);
        let tray = builder.build().context("cannot create the tray icon")?;
        Ok(Ui {
            tray,
            rendered,
            model,
        })
    }

    /// Shows a new snapshot: in place where the platform allows, rebuilt where it must be.
    fn show(&mut self, status: &DaemonStatus, login: Login, hosts: &HostsView) {
        let next = model::build_with(status, login, hosts);
        if next == self.model {
            return;
        }
        if next.shape(LIVE_SUBMENU_LABELS) != self.model.shape(LIVE_SUBMENU_LABELS) {
            match Rendered::new(&next) {
                Ok(r) => {
                    self.tray.set_menu(Some(Box::new(r.menu.clone())));
                    self.rendered = r;
                }
                Err(e) => warn!(error = format!("{e:#}"), "cannot rebuild the menu"),
            }
        } else {
            self.rendered.update(&self.model, &next);
        }
        if next.icon != self.model.icon {
            let res = icon(next.icon).and_then(|i| {
                #[cfg(target_os = "macos")]
                let r = self.tray.set_icon_templated(Some(i));
                #[cfg(not(target_os = "macos"))]
                let r = self.tray.set_icon(Some(i));
                r.context("cannot set the tray icon")
            });
            if let Err(e) = res {
                warn!(error = format!("{e:#}"), "tray icon");
            }
        }
        if next.tooltip != self.model.tooltip {
            let _ = self.tray.set_tooltip(Some(&next.tooltip));
        }
        self.model = next;
    }
}

/// The muda items of one model, kept so that they can be updated in place.
struct Rendered {
    menu: Menu,
    summary: MenuItem,
    setup: Option<MenuItem>,
    servers: Vec<ServerItems>,
    /// The Hosts submenu, kept with its items.
    _hosts_menu: Submenu,
    hosts: Vec<HostItems>,
    restart_all: MenuItem,
    open_config: MenuItem,
    open_logs: MenuItem,
    login: CheckMenuItem,
    quit: MenuItem,
}

struct ServerItems {
    submenu: Submenu,
    status: MenuItem,
    memory: MenuItem,
    sharing: MenuItem,
    users: MenuItem,
    restart: MenuItem,
    stop: MenuItem,
    start: MenuItem,
    copy_entry: MenuItem,
    instances: Vec<InstanceItems>,
}

/// One host's submenu inside Hosts.
struct HostItems {
    submenu: Submenu,
    connect: MenuItem,
    restore: MenuItem,
    open: MenuItem,
}

/// One instance's submenu inside its server's.
struct InstanceItems {
    /// Kept with its items, as the servers' submenus are.
    _submenu: Submenu,
    status: MenuItem,
    restart: MenuItem,
    stop: MenuItem,
}

fn item(i: &Item) -> MenuItem {
    MenuItem::with_id(i.id.as_str(), &i.label, i.enabled, None)
}

fn submenu_label(s: &model::ServerEntry) -> &str {
    if LIVE_SUBMENU_LABELS {
        &s.label
    } else {
        &s.steady_label
    }
}

impl Rendered {
    fn new(m: &TrayModel) -> anyhow::Result<Rendered> {
        let menu = Menu::new();
        let summary = item(&m.summary);
        menu.append(&summary)?;
        if let Some(err) = &m.config_error {
            menu.append(&item(err))?;
        }
        let setup = m.setup.as_ref().map(item);
        if let Some(s) = &setup {
            menu.append(s)?;
        }
        menu.append(&PredefinedMenuItem::separator())?;
        let mut servers = Vec::with_capacity(m.servers.len());
        for s in &m.servers {
            let mut items = ServerItems {
                submenu: Submenu::with_id(s.id.as_str(), submenu_label(s), true),
                status: item(&s.status),
                memory: item(&s.memory),
                sharing: item(&s.sharing),
                users: item(&s.users),
                restart: item(&s.restart),
                stop: item(&s.stop),
                start: item(&s.start),
                copy_entry: item(&s.copy_entry),
                instances: Vec::with_capacity(s.instances.len()),
            };
            items.submenu.append_items(&[
                &items.status,
                &items.memory,
                &items.sharing,
                &items.users,
            ])?;
            // A removed server offers nothing to do (the model says why in its status line).
            if !s.removed {
                items.submenu.append_items(&[
                    &PredefinedMenuItem::separator(),
                    &items.restart,
                    &items.stop,
                    &items.start,
                    &PredefinedMenuItem::separator(),
                    &items.copy_entry,
                ])?;
            }
            if !s.instances.is_empty() {
                items.submenu.append(&PredefinedMenuItem::separator())?;
            }
            for i in &s.instances {
                let sub = Submenu::with_id(i.id.as_str(), &i.label, true);
                let inst = InstanceItems {
                    _submenu: sub.clone(),
                    status: item(&i.status),
                    restart: item(&i.restart),
                    stop: item(&i.stop),
                };
                sub.append_items(&[
                    &inst.status,
                    &PredefinedMenuItem::separator(),
                    &inst.restart,
                    &inst.stop,
                ])?;
                items.submenu.append(&sub)?;
                items.instances.push(inst);
            }
            menu.append(&items.submenu)?;
            servers.push(items);
        }
        menu.append(&PredefinedMenuItem::separator())?;
        let hosts_menu = Submenu::with_id(model::ids::HOSTS, "Hosts", true);
        if let Some(none) = &m.no_hosts {
            hosts_menu.append(&item(none))?;
        }
        let mut hosts = Vec::with_capacity(m.hosts.len());
        for h in &m.hosts {
            let items = HostItems {
                submenu: Submenu::with_id(h.id.as_str(), &h.label, true),
                connect: item(&h.connect),
                restore: item(&h.restore),
                open: item(&h.open),
            };
            items.submenu.append_items(&[
                &items.connect,
                &items.restore,
                &PredefinedMenuItem::separator(),
                &items.open,
            ])?;
            hosts_menu.append(&items.submenu)?;
            hosts.push(items);
        }
        menu.append(&hosts_menu)?;
        let r = Rendered {
            summary,
            setup,
            servers,
            _hosts_menu: hosts_menu,
            hosts,
            restart_all: item(&m.restart_all),
            open_config: item(&m.open_config),
            open_logs: item(&m.open_logs),
            login: CheckMenuItem::with_id(
                m.login.id.as_str(),
                &m.login.label,
                m.login.enabled,
                m.login_checked,
                None,
            ),
            quit: item(&m.quit),
            menu,
        };
        r.menu.append_items(&[
            &PredefinedMenuItem::separator(),
            &r.restart_all,
            &r.open_config,
            &r.open_logs,
            &PredefinedMenuItem::separator(),
            &r.login,
            &PredefinedMenuItem::separator(),
            &r.quit,
        ])?;
        Ok(r)
    }

    /// Applies what changed between two models of the same shape, touching nothing else (each
    /// change is a D-Bus signal on Linux).
    fn update(&self, old: &TrayModel, new: &TrayModel) {
        sync(&self.summary, &old.summary, &new.summary);
        for ((r, o), n) in self.servers.iter().zip(&old.servers).zip(&new.servers) {
            if LIVE_SUBMENU_LABELS && o.label != n.label {
                r.submenu.set_text(&n.label);
            }
            sync(&r.status, &o.status, &n.status);
            sync(&r.memory, &o.memory, &n.memory);
            sync(&r.sharing, &o.sharing, &n.sharing);
            sync(&r.users, &o.users, &n.users);
            sync(&r.restart, &o.restart, &n.restart);
            sync(&r.stop, &o.stop, &n.stop);
            sync(&r.start, &o.start, &n.start);
            sync(&r.copy_entry, &o.copy_entry, &n.copy_entry);
            // Same shape: the same instances, in order.
            for ((ri, oi), ni) in r.instances.iter().zip(&o.instances).zip(&n.instances) {
                sync(&ri.status, &oi.status, &ni.status);
                sync(&ri.restart, &oi.restart, &ni.restart);
                sync(&ri.stop, &oi.stop, &ni.stop);
            }
        }
        if let (Some(r), Some(o), Some(n)) = (&self.setup, &old.setup, &new.setup) {
            sync(r, o, n);
        }
        for ((r, o), n) in self.hosts.iter().zip(&old.hosts).zip(&new.hosts) {
            if LIVE_SUBMENU_LABELS && o.label != n.label {
                r.submenu.set_text(&n.label);
            }
            sync(&r.connect, &o.connect, &n.connect);
            sync(&r.restore, &o.restore, &n.restore);
            sync(&r.open, &o.open, &n.open);
        }
        sync(&self.restart_all, &old.restart_all, &new.restart_all);
        sync(&self.open_config, &old.open_config, &new.open_config);
        sync(&self.open_logs, &old.open_logs, &new.open_logs);
        sync(&self.quit, &old.quit, &new.quit);
        if old.login.enabled != new.login.enabled {
            self.login.set_enabled(new.login.enabled);
        }
        if old.login_checked != new.login_checked {
            self.login.set_checked(new.login_checked);
        }
    }
}

fn sync(r: &MenuItem, old: &Item, new: &Item) {
    if old.label != new.label {
        r.set_text(&new.label);
    }
    if old.enabled != new.enabled {
        r.set_enabled(new.enabled);
    }
}

/// The icon of a state: a template image on macOS (tinted by the menu bar), coloured elsewhere.
/// The macOS ones are 44 px canvases: tray-icon sizes an image in points equal to its pixels,
/// capped at 22 pt, so they are drawn at 22 pt, 2x on Retina (tools/make-icons.py).
fn icon(state: IconState) -> anyhow::Result<Icon> {
    #[cfg(target_os = "macos")]
    let bytes: &[u8] = match state {
        IconState::Running => include_bytes!("../../public/tray-running-template@2x.png"),
        IconState::Busy => include_bytes!("../../public/tray-busy-template@2x.png"),
        IconState::Failed => include_bytes!("../../public/tray-failed-template@2x.png"),
        IconState::Stopped => include_bytes!("../../public/tray-stopped-template@2x.png"),
    };
    #[cfg(not(target_os = "macos"))]
    let bytes: &[u8] = match state {
        IconState::Running => include_bytes!("../../public/tray-running.png"),
        IconState::Busy => include_bytes!("../../public/tray-busy.png"),
        IconState::Failed => include_bytes!("../../public/tray-failed.png"),
        IconState::Stopped => include_bytes!("../../public/tray-stopped.png"),
    };
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .with_context(|| format!("icon {}", state.as_str()))?;
    let size = reader
        .output_buffer_size()
        .context("icon too large to decode")?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("icon {}", state.as_str()))?;
    anyhow::ensure!(
        info.color_type == png::ColorType::Rgba && info.bit_depth == png::BitDepth::Eight,
        "icon {} is not 8-bit RGBA",
        state.as_str()
    );
    buf.truncate(info.buffer_size());
    Icon::from_rgba(buf, info.width, info.height).context("bad icon")
}

/// Opens a file with the desktop's handler (a text editor for the config), on the runtime so
/// the child is reaped.
fn open(runtime: &Runtime, path: &Path, text: bool) {
    let path: PathBuf = path.to_owned();
    runtime.spawn(async move {
        let mut cmd = if cfg!(target_os = "macos") {
            let mut c = tokio::process::Command::new("open");
            if text {
                c.arg("-t");
            }
            c
        } else {
            tokio::process::Command::new("xdg-open")
        };
        cmd.arg(&path);
        match cmd.status().await {
            Ok(s) if s.success() => {}
            Ok(s) => warn!(path = %path.display(), %s, "the opener failed"),
            Err(e) => warn!(path = %path.display(), error = %e, "cannot start the opener"),
        }
    });
}
