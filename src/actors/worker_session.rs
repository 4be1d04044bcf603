//! One actor per worker connection: the whole worker protocol, frame -> command -> frame.
//!
//! Started by the accept loop once the connection's first frame says it is a worker. It
//! registers the worker with the registry, answers `W_SET_NAME`, `W_ADD_FUNC` and `W_SLOTS`
//! with `OK`, heartbeats with `S_HEARTBEAT_PONG` and `WAKEUP` with `WAKEUPED`; it receives
//! calls from the registry ([`Assign`]), writes each as `S_GET_DATA` (v1) or `S_JOB` (a
//! worker that sent `W_SLOTS`), keeps its lease under the job id, and matches each
//! `W_RETURN_DATA`, `W_JOB_RESULT` or `W_JOB_ERROR` to its job by that id, never by function.
//!
//! With circuit breakers on, every answer carries a [`Verdict`] on the worker to the registry
//! ([`JobFinished`]), and a job still held past its deadline is reported at once
//! ([`JobOverdue`], a failure), found by the heartbeat check.
//!
//! A worker that stays silent longer than the heartbeat timeout is closed as dead. A
//! malformed frame, or a frame of another role, closes the connection. When it closes, the
//! registry forgets the worker first, then the leases it held are dropped, which reports every
//! job it held as lost (to be retried on another worker).

use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures_util::stream::Stream;
use prometheus::IntCounter;
use tracing::{debug, info, warn};

use super::connection::{start_session, Accepted, Connection, Hold, Session};
use super::inbound::{Inbound, InboundError};
use super::registry::{
    Assignment, FunctionAdded, FunctionRemoved, JobFinished, JobOverdue, WorkerBye, WorkerJoined,
    WorkerLeft, WorkerNamed, WorkerPort, WorkerSlots,
};
use crate::breaker::Verdict;
use crate::call::{CallOutcome, FunctionName, JobId, JobLease, Partial, WorkerId};
use crate::codec::{
    BadBody, CodecError, ConnType, DataType, Frame, ParamsType, SGetData, TaggedCall, WReturnData,
};
use crate::logging::Escaped;
use crate::metrics::{Leniency, Limit, Refusal, Role};
use crate::security::Grant;
use crate::telemetry;

mod control_rate;

use control_rate::ControlRate;

/// From the registry: a call for this worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Assign {
    /// The call.
    pub assignment: Assignment,
}

/// From the registry, after `W_BYE`: no further call will be placed on this worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Sealed;

/// From the registry at shutdown, past the drain timeout: answer every held job
/// `ShuttingDown`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AbandonJobs;

/// The registry reaches a worker session through its address.
impl WorkerPort for Addr<WorkerSession> {
    fn assign(&self, assignment: Assignment) {
        self.do_send(Assign { assignment });
    }

    fn sealed(&self) {
        self.do_send(Sealed);
    }

    fn abandon(&self) {
        self.do_send(AbandonJobs);
    }
}

/// A job the worker holds.
struct Held {
    function: FunctionName,
    /// The params sent to a v1 worker, which it echoes (checked; see `v1_result`).
    params: Option<Bytes>,
    lease: JobLease,
    /// When its caller stops waiting.
    deadline: Instant,
    /// Reported to the registry as overdue (a breaker failure), so not judged again.
    overdue: bool,
}

/// What the end of a job says about its worker (for its circuit breaker): `None` if it was
/// judged already (`overdue`), a failure if it ended past its `deadline` (checked for `late`
/// answers only, so an answer in time costs no clock read), else `on_time`.
fn verdict(overdue: bool, deadline: Instant, late: bool, on_time: Verdict) -> Option<Verdict> {
    if overdue {
        return None;
    }
    if late && Instant::now() >= deadline {
        return Some(Verdict::Failure);
    }
    Some(on_time)
}

