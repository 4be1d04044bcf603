//! The dispatcher's memory with idle connections: nmid's resident memory (VmRSS) when it
//! has just started, and again once it holds [`IDLE_CONNS`] client connections that send
//! nothing, opened by the harness itself.
//!
//! nmid starts under `prlimit --nofile` at the harness's hard limit; the harness raises its
//! own soft limit to its hard limit too (as the Makefile's `ulimit -n` does), and refuses to
//! run when that is still too low. Opening, accepting and settling are each bounded in time.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::procs;
use super::systems::sock;
use super::Harness;

/// Idle client connections of the memory test.
pub const IDLE_CONNS: usize = 10_000;
/// Longest time to open every connection.
const OPEN_LIMIT: Duration = Duration::from_secs(60);
/// Longest time for nmid to accept them all.
const ACCEPT_LIMIT: Duration = Duration::from_secs(20);
/// Longest time for nmid's RSS to settle once it holds them.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Memory of the dispatcher with idle connections.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Connections held.
    pub idle_conns: usize,
    /// RSS just after start, bytes.
    pub baseline_bytes: u64,
    /// RSS with the connections held, bytes.
    pub loaded_bytes: u64,
    /// The difference per connection.
    pub bytes_per_conn: f64,
}

/// Measures nmid's memory with [`IDLE_CONNS`] idle connections.
pub fn measure(h: &Harness) -> anyhow::Result<Memory> {
    let need = (IDLE_CONNS + 256) as u64;
    let me = std::process::id();
    let (soft, hard) = procs::nofile_limits(me)?;
    if soft < need && hard >= need {
        // Raise our own soft limit, as `ulimit -n` in the Makefile recipe would.
        let _ = Command::new("prlimit")
            .args(["--pid", &me.to_string(), &format!("--nofile={hard}:{hard}")])
            .status();
    }
    let (soft, hard) = procs::nofile_limits(me)?;
    if soft < need {
        bail!(
            "open-file limit {soft} (hard {hard}) is below {need}: run `ulimit -n {need}` \
             first (make bench raises it to the hard limit)"
        );
    }
    let mut nmid = h.launcher.start_nmid_for_idle(hard)?;
    let pid = nmid.pid();
    let (nmid_soft, _) = procs::nofile_limits(pid)?;
    if nmid_soft < need {
        bail!("nmid's open-file limit is {nmid_soft}, below {need}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let baseline_bytes = procs::rss_bytes(pid)?;
    let base_fds = fd_count(pid)?;
    let addr = sock(h.settings.ports.nmid_tcp);
    let mut conns = Vec::with_capacity(IDLE_CONNS);
    let deadline = Instant::now() + OPEN_LIMIT;
    while conns.len() < IDLE_CONNS {
        if Instant::now() > deadline {
            bail!("only {} connections opened in {OPEN_LIMIT:?}", conns.len());
        }
        conns.push(
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("connection {} of {IDLE_CONNS}", conns.len() + 1))?,
        );
    }
    let accepted_by = Instant::now() + ACCEPT_LIMIT;
    while fd_count(pid)? < base_fds + IDLE_CONNS {
        if Instant::now() > accepted_by || nmid.exited().is_some() {
            bail!(
                "nmid holds {} of {IDLE_CONNS} connections after {ACCEPT_LIMIT:?}",
                fd_count(pid)?.saturating_sub(base_fds)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let allocations settle: RSS unchanged over 500 ms, at most SETTLE_LIMIT.
    let mut last = procs::rss_bytes(pid)?;
    let settle_by = Instant::now() + SETTLE_LIMIT;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = procs::rss_bytes(pid)?;
        if now == last || Instant::now() > settle_by {
            last = now;
            break;
        }
        last = now;
    }
    drop(conns);
    Ok(Memory {
        idle_conns: IDLE_CONNS,
        baseline_bytes,
        loaded_bytes: last,
        bytes_per_conn: last.saturating_sub(baseline_bytes) as f64 / IDLE_CONNS as f64,
    })
}

/// Open file descriptors of `pid`.
fn fd_count(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
