//! Child processes the harness starts, and what /proc says about them.
//!
//! Every child is held by a [`Proc`] whose `Drop` kills it (by its PID) and waits for it, so
//! nothing outlives the harness on any exit path; its PID is also listed in a process-wide
//! table that the SIGINT/SIGTERM handler kills. Role children re-executed from this binary
//! also exit by themselves when their stdin (a pipe from the harness) closes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

/// PIDs of the children alive now, for the signal handler.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// What a process is for, so that CPU can be summed by role in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The dispatcher or broker (nmid, nats-server, gearmand, the floor's echo server).
    Broker,
    /// A process serving the function.
    Worker,
    /// The load generator.
    Load,
}

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    /// A name for reports and errors (`nmid`, `worker-1`, ...).
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// Where its stderr (and stdout, unless piped) goes.
    pub log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with stdin piped (its end closes when this is dropped) and stderr to
    /// `log`; with `pipe_stdout` its stdout lines can be read with [`Proc::next_line`],
    /// otherwise stdout goes to the log too.
    pub fn spawn(
        name: &str,
        role: Role,
        mut cmd: Command,
        log: &Path,
        pipe_stdout: bool,
    ) -> anyhow::Result<Self> {
        let err = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let out = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(err.try_clone()?)
        };
        cmd.stdin(Stdio::piped()).stdout(out).stderr(err);
        let program = format!("{:?}", cmd.get_program());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({program})"))?;
        LIVE.lock().expect("live lock").push(child.id());
        let stdin = child.stdin.take();
        let lines = child.stdout.take().map(|stdout| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(Self {
            name: name.to_owned(),
            role,
            log: log.to_owned(),
            child,
            stdin,
            lines,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait: {e}")),
        }
    }

    /// The next stdout line, waiting at most until `deadline`. Errors when the process
    /// closed its stdout (exited) or the deadline passed.
    pub fn next_line(&mut self, deadline: Instant) -> anyhow::Result<String> {
        let lines = self
            .lines
            .as_ref()
            .ok_or_else(|| anyhow!("{}: stdout is not piped", self.name))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{}: no answer in time; log: {}", self.name, self.log_tail())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.wait_exit(Duration::from_secs(2));
                bail!("{} exited ({status}); log: {}", self.name, self.log_tail())
            }
        }
    }

    /// Writes `line` to the process's stdin.
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin closed", self.name))?;
        writeln!(stdin, "{line}").with_context(|| format!("write to {}", self.name))
    }

    /// Waits up to `limit` for the process to exit by itself; a description of how it ended.
    pub fn wait_exit(&mut self, limit: Duration) -> String {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.exited() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "still running".to_owned()
    }

    /// CPU seconds (user + system) the process has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid())
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        format!("{} [{}]", self.log.display(), tail)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let pid = self.child.id();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        LIVE.lock().expect("live lock").retain(|&p| p != pid);
    }
}

/// On SIGINT or SIGTERM: kill every child still alive (by PID), then exit 130.
pub fn kill_children_on_signal() {
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        let pids = LIVE.lock().expect("live lock").clone();
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        eprintln!(
            "compare: interrupted; stopped {} child processes",
            LIVE.lock().map_or(0, |l| l.len())
        );
        std::process::exit(130);
    });
}

/// In a role child: exit when the harness closes our stdin (it stopped or died), and in any
/// case after `lifetime`.
pub fn exit_with_parent(lifetime: Duration) {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut sink);
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        eprintln!("role: lifetime of {lifetime:?} over, exiting");
        std::process::exit(4);
    });
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of `pid` (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = &stat[stat
        .rfind(')')
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?
        + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((utime + stime) as f64 / clock_ticks())
}

/// Resident memory of `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

/// The soft and hard open-file limits of `pid` (from /proc/<pid>/limits).
pub fn nofile_limits(pid: u32) -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| anyhow!("no open-files line in /proc/{pid}/limits"))?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [soft, hard, ..] => Ok((soft, hard)),
        _ => bail!("cannot read the open-files limit: {line}"),
    }
}

/// Fails with a clear message when something already listens on 127.0.0.1:`port`.
pub fn ensure_port_free(port: u16, what: &str) -> anyhow::Result<()> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "port 127.0.0.1:{port} (for {what}) is busy ({e}); refusing to run. Stop what \
             holds it, or pick other ports with --port-base"
        ),
    }
}

/// Waits until `addr` accepts connections, failing early when `proc` exits.
pub fn wait_listening(addr: SocketAddr, proc: &mut Proc, limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited during start-up ({status}); log: {}",
                proc.name,
                proc.log_tail()
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!(
                "{} does not listen on {addr} after {limit:?}; log: {}",
                proc.name,
                proc.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the line `READY` from a role child.
pub fn wait_ready(proc: &mut Proc, limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    loop {
        let line = proc.next_line(until)?;
        if line == "READY" {
            return Ok(());
        }
        if let Some(reason) = line.strip_prefix("FAIL ") {
            bail!("{} failed to start: {reason}", proc.name);
        }
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0, small answers only); the body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    stream.take(16 * 1024 * 1024).read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("bad HTTP answer from {path}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}
