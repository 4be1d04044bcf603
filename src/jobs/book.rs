//! The background jobs in memory, as plain data (no actix, no I/O): which job runs next,
//! which wait for their time, which share a unique key, and the store's bounds. The jobs
//! actor carries out what it decides and writes what it changes to the store.
//!
//! The rules:
//! - a function's due jobs start highest priority first, then oldest first, while fewer
//!   than `window` of its jobs are running, and only into free slots of its workers here
//!   (the rest wait here, queued and cancellable, not in the registry's queue: a later high
//!   job still overtakes them, and an attempt's time starts when a worker can take it);
//! - a job with a run-at time in the future waits until then;
//! - a job starts only once its submission is in the store ([`Book::release`]): a job whose
//!   write failed never ran;
//! - a failed attempt is tried again after `backoff × 2^(attempts-1)` (at most an hour)
//!   while attempts are left; an attempt that found no worker, or was cut short by a
//!   shutdown, does not count;
//! - a function no worker serves is **parked**: its jobs wait `no_worker_retry_ms`, doubling
//!   while it still has none (at most `no_worker_retry_max_ms`), so that jobs for functions
//!   nobody serves cost one attempt per function and wait, not one per job;
//! - a job found running when the dispatcher starts (it stopped mid-attempt) is queued again,
//!   unless that was its last attempt: then it fails (`interrupted`), so a job that kills the
//!   dispatcher cannot do so forever;
//! - while a job with a unique key is queued or running, a submission of the same caller,
//!   function and key gets that job (gearman's coalescing);
//! - the store holds at most `max_jobs` jobs (`max_jobs_per_caller` of one caller) and
//!   `max_bytes` of their data (`max_bytes_per_caller` of one caller's), results included: past either a submission is refused, and
//!   a result that would not fit fails its job (`result_too_large`); final jobs are
//!   forgotten when their result TTL is over.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use serde_bytes::ByteBuf;

use super::record::{BackgroundId, JobRecord, JobState};
use crate::call::Priority;

mod terms;
pub use terms::{Accepted, AttemptEnd, Full, Limits, NewJob, NotCancelled, Room};

/// Longest wait between two attempts.
const MAX_BACKOFF_MS: u64 = 3_600_000;

/// What one caller holds in the store.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    jobs: usize,
    bytes: usize,
}
/// A function's due jobs and its running count.
#[derive(Debug, Default)]
struct FunctionQueue {
    /// (priority rank, seq): the next to start first.
    ready: BTreeSet<(usize, u64)>,
    running: u32,
}

type UniqueKey = (Option<String>, Bytes, Bytes);

/// A page of [`Book::list`].
#[derive(Debug)]
pub struct Page<'a> {
    /// The jobs kept.
    pub jobs: Vec<&'a JobRecord>,
    /// Where the next page starts (`after`), when there may be more.
    pub next: Option<u64>,
}

/// The jobs of one dispatcher's store.
#[derive(Debug)]
pub struct Book {
    node: String,
    next_seq: u64,
    limits: Limits,
    jobs: BTreeMap<u64, JobRecord>,
    queues: HashMap<Bytes, FunctionQueue>,
    /// Accepted jobs not yet in the store: they wait for [`Book::release`].
    held: HashSet<u64>,
    /// Functions no worker served at their last attempt: (parked until, the last wait).
    parked: HashMap<Bytes, (u64, u64)>,
    /// Jobs stored per caller.
    per_caller: HashMap<Option<String>, Usage>,
    /// Functions whose jobs may start since the last [`Book::startable`].
    touched: HashSet<Bytes>,
    /// (run at, seq) of queued jobs not yet due.
    delayed: BTreeSet<(u64, u64)>,
    /// (expires, seq) of final jobs.
    expiry: BTreeSet<(u64, u64)>,
    unique: HashMap<UniqueKey, u64>,
    bytes: usize,
}

