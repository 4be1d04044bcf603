//! The harness's command line (clap), and the [`Settings`] a run resolves from it.
//!
//! The options a person types are listed by `--help`. The hidden ones are how the harness
//! re-executes itself as a child (`--role NAME` plus that role's options); `--bench`, which
//! `cargo bench` appends, is accepted and ignored.

use clap::{Args, Parser, ValueEnum};
use serde::Serialize;

use super::roles::loadgen::Caller;
use super::roles::RoleName;
use super::systems::{Ports, System};

/// The options of `cargo bench --bench compare -- [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "compare",
    bin_name = "cargo bench --bench compare --",
    about = "nmid against nats-server, gearmand, the one-hop floor, and HTTP against its floor"
)]
pub struct Options {
    /// 64 in flight, 32 B, us-tagged vs nats vs floor, and http, in 3 rounds (each system
    /// once per round, in turn); ends with the line
    /// `ratio_vs_nats=<x> ratio_vs_floor=<y> http_vs_tcp=<z> rounds=3` (throughputs:
    /// us-tagged / nats, us-tagged / floor, http / us-tagged; each the median of the rounds'
    /// ratios), and fails on any error instead.
    #[arg(long)]
    pub quick: bool,
    /// Systems to run, comma-separated: us-tagged, us-v1, nats, gearmand, floor,
    /// floor-client, http, http-floor (and us-tagged-auth, us-tagged-tls, us-tagged-guard)
    /// [default: all but those three; us-tagged,nats,floor,http with --quick].
    #[arg(long, value_delimiter = ',', value_parser = system)]
    pub systems: Option<Vec<System>>,
    /// Calls in flight, comma-separated [default: 1,64,512; 64 with --quick].
    #[arg(long, value_delimiter = ',', value_parser = trimmed::<usize>)]
    pub levels: Option<Vec<usize>>,
    /// Payload sizes in bytes, comma-separated [default: 32,4096; 32 with --quick].
    #[arg(long, value_delimiter = ',', value_parser = trimmed::<usize>)]
    pub payloads: Option<Vec<usize>>,
    /// Repetitions of every cell (--quick: rounds) [default: 3].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Length of each measured window, in seconds [default: 5; 4 with --quick].
    #[arg(long)]
    pub secs: Option<u64>,
    /// Warm-up before each window, excluded from the results, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Skip the memory test and the scale series (a full run has them).
    #[arg(long)]
    pub no_scale: bool,
    /// Only the memory test and the scale series (us, and NATS beside the workers series),
    /// no table.
    #[arg(long)]
    pub scale_only: bool,
    /// Skip the cluster section (a full run has it): forwarded vs direct calls, failover.
    #[arg(long)]
    pub no_cluster: bool,
    /// Only the cluster section: etcd and three dispatchers on ports P+50, P+51, P+60..P+63.
    #[arg(long)]
    pub cluster_only: bool,
    /// Ports P+8, P+9, P+22, P+30, P+40 and P+41 on 127.0.0.1; a busy one stops the run
    /// before anything starts.
    #[arg(long, default_value_t = 26800, value_parser = clap::value_parser!(u16).range(1..=65_495))]
    pub port_base: u16,
    /// Pipelined connections of the load generators at 512 calls in flight.
    #[arg(long = "conns-512", default_value_t = 2)]
    pub conns_512: usize,
    /// Appended by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
    /// Run as one role of a measurement: set by the harness for its own children.
    #[arg(long, hide = true, value_enum)]
    pub role: Option<RoleName>,
    /// The role's options.
    #[command(flatten)]
    pub child: ChildOptions,
}

/// Options of the role children (hidden; the harness sets them). `--warmup-ms` is shared
/// with the harness's own option of that name.
#[derive(Debug, Args)]
pub struct ChildOptions {
    /// load: which client drives the calls.
    #[arg(long = "system", hide = true, value_enum)]
    pub caller: Option<Caller>,
    /// load, nmid-worker, nats-responder, gearman-worker: the server's `HOST:PORT`.
    #[arg(long, hide = true)]
    pub addr: Option<String>,
    /// load: calls in flight.
    #[arg(long, hide = true, default_value_t = 64)]
    pub concurrency: usize,
    /// load: pipelined connections (default 1); gearman-worker: worker connections
    /// (default 2); nats-responder: connections, each subscribed in the queue group
    /// (default 1).
    #[arg(long, hide = true)]
    pub conns: Option<usize>,
    /// load: payload bytes.
    #[arg(long, hide = true, default_value_t = 32)]
    pub payload: usize,
    /// load: the measured window, in milliseconds.
    #[arg(long, hide = true, default_value_t = 5000)]
    pub duration_ms: u64,
    /// load: completions counted at most in the window.
    #[arg(long, hide = true, default_value_t = 20_000_000)]
    pub max_calls: u64,
    /// nmid-worker: slots of each worker connection.
    #[arg(long, hide = true, default_value_t = 256)]
    pub slots: u32,
    /// nmid-worker: functions registered (`Echo` and dummies).
    #[arg(long, hide = true, default_value_t = 1)]
    pub functions: usize,
    /// nmid-worker: worker connections (sessions).
    #[arg(long, hide = true, default_value_t = 1)]
    pub sessions: usize,
    /// echo-server, http-echo-server: the port to listen on, on 127.0.0.1.
    #[arg(long, hide = true, default_value_t = 0)]
    pub port: u16,
    /// http-echo-server: actix-web worker threads.
    #[arg(long, hide = true, default_value_t = 1)]
    pub workers: usize,
}

