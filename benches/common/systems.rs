//! How each system is started, and the checks before anything is.
//!
//! - *us-tagged*, *us-v1*: the release `nmid` (`--no-http`) and 2 worker processes
//!   (`--role nmid-worker`, our worker library); the load generator connects to nmid's TCP port.
//! - *http*: the same nmid with its HTTP port; wrk posts to `/call/Echo`.
//! - *http-floor*: no dispatcher: a bare actix-web server (`--role http-echo-server`) with
//!   as many workers as nmid's HTTP front end, answering the same posts itself; wrk as for
//!   *http*.
//! - *us-tagged-auth*, *us-tagged-tls*: us-tagged with `[auth]` on (every process presents a
//!   token) or with `[tls]` on (certificates made for the run), for what each costs.
//! - *us-tagged-guard*: us-tagged with a per-client and a per-function rate limit (set far
//!   above the load, so every call is checked and none refused) and circuit breakers on.
//! - *nats*: `nats-server` and 2 responder processes in one queue group (see `peers`).
//! - *gearmand*: `gearmand --threads=2` and 2 worker processes of 2 connections each (see
//!   `peers`).
//! - *floor*, *floor-client*: no broker, just the echo server (`--role echo-server`).
//!
//! Every server binds 127.0.0.1 on a port from `--port-base` ([`Ports`]); every process is a
//! [`Proc`], killed by its PID when the [`Running`] system is dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use clap::ValueEnum;
use serde::Serialize;

use super::options::{value_name, Settings};
use super::procs::{self, Proc, Role};
use super::roles::loadgen::Caller;
use super::roles::RoleName;
use super::{payload, FUNCTION};

/// Slots of each of our worker connections (the dispatcher caps them at
/// `workers.max_jobs_in_flight`, 64 by default).
pub const WORKER_SLOTS: u32 = 256;
/// Longest start-up of any server.
pub const START_LIMIT: Duration = Duration::from_secs(15);

/// A system compared; the order of [`System::ALL`] is the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// nmid with our tagged (pipelined) client.
    UsTagged,
    /// nmid with v1 clients, one call at a time per connection.
    UsV1,
    /// nats-server request-reply.
    Nats,
    /// gearmand.
    Gearmand,
    /// The one-hop floor: a raw pipelined client and the echo server.
    Floor,
    /// One hop through our client library: the tagged client and the echo server.
    FloorClient,
    /// nmid's HTTP front end under wrk.
    Http,
    /// The HTTP floor: a bare actix-web server answering the posts itself, under wrk.
    HttpFloor,
    /// us-tagged with `[auth]` on: workers and client present a token.
    UsTaggedAuth,
    /// us-tagged with `[tls]` on: every connection is TLS.
    UsTaggedTls,
    /// us-tagged with `[rate_limit]` and `[breaker]` on.
    UsTaggedGuard,
}