impl Book {
    /// A book of the jobs `loaded` from the store of node `node`, whose next job number is
    /// `next_seq`; jobs that were running when the dispatcher stopped are queued again
    /// (returned, to be written).
    pub fn new(
        node: String,
        next_seq: u64,
        limits: Limits,
        loaded: Vec<JobRecord>,
        now: u64,
    ) -> (Self, Vec<JobRecord>) {
        let mut book = Book {
            node,
            next_seq,
            limits,
            jobs: BTreeMap::new(),
            queues: HashMap::new(),
            held: HashSet::new(),
            parked: HashMap::new(),
            per_caller: HashMap::new(),
            touched: HashSet::new(),
            delayed: BTreeSet::new(),
            expiry: BTreeSet::new(),
            unique: HashMap::new(),
            bytes: 0,
        };
        let mut requeued = Vec::new();
        for mut record in loaded {
            if record.state == JobState::Running {
                record.progress = None;
                if record.attempts >= record.max_attempts {
                    record.state = JobState::Failed;
                    record.finished_ms = Some(now);
                    record.error_code = Some("interrupted".to_owned());
                    let why = "the dispatcher stopped during its last attempt";
                    record.output = Some(ByteBuf::from(why.as_bytes().to_vec()));
                } else {
                    record.state = JobState::Queued;
                    record.run_at_ms = now;
                }
                requeued.push(record.clone());
            }
            book.insert(record);
        }
        // Numbers given to submissions not yet written when the dispatcher stopped are not
        // in the store: they may have been seen (a status read), so none is given again.
        // There were at most `max_jobs` of them.
        book.next_seq = book.next_seq.saturating_add(limits.max_jobs as u64 + 1);
        (book, requeued)
    }

    /// This dispatcher's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The next job number (stored with every write).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The id of job `seq`.
    pub fn id(&self, seq: u64) -> BackgroundId {
        BackgroundId {
            node: self.node.clone(),
            seq,
        }
    }

    /// Jobs stored, and their bytes.
    pub fn size(&self) -> (usize, usize) {
        (self.jobs.len(), self.bytes)
    }

    /// Accepts `job` (or gives the job sharing its unique key), unless the store is full.
    pub fn submit(&mut self, job: NewJob, now: u64) -> Result<Accepted, Full> {
        let mut record = job.record;
        if let Some(key) = unique_key(&record) {
            if let Some(&seq) = self.unique.get(&key) {
                return Ok(Accepted::Shared(seq));
            }
        }
        if self.jobs.len() >= self.limits.max_jobs {
            return Err(Full::Jobs(self.limits.max_jobs));
        }
        let mine = self
            .per_caller
            .get(&record.caller)
            .copied()
            .unwrap_or_default();
        if mine.jobs >= self.limits.max_jobs_per_caller {
            return Err(Full::Caller(self.limits.max_jobs_per_caller));
        }
        if self.bytes + record.weight() > self.limits.max_bytes {
            return Err(Full::Bytes(self.limits.max_bytes));
        }
        if mine.bytes + record.weight() > self.limits.max_bytes_per_caller {
            return Err(Full::CallerBytes(self.limits.max_bytes_per_caller));
        }
        record.seq = self.next_seq;
        self.next_seq += 1;
        record.state = JobState::Queued;
        record.created_ms = now;
        self.held.insert(record.seq);
        self.insert(record.clone());
        Ok(Accepted::New(Box::new(record)))
    }

    /// Job `seq` is in the store: it may start when due.
    pub fn release(&mut self, seq: u64) {
        if self.held.remove(&seq) {
            if let Some(record) = self.jobs.get(&seq).filter(|r| r.state == JobState::Queued) {
                self.delayed.insert((record.run_at_ms, seq));
            }
        }
    }

    /// Whether job `seq` waits for its submission to be written.
    pub fn is_held(&self, seq: u64) -> bool {
        self.held.contains(&seq)
    }

    /// Forgets job `seq` entirely (its submission could not be written).
    pub fn forget(&mut self, seq: u64) -> Option<JobRecord> {
        self.held.remove(&seq);
        self.remove(seq)
    }

