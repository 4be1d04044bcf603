//! Results: one [`Run`] per repetition of a cell, [`Cell`]s as medians over repetitions, the
//! issue-6 [`Target`]s, the [`Machine`], and the two files a run writes,
//! `bench-results/<unix-time>.json` (everything) and `.md` (the tables, see `markdown`).
//!
//! A run fails when its load generator failed, answered nothing, stalled or saw any failed
//! call in the measured window, or when a process of its system died; it keeps what it
//! measured (in the JSON). A cell fails when any of its runs did: it is reported as failed,
//! counts in no ratio, and makes the whole run exit non-zero once the files are written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::cluster::ClusterBench;
use super::markdown;
use super::options::Settings;
use super::procs::{self, Role};
use super::roles::recorder::LoadResult;
use super::scale::Scale;

/// CPU one process used inside a measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcCpu {
    /// Process name (`nmid`, `worker-1`, `load`, ...).
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// utime + stime over the window, seconds.
    pub cpu_s: f64,
}

/// Which cell, and which repetition of it, a run measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunKey {
    /// System id (`us-tagged`, ...), or a scale-series point (`functions=100`).
    pub system: String,
    /// Payload bytes.
    pub payload: usize,
    /// Calls in flight.
    pub level: usize,
    /// Repetition, from 1.
    pub rep: usize,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} B C={} rep {}",
            self.system, self.payload, self.level, self.rep
        )
    }
}

/// One repetition of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The cell and repetition (flattened into the JSON object).
    #[serde(flatten)]
    pub key: RunKey,
    /// What the load generator measured, when it got that far (kept on a failed run too).
    pub result: Option<LoadResult>,
    /// Answered calls per second.
    pub calls_per_s: f64,
    /// CPU of each process in the window.
    pub cpu: Vec<ProcCpu>,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl Run {
    /// A run that measured nothing, because of `error`.
    pub fn failed(key: RunKey, error: String) -> Self {
        Self {
            key,
            result: None,
            calls_per_s: 0.0,
            cpu: Vec::new(),
            error: Some(error),
        }
    }

    /// CPU milliseconds per 1000 answered calls, by role and in total.
    pub fn cpu_ms_per_1k(&self) -> BTreeMap<String, f64> {
        let calls = self.result.as_ref().map_or(0, |r| r.calls);
        let mut out = BTreeMap::new();
        if calls == 0 {
            return out;
        }
        let per_1k = |s: f64| s * 1000.0 * 1000.0 / calls as f64;
        for role in [Role::Broker, Role::Worker, Role::Load] {
            let of_role: Vec<f64> = self
                .cpu
                .iter()
                .filter(|p| p.role == role)
                .map(|p| p.cpu_s)
                .collect();
            if !of_role.is_empty() {
                out.insert(role_name(role).to_owned(), per_1k(of_role.iter().sum()));
            }
        }
        out.insert(
            "total".to_owned(),
            per_1k(self.cpu.iter().map(|p| p.cpu_s).sum()),
        );
        out
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Broker => "broker",
        Role::Worker => "workers",
        Role::Load => "load",
    }
}

/// A cell's repetitions summarised: medians, with min and max of throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// System id.
    pub system: String,
    /// Payload bytes.
    pub payload: usize,
    /// Calls in flight.
    pub level: usize,
    /// Repetitions that succeeded (the medians are theirs).
    pub reps_ok: usize,
    /// Median answered calls per second.
    pub calls_per_s: f64,
    /// Lowest of the repetitions.
    pub calls_per_s_min: f64,
    /// Highest of the repetitions.
    pub calls_per_s_max: f64,
    /// Median p50 latency, microseconds.
    pub p50_us: f64,
    /// Median p99 latency, microseconds.
    pub p99_us: f64,
    /// Median p99.9 latency, microseconds.
    pub p999_us: f64,
    /// Failed calls in the measured windows of all repetitions.
    pub errors: u64,
    /// Median CPU ms per 1000 calls, by role (`broker`, `workers`, `load`, `total`).
    pub cpu_ms_per_1k: BTreeMap<String, f64>,
    /// Failures of repetitions, if any: then the cell failed.
    pub error: Option<String>,
}

impl Cell {
    /// Whether the cell failed: a repetition failed, or none ran.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.reps_ok == 0
    }
}