/// What drives the calls of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Our load-generator role with this client.
    Role(Caller),
    /// wrk, with the Lua script that `load` writes.
    Wrk,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 8] = [
        System::UsTagged,
        System::UsV1,
        System::Nats,
        System::Gearmand,
        System::Floor,
        System::FloorClient,
        System::Http,
        System::HttpFloor,
    ];
    /// The systems that measure what a feature costs: us-tagged with it on (`make bench`
    /// runs them at 64 in flight, 32 B, beside us-tagged).
    pub const COSTS: [System; 3] = [
        System::UsTaggedAuth,
        System::UsTaggedTls,
        System::UsTaggedGuard,
    ];
    /// Every system `--systems` accepts: [`System::ALL`], then [`System::COSTS`].
    pub const KNOWN: [System; System::ALL.len() + System::COSTS.len()] = {
        let mut known = [System::UsTagged; System::ALL.len() + System::COSTS.len()];
        let mut i = 0;
        while i < known.len() {
            known[i] = match i < System::ALL.len() {
                true => System::ALL[i],
                false => System::COSTS[i - System::ALL.len()],
            };
            i += 1;
        }
        known
    };
    /// The systems of `--quick`: us, the two its ratio line divides us by, and HTTP (which
    /// it divides by us).
    pub const QUICK: [System; 4] = [System::UsTagged, System::Nats, System::Floor, System::Http];

    /// The id used on the command line and in the results (`us-tagged`).
    pub fn id(self) -> &'static str {
        match self {
            System::UsTagged => "us-tagged",
            System::UsV1 => "us-v1",
            System::Nats => "nats",
            System::Gearmand => "gearmand",
            System::Floor => "floor",
            System::FloorClient => "floor-client",
            System::Http => "http",
            System::HttpFloor => "http-floor",
            System::UsTaggedAuth => "us-tagged-auth",
            System::UsTaggedTls => "us-tagged-tls",
            System::UsTaggedGuard => "us-tagged-guard",
        }
    }

    /// The row label of the results table: what runs, and how many of each.
    pub fn label(self) -> &'static str {
        match self {
            System::UsTagged => "us, tagged (nmid + 2 workers, 1 pipelined client conn.)",
            System::UsV1 => "us, v1 clients (1 conn. per call in flight)",
            System::Nats => "nats-server request-reply (2 queue responders)",
            System::Gearmand => "gearmand --threads=2 (4 worker conns, pipelined client)",
            System::Floor => "one-hop floor (raw pipelined client <-> echo server, our frames)",
            System::FloorClient => "one hop, our client library (tagged Client <-> echo server)",
            System::Http => "us, HTTP POST /call/Echo (wrk)",
            System::HttpFloor => "bare actix-web echo (wrk), the HTTP floor",
            System::UsTaggedAuth => "us, tagged, [auth] on (tokens, per-call grant check)",
            System::UsTaggedTls => "us, tagged, [tls] on (every connection TLS 1.3)",
            System::UsTaggedGuard => "us, tagged, rate limits and breakers on (none refused)",
        }
    }

    /// What drives its calls.
    pub fn driver(self) -> Driver {
        match self {
            System::UsTagged
            | System::UsTaggedAuth
            | System::UsTaggedTls
            | System::UsTaggedGuard
            | System::FloorClient => Driver::Role(Caller::Tagged),
            System::UsV1 => Driver::Role(Caller::V1),
            System::Nats => Driver::Role(Caller::Nats),
            System::Gearmand => Driver::Role(Caller::Gearman),
            System::Floor => Driver::Role(Caller::Floor),
            System::Http | System::HttpFloor => Driver::Wrk,
        }
    }

    /// The outside program it needs on PATH, if any.
    fn tool(self) -> Option<&'static str> {
        match self {
            System::Nats => Some("nats-server"),
            System::Gearmand => Some("gearmand"),
            System::Http | System::HttpFloor => Some("wrk"),
            _ => None,
        }
    }

    /// Whether it runs the release `nmid` binary.
    fn runs_nmid(self) -> bool {
        matches!(
            self,
            System::UsTagged
                | System::UsV1
                | System::Http
                | System::UsTaggedAuth
                | System::UsTaggedTls
                | System::UsTaggedGuard
        )
    }
}

/// Listen ports, all on 127.0.0.1, at fixed offsets from `--port-base`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ports {
    /// nmid's TCP (nmid protocol) port.
    pub nmid_tcp: u16,
    /// nmid's HTTP port (the http system and the scale series).
    pub nmid_http: u16,
    /// nats-server.
    pub nats: u16,
    /// gearmand.
    pub gearmand: u16,
    /// The floor's echo server.
    pub floor: u16,
    /// The HTTP floor's bare actix-web server.
    pub http_floor: u16,
    /// The cluster section's etcd (clients; its peer port is the next one).
    pub etcd: u16,
    /// The cluster section's dispatchers A, B, C (nmid protocol) and B's HTTP: this port
    /// and the three after it.
    pub cluster_tcp: u16,
}

impl Ports {
    /// The ports of `--port-base base`.
    pub fn new(base: u16) -> Self {
        Self {
            nmid_tcp: base + 8,
            nmid_http: base + 9,
            nats: base + 22,
            gearmand: base + 30,
            floor: base + 40,
            http_floor: base + 41,
            etcd: base + 50,
            cluster_tcp: base + 60,
        }
    }

