//! The placement policy as plain data, apart from the registry actor that carries it out
//! (as rumqttd keeps its router's scheduler apart from the router): which worker runs a
//! call, or whether the call waits or is refused. No actix here, so every rule is pinned by
//! a unit test without a `System`.
//!
//! The rules:
//! - a call goes to the **least-loaded** worker of its function (fewest jobs in flight) that
//!   has a free slot; among equals, round-robin. With a **batch slack** `s` > 0
//!   ([`Scheduler::set_batch_slack`], `workers.batch_slack`), within one **round** (the
//!   calls the registry places in one turn of its mailbox: a burst) the worker that took
//!   the last call keeps taking calls while it holds fewer than `least + s` jobs: calls
//!   that arrive together then go out in one write instead of one frame per worker
//!   connection; a call is never given to a worker holding `s` or more jobs above the
//!   least-loaded one, and calls that arrive one by one still go round-robin;
//! - when every worker of the function is full, the call waits in the function's **FIFO
//!   queue**, bounded by `max_queue_per_function`; past that bound it is refused
//!   (`RateLimited`);
//! - a slot that frees (a job finished, a worker raised its slots, a worker came) goes to the
//!   **oldest waiting call** it can serve; calls whose job is over are skipped;
//! - when the last worker of a function leaves, its waiting calls are refused at once
//!   (`NoWorker`) rather than left to time out;
//! - a function no worker ever served is `UnknownFunction`, one served before is `NoWorker`;
//! - while draining, new calls are refused (`ShuttingDown`) and retries still placed;
//! - a call of a function **no local worker serves**, but a peer dispatcher advertises, is
//!   **forwarded** to the peer with the lowest advertised load (local workers are always
//!   preferred: a peer is never chosen while a local worker serves the function, even a
//!   full one); a call that was itself forwarded here is never forwarded again (the hop
//!   limit), and when the last local worker leaves, its waiting calls go to a peer if one
//!   serves the function; `UnknownFunction`/`NoWorker` only when no dispatcher does.
//! - with **circuit breakers** on (`[breaker]`, [`Scheduler::set_breakers`]), a worker whose
//!   breaker for a function is open gets no call of it, and a half-open one only its trial
//!   calls; when no worker of a function admits calls, a call goes to a peer that serves it
//!   or is refused (`BreakerOpen`), and so are the calls waiting in its queue when that
//!   happens. The registry passes each call's [`Verdict`] in ([`Scheduler::judge`]), and
//!   asks an open breaker to half-open once its timeout is over ([`Scheduler::poll_breaker`]).
//!
//! Every method returns its [`Decision`]s; it never sends anything.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::breaker::{BreakerSettings, BreakerState, Transition, Verdict};
use crate::call::{ClientKey, DispatchError, FunctionName, JobId, PeerId, Priority, WorkerId};
use crate::snapshot::FunctionSnapshot;
use peers::{NoPeer, Peers};
use placement::{assign, pick_worker, Batch, FunctionEntry, Load, WorkerEntry};

mod breakers;
mod capacity;
mod peers;
mod placement;
mod queue;

/// Calls forwarded to one peer at once unless [`Scheduler::set_max_forwarded_per_peer`]
/// says otherwise (`cluster.max_forwarded_per_peer`).
pub const DEFAULT_MAX_FORWARDED_PER_PEER: u32 = 4096;

/// Function names remembered as "known" at most, so that workers registering endless new
/// names cannot grow memory without bound. Past it, a function first registered later is
/// reported as unknown (not "no worker") once its last worker is gone.
pub const MAX_KNOWN_FUNCTIONS: usize = 10_000;

