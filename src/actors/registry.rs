//! The function registry: one actor per dispatcher that carries out the
//! [`Scheduler`]'s decisions.
//!
//! Jobs ask it to place ([`Dispatch`]) or withdraw ([`Withdraw`]) their calls; worker
//! sessions tell it when their worker joins, names itself, serves or stops serving a
//! function, changes its slots, finishes a job, says goodbye, and leaves. It sends calls to
//! workers through their [`WorkerPort`], and refusals to jobs through their leases. The
//! admin API, the metrics and the drain read its [`Snapshot`].
//!
//! In a cluster, the etcd session tells it of peer dispatchers ([`PeerJoined`],
//! [`PeerUpdated`], [`PeerLeft`]); calls the scheduler forwards go to the peer's link
//! through its [`PeerPort`], which reports each forwarded call's end ([`ForwardFinished`])
//! and a peer it cannot reach ([`PeerUnreachable`]; skipped for `cluster.peer_retry_ms`).
//!
//! With circuit breakers on ([`Registry::breakers`]), worker sessions pass each job's
//! verdict in [`JobFinished`] and report jobs held past their deadline ([`JobOverdue`]); the
//! registry hands them to the scheduler, counts each breaker transition, and when a breaker
//! opens sets a timer for its half-open trial.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use foldhash::{HashMap, HashMapExt};
use tracing::{debug, info, warn};

use crate::breaker::{BreakerSettings, Transition, Verdict};
use crate::call::{CallSpec, ClientKey, FunctionName, JobId, JobLease, PeerId, Priority, WorkerId};
use crate::metrics::Metrics;
use crate::scheduler::{Decision, Scheduler, Waiting};
use crate::snapshot::{RegistrySnapshot, WorkerSnapshot};

mod capacity;
mod peers;

pub use capacity::{Capacity, Room as CapacityRoom};
pub use peers::{
    ForwardFinished, PeerJoined, PeerLacks, PeerLeft, PeerPort, PeerUnreachable, PeerUpdated,
};

/// A job asks to be placed on a worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Dispatch {
    /// The job.
    pub job_id: JobId,
    /// What to run.
    pub spec: CallSpec,
    /// The job's place: refused through it, or handed to the worker chosen.
    pub lease: JobLease,
    /// A retry after a lost worker: still placed while draining.
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

/// A connection has become a worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerJoined {
    /// The worker.
    pub worker: WorkerId,
    /// Where to send its calls.
    pub port: Box<dyn WorkerPort>,
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
pub struct WorkerSlots {
    /// The worker.
    pub worker: WorkerId,
    /// Jobs it may hold at once.
    pub max_jobs: u32,
}

/// A worker is leaving (`W_BYE`): take it off all its functions, then tell it
/// ([`WorkerPort::sealed`]) once no further call can be placed on it.
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
    /// What the job's end says about the worker, for its circuit breaker; `None` when it
    /// says nothing (shutdown) or was reported already ([`JobOverdue`]).
    pub verdict: Option<Verdict>,
}

/// A worker still holds a job whose deadline has passed: a failure for its circuit breaker
/// (sent once per job, only with breakers on). The slot stays taken until it answers.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobOverdue {
    /// The worker.
    pub worker: WorkerId,
    /// The job's function.
    pub function: FunctionName,
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

/// The drain took too long: refuse every waiting call and have every worker answer its jobs
/// `ShuttingDown`, so that every caller hears before the dispatcher stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AbandonAll;

/// Asks for the registry's current state.
#[derive(Debug, Message)]
#[rtype(result = "RegistrySnapshot")]
pub struct Snapshot;

/// A call placed on a worker, for its session to write as `S_GET_DATA` or `S_JOB`.
#[derive(Debug)]
pub struct Assignment {
    /// The job.
    pub job_id: JobId,
    /// What to run.
    pub spec: CallSpec,
    /// The job's place: answered through it, or dropped to report the worker lost.
    pub lease: JobLease,
}

/// How the registry reaches a worker it places calls on. A worker session implements it for
/// its address, so the registry never names the session.
pub trait WorkerPort: Send {
    /// Hands the worker a call.
    fn assign(&self, assignment: Assignment);
    /// After `W_BYE`: every call for this worker has been handed over, no more will come.
    fn sealed(&self);
    /// Shutdown gave up waiting: answer every held job `ShuttingDown` now.
    fn abandon(&self);
}

/// A call waiting in the scheduler's queue.
struct Pending {
    job_id: JobId,
    spec: CallSpec,
    lease: JobLease,
}

