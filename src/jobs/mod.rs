//! Background jobs: calls submitted now and run later, whose state and result are kept in
//! an embedded store (`jobs.data_dir`) and read back by id (`docs/jobs.md`).
//!
//! - [`record`]: one job as stored, its state and id.
//! - [`book`]: the jobs in memory as plain data: order, delays, retries, unique keys,
//!   bounds.
//! - [`store`]: the redb file and the thread that writes it (group commit, `jobs.fsync`).
//! - [`callback`]: a final state POSTed to the submitter's URL: signed, retried, allow-listed.
//! - [`options`]: a submission's options, from HTTP headers or tagged metadata.
//! - [`access`]: who may see a job (its submitter, or an admin).
//! - [`remote`]: asking the dispatcher that owns another node's job, for a client here.
//!
//! The actor that carries them out is [`crate::actors::background`].

pub mod access;
pub mod book;
pub mod callback;
pub mod options;
pub mod record;
pub mod remote;
pub mod store;

use std::collections::HashMap;

pub use book::{Accepted, AttemptEnd, Book, Full, Limits, NewJob, NotCancelled, Room};
pub use record::{BackgroundId, JobRecord, JobState};
pub use store::{Change, Fsync, Store, StoreError};

/// The background jobs' numbers, for the metrics and `/api/v1/stats`, refreshed each tick.
#[derive(Debug, Clone, Default)]
pub struct JobsGauges {
    /// Queued jobs by (function, priority).
    pub queued: HashMap<(String, &'static str), u64>,
    /// Running jobs.
    pub running: u64,
    /// Jobs by final state.
    pub finished: HashMap<&'static str, u64>,
    /// Age of the oldest due queued job, in seconds.
    pub oldest_queued_s: f64,
    /// Bytes held.
    pub bytes: u64,
    /// Jobs held.
    pub jobs: u64,
    /// Attempts started, since start.
    pub attempts: u64,
}
