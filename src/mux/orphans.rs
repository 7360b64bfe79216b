//! The record of the children a daemon runs, kept in the state folder, and the sweep that ends
//! those a daemon that died abruptly (SIGKILL, a crash, the OOM killer, Force Quit) left
//! behind.
//!
//! A daemon that stops normally stops its children itself; one killed outright cannot, and a
//! child that does not exit when its stdin closes (or a grandchild in its process group) would
//! run on for good. So each child is recorded when it starts (pid, process group, session and
//! start time: one small file per child) and forgotten once its group has been ended. The
//! next daemon of the same config, holding the config's lock (so no other daemon of it runs),
//! ends the recorded groups that are still alive and really ours: the recorded process itself
//! with the same start time, or, when it is gone, the members of its group that are in its
//! session and started no earlier than it did (a process group keeps its id from being reused
//! while it has members, so those are what it left). Anything else is left alone.
//!
//! It knows nothing of MCP or of the actor; `child` calls it when it starts and ends a child.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Where this daemon records its children, once it holds its config's lock.
static FOLDER: OnceLock<PathBuf> = OnceLock::new();

/// How long swept groups get after SIGTERM before SIGKILL.
const SWEEP_GRACE: Duration = Duration::from_millis(500);

/// One recorded child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Its pid.
    pub pid: u32,
    /// Its process group (the same as its pid: children lead a group of their own).
    pub pgid: u32,
    /// Its session (the daemon's): a left-behind grandchild is in it too.
    pub sid: u32,
    /// When it started, in the platform's own unit (clock ticks since boot on Linux,
    /// microseconds since the epoch on macOS): with the pid, it names one process for good.
    pub start: u64,
}

impl Record {
    /// The record of a running process, read from the system; `None` when it is gone.
    pub fn of(pid: u32) -> Option<Record> {
        let p = proc::stat(pid)?;
        Some(Record {
            pid,
            pgid: p.pgid,
            sid: p.sid,
            start: p.start,
        })
    }

    fn render(&self) -> String {
        format!("{} {} {} {}\n", self.pid, self.pgid, self.sid, self.start)
    }

    fn parse(text: &str) -> Option<Record> {
        let mut f = text.split_whitespace().map(str::parse::<u64>);
        let mut next = || f.next()?.ok();
        let small = |n: u64| u32::try_from(n).ok().filter(|n| *n > 1);
        Some(Record {
            pid: small(next()?)?,
            pgid: small(next()?)?,
            sid: u32::try_from(next()?).ok()?,
            start: next()?,
        })
    }
}

/// From now on, children started by this process are recorded in `folder` (made 0700 when
/// missing). Called once, by the daemon holding its config's lock, after [`sweep`].
///
/// # Errors
/// The folder cannot be made.
pub fn record_in(folder: PathBuf) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)?;
    let _ = FOLDER.set(folder);
    Ok(())
}

/// Records a child that just started (a failure is logged: the child runs regardless).
pub fn started(pid: u32) {
    let Some(folder) = FOLDER.get() else { return };
    let Some(record) = Record::of(pid) else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(folder.join(pid.to_string()))
        .and_then(|mut f| f.write_all(record.render().as_bytes()));
    if let Err(e) = written {
        tracing::warn!(pid, error = %e, "cannot record the child; a crash of the daemon could leave it running");
    }
}

/// Forgets a child whose process group has been ended.
pub fn ended(pid: u32) {
    if let Some(folder) = FOLDER.get() {
        let _ = std::fs::remove_file(folder.join(pid.to_string()));
    }
}

/// Ends the groups recorded in `folder` that are still alive and ours (SIGTERM, then SIGKILL
/// after a short grace) and clears the records; returns the processes it ended. Call only
/// while holding the config's lock: the records are then a dead daemon's.
pub fn sweep(folder: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let record = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| Record::parse(&t));
        let _ = std::fs::remove_file(&path);
        if let Some(record) = record {
            let members = ours(&record);
            if !members.is_empty() {
                groups.push((record.pgid, members));
            }
        }
    }
    let mut ended: Vec<u32> = Vec::new();
    for (pgid, members) in &groups {
        tracing::warn!(
            pgid,
            processes = ?members,
            "ending processes a daemon that did not stop normally left running"
        );
        signal_group(*pgid, Signal::SIGTERM);
        ended.extend(members);
    }
    let deadline = Instant::now() + SWEEP_GRACE;
    while ended.iter().any(|p| proc::stat(*p).is_some()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (pgid, _) in &groups {
        signal_group(*pgid, Signal::SIGKILL);
    }
    ended
}

/// The live processes of a recorded child's group that are ours: the whole group when the
/// child itself still runs; when it is gone, its group's members in its session that started
/// no earlier (all of them, or none when any is not: then the group is not ours).
fn ours(record: &Record) -> Vec<u32> {
    let leader = proc::stat(record.pid);
    if let Some(p) = &leader {
        if p.start != record.start {
            // The pid was reused: a group keeps its id while it has members, so ours is empty.
            return Vec::new();
        }
    }
    let members = proc::group(record.pgid);
    if leader.is_some() {
        return members;
    }
    let theirs = |pid: &u32| {
        proc::stat(*pid)
            .is_none_or(|p| p.pgid != record.pgid || p.sid != record.sid || p.start < record.start)
    };
    if members.iter().any(theirs) {
        return Vec::new();
    }
    members
}