/// A call as the scheduler queues it: it needs its id (to withdraw it) and whether its job
/// still waits (to skip it when a slot frees).
pub trait Waiting {
    /// The call's job.
    fn job_id(&self) -> JobId;
    /// The job still waits for a worker.
    fn is_live(&self) -> bool;
    /// The call may be forwarded to a peer dispatcher: it was not forwarded here itself.
    fn forwardable(&self) -> bool {
        true
    }
    /// Whom the call is made for, sharing a peer's forwarding slots fairly.
    fn caller(&self) -> Option<&ClientKey> {
        None
    }
    /// Where the call waits among its function's queued calls (background jobs have one;
    /// synchronous calls are [`Priority::Normal`]).
    fn priority(&self) -> Priority {
        Priority::Normal
    }
    /// The call may wait in the queue when no worker has room (else it is refused
    /// `RateLimited`).
    fn may_wait(&self) -> bool {
        true
    }
}

/// What the registry must do with a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<C> {
    /// Send `call` to `worker`; its slot is already counted.
    Assign {
        /// The worker chosen.
        worker: WorkerId,
        /// The call.
        call: C,
    },
    /// Forward `call` to the peer dispatcher `peer`; its forwarded count is already raised.
    Forward {
        /// The peer chosen.
        peer: PeerId,
        /// The call.
        call: C,
    },
    /// Answer `call`'s job with `error`.
    Refuse {
        /// The call.
        call: C,
        /// Why.
        error: DispatchError,
    },
}

/// One worker's load, for snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Jobs it holds.
    pub in_flight: u32,
    /// Jobs it may hold at once.
    pub max_jobs: u32,
    /// Functions it serves, sorted.
    pub functions: Vec<String>,
}

/// The scheduler: functions, their workers' loads and their queues of waiting calls `C`.
///
/// Its maps use foldhash, not SipHash (hashing was ~18% of the dispatcher's instructions):
/// their keys are ids the dispatcher generates and names that workers register; a client's
/// name is only ever looked up, so no caller can fill a map with colliding keys.
pub struct Scheduler<C> {
    functions: HashMap<FunctionName, FunctionEntry<C>>,
    /// Every function ever registered (up to [`MAX_KNOWN_FUNCTIONS`]), to tell "no such
    /// function" from "no worker right now".
    known: HashSet<FunctionName>,
    /// Functions whose queue is not empty: a finished job looks only at these (usually
    /// none) instead of every function its worker serves.
    backlogged: HashSet<FunctionName>,
    workers: HashMap<WorkerId, WorkerEntry>,
    /// Peer dispatchers of the cluster (none without discovery).
    peers: Peers,
    max_queue_per_function: usize,
    draining: bool,
    /// The circuit breakers' settings, when they are on.
    breakers: Option<BreakerSettings>,
    /// The batch slack and its rounds.
    batch: Batch,
}

impl<C: Waiting> Scheduler<C> {
    /// A scheduler whose functions each queue at most `max_queue_per_function` calls.
    pub fn new(max_queue_per_function: usize) -> Self {
        Self {
            functions: HashMap::new(),
            known: HashSet::new(),
            backlogged: HashSet::new(),
            workers: HashMap::new(),
            peers: Peers::new(DEFAULT_MAX_FORWARDED_PER_PEER),
            max_queue_per_function,
            draining: false,
            breakers: None,
            batch: Batch::default(),
        }
    }

    /// Lets the worker that took the last call of a function in a round take the next ones
    /// of that round while it holds fewer than `least + slack` jobs, `least` being the
    /// least-loaded worker's (see the module's rules); 0, the default, is strict
    /// least-loaded.
    pub fn set_batch_slack(&mut self, slack: u32) {
        self.batch.slack = slack;
    }

    /// True once in a round in which a call was placed that the slack may batch others
    /// with: the caller must then call [`Scheduler::end_round`] once the calls that arrived
    /// together are placed.
    pub fn round_opened(&mut self) -> bool {
        self.batch.take_opened()
    }

    /// Ends the round: the next call starts from the least-loaded worker again.
    pub fn end_round(&mut self) {
        self.batch.end_round();
    }

    /// Keeps a circuit breaker per worker and function from now on, with `settings`.
    pub fn set_breakers(&mut self, settings: BreakerSettings) {
        self.breakers = Some(settings);
    }

