//! One actor per worker connection: the whole worker protocol, frame -> command -> frame.
//!
//! Started by the accept loop once the connection's first frame says it is a worker. It
//! registers the worker with the registry, answers `W_SET_NAME`, `W_ADD_FUNC` and `W_SLOTS`
//! with `OK`, heartbeats with `S_HEARTBEAT_PONG` and `WAKEUP` with `WAKEUPED`; it receives
//! calls from the registry ([`Assign`]), writes each as `S_GET_DATA` (v1) or `S_JOB` (a
//! worker that sent `W_SLOTS`), keeps its lease under the job id, and matches each
//! `W_RETURN_DATA`, `W_JOB_RESULT` or `W_JOB_ERROR` to its job by that id, never by function.
//!
//! A worker that stays silent longer than the heartbeat timeout is closed as dead. A
//! malformed frame, or a frame of another role, closes the connection. When it closes, the
//! registry forgets the worker first, then the leases it held are dropped, which reports every
//! job it held as lost (to be retried on another worker).

use std::time::{Duration, Instant};

use actix::prelude::*;
use foldhash::{HashMap, HashMapExt};
use futures_util::stream::Stream;
use prometheus::IntCounter;
use tracing::{debug, info, warn};

use super::connection::{start_session, Accepted, Connection, Session};
use super::inbound::InboundError;
use super::registry::{
    Assignment, FunctionAdded, FunctionRemoved, JobFinished, WorkerBye, WorkerJoined, WorkerLeft,
    WorkerNamed, WorkerPort, WorkerSlots,
};
use crate::call::{CallOutcome, FunctionName, JobId, JobLease, WorkerId};
use crate::codec::{ConnType, Frame, ParamsType, SGetData, TaggedCall};
use crate::metrics::Role;
use crate::telemetry;

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

/// The registry reaches a worker session through its address.
impl WorkerPort for Addr<WorkerSession> {
    fn assign(&self, assignment: Assignment) {
        self.do_send(Assign { assignment });
    }

    fn sealed(&self) {
        self.do_send(Sealed);
    }
}

/// A job the worker holds.
struct Held {
    function: FunctionName,
    lease: JobLease,
}

/// One worker connection.
pub struct WorkerSession {
    id: WorkerId,
    conn: Connection,
    /// The worker sent `W_SLOTS`: it gets `S_JOB` frames with deadline and metadata.
    tagged: bool,
    jobs: HashMap<JobId, Held>,
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
        S: Stream<Item = Result<Frame, InboundError>> + Unpin + 'static,
    {
        start_session(frames, accepted, Role::Worker, |conn| WorkerSession {
            id: WorkerId::next(),
            conn,
            tagged: false,
            jobs: HashMap::new(),
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
}

impl Actor for WorkerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let settings = &self.conn.settings;
        settings.jobs.registry.do_send(WorkerJoined {
            worker: self.id,
            port: Box::new(ctx.address()),
            peer: self.conn.peer,
            max_jobs: settings.max_jobs_per_worker,
        });
        self.watch_heartbeat(ctx);
        info!(peer = %self.conn.peer, worker = %self.id, "worker connected");
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        // The registry must forget this worker before the jobs hear they are lost, so that
        // their retries are not placed here again.
        let settings = &self.conn.settings;
        settings
            .jobs
            .registry
            .do_send(WorkerLeft { worker: self.id });
        settings.jobs.metrics.record_worker_disconnect();
        if !self.jobs.is_empty() {
            warn!(worker = %self.id, peer = %self.conn.peer, jobs = self.jobs.len(), "worker lost with jobs in flight");
        }
        self.jobs.clear();
        Running::Stop
    }
}

impl StreamHandler<Result<Frame, InboundError>> for WorkerSession {
    fn handle(&mut self, item: Result<Frame, InboundError>, ctx: &mut Self::Context) {
        let Some(frame) = self.conn.frame(item, ctx) else {
            return;
        };
        self.heard = true;
        let registry = &self.conn.settings.jobs.registry;
        let worker = self.id;
        match frame {
            Frame::WSetName { name } => {
                let name = String::from_utf8_lossy(&name).into_owned();
                debug!(worker = %self.id, %name, "worker named");
                self.answered = Some(self.conn.settings.jobs.metrics.worker_jobs(&name));
                registry.do_send(WorkerNamed { worker, name });
                self.send(Frame::Ok, ctx);
            }
            Frame::WAddFunc { function } => {
                // The registry hears of the function before the worker hears OK, so a call
                // made after the worker's OK always finds it.
                let function = FunctionName(function);
                registry.do_send(FunctionAdded { worker, function });
                self.send(Frame::Ok, ctx);
            }
            Frame::WDelFunc { function } => {
                let function = FunctionName(function);
                registry.do_send(FunctionRemoved { worker, function });
            }
            Frame::WSlots { slots } => {
                self.tagged = true;
                // The configured limit stays a ceiling; a worker may ask for fewer, not more.
                let max_jobs = slots.clamp(1, self.conn.settings.max_jobs_per_worker);
                registry.do_send(WorkerSlots { worker, max_jobs });
                self.send(Frame::Ok, ctx);
            }
            Frame::WReturnData(ret) => {
                let job_id = JobId::from_wire(&ret.job_id);
                self.answer(job_id, CallOutcome::Done(ret.ret));
            }
            Frame::WJobResult(ret) => {
                self.answer(Some(JobId(ret.id)), CallOutcome::Done(ret.ret));
            }
            Frame::WJobError(err) => {
                let outcome = CallOutcome::WorkerFailed(err.message);
                self.answer(Some(JobId(err.job_id)), outcome);
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
                timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
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
        self.send(frame, ctx);
        let function = spec.function;
        self.jobs.insert(job_id, Held { function, lease });
    }
}

impl Handler<Sealed> for WorkerSession {
    type Result = ();

    fn handle(&mut self, _: Sealed, ctx: &mut Self::Context) {
        self.send(Frame::SByeAck, ctx);
    }
}

impl WorkerSession {
    /// The worker's answer to job `job_id` (`None`: an id we never sent): to its job through
    /// the lease, and its slot back to the registry.
    fn answer(&mut self, job_id: Option<JobId>, outcome: CallOutcome) {
        let Some(held) = job_id.and_then(|id| self.jobs.remove(&id)) else {
            warn!(
                worker = %self.id,
                peer = %self.conn.peer,
                job_id = ?job_id,
                "answer for a job this worker does not hold; discarded"
            );
            return;
        };
        let late = !held.lease.answer(outcome);
        let metrics = &self.conn.settings.jobs.metrics;
        self.answered
            .get_or_insert_with(|| metrics.worker_jobs(""))
            .inc();
        if late {
            metrics.record_late_result();
            debug!(worker = %self.id, function = %held.function, "late result discarded");
        }
        self.conn.settings.jobs.registry.do_send(JobFinished {
            worker: self.id,
            function: held.function,
            late,
        });
    }

    /// Closes the connection when the worker stays silent longer than the heartbeat timeout
    /// (as seen by a check every quarter of it, at most every second).
    fn watch_heartbeat(&self, ctx: &mut Context<Self>) {
        let timeout = self.conn.settings.heartbeat_timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        ctx.run_interval(every, move |session, ctx| {
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
