//! `nmidctl`'s command line (clap derive): the global addresses and one subcommand each.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use super::parse_duration;
use crate::client::Protocol;

/// nmidctl: call functions on an nmid dispatcher, inspect it, watch it live, load it, and
/// check its health (or nmid-faas's). The exit status says the kind of error (listed
/// below, and in the README).
#[derive(Debug, Parser)]
#[command(
    name = "nmidctl",
    version,
    after_help = "Exit status: 0 ok; 1 the function failed (health: not ready); 2 usage; \
                  3 unreachable; 4 no worker; 5 timeout; 6 refused (rate limited, breaker \
                  open, shutting down, job store full); 7 worker lost; 8 unexpected answer; \
                  9 API not available; 10 denied (token refused or missing, or not in its \
                  grant); 11 no such job; 12 job not cancellable (running or over)."
)]
pub struct Cli {
    /// The dispatcher's nmid protocol address (TCP), for `call` and `bench`.
    #[arg(
        long,
        global = true,
        env = "NMID_ADDR",
        default_value = "127.0.0.1:6808",
        value_name = "HOST:PORT"
    )]
    pub addr: String,
    /// The dispatcher's HTTP base URL, for the admin commands, `top` and `health`.
    #[arg(
        long,
        global = true,
        env = "NMID_HTTP",
        default_value = "http://127.0.0.1:6809",
        value_name = "URL"
    )]
    pub http: String,
    /// Longest wait for one HTTP request (admin commands, top, health).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// Speak nmid protocol v1 (nmid's own Go dispatcher) instead of the tagged frames.
    #[arg(long, global = true)]
    pub v1: bool,
    /// The secret of a token (the dispatcher's `[[auth.tokens]]`): presented over the nmid
    /// protocol and as `Authorization: Bearer` over HTTP.
    #[arg(
        long,
        global = true,
        env = "NMID_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token: Option<String>,
    /// Connect with TLS (the nmid protocol; HTTP follows its URL's scheme), trusting the CAs
    /// of this PEM file.
    #[arg(long, global = true, env = "NMID_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Connect with TLS, trusting the system's CAs (or --ca-file's).
    #[arg(long, global = true)]
    pub tls: bool,
    /// The name the dispatcher's certificate must carry (default: the host of --addr).
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// A client certificate (PEM) for mutual TLS, with --key-file.
    #[arg(
        long,
        global = true,
        env = "NMID_CERT_FILE",
        value_name = "FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "NMID_KEY_FILE",
        value_name = "FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The TLS settings, when any TLS flag is given.
    pub fn client_tls(&self) -> Option<crate::security::ClientTls> {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let wanted = self.tls || self.ca_file.is_some() || self.cert_file.is_some();
        wanted.then(|| crate::security::ClientTls {
            ca_file: path(&self.ca_file),
            server_name: self.server_name.clone().unwrap_or_default(),
            cert_file: path(&self.cert_file),
            key_file: path(&self.key_file),
        })
    }

    /// The protocol for `call` and `bench`.
    pub fn protocol(&self) -> Protocol {
        if self.v1 {
            Protocol::V1
        } else {
            Protocol::Tagged
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call a function and print the `Data` of its result.
    Call(CallArgs),
    /// Submit a background job over the nmid protocol and print its id (with --wait: wait
    /// for it and print its result as `call` does).
    Submit(SubmitArgs),
    /// List background jobs (HTTP `GET /api/v1/jobs`), or show one (`jobs ID`), or cancel a
    /// queued one (`jobs ID --cancel`).
    Jobs(JobsArgs),
    /// List the functions: workers, calls in flight, queued calls.
    Functions(ListArgs),
    /// List the connected workers.
    Workers(ListArgs),
    /// Show the dispatcher's version, uptime, call counts and load.
    Stats(ListArgs),
    /// Show etcd's state and every dispatcher of the cluster (`--etcd` dispatchers).
    Cluster(ListArgs),
    /// Live view of calls/s, errors, p99 and in flight per function (q or Ctrl-C quits).
    Top(TopArgs),
    /// Load a function with N calls in flight for a while; print a latency summary. Exits
    /// non-zero (the first failure's status) when any call failed; backs off when refused.
    Bench(BenchArgs),
    /// Exit 0 when the dispatcher is ready to take calls (GET /readyz), else 1. Pointed at
    /// nmid-faas's --metrics-addr (--http), asks nmid-faas's own readiness.
    Health,
    /// Print a shell completion script (e.g. `nmidctl completions bash > /etc/bash_completion.d/nmidctl`).
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The function.
    pub function: String,
    /// The params as JSON: an object is sent as a msgpack map (as nmid's SDKs send params),
    /// anything else as JSON params; `-` reads the JSON from stdin. Default `{}`.
    #[arg(value_name = "JSON", conflicts_with = "msgpack")]
    pub params: Option<String>,
    /// Send this file's bytes as msgpack params (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub msgpack: Option<PathBuf>,
    /// Print the worker's result bytes as they are, not the RetStruct's `Data` (a failed
    /// function still exits 1).
    #[arg(long)]
    pub raw: bool,
    /// Print the worker's partial results on stdout as they arrive (each as it came, a
    /// newline after one that has none on a terminal) and its progress on stderr
    /// (`progress N/D`), then the result.
    #[arg(long)]
    pub stream: bool,
    /// The call's deadline.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// `submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The function.
    pub function: String,
    /// The params, as for `call`: a JSON object is sent as a msgpack map, other JSON as JSON
    /// params, `-` reads the JSON from stdin. Default `{}`.
    #[arg(value_name = "JSON", conflicts_with = "msgpack")]
    pub params: Option<String>,
    /// Send this file's bytes as msgpack params (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub msgpack: Option<PathBuf>,
    /// Where the job waits among its function's queued jobs.
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Run it no sooner than this many milliseconds from now.
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// Submissions with the same function and key, while one is queued or running, share it.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// Attempts at most (the dispatcher's jobs.default_max_attempts unless set).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Each attempt's deadline (the dispatcher's jobs.timeout_ms unless set).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub attempt_timeout: Option<Duration>,
    /// Wait for the job to end and print its result as `call` does (exit status as for a
    /// call that failed the same way).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: the longest wait (then exit 5).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// With --wait: print the worker's result bytes as they are, not the RetStruct's `Data`.
    #[arg(long, requires = "wait")]
    pub raw: bool,
}

/// `--priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PriorityArg {
    /// Before normal and low jobs.
    High,
    /// The default.
    Normal,
    /// After high and normal jobs.
    Low,
}

