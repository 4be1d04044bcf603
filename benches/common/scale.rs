//! The full run's scale section: the dispatcher's memory with idle connections (see
//! `memory`), then throughput as the functions registered grow 1 -> 1000 and as the worker
//! connections grow 1 -> 100, each worker count measured against NATS with as many
//! responder connections.
//!
//! Each of our points starts nmid (with HTTP, to see registrations) and one worker process
//! holding `n` functions (`Echo` and dummies) or `n` connections, waits until the dispatcher
//! lists them all, and measures the tagged client at 64 in flight, 32 B, `--reps` times.
//! Each NATS point starts nats-server and one responder process of `n` connections, each
//! its own subscription in one queue group (`peers`), and measures the async-nats requester
//! of the table's `nats` the same way, right after our point of the same `n`.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::load;
use super::memory::{self, Memory};
use super::options::Settings;
use super::procs::{self, Role};
use super::report::{self, Cell, Run, RunKey};
use super::roles::loadgen::Caller;
use super::roles::RoleName;
use super::systems::{Driver, Running, WORKER_SLOTS};
use super::Harness;

/// Functions registered in the functions series (Echo plus dummies).
const FUNCTION_SERIES: [usize; 4] = [1, 10, 100, 1000];
/// Worker connections in the workers series.
const WORKER_SERIES: [usize; 3] = [1, 10, 100];
/// Payload of every scale point, bytes.
const PAYLOAD: usize = 32;
/// Calls in flight at every scale point.
const LEVEL: usize = 64;
/// Longest wait for every function and worker connection to be registered.
const REGISTER_LIMIT: Duration = Duration::from_secs(30);

/// What grows along a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Series {
    /// Functions registered by the one worker process.
    Functions,
    /// Worker connections of the one worker process.
    Workers,
    /// NATS connections of the one responder process, each subscribed in the queue group:
    /// the peer of the workers series.
    NatsResponders,
}

impl Series {
    /// The series' name in run keys (`functions=100`, `nats-responders=10`).
    fn id(self) -> &'static str {
        match self {
            Series::Functions => "functions",
            Series::Workers => "workers",
            Series::NatsResponders => "nats-responders",
        }
    }

    /// The first column of the markdown table.
    pub fn label(self) -> &'static str {
        match self {
            Series::Functions => "functions registered",
            Series::Workers => "worker connections",
            Series::NatsResponders => "NATS responder connections",
        }
    }

    /// The client that drives its calls: ours tagged, or the table's NATS requester.
    fn caller(self) -> Caller {
        match self {
            Series::Functions | Series::Workers => Caller::Tagged,
            Series::NatsResponders => Caller::Nats,
        }
    }
}

/// One point of a series: its repetitions summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// Which series.
    pub series: Series,
    /// How many functions or connections.
    pub n: usize,
    /// Medians over the repetitions.
    pub cell: Cell,
}

/// Memory and both series.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// The memory test's result, when it succeeded.
    pub memory: Option<Memory>,
    /// Why the memory test failed, when it did.
    pub memory_error: Option<String>,
    /// The functions series.
    pub functions: Vec<ScalePoint>,
    /// The workers series.
    pub workers: Vec<ScalePoint>,
    /// NATS at the workers series' counts: `n` responder connections in one queue group.
    pub nats: Vec<ScalePoint>,
}

/// Cells of the scale series, repetitions counted (each worker count twice: us and NATS).
pub fn cell_count(s: &Settings) -> usize {
    (FUNCTION_SERIES.len() + 2 * WORKER_SERIES.len()) * s.reps
}

/// Memory with idle connections, then throughput as functions and workers grow (and NATS
/// as its responder connections grow); every repetition's run is added to `runs`.
pub fn run(h: &Harness, runs: &mut Vec<Run>) -> Scale {
    h.progress.note(format_args!(
        "memory with {} idle connections",
        memory::IDLE_CONNS
    ));
    let memory = memory::measure(h).map_err(|e| format!("{e:#}"));
    match &memory {
        Ok(m) => h.progress.note(format_args!(
            "nmid RSS {:.1} MiB -> {:.1} MiB with {} connections: {:.0} bytes each",
            m.baseline_bytes as f64 / 1048576.0,
            m.loaded_bytes as f64 / 1048576.0,
            m.idle_conns,
            m.bytes_per_conn
        )),
        Err(e) => h.progress.note(format_args!("memory test failed: {e}")),
    }
    let functions = FUNCTION_SERIES
        .iter()
        .map(|&n| point(h, Series::Functions, n, runs))
        .collect();
    // Each worker count: us, then NATS straight after, so both see the machine alike.
    let (mut workers, mut nats) = (Vec::new(), Vec::new());
    for n in WORKER_SERIES {
        workers.push(point(h, Series::Workers, n, runs));
        nats.push(point(h, Series::NatsResponders, n, runs));
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
        nats,
    }
}

/// One point of a series, `--reps` repetitions on one start of its broker and workers.
fn point(h: &Harness, series: Series, n: usize, runs: &mut Vec<Run>) -> ScalePoint {
    let name = format!("{}={n}", series.id());
    let key = |rep: usize| RunKey {
        system: name.clone(),
        payload: PAYLOAD,
        level: LEVEL,
        rep,
    };
    let mut point_runs = Vec::new();
    match start(h, series, n) {
        Err(e) => {
            h.progress.skip(h.settings.reps.saturating_sub(1));
            let run = Run::failed(key(1), format!("{e:#}"));
            h.progress.cell_done(&run);
            point_runs.push(run);
        }
        Ok(mut running) => {
            for rep in 1..=h.settings.reps {
                h.progress.begin(&key(rep));
                let driver = Driver::Role(series.caller());
                let run = load::measure(&h.launcher, &h.settings, driver, &mut running, key(rep));
                h.progress.cell_done(&run);
                point_runs.push(run);
            }
        }
    }
    let refs: Vec<&Run> = point_runs.iter().collect();
    let cell = report::summarise(&name, PAYLOAD, LEVEL, &refs);
    runs.extend(point_runs);
    ScalePoint { series, n, cell }
}

/// The point's system, ready for load: nats-server and one responder process of `n`
/// connections, or nmid and one worker process with `n` functions or `n` connections.
fn start(h: &Harness, series: Series, n: usize) -> anyhow::Result<Running> {
    match series {
        Series::Functions => start_nmid(h, n, 1),
        Series::Workers => start_nmid(h, 1, n),
        Series::NatsResponders => h.launcher.start_nats(1, n),
    }
}

/// nmid and one worker process with `functions` functions over `sessions` connections,
/// all registered.
fn start_nmid(h: &Harness, functions: usize, sessions: usize) -> anyhow::Result<Running> {
    let ports = h.settings.ports;
    let nmid = h.launcher.start_nmid(Some(ports.nmid_http), None)?;
    let worker = h.launcher.start_role(
        "worker-1",
        Role::Worker,
        RoleName::NmidWorker,
        &[
            ("addr", format!("127.0.0.1:{}", ports.nmid_tcp)),
            ("slots", WORKER_SLOTS.to_string()),
            ("functions", functions.to_string()),
            ("sessions", sessions.to_string()),
        ],
    )?;
    // Ready when the dispatcher lists every function and every worker connection.
    let until = Instant::now() + REGISTER_LIMIT;
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
            bail!(
                "{functions} functions / {sessions} workers not all registered in \
                 {REGISTER_LIMIT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Running {
        procs: vec![nmid, worker],
        target: format!("127.0.0.1:{}", ports.nmid_tcp),
        ..Running::default()
    })
}
