//! The function registry: function name -> the workers serving it, and the scheduler.
//!
//! It alone knows every worker's load, so it alone places jobs: the least-loaded worker of
//! the function (fewest jobs in flight, ties round-robin) under the per-worker limit, else the
//! function's bounded FIFO queue, else `RateLimited`. Workers tell it when they join, add or
//! remove functions, finish a job, and leave; jobs ask it to place or withdraw them.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::SocketAddr;
use std::time::SystemTime;

use actix::prelude::*;
use tracing::{debug, info};

use super::job::{Job, JobEvent, JobLease};
use super::worker::{Assign, ByeDone, Worker};
use super::{CallError, FunctionName, JobId, JobSpec, WorkerId};

/// Function names remembered as "known" at most, so that workers registering endless new
/// names cannot grow memory without bound. Past it, a function first registered later is
/// reported as unknown (not "no worker") once its last worker is gone.
pub const MAX_KNOWN_FUNCTIONS: usize = 10_000;

/// A job asks to be placed on a worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Dispatch {
    /// The job.
    pub job_id: JobId,
    /// What to run.
    pub spec: JobSpec,
    /// Where to report a refusal, and whom the lease reports to.
    pub job: Addr<Job>,
    /// A retry after a lost worker: still accepted while draining.
    pub retry: bool,
}

/// A job that ended (deadline, caller gone) leaves its function's queue.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Withdraw {
    /// The job.
    pub job_id: JobId,
    /// The function whose queue it may sit in.
    pub function: FunctionName,
}

/// A worker connection has become a worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerJoined {
    /// The worker.
    pub worker: WorkerId,
    /// Where to send its jobs.
    pub addr: Addr<Worker>,
    /// The worker program's address.
    pub peer: SocketAddr,
    /// Jobs it may hold at once.
    pub max_jobs: u32,
}

/// A worker told its name (`W_SET_NAME`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerNamed {
    /// The worker.
    pub worker: WorkerId,
    /// Its name, as sent.
    pub name: String,
}

/// A worker set how many jobs it takes at once (`W_SLOTS`, already capped by the config).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerCapacity {
    /// The worker.
    pub worker: WorkerId,
    /// Jobs it may hold at once.
    pub max_jobs: u32,
}

/// A worker is leaving (`W_BYE`): remove it from all its functions, then tell it
/// ([`ByeDone`]) once no further job can be placed on it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerBye {
    /// The worker.
    pub worker: WorkerId,
}

/// A worker serves a function (`W_ADD_FUNC`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FunctionAdded {
    /// The worker.
    pub worker: WorkerId,
    /// The function.
    pub function: FunctionName,
}

/// A worker no longer serves a function (`W_DEL_FUNC`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FunctionRemoved {
    /// The worker.
    pub worker: WorkerId,
    /// The function.
    pub function: FunctionName,
}

/// A worker answered a job (on time or late): its slot is free again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobFinished {
    /// The worker.
    pub worker: WorkerId,
    /// The job's function.
    pub function: FunctionName,
    /// The job was already over; the result was discarded.
    pub late: bool,
}

/// A worker is gone; its jobs are being reported lost by their leases.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerLeft {
    /// The worker.
    pub worker: WorkerId,
}

/// Shutdown has begun: refuse new calls, keep serving the ones in flight.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Asks for the registry's current state.
#[derive(Debug, Message)]
#[rtype(result = "RegistrySnapshot")]
pub struct Snapshot;

/// The registry's state at one moment: for the admin API, metrics, tests and draining.
#[derive(Debug, Clone, Default)]
pub struct RegistrySnapshot {
    /// Every function with at least one worker or queued call, by name.
    pub functions: Vec<FunctionSnapshot>,
    /// Every connected worker, by id.
    pub workers: Vec<WorkerSnapshot>,
    /// Results that arrived after their job was over, since start.
    pub late_results: u64,
    /// Shutdown has begun.
    pub draining: bool,
}

impl RegistrySnapshot {
    /// Jobs running on workers, all functions together.
    pub fn in_flight(&self) -> u64 {
        self.workers.iter().map(|w| u64::from(w.in_flight)).sum()
    }

    /// Calls waiting for a worker, all functions together.
    pub fn queued(&self) -> usize {
        self.functions.iter().map(|f| f.queued).sum()
    }

