//! Resident memory of the daemon and of each child's whole process group (`npx` and the node
//! process it starts both count), for `status`, the dashboard and the menu.
//!
//! Linux reads `/proc/PID/stat` (the kernel's own interface; one pass over `/proc` gives every
//! group at once); macOS asks libproc (`proc_listpgrppids`, `proc_pidinfo`). Elsewhere nothing
//! is measured. It is read when a status is asked for, never on the message path.

use std::collections::HashMap;

/// The resident bytes of the process groups led by `leaders`, and of this process.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Resident bytes per process group (keyed by its leader's pid).
    pub groups: HashMap<u32, u64>,
    /// This process's resident bytes.
    pub own: Option<u64>,
}

impl Sample {
    /// The resident bytes of the group led by `pid`, if it was measured.
    pub fn group(&self, pid: u32) -> Option<u64> {
        self.groups.get(&pid).copied()
    }
}

/// Measures the groups led by `leaders` and this process.
pub fn sample(leaders: &[u32]) -> Sample {
    imp::sample(leaders)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Sample;

    /// `(pgrp, rss pages)` from the text of `/proc/PID/stat`.
    pub(super) fn parse_stat(stat: &str) -> Option<(u32, u64)> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // After the name: state, ppid, pgrp (index 2) … rss (field 24 of the line: index 21).
        Some((fields.get(2)?.parse().ok()?, fields.get(21)?.parse().ok()?))
    }

    pub(super) fn sample(leaders: &[u32]) -> Sample {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64);
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
            .map(|(_, pages)| pages * page);
        let mut groups = std::collections::HashMap::new();
        if !leaders.is_empty() {
            for &l in leaders {
                groups.insert(l, 0);
            }
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for entry in dir.flatten() {
                    let name = entry.file_name();
                    let Some(pid) = name
                        .to_str()
                        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    else {
                        continue;
                    };
                    // A process that ended meanwhile is simply not counted.
                    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                        continue;
                    };
                    if let Some((pgrp, pages)) = parse_stat(&stat) {
                        if let Some(sum) = groups.get_mut(&pgrp) {
                            *sum += pages * page;
                        }
                    }
                }
            }
            groups.retain(|_, v| *v > 0);
        }
        Sample { groups, own }
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::Sample;
    use std::mem::{size_of, MaybeUninit};

    /// The resident bytes of one process, from libproc.
    fn rss(pid: i32) -> Option<u64> {
        let mut info = MaybeUninit::<libc::proc_taskinfo>::zeroed();
        let size = size_of::<libc::proc_taskinfo>() as libc::c_int;
        // SAFETY: the buffer is a proc_taskinfo of the size given, which PROC_PIDTASKINFO fills.
        let n = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDTASKINFO,
                0,
                info.as_mut_ptr().cast(),
                size,
            )
        };
        // SAFETY: a return of the full size means the struct was written.
        (n == size).then(|| unsafe { info.assume_init() }.pti_resident_size)
    }

    pub(super) fn sample(leaders: &[u32]) -> Sample {
        let mut groups = std::collections::HashMap::new();
        for &leader in leaders {
            let mut pids = vec![0 as libc::pid_t; 256];
            let bytes = (pids.len() * size_of::<libc::pid_t>()) as libc::c_int;
            // SAFETY: the buffer holds `bytes` bytes of pids.
            let n = unsafe {
                libc::proc_listpgrppids(leader as libc::pid_t, pids.as_mut_ptr().cast(), bytes)
            };
            if n <= 0 {
                continue;
            }
            let count = (n as usize / size_of::<libc::pid_t>()).min(pids.len());
            let sum: u64 = pids[..count]
                .iter()
                .filter(|p| **p > 0)
                .filter_map(|p| rss(*p))
                .sum();
            if sum > 0 {
                groups.insert(leader, sum);
            }
        }
        Sample {
            groups,
            own: rss(std::process::id() as i32),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    use super::Sample;

    pub(super) fn sample(_leaders: &[u32]) -> Sample {
        Sample::default()
    }
}

/// What is read from `/proc`, checked where it exists.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_group_and_pages_even_with_odd_names() {
        let line = "4242 (node (x) y) S 1 4240 4240 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 11 0 99 1234567 2048 18446744073709551615";
        assert_eq!(imp::parse_stat(line), Some((4240, 2048)));
    }

    #[test]
    fn a_child_group_is_measured_with_its_grandchildren() {
        use std::os::unix::process::CommandExt;
        // A shell leading its own group with a sleeping child: both count.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .unwrap()
            .unwrap() as u64;
        let (mut one, mut both) = (0, 0);
        while std::time::Instant::now() < deadline {
            let s = sample(&[pid]);
            assert!(s.own.is_some_and(|b| b > 0));
            both = s.group(pid).unwrap_or(0);
            let me = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            one = imp::parse_stat(&me).unwrap().1 * page;
            if both > one {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert!(
            both > one,
            "the group ({both}) is more than its leader ({one})"
        );
    }
}