fn signal_group(pgid: u32, sig: Signal) {
    if let Ok(g) = i32::try_from(pgid) {
        if g > 1 {
            let _ = nix::sys::signal::killpg(Pid::from_raw(g), sig);
        }
    }
}

/// What the system says of one process.
struct Stat {
    pgid: u32,
    sid: u32,
    start: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod proc {
    use super::Stat;

    /// `/proc/PID/stat`; a zombie counts as gone.
    pub(super) fn stat(pid: u32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let rest = text.get(text.rfind(')')? + 1..)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state); pgrp is field 5, the session id field 6, starttime 22.
        if *f.first()? == "Z" || *f.first()? == "X" {
            return None;
        }
        Some(Stat {
            pgid: f.get(2)?.parse().ok()?,
            sid: f.get(3)?.parse().ok()?,
            start: f.get(19)?.parse().ok()?,
        })
    }

    /// The live processes whose process group is `pgid`.
    pub(super) fn group(pgid: u32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| stat(*pid).is_some_and(|s| s.pgid == pgid))
            .collect()
    }
}

#[cfg(target_os = "macos")]
mod proc {
    use super::Stat;
    use nix::libc;

    /// `proc_pidinfo(PROC_PIDTBSDINFO)` and `getsid`; a zombie counts as gone.
    pub(super) fn stat(pid: u32) -> Option<Stat> {
        let raw = i32::try_from(pid).ok()?;
        // SAFETY: proc_bsdinfo is plain old data; all-zero is a valid value.
        let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
        let size = i32::try_from(std::mem::size_of::<libc::proc_bsdinfo>()).ok()?;
        // SAFETY: the kernel writes at most `size` bytes into `info`.
        let got = unsafe {
            libc::proc_pidinfo(
                raw,
                libc::PROC_PIDTBSDINFO,
                0,
                std::ptr::addr_of_mut!(info).cast(),
                size,
            )
        };
        if got != size || info.pbi_status == libc::SZOMB {
            return None;
        }
        let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(raw))).ok()?;
        Some(Stat {
            pgid: info.pbi_pgid,
            sid: u32::try_from(sid.as_raw()).ok()?,
            start: info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec,
        })
    }

    /// The live processes whose process group is `pgid` (`proc_listpgrppids`).
    pub(super) fn group(pgid: u32) -> Vec<u32> {
        let Ok(raw) = i32::try_from(pgid) else {
            return Vec::new();
        };
        let mut pids = vec![0 as libc::pid_t; 256];
        let bytes = i32::try_from(pids.len() * std::mem::size_of::<libc::pid_t>()).unwrap_or(0);
        // SAFETY: the kernel writes at most `bytes` bytes of pids into `pids`.
        let n = unsafe { libc::proc_listpgrppids(raw, pids.as_mut_ptr().cast(), bytes) };
        let n = usize::try_from(n).unwrap_or(0).min(pids.len());
        pids[..n]
            .iter()
            .filter_map(|p| u32::try_from(*p).ok())
            .filter(|p| *p > 0 && stat(*p).is_some())
            .collect()
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
mod proc {
    use super::Stat;

    /// Not known here: nothing is recorded, so nothing is swept.
    pub(super) fn stat(_pid: u32) -> Option<Stat> {
        None
    }

    pub(super) fn group(_pgid: u32) -> Vec<u32> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_pids_that_must_never_be_signalled() {
        let r = Record {
            pid: 4242,
            pgid: 4242,
            sid: 17,
            start: 123_456_789,
        };
        assert_eq!(Record::parse(&r.render()), Some(r));
        for bad in ["", "1 1 1 1", "0 5 5 5", "5 1 5 5", "5 5 5", "x 5 5 5"] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    #[cfg(any(target_os = "linux", target_os = "macos"))]
    #[test]
    fn this_process_is_found_and_a_stale_record_of_its_pid_is_not_ours() {
        let me = Record::of(std::process::id()).expect("this process");
        assert_eq!(
            Record::of(std::process::id()),
            Some(me),
            "the same start time"
        );
        // The same pid with another start time: a reused pid, never signalled.
        let stale = Record {
            start: me.start.wrapping_add(1),
            ..me
        };
        assert!(ours(&stale).is_empty());
    }

    /// A recorded group whose leader still runs (what a daemon killed outright leaves where
    /// the kernel does not end its children) is ended whole, grandchild included; the records
    /// are cleared.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    #[test]
    fn a_recorded_group_still_running_is_ended_whole() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & echo $!; exec sleep 301"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(leader.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let record = Record::of(leader.id()).unwrap();
        assert_eq!(record.pgid, leader.id());
        std::fs::write(dir.path().join(leader.id().to_string()), record.render()).unwrap();
        let mut ended = sweep(dir.path());
        ended.sort_unstable();
        let mut want = vec![leader.id(), grandchild];
        want.sort_unstable();
        assert_eq!(ended, want);
        assert!(leader.wait().is_ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc::stat(grandchild).is_some() {
            assert!(Instant::now() < deadline, "the grandchild lives on");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
