//! What the book is told and answers: its bounds, a submission, the refusals and outcomes.

use bytes::Bytes;

use super::super::record::{JobRecord, JobState};

/// The bounds of the book.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Jobs stored at most (`jobs.max_stored_jobs`).
    pub max_jobs: usize,
    /// Bytes of stored jobs at most (`jobs.max_stored_bytes`).
    pub max_bytes: usize,
    /// Jobs of one function running at once (`jobs.max_running_per_function`).
    pub window: u32,
    /// Wait before trying again a job that found no worker (`jobs.no_worker_retry_ms`).
    pub no_worker_retry_ms: u64,
    /// The longest such wait, doubling from `no_worker_retry_ms` (`jobs.no_worker_retry_max_ms`).
    pub no_worker_retry_max_ms: u64,
    /// Jobs of one caller stored at most (`jobs.max_stored_jobs_per_caller`).
    pub max_jobs_per_caller: usize,
    /// Bytes of one caller's jobs at most (`jobs.max_stored_bytes_per_caller`).
    pub max_bytes_per_caller: usize,
    /// Jobs looked at by one [`Book::list`](super::Book::list) at most, so that a page never stalls the actor.
    pub max_scan: usize,
}

/// A submission, as the book needs it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job, state and numbers still to be filled in.
    pub record: JobRecord,
}

/// Why a submission was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// `max_jobs` are stored.
    Jobs(usize),
    /// The store holds `max_bytes`.
    Bytes(usize),
    /// The caller has `max_jobs_per_caller` jobs stored.
    Caller(usize),
    /// The job would take its caller's jobs past `max_bytes_per_caller`.
    CallerBytes(usize),
}

/// What became of a submission.
#[derive(Debug)]
pub enum Accepted {
    /// A new job (to be written).
    New(Box<JobRecord>),
    /// The queued or running job with the same unique key.
    Shared(u64),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    /// The worker's result.
    Succeeded(Bytes),
    /// It failed; `retry` if another attempt may succeed.
    Failed {
        /// The error's code (`worker_error`, `timeout`, ...).
        code: &'static str,
        /// Why.
        message: String,
        /// Another attempt may succeed.
        retry: bool,
    },
    /// No worker serves the function (yet): the job waits, no attempt used.
    NoWorker,
    /// The dispatcher is stopping: the job waits for the next start, no attempt used.
    Interrupted,
    /// Every worker was busy (or every peer full): the job waits for a free slot, no
    /// attempt used.
    Busy,
}

/// Why a job could not be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCancelled {
    /// No such job.
    NotFound,
    /// It is running or already over.
    Too(JobState),
}

/// What a function's workers here may take, as the registry last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Not asked yet: its jobs wait.
    Unknown,
    /// No worker serves it here, and no peer says how many slots its workers have: its jobs
    /// go to the registry (`window` at a time), which forwards them to a peer or finds no
    /// worker (the function is then parked).
    Elsewhere,
    /// No worker serves it here; the peers' workers that do hold this many jobs at once
    /// (their own calls may hold some): its jobs go to the registry, forwarded, this many at
    /// a time at most.
    Peers(u32),
    /// Its workers here could take this many more jobs now.
    Free(u32),
}