    /// Whether circuit breakers are on.
    pub fn has_breakers(&self) -> bool {
        self.breakers.is_some()
    }

    /// Forwards at most `max` calls at once to one peer, of which at most `per_caller` for
    /// one caller; past it the peer counts as full (for that caller).
    pub fn set_max_forwarded_per_peer(&mut self, max: u32, per_caller: u32) {
        self.peers.set_max_forwarded(max, per_caller);
    }

    /// Places a call of `function`: on the least-loaded worker with a free slot, else in the
    /// queue (`None`), else refused. A `retry` (after a lost worker) is placed even while
    /// draining.
    pub fn place(&mut self, function: &FunctionName, call: C, retry: bool) -> Option<Decision<C>> {
        if self.draining && !retry {
            let error = DispatchError::ShuttingDown;
            return Some(Decision::Refuse { call, error });
        }
        let entry = self
            .functions
            .get_mut(function)
            .filter(|entry| !entry.workers.is_empty());
        let Some(entry) = entry else {
            return Some(self.forward_or_refuse(function, call));
        };
        if let Some(worker) = pick_worker(entry, &mut self.batch) {
            return Some(assign(&mut self.workers, worker, function, call));
        }
        if !entry.breakers.any_admits(&entry.workers) {
            return Some(self.refuse_broken(function, call));
        }
        if entry.queue.len() < self.max_queue_per_function && call.may_wait() {
            entry.queue.push_back(call);
            if entry.queue.len() == 1 {
                self.backlogged.insert(function.clone());
            }
            return None;
        }
        Some(Decision::Refuse {
            call,
            error: DispatchError::RateLimited,
        })
    }

    /// Takes a call out of `function`'s queue, if it still waits there (its job ended).
    pub fn withdraw(&mut self, function: &FunctionName, job_id: JobId) {
        if let Some(entry) = self.functions.get_mut(function) {
            entry.queue.retain(|call| call.job_id() != job_id);
            self.note_backlog(function);
            self.forget_if_unused(function);
        }
    }

    /// A worker connected; it may hold `max_jobs` jobs at once and serves nothing yet.
    pub fn join(&mut self, worker: WorkerId, max_jobs: u32) {
        let load = Rc::new(Load {
            worker,
            in_flight: Cell::new(0),
            max_jobs: Cell::new(max_jobs),
        });
        let functions = HashMap::new();
        self.workers.insert(worker, WorkerEntry { load, functions });
    }

    /// The worker now holds at most `max_jobs` jobs; a raise serves waiting calls.
    pub fn set_slots(&mut self, worker: WorkerId, max_jobs: u32) -> Vec<Decision<C>> {
        let Some(entry) = self.workers.get(&worker) else {
            return Vec::new();
        };
        entry.load.max_jobs.set(max_jobs);
        let serving: Vec<FunctionName> = entry.serving().cloned().collect();
        let mut decisions = Vec::new();
        for function in serving {
            self.serve_queue(&function, &mut decisions);
        }
        decisions
    }

    /// Whether `worker` serves `function` now.
    pub fn serves(&self, worker: WorkerId, function: &FunctionName) -> bool {
        self.workers
            .get(&worker)
            .is_some_and(|w| w.serves(function))
    }

    /// The functions `worker` serves now.
    pub fn serving(&self, worker: WorkerId) -> Vec<FunctionName> {
        self.workers
            .get(&worker)
            .map(|w| w.serving().cloned().collect())
            .unwrap_or_default()
    }