    /// The entry for `name`, if any.
    pub fn function(&self, name: &str) -> Option<&FunctionSnapshot> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// One function in a [`RegistrySnapshot`].
#[derive(Debug, Clone)]
pub struct FunctionSnapshot {
    /// The function's name.
    pub name: String,
    /// Workers serving it.
    pub workers: usize,
    /// Its jobs running on workers.
    pub in_flight: u32,
    /// Its calls waiting for a worker.
    pub queued: usize,
}

/// One worker in a [`RegistrySnapshot`].
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    /// The worker's id.
    pub id: WorkerId,
    /// Its `W_SET_NAME` name, if it sent one.
    pub name: Option<String>,
    /// The worker program's address.
    pub peer: SocketAddr,
    /// Functions it serves, by name.
    pub functions: Vec<String>,
    /// Jobs it holds.
    pub in_flight: u32,
    /// Jobs it may hold at once.
    pub max_jobs: u32,
    /// When it connected.
    pub connected_since: SystemTime,
}

/// A worker's load, shared by its entry and the entries of the functions it serves, so that
/// choosing among a function's workers reads their loads without a lookup per worker.
#[derive(Debug)]
struct Load {
    worker: WorkerId,
    in_flight: Cell<u32>,
    max_jobs: Cell<u32>,
}

impl Load {
    fn has_room(&self) -> bool {
        self.in_flight.get() < self.max_jobs.get()
    }
}

/// A worker as the scheduler sees it.
struct WorkerEntry {
    addr: Addr<Worker>,
    name: Option<String>,
    peer: SocketAddr,
    load: Rc<Load>,
    /// Jobs in flight per function served (keys are exactly the functions it serves, plus
    /// any it removed while jobs of it were still running).
    functions: HashMap<FunctionName, FunctionLoad>,
    connected_since: SystemTime,
}

impl WorkerEntry {
    /// The functions the worker serves now.
    fn serving(&self) -> impl Iterator<Item = &FunctionName> {
        self.functions
            .iter()
            .filter(|(_, load)| load.serving)
            .map(|(name, _)| name)
    }
}

#[derive(Default)]
struct FunctionLoad {
    serving: bool,
    in_flight: u32,
}

/// A call waiting for a free worker.
struct Waiting {
    job_id: JobId,
    spec: JobSpec,
    job: Addr<Job>,
}

#[derive(Default)]
struct FunctionEntry {
    workers: Vec<Rc<Load>>,
    /// Where the next search for the least-loaded worker starts, so ties go round-robin.
    cursor: usize,
    queue: VecDeque<Waiting>,
}

/// The function registry and scheduler. One per dispatcher.
///
/// Its maps use foldhash, not SipHash (hashing was ~18% of the dispatcher's instructions):
/// their keys are ids it generates and names that workers register; a client's name is
/// only ever looked up, so no caller can fill a map with colliding keys.
pub struct Registry {
    functions: HashMap<FunctionName, FunctionEntry>,
    /// Every function ever registered (up to [`MAX_KNOWN_FUNCTIONS`]), to tell "no such
    /// function" from "no worker right now".
    known: HashSet<FunctionName>,
    /// Functions whose queue is not empty: a finished job looks only at these (usually none)
    /// instead of every function its worker serves.
    backlogged: HashSet<FunctionName>,
    workers: HashMap<WorkerId, WorkerEntry>,
    max_queue_per_function: usize,
    late_results: u64,
    draining: bool,
}

impl Registry {
    /// A registry whose functions each queue at most `max_queue_per_function` calls.
    pub fn new(max_queue_per_function: usize) -> Self {
        Self {
            functions: HashMap::new(),
            known: HashSet::new(),
            backlogged: HashSet::new(),
            workers: HashMap::new(),
            max_queue_per_function,
            late_results: 0,
            draining: false,
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) {
        if self.draining && !msg.retry {
            msg.job.do_send(JobEvent::Refused {
                error: CallError::ShuttingDown,
            });
            return;
        }
        let waiting = Waiting {
            job_id: msg.job_id,
            spec: msg.spec,
            job: msg.job,
        };
        self.place(waiting);
    }
}

impl Handler<Withdraw> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Withdraw, _: &mut Self::Context) {
        if let Some(entry) = self.functions.get_mut(&msg.function) {
            entry.queue.retain(|w| w.job_id != msg.job_id);
            self.note_backlog(&msg.function);
            self.forget_if_unused(&msg.function);
        }
    }
}