/// The median of `values` (0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Summarises the runs of one cell.
pub fn summarise(system: &str, payload: usize, level: usize, runs: &[&Run]) -> Cell {
    let ok: Vec<&&Run> = runs
        .iter()
        .filter(|r| r.error.is_none() && r.result.is_some())
        .collect();
    let field = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> { ok.iter().map(|r| f(r)).collect() };
    let mut tput = field(&|r| r.calls_per_s);
    let min = tput.iter().copied().fold(f64::INFINITY, f64::min);
    let max = tput.iter().copied().fold(0.0, f64::max);
    let result = |r: &Run| r.result.clone().unwrap_or_default();
    let mut cpu = BTreeMap::new();
    for key in ["broker", "workers", "load", "total"] {
        let mut v: Vec<f64> = ok
            .iter()
            .filter_map(|r| r.cpu_ms_per_1k().get(key).copied())
            .collect();
        if !v.is_empty() {
            cpu.insert(key.to_owned(), median(&mut v));
        }
    }
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|r| r.error.clone().map(|e| format!("rep {}: {e}", r.key.rep)))
        .collect();
    Cell {
        system: system.to_owned(),
        payload,
        level,
        reps_ok: ok.len(),
        calls_per_s: median(&mut tput),
        calls_per_s_min: if ok.is_empty() { 0.0 } else { min },
        calls_per_s_max: max,
        p50_us: median(&mut field(&|r| result(r).p50_us)),
        p99_us: median(&mut field(&|r| result(r).p99_us)),
        p999_us: median(&mut field(&|r| result(r).p999_us)),
        errors: runs
            .iter()
            .filter_map(|r| r.result.as_ref())
            .map(|r| r.errors)
            .sum(),
        cpu_ms_per_1k: cpu,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// Medians of every table cell that ran, in the order of the settings.
pub fn cells(settings: &Settings, runs: &[Run]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for system in &settings.systems {
        for &payload in &settings.payloads {
            for &level in &settings.levels {
                let of_cell: Vec<&Run> = runs
                    .iter()
                    .filter(|r| {
                        r.key.system == system.id()
                            && r.key.payload == payload
                            && r.key.level == level
                    })
                    .collect();
                if !of_cell.is_empty() {
                    cells.push(summarise(system.id(), payload, level, &of_cell));
                }
            }
        }
    }
    cells
}

/// Finds a cell that succeeded: failed cells count in no ratio.
pub fn find<'a>(cells: &'a [Cell], system: &str, payload: usize, level: usize) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.system == system && c.payload == payload && c.level == level && !c.failed())
}

/// `a / b` when both are positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// A ratio for a table: `1.50x`, or `n/a`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
}

/// One issue-6 target and whether this run meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

/// The targets of issue 6, checked against `cells`.
pub fn targets(cells: &[Cell], payloads: &[usize], levels: &[usize]) -> Vec<Target> {
    let mut out = Vec::new();
    let tput = |s: &str, p: usize, l: usize| find(cells, s, p, l).map(|c| c.calls_per_s);
    for &payload in payloads {
        for &level in levels.iter().filter(|&&l| l >= 64) {
            let us = tput("us-tagged", payload, level);
            for (peer, name, want) in [
                ("nats", "NATS", 1.5),
                ("gearmand", "gearmand", 5.0),
                ("floor", "the floor", 0.5),
            ] {
                if !cells.iter().any(|c| c.system == peer) {
                    continue; // not in this run (e.g. --quick)
                }
                let r = us.zip(tput(peer, payload, level)).map(|(a, b)| a / b);
                out.push(Target {
                    target: format!("{payload} B, {level} in flight: >= {want}x {name}"),
                    measured: fmt_ratio(r),
                    met: r.map(|r| r >= want),
                });
            }
        }
        for &level in levels {
            let us = find(cells, "us-tagged", payload, level);
            let nats = find(cells, "nats", payload, level);
            let pair = us.zip(nats);
            out.push(Target {
                target: format!("{payload} B, {level} in flight: p99 <= NATS"),
                measured: pair.map_or("n/a".to_owned(), |(a, b)| {
                    format!("{} vs {}", markdown::us(a.p99_us), markdown::us(b.p99_us))
                }),
                met: pair.map(|(a, b)| a.p99_us <= b.p99_us),
            });
            if level == 1 {
                out.push(Target {
                    target: format!("{payload} B, 1 in flight: p50 <= NATS"),
                    measured: pair.map_or("n/a".to_owned(), |(a, b)| {
                        format!("{} vs {}", markdown::us(a.p50_us), markdown::us(b.p50_us))
                    }),
                    met: pair.map(|(a, b)| a.p50_us <= b.p50_us),
                });
            }
        }
    }
    out
}

/// What the results were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available.
    pub nproc: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Clock ticks per second of /proc's CPU times.
    pub clk_tck: f64,
    /// `rustc --version`.
    pub rustc: String,
    /// `nats-server --version`.
    pub nats_server: String,
    /// `gearmand --version`.
    pub gearmand: String,
    /// `wrk -v`.
    pub wrk: String,
    /// The commit nmid was built from, and whether src/ had uncommitted changes.
    pub nmid_source: String,
}

impl Machine {
    /// This machine, now.
    pub fn probe() -> Self {
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
        Self {
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
}

/// The throughput ratios `--quick` ends with: each the median, over the run's rounds
/// (repetitions), of that round's ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuickRatios {
    /// us-tagged / nats.
    pub vs_nats: f64,
    /// us-tagged / floor.
    pub vs_floor: f64,
    /// http / us-tagged: what the HTTP front end serves of what the TCP one does.
    pub http_vs_tcp: f64,
    /// The rounds the medians are over.
    pub rounds: usize,
}

impl QuickRatios {
    /// One round's ratios, from its throughputs; `None` when one is missing or zero.
    fn of_round(us: f64, nats: f64, floor: f64, http: f64) -> Option<Self> {
        Some(Self {
            vs_nats: ratio(us, nats)?,
            vs_floor: ratio(us, floor)?,
            http_vs_tcp: ratio(http, us)?,
            rounds: 1,
        })
    }