impl ChildOptions {
    /// `--addr`, which the role needs.
    pub fn addr(&self) -> anyhow::Result<&str> {
        self.addr
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("missing --addr"))
    }
}

/// What this run does: the options with the defaults of a full or a quick run filled in.
/// Written to the JSON results as `settings`.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `--quick`: stop at the first failure, end with the ratio line.
    pub quick: bool,
    /// The systems of the table, in the order given.
    pub systems: Vec<System>,
    /// Calls in flight.
    pub levels: Vec<usize>,
    /// Payload sizes, bytes.
    pub payloads: Vec<usize>,
    /// Repetitions of every cell.
    pub reps: usize,
    /// Warm-up before each window, ms.
    pub warmup_ms: u64,
    /// The measured window, ms.
    pub window_ms: u64,
    /// Whether the table is run (not `--scale-only`).
    pub table: bool,
    /// Whether the memory test and the scale series run (full run, not `--no-scale`).
    pub scale: bool,
    /// Whether the cluster section runs (full run, not `--no-cluster`; or `--cluster-only`).
    pub cluster: bool,
    /// Listen ports, all on 127.0.0.1.
    pub ports: Ports,
    /// Pipelined connections of the load generators at 512 calls in flight.
    pub pipelined_conns_at_512: usize,
}

impl Settings {
    /// The settings `options` ask for.
    pub fn resolve(options: &Options) -> Self {
        let quick = options.quick;
        let pick = |given: &Option<Vec<usize>>, full: &[usize], fast: &[usize]| match given {
            Some(v) => v.clone(),
            None if quick => fast.to_vec(),
            None => full.to_vec(),
        };
        let systems = match (&options.systems, quick) {
            (Some(v), _) => v.clone(),
            (None, true) => System::QUICK.to_vec(),
            (None, false) => System::ALL.to_vec(),
        };
        Self {
            quick,
            systems,
            levels: pick(&options.levels, &[1, 64, 512], &[64]),
            payloads: pick(&options.payloads, &[32, 4096], &[32]),
            reps: options.reps.unwrap_or(3),
            warmup_ms: options.warmup_ms,
            window_ms: options.secs.unwrap_or(if quick { 4 } else { 5 }) * 1000,
            table: !options.scale_only && !options.cluster_only,
            scale: !quick && !options.no_scale && !options.cluster_only,
            cluster: options.cluster_only || (!quick && !options.no_cluster && !options.scale_only),
            ports: Ports::new(options.port_base),
            pipelined_conns_at_512: options.conns_512,
        }
    }

    /// Pipelined connections of the load generators at `level` calls in flight.
    pub fn conns(&self, level: usize) -> usize {
        match level >= 512 {
            true => self.pipelined_conns_at_512,
            false => 1,
        }
    }
}

/// How a run was asked for, for the report: `cargo bench --bench compare [-- ARGS]`.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.is_empty() {
        true => "cargo bench --bench compare".to_owned(),
        false => format!("cargo bench --bench compare -- {}", args.join(" ")),
    }
}

/// The command-line spelling of a clap value (`RoleName::NmidWorker` -> `nmid-worker`).
pub fn value_name<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// A list item of a comma-separated option, blanks around it ignored (`--levels "1, 64"`).
fn trimmed<T: std::str::FromStr>(item: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    item.trim().parse().map_err(|e| format!("{e}"))
}

/// A system id of `--systems`, blanks around it ignored.
fn system(item: &str) -> Result<System, String> {
    let ids: Vec<&str> = System::KNOWN.iter().map(|s| s.id()).collect();
    <System as ValueEnum>::from_str(item.trim(), false)
        .map_err(|_| format!("unknown system; known: {}", ids.join(",")))
}