impl Waiting for Pending {
    fn job_id(&self) -> JobId {
        self.job_id
    }

    fn is_live(&self) -> bool {
        self.lease.is_live()
    }

    fn forwardable(&self) -> bool {
        !self.spec.is_forwarded()
    }

    fn caller(&self) -> Option<&ClientKey> {
        self.spec.caller.as_ref()
    }

    fn priority(&self) -> Priority {
        self.spec.priority
    }

    fn may_wait(&self) -> bool {
        self.spec.may_wait
    }
}

/// A connected worker as the registry knows it, besides its load (the scheduler's).
struct WorkerInfo {
    port: Box<dyn WorkerPort>,
    name: Option<String>,
    peer: SocketAddr,
    connected_since: SystemTime,
    /// Its registrations and removals of functions since it connected: the first is logged
    /// at `info`, the rest at `debug` (a worker can send them as fast as it likes: 6,000
    /// lines in 5 s on one connection), and their count when it leaves.
    function_changes: u64,
}

impl WorkerInfo {
    /// Counts a registration or removal; whether it is the worker's first.
    fn changed(&mut self) -> bool {
        self.function_changes += 1;
        self.function_changes == 1
    }
}

/// The function registry. One per dispatcher.
pub struct Registry {
    scheduler: Scheduler<Pending>,
    workers: HashMap<WorkerId, WorkerInfo>,
    /// The links of the peer dispatchers, by id (none without discovery).
    peers: HashMap<PeerId, Box<dyn PeerPort>>,
    /// How long a peer that could not be reached is skipped.
    peer_retry: Duration,
    late_results: u64,
    /// Where breaker transitions are counted (set with breakers on).
    metrics: Option<Arc<Metrics>>,
}

/// How long an unreachable peer is skipped unless [`Registry::cluster_limits`] says.
const DEFAULT_PEER_RETRY: Duration = Duration::from_secs(1);

impl Registry {
    /// A registry whose functions each queue at most `max_queue_per_function` calls.
    pub fn new(max_queue_per_function: usize) -> Self {
        Self {
            scheduler: Scheduler::new(max_queue_per_function),
            workers: HashMap::new(),
            peers: HashMap::new(),
            peer_retry: DEFAULT_PEER_RETRY,
            late_results: 0,
            metrics: None,
        }
    }

    /// Keeps a circuit breaker per worker and function with `settings` (`None`: breakers
    /// off, the default), counting their transitions in `metrics`.
    pub fn breakers(mut self, settings: Option<BreakerSettings>, metrics: Arc<Metrics>) -> Self {
        if let Some(settings) = settings {
            self.scheduler.set_breakers(settings);
            self.metrics = Some(metrics);
        }
        self
    }

    /// Forwards at most `max_per_peer` calls at once to one peer (`.0`), of which one caller
    /// may hold `.1`, and skips a peer that could not be reached for `peer_retry`.
    pub fn cluster_limits(mut self, max_per_peer: (u32, u32), peer_retry: Duration) -> Self {
        self.scheduler
            .set_max_forwarded_per_peer(max_per_peer.0, max_per_peer.1);
        self.peer_retry = peer_retry;
        self
    }

    /// Lets the worker that took a function's last call in a round (one turn of this actor's
    /// mailbox) take the round's next calls while it holds fewer than `slack` jobs above the
    /// least-loaded worker (`workers.batch_slack`).
    pub fn batch_slack(mut self, slack: u32) -> Self {
        self.scheduler.set_batch_slack(slack);
        self
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, ctx: &mut Self::Context) {
        let function = msg.spec.function.clone();
        let pending = Pending {
            job_id: msg.job_id,
            spec: msg.spec,
            lease: msg.lease,
        };
        if let Some(decision) = self.scheduler.place(&function, pending, msg.retry) {
            self.carry_out(decision, ctx);
        }
    }
}

impl Handler<Withdraw> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Withdraw, _: &mut Self::Context) {
        self.scheduler.withdraw(&msg.function, msg.job_id);
    }
}

impl Handler<WorkerJoined> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerJoined, _: &mut Self::Context) {
        debug!(worker = %msg.worker, peer = %msg.peer, "worker joined");
        self.scheduler.join(msg.worker, msg.max_jobs);
        let info = WorkerInfo {
            port: msg.port,
            name: None,
            peer: msg.peer,
            connected_since: SystemTime::now(),
            function_changes: 0,
        };
        self.workers.insert(msg.worker, info);
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

impl Handler<WorkerSlots> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerSlots, ctx: &mut Self::Context) {
        let decisions = self.scheduler.set_slots(msg.worker, msg.max_jobs);
        self.carry_out_all(decisions, ctx);
    }
}