    /// Job `seq`.
    pub fn get(&self, seq: u64) -> Option<&JobRecord> {
        self.jobs.get(&seq)
    }

    /// Moves the jobs whose time has come to their functions' queues, and says when the
    /// next delayed job is due.
    pub fn wake(&mut self, now: u64) -> Option<u64> {
        while let Some(&(at, seq)) = self.delayed.first() {
            if at > now {
                return Some(at);
            }
            self.delayed.pop_first();
            if let Some(record) = self.jobs.get(&seq) {
                let function = Bytes::copy_from_slice(&record.function);
                let rank = Priority::from(record.priority).rank();
                self.queues.entry(function.clone()).or_default();
                self.queues
                    .get_mut(&function)
                    .unwrap()
                    .ready
                    .insert((rank, seq));
                self.touched.insert(function);
            }
        }
        None
    }

    /// Functions with jobs ready to start, and how many could start (at most `window` running).
    pub fn wanted(&self) -> impl Iterator<Item = (&Bytes, u32)> {
        let window = self.limits.window;
        (self.queues.iter())
            .map(move |(f, q)| {
                (
                    f,
                    (q.ready.len() as u32).min(window.saturating_sub(q.running)),
                )
            })
            .filter(|(_, wanted)| *wanted > 0)
    }

    /// The jobs that start now (marked running, an attempt counted): to be written and
    /// dispatched. `room` says what a function's workers here may hold at once. A
    /// function whose jobs wait for slots (or to be known) is looked at again next time.
    pub fn startable(&mut self, now: u64, room: impl Fn(&Bytes) -> Room) -> Vec<JobRecord> {
        let mut started = Vec::new();
        let mut again = HashSet::new();
        for function in std::mem::take(&mut self.touched) {
            if let Some(&(until, _)) = self.parked.get(&function) {
                if until > now {
                    self.park_ready(&function, until);
                    continue;
                }
            }
            let Some(queue) = self.queues.get_mut(&function) else {
                continue;
            };
            let limit = match room(&function) {
                Room::Unknown => 0,
                Room::Elsewhere => self.limits.window,
                Room::Free(free) => (queue.running + free).min(self.limits.window),
                Room::Peers(slots) => slots.min(self.limits.window),
            };
            while queue.running < limit {
                let Some((_, seq)) = queue.ready.pop_first() else {
                    break;
                };
                let Some(record) = self.jobs.get_mut(&seq) else {
                    continue;
                };
                queue.running += 1;
                record.state = JobState::Running;
                record.attempts += 1;
                record.started_ms = Some(now);
                record.progress = None;
                started.push(record.clone());
            }
            // Waiting for slots (or to be known), not for a job of its own to end.
            if limit < self.limits.window && !queue.ready.is_empty() {
                again.insert(function.clone());
            }
            if queue.ready.is_empty() && queue.running == 0 {
                self.queues.remove(&function);
            }
        }
        self.touched.extend(again);
        started
    }