    fn all(&self) -> [(u16, &'static str); 12] {
        [
            (self.nmid_tcp, "nmid tcp"),
            (self.nmid_http, "nmid http"),
            (self.nats, "nats-server"),
            (self.gearmand, "gearmand"),
            (self.floor, "the floor's echo server"),
            (self.http_floor, "the HTTP floor's actix-web server"),
            (self.etcd, "the cluster's etcd"),
            (self.etcd + 1, "the cluster's etcd peers"),
            (self.cluster_tcp, "the cluster's dispatcher A"),
            (self.cluster_tcp + 1, "the cluster's dispatcher B"),
            (self.cluster_tcp + 2, "the cluster's dispatcher C"),
            (self.cluster_tcp + 3, "the cluster's dispatcher B (http)"),
        ]
    }
}

/// A system's processes while its cells run; dropping it kills them all.
#[derive(Debug, Default)]
pub struct Running {
    /// Server first, then its workers.
    pub procs: Vec<Proc>,
    /// Where the load generator connects (`HOST:PORT`, or a URL for wrk).
    pub target: String,
    /// Environment of the load generator (a token, a CA file).
    pub client_env: Vec<(String, String)>,
}

impl Running {
    /// Why one of its processes is gone (`worker-1 exited (signal: 9)`), if one is.
    pub fn dead(&mut self) -> Option<String> {
        self.procs
            .iter_mut()
            .find_map(|p| p.exited().map(|s| format!("{} exited ({s})", p.name)))
    }
}

/// Starts servers and role children: where the binaries and the logs are, and the ports.
#[derive(Debug)]
pub struct Launcher {
    /// This harness binary, re-executed for every role.
    exe: PathBuf,
    /// The release `nmid` (`NMID_BIN` overrides `target/release/nmid`).
    nmid_bin: PathBuf,
    /// One log per process, kept when a run fails.
    logs: PathBuf,
    ports: Ports,
}

impl Launcher {
    /// A launcher for `ports`, logging under a temporary directory named after this process
    /// (made by [`Launcher::make_logs`]).
    pub fn new(ports: Ports) -> anyhow::Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let nmid_bin = std::env::var_os("NMID_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("target/release/nmid"));
        let logs = std::env::temp_dir().join(format!("nmid-bench-{}", std::process::id()));
        Ok(Self {
            exe: std::env::current_exe()?,
            nmid_bin,
            logs,
            ports,
        })
    }

    /// Makes the directory of the logs.
    pub fn make_logs(&self) -> anyhow::Result<()> {
        Ok(std::fs::create_dir_all(&self.logs)?)
    }

    /// The directory of the logs.
    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// The listen ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The release `nmid` binary.
    pub fn nmid_bin(&self) -> &Path {
        &self.nmid_bin
    }

    /// The log file of the process `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// This binary re-executed with `args`, for a role started elsewhere (the load role).
    pub fn harness_command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.env("RUST_LOG", "warn");
        cmd
    }

    /// Tools present, nmid built, ports free: otherwise refuse to start anything. A missing
    /// tool fails a quick run; a full run records that system's cells as failed.
    pub fn preflight(&self, s: &Settings) -> anyhow::Result<()> {
        if s.scale || s.systems.iter().any(|x| x.runs_nmid()) {
            if !self.nmid_bin.exists() {
                bail!(
                    "{} not found: build it with `cargo build --release --bin nmid` (make \
                     bench does), or set NMID_BIN",
                    self.nmid_bin.display()
                );
            }
            warn_if_stale(&self.nmid_bin);
        }
        // The table's systems' tools, and nats-server for the scale section's NATS series.
        let table = s
            .systems
            .iter()
            .filter(|_| s.table)
            .filter_map(|x| x.tool());
        let mut tools: Vec<&str> = table.chain(s.scale.then_some("nats-server")).collect();
        tools.sort_unstable();
        tools.dedup();
        for tool in tools.into_iter().filter(|t| !on_path(t)) {
            let msg = format!("{tool} not found: run ./scripts/bench-deps (make bench does)");
            if s.quick {
                bail!(msg);
            }
            eprintln!("compare: {msg}; its cells will be recorded as failed");
        }
        for (port, what) in s.ports.all() {
            procs::ensure_port_free(port, what)?;
        }
        Ok(())
    }