impl Handler<WorkerJoined> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerJoined, _: &mut Self::Context) {
        debug!(worker = %msg.worker, peer = %msg.peer, "worker joined");
        self.workers.insert(
            msg.worker,
            WorkerEntry {
                addr: msg.addr,
                name: None,
                peer: msg.peer,
                load: Rc::new(Load {
                    worker: msg.worker,
                    in_flight: Cell::new(0),
                    max_jobs: Cell::new(msg.max_jobs),
                }),
                functions: HashMap::new(),
                connected_since: SystemTime::now(),
            },
        );
    }
}

impl Handler<WorkerNamed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerNamed, _: &mut Self::Context) {
        if let Some(worker) = self.workers.get_mut(&msg.worker) {
            worker.name = Some(msg.name);
        }
    }
}

impl Handler<WorkerCapacity> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerCapacity, _: &mut Self::Context) {
        let Some(worker) = self.workers.get_mut(&msg.worker) else {
            return;
        };
        worker.load.max_jobs.set(msg.max_jobs);
        let serving: Vec<FunctionName> = worker.serving().cloned().collect();
        for function in serving {
            self.drain_queue(&function);
        }
    }
}

impl Handler<WorkerBye> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerBye, _: &mut Self::Context) {
        let Some(worker) = self.workers.get_mut(&msg.worker) else {
            return;
        };
        let serving: Vec<FunctionName> = worker.serving().cloned().collect();
        for load in worker.functions.values_mut() {
            load.serving = false;
        }
        worker.functions.retain(|_, load| load.in_flight > 0);
        // Every Assign for this worker was sent before this: the ack arrives after them.
        worker.addr.do_send(ByeDone);
        info!(worker = %msg.worker, functions = serving.len(), "worker leaving: functions removed");
        for function in serving {
            self.unlink(msg.worker, &function);
        }
    }
}

impl Handler<FunctionAdded> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FunctionAdded, _: &mut Self::Context) {
        let Some(worker) = self.workers.get_mut(&msg.worker) else {
            return;
        };
        let load = worker.functions.entry(msg.function.clone()).or_default();
        if load.serving {
            return;
        }
        load.serving = true;
        info!(worker = %msg.worker, name = worker.name.as_deref().unwrap_or(""), function = %msg.function, "function registered");
        if self.known.len() < MAX_KNOWN_FUNCTIONS {
            self.known.insert(msg.function.clone());
        }
        let entry = self.functions.entry(msg.function.clone()).or_default();
        entry.workers.push(worker.load.clone());
        self.drain_queue(&msg.function);
    }
}

impl Handler<FunctionRemoved> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FunctionRemoved, _: &mut Self::Context) {
        if let Some(worker) = self.workers.get_mut(&msg.worker) {
            if let Some(load) = worker.functions.get_mut(&msg.function) {
                load.serving = false;
                if load.in_flight == 0 {
                    worker.functions.remove(&msg.function);
                }
            }
        }
        info!(worker = %msg.worker, function = %msg.function, "function removed");
        self.unlink(msg.worker, &msg.function);
    }
}

impl Handler<JobFinished> for Registry {
    type Result = ();

    fn handle(&mut self, msg: JobFinished, _: &mut Self::Context) {
        if msg.late {
            self.late_results += 1;
        }
        let Some(worker) = self.workers.get_mut(&msg.worker) else {
            return;
        };
        let in_flight = &worker.load.in_flight;
        in_flight.set(in_flight.get().saturating_sub(1));
        if let Some(load) = worker.functions.get_mut(&msg.function) {
            load.in_flight = load.in_flight.saturating_sub(1);
            if !load.serving && load.in_flight == 0 {
                worker.functions.remove(&msg.function);
            }
        }
        // The freed slot goes to a waiting call of a function this worker serves. Only
        // backlogged functions are looked at, so the common case (no queue) is free however
        // many functions the worker serves.
        if self.backlogged.is_empty() {
            return;
        }
        // (A worker whose W_SLOTS lowered its limit may still be full.)
        let serves_own = worker.load.has_room()
            && worker
                .functions
                .get(&msg.function)
                .is_some_and(|load| load.serving);
        if serves_own && self.backlogged.contains(&msg.function) {
            // Under sustained load: its own function's queue. A backlogged function's workers
            // are all full (a free slot takes the queue's head at once), so this worker is
            // the least loaded and the call goes straight to it.
            self.hand_over(msg.worker, &msg.function);
            return;
        }
        let waiting: Vec<FunctionName> = self
            .backlogged
            .iter()
            .filter(|f| worker.functions.get(*f).is_some_and(|load| load.serving))
            .cloned()
            .collect();
        for function in waiting {
            self.drain_queue(&function);
        }
    }
}

