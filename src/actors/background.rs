//! The background jobs' actor: it owns the [`Book`] and the [`Store`], starts each due job
//! as a [`JobActor`](super::job::JobActor) (the path every call takes: the registry, a worker, retries on a lost
//! worker) and records how each attempt ended.
//!
//! The HTTP front end (and the tagged client session) send it [`Submit`] once the front
//! door has vetted the call ([`FrontDoor::vet`](super::front_door::FrontDoor::vet)), and
//! [`GetJob`], [`CancelJob`], [`ListJobs`] and [`WaitForJob`]; its own attempts answer with
//! [`AttemptDone`]. A submission is answered once the store has committed it (durably with
//! `jobs.fsync = "always"`); the submissions of one turn are written together
//! (`submissions.rs`); every later change is written behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::job::JobServices;
use super::registry::CapacityRoom;
use crate::call::CallOutcome;
use crate::jobs::callback::Callbacks;
use crate::jobs::record::now_ms;
use crate::jobs::{
    Accepted, AttemptEnd, BackgroundId, Book, Change, Full, JobRecord, JobState, JobsGauges,
    NewJob, NotCancelled, Room, Store,
};

/// How often due jobs are started and expired ones forgotten.
const TICK: Duration = Duration::from_millis(20);
/// How often the gauges are counted again (a walk over every job).
const GAUGES_EVERY: Duration = Duration::from_millis(500);

mod attempts;
mod callbacks;
mod submissions;

use attempts::attempt_end;
use submissions::Unwritten;

/// Submits a vetted call as a background job.
#[derive(Message)]
#[rtype(result = "Result<Submitted, SubmitError>")]
pub struct Submit {
    /// The job, as [`SubmitOptions::record`](crate::jobs::options::SubmitOptions::record)
    /// made it.
    pub record: JobRecord,
}

/// An accepted submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The job's id.
    pub id: BackgroundId,
    /// It is the queued or running job with the same unique key (whose options stand;
    /// this submission's are not used).
    pub shared: bool,
    /// Where the job stands.
    pub state: JobState,
}

/// Why a submission was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The store is full.
    #[error("job store full: {0}")]
    Full(String),
    /// The store could not write it.
    #[error("job store write failed: {0}")]
    Store(String),
    /// The dispatcher is stopping.
    #[error("dispatcher is shutting down")]
    ShuttingDown,
}

/// Job `seq` of this dispatcher, as it is now.
#[derive(Message)]
#[rtype(result = "Option<JobRecord>")]
pub struct GetJob {
    /// Its number.
    pub seq: u64,
}

/// Cancels queued job `seq`.
#[derive(Message)]
#[rtype(result = "Result<JobRecord, NotCancelled>")]
pub struct CancelJob {
    /// Its number.
    pub seq: u64,
}

/// A page of jobs.
#[derive(Message)]
#[rtype(result = "(Vec<JobRecord>, Option<u64>)")]
pub struct ListJobs {
    /// Numbers above this one.
    pub after: u64,
    /// At most this many.
    pub limit: usize,
    /// Those this keeps (function, state, caller).
    pub keep: Box<dyn Fn(&JobRecord) -> bool + Send>,
}

/// Answers when job `seq` is final (or gone), or after `timeout`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WaitForJob {
    /// Its number.
    pub seq: u64,
    /// The longest wait.
    pub timeout: Duration,
}

/// How one attempt of job `seq` ended (sent by the attempt's own job actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptDone {
    /// The job.
    pub seq: u64,
    /// How.
    pub outcome: CallOutcome,
}

/// The dispatcher is stopping: start no more attempts (those running end as their calls
/// do; an attempt refused as shutting down waits for the next start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopStarting;

/// Makes everything written durable; answered once it is.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct FlushJobs;

/// The background jobs.
pub struct Background {
    book: Book,
    store: Store,
    services: JobServices,
    /// Callers waiting for a job to end, by job number.
    waiters: HashMap<u64, Vec<oneshot::Sender<()>>>,
    waiting: usize,
    max_waiters: usize,
    starting: bool,
    gauges: Arc<Mutex<JobsGauges>>,
    /// Where final states are POSTed.
    callbacks: Callbacks,
    /// When the gauges were last counted.
    counted: Option<std::time::Instant>,
    attempts: u64,
    /// The slots of the workers here of each function with jobs (asked of the registry).
    slots: attempts::Slots,
    /// Submissions accepted this turn, written together at its end.
    unwritten: Vec<Unwritten>,
    /// Their new jobs.
    unwritten_changes: Vec<Change>,
}