    /// Starts a system's server and workers; ready for load when this returns.
    pub fn start(&self, system: System) -> anyhow::Result<Running> {
        let ports = self.ports;
        let local = |port: u16| format!("127.0.0.1:{port}");
        match system {
            System::UsTagged | System::UsV1 | System::Http => {
                let http = (system == System::Http).then_some(ports.nmid_http);
                let mut procs = vec![self.start_nmid(http, None)?];
                procs.extend(self.start_nmid_workers(&[])?);
                let target = match http {
                    Some(port) => {
                        wait_http_echo(port)?;
                        format!("http://127.0.0.1:{port}/call/{FUNCTION}")
                    }
                    None => local(ports.nmid_tcp),
                };
                Ok(Running {
                    procs,
                    target,
                    ..Running::default()
                })
            }
            System::UsTaggedAuth | System::UsTaggedTls | System::UsTaggedGuard => {
                let (config, env) = self.security_files(system)?;
                let mut procs = vec![self.start_nmid_with(None, None, &["--config", &config])?];
                procs.extend(self.start_nmid_workers(&env)?);
                Ok(Running {
                    procs,
                    target: local(ports.nmid_tcp),
                    client_env: env,
                })
            }
            // 2 responder processes of 1 connection each (the scale section starts 1 of n).
            System::Nats => self.start_nats(2, 1),
            System::Gearmand => self.start_gearmand(),
            System::Floor | System::FloorClient => {
                procs::ensure_port_free(ports.floor, "echo server")?;
                let mut server = self.start_role(
                    "echo-server",
                    Role::Broker,
                    RoleName::EchoServer,
                    &[("port", ports.floor.to_string())],
                )?;
                procs::wait_listening(sock(ports.floor), &mut server, START_LIMIT)?;
                Ok(Running {
                    procs: vec![server],
                    target: local(ports.floor),
                    ..Running::default()
                })
            }
            System::HttpFloor => {
                let port = ports.http_floor;
                procs::ensure_port_free(port, "the HTTP floor's actix-web server")?;
                let mut server = self.start_role(
                    "http-echo-server",
                    Role::Broker,
                    RoleName::HttpEchoServer,
                    &[
                        ("port", port.to_string()),
                        ("workers", nmid_http_workers()?.to_string()),
                    ],
                )?;
                procs::wait_listening(sock(port), &mut server, START_LIMIT)?;
                wait_http_echo(port)?;
                Ok(Running {
                    procs: vec![server],
                    target: format!("http://127.0.0.1:{port}/call/{FUNCTION}"),
                    ..Running::default()
                })
            }
        }
    }

    /// The dispatcher, on 127.0.0.1 only, with RUST_LOG=warn; with `http` its HTTP port
    /// too; `nofile` raises its open-file limit through prlimit.
    pub fn start_nmid(&self, http: Option<u16>, nofile: Option<u64>) -> anyhow::Result<Proc> {
        self.start_nmid_with(http, nofile, &[])
    }

    /// nmid for the idle-connection memory test: connections that never send a frame are
    /// kept past `tcp.handshake_timeout_ms` (10 s by default), for as long as it measures.
    pub fn start_nmid_for_idle(&self, nofile: u64) -> anyhow::Result<Proc> {
        let config = self.logs.join("idle.toml");
        std::fs::write(&config, "[tcp]\nhandshake_timeout_ms = 600000\n")?;
        let config = config.display().to_string();
        self.start_nmid_with(None, Some(nofile), &["--config", &config])
    }

    /// [`Launcher::start_nmid`] with more arguments (`--config FILE`).
    pub fn start_nmid_with(
        &self,
        http: Option<u16>,
        nofile: Option<u64>,
        args: &[&str],
    ) -> anyhow::Result<Proc> {
        let ports = self.ports;
        procs::ensure_port_free(ports.nmid_tcp, "nmid tcp")?;
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(&self.nmid_bin);
                c
            }
            None => Command::new(&self.nmid_bin),
        };
        cmd.arg("--tcp-addr")
            .arg(format!("127.0.0.1:{}", ports.nmid_tcp))
            .args(args)
            .env("RUST_LOG", "warn");
        match http {
            Some(port) => {
                procs::ensure_port_free(port, "nmid http")?;
                cmd.arg("--http-addr").arg(format!("127.0.0.1:{port}"));
            }
            None => {
                cmd.arg("--no-http");
            }
        }
        let mut nmid = Proc::spawn("nmid", Role::Broker, cmd, &self.log("nmid"), false)?;
        procs::wait_listening(sock(ports.nmid_tcp), &mut nmid, START_LIMIT)?;
        if let Some(port) = http {
            procs::wait_listening(sock(port), &mut nmid, START_LIMIT)?;
        }
        Ok(nmid)
    }

    /// This binary re-executed as `role` with `--key value` `args`, named `name` in reports
    /// and logs; returns once it printed READY.
    pub fn start_role(
        &self,
        name: &str,
        kind: Role,
        role: RoleName,
        args: &[(&str, String)],
    ) -> anyhow::Result<Proc> {
        self.start_role_with(name, kind, role, args, &[])
    }

    /// The two worker processes (our worker library) of nmid's systems, with `env`.
    fn start_nmid_workers(&self, env: &[(String, String)]) -> anyhow::Result<Vec<Proc>> {
        let addr = format!("127.0.0.1:{}", self.ports.nmid_tcp);
        (1..=2)
            .map(|i| {
                self.start_role_with(
                    &format!("worker-{i}"),
                    Role::Worker,
                    RoleName::NmidWorker,
                    &[("addr", addr.clone()), ("slots", WORKER_SLOTS.to_string())],
                    env,
                )
            })
            .collect()
    }

    /// [`Launcher::start_role`] with environment variables (a token, a CA file).
    pub fn start_role_with(
        &self,
        name: &str,
        kind: Role,
        role: RoleName,
        args: &[(&str, String)],
        env: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        let mut cmd = self.harness_command();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--role").arg(value_name(&role));
        for (k, v) in args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let mut proc = Proc::spawn(name, kind, cmd, &self.log(name), true)?;
        procs::wait_ready(&mut proc, START_LIMIT)?;
        Ok(proc)
    }
}

