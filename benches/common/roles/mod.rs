//! The child side of the harness. Each role runs in a process of its own, this binary
//! re-executed with `--role NAME`, so that /proc gives each one's CPU time apart:
//!
//! - `loadgen`: the load generator (`--role load`), a closed loop per client kind;
//!   `recorder` counts its calls and latencies and prints `START` when warm-up ends and
//!   `RESULT {json}` when the measured window ends.
//! - `servers`: our workers, NATS responders, Gearman workers, the one-hop echo server and
//!   the HTTP floor's actix-web echo server, each printing `READY` once it serves.
//! - `gearman`: the Gearman binary protocol packets the client and workers need.
//! - `frames`: raw tagged frames for the floor (the one file that uses `nmid::codec`).
//!
//! A role that fails prints `FAIL <reason>` and exits 1. Every role exits when the harness
//! closes its stdin, and after [`ROLE_MAX_LIFETIME`] whatever happens.

pub mod frames;
pub mod gearman;
pub mod loadgen;
pub mod recorder;
pub mod servers;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::ValueEnum;

use super::options::Options;
use super::procs;

/// NATS subject of the echo requests.
pub const NATS_SUBJECT: &str = "echo";
/// The queue group the NATS responders share, so each request reaches one of them.
pub const NATS_QUEUE: &str = "echo-workers";
/// A role process exits by itself after this long, whatever happens to the harness.
pub const ROLE_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// A role of `--role`: what a child process of the harness is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleName {
    /// The load generator.
    Load,
    /// Workers of our worker library, serving `Echo`.
    NmidWorker,
    /// NATS queue-group responders (`--conns` connections, one subscription each).
    NatsResponder,
    /// Gearman workers.
    GearmanWorker,
    /// The floor's echo server.
    EchoServer,
    /// The HTTP floor: a bare actix-web server answering `POST /call/Echo` itself.
    HttpEchoServer,
}

/// Runs `role` with `options` in this process; its exit code.
pub fn main(role: RoleName, options: &Options) -> ExitCode {
    procs::exit_with_parent(ROLE_MAX_LIFETIME);
    let result = match role {
        RoleName::Load => loadgen::run(options),
        server => servers::run(server, &options.child),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAIL {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A single-threaded tokio runtime: every peer's processes get the same one.
pub fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The workload: the payload upper-cased.
pub fn upper(bytes: &[u8]) -> Bytes {
    Bytes::from(bytes.to_ascii_uppercase())
}

/// `builder` with TLS trusting `NMID_BENCH_CA_FILE`, when the security system us-tagged-tls
/// set it (the token of us-tagged-auth comes to the libraries as `NMID_TOKEN`).
pub fn with_bench_tls<B>(builder: B, tls: impl FnOnce(B, nmid::security::ClientTls) -> B) -> B {
    match std::env::var("NMID_BENCH_CA_FILE") {
        Ok(ca_file) if !ca_file.is_empty() => tls(
            builder,
            nmid::security::ClientTls {
                ca_file,
                ..Default::default()
            },
        ),
        _ => builder,
    }
}