    /// Records how job `seq`'s attempt ended: the job as it is now (to be written), if it
    /// is still here.
    pub fn finish(&mut self, seq: u64, end: AttemptEnd, now: u64) -> Option<&JobRecord> {
        let record = self.jobs.get_mut(&seq)?;
        if record.state != JobState::Running {
            return None;
        }
        let function = Bytes::copy_from_slice(&record.function);
        if let Some(queue) = self.queues.get_mut(&function) {
            queue.running = queue.running.saturating_sub(1);
        }
        self.touched.insert(function.clone());
        let old_weight = record.weight();
        if !matches!(end, AttemptEnd::NoWorker) {
            self.parked.remove(&function);
        }
        let callers = self.per_caller.get(&record.caller).map_or(0, |u| u.bytes);
        let room = (self.limits.max_bytes - self.bytes.min(self.limits.max_bytes))
            .min(self.limits.max_bytes_per_caller - callers.min(self.limits.max_bytes_per_caller));
        let end = match end {
            AttemptEnd::Succeeded(result) if result.len() > room => AttemptEnd::Failed {
                code: "result_too_large",
                message: format!(
                    "its result ({} bytes) does not fit in the job store (jobs.max_stored_bytes, jobs.max_stored_bytes_per_caller)",
                    result.len()
                ),
                retry: false,
            },
            end => end,
        };
        let record = self.jobs.get_mut(&seq).expect("the job is here");
        let (state, run_at) = match end {
            AttemptEnd::Succeeded(result) => {
                record.output = Some(ByteBuf::from(result.to_vec()));
                record.error_code = None;
                (JobState::Succeeded, None)
            }
            AttemptEnd::Failed {
                code,
                message,
                retry,
            } => {
                record.output = Some(ByteBuf::from(message.into_bytes()));
                record.error_code = Some(code.to_owned());
                match retry && record.attempts < record.max_attempts {
                    true => {
                        let doublings = record.attempts.saturating_sub(1).min(20);
                        let wait = record.backoff_ms.saturating_mul(1 << doublings);
                        (JobState::Queued, Some(now + wait.min(MAX_BACKOFF_MS)))
                    }
                    false => (JobState::Failed, None),
                }
            }
            AttemptEnd::NoWorker => {
                record.attempts = record.attempts.saturating_sub(1);
                let wait = match self.parked.get(&function) {
                    Some(&(until, last)) if until > now => last,
                    Some(&(_, last)) => (last * 2).min(self.limits.no_worker_retry_max_ms),
                    None => self.limits.no_worker_retry_ms,
                };
                self.parked.insert(function.clone(), (now + wait, wait));
                (JobState::Queued, Some(now + wait))
            }
            AttemptEnd::Interrupted | AttemptEnd::Busy => {
                record.attempts = record.attempts.saturating_sub(1);
                (JobState::Queued, Some(now))
            }
        };
        let record = self.jobs.remove(&seq).expect("the job is here");
        self.bytes -= old_weight;
        self.uncount(&record.caller, old_weight);
        let mut record = record;
        record.state = state;
        if state.is_final() {
            record.progress = None;
        }
        if let Some(at) = run_at {
            record.run_at_ms = at;
        } else {
            record.finished_ms = Some(now);
        }
        self.insert(record);
        self.jobs.get(&seq)
    }

    /// Records what became of job `seq`'s callback: the job as it is now (to be written).
    pub fn note_callback(&mut self, seq: u64, outcome: String) -> Option<&JobRecord> {
        let record = self.jobs.get_mut(&seq)?;
        record.callback = Some(outcome);
        Some(record)
    }

    /// Final jobs whose callback was never tried to its end (the dispatcher stopped first).
    pub fn callbacks_due(&self) -> Vec<&JobRecord> {
        (self.jobs.values())
            .filter(|r| r.state.is_final() && r.callback_url.is_some() && r.callback.is_none())
            .collect()
    }

    /// The worker's progress on job `seq`; `false` if it is not running.
    pub fn progress(&mut self, seq: u64, numerator: u64, denominator: u64) -> bool {
        match self.jobs.get_mut(&seq) {
            Some(record) if record.state == JobState::Running => {
                record.progress = Some((numerator, denominator));
                true
            }
            _ => false,
        }
    }

    /// Cancels queued job `seq`: the job as it is now (to be written).
    pub fn cancel(&mut self, seq: u64, now: u64) -> Result<&JobRecord, NotCancelled> {
        let state = self.jobs.get(&seq).ok_or(NotCancelled::NotFound)?.state;
        if state != JobState::Queued {
            return Err(NotCancelled::Too(state));
        }
        let mut record = self.remove(seq).expect("the job is here");
        record.state = JobState::Cancelled;
        record.finished_ms = Some(now);
        self.insert(record);
        Ok(&self.jobs[&seq])
    }

    /// Forgets the final jobs whose result TTL is over: their numbers, to be deleted.
    pub fn expire(&mut self, now: u64) -> Vec<u64> {
        let mut gone = Vec::new();
        while let Some(&(at, seq)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.remove(seq);
            gone.push(seq);
        }
        gone
    }