impl Background {
    /// The jobs of `book`, written to `store`, run through `services`; `gauges` is
    /// refreshed for the metrics.
    pub fn new(
        book: Book,
        store: Store,
        services: JobServices,
        max_waiters: usize,
        gauges: Arc<Mutex<JobsGauges>>,
        callbacks: Callbacks,
    ) -> Self {
        Self {
            book,
            store,
            services,
            waiters: HashMap::new(),
            waiting: 0,
            max_waiters,
            starting: true,
            gauges,
            callbacks,
            counted: None,
            attempts: 0,
            slots: attempts::Slots::default(),
            unwritten: Vec::new(),
            unwritten_changes: Vec::new(),
        }
    }
}

/// The background jobs, started.
pub struct Opened {
    /// Their actor.
    pub addr: Addr<Background>,
    /// The store's node name (in the jobs' ids).
    pub node: String,
    /// The numbers the actor keeps counting, for the metrics and the admin API.
    pub gauges: Arc<Mutex<JobsGauges>>,
}

impl Background {
    /// Opens the store `config` names (or keeps jobs in memory), queues again the jobs that
    /// were running when the dispatcher last stopped, and starts the actor on `arbiter`.
    /// Returns it with the store's node name and the gauges it keeps.
    pub fn open(
        config: &crate::config::JobsConfig,
        services: JobServices,
        callbacks: Callbacks,
        arbiter: &ArbiterHandle,
    ) -> Result<Opened, crate::jobs::StoreError> {
        let (store, loaded) = match config.data_dir() {
            Some(dir) => Store::open(&dir, config.fsync())?,
            None => {
                warn!("jobs.data_dir is empty: background jobs live in memory only and are lost when the dispatcher stops");
                Store::memory()
            }
        };
        if loaded.unreadable > 0 {
            warn!(
                records = loaded.unreadable,
                "job store: records that could not be read were skipped"
            );
        }
        let node = loaded.node.clone();
        let (book, requeued) = Book::new(
            loaded.node,
            loaded.next_seq,
            config.limits(),
            loaded.records,
            now_ms(),
        );
        if !requeued.is_empty() {
            info!(
                jobs = requeued.len(),
                "background jobs that were running at the last stop are queued again"
            );
            let changes = requeued
                .into_iter()
                .map(|r| Change::Put(Box::new(r)))
                .collect();
            store.write_later(changes, book.next_seq());
        }
        let gauges = Arc::new(Mutex::new(JobsGauges::default()));
        let shared = gauges.clone();
        let max_waiters = config.max_waiters;
        let addr = Background::start_in_arbiter(arbiter, move |_| {
            Background::new(book, store, services, max_waiters, shared, callbacks)
        });
        Ok(Opened { addr, node, gauges })
    }
}

impl Actor for Background {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (jobs, bytes) = self.book.size();
        info!(
            node = self.book.node(),
            jobs,
            bytes,
            durable = self.store.is_durable(),
            "background jobs ready"
        );
        ctx.run_interval(TICK, |jobs, ctx| jobs.pump(ctx));
        // Callbacks the last run did not finish trying are tried again (at least once).
        let due: Vec<JobRecord> = self.book.callbacks_due().into_iter().cloned().collect();
        for record in &due {
            self.call_back(record, ctx);
        }
        self.pump(ctx);
    }
}

impl Handler<Submit> for Background {
    type Result = ResponseFuture<Result<Submitted, SubmitError>>;