/// One worker connection.
pub struct WorkerSession {
    id: WorkerId,
    conn: Connection,
    /// The worker sent `W_SLOTS`: it gets `S_JOB` frames with deadline and metadata.
    tagged: bool,
    jobs: HashMap<JobId, Held>,
    /// The functions it serves, bounded by `workers.max_functions_per_worker`.
    serving: HashSet<FunctionName>,
    control: ControlRate,
    /// A frame arrived since the last heartbeat check (a flag, not a clock read per frame).
    heard: bool,
    /// When the heartbeat check last found `heard` set.
    last_heard: Instant,
    /// Jobs answered by this worker, labelled with its name (taken on first use, so a
    /// worker that names itself first creates no unnamed series).
    answered: Option<IntCounter>,
}

impl WorkerSession {
    /// Starts the session on the current arbiter: `frames` are the connection's frames, the
    /// first of which was a worker's.
    pub fn start<S>(frames: S, accepted: Accepted) -> Addr<Self>
    where
        S: Stream<Item = Result<Inbound, InboundError>> + Unpin + 'static,
    {
        let control = ControlRate::new(accepted.settings.worker_limits.control_frames_per_second);
        start_session(frames, accepted, Role::Worker, |conn| WorkerSession {
            id: WorkerId::next(),
            conn,
            tagged: false,
            jobs: HashMap::new(),
            serving: HashSet::new(),
            control,
            heard: false,
            last_heard: Instant::now(),
            answered: None,
        })
    }
}

impl Session for WorkerSession {
    fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// A worker may keep its connection only while its grant covers every function it
    /// serves.
    fn still_granted(&mut self, grant: Option<&Grant>) -> Result<(), String> {
        let Some(grant) = grant else {
            return Ok(());
        };
        match self.serving.iter().find(|f| !grant.may_serve(&f.0)) {
            Some(function) => Err(format!("{} no longer covers {function}", grant.name)),
            None => Ok(()),
        }
    }
}

impl Actor for WorkerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let settings = &self.conn.settings;
        settings.registry.do_send(WorkerJoined {
            worker: self.id,
            port: Box::new(ctx.address()),
            peer: self.conn.peer,
            // A v1 worker until it says W_SLOTS (the worker library does before any W_ADD_FUNC).
            max_jobs: settings.worker_limits.v1_max_jobs,
        });
        self.watch_heartbeat(ctx);
        info!(peer = %self.conn.peer, worker = %self.id, "worker connected");
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        // The registry must forget this worker before the jobs hear they are lost, so that
        // their retries are not placed here again.
        let settings = &self.conn.settings;
        settings.registry.do_send(WorkerLeft { worker: self.id });
        settings.metrics.record_worker_disconnect();
        if !self.jobs.is_empty() {
            warn!(worker = %self.id, peer = %self.conn.peer, jobs = self.jobs.len(), "worker lost with jobs in flight");
        }
        self.jobs.clear();
        Running::Stop
    }
}