impl Handler<WorkerLeft> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerLeft, _: &mut Self::Context) {
        let Some(worker) = self.workers.remove(&msg.worker) else {
            return;
        };
        info!(worker = %msg.worker, name = worker.name.as_deref().unwrap_or(""), peer = %worker.peer, jobs_in_flight = worker.load.in_flight.get(), "worker left");
        for function in worker.functions.keys() {
            self.unlink(msg.worker, function);
        }
    }
}

impl Handler<Drain> for Registry {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Self::Context) {
        self.draining = true;
    }
}

impl Handler<Snapshot> for Registry {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Registry {
    /// Places a call on the least-loaded worker with a free slot, or queues it, or refuses
    /// it (no worker, queue full) with a message to its job.
    fn place(&mut self, waiting: Waiting) {
        let entry = self
            .functions
            .get_mut(&waiting.spec.function)
            .filter(|entry| !entry.workers.is_empty());
        let Some(entry) = entry else {
            let error = match self.known.contains(&waiting.spec.function) {
                true => CallError::NoWorker,
                false => CallError::UnknownFunction,
            };
            return refuse(waiting, error);
        };
        match pick_worker(entry) {
            Some(worker) => self.assign(worker, waiting),
            None if entry.queue.len() < self.max_queue_per_function => {
                self.backlogged.insert(waiting.spec.function.clone());
                entry.queue.push_back(waiting);
            }
            None => refuse(waiting, CallError::RateLimited),
        }
    }

    fn assign(&mut self, worker_id: WorkerId, waiting: Waiting) {
        let worker = self
            .workers
            .get_mut(&worker_id)
            .expect("pick_worker returns registered workers");
        worker.load.in_flight.set(worker.load.in_flight.get() + 1);
        worker
            .functions
            .entry(waiting.spec.function.clone())
            .or_default()
            .in_flight += 1;
        // If the worker stops before handling this, the lease is dropped with the message
        // and tells the job, which retries: nothing is lost in the mailbox.
        worker.addr.do_send(Assign {
            job_id: waiting.job_id,
            spec: waiting.spec,
            lease: JobLease::new(waiting.job),
        });
    }

    /// Hands queued calls of `function` to free workers, oldest first.
    fn drain_queue(&mut self, function: &FunctionName) {
        self.drain_queue_inner(function);
        self.note_backlog(function);
    }

    fn drain_queue_inner(&mut self, function: &FunctionName) {
        loop {
            let Some(entry) = self.functions.get_mut(function) else {
                return;
            };
            if entry.queue.is_empty() {
                return;
            }
            let Some(worker) = pick_worker(entry) else {
                return;
            };
            let waiting = entry.queue.pop_front().expect("queue is not empty");
            if !waiting.job.connected() {
                continue;
            }
            self.assign(worker, waiting);
        }
    }

    /// Gives the freed slot of `worker` to the oldest live call waiting for `function`.
    fn hand_over(&mut self, worker: WorkerId, function: &FunctionName) {
        let Some(entry) = self.functions.get_mut(function) else {
            return;
        };
        let next = std::iter::from_fn(|| entry.queue.pop_front()).find(|w| w.job.connected());
        if entry.queue.is_empty() {
            self.backlogged.remove(function);
        }
        if let Some(waiting) = next {
            self.assign(worker, waiting);
        }
    }

    /// Removes `worker` from `function`'s list; if that was the last worker, the calls
    /// waiting for it are refused at once rather than left to time out.
    fn unlink(&mut self, worker: WorkerId, function: &FunctionName) {
        let Some(entry) = self.functions.get_mut(function) else {
            return;
        };
        entry.workers.retain(|load| load.worker != worker);
        if entry.workers.is_empty() {
            for waiting in entry.queue.drain(..) {
                refuse(waiting, CallError::NoWorker);
            }
        }
        self.note_backlog(function);
        self.forget_if_unused(function);
    }