    /// Answered once the job is in the store (durably with `jobs.fsync = "always"`); it
    /// starts only then. A submission sharing a job with a unique key is answered once
    /// that job's own submission is written too.
    fn handle(&mut self, submit: Submit, ctx: &mut Self::Context) -> Self::Result {
        if !self.starting {
            return Box::pin(async { Err(SubmitError::ShuttingDown) });
        }
        let new = NewJob {
            record: submit.record,
        };
        let (answer, answered) = oneshot::channel();
        match self.book.submit(new, now_ms()) {
            Ok(Accepted::Shared(seq)) => {
                let id = self.book.id(seq);
                let state = self.book.get(seq).map_or(JobState::Queued, |r| r.state);
                let submitted = Submitted {
                    id,
                    shared: true,
                    state,
                };
                // Behind whatever is being written, the shared job's submission included.
                let unwritten = Unwritten {
                    seq: None,
                    submitted,
                    answer,
                };
                self.queue_submission(None, unwritten, ctx);
            }
            Ok(Accepted::New(record)) => {
                let seq = record.seq;
                let submitted = Submitted {
                    id: self.book.id(seq),
                    shared: false,
                    state: JobState::Queued,
                };
                let unwritten = Unwritten {
                    seq: Some(seq),
                    submitted,
                    answer,
                };
                self.queue_submission(Some(Change::Put(record)), unwritten, ctx);
            }
            Err(full) => {
                let why = match full {
                    Full::Jobs(max) => format!("{max} jobs stored (jobs.max_stored_jobs)"),
                    Full::Bytes(max) => format!(
                        "this job would take the store past {max} bytes (jobs.max_stored_bytes)"
                    ),
                    Full::Caller(max) => format!(
                        "this caller has {max} jobs stored (jobs.max_stored_jobs_per_caller)"
                    ),
                    Full::CallerBytes(max) => format!(
                        "this job would take this caller's jobs past {max} bytes (jobs.max_stored_bytes_per_caller)"
                    ),
                };
                return Box::pin(async move { Err(SubmitError::Full(why)) });
            }
        }
        Box::pin(async move {
            let stopped = || SubmitError::Store("the store's writer stopped".to_owned());
            answered.await.unwrap_or_else(|_| Err(stopped()))
        })
    }
}

impl Handler<GetJob> for Background {
    type Result = Option<JobRecord>;

    fn handle(&mut self, get: GetJob, _: &mut Self::Context) -> Self::Result {
        self.book.get(get.seq).cloned()
    }
}

impl Handler<CancelJob> for Background {
    type Result = ResponseFuture<Result<JobRecord, NotCancelled>>;

    /// Answered once the cancellation is written (durably with `jobs.fsync = "always"`), so
    /// a job answered cancelled never runs after a crash.
    fn handle(&mut self, cancel: CancelJob, ctx: &mut Self::Context) -> Self::Result {
        // The job's submission, if still in this turn's group, is written before.
        self.write_submissions(ctx);
        let record = match self.book.cancel(cancel.seq, now_ms()) {
            Ok(record) => record.clone(),
            Err(refused) => return Box::pin(async move { Err(refused) }),
        };
        let written = (self.store).write(
            vec![Change::Put(Box::new(record.clone()))],
            self.book.next_seq(),
        );
        self.notify(cancel.seq);
        self.call_back(&record, ctx);
        Box::pin(async move {
            if let Ok(Err(cause)) = written.await {
                error!(%cause, "job store: a cancellation was not written");
            }
            Ok(record)
        })
    }
}

impl Handler<ListJobs> for Background {
    type Result = MessageResult<ListJobs>;

    fn handle(&mut self, list: ListJobs, _: &mut Self::Context) -> Self::Result {
        let page = self.book.list(list.after, list.limit, |r| (list.keep)(r));
        let jobs = page.jobs.into_iter().cloned().collect();
        MessageResult((jobs, page.next))
    }
}

impl Handler<WaitForJob> for Background {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, wait: WaitForJob, _: &mut Self::Context) -> Self::Result {
        let over = self.book.get(wait.seq).is_none_or(|r| r.state.is_final());
        if over || self.waiting >= self.max_waiters || wait.timeout.is_zero() {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(wait.seq).or_default().push(tx);
        self.waiting += 1;
        Box::pin(async move {
            let _ = tokio::time::timeout(wait.timeout, rx).await;
        })
    }
}

impl Handler<AttemptDone> for Background {
    type Result = ();

