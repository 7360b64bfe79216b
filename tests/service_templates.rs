//! The service-manager templates in tools/: the systemd user unit and the launchd LaunchAgent.
//! Each is checked for the keys the README promises (the unit with `systemd-analyze verify`
//! where it exists, the plist by parsing it), and each one's command line is run for real, the
//! way the service manager would: in the foreground, logging to the rotated file, holding the
//! single-instance lock, stopping cleanly on SIGTERM.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const UNIT: &str = include_str!("../tools/systemd/rmcp-mux.service");
const PLIST: &str = include_str!("../tools/launchd/dev.rmcp-mux.daemon.plist");

/// A temporary HOME with `~/.rmcp-mux/mux.toml`, the path both templates use.
fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join(".rmcp-mux")).unwrap();
    std::fs::write(
        dir.path().join(".rmcp-mux/mux.toml"),
        format!("[daemon]\ncontrol_socket = \"{d}/run/control.sock\"\nsocket_dir = \"{d}/run\"\n\n[servers.f]\ncmd = \"{FAKE}\"\n"),
    )
    .unwrap();
    dir
}

/// Runs `args` as the service manager would and checks the daemon it gives.
fn run_like_a_service_manager(args: &[String], home: &Path) {
    let env = |c: &mut Command| {
        c.env("HOME", home)
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env_remove("RMCP_MUX_CONFIG");
    };
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let _stderr = Log::capture(child.stderr.take().unwrap());
    let guard = KillOnDrop(child.id() as i32);
    let config = home.join(".rmcp-mux/mux.toml");
    let deadline = Instant::now() + WAIT;
    let status: Value = loop {
        let mut c = Command::new(MUX);
        c.args(["daemon", "status", "--json", "--config"])
            .arg(&config);
        env(&mut c);
        let out = c.output().unwrap();
        if out.status.success() {
            let st: Value = serde_json::from_slice(&out.stdout).unwrap();
            if st["servers"][0]["state"] == "running" {
                break st;
            }
        }
        assert!(Instant::now() < deadline, "the service's daemon never ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["pid"], child.id());
    let log = status["log_file"].as_str().expect("logs to its file");
    assert!(
        log.starts_with(&home.join("state/rmcp-mux/logs").display().to_string()),
        "{log}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "it did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0), "a clean stop (no restart by the manager)");
    assert!(!home.join("run/f.sock").exists());
    let pid_files: Vec<_> = std::fs::read_dir(home.join("state/rmcp-mux"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("pid".as_ref()))
        .collect();
    assert!(pid_files.is_empty());
    drop(guard);
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn unit_value<'a>(key: &str) -> &'a str {
    UNIT.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_systemd_unit_is_valid_and_runs_the_daemon_in_the_foreground() {
    assert_eq!(unit_value("Type"), "simple");
    assert_eq!(unit_value("Restart"), "on-failure");
    assert_eq!(unit_value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(unit_value("WantedBy"), "default.target");
    let home = home();
    let h = home.path().display().to_string();
    let unit = UNIT
        .replace("%h/.cargo/bin/rmcp-mux", MUX)
        .replace("%h", &h);
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(
        !exec.iter().any(|a| a == "daemon"),
        "foreground, not detached"
    );
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let path = home.path().join("rmcp-mux.service");
            std::fs::write(&path, &unit).unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "systemd-analyze verify: {err}");
            assert!(!err.contains("Unknown"), "systemd-analyze verify: {err}");
        }
        _ => eprintln!("SKIPPED systemd-analyze verify: not installed"),
    }
    run_like_a_service_manager(&exec, home.path());
}

#[test]
fn the_launchd_plist_parses_and_runs_the_daemon_in_the_foreground() {
    // Apple's plists carry a DOCTYPE; allow it (roxmltree refuses DTDs by default).
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(PLIST, opts).expect("the plist is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "plist");
    let dict = root
        .children()
        .find(|n| n.is_element())
        .expect("a top-level dict");
    assert_eq!(dict.tag_name().name(), "dict");
    // A plist dict alternates <key> and value elements.
    let items: Vec<roxmltree::Node> = dict.children().filter(|n| n.is_element()).collect();
    let value = |key: &str| {
        items
            .chunks(2)
            .find(|kv| kv[0].tag_name().name() == "key" && kv[0].text() == Some(key))
            .map(|kv| kv[1])
            .unwrap_or_else(|| panic!("no {key} in the plist"))
    };
    assert_eq!(value("Label").text(), Some("dev.rmcp-mux.daemon"));
    assert_eq!(value("RunAtLoad").tag_name().name(), "true");
    let keep_alive: Vec<&str> = value("KeepAlive")
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.text().unwrap_or(n.tag_name().name()))
        .collect();
    assert_eq!(keep_alive, ["SuccessfulExit", "false"]);
    assert!(value("StandardErrorPath")
        .text()
        .unwrap()
        .starts_with("__HOME__/"));
    let home = home();
    let h = home.path().display().to_string();
    let args: Vec<String> = value("ProgramArguments")
        .children()
        .filter(|n| n.tag_name().name() == "string")
        .map(|n| {
            n.text()
                .unwrap()
                .replace("__RMCP_MUX__", MUX)
                .replace("__HOME__", &h)
        })
        .collect();
    assert_eq!(args[0], MUX);
    assert!(
        !args.iter().any(|a| a == "daemon"),
        "foreground, not detached"
    );
    run_like_a_service_manager(&args, home.path());
}