/// The token secret of the security systems (every process presents it).
const BENCH_SECRET: &str = "nmid-bench-secret-0123456789abcdef";

impl Launcher {
    /// The dispatcher's config file of a security system, in the logs directory, and the
    /// environment its workers and load generator need: for auth a token with every role
    /// on every function; for TLS a CA and a server certificate made for this run; for the
    /// guard, limits far above any load this harness offers (10^9 calls a second).
    fn security_files(&self, system: System) -> anyhow::Result<(String, Vec<(String, String)>)> {
        let path = |file: &str| self.logs.join(file).display().to_string();
        let (text, env) = match system {
            System::UsTaggedAuth => (
                format!(
                    "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"bench\"\nsecret = \"{BENCH_SECRET}\"\n\
                     roles = [\"worker\", \"client\"]\nfunctions = [\"{FUNCTION}\", \"Dummy*\"]\n"
                ),
                vec![("NMID_TOKEN".to_owned(), BENCH_SECRET.to_owned())],
            ),
            System::UsTaggedGuard => (
                format!(
                    "[rate_limit]\nper_client_per_second = 1000000000\n\
                     [[rate_limit.function]]\nname = \"{FUNCTION}\"\nper_second = 1000000000\n\
                     [breaker]\nenabled = true\nrule = 3\n"
                ),
                Vec::new(),
            ),
            _ => {
                let ca_params = {
                    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
                    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
                    p
                };
                let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
                let key = rcgen::KeyPair::generate()?;
                let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?
                    .signed_by(&key, &ca)?;
                std::fs::write(path("bench-ca.pem"), ca.pem())?;
                std::fs::write(path("bench-server.pem"), cert.pem())?;
                std::fs::write(path("bench-server.key"), key.serialize_pem())?;
                (
                    format!(
                        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                        path("bench-server.pem"),
                        path("bench-server.key")
                    ),
                    vec![("NMID_BENCH_CA_FILE".to_owned(), path("bench-ca.pem"))],
                )
            }
        };
        std::fs::write(path("security.toml"), text)?;
        Ok((path("security.toml"), env))
    }
}

/// 127.0.0.1:`port`.
pub fn sock(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Warns when target/release/nmid is older than a file under src/.
fn warn_if_stale(bin: &Path) {
    fn newest(dir: &Path) -> Option<SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                match meta.is_dir() {
                    true => newest(&e.path()),
                    false => meta.modified().ok(),
                }
            })
            .max()
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(newest)) = (built, newest(&src)) {
        if newest > built {
            eprintln!(
                "compare: warning: {} is older than src/; run `cargo build --release --bin \
                 nmid` (make bench does)",
                bin.display()
            );
        }
    }
}

/// The worker threads of nmid's HTTP front end as the benchmarks start it: `server.io_threads`
/// of its default configuration (and `NMID__*` environment), read the way nmid reads it.
fn nmid_http_workers() -> anyhow::Result<usize> {
    Ok(nmid::config::Config::load(None, &[])?.io_threads())
}

/// Waits until `POST /call/Echo` answers the payload upper-cased (workers registered).
fn wait_http_echo(port: u16) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let body = payload(32);
    let want = body.to_ascii_uppercase();
    let until = Instant::now() + START_LIMIT;
    let mut last = String::new();
    while Instant::now() < until {
        let attempt = || -> anyhow::Result<Vec<u8>> {
            let mut stream = TcpStream::connect(sock(port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                stream,
                "POST /call/{FUNCTION} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: \
                 application/msgpack\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer)?;
            Ok(answer)
        };
        match attempt() {
            Ok(answer) if answer.ends_with(&want) && answer.get(8..13) == Some(b" 200 ") => {
                return Ok(())
            }
            Ok(answer) => last = String::from_utf8_lossy(&answer).into_owned(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("POST /call/{FUNCTION} never answered the upper-cased payload; last: {last:?}")
}