    fn handle(&mut self, done: AttemptDone, ctx: &mut Self::Context) {
        let end = attempt_end(done.outcome);
        // An attempt that found no worker, or every worker busy, or was cut short by a
        // shutdown, was none.
        let busy = matches!(end, AttemptEnd::Busy);
        if !matches!(end, AttemptEnd::NoWorker | AttemptEnd::Interrupted) && !busy {
            self.attempts += 1;
        }
        let Some(record) = self.book.finish(done.seq, end, now_ms()).cloned() else {
            return;
        };
        self.slots.freed(busy.then_some(&record.function[..]));
        let change = Change::Put(Box::new(record.clone()));
        self.store.write_later(vec![change], self.book.next_seq());
        if record.state.is_final() {
            self.call_back(&record, ctx);
            self.notify(done.seq);
        }
        self.pump(ctx);
    }
}

impl Handler<StopStarting> for Background {
    type Result = ();

    fn handle(&mut self, _: StopStarting, _: &mut Self::Context) {
        self.starting = false;
    }
}

impl Handler<FlushJobs> for Background {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: FlushJobs, ctx: &mut Self::Context) -> Self::Result {
        self.write_submissions(ctx);
        let flushed = self.store.flush(self.book.next_seq());
        Box::pin(async move {
            flushed
                .await
                .unwrap_or_else(|_| Err("store stopped".into()))
        })
    }
}

impl Background {
    /// Starts the jobs that are due and have room, forgets the expired ones, and refreshes
    /// the gauges.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let gone = self.book.expire(now);
        if !gone.is_empty() {
            let changes = gone.into_iter().map(Change::Delete).collect();
            self.store.write_later(changes, self.book.next_seq());
        }
        if self.starting {
            self.book.wake(now);
            self.ask_slots(ctx);
            let known = &self.slots.known;
            let started = self
                .book
                .startable(now, |function| match known.get(function) {
                    None => Room::Unknown,
                    Some(CapacityRoom::Unknown) => Room::Elsewhere,
                    Some(CapacityRoom::Here(free)) => Room::Free(*free),
                    Some(CapacityRoom::Peers(slots)) => Room::Peers(*slots),
                });
            self.slots.taken(&started);
            if !started.is_empty() {
                let changes = started
                    .iter()
                    .cloned()
                    .map(|r| Change::Put(Box::new(r)))
                    .collect();
                self.store.write_later(changes, self.book.next_seq());
                for record in &started {
                    self.start_attempt(record, ctx);
                }
            }
        }
        if self.counted.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
            self.counted = Some(std::time::Instant::now());
            self.refresh_gauges(now);
        }
    }

    /// Wakes the callers waiting for job `seq`.
    fn notify(&mut self, seq: u64) {
        if let Some(waiters) = self.waiters.remove(&seq) {
            self.waiting -= waiters.len();
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
    }

    fn refresh_gauges(&mut self, now: u64) {
        // Waiters whose callers gave up are dropped here, so their count stays true.
        self.waiters.retain(|_, list| {
            list.retain(|w| !w.is_closed());
            !list.is_empty()
        });
        self.waiting = self.waiters.values().map(Vec::len).sum();
        let mut gauges = JobsGauges {
            attempts: self.attempts,
            ..JobsGauges::default()
        };
        let (jobs, bytes) = self.book.size();
        gauges.jobs = jobs as u64;
        gauges.bytes = bytes as u64;
        let mut oldest = now;
        for record in self.book.records() {
            match record.state {
                JobState::Queued => {
                    let function = String::from_utf8_lossy(&record.function).into_owned();
                    let priority = crate::call::Priority::from(record.priority).as_str();
                    *gauges.queued.entry((function, priority)).or_default() += 1;
                    if record.run_at_ms <= now {
                        oldest = oldest.min(record.run_at_ms);
                    }
                }
                JobState::Running => gauges.running += 1,
                state => *gauges.finished.entry(state.as_str()).or_default() += 1,
            }
        }
        gauges.oldest_queued_s = (now - oldest) as f64 / 1000.0;
        match self.gauges.lock() {
            Ok(mut shared) => *shared = gauges,
            Err(_) => error!("background jobs' gauges poisoned"),
        }
    }
}
