//! What the cluster tests run for real: an etcd server (Debian's `etcd-server`, installed by
//! `make test`), a three-member etcd cluster ([`etcd_cluster::EtcdCluster`]) and `nmid`
//! processes joined to them, all on 127.0.0.1 with ports the test picks, each killed by its
//! PID when its guard drops (also when the test fails); and nmid's Go consumer as a test
//! double ([`go_consumer::GoConsumer`]).
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod etcd_cluster;
pub mod go_consumer;
pub mod load;
pub mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::process::ChildLog;

const NMID: &str = env!("CARGO_BIN_EXE_nmid");
/// How long etcd or `nmid` may take to start, or to log what a test waits for.
pub const PROCESS_PATIENCE: Duration = Duration::from_secs(15);
/// The lease TTL of the tests' dispatchers, in seconds (short, so that deaths show fast).
pub const TEST_LEASE_TTL_S: u64 = 2;

/// A port free on 127.0.0.1 right now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An etcd server of its own: a data directory and two ports on 127.0.0.1.
pub struct Etcd {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    client_port: u16,
    peer_port: u16,
    /// The client URL it advertises (its member list's), when not its own.
    advertised: Option<String>,
    dir: PathBuf,
}

impl Etcd {
    /// Starts etcd and waits until it answers; fails loudly when `etcd` is not installed.
    pub async fn start() -> Self {
        Self::start_on(None).await
    }

    /// Like [`Etcd::start`], serving clients on `client_port` when given (a port picked
    /// earlier, for a dispatcher started before its etcd).
    pub async fn start_on(client_port: Option<u16>) -> Self {
        Self::start_advertising(client_port, None).await
    }

    /// An etcd reached through a [`relay::Relay`] that the test can cut: its member list
    /// names the relay, so that clients that follow it stay behind the relay.
    pub async fn start_behind_relay() -> (Self, relay::Relay) {
        let mut relay = relay::Relay::bind();
        let etcd = Self::start_advertising(None, Some(relay.url.clone())).await;
        relay.forward_to(etcd.client_port);
        (etcd, relay)
    }

    async fn start_advertising(client_port: Option<u16>, advertised: Option<String>) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nmid-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut etcd = Self {
            child: None,
            url: String::new(),
            client_port: 0,
            peer_port: 0,
            advertised,
            dir,
        };
        // A port picked free may be taken before etcd binds it: pick again then.
        for _ in 0..3 {
            etcd.client_port = client_port.unwrap_or_else(free_port);
            etcd.peer_port = free_port();
            etcd.url = format!("http://127.0.0.1:{}", etcd.client_port);
            etcd.spawn();
            if etcd.ready().await {
                return etcd;
            }
            etcd.kill();
        }
        panic!(
            "etcd did not start on 127.0.0.1 (see its log in {:?})",
            etcd.dir
        );
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let advertised = self.advertised.clone().unwrap_or_else(|| client.clone());
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        std::fs::create_dir_all(&self.dir).expect("etcd's directory");
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd's log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &advertised,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): install Debian's etcd-server (make deps)")
            });
        self.child = Some(child);
    }

    /// Polls etcd until it answers a request, or its process exits, within the patience.
    async fn ready(&mut self) -> bool {
        let deadline = Instant::now() + PROCESS_PATIENCE;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            if let Ok(mut client) = self.client().await {
                if client.status().await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A client of this etcd.
    pub async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        etcd_client::Client::connect([self.url.as_str()], Some(options)).await
    }

    /// Every key under `prefix` with its value.
    pub async fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut client = self.client().await.expect("connect to etcd");
        let options = etcd_client::GetOptions::new().with_prefix();
        let listed = client.get(prefix, Some(options)).await.expect("etcd get");
        (listed.kvs().iter())
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect()
    }

    /// Kills etcd by its PID (SIGKILL) and waits for it; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(self.ready().await, "etcd did not come back");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `nmid` process joined to an etcd, on 127.0.0.1 ports of its own.
pub struct Nmid {
    child: Child,
    /// Its stderr, searched for panics whenever it is stopped.
    log: ChildLog,
    /// Its nmid protocol address (also the address it advertises).
    pub tcp: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its id in the cluster.
    pub id: String,
    /// When it logged that its etcd session was up.
    pub registered_at: Instant,
}

impl Nmid {
    /// Starts `nmid --etcd <url>` with a 2 s lease and quick publishing, and waits until it
    /// has registered in etcd.
    pub fn start(etcd_url: &str) -> Self {
        Self::spawn(etcd_url, true, &[], &[])
    }

    /// Like [`Nmid::start`], with more command-line arguments (e.g. `--config FILE`).
    pub fn start_with_args(etcd_url: &str, args: &[&str]) -> Self {
        Self::spawn(etcd_url, true, &[], args)
    }

    /// Like [`Nmid::start`], with environment variables set (e.g. the OTLP endpoint); they
    /// override the tests' defaults (`NMID__DISCOVERY__LEASE_TTL_S`, ...).
    pub fn start_with_env(etcd_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(etcd_url, true, env, &[])
    }

