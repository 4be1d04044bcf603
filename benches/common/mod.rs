//! Building blocks of the `compare` harness (benches/compare.rs), one concern a file.
//!
//! The harness side, in the order a run uses them:
//! - `options`: the command line (clap), and the settings a run resolves from it.
//! - `systems`: how each system is started (us tagged and v1, HTTP, NATS, gearmand, the
//!   floors), its ports, and the checks before anything starts; `peers` starts nats-server
//!   and gearmand with their responders and workers.
//! - `load`: the measurement of one cell: a load generator (or wrk) against a running
//!   system for one window, and the CPU of every process over it, judged into a run.
//! - `table`: the main table, repetition by repetition over every system.
//! - `scale`: throughput as functions grow 1 -> 1000 and worker connections 1 -> 100 (and
//!   NATS with as many queue-group responder connections beside it), after `memory`: the
//!   dispatcher's memory with 10,000 idle connections.
//! - `cluster`: three dispatchers on etcd: a forwarded call against a direct one, and the
//!   failover time of a discovering client.
//! - `report`: runs, medians, targets, the machine, and the JSON and markdown files;
//!   `markdown` renders the tables.
//! - `progress`: what the harness says on stderr while it runs.
//! - `procs`: child processes with kill-and-wait guards, CPU and RSS from /proc, port checks.
//!
//! `background` holds the parts of the other harness on this code, `benches/jobs.rs`
//! (durable background jobs and streaming partials against gearmand and NATS).
//!
//! The child side is `roles`: the load generator, our workers, NATS responders, Gearman
//! workers and the echo server, each a process of its own.

// The parts of benches/jobs.rs (background jobs, streaming): the compare harness does not
// use them.
#[allow(dead_code)]
pub mod background;
pub mod cluster;
pub mod load;
pub mod markdown;
pub mod memory;
pub mod options;
pub mod peers;
pub mod procs;
pub mod progress;
pub mod report;
pub mod roles;
pub mod scale;
pub mod systems;
pub mod table;

use options::Settings;
use progress::Progress;
use systems::Launcher;

/// The function every system serves: upper-case the payload bytes.
pub const FUNCTION: &str = "Echo";

/// The payload of every call: `len` lower-case letters; the answer is the same upper-cased.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// What every part of a run uses: what to do, how to start things, where to say how far
/// it got.
#[derive(Debug)]
pub struct Harness {
    /// What this run does.
    pub settings: Settings,
    /// Starts the systems and the role children.
    pub launcher: Launcher,
    /// Progress on stderr.
    pub progress: Progress,
}
