//! The `nmid` binary as a child process: started on 127.0.0.1:0, its log read, its memory
//! measured, and killed by PID when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NMID: &str = env!("CARGO_BIN_EXE_nmid");
/// How long `nmid` may take to start, to log something, or to exit when it should.
pub const PROCESS_PATIENCE: Duration = Duration::from_secs(10);

/// A running `nmid` process, killed on drop if still running.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub http: Option<SocketAddr>,
    log: std::sync::mpsc::Receiver<String>,
    /// Every log line read so far.
    pub seen: Vec<String>,
}

impl Process {
    /// Starts `nmid` with `args` on 127.0.0.1:0 and reads its address from its log.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`Process::start`], with environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(NMID);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start nmid");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            http: None,
            log,
            seen: Vec::new(),
        };
        let line = process.wait_for_log("nmid protocol listening");
        process.addr = addr_in(&line);
        if !args.contains(&"--no-http") {
            process.http = Some(addr_in(&process.wait_for_log("http listening")));
        }
        process
    }

    /// The first log line containing `needle`, within [`PROCESS_PATIENCE`].
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PROCESS_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("nmid never logged {needle:?}; it logged {:#?}", self.seen),
            }
        }
    }

    /// Reads the log lines that arrived so far into `seen`, without waiting.
    pub fn drain_log(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
    }

    /// Every log line, once the process has exited and closed its stderr.
    pub fn whole_log(mut self) -> Vec<String> {
        let deadline = Instant::now() + PROCESS_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return std::mem::take(&mut self.seen)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("nmid's stderr stayed open; it logged {:#?}", self.seen)
                }
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nmid did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `addr` field of a log line: `addr=..` in text, `"fields": {"addr": ..}` in JSON.
pub fn addr_in(line: &str) -> SocketAddr {
    let addr = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => json["fields"]["addr"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Err(_) => line.rsplit("addr=").next().unwrap().trim().to_owned(),
    };
    addr.parse()
        .unwrap_or_else(|_| panic!("address in {line:?}"))
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// The process's resident memory now, in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.child.id())
    }
}

/// The resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = (status.lines())
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}