    /// The median of each ratio over `rounds`.
    fn median_of(rounds: &[Self]) -> Self {
        let of =
            |ratio: fn(&Self) -> f64| median(&mut rounds.iter().map(ratio).collect::<Vec<_>>());
        Self {
            vs_nats: of(|r| r.vs_nats),
            vs_floor: of(|r| r.vs_floor),
            http_vs_tcp: of(|r| r.http_vs_tcp),
            rounds: rounds.len(),
        }
    }
}

impl fmt::Display for QuickRatios {
    /// The line: `ratio_vs_nats=<x> ratio_vs_floor=<y> http_vs_tcp=<z>`, and ` rounds=<n>`
    /// for the median of several rounds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ratio_vs_nats={:.2} ratio_vs_floor={:.2} http_vs_tcp={:.2}",
            self.vs_nats, self.vs_floor, self.http_vs_tcp
        )?;
        match self.rounds {
            1 => Ok(()),
            n => write!(f, " rounds={n}"),
        }
    }
}

/// Everything a run measured, ready to be written.
#[derive(Debug)]
pub struct Report {
    /// When the run started, Unix seconds: the name of its files.
    pub started_unix: u64,
    /// How it was asked for.
    pub command: String,
    /// How long it took.
    pub elapsed: Duration,
    /// What it ran on.
    pub machine: Machine,
    /// What it did.
    pub settings: Settings,
    /// The table's medians.
    pub cells: Vec<Cell>,
    /// The issue-6 targets.
    pub targets: Vec<Target>,
    /// Memory and the scale series, in a full run.
    pub scale: Option<Scale>,
    /// Every repetition of every cell, the scale series' included.
    pub runs: Vec<Run>,
    /// The cluster section: forwarded vs direct calls, failover (set after `new`).
    pub cluster: Option<ClusterBench>,
}

impl Report {
    /// The report of `runs` (and `scale`), made after `elapsed` of a run started at
    /// `started_unix`.
    pub fn new(
        settings: Settings,
        command: String,
        started_unix: u64,
        elapsed: Duration,
        runs: Vec<Run>,
        scale: Option<Scale>,
    ) -> Self {
        let cells = cells(&settings, &runs);
        let targets = targets(&cells, &settings.payloads, &settings.levels);
        Self {
            started_unix,
            command,
            elapsed,
            machine: Machine::probe(),
            settings,
            cells,
            targets,
            scale,
            runs,
            cluster: None,
        }
    }

    /// What failed, one line each: failed runs, and the memory test.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.key)))
            .collect();
        if let Some(e) = self.scale.as_ref().and_then(|s| s.memory_error.as_ref()) {
            out.push(format!("memory test: {e}"));
        }
        out.extend(self.cluster.iter().flat_map(ClusterBench::failures));
        out
    }

    /// The ratios of each round of `--quick` (its repetitions: every system measured once,
    /// one after the other), at the first payload and level, when us-tagged, nats, floor
    /// and http all succeeded in every round. A ratio of one round compares measurements
    /// seconds apart, so a slow or fast spell of the machine moves both of its sides.
    pub fn quick_rounds(&self) -> Option<Vec<QuickRatios>> {
        let s = &self.settings;
        let tput = |system: &str, rep: usize| {
            (self.runs.iter())
                .find(|r| {
                    let k = &r.key;
                    (k.system == system && k.rep == rep)
                        && (k.payload == s.payloads[0] && k.level == s.levels[0])
                        && r.error.is_none()
                })
                .map(|r| r.calls_per_s)
        };
        (1..=s.reps)
            .map(|rep| {
                let us = tput("us-tagged", rep)?;
                QuickRatios::of_round(
                    us,
                    tput("nats", rep)?,
                    tput("floor", rep)?,
                    tput("http", rep)?,
                )
            })
            .collect()
    }

    /// The ratios of `--quick`'s last line: the median of each over [`Report::quick_rounds`].
    pub fn quick_ratios(&self) -> Option<QuickRatios> {
        let rounds = self.quick_rounds()?;
        (!rounds.is_empty()).then(|| QuickRatios::median_of(&rounds))
    }

    /// The markdown document (see `markdown`).
    pub fn markdown(&self) -> String {
        markdown::document(self)
    }

    /// `bench-results/<started>.json` and `.md` under `dir`; their paths and the markdown.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, String)> {
        let json = serde_json::json!({
            "started_unix": self.started_unix,
            "command": self.command,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "machine": self.machine,
            "settings": self.settings,
            "cells": self.cells,
            "targets": self.targets,
            "scale": self.scale,
            "runs": self.runs,
            "cluster": self.cluster,
        });
        let md = self.markdown();
        std::fs::create_dir_all(dir)?;
        let json_path = dir.join(format!("{}.json", self.started_unix));
        let md_path = dir.join(format!("{}.md", self.started_unix));
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
        std::fs::write(&md_path, &md)?;
        Ok((json_path, md_path, md))
    }
}