    /// Like [`Nmid::start`], with both environment variables and arguments.
    pub fn start_with(etcd_url: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::spawn(etcd_url, true, env, args)
    }

    /// Starts `nmid --etcd <url>` and waits until it listens, not for etcd (which may be
    /// down); `id` is then empty.
    pub fn start_without_etcd(etcd_url: &str) -> Self {
        Self::spawn(etcd_url, false, &[], &[])
    }

    fn spawn(etcd_url: &str, registered: bool, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(NMID);
        // Port 0 unless the test names its own (a restart on the same address).
        for flag in ["--tcp-addr", "--http-addr"] {
            if !args.contains(&flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        command
            .args(["--etcd", etcd_url])
            .args(args)
            .env("NMID__DISCOVERY__LEASE_TTL_S", TEST_LEASE_TTL_S.to_string())
            .env("NMID__DISCOVERY__RETRY_MAX_MS", "500")
            .env("NMID__DISCOVERY__REQUEST_TIMEOUT_MS", "1000")
            .env("NMID__CLUSTER__PUBLISH_INTERVAL_MS", "100")
            .env("NMID__CLUSTER__PEER_RETRY_MS", "500")
            .env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start nmid");
        let mut log = ChildLog::read(child.stderr.take().expect("nmid's stderr"));
        let mut wait_for = |needle: &str| -> String {
            (log.wait_for(needle, PROCESS_PATIENCE))
                .unwrap_or_else(|seen| panic!("nmid never logged {needle:?}; it logged {seen:#?}"))
        };
        let tcp = field(&wait_for("nmid protocol listening"), "addr");
        let http = field(&wait_for("http listening"), "addr");
        let id = match registered {
            true => field(&wait_for("etcd session up"), "id"),
            false => String::new(),
        };
        Self {
            child,
            log,
            tcp: tcp.parse().expect("nmid's address"),
            http: http.parse().expect("nmid's HTTP address"),
            id,
            registered_at: Instant::now(),
        }
    }

    /// The lines it logged so far that contain `needle`.
    pub fn logged(&self, needle: &str) -> Vec<String> {
        self.log.logged(needle)
    }

    /// The value of the series `series` (a metric name, with its labels if it has any, as
    /// `/metrics` prints them) on its `/metrics`; `None` when it is not there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_at(self.http, series).await
    }

    /// Its two keys in etcd: its membership record and its nmid key.
    pub fn keys(&self) -> [String; 2] {
        [
            format!("nmid-rs/cluster/{}", self.id),
            format!("nmid/~dispatcher-{}", self.id),
        ]
    }

    /// Its process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the process by its PID and waits until it is gone (its sockets closed by
    /// the kernel); returns when it was reaped.
    pub fn kill(&mut self) -> Instant {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let reaped = Instant::now();
        self.assert_no_panic();
        reaped
    }

    /// Fails the test if the process (stopped) reported a panic.
    fn assert_no_panic(&mut self) {
        let who = format!("nmid (pid {}) {}", self.child.id(), self.id);
        self.log.assert_no_panic(&who);
    }

    /// SIGTERM by its PID; waits (bounded) for it to drain and exit, and returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM to nmid {pid}");
        let deadline = Instant::now() + PROCESS_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for nmid") {
                self.assert_no_panic();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nmid {pid} did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET <path>` on its HTTP port, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.http);
        let mut response = awc::Client::default()
            .get(url)
            .send()
            .await
            .expect("HTTP request");
        response.json().await.expect("a JSON body")
    }

    /// Polls `GET <path>` until `check` holds, at most `limit`; returns the time it took.
    pub async fn wait_json(
        &self,
        path: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let value = self.get_json(path).await;
            if check(&value) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; {path} says {value:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nmid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.assert_no_panic();
    }
}

/// The value of the series `series` on the `/metrics` of the dispatcher whose HTTP address
/// is `http`; `None` when it is not there or the dispatcher does not answer.
pub async fn metric_at(http: SocketAddr, series: &str) -> Option<f64> {
    let url = format!("http://{http}/metrics");
    let mut response = awc::Client::default().get(url).send().await.ok()?;
    let body = response.body().limit(8 << 20).await.ok()?;
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().find(|l| {
        l.strip_prefix(series)
            .is_some_and(|rest| rest.starts_with(' '))
    })?;
    line.rsplit(' ').next()?.parse().ok()
}

/// The value of `name=` in a text log line.
fn field(line: &str, name: &str) -> String {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        + name.len()
        + 2;
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The member `id` of a `/api/v1/cluster` report, if listed.
pub fn member<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["members"].as_array()?.iter().find(|m| m["id"] == id)
}

/// The member `id` of `report` advertises `function`.
pub fn serves(report: &Value, id: &str, function: &str) -> bool {
    member(report, id)
        .and_then(|m| m["functions"].as_array())
        .is_some_and(|f| f.iter().any(|f| f == function))
}