    /// Keeps [`Registry::backlogged`] in step with `function`'s queue.
    fn note_backlog(&mut self, function: &FunctionName) {
        if self
            .functions
            .get(function)
            .is_some_and(|entry| !entry.queue.is_empty())
        {
            self.backlogged.insert(function.clone());
        } else {
            self.backlogged.remove(function);
        }
    }

    fn forget_if_unused(&mut self, function: &FunctionName) {
        if self
            .functions
            .get(function)
            .is_some_and(|f| f.workers.is_empty() && f.queue.is_empty())
        {
            self.functions.remove(function);
        }
    }

    fn snapshot(&self) -> RegistrySnapshot {
        let mut functions: Vec<FunctionSnapshot> = self
            .functions
            .iter()
            .map(|(name, entry)| FunctionSnapshot {
                name: name.to_string(),
                workers: entry.workers.len(),
                in_flight: self
                    .workers
                    .values()
                    .filter_map(|w| w.functions.get(name))
                    .map(|load| load.in_flight)
                    .sum(),
                queued: entry.queue.len(),
            })
            .collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        let mut workers: Vec<WorkerSnapshot> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let mut functions: Vec<String> = w.serving().map(|name| name.to_string()).collect();
                functions.sort();
                WorkerSnapshot {
                    id: *id,
                    name: w.name.clone(),
                    peer: w.peer,
                    functions,
                    in_flight: w.load.in_flight.get(),
                    max_jobs: w.load.max_jobs.get(),
                    connected_since: w.connected_since,
                }
            })
            .collect();
        workers.sort_by_key(|w| w.id);
        RegistrySnapshot {
            functions,
            workers,
            late_results: self.late_results,
            draining: self.draining,
        }
    }
}

fn refuse(waiting: Waiting, error: CallError) {
    waiting.job.do_send(JobEvent::Refused { error });
}

/// The least-loaded worker of `entry` with a free slot; among equals, the first at or after
/// the round-robin cursor, which then moves past it. An idle worker ends the search at once.
fn pick_worker(entry: &mut FunctionEntry) -> Option<WorkerId> {
    let n = entry.workers.len();
    let mut best: Option<(usize, u32)> = None;
    for step in 0..n {
        let index = (entry.cursor + step) % n;
        let load = &entry.workers[index];
        let in_flight = load.in_flight.get();
        if !load.has_room() || best.is_some_and(|(_, least)| least <= in_flight) {
            continue;
        }
        best = Some((index, in_flight));
        if in_flight == 0 {
            break;
        }
    }
    let (index, _) = best?;
    entry.cursor = (index + 1) % n;
    Some(entry.workers[index].worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(loads: &[(u32, u32)]) -> FunctionEntry {
        let workers = loads
            .iter()
            .enumerate()
            .map(|(i, &(in_flight, max_jobs))| {
                Rc::new(Load {
                    worker: WorkerId(i as u64),
                    in_flight: Cell::new(in_flight),
                    max_jobs: Cell::new(max_jobs),
                })
            })
            .collect();
        FunctionEntry {
            workers,
            ..FunctionEntry::default()
        }
    }

    fn take(entry: &mut FunctionEntry) -> Option<u64> {
        let picked = pick_worker(entry)?;
        let load = entry.workers.iter().find(|l| l.worker == picked).unwrap();
        load.in_flight.set(load.in_flight.get() + 1);
        Some(picked.0)
    }

    #[test]
    fn picks_the_least_loaded_worker_with_room() {
        // Worker 2 is least loaded but full; worker 3 is the least loaded with room.
        let mut entry = entry(&[(3, 8), (2, 8), (0, 0), (1, 8)]);
        assert_eq!(take(&mut entry), Some(3));
        // Now 1 and 3 tie at 2: the cursor (after 3) wraps to 0, so 1 comes first.
        assert_eq!(take(&mut entry), Some(1));
        assert_eq!(take(&mut entry), Some(3));
    }

    #[test]
    fn ties_go_round_robin() {
        let mut entry = entry(&[(0, 8), (0, 8), (0, 8)]);
        let order: Vec<u64> = (0..6).filter_map(|_| take(&mut entry)).collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn no_worker_with_room_means_none() {
        let mut entry = entry(&[(4, 4), (1, 1)]);
        assert_eq!(pick_worker(&mut entry), None);
        assert_eq!(pick_worker(&mut FunctionEntry::default()), None);
    }
}