/// `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// One job's id: show it (or cancel it with --cancel) instead of listing.
    #[arg(value_name = "ID")]
    pub id: Option<String>,
    /// Cancel the job ID (only a queued job can be).
    #[arg(long, requires = "id")]
    pub cancel: bool,
    /// Only jobs of this function.
    #[arg(long, value_name = "F", conflicts_with = "id")]
    pub function: Option<String>,
    /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
    #[arg(long, value_name = "S", conflicts_with = "id")]
    pub state: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50, value_name = "N", conflicts_with = "id")]
    pub limit: u32,
    /// Jobs after this position (the `next` a previous page printed).
    #[arg(long, value_name = "N", conflicts_with = "id")]
    pub after: Option<u64>,
    /// Print the dispatcher's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `functions`, `workers`, `stats`, `cluster`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the dispatcher's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between two redraws.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// Print one snapshot (two readings one interval apart) and exit; the default when
    /// stdout is not a terminal.
    #[arg(long)]
    pub once: bool,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The function to load.
    pub function: String,
    /// Calls in flight at once.
    #[arg(short = 'c', long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// How long to run.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Stop after this many calls, even before the duration is over.
    #[arg(short = 'n', long, value_name = "CALLS")]
    pub max_calls: Option<u64>,
    /// The params of every call, as JSON (as for `call`).
    #[arg(long, default_value = "{}", value_name = "JSON")]
    pub params: String,
    /// Each call's deadline.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Longest pause of a caller the dispatcher refused (rate limited, breaker open, shutting
    /// down) or could not be reached: its pauses double from 10ms up to this, and end at
    /// its next answer.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_backoff: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Writes the completion script of `shell` to stdout.
pub fn completions(shell: Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "nmidctl", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clap definition is consistent (every subcommand has --help, no clashes).
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
