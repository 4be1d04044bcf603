//! `nmid-faas`, the real binary, serving a live in-process dispatcher over real TCP on
//! 127.0.0.1: exec functions (results over v1, tagged and HTTP; exit codes and stderr;
//! timeouts that leave no process behind; concurrency; 200 calls at once; reloads that add,
//! change and remove functions while calls run) in `exec.rs`, and http functions against a
//! test HTTP service (results, non-2xx, upstream down or slow) and the examples in
//! `http.rs`; `--etcd` against real `nmid` processes and a real etcd in `discovery.rs`.
//! This file holds the harness: a guarded `nmid-faas` process and helpers.

#[path = "../cluster_support/mod.rs"]
mod cluster_support;
#[path = "../common/mod.rs"]
mod common;
mod deployed;
mod discovery;
mod dispatcher_lost;
mod exec;
mod http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::ChildLog;
use common::{TestDispatcher, PATIENCE};
use serde::Serialize;

/// How long a call through a spawned process may take on a loaded 2-core machine.
pub const SLOW: Duration = Duration::from_secs(20);

#[derive(Serialize)]
pub struct Name<'a> {
    pub name: &'a str,
}

/// A running `nmid-faas` on a file of its own; killed (by PID) when dropped.
pub struct Faas {
    child: Child,
    dir: PathBuf,
}

impl Faas {
    /// Writes `functions` as the file and starts `nmid-faas` for `dispatcher`.
    pub fn start(dispatcher: &TestDispatcher, functions: &str) -> Self {
        Self::start_with(dispatcher, functions, &[])
    }

    /// As [`Faas::start`], with more command-line arguments.
    pub fn start_with(dispatcher: &TestDispatcher, functions: &str, args: &[&str]) -> Self {
        let server = dispatcher.addr.to_string();
        Self::start_args(functions, &[args, &["--server", &server]].concat())
    }

    /// Writes `functions` as the file and starts `nmid-faas ARGS FILE`.
    pub fn start_args(functions: &str, args: &[&str]) -> Self {
        Self::start_env(functions, args, &[])
    }

    /// As [`Faas::start_args`], with these environment variables set.
    pub fn start_env(functions: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], functions, args, env)
    }

    /// As [`Faas::start_env`], run through `wrapper` (a program that execs the rest of its
    /// command line, as `setpriv` does), so that the PID is still nmid-faas's.
    pub fn start_wrapped(
        wrapper: &[&str],
        functions: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = temp_dir();
        std::fs::write(dir.join("functions.toml"), functions).unwrap();
        let faas = env!("CARGO_BIN_EXE_nmid-faas");
        let (program, wrapper_args) = match wrapper.split_first() {
            Some((program, rest)) => (*program, [rest, &[faas]].concat()),
            None => (faas, Vec::new()),
        };
        let child = Command::new(program)
            .args(wrapper_args)
            .args(args)
            .envs(env.iter().copied())
            .arg(dir.join("functions.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("start nmid-faas");
        Self { child, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces the functions file (atomically, as an editor or a ConfigMap update does).
    pub fn rewrite(&self, functions: &str) {
        let next = self.path("functions.toml.next");
        std::fs::write(&next, functions).unwrap();
        std::fs::rename(next, self.path("functions.toml")).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "nmid-faas never logged {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (a name for kill(1)) to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// SIGTERM, then waits for a graceful exit 0.
    pub async fn stop(mut self) {
        send_signal(self.child.id(), "TERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "nmid-faas exited {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nmid-faas did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Faas {
    /// Kills the process if still running, then fails the test if it reported a panic.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let who = format!("nmid-faas (pid {})", self.child.id());
        if !std::thread::panicking() {
            ChildLog::assert_no_panic_in_file(&self.path("stderr.log"), &who);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A helper process, killed by its PID when the test ends (or fails).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (a name for kill(1)) to `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nmid-faas-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A dispatcher (nmid protocol and HTTP) and an `nmid-faas` serving `functions` to it.
pub fn serving(functions: &str) -> (TestDispatcher, Faas) {
    let dispatcher = common::start_dispatcher_with_http(nmid::config::Config::default());
    let faas = Faas::start(&dispatcher, functions);
    (dispatcher, faas)
}

/// Waits until `function` has `workers` workers.
pub async fn served(dispatcher: &TestDispatcher, function: &str, workers: usize) {
    dispatcher
        .wait_for(&format!("{function} served by {workers}"), |s| {
            s.function(function).map_or(0, |f| f.workers) == workers
        })
        .await;
}

/// A port free on 127.0.0.1 now (for a process that binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test HTTP service on 127.0.0.1 with the routes `configure` adds, on the current actix
/// system; stop it with the handle.
pub fn start_upstream_with(
    configure: fn(&mut actix_web::web::ServiceConfig),
) -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || App::new().configure(configure))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (addr, handle)
}

/// Whether a process with `pid` is still running (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until none of `pids` runs, for at most `patience`; fails naming what they outlived,
/// with the faas's log.
pub async fn until_gone(pids: &[u32], outlived: &str, patience: Duration, faas: &Faas) {
    let deadline = Instant::now() + patience;
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "{pids:?} outlived {outlived}:\n{}",
            faas.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the file at `path` names `count` PIDs (a command wrote them), for at most
/// `patience`; fails with the faas's log.
pub async fn until_pids(path: &Path, count: usize, patience: Duration, faas: &Faas) -> Vec<u32> {
    let deadline = Instant::now() + patience;
    loop {
        let pids = read_pids(path);
        if pids.len() >= count {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the call never ran:\n{}",
            faas.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The PIDs a command wrote to `path`.
pub fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub async fn http_post(dispatcher: &TestDispatcher, function: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/call/{function}", dispatcher.http_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("HTTP call");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

pub const UPPER: &str = r#"
[[function]]
name = "Upper"
command = ["tr", "a-z", "A-Z"]
"#;
