//! Run: `make bench` (or `cargo bench --bench compare -- [--quick]` after
//! `cargo build --release --bin nmid`). Us against the peers on this machine, in one run:
//! nmid (tagged and v1 clients, and HTTP under wrk), nats-server request-reply, gearmand,
//! and the one-hop floor (client <-> echo server, no broker).
//!
//! Every system serves `Echo` (upper-case the payload) to a closed-loop load of 1, 64 or 512
//! calls in flight, 32 B or 4 KiB payloads, warm-up excluded, 3 repetitions (medians with
//! min–max). Each role is a process of its own — this binary re-executed with `--role` for
//! our workers, the peers' workers and every load generator — so the CPU time of each
//! process (utime + stime from /proc over the measured window) is reported per 1000 calls.
//! A full run also measures the dispatcher's memory with 10,000 idle connections and its
//! throughput as functions grow 1 -> 1000 and worker connections 1 -> 100.
//!
//! Every server binds 127.0.0.1 only, on ports from `--port-base` (default 26800); a busy
//! port stops the run before anything starts. Every child is killed by its PID when its
//! guard drops (and on SIGINT/SIGTERM); every load loop is bounded in count and time.
//! Results go to `bench-results/<unix-time>.json` and `.md`. `--quick` (C=64, 32 B, us vs
//! NATS vs floor, one ~4 s repetition) ends with the line
//! `ratio_vs_nats=<x> ratio_vs_floor=<y>` and fails loudly on any error.
//!
//! Options: `--quick`, `--systems us-tagged,us-v1,nats,gearmand,floor,floor-client,http`,
//! `--levels 1,64,512`, `--payloads 32,4096`, `--reps N`, `--secs S`, `--warmup-ms MS`,
//! `--no-scale`, `--scale-only`, `--port-base P`.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;

use common::load::LoadResult;
use common::procs::{self, Proc, Role};
use common::report::{self, Cell, ProcCpu, Run, Target};
use common::{payload, Args, FUNCTION, ROLE_MAX_LIFETIME};