impl StreamHandler<Result<Inbound, InboundError>> for WorkerSession {
    fn handle(&mut self, item: Result<Inbound, InboundError>, ctx: &mut Self::Context) {
        let Some(inbound) = self.conn.inbound(item, ctx) else {
            return;
        };
        self.heard = true;
        let frame = match inbound {
            Ok(frame) => frame,
            Err(bad) => return self.lenient(bad, ctx),
        };
        if is_control(&frame) {
            self.pace_control(ctx);
        }
        let registry = &self.conn.settings.registry;
        let worker = self.id;
        match frame {
            Frame::WSetName { name } => self.set_name(name, ctx),
            Frame::WAddFunc { function } => self.add_function(FunctionName(function), ctx),
            Frame::WDelFunc { function } => {
                let function = FunctionName(function);
                self.serving.remove(&function);
                registry.do_send(FunctionRemoved { worker, function });
            }
            Frame::WSlots { slots } => {
                self.tagged = true;
                // The configured limit stays a ceiling; a worker may ask for fewer, not more.
                let max_jobs = slots.clamp(1, self.conn.settings.max_jobs_per_worker);
                if max_jobs < slots {
                    warn!(worker = %self.id, asked = slots, granted = max_jobs, "worker asked for more slots than workers.max_jobs_in_flight grants (nmid-faas: its concurrency)");
                }
                registry.do_send(WorkerSlots { worker, max_jobs });
                self.send(Frame::Ok, ctx);
            }
            Frame::WReturnData(ret) => self.v1_result(ret),
            Frame::WJobResult(ret) => {
                self.answer(Some(JobId(ret.id)), CallOutcome::Done(ret.ret));
            }
            Frame::WJobError(err) => {
                let outcome = CallOutcome::WorkerFailed(err.message);
                self.answer(Some(JobId(err.job_id)), outcome);
            }
            Frame::WJobPartial(part) => self.partial(JobId(part.id), Partial::Data(part.data)),
            Frame::WJobProgress(p) => {
                let (numerator, denominator) = (p.numerator, p.denominator);
                let progress = Partial::Progress {
                    numerator,
                    denominator,
                };
                self.partial(JobId(p.id), progress)
            }
            Frame::WBye => registry.do_send(WorkerBye { worker }),
            Frame::WHeartbeatPing { .. } => self.send(Frame::SHeartbeatPong, ctx),
            // Jobs are pushed, so a grab needs no answer (nmid's server sends none either);
            // WAKEUP is answered as nmid's server does.
            Frame::WGrabJob => {}
            Frame::WakeUp => self.send(Frame::Wakeuped, ctx),
            other if other.sender() == ConnType::Worker => {
                debug!(peer = %self.conn.peer, frame = other.name(), "ignored worker frame");
            }
            other => self.conn.refuse(&other, ctx),
        }
    }
}

impl Handler<Assign> for WorkerSession {
    type Result = ();

    fn handle(&mut self, msg: Assign, ctx: &mut Self::Context) {
        let Assignment {
            job_id,
            spec,
            lease,
        } = msg.assignment;
        let frame = if self.tagged {
            let left = spec.deadline.saturating_duration_since(Instant::now());
            Frame::SJob(TaggedCall {
                id: job_id.0,
                // Rounded up: the worker's deadline is never before the caller's.
                timeout_ms: u32::try_from(left.as_micros().div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1),
                params_type: spec.params_type,
                handle_type: spec.handle_type,
                function: spec.function.0.clone(),
                params: spec.params,
                meta: spec.meta.map(|m| (*m).clone()).unwrap_or_default(),
            })
        } else {
            let params = match (&spec.meta, self.conn.settings.inject_trace_v1) {
                (Some(meta), true) if spec.params_type == ParamsType::MSGPACK => {
                    telemetry::inject_into_msgpack_map(&spec.params, meta).unwrap_or(spec.params)
                }
                _ => spec.params,
            };
            Frame::SGetData(SGetData {
                params_type: spec.params_type,
                handle_type: spec.handle_type,
                function: spec.function.0.clone(),
                params,
                job_id: job_id.to_wire(),
            })
        };
        let params = match &frame {
            Frame::SGetData(job) => Some(job.params.clone()),
            _ => None,
        };
        self.send(frame, ctx);
        let function = spec.function;
        self.jobs.insert(
            job_id,
            Held {
                function,
                params,
                lease,
                deadline: spec.deadline,
                overdue: false,
            },
        );
    }
}

impl Handler<AbandonJobs> for WorkerSession {
    type Result = ();

    fn handle(&mut self, _: AbandonJobs, _: &mut Self::Context) {
        if !self.jobs.is_empty() {
            warn!(worker = %self.id, jobs = self.jobs.len(), "shutdown: answering the jobs still running here ShuttingDown");
        }
        for (_, held) in self.jobs.drain() {
            held.lease.abandon();
            self.conn.settings.registry.do_send(JobFinished {
                worker: self.id,
                function: held.function,
                late: false,
                verdict: None,
            });
        }
    }
}

impl Handler<Sealed> for WorkerSession {
    type Result = ();

