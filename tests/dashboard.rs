//! The real dashboard in a real terminal: `rmcp-mux dashboard` and `rmcp-mux --tui` run in a
//! detached tmux session of fixed size; the test types keys (`send-keys`), reads the screen
//! (`capture-pane`) and checks every action against the daemon's own `status --json`.
//!
//! Without tmux these tests say SKIPPED; CI sets RMCP_MUX_REQUIRE_PEERS=1 (and `.ci/run`
//! installs tmux) so that they must run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A private tmux server (own socket name, own TMUX_TMPDIR), killed on drop.
struct Tmux {
    name: String,
    tmpdir: tempfile::TempDir,
    home: PathBuf,
}

impl Tmux {
    /// A tmux server for one test, or `None` (SKIPPED) when tmux is not installed.
    fn new(test: &str, home: &Path) -> Option<Tmux> {
        if let Err(why) = Command::new("tmux").arg("-V").output() {
            let required = std::env::var_os("RMCP_MUX_REQUIRE_PEERS").is_some();
            assert!(!required, "tmux is required for the dashboard tests: {why}");
            eprintln!("SKIPPED: tmux is not installed ({why}); `apt-get install tmux`");
            return None;
        }
        let tmpdir = tempfile::tempdir().unwrap();
        // Windows stay after their command exits, so the test can read the exit status.
        std::fs::write(
            tmpdir.path().join("tmux.conf"),
            "set -g remain-on-exit on\nset -g status off\n",
        )
        .unwrap();
        Some(Tmux {
            name: format!("rmcp-mux-test-{test}-{}", std::process::id()),
            tmpdir,
            home: home.to_owned(),
        })
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.name)
            .arg("-f")
            .arg(self.tmpdir.path().join("tmux.conf"))
            .args(args)
            .env("TMUX_TMPDIR", self.tmpdir.path())
            .env_remove("TMUX")
            .env("HOME", &self.home)
            .env("XDG_STATE_HOME", self.home.join("state"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm-256color")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.tmux(args);
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` (run directly, no shell) in a detached 120x30 session.
    fn start(&self, argv: &[&str]) {
        let mut args = vec![
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "30",
            "--",
        ];
        args.extend_from_slice(argv);
        self.ok(&args);
    }

    fn screen(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &str) {
        self.ok(&["send-keys", "-t", "t", keys]);
    }

    fn pane(&self, format: &str) -> String {
        self.ok(&["display-message", "-p", "-t", "t", format])
            .trim()
            .to_owned()
    }

    /// Polls the screen (tmux offers no event for "the screen changed") until `pred` holds.
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the pane's command has exited; returns its exit status. Also checks that it
    /// gave the terminal back: it left the alternate screen it drew on.
    fn wait_exit(&self) -> i32 {
        let pid: i32 = self.pane("#{pane_pid}").parse().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if self.pane("#{pane_dead}") == "1" {
                if let Some(status) = self.exit_status(pid) {
                    assert_eq!(
                        self.pane("#{alternate_on}"),
                        "0",
                        "the terminal was not restored"
                    );
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard did not exit:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code of the pane's dead process (negative: killed by that signal).
    fn exit_status(&self, pid: i32) -> Option<i32> {
        if let Ok(code) = self.pane("#{pane_dead_status}").parse() {
            return Some(code);
        }
        if let Ok(signal) = self.pane("#{pane_dead_signal}").parse::<i32>() {
            return Some(-signal);
        }
        // With several tmux servers at once, tmux sometimes leaves its dead child unreaped
        // for a long while; a zombie still has its wait status in /proc/PID/stat (field 52).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        if fields.first() != Some(&"Z") {
            return None;
        }
        let wait: i32 = fields.get(52 - 3)?.parse().ok()?;
        Some(if wait & 0x7f == 0 {
            (wait >> 8) & 0xff
        } else {
            -(wait & 0x7f)
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn fake(name: &str) -> String {
    format!(
        "[servers.{name}]\ncmd = \"{{fake}}\"\nargs = [\"--counter-file\", \"{{dir}}/{name}.starts\"]\nrestart_backoff_ms = 50\nshutdown_grace_ms = 500\n\n"
    )
}

/// The screen line that shows server `name` in the table.
fn row<'a>(screen: &'a str, name: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(&format!(" {name} ")))
        .unwrap_or_else(|| panic!("no row for {name}:\n{screen}"))
}

fn pid(v: &Value) -> u64 {
    v["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {v}"))
}

#[test]
fn dashboard_restarts_stops_and_starts_the_selected_server() {
    let mux = Mux::start(&(fake("alpha") + &fake("beta")));
    let Some(tmux) = Tmux::new("dashboard", mux.dir.path()) else {
        return;
    };
    let alpha = pid(&mux.wait_status("alpha", |s| s["state"] == "running"));
    let beta = pid(&mux.wait_status("beta", |s| s["state"] == "running"));
    let config = mux.config.display().to_string();
    tmux.start(&[MUX, "dashboard", "--config", &config]);

    let daemon_pid = format!("pid {}", mux.child.id());
    let screen = tmux.wait_screen("both servers running", |s| {
        s.contains(&daemon_pid)
            && s.lines()
                .any(|l| l.contains(" alpha ") && l.contains("running"))
            && s.lines()
                .any(|l| l.contains(" beta ") && l.contains("running"))
    });
    assert!(screen.contains(&config), "{screen}");
    assert_eq!(
        tmux.pane("#{alternate_on}"),
        "1",
        "draws on the alternate screen"
    );
    assert!(row(&screen, "alpha").contains(&alpha.to_string()));
    assert!(
        row(&screen, "alpha").contains("▶"),
        "alpha is selected first:\n{screen}"
    );
    for key in ["r restart", "s stop", "S start", "l log", "q/Esc quit"] {
        assert!(screen.contains(key), "footer lacks {key}:\n{screen}");
    }

    // j selects beta; r restarts it and only it.
    tmux.keys("j");
    tmux.wait_screen("beta selected", |s| row(s, "beta").contains("▶"));
    tmux.keys("r");
    let restarted = mux.wait_status("beta", |s| {
        s["state"] == "running" && s["pid"].as_u64().is_some_and(|p| p != beta)
    });
    assert_eq!(pid(&mux.server_status("alpha")), alpha, "alpha was touched");
    let new_pid = pid(&restarted).to_string();
    tmux.wait_screen("beta's new pid", |s| row(s, "beta").contains(&new_pid));

    // s stops beta, in the daemon and on the screen; start is now enabled.
    tmux.keys("s");
    mux.wait_status("beta", |s| s["state"] == "stopped");
    tmux.wait_screen("beta stopped", |s| row(s, "beta").contains("stopped"));
    assert_eq!(mux.server_status("alpha")["state"], "running");

    // S starts it again.
    tmux.keys("S");
    mux.wait_status("beta", |s| s["state"] == "running");
    tmux.wait_screen("beta running again", |s| row(s, "beta").contains("running"));

    // l opens beta's log; this daemon logs to its terminal, so the view says how to get a file.
    tmux.keys("l");
    tmux.wait_screen("the no-log-file hint", |s| {
        s.contains("this daemon logs to its terminal")
    });
    tmux.keys("Escape");
    tmux.wait_screen("the table again", |s| s.contains("Restarts"));

    // q quits: the process is gone with status 0 and the daemon is untouched.
    let dashboard_pid: i32 = tmux.pane("#{pane_pid}").parse().unwrap();
    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), 0, "{}", tmux.screen());
    wait_dead(dashboard_pid);
    assert_eq!(mux.server_status("alpha")["state"], "running");
}

#[test]
fn dashboard_says_when_the_daemon_is_gone_and_keeps_running() {
    let mut mux = Mux::start(&fake("alpha"));
    let Some(tmux) = Tmux::new("gone", mux.dir.path()) else {
        return;
    };
    let config = mux.config.display().to_string();
    tmux.start(&[MUX, "dashboard", "--config", &config]);
    tmux.wait_screen("alpha running", |s| s.contains("running"));
    mux.stop(nix::sys::signal::Signal::SIGTERM);
    let screen = tmux.wait_screen("daemon not reachable", |s| {
        s.contains("daemon not reachable")
    });
    assert!(
        screen.contains("no rmcp-mux daemon is listening"),
        "{screen}"
    );
    // A key that needs the daemon is refused on screen, not by a crash.
    // (Keys are handled in order: once `l` shows the log view, `r` was handled and survived.)
    tmux.keys("r");
    tmux.keys("l");
    tmux.wait_screen("the log view after r", |s| {
        s.contains("this daemon logs to its terminal")
    });
    assert_eq!(tmux.pane("#{pane_dead}"), "0", "{}", tmux.screen());
    tmux.keys("Escape");
    // The daemon comes back: the dashboard finds it again.
    let mux = mux.relaunch();
    let daemon_pid = format!("pid {}", mux.child.id());
    tmux.wait_screen("the new daemon", |s| {
        s.lines()
            .next()
            .is_some_and(|header| header.starts_with("rmcp-mux") && header.contains(&daemon_pid))
    });
    // SIGINT from outside (raw mode turns Ctrl-C into a key, so only `kill` sends one) ends it
    // as cleanly as `q`.
    let dashboard_pid: i32 = tmux.pane("#{pane_pid}").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dashboard_pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(tmux.wait_exit(), 0);
}

#[test]
fn tui_without_a_terminal_starts_nothing() {
    let (dir, config) = tui_config();
    let out = Command::new(MUX)
        .args(["--tui", "--config", &config])
        .env("HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "rmcp-mux: the dashboard needs a terminal (stdin and stdout); use `rmcp-mux status` in scripts\n"
    );
    assert!(out.stdout.is_empty(), "no escape codes on a non-terminal");
    assert!(!dir.path().join("run/control.sock").exists());
    assert!(
        !dir.path().join("alpha.starts").exists(),
        "a server was started"
    );
}

/// A config with two fake servers in a fresh temp HOME, for `--tui`.
fn tui_config() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let config = dir.path().join("mux.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol_socket = \"{d}/run/control.sock\"\nsocket_dir = \"{d}/run\"\n\n{}",
            (fake("alpha") + &fake("beta"))
                .replace("{fake}", FAKE)
                .replace("{dir}", &d)
        ),
    )
    .unwrap();
    (dir, config.display().to_string())
}

/// Starts `--tui` and waits for both servers; returns its pid, its children's pids and the log
/// file its status names.
fn start_tui(tmux: &Tmux, home: &Path, config: &str) -> (i32, Vec<i32>, PathBuf) {
    tmux.start(&[MUX, "--tui", "--config", config]);
    let screen = tmux.wait_screen("both servers running", |s| {
        s.lines()
            .any(|l| l.contains(" alpha ") && l.contains("running"))
            && s.lines()
                .any(|l| l.contains(" beta ") && l.contains("running"))
    });
    let tui_pid: i32 = tmux.pane("#{pane_pid}").parse().unwrap();
    assert!(screen.contains(&format!("pid {tui_pid}")), "{screen}");
    // The daemon inside answers the ordinary CLI too.
    let out = Command::new(MUX)
        .args(["status", "--json", "--config", config])
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pid"], tui_pid);
    let children: Vec<i32> = status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| pid(s) as i32)
        .collect();
    assert_eq!(children.len(), 2);
    // It logs to the config's log file in the user's own log folder, not to the screen.
    let log = PathBuf::from(
        status["log_file"]
            .as_str()
            .expect("a log file in the status"),
    );
    assert!(log.starts_with(home.join("state")), "{}", log.display());
    (tui_pid, children, log)
}

/// After `--tui` ended: no process and no socket left.
fn assert_all_gone(home: &Path, tui_pid: i32, children: Vec<i32>) {
    wait_dead(tui_pid);
    for child in children {
        wait_dead(child);
    }
    for sock in ["control", "alpha", "beta"] {
        let path = home.join(format!("run/{sock}.sock"));
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

#[test]
fn tui_stops_cleanly_on_sigterm() {
    let (dir, config) = tui_config();
    let Some(tmux) = Tmux::new("tui-term", dir.path()) else {
        return;
    };
    let (tui_pid, children, log) = start_tui(&tmux, dir.path(), &config);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tui_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(tmux.wait_exit(), 0, "{}", tmux.screen());
    assert_all_gone(dir.path(), tui_pid, children);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
}

/// Closing the terminal (here: the tmux server going away) sends SIGHUP: nobody is left to see
/// the dashboard, so `--tui` stops its servers instead of dying and orphaning them.
#[test]
fn tui_stops_cleanly_when_its_terminal_closes() {
    let (dir, config) = tui_config();
    let Some(tmux) = Tmux::new("tui-hup", dir.path()) else {
        return;
    };
    let (tui_pid, children, log) = start_tui(&tmux, dir.path(), &config);
    tmux.ok(&["kill-server"]);
    assert_all_gone(dir.path(), tui_pid, children);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("SIGHUP received"), "{log}");
}

#[test]
fn tui_runs_the_servers_and_q_stops_everything() {
    let (dir, config) = tui_config();
    let Some(tmux) = Tmux::new("tui", dir.path()) else {
        return;
    };
    let (tui_pid, children, log) = start_tui(&tmux, dir.path(), &config);
    assert!(dir.path().join("alpha.starts").exists());

    // Its log went to the file, and the log view shows alpha's lines from it.
    tmux.keys("l");
    let screen = tmux.wait_screen("alpha's log", |s| s.contains("server{name=alpha}"));
    assert!(!screen.contains("server{name=beta}"), "{screen}");
    let name = log.file_name().unwrap().to_str().unwrap();
    assert!(
        screen.contains("log: alpha · ") && screen.contains(name),
        "{screen}"
    );
    tmux.keys("Escape");
    tmux.wait_screen("the table again", |s| s.contains("Restarts"));

    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), 0, "{}", tmux.screen());
    assert_all_gone(dir.path(), tui_pid, children);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("rmcp-mux ready"), "{text}");
    assert!(text.contains("shutting down"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `rmcp-mux ARGS --config F` as the temporary user, with its output.
fn mux_as(home: &Path, config: &str, args: &[&str]) -> Output {
    Command::new(MUX)
        .args(args)
        .args(["--config", config])
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("RMCP_MUX_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A detached daemon (`daemon start`), stopped (`daemon stop`) on drop.
struct Detached<'a> {
    home: &'a Path,
    config: &'a str,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = mux_as(self.home, self.config, &["daemon", "stop"]);
    }
}

#[test]
fn dashboard_tails_a_detached_daemons_log_for_the_selected_server() {
    let (dir, config) = tui_config();
    let Some(tmux) = Tmux::new("detached", dir.path()) else {
        return;
    };
    let out = mux_as(dir.path(), &config, &["daemon", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _daemon = Detached {
        home: dir.path(),
        config: &config,
    };
    tmux.start(&[MUX, "dashboard", "--config", &config]);
    tmux.wait_screen("both servers running", |s| {
        s.lines()
            .any(|l| l.contains(" alpha ") && l.contains("running"))
            && s.lines()
                .any(|l| l.contains(" beta ") && l.contains("running"))
    });
    // beta's lines only, from the file the daemon's status names.
    tmux.keys("j");
    tmux.wait_screen("beta selected", |s| row(s, "beta").contains("▶"));
    tmux.keys("l");
    let screen = tmux.wait_screen("beta's log", |s| s.contains("server{name=beta}"));
    assert!(screen.contains("log: beta · "), "{screen}");
    assert!(!screen.contains("server{name=alpha}"), "{screen}");
    // Back up to alpha while the log is open: the view follows the selection.
    tmux.keys("k");
    tmux.wait_screen("alpha's log", |s| {
        s.contains("server{name=alpha}") && !s.contains("server{name=beta}")
    });
    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), 0, "{}", tmux.screen());
}