    /// Up to `limit` jobs after number `after`, in number order, that `keep` keeps,
    /// looking at `max_scan` jobs at most: the page's `next` says where to go on.
    pub fn list(&self, after: u64, limit: usize, keep: impl Fn(&JobRecord) -> bool) -> Page<'_> {
        let mut jobs = Vec::new();
        let mut last = None;
        let range = self.jobs.range(after.saturating_add(1)..);
        for (scanned, (&seq, record)) in range.enumerate() {
            if scanned >= self.limits.max_scan || jobs.len() >= limit {
                return Page {
                    jobs,
                    next: last.or(Some(after)),
                };
            }
            last = Some(seq);
            if keep(record) {
                jobs.push(record);
            }
        }
        Page { jobs, next: None }
    }

    /// Every job, for the metrics.
    pub fn records(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// Files `record` under its state.
    fn insert(&mut self, record: JobRecord) {
        let seq = record.seq;
        self.bytes += record.weight();
        let usage = self.per_caller.entry(record.caller.clone()).or_default();
        usage.jobs += 1;
        usage.bytes += record.weight();
        match record.state {
            JobState::Queued => {
                if !self.held.contains(&seq) {
                    self.delayed.insert((record.run_at_ms, seq));
                }
                if let Some(key) = unique_key(&record) {
                    self.unique.insert(key, seq);
                }
            }
            JobState::Running => {
                let function = Bytes::copy_from_slice(&record.function);
                self.queues.entry(function).or_default().running += 1;
                if let Some(key) = unique_key(&record) {
                    self.unique.insert(key, seq);
                }
            }
            _ => {
                if let Some(key) = unique_key(&record) {
                    if self.unique.get(&key) == Some(&seq) {
                        self.unique.remove(&key);
                    }
                }
                if let Some(at) = record.expires_ms() {
                    self.expiry.insert((at, seq));
                }
            }
        }
        self.jobs.insert(seq, record);
    }

    /// Takes job `seq` out of every index.
    fn remove(&mut self, seq: u64) -> Option<JobRecord> {
        let record = self.jobs.remove(&seq)?;
        self.bytes -= record.weight();
        self.uncount(&record.caller, record.weight());
        self.delayed.remove(&(record.run_at_ms, seq));
        if let Some(at) = record.expires_ms() {
            self.expiry.remove(&(at, seq));
        }
        let function = Bytes::copy_from_slice(&record.function);
        if let Some(queue) = self.queues.get_mut(&function) {
            queue
                .ready
                .remove(&(Priority::from(record.priority).rank(), seq));
        }
        if let Some(key) = unique_key(&record) {
            if self.unique.get(&key) == Some(&seq) {
                self.unique.remove(&key);
            }
        }
        Some(record)
    }
}

impl Book {
    /// One job of `caller`, of `weight` bytes, fewer.
    fn uncount(&mut self, caller: &Option<String>, weight: usize) {
        if let Some(usage) = self.per_caller.get_mut(caller) {
            usage.jobs -= 1;
            usage.bytes -= weight;
            if usage.jobs == 0 {
                self.per_caller.remove(caller);
            }
        }
    }

    /// Puts the due jobs of parked `function` back to wait until `until`.
    fn park_ready(&mut self, function: &Bytes, until: u64) {
        let Some(queue) = self.queues.get_mut(function) else {
            return;
        };
        for (_, seq) in std::mem::take(&mut queue.ready) {
            if let Some(record) = self.jobs.get_mut(&seq) {
                record.run_at_ms = record.run_at_ms.max(until);
                self.delayed.insert((record.run_at_ms, seq));
            }
        }
    }
}

/// The key under which `record` shares its execution, if it has a unique key.
fn unique_key(record: &JobRecord) -> Option<UniqueKey> {
    let key = record.unique.as_ref()?;
    Some((
        record.caller.clone(),
        Bytes::copy_from_slice(&record.function),
        Bytes::copy_from_slice(key),
    ))
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
