//! The `nmid` binary as a child process: started on 127.0.0.1:0, its log read and searched
//! for panics, its memory measured, and killed by PID when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const NMID: &str = env!("CARGO_BIN_EXE_nmid");
/// How long `nmid` may take to start, to log something, or to exit when it should.
pub const PROCESS_PATIENCE: Duration = Duration::from_secs(10);

/// What a Rust program prints to stderr when one of its threads panics (the default panic
/// hook, which `nmid` keeps): `thread '<name>' panicked at <file>:<line>:<col>:`.
const PANIC_MARK: &str = "panicked at";
/// Lines kept after a panic's first line: its message, and the backtrace note.
const PANIC_TAIL_LINES: usize = 2;

/// A child process's stderr, read line by line on a thread of its own to the end: every
/// line is handed on to [`ChildLog::wait_for`], and every panic the process reports is kept.
/// A panic in an actor or a task does not stop `nmid` (tokio catches it and the process
/// goes on), so the test that started the process only sees it here: the owners of a
/// `ChildLog` call [`ChildLog::assert_no_panic`] whenever they stop the process.
pub struct ChildLog {
    lines: Receiver<String>,
    /// Every line received through [`ChildLog::wait_for`] or [`ChildLog::until_closed`].
    seen: Vec<String>,
    panics: Arc<Mutex<Vec<String>>>,
    /// Every line the process logged so far, whoever waited for it.
    all: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl ChildLog {
    /// Starts reading `stderr` (any pipe: a child's stderr, or a test's own bytes).
    pub fn read(stderr: impl Read + Send + 'static) -> Self {
        let (tx, lines) = std::sync::mpsc::channel();
        let panics = Arc::new(Mutex::new(Vec::new()));
        let found = panics.clone();
        let all = Arc::new(Mutex::new(Vec::new()));
        let kept = all.clone();
        let reader = std::thread::spawn(move || {
            let mut tail = 0;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut found = found.lock().unwrap_or_else(|p| p.into_inner());
                if line.contains(PANIC_MARK) {
                    found.push(line.clone());
                    tail = PANIC_TAIL_LINES;
                } else if tail > 0 {
                    tail -= 1;
                    if let Some(last) = found.last_mut() {
                        last.push('\n');
                        last.push_str(&line);
                    }
                }
                drop(found);
                (kept.lock().unwrap_or_else(|p| p.into_inner())).push(line.clone());
                // Nobody waits for lines any more: keep reading, so that the process never
                // blocks on a full pipe and its panics are still seen.
                let _ = tx.send(line);
            }
        });
        Self {
            lines,
            seen: Vec::new(),
            panics,
            all,
            reader: Some(reader),
        }
    }

    /// The first line containing `needle` within `patience`; `Err` with every line seen when
    /// none came (or the process closed its stderr first).
    pub fn wait_for(&mut self, needle: &str, patience: Duration) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => return Err(self.seen.clone()),
            }
        }
    }

    /// The lines the process logged so far that contain `needle`.
    pub fn logged(&self, needle: &str) -> Vec<String> {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Every line until the process closes its stderr (it exited), within `patience`; `Err`
    /// with the lines seen when it stays open.
    pub fn until_closed(&mut self, patience: Duration) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return Ok(self.seen.clone()),
                Err(RecvTimeoutError::Timeout) => return Err(self.seen.clone()),
            }
        }
    }

    /// The panics the process reported, each with its message: once it has exited, all of
    /// them (its stderr is read to the end, within [`PROCESS_PATIENCE`]).
    pub fn panics(&mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + PROCESS_PATIENCE;
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if reader.is_finished() {
                let _ = reader.join();
            } else {
                self.reader = Some(reader);
            }
        }
        self.panics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fails the test if the log file at `path`, which a process that has exited wrote its
    /// stderr to, reports a panic (`who` says which process).
    pub fn assert_no_panic_in_file(path: &std::path::Path, who: &str) {
        match std::fs::File::open(path) {
            Ok(file) => Self::read(file).assert_no_panic(who),
            Err(err) => panic!("{who}'s log {}: {err}", path.display()),
        }
    }

    /// Fails the test if `who` (a process that has exited or been killed) reported a panic;
    /// does nothing while the test is already failing (a second panic would abort).
    pub fn assert_no_panic(&mut self, who: &str) {
        if std::thread::panicking() {
            return;
        }
        let panics = self.panics();
        assert!(panics.is_empty(), "{who} panicked:\n{}", panics.join("\n"));
    }
}

/// A running `nmid` process (or, through [`Process::adopt`], another child of the test),
/// killed on drop if still running; its stderr is then scanned for panics.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub http: Option<SocketAddr>,
    log: ChildLog,
    /// The program, for messages (`nmid`, `nmid-faas`).
    name: String,
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
        let child = command
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start nmid");
        let mut process = Self::adopt(child, "nmid");
        let line = process.wait_for_log("nmid protocol listening");
        process.addr = addr_in(&line);
        if !args.contains(&"--no-http") {
            process.http = Some(addr_in(&process.wait_for_log("http listening")));
        }
        process
    }

    /// Watches `child`, started with its stderr piped (`nmid-faas`, a helper): killed when
    /// dropped, and the test fails then if it reported a panic. It has no address of its
    /// own (`addr` is unspecified, `http` is `None`).
    pub fn adopt(mut child: Child, name: &str) -> Self {
        let stderr = child.stderr.take().expect("the child's stderr is piped");
        Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            http: None,
            log: ChildLog::read(stderr),
            name: name.to_owned(),
        }
    }

    /// The first log line containing `needle`, within [`PROCESS_PATIENCE`].
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        (self.log.wait_for(needle, PROCESS_PATIENCE)).unwrap_or_else(|seen| {
            panic!("{} never logged {needle:?}; it logged {seen:#?}", self.name)
        })
    }

    /// Every log line that arrived so far, without waiting.
    pub fn log_so_far(&self) -> Vec<String> {
        self.log.logged("")
    }

    /// Every log line, once the process has exited and closed its stderr.
    pub fn whole_log(mut self) -> Vec<String> {
        (self.log.until_closed(PROCESS_PATIENCE))
            .unwrap_or_else(|seen| panic!("nmid's stderr stayed open; it logged {seen:#?}"))
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
    /// Kills the process if still running, then fails the test if it reported a panic.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let who = format!("{} (pid {})", self.name, self.child.id());
        self.log.assert_no_panic(&who);
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