    /// `worker` serves `function` (again); waiting calls of it may go to the worker now.
    pub fn serve(&mut self, worker: WorkerId, function: &FunctionName) -> Vec<Decision<C>> {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return Vec::new();
        };
        let load = entry.functions.entry(function.clone()).or_default();
        if load.serving {
            return Vec::new();
        }
        load.serving = true;
        if self.known.len() < MAX_KNOWN_FUNCTIONS {
            self.known.insert(function.clone());
        }
        let worker_load = entry.load.clone();
        let function_entry = self.functions.entry(function.clone()).or_default();
        function_entry.workers.push(worker_load);
        let mut decisions = Vec::new();
        self.serve_queue(function, &mut decisions);
        decisions
    }

    /// `worker` no longer serves `function`; if it was the last, the calls waiting for it
    /// are refused. Its jobs of `function` in flight still finish.
    pub fn unserve(&mut self, worker: WorkerId, function: &FunctionName) -> Vec<Decision<C>> {
        if let Some(entry) = self.workers.get_mut(&worker) {
            if let Some(load) = entry.functions.get_mut(function) {
                load.serving = false;
                if load.in_flight == 0 {
                    entry.functions.remove(function);
                }
            }
        }
        let mut decisions = Vec::new();
        self.unlink(worker, function, &mut decisions);
        decisions
    }

    /// `worker` is leaving (`W_BYE`): it serves nothing from now on, its jobs in flight
    /// still finish.
    pub fn seal(&mut self, worker: WorkerId) -> Vec<Decision<C>> {
        let mut decisions = Vec::new();
        for function in self.serving(worker) {
            decisions.extend(self.unserve(worker, &function));
        }
        decisions
    }

    /// `worker` answered a job of `function` (on time or late): its slot goes to the oldest
    /// waiting call it can serve.
    pub fn finished(&mut self, worker: WorkerId, function: &FunctionName) -> Vec<Decision<C>> {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return Vec::new();
        };
        let in_flight = &entry.load.in_flight;
        in_flight.set(in_flight.get().saturating_sub(1));
        if let Some(load) = entry.functions.get_mut(function) {
            load.in_flight = load.in_flight.saturating_sub(1);
            if !load.serving && load.in_flight == 0 {
                entry.functions.remove(function);
            }
        }
        // Only backlogged functions are looked at, so the common case (no queue) is free
        // however many functions the worker serves.
        if self.backlogged.is_empty() {
            return Vec::new();
        }
        let mut decisions = Vec::new();
        // (A worker whose slots were lowered may still be full; one whose breaker for the
        // function is open takes none of its calls.)
        let room_for_own = entry.load.has_room()
            && entry.serves(function)
            && (self.functions.get(function)).is_some_and(|f| f.breakers.admits(worker));
        if room_for_own && self.backlogged.contains(function) {
            // Under sustained load: its own function's queue. A backlogged function's
            // workers are all full (a free slot takes the queue's head at once), so this
            // worker is the least loaded and the call goes straight to it.
            decisions.extend(self.hand_over(worker, function));
            return decisions;
        }
        let entry = &self.workers[&worker];
        let waiting: Vec<FunctionName> = (self.backlogged.iter())
            .filter(|f| entry.serves(f))
            .cloned()
            .collect();
        for function in waiting {
            self.serve_queue(&function, &mut decisions);
        }
        decisions
    }

    /// `worker` is gone. Its jobs in flight are reported lost by their leases (not here);
    /// calls waiting only for it are refused.
    pub fn leave(&mut self, worker: WorkerId) -> Vec<Decision<C>> {
        let mut decisions = Vec::new();
        if let Some(entry) = self.workers.remove(&worker) {
            for function in entry.functions.keys() {
                self.unlink(worker, function, &mut decisions);
            }
        }
        decisions
    }

    /// Shutdown has begun: refuse new calls from now on, keep placing retries.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The drain took too long: every waiting call is refused (`ShuttingDown`).
    pub fn abandon_queued(&mut self) -> Vec<Decision<C>> {
        let error = DispatchError::ShuttingDown;
        let mut decisions = Vec::new();
        for entry in self.functions.values_mut() {
            decisions.extend(
                (entry.queue.drain_all().into_iter()).map(|call| Decision::Refuse { call, error }),
            );
        }
        self.backlogged.clear();
        self.functions.retain(|_, entry| !entry.workers.is_empty());
        decisions
    }

    /// Shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Counts `verdict` on a call `worker` ran for `function`, at `now`, in the worker's
    /// breaker for it (breakers on, the worker still serving the function). Returns the
    /// breaker's transition, if any, and what it entails: an opened breaker that leaves no
    /// worker of the function admitting calls refuses the calls waiting for it
    /// (`BreakerOpen`, or forwarded to a peer); a closed one may serve them.
    pub fn judge(
        &mut self,
        worker: WorkerId,
        function: &FunctionName,
        verdict: Verdict,
        now: Instant,
    ) -> (Option<Transition>, Vec<Decision<C>>) {
        let mut decisions = Vec::new();
        let Some(settings) = &self.breakers else {
            return (None, decisions);
        };
        if !self.serves(worker, function) {
            return (None, decisions);
        }
        let Some(entry) = self.functions.get_mut(function) else {
            return (None, decisions);
        };
        let transition = entry.breakers.record(worker, verdict, now, settings);
        match transition {
            Some(Transition::Opened { .. }) if !entry.breakers.any_admits(&entry.workers) => {
                let waiting: Vec<C> = entry.queue.drain_all();
                self.backlogged.remove(function);
                for call in waiting {
                    decisions.push(self.refuse_broken(function, call));
                }
            }
            Some(Transition::Closed) => self.serve_queue(function, &mut decisions),
            _ => {}
        }
        (transition, decisions)
    }

    /// Half-opens `worker`'s breaker for `function` if it is open and its timeout is over by
    /// `now`; the calls waiting for the function may then take its trials.
    pub fn poll_breaker(
        &mut self,
        worker: WorkerId,
        function: &FunctionName,
        now: Instant,
    ) -> (Option<Transition>, Vec<Decision<C>>) {
        let mut decisions = Vec::new();
        let (Some(settings), Some(entry)) = (&self.breakers, self.functions.get_mut(function))
        else {
            return (None, decisions);
        };
        let transition = entry.breakers.poll(worker, now, settings);
        if transition.is_some() {
            self.serve_queue(function, &mut decisions);
        }
        (transition, decisions)
    }

    /// `worker`'s breaker state for each function it serves, sorted by function (empty with
    /// breakers off).
    pub fn breaker_states(&self, worker: WorkerId) -> Vec<(String, BreakerState)> {
        if self.breakers.is_none() {
            return Vec::new();
        }
        let Some(entry) = self.workers.get(&worker) else {
            return Vec::new();
        };
        let mut states: Vec<(String, BreakerState)> = (entry.serving())
            .map(|function| {
                let state = (self.functions.get(function))
                    .map_or(BreakerState::Closed, |f| f.breakers.state(worker));
                (function.to_string(), state)
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// `worker`'s load, if it is connected.
    pub fn worker_load(&self, worker: WorkerId) -> Option<WorkerLoad> {
        let entry = self.workers.get(&worker)?;
        let mut functions: Vec<String> = entry.serving().map(|f| f.to_string()).collect();
        functions.sort();
        Some(WorkerLoad {
            in_flight: entry.load.in_flight.get(),
            max_jobs: entry.load.max_jobs.get(),
            functions,
        })
    }

    /// Every function with a worker or a waiting call, sorted by name.
    pub fn functions(&self) -> Vec<FunctionSnapshot> {
        let mut functions: Vec<FunctionSnapshot> = (self.functions.iter())
            .map(|(name, entry)| FunctionSnapshot {
                name: name.to_string(),
                workers: entry.workers.len(),
                in_flight: (self.workers.values())
                    .filter_map(|w| w.functions.get(name))
                    .map(|load| load.in_flight)
                    .sum(),
                queued: entry.queue.len(),
                breakers_open: entry.breakers.tripped(),
                slots: entry.slots(),
            })
            .collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        functions
    }

    /// A call of `function`, which no local worker serves: to the least-loaded peer that
    /// serves it, unless the call was forwarded here; else refused, `RateLimited` when every
    /// serving peer is full, `NoWorker` when the function is served somewhere (or was
    /// here), else `UnknownFunction`.
    fn forward_or_refuse(&mut self, function: &FunctionName, call: C) -> Decision<C> {
        let error = match (call.forwardable()).then(|| self.peers.pick(function, call.caller())) {
            Some(Ok(peer)) => return Decision::Forward { peer, call },
            Some(Err(NoPeer::AllBusy)) => DispatchError::RateLimited,
            _ if self.known.contains(function) || self.peers.serve(function) => {
                DispatchError::NoWorker
            }
            _ => DispatchError::UnknownFunction,
        };
        Decision::Refuse { call, error }
    }

    /// A call of `function`, none of whose workers admits calls (every breaker open): to the
    /// least-loaded peer that serves the function, unless it was forwarded here; else
    /// refused `BreakerOpen`.
    fn refuse_broken(&mut self, function: &FunctionName, call: C) -> Decision<C> {
        if call.forwardable() {
            if let Ok(peer) = self.peers.pick(function, call.caller()) {
                return Decision::Forward { peer, call };
            }
        }
        Decision::Refuse {
            call,
            error: DispatchError::BreakerOpen,
        }
    }

    /// Hands waiting calls of `function` to free workers, oldest first. Calls whose job is
    /// over are dropped before a worker is picked (picking may take a half-open breaker's
    /// trial, which a dropped call would waste).
    fn serve_queue(&mut self, function: &FunctionName, decisions: &mut Vec<Decision<C>>) {
        while let Some(entry) = self.functions.get_mut(function) {
            while entry.queue.front().is_some_and(|call| !call.is_live()) {
                entry.queue.pop_front();
            }
            if entry.queue.is_empty() {
                break;
            }
            let Some(worker) = pick_worker(entry, &mut self.batch) else {
                break;
            };
            let call = entry.queue.pop_front().expect("queue is not empty");
            decisions.push(assign(&mut self.workers, worker, function, call));
        }
        self.note_backlog(function);
    }

    /// Gives the freed slot of `worker` to the oldest live call waiting for `function`.
    fn hand_over(&mut self, worker: WorkerId, function: &FunctionName) -> Option<Decision<C>> {
        let entry = self.functions.get_mut(function)?;
        let next = std::iter::from_fn(|| entry.queue.pop_front()).find(|call| call.is_live());
        if entry.queue.is_empty() {
            self.backlogged.remove(function);
        }
        let call = next?;
        entry.breakers.placed(worker);
        Some(assign(&mut self.workers, worker, function, call))
    }

    /// Removes `worker` from `function`'s list; if that was the last worker, the calls
    /// waiting for it are refused at once rather than left to time out.
    fn unlink(
        &mut self,
        worker: WorkerId,
        function: &FunctionName,
        decisions: &mut Vec<Decision<C>>,
    ) {
        let Some(entry) = self.functions.get_mut(function) else {
            return;
        };
        entry.workers.retain(|load| load.worker != worker);
        entry.breakers.remove(worker);
        if entry.workers.is_empty() {
            let waiting: Vec<C> = entry.queue.drain_all();
            for call in waiting {
                decisions.push(match self.forward_or_refuse(function, call) {
                    // A local worker served it: "unknown" would be a lie.
                    Decision::Refuse { call, .. } => Decision::Refuse {
                        call,
                        error: DispatchError::NoWorker,
                    },
                    forward => forward,
                });
            }
        }
        self.note_backlog(function);
        self.forget_if_unused(function);
    }

    /// Keeps [`Scheduler::backlogged`] in step with `function`'s queue.
    fn note_backlog(&mut self, function: &FunctionName) {
        let waiting = (self.functions.get(function)).is_some_and(|e| !e.queue.is_empty());
        if waiting {
            self.backlogged.insert(function.clone());
        } else {
            self.backlogged.remove(function);
        }
    }

    fn forget_if_unused(&mut self, function: &FunctionName) {
        let unused = (self.functions.get(function))
            .is_some_and(|f| f.workers.is_empty() && f.queue.is_empty());
        if unused {
            self.functions.remove(function);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod peer_tests;

#[cfg(test)]
mod breaker_tests;

#[cfg(test)]
mod batch_tests;