    fn handle(&mut self, _: Sealed, ctx: &mut Self::Context) {
        self.send(Frame::SByeAck, ctx);
    }
}

/// A frame that changes what the registry knows of the worker (and so costs it work).
fn is_control(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::WSetName { .. }
            | Frame::WAddFunc { .. }
            | Frame::WDelFunc { .. }
            | Frame::WSlots { .. }
            | Frame::WBye
    )
}

impl WorkerSession {
    /// `W_SET_NAME`: recorded and answered `OK`, unless the name is too long (`ERROR`).
    fn set_name(&mut self, name: Bytes, ctx: &mut Context<Self>) {
        let limits = &self.conn.settings.worker_limits;
        if name.len() > limits.max_worker_name_bytes {
            let max = limits.max_worker_name_bytes;
            self.conn.settings.metrics.record_limit(Limit::NameTooLong);
            warn!(peer = %self.conn.peer, len = name.len(), max, "worker name refused: longer than workers.max_worker_name_bytes");
            self.send(Frame::Error, ctx);
            return;
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        debug!(worker = %self.id, name = %Escaped::from(name.as_str()), "worker named");
        self.answered = Some(self.conn.settings.metrics.worker_jobs(&name));
        let registry = &self.conn.settings.registry;
        registry.do_send(WorkerNamed {
            worker: self.id,
            name,
        });
        self.send(Frame::Ok, ctx);
    }

    /// `W_ADD_FUNC`: registered and answered `OK`, unless its name is too long or the worker
    /// serves as many functions as it may (`ERROR`, and it never receives a job of it).
    fn add_function(&mut self, function: FunctionName, ctx: &mut Context<Self>) {
        let limits = &self.conn.settings.worker_limits;
        if let Some(grant) = self.conn.grant() {
            if !grant.may_serve(&function.0) {
                self.conn.settings.metrics.record_refusal(Refusal::Serve);
                if self.conn.settings.refusals.first("serve") {
                    warn!(peer = %self.conn.peer, worker = %self.id, grant = %grant.name, function = %function.escaped(), "function registration refused: not in its grant");
                }
                self.send(Frame::Error, ctx);
                return;
            }
        }
        let refused = if function.0.len() > limits.max_function_name_bytes {
            Some((
                Limit::NameTooLong,
                "longer than workers.max_function_name_bytes",
            ))
        } else if !self.serving.contains(&function) && self.serving.len() >= limits.max_functions {
            Some((
                Limit::FunctionsPerWorker,
                "over workers.max_functions_per_worker",
            ))
        } else {
            None
        };
        if let Some((limit, reason)) = refused {
            self.conn.settings.metrics.record_limit(limit);
            if self.conn.settings.refusals.first(limit.as_str()) {
                let len = function.0.len();
                warn!(peer = %self.conn.peer, worker = %self.id, len, reason, "function registration refused");
            }
            self.send(Frame::Error, ctx);
            return;
        }
        self.serving.insert(function.clone());
        self.conn.settings.metrics.function_served(&function);
        // The registry hears of the function before the worker hears OK, so a call made
        // after the worker's OK always finds it.
        let worker = self.id;
        let registry = &self.conn.settings.registry;
        registry.do_send(FunctionAdded { worker, function });
        self.send(Frame::Ok, ctx);
    }

    /// Takes a control frame's token; out of tokens, holds the connection's frames back until
    /// the next one, so a flood from one worker cannot stall the registry for the others.
    fn pace_control(&mut self, ctx: &mut Context<Self>) {
        let Some(wait) = self.control.take() else {
            return;
        };
        let gate = self.conn.gate();
        if gate.holds(Hold::ControlRate) {
            return;
        }
        gate.hold(Hold::ControlRate);
        self.conn
            .settings
            .metrics
            .record_limit(Limit::ControlFrames);
        ctx.run_later(wait, |session, _| {
            session.conn.gate().release(Hold::ControlRate);
        });
    }

    /// A frame whose body cannot be read, though its frame is whole: tolerated where nmid's
    /// server tolerates it, else the connection is closed.
    fn lenient(&mut self, bad: BadBody, ctx: &mut Context<Self>) {
        let metrics = self.conn.settings.metrics.clone();
        match bad.kind.data_type {
            // nmid's C SDK sends one byte with W_GRAB_JOB; a grab needs no answer anyway.
            DataType::W_GRAB_JOB => metrics.record_lenient(Leniency::GrabJobBody),
            DataType::W_RETURN_DATA => match WReturnData::read_leniently(bad.body) {
                Some((ret, _)) => {
                    metrics.record_lenient(Leniency::ReturnDataTrailing);
                    self.v1_result(ret);
                }
                None => {
                    metrics.record_lenient(Leniency::ReturnDataMalformed);
                    self.malformed_result(&bad.error);
                }
            },
            _ => {
                if self.conn.settings.refusals.first("malformed") {
                    warn!(peer = %self.conn.peer, cause = %bad.error, "closing connection: malformed input");
                }
                ctx.stop();
            }
        }
    }

    /// A v1 worker's result. nmid's workers echo the function and params of their job; one
    /// that echoes another job's (nmid's Go SDK, with two jobs overlapping on one connection,
    /// can write one job's id with another's data) cannot be trusted with either job: the
    /// answer is discarded, and both the job it names and the job whose params it echoes are
    /// reported lost (retried, or failed) — never delivered to the wrong caller, never left
    /// waiting for an answer that went out under another id. Empty echoed params are not
    /// checked (an SDK may omit them).
    fn v1_result(&mut self, ret: WReturnData) {
        let echoes = |held: &Held| {
            let params_match = held
                .params
                .as_ref()
                .is_none_or(|sent| ret.params.is_empty() || *sent == ret.params);
            held.function.0 == ret.function && params_match
        };
        let named = JobId::from_wire(&ret.job_id).filter(|id| self.jobs.contains_key(id));
        if let Some(id) = named.filter(|id| echoes(&self.jobs[id])) {
            return self.answer(Some(id), CallOutcome::Done(ret.ret));
        }
        // The job whose params it echoes (when they say something: they are not empty).
        let echoed = (!ret.params.is_empty())
            .then(|| {
                (self.jobs.iter())
                    .find(|(id, held)| Some(**id) != named && held.params.is_some() && echoes(held))
                    .map(|(id, _)| *id)
            })
            .flatten();
        if named.is_none() && echoed.is_none() {
            if self.conn.settings.refusals.first("unknown_job") {
                let job_id = Escaped(&ret.job_id);
                warn!(worker = %self.id, %job_id, "answer for a job this worker does not hold; discarded");
            }
            return;
        }
        let metrics = &self.conn.settings.metrics;
        metrics.record_lenient(Leniency::ReturnDataMismatch);
        if self.conn.settings.refusals.first("result_mismatch") {
            warn!(worker = %self.id, job_id = ?named, echoed = ?echoed, "v1 result does not echo its job's function and params; discarded, the jobs it concerns reported lost");
        }
        for id in named.into_iter().chain(echoed) {
            self.lose(id);
        }
    }

    /// A `W_RETURN_DATA` whose fields cannot be read: the job it answers cannot be known from
    /// it, so it fails only when the worker holds exactly one job (the default for v1
    /// workers); otherwise the jobs it holds run on to their answers or deadlines.
    fn malformed_result(&mut self, error: &CodecError) {
        if self.conn.settings.refusals.first("malformed_result") {
            warn!(worker = %self.id, peer = %self.conn.peer, cause = %error, "malformed W_RETURN_DATA; the connection stays");
        }
        if self.jobs.len() == 1 {
            let id = *self.jobs.keys().next().expect("one job");
            self.lose(id);
        }
    }

    /// Drops job `id`'s lease unanswered (its job retries or fails) and frees its slot: an
    /// answer that cannot be trusted is a failure of the worker.
    fn lose(&mut self, id: JobId) {
        if let Some(held) = self.jobs.remove(&id) {
            let verdict = verdict(held.overdue, held.deadline, false, Verdict::Failure);
            drop(held.lease);
            self.conn.settings.registry.do_send(JobFinished {
                worker: self.id,
                function: held.function,
                late: false,
                verdict,
            });
        }
    }

    /// The worker's answer to job `job_id` (`None`: an id we never sent): to its job through
    /// the lease, and its slot back to the registry.
    fn answer(&mut self, job_id: Option<JobId>, outcome: CallOutcome) {
        let Some(held) = job_id.and_then(|id| self.jobs.remove(&id)) else {
            if self.conn.settings.refusals.first("unknown_job") {
                warn!(
                    worker = %self.id,
                    peer = %self.conn.peer,
                    job_id = ?job_id,
                    "answer for a job this worker does not hold; discarded"
                );
            }
            return;
        };
        // For the worker's breaker a RetStruct with a non-zero Code is an answer, as nmid
        // counts it: a success (the worker is fine; its function failed, which the call's
        // outcome `error` counts).
        let on_time = match outcome {
            CallOutcome::WorkerFailed(_) => Verdict::Failure,
            _ => Verdict::Success,
        };
        let Held {
            function,
            lease,
            deadline,
            overdue,
            ..
        } = held;
        // The registry hears of the job's end (its slot, its verdict) before the caller
        // hears the answer: a caller's next call is placed with the worker's breaker already
        // counting this one.
        let late = !lease.is_live();
        if late {
            debug!(worker = %self.id, function = %function.escaped(), "late result discarded");
        }
        let verdict = verdict(overdue, deadline, late, on_time);
        self.conn.settings.registry.do_send(JobFinished {
            worker: self.id,
            function,
            late,
            verdict,
        });
        // (A job that ended in between discards the answer too: counted late here.)
        let delivered = lease.answer(outcome);
        let metrics = &self.conn.settings.metrics;
        self.answered
            .get_or_insert_with(|| metrics.worker_jobs(""))
            .inc();
        if !delivered {
            metrics.record_late_result();
        }
    }

    /// A partial result or progress for job `id`: to its job through the lease, which stays
    /// held (an id the worker does not hold is dropped, logged once like an unknown answer).
    fn partial(&mut self, id: JobId, partial: Partial) {
        match self.jobs.get(&id) {
            Some(held) => held.lease.partial(partial),
            None if self.conn.settings.refusals.first("unknown_job") => {
                warn!(worker = %self.id, peer = %self.conn.peer, job_id = %id, "partial for a job this worker does not hold; discarded");
            }
            None => {}
        }
    }

    /// Reports each held job past its deadline to the registry once: the worker did not
    /// answer in the time its caller gave, a failure for its circuit breaker. (The job itself
    /// has already answered its caller `Timeout`; the slot stays taken until the worker
    /// answers or goes.)
    fn report_overdue(&mut self) {
        let now = Instant::now();
        let registry = &self.conn.settings.registry;
        for held in self.jobs.values_mut() {
            if !held.overdue && now >= held.deadline {
                held.overdue = true;
                registry.do_send(JobOverdue {
                    worker: self.id,
                    function: held.function.clone(),
                });
            }
        }
    }

    /// Closes the connection when the worker stays silent longer than the heartbeat timeout
    /// (as seen by a check every quarter of it, at most every second).
    fn watch_heartbeat(&self, ctx: &mut Context<Self>) {
        let timeout = self.conn.settings.heartbeat_timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        ctx.run_interval(every, move |session, ctx| {
            if session.conn.settings.breakers {
                session.report_overdue();
            }
            if std::mem::take(&mut session.heard) {
                session.last_heard = Instant::now();
                return;
            }
            let silent = session.last_heard.elapsed();
            if silent > timeout {
                let silent_ms = silent.as_millis() as u64;
                warn!(peer = %session.conn.peer, silent_ms, "closing worker connection: heartbeat timeout");
                ctx.stop();
            }
        });
    }
}