impl Handler<WorkerBye> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerBye, ctx: &mut Self::Context) {
        let functions = self.scheduler.serving(msg.worker).len();
        let decisions = self.scheduler.seal(msg.worker);
        self.carry_out_all(decisions, ctx);
        // Every call for this worker was handed over before this: the seal arrives after them.
        if let Some(worker) = self.workers.get(&msg.worker) {
            worker.port.sealed();
        }
        info!(worker = %msg.worker, functions, "worker leaving: functions removed");
    }
}

impl Handler<FunctionAdded> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FunctionAdded, ctx: &mut Self::Context) {
        if !self.workers.contains_key(&msg.worker)
            || self.scheduler.serves(msg.worker, &msg.function)
        {
            return;
        }
        let worker = self.workers.get_mut(&msg.worker).expect("checked above");
        let (first, name) = (worker.changed(), worker.name.as_deref().unwrap_or(""));
        let function = msg.function.escaped();
        match first {
            true => info!(worker = %msg.worker, name, %function, "function registered"),
            false => debug!(worker = %msg.worker, name, %function, "function registered"),
        }
        let decisions = self.scheduler.serve(msg.worker, &msg.function);
        self.carry_out_all(decisions, ctx);
    }
}

impl Handler<FunctionRemoved> for Registry {
    type Result = ();

    fn handle(&mut self, msg: FunctionRemoved, ctx: &mut Self::Context) {
        let first = self
            .workers
            .get_mut(&msg.worker)
            .is_some_and(WorkerInfo::changed);
        let function = msg.function.escaped();
        match first {
            true => info!(worker = %msg.worker, %function, "function removed"),
            false => debug!(worker = %msg.worker, %function, "function removed"),
        }
        let decisions = self.scheduler.unserve(msg.worker, &msg.function);
        self.carry_out_all(decisions, ctx);
    }
}

impl Handler<JobFinished> for Registry {
    type Result = ();

    fn handle(&mut self, msg: JobFinished, ctx: &mut Self::Context) {
        if msg.late {
            self.late_results += 1;
        }
        // Judged first: a breaker this opens keeps the freed slot from the waiting calls.
        if let Some(verdict) = msg.verdict {
            self.judge(msg.worker, &msg.function, verdict, ctx);
        }
        let decisions = self.scheduler.finished(msg.worker, &msg.function);
        self.carry_out_all(decisions, ctx);
    }
}

impl Handler<JobOverdue> for Registry {
    type Result = ();

    fn handle(&mut self, msg: JobOverdue, ctx: &mut Self::Context) {
        self.judge(msg.worker, &msg.function, Verdict::Failure, ctx);
    }
}

impl Handler<WorkerLeft> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WorkerLeft, ctx: &mut Self::Context) {
        let Some(worker) = self.workers.remove(&msg.worker) else {
            return;
        };
        let jobs_in_flight = (self.scheduler.worker_load(msg.worker)).map_or(0, |l| l.in_flight);
        let name = worker.name.as_deref().unwrap_or("");
        let function_changes = worker.function_changes;
        info!(worker = %msg.worker, name, peer = %worker.peer, jobs_in_flight, function_changes, "worker left");
        let decisions = self.scheduler.leave(msg.worker);
        self.carry_out_all(decisions, ctx);
    }
}

impl Handler<Drain> for Registry {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Self::Context) {
        self.scheduler.drain();
    }
}

impl Handler<AbandonAll> for Registry {
    type Result = ();

    fn handle(&mut self, _: AbandonAll, ctx: &mut Self::Context) {
        let decisions = self.scheduler.abandon_queued();
        self.carry_out_all(decisions, ctx);
        for worker in self.workers.values() {
            worker.port.abandon();
        }
        for peer in self.peers.values() {
            peer.abandon();
        }
    }
}

impl Handler<Snapshot> for Registry {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Registry {
    /// Sends a placed call to its worker, or a refusal to its job; every placement passes
    /// here, so here the scheduler's round is arranged to end.
    fn carry_out(&mut self, decision: Decision<Pending>, ctx: &mut Context<Self>) {
        self.deliver(decision);
        self.end_round_after_this_turn(ctx);
    }

