//! Processes that escape their call's process group (a command that calls `setsid`, a
//! daemonizing script) are killed too.
//!
//! `nmid-faas` makes itself the *child subreaper* of its descendants (Linux's
//! `PR_SET_CHILD_SUBREAPER`): a process whose parent exits is re-parented to `nmid-faas`
//! rather than to init. Each call registers its process group while it runs; when a call
//! ends, every child of `nmid-faas` outside the groups of the calls still running is an
//! orphan left behind, and is killed (with its own group) and reaped. The sweep runs a few
//! times in the moments after the call ends, because a process is re-parented only once
//! its parent, killed with the call's group, has finished exiting.
//!
//! What is not covered: an escaped process is killed when *a* call ends, so one that a
//! call still running had started is killed too if another call ends first; and without
//! the subreaper (a kernel before 3.4, or a seccomp filter refusing `prctl`) escaped
//! processes survive, which is logged at start.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{debug, warn};

/// When, after a call ends, the orphans are looked for again (a killed shell's children
/// are re-parented as it finishes exiting).
const SWEEPS_AFTER: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// The process groups of the calls running now (each is its leader's PID), every exec
/// function together: the sweep leaves them alone.
static RUNNING: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

/// Makes this process the reaper of its orphaned descendants; logs when it cannot.
pub fn adopt_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    let set = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if set != 0 {
        let cause = std::io::Error::last_os_error();
        warn!(%cause, "cannot become the child subreaper: processes that leave their call's process group (setsid) will outlive their calls");
    }
}

/// A running call's process group, registered until dropped; dropping it sweeps the
/// orphans the call may have left.
#[derive(Debug)]
pub struct Registered(libc::pid_t);

impl Registered {
    /// Registers `pgid` as a running call's group.
    pub fn new(pgid: libc::pid_t) -> Self {
        running().insert(pgid);
        Self(pgid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        running().remove(&self.0);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async {
                let mut waited = Duration::ZERO;
                for at in SWEEPS_AFTER {
                    tokio::time::sleep(at - waited).await;
                    waited = at;
                    sweep();
                }
            });
        }
    }
}

fn running() -> std::sync::MutexGuard<'static, BTreeSet<libc::pid_t>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every child of this process outside the running calls' groups (with its group),
/// and reaps the ones that are dead already. Returns how many it killed.
pub fn sweep() -> usize {
    let me = std::process::id();
    // SAFETY: getpgrp takes nothing and cannot fail.
    let own_group = unsafe { libc::getpgrp() };
    let running = running().clone();
    let mut killed = 0;
    for child in children_of(me) {
        if running.contains(&child.pgid) {
            continue;
        }
        if child.zombie {
            // SAFETY: waitpid on a PID that is our child; WNOHANG never blocks.
            unsafe { libc::waitpid(child.pid, std::ptr::null_mut(), libc::WNOHANG) };
            continue;
        }
        debug!(
            pid = child.pid,
            pgid = child.pgid,
            "killing a process that outlived its call"
        );
        // SAFETY: kill and killpg take plain integers. The PID is our child's (not reaped,
        // so not reused); the group is not ours.
        unsafe {
            libc::kill(child.pid, libc::SIGKILL);
            if child.pgid != own_group && child.pgid > 1 {
                libc::killpg(child.pgid, libc::SIGKILL);
            }
        }
        killed += 1;
    }
    killed
}

/// A child process, as `/proc` shows it.
struct Child {
    pid: libc::pid_t,
    pgid: libc::pid_t,
    zombie: bool,
}

/// The children of process `parent`, from each process's `/proc/<pid>/stat`.
fn children_of(parent: u32) -> Vec<Child> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = i64::from(parent);
    (entries.flatten())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let state = fields.next()?;
            let ppid: i64 = fields.next()?.parse().ok()?;
            let pgid = fields.next()?.parse().ok()?;
            (ppid == parent).then_some(Child {
                pid,
                pgid,
                zombie: state == "Z",
            })
        })
        .collect()
}