/// Idle client connections of the memory test.
const IDLE_CONNS: usize = 10_000;
/// Functions registered in the functions series (Echo plus dummies).
const FUNCTION_SERIES: [usize; 4] = [1, 10, 100, 1000];
/// Worker connections in the workers series.
const WORKER_SERIES: [usize; 3] = [1, 10, 100];
/// Slots of each of our worker connections (the dispatcher caps them at
/// `workers.max_jobs_in_flight`, 64 by default).
const WORKER_SLOTS: u32 = 256;
/// Longest start-up of any server.
const START_LIMIT: Duration = Duration::from_secs(15);
/// Completions counted at most in one window (a bound besides the window's length).
const MAX_CALLS: u64 = 20_000_000;

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let args = match Args::parse(raw.clone()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("compare: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(role) = args.get("role") {
        procs::exit_with_parent(ROLE_MAX_LIFETIME);
        let result = match role {
            "load" => common::load::run(&args),
            other => common::servers::run(other, &args),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("FAIL {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match Bench::new(&args, &raw).and_then(|mut bench| bench.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Listen ports, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, Serialize)]
struct Ports {
    nmid_tcp: u16,
    nmid_http: u16,
    nats: u16,
    gearmand: u16,
    floor: u16,
}

impl Ports {
    fn new(base: u16) -> Self {
        Self {
            nmid_tcp: base + 8,
            nmid_http: base + 9,
            nats: base + 22,
            gearmand: base + 30,
            floor: base + 40,
        }
    }

    fn all(&self) -> [(u16, &'static str); 5] {
        [
            (self.nmid_tcp, "nmid tcp"),
            (self.nmid_http, "nmid http"),
            (self.nats, "nats-server"),
            (self.gearmand, "gearmand"),
            (self.floor, "the floor's echo server"),
        ]
    }
}

/// What this run does.
#[derive(Debug, Clone, Serialize)]
struct Settings {
    quick: bool,
    systems: Vec<String>,
    levels: Vec<usize>,
    payloads: Vec<usize>,
    reps: usize,
    warmup_ms: u64,
    window_ms: u64,
    table: bool,
    scale: bool,
    ports: Ports,
    pipelined_conns_at_512: usize,
}

/// A system's processes while its cells run.
struct Running {
    procs: Vec<Proc>,
    /// Where the load generator connects (`HOST:PORT`).
    target: String,
}

impl Running {
    fn dead(&mut self) -> Option<String> {
        self.procs
            .iter_mut()
            .find_map(|p| p.exited().map(|s| format!("{} exited ({s})", p.name)))
    }
}

struct Bench {
    settings: Settings,
    command: String,
    exe: PathBuf,
    nmid_bin: PathBuf,
    logs: PathBuf,
    runs: Vec<Run>,
    cells_total: usize,
    cells_done: usize,
}

impl Bench {
    fn new(args: &Args, raw: &[String]) -> anyhow::Result<Self> {
        let quick = args.flag("quick");
        let list = |name: &str, default: &[usize]| -> anyhow::Result<Vec<usize>> {
            match args.get(name) {
                None => Ok(default.to_vec()),
                Some(v) => v
                    .split(',')
                    .map(|x| x.trim().parse().map_err(|e| anyhow!("--{name} {x:?}: {e}")))
                    .collect(),
            }
        };
        let default_systems: Vec<&str> = match quick {
            true => vec!["us-tagged", "nats", "floor"],
            false => report::SYSTEMS.iter().map(|(id, _)| *id).collect(),
        };
        let systems: Vec<String> = match args.get("systems") {
            Some(v) => v.split(',').map(|s| s.trim().to_owned()).collect(),
            None => default_systems.iter().map(|s| (*s).to_owned()).collect(),
        };
        if let Some(bad) = systems
            .iter()
            .find(|s| !report::SYSTEMS.iter().any(|(id, _)| id == s))
        {
            let known: Vec<&str> = report::SYSTEMS.iter().map(|(id, _)| *id).collect();
            bail!("unknown system {bad:?}; known: {}", known.join(","));
        }
        let settings = Settings {
            quick,
            systems,
            levels: list("levels", if quick { &[64] } else { &[1, 64, 512] })?,
            payloads: list("payloads", if quick { &[32] } else { &[32, 4096] })?,
            reps: args.num("reps", if quick { 1 } else { 3 })?,
            warmup_ms: args.num("warmup-ms", 1000)?,
            window_ms: args.num::<u64>("secs", if quick { 4 } else { 5 })? * 1000,
            table: !args.flag("scale-only"),
            scale: !quick && !args.flag("no-scale"),
            ports: Ports::new(args.num("port-base", 26800)?),
            pipelined_conns_at_512: args.num("conns-512", 2)?,
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let nmid_bin = std::env::var_os("NMID_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("target/release/nmid"));
        let logs = std::env::temp_dir().join(format!("nmid-bench-{}", std::process::id()));
        Ok(Self {
            settings,
            command: match raw.is_empty() {
                true => "cargo bench --bench compare".to_owned(),
                false => format!("cargo bench --bench compare -- {}", raw.join(" ")),
            },
            exe: std::env::current_exe()?,
            nmid_bin,
            logs,
            runs: Vec::new(),
            cells_total: 0,
            cells_done: 0,
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let s = self.settings.clone();
        self.preflight()?;
        std::fs::create_dir_all(&self.logs)?;
        procs::kill_children_on_signal();
        let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let clock = Instant::now();
        if s.table {
            self.cells_total = s.systems.len() * s.payloads.len() * s.levels.len() * s.reps;
        }
        if s.scale {
            self.cells_total += (FUNCTION_SERIES.len() + WORKER_SERIES.len()) * s.reps;
        }
        if s.table {
            // Repetition by repetition, every system in each: a disturbance of the machine
            // (the build's write-back at the start, say) then spoils one repetition of each
            // system rather than every repetition of the first.
            for rep in 1..=s.reps {
                for system in &s.systems {
                    self.run_system(system, rep)?;
                }
            }
        }
        let scale = match s.scale {
            true => Some(self.scale()),
            false => None,
        };
        let cells = self.cells();
        let targets = report::targets(&cells, &s.payloads, &s.levels);
        let machine = machine();
        let md = self.markdown(&machine, &cells, &targets, scale.as_ref(), clock.elapsed());
        let json = serde_json::json!({
            "started_unix": started,
            "command": self.command,
            "elapsed_s": clock.elapsed().as_secs_f64(),
            "machine": machine,
            "settings": s,
            "cells": cells,
            "targets": targets,
            "scale": scale,
            "runs": self.runs,
        });
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
        std::fs::create_dir_all(&dir)?;
        let json_path = dir.join(format!("{started}.json"));
        let md_path = dir.join(format!("{started}.md"));
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
        std::fs::write(&md_path, &md)?;
        eprintln!(
            "compare: results in {} and {}",
            json_path.display(),
            md_path.display()
        );
        let failures = self.runs.iter().filter(|r| r.error.is_some()).count();
        if failures == 0 {
            let _ = std::fs::remove_dir_all(&self.logs);
        } else {
            eprintln!(
                "compare: {failures} runs failed; logs kept in {}",
                self.logs.display()
            );
        }
        println!("{md}");
        if s.quick {
            let tput = |sys: &str| {
                report::find(&cells, sys, s.payloads[0], s.levels[0]).map(|c| c.calls_per_s)
            };
            let (Some(us), Some(nats), Some(floor)) =
                (tput("us-tagged"), tput("nats"), tput("floor"))
            else {
                bail!("quick run incomplete: us-tagged, nats and floor must all produce results");
            };
            println!(
                "ratio_vs_nats={:.2} ratio_vs_floor={:.2}",
                us / nats,
                us / floor
            );
        }
        Ok(())
    }

    /// Tools present, nmid built, ports free: otherwise refuse to start anything.
    fn preflight(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let needs_nmid = s.scale
            || s.systems
                .iter()
                .any(|x| x.starts_with("us-") || x == "http");
        if needs_nmid {
            if !self.nmid_bin.exists() {
                bail!(
                    "{} not found: build it with `cargo build --release --bin nmid` (make \
                     bench does), or set NMID_BIN",
                    self.nmid_bin.display()
                );
            }
            warn_if_stale(&self.nmid_bin);
        }
        for (system, tool) in [
            ("nats", "nats-server"),
            ("gearmand", "gearmand"),
            ("http", "wrk"),
        ] {
            if s.systems.iter().any(|x| x == system) && !on_path(tool) {
                let msg = format!("{tool} not found: run ./scripts/bench-deps (make bench does)");
                if s.quick {
                    bail!(msg);
                }
                eprintln!("compare: {msg}; its cells will be recorded as failed");
            }
        }
        for (port, what) in s.ports.all() {
            procs::ensure_port_free(port, what)?;
        }
        Ok(())
    }

    /// Repetition `rep` of every cell (payload x level) of `system`, on a fresh start of it.
    fn run_system(&mut self, system: &str, rep: usize) -> anyhow::Result<()> {
        let s = self.settings.clone();
        let cells: Vec<(usize, usize, usize)> = s
            .payloads
            .iter()
            .flat_map(|&p| s.levels.iter().map(move |&l| (p, l, rep)))
            .collect();
        eprintln!("compare: starting {system} (repetition {rep})");
        let mut running = match self.start_system(system) {
            Ok(running) => Some(running),
            Err(e) => {
                let e = format!("{system} did not start: {e:#}");
                if s.quick {
                    bail!(e);
                }
                eprintln!("compare: {e}");
                None
            }
        };
        for (payload, level, rep) in cells {
            self.cells_done += 1;
            let run = match running.as_mut() {
                None => Run::failed(system, payload, level, rep, "system did not start".into()),
                Some(r) => match self.run_cell(system, r, payload, level, rep) {
                    Ok(run) => run,
                    Err(e) => Run::failed(system, payload, level, rep, format!("{e:#}")),
                },
            };
            self.progress(&run);
            if let Some(e) = &run.error {
                if s.quick {
                    bail!("{system} {payload} B C={level}: {e}");
                }
                // A dead process spoils the cells after it: start the system again.
                if let Some(why) = running.as_mut().and_then(Running::dead) {
                    eprintln!("compare: {why}; restarting {system}");
                    drop(running.take());
                    running = self.start_system(system).ok();
                }
            }
            self.runs.push(run);
        }
        Ok(())
    }

    fn progress(&self, run: &Run) {
        let head = format!(
            "[{}/{}] {} {} B C={} rep {}",
            self.cells_done, self.cells_total, run.system, run.payload, run.level, run.rep
        );
        match (&run.result, &run.error) {
            (Some(r), _) => eprintln!(
                "{head}: {} calls/s, p50 {}, p99 {}, p99.9 {}, errors {}, CPU {:.1} ms/1k calls",
                report::kilo(run.calls_per_s),
                report::us(r.p50_us),
                report::us(r.p99_us),
                report::us(r.p999_us),
                r.errors,
                run.cpu_ms_per_1k().get("total").copied().unwrap_or(0.0)
            ),
            (None, e) => eprintln!("{head}: FAILED: {}", e.as_deref().unwrap_or("?")),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts a system's server and workers; ready for load when this returns.
    fn start_system(&self, system: &str) -> anyhow::Result<Running> {
        let ports = self.settings.ports;
        let local = |port: u16| format!("127.0.0.1:{port}");
        match system {
            "us-tagged" | "us-v1" | "http" => {
                let http = (system == "http").then_some(ports.nmid_http);
                let nmid = self.start_nmid(http, None)?;
                let mut procs = vec![nmid];
                for i in 1..=2 {
                    procs.push(self.start_role(
                        &format!("worker-{i}"),
                        Role::Worker,
                        "nmid-worker",
                        &[
                            ("addr", local(ports.nmid_tcp)),
                            ("slots", WORKER_SLOTS.to_string()),
                        ],
                    )?);
                }
                if let Some(port) = http {
                    wait_http_echo(port)?;
                    return Ok(Running {
                        procs,
                        target: format!("http://127.0.0.1:{port}/call/{FUNCTION}"),
                    });
                }
                Ok(Running {
                    procs,
                    target: local(ports.nmid_tcp),
                })
            }
            "nats" => {
                procs::ensure_port_free(ports.nats, "nats-server")?;
                let mut cmd = Command::new("nats-server");
                cmd.args(["-a", "127.0.0.1", "-p", &ports.nats.to_string()]);
                let mut server = Proc::spawn(
                    "nats-server",
                    Role::Broker,
                    cmd,
                    &self.log("nats-server"),
                    false,
                )?;
                procs::wait_listening(sock(ports.nats), &mut server, START_LIMIT)?;
                let mut procs = vec![server];
                for i in 1..=2 {
                    procs.push(self.start_role(
                        &format!("responder-{i}"),
                        Role::Worker,
                        "nats-responder",
                        &[("addr", local(ports.nats))],
                    )?);
                }
                Ok(Running {
                    procs,
                    target: local(ports.nats),
                })
            }
            "gearmand" => {
                procs::ensure_port_free(ports.gearmand, "gearmand")?;
                let mut cmd = Command::new("gearmand");
                cmd.arg("--threads=2")
                    .arg("--listen=127.0.0.1")
                    .arg(format!("--port={}", ports.gearmand))
                    .arg(format!("--log-file={}", self.log("gearmand-own").display()))
                    .arg(format!(
                        "--pid-file={}",
                        self.logs.join("gearmand.pid").display()
                    ))
                    .arg("--verbose=ERROR");
                let mut server =
                    Proc::spawn("gearmand", Role::Broker, cmd, &self.log("gearmand"), false)?;
                procs::wait_listening(sock(ports.gearmand), &mut server, START_LIMIT)?;
                let mut procs = vec![server];
                for i in 1..=2 {
                    procs.push(self.start_role(
                        &format!("gworker-{i}"),
                        Role::Worker,
                        "gearman-worker",
                        &[("addr", local(ports.gearmand)), ("conns", "2".to_owned())],
                    )?);
                }
                Ok(Running {
                    procs,
                    target: local(ports.gearmand),
                })
            }
            "floor" | "floor-client" => {
                procs::ensure_port_free(ports.floor, "echo server")?;
                let mut server = self.start_role(
                    "echo-server",
                    Role::Broker,
                    "echo-server",
                    &[("port", ports.floor.to_string())],
                )?;
                procs::wait_listening(sock(ports.floor), &mut server, START_LIMIT)?;
                Ok(Running {
                    procs: vec![server],
                    target: local(ports.floor),
                })
            }
            other => bail!("unknown system {other}"),
        }
    }

    /// The dispatcher, on 127.0.0.1 only, with RUST_LOG=warn; `nofile` raises its open-file
    /// limit through prlimit.
    fn start_nmid(&self, http: Option<u16>, nofile: Option<u64>) -> anyhow::Result<Proc> {
        let ports = self.settings.ports;
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

    /// This binary re-executed as `role`; returns once it printed READY.
    fn start_role(
        &self,
        name: &str,
        role: Role,
        role_arg: &str,
        args: &[(&str, String)],
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["--role", role_arg]).env("RUST_LOG", "warn");
        for (k, v) in args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let mut proc = Proc::spawn(name, role, cmd, &self.log(name), true)?;
        procs::wait_ready(&mut proc, START_LIMIT)?;
        Ok(proc)
    }

    /// Pipelined connections of the load generators at `level` calls in flight.
    fn conns(&self, level: usize) -> usize {
        match level >= 512 {
            true => self.settings.pipelined_conns_at_512,
            false => 1,
        }
    }

    fn run_cell(
        &self,
        system: &str,
        running: &mut Running,
        payload: usize,
        level: usize,
        rep: usize,
    ) -> anyhow::Result<Run> {
        if system == "http" {
            return self.run_wrk_cell(running, payload, level, rep);
        }
        let kind = match system {
            "us-tagged" | "floor-client" => "tagged",
            "us-v1" => "v1",
            "gearmand" => "gearman",
            other => other,
        };
        let (result, cpu) = self.measure(kind, running, payload, level)?;
        Ok(finish_run(system, payload, level, rep, result, cpu))
    }

    /// One load-generator window against `running`: the result and each process's CPU.
    fn measure(
        &self,
        kind: &str,
        running: &mut Running,
        payload: usize,
        level: usize,
    ) -> anyhow::Result<(LoadResult, Vec<ProcCpu>)> {
        let s = &self.settings;
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "--role",
            "load",
            "--system",
            kind,
            "--addr",
            &running.target,
        ])
        .arg("--concurrency")
        .arg(level.to_string())
        .arg("--conns")
        .arg(self.conns(level).to_string())
        .arg("--payload")
        .arg(payload.to_string())
        .arg("--warmup-ms")
        .arg(s.warmup_ms.to_string())
        .arg("--duration-ms")
        .arg(s.window_ms.to_string())
        .arg("--max-calls")
        .arg(MAX_CALLS.to_string());
        let mut load = Proc::spawn("load", Role::Load, cmd, &self.log("load"), true)?;
        let until = Instant::now() + Duration::from_millis(s.warmup_ms) + Duration::from_secs(45);
        loop {
            let line = load.next_line(until)?;
            if line == "START" {
                break;
            }
            if let Some(e) = line.strip_prefix("FAIL ") {
                bail!("load generator: {e}");
            }
        }
        let before = sample(&running.procs, &load)?;
        let until = Instant::now() + Duration::from_millis(s.window_ms) + Duration::from_secs(20);
        let result: LoadResult = loop {
            let line = load.next_line(until)?;
            if let Some(json) = line.strip_prefix("RESULT ") {
                break serde_json::from_str(json)?;
            }
            if let Some(e) = line.strip_prefix("FAIL ") {
                bail!("load generator: {e}");
            }
        };
        let after = sample(&running.procs, &load)?;
        load.wait_exit(Duration::from_secs(2));
        Ok((result, cpu_delta(before, after)))
    }

    /// HTTP under wrk: a 1 s warm-up run, then the measured run whose Lua `done` prints the
    /// summary and waits for a line on stdin, so wrk's own CPU can be read before it exits.
    fn run_wrk_cell(
        &self,
        running: &mut Running,
        payload: usize,
        level: usize,
        rep: usize,
    ) -> anyhow::Result<Run> {
        let s = &self.settings;
        let script = self.logs.join(format!("wrk-{payload}.lua"));
        std::fs::write(&script, wrk_script(payload))?;
        let wrk = |secs: u64| {
            let mut cmd = Command::new("wrk");
            cmd.args(["-t1", "--latency", "--timeout", "10s"])
                .arg(format!("-c{level}"))
                .arg(format!("-d{secs}s"))
                .arg("-s")
                .arg(&script)
                .arg(&running.target);
            cmd
        };
        let warm_secs = s.warmup_ms.div_ceil(1000).max(1);
        let mut warm = Proc::spawn(
            "wrk-warmup",
            Role::Load,
            wrk(warm_secs),
            &self.log("wrk"),
            false,
        )?;
        if warm.wait_exit(Duration::from_secs(warm_secs + 15)) == "still running" {
            bail!("wrk warm-up did not finish; log: {}", warm.log_tail());
        }
        drop(warm);
        let secs = (s.window_ms / 1000).max(1);
        let mut cmd = wrk(secs);
        cmd.env("BENCH_HANDSHAKE", "1");
        let mut load = Proc::spawn("wrk", Role::Load, cmd, &self.log("wrk"), true)?;
        let before = sample(&running.procs, &load)?;
        let until = Instant::now() + Duration::from_secs(secs + 30);
        let line = loop {
            let line = load.next_line(until)?;
            if line.starts_with("WRK_RESULT ") {
                break line;
            }
        };
        let after = sample(&running.procs, &load)?;
        let _ = load.send_line("");
        load.wait_exit(Duration::from_secs(5));
        let field = |key: &str| -> anyhow::Result<f64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("wrk summary without {key}: {line}"))
        };
        let errors = field("errors")? as u64;
        let status_errors = field("status_errors")? as u64;
        let result = LoadResult {
            calls: (field("requests")? as u64).saturating_sub(status_errors),
            errors,
            warmup_errors: 0,
            duration_s: field("duration_us")? / 1e6,
            p50_us: field("p50")?,
            p99_us: field("p99")?,
            p999_us: field("p999")?,
            first_error: (errors > 0).then(|| format!("wrk: {line}")),
            stalled: false,
        };
        Ok(finish_run(
            "http",
            payload,
            level,
            rep,
            result,
            cpu_delta(before, after),
        ))
    }

    /// Medians of every table cell.
    fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for system in &self.settings.systems {
            for &payload in &self.settings.payloads {
                for &level in &self.settings.levels {
                    let runs: Vec<&Run> = self
                        .runs
                        .iter()
                        .filter(|r| &r.system == system && r.payload == payload && r.level == level)
                        .collect();
                    if !runs.is_empty() {
                        cells.push(report::summarise(system, payload, level, &runs));
                    }
                }
            }
        }
        cells
    }

    /// Memory with idle connections, then throughput as functions and workers grow.
    fn scale(&mut self) -> Scale {
        eprintln!("compare: memory with {IDLE_CONNS} idle connections");
        let memory = self.memory().map_err(|e| format!("{e:#}"));
        match &memory {
            Ok(m) => eprintln!(
                "compare: nmid RSS {:.1} MiB -> {:.1} MiB with {} connections: {:.0} bytes each",
                m.baseline_bytes as f64 / 1048576.0,
                m.loaded_bytes as f64 / 1048576.0,
                m.idle_conns,
                m.bytes_per_conn
            ),
            Err(e) => eprintln!("compare: memory test failed: {e}"),
        }
        let mut functions = Vec::new();
        for n in FUNCTION_SERIES {
            functions.push(self.scale_point("functions", n));
        }
        let mut workers = Vec::new();
        for n in WORKER_SERIES {
            workers.push(self.scale_point("workers", n));
        }
        let (memory, memory_error) = match memory {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        Scale {
            memory,
            memory_error,
            functions,
            workers,
        }
    }

    fn memory(&mut self) -> anyhow::Result<Memory> {
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
        let mut nmid = self.start_nmid(None, Some(hard))?;
        let pid = nmid.pid();
        let (nmid_soft, _) = procs::nofile_limits(pid)?;
        if nmid_soft < need {
            bail!("nmid's open-file limit is {nmid_soft}, below {need}");
        }
        std::thread::sleep(Duration::from_millis(500));
        let baseline_bytes = procs::rss_bytes(pid)?;
        let base_fds = fd_count(pid)?;
        let addr = sock(self.settings.ports.nmid_tcp);
        let mut conns = Vec::with_capacity(IDLE_CONNS);
        let deadline = Instant::now() + Duration::from_secs(60);
        while conns.len() < IDLE_CONNS {
            if Instant::now() > deadline {
                bail!("only {} connections opened in 60 s", conns.len());
            }
            conns.push(
                TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .with_context(|| format!("connection {} of {IDLE_CONNS}", conns.len() + 1))?,
            );
        }
        let accepted_by = Instant::now() + Duration::from_secs(20);
        while fd_count(pid)? < base_fds + IDLE_CONNS {
            if Instant::now() > accepted_by || nmid.exited().is_some() {
                bail!(
                    "nmid holds {} of {IDLE_CONNS} connections after 20 s",
                    fd_count(pid)?.saturating_sub(base_fds)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Let allocations settle: RSS unchanged over 500 ms, at most 5 s.
        let mut last = procs::rss_bytes(pid)?;
        let settle_by = Instant::now() + Duration::from_secs(5);
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

    /// One point of a scale series: nmid (with HTTP, to see registrations) and one worker
    /// process with `n` functions or `n` connections; C=64, 32 B, tagged.
    fn scale_point(&mut self, series: &str, n: usize) -> ScalePoint {
        let s = self.settings.clone();
        let name = format!("{series}={n}");
        let mut runs = Vec::new();
        let started = self.start_scale(series, n);
        match started {
            Err(e) => {
                self.cells_done += s.reps;
                let run = Run::failed(&name, 32, 64, 1, format!("{e:#}"));
                self.progress(&run);
                runs.push(run);
            }
            Ok(mut running) => {
                for rep in 1..=s.reps {
                    self.cells_done += 1;
                    let run = match self.measure("tagged", &mut running, 32, 64) {
                        Ok((result, cpu)) => finish_run(&name, 32, 64, rep, result, cpu),
                        Err(e) => Run::failed(&name, 32, 64, rep, format!("{e:#}")),
                    };
                    self.progress(&run);
                    runs.push(run);
                }
            }
        }
        let refs: Vec<&Run> = runs.iter().collect();
        let cell = report::summarise(&name, 32, 64, &refs);
        self.runs.extend(runs);
        ScalePoint {
            series: series.to_owned(),
            n,
            cell,
        }
    }

    fn start_scale(&self, series: &str, n: usize) -> anyhow::Result<Running> {
        let ports = self.settings.ports;
        let nmid = self.start_nmid(Some(ports.nmid_http), None)?;
        let (functions, sessions) = match series {
            "functions" => (n, 1),
            _ => (1, n),
        };
        let worker = self.start_role(
            "worker-1",
            Role::Worker,
            "nmid-worker",
            &[
                ("addr", format!("127.0.0.1:{}", ports.nmid_tcp)),
                ("slots", WORKER_SLOTS.to_string()),
                ("functions", functions.to_string()),
                ("sessions", sessions.to_string()),
            ],
        )?;
        // Ready when the dispatcher lists every function and every worker connection.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let count = |path: &str| -> usize {
                procs::http_get(ports.nmid_http, path)
                    .ok()
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|v| v.as_array().map(Vec::len))
                    .unwrap_or(0)
            };
            if count("/api/v1/functions") >= functions && count("/api/v1/workers") >= sessions {
                break;
            }
            if Instant::now() > until {
                bail!("{functions} functions / {sessions} workers not all registered in 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Running {
            procs: vec![nmid, worker],
            target: format!("127.0.0.1:{}", ports.nmid_tcp),
        })
    }

    fn markdown(
        &self,
        machine: &Machine,
        cells: &[Cell],
        targets: &[Target],
        scale: Option<&Scale>,
        elapsed: Duration,
    ) -> String {
        use std::fmt::Write as _;
        let s = &self.settings;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "## nmid benchmark{}\n\n`{}` — {:.0} s in all.\n\nMachine: {} cores, {}, kernel \
             {}; {}; {}; {}; {}; {}.\n\nClosed loop, function `{FUNCTION}` upper-cases the \
             payload; warm-up {} ms excluded; window {} s; {} repetition(s), median \
             (min–max). Pipelined clients use 1 connection below 512 in flight, {} at 512. \
             CPU = utime+stime of each process over the window, per 1000 answered calls.",
            if s.quick { " (quick)" } else { "" },
            self.command,
            elapsed.as_secs_f64(),
            machine.nproc,
            machine.cpu_model,
            machine.kernel,
            machine.rustc,
            machine.nats_server,
            machine.gearmand,
            machine.wrk,
            machine.nmid_source,
            s.warmup_ms,
            s.window_ms / 1000,
            s.reps,
            s.pipelined_conns_at_512,
        );
        if s.table {
            md.push_str(&report::results_table(cells, &s.payloads, &s.levels));
            md.push_str("\n### Ratios (throughput; latency us vs NATS)\n\n");
            md.push_str(&report::ratios_table(cells, &s.payloads, &s.levels));
            md.push_str("\n### Issue 6 targets\n\n");
            md.push_str(&report::targets_md(targets));
        }
        if let Some(scale) = scale {
            md.push_str("\n### Scale and memory\n\n");
            match (&scale.memory, &scale.memory_error) {
                (Some(m), _) => {
                    let _ = writeln!(
                        md,
                        "Dispatcher RSS: {:.1} MiB idle, {:.1} MiB with {} idle client \
                         connections: **{:.0} bytes per connection**.\n",
                        m.baseline_bytes as f64 / 1048576.0,
                        m.loaded_bytes as f64 / 1048576.0,
                        m.idle_conns,
                        m.bytes_per_conn
                    );
                }
                (None, e) => {
                    let e = e.as_deref().unwrap_or("not run");
                    let _ = writeln!(md, "Memory test failed: {e}\n");
                }
            }
            md.push_str(
                "Tagged, 64 in flight, 32 B, one worker process (so lower than the table \
                 above):\n\n| series | n | calls/s median (min–max) | p99 | nmid CPU ms / 1k \
                 calls | total CPU ms / 1k calls |\n|---|---:|---:|---:|---:|---:|\n",
            );
            for p in scale.functions.iter().chain(&scale.workers) {
                let c = &p.cell;
                let label = match p.series.as_str() {
                    "functions" => "functions registered",
                    _ => "worker connections",
                };
                if c.reps_ok == 0 {
                    let _ = writeln!(
                        md,
                        "| {label} | {} | **failed**: {} | | | |",
                        p.n,
                        c.error.as_deref().unwrap_or("?").replace('|', "/")
                    );
                    continue;
                }
                let cpu = |k: &str| c.cpu_ms_per_1k.get(k).copied().unwrap_or(0.0);
                let _ = writeln!(
                    md,
                    "| {label} | {} | {} ({}–{}) | {} | {:.1} | {:.1} |",
                    p.n,
                    report::kilo(c.calls_per_s),
                    report::kilo(c.calls_per_s_min),
                    report::kilo(c.calls_per_s_max),
                    report::us(c.p99_us),
                    cpu("broker"),
                    cpu("total"),
                );
            }
        }
        md
    }
}

/// A run from a load result and the window's CPU.
fn finish_run(
    system: &str,
    payload: usize,
    level: usize,
    rep: usize,
    result: LoadResult,
    cpu: Vec<ProcCpu>,
) -> Run {
    let calls_per_s = match result.duration_s > 0.0 {
        true => result.calls as f64 / result.duration_s,
        false => 0.0,
    };
    let error = if result.calls == 0 {
        Some(format!(
            "no call answered; first error: {}",
            result.first_error.as_deref().unwrap_or("none")
        ))
    } else if result.stalled {
        Some("the load loop stalled and was cut off".to_owned())
    } else {
        None
    };
    let ok = error.is_none();
    Run {
        system: system.to_owned(),
        payload,
        level,
        rep,
        result: ok.then_some(result),
        calls_per_s,
        cpu,
        error,
    }
}

/// Memory of the dispatcher with idle connections.
#[derive(Debug, Clone, Serialize)]
struct Memory {
    idle_conns: usize,
    baseline_bytes: u64,
    loaded_bytes: u64,
    bytes_per_conn: f64,
}

#[derive(Debug, Clone, Serialize)]
struct ScalePoint {
    series: String,
    n: usize,
    cell: Cell,
}

#[derive(Debug, Clone, Serialize)]
struct Scale {
    memory: Option<Memory>,
    memory_error: Option<String>,
    functions: Vec<ScalePoint>,
    workers: Vec<ScalePoint>,
}

/// What the results were measured on.
#[derive(Debug, Clone, Serialize)]
struct Machine {
    nproc: usize,
    cpu_model: String,
    kernel: String,
    clk_tck: f64,
    rustc: String,
    nats_server: String,
    gearmand: String,
    wrk: String,
    /// The commit nmid was built from, and whether src/ had uncommitted changes.
    nmid_source: String,
}

fn machine() -> Machine {
    let first_line = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|| format!("{cmd}: not found"))
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let manifest = env!("CARGO_MANIFEST_DIR");
    let commit = first_line("git", &["-C", manifest, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", manifest, "status", "--porcelain", "--", "src"])
        .output()
        .map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count());
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        clk_tck: procs::clock_ticks(),
        rustc: first_line("rustc", &["--version"]),
        nats_server: first_line("nats-server", &["--version"]),
        gearmand: first_line("gearmand", &["--version"]),
        wrk: first_line("wrk", &["-v"])
            .split(" Copyright")
            .next()
            .unwrap_or_default()
            .to_owned(),
        nmid_source: match dirty {
            0 => format!("nmid at {commit}"),
            n => format!("nmid at {commit} + {n} uncommitted files in src/"),
        },
    }
}

fn sock(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn fd_count(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// CPU seconds of every process now.
fn sample(procs: &[Proc], load: &Proc) -> anyhow::Result<Vec<ProcCpu>> {
    procs
        .iter()
        .chain(std::iter::once(load))
        .map(|p| {
            Ok(ProcCpu {
                name: p.name.clone(),
                role: p.role,
                cpu_s: p
                    .cpu_seconds()
                    .with_context(|| format!("{} is gone", p.name))?,
            })
        })
        .collect()
}

fn cpu_delta(before: Vec<ProcCpu>, after: Vec<ProcCpu>) -> Vec<ProcCpu> {
    after
        .into_iter()
        .zip(before)
        .map(|(a, b)| ProcCpu {
            cpu_s: (a.cpu_s - b.cpu_s).max(0.0),
            ..a
        })
        .collect()
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

/// The wrk script: POST the payload as msgpack (passed to the worker as is); `done` prints
/// one parseable summary line and, under BENCH_HANDSHAKE, waits for a line on stdin.
fn wrk_script(payload_len: usize) -> String {
    let body = String::from_utf8(payload(payload_len)).expect("ASCII payload");
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/msgpack"
wrk.body = "{body}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d errors=%d status_errors=%d duration_us=%d p50=%d p99=%d p999=%d\n",
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9)))
  io.flush()
  if os.getenv("BENCH_HANDSHAKE") then io.read("*l") end
end
"#
    )
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