    fn deliver(&mut self, decision: Decision<Pending>) {
        match decision {
            Decision::Assign { worker, call } => {
                let assignment = Assignment {
                    job_id: call.job_id,
                    spec: call.spec,
                    lease: call.lease,
                };
                // The scheduler knows only workers the registry knows. Were one missing, the
                // lease would drop here and its job would hear the worker was lost.
                if let Some(worker) = self.workers.get(&worker) {
                    worker.port.assign(assignment);
                }
            }
            Decision::Forward { peer, call } => {
                // As for workers: a peer missing here drops the lease, reporting it lost.
                let Some(link) = self.peers.get(&peer) else {
                    let caller = call.spec.caller.as_ref();
                    return self.scheduler.forward_finished(&peer, caller);
                };
                link.forward(Assignment {
                    job_id: call.job_id,
                    spec: call.spec,
                    lease: call.lease,
                });
            }
            Decision::Refuse { call, error } => call.lease.refuse(error),
        }
    }

    /// Hands a verdict to `worker`'s breaker for `function`, and acts on what it changed.
    fn judge(
        &mut self,
        worker: WorkerId,
        function: &FunctionName,
        verdict: Verdict,
        ctx: &mut Context<Self>,
    ) {
        if !self.scheduler.has_breakers() {
            return;
        }
        let now = Instant::now();
        let (transition, decisions) = self.scheduler.judge(worker, function, verdict, now);
        self.carry_out_all(decisions, ctx);
        if let Some(transition) = transition {
            self.transitioned(worker, function, transition, now, ctx);
        }
    }

    /// Counts and logs a breaker's `transition`; an opened breaker gets the timer that lets
    /// its trial calls through.
    fn transitioned(
        &mut self,
        worker: WorkerId,
        function: &FunctionName,
        transition: Transition,
        now: Instant,
        ctx: &mut Context<Self>,
    ) {
        if let Some(metrics) = &self.metrics {
            metrics.record_breaker_transition(function, transition.to());
        }
        let name = (self.workers.get(&worker))
            .and_then(|w| w.name.as_deref())
            .unwrap_or("");
        let state = transition.to().as_str();
        match transition {
            Transition::Opened { until } => {
                let open_ms = until.saturating_duration_since(now).as_millis() as u64;
                warn!(%worker, name, function = %function.escaped(), open_ms, "circuit breaker open: worker out of placement for the function");
                let function = function.clone();
                ctx.run_later(
                    until.saturating_duration_since(now),
                    move |registry, ctx| {
                        // The timer fired, so its time has come (a clock read a hair early
                        // must not leave the breaker open).
                        let now = Instant::now().max(until);
                        let (transition, decisions) =
                            registry.scheduler.poll_breaker(worker, &function, now);
                        registry.carry_out_all(decisions, ctx);
                        if let Some(transition) = transition {
                            registry.transitioned(worker, &function, transition, now, ctx);
                        }
                    },
                );
            }
            Transition::HalfOpened | Transition::Closed => {
                info!(%worker, name, function = %function.escaped(), state, "circuit breaker");
            }
        }
    }

    /// Ends the scheduler's round (see `workers.batch_slack`) once this turn of the mailbox
    /// is over, if a call placed in it may batch others: actix runs a future spawned here
    /// right after the messages already waiting.
    fn end_round_after_this_turn(&mut self, ctx: &mut Context<Self>) {
        if self.scheduler.round_opened() {
            let end = actix::fut::ready(()).map(|(), registry: &mut Self, _| {
                registry.scheduler.end_round();
            });
            ctx.spawn(end);
        }
    }

    fn carry_out_all(&mut self, decisions: Vec<Decision<Pending>>, ctx: &mut Context<Self>) {
        for decision in decisions {
            self.deliver(decision);
        }
        self.end_round_after_this_turn(ctx);
    }

    fn snapshot(&self) -> RegistrySnapshot {
        let mut workers: Vec<WorkerSnapshot> = (self.workers.iter())
            .map(|(id, info)| {
                let load = self.scheduler.worker_load(*id).unwrap_or_default();
                WorkerSnapshot {
                    id: *id,
                    name: info.name.clone(),
                    peer: info.peer,
                    functions: load.functions,
                    in_flight: load.in_flight,
                    max_jobs: load.max_jobs,
                    connected_since: info.connected_since,
                    breakers: self.scheduler.breaker_states(*id),
                }
            })
            .collect();
        workers.sort_by_key(|w| w.id);
        RegistrySnapshot {
            functions: self.scheduler.functions(),
            workers,
            late_results: self.late_results,
            peers: self.scheduler.peers(),
            draining: self.scheduler.is_draining(),
        }
    }
}
