//! One actor per registered worker: its name, its functions, and its jobs in flight keyed by
//! job id.
//!
//! Started by a connection whose peer speaks as a worker; hears that connection's worker
//! frames (as commands) and the registry's [`Assign`]. It writes `S_GET_DATA` through the
//! connection and matches each `W_RETURN_DATA` to its job by the job id, never by function.
//! When it stops, its leases are dropped, which reports every job it held as lost.

use foldhash::{HashMap, HashMapExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use tracing::{debug, warn};

use super::job::JobLease;
use super::registry::{
    FunctionAdded, FunctionRemoved, JobFinished, Registry, WorkerBye, WorkerCapacity, WorkerJoined,
    WorkerLeft, WorkerNamed,
};
use super::{FunctionName, JobId, JobOutcome, JobSpec, WorkerId};
use crate::codec::{Frame, GetData, Job, ParamsType};
use crate::metrics::Metrics;
use crate::telemetry;
use prometheus::IntCounter;

/// A frame for the worker's connection to write.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Outgoing {
    /// The frame.
    pub frame: Frame,
}

/// `W_SET_NAME`: the worker names itself.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetName {
    /// The name, as sent.
    pub name: Bytes,
}

/// `W_ADD_FUNC`: the worker serves `function`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AddFunction {
    /// The function.
    pub function: FunctionName,
}

/// `W_DEL_FUNC`: the worker stops serving `function`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoveFunction {
    /// The function.
    pub function: FunctionName,
}

/// `W_RETURN_DATA`, `W_JOB_RESULT` or `W_JOB_ERROR`: the worker's answer to a job.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobAnswer {
    /// The job, `None` when the worker echoed an id we never sent.
    pub job_id: Option<JobId>,
    /// [`JobOutcome::Done`] or [`JobOutcome::WorkerFailed`].
    pub outcome: JobOutcome,
}

/// `W_SLOTS`: the worker speaks the tagged protocol and runs `slots` jobs at once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetSlots {
    /// Jobs the worker runs at once.
    pub slots: u32,
}

/// `W_BYE`: the worker is leaving; stop placing jobs on it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Bye;

/// From the registry: no further job will be placed on this worker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ByeDone;

/// The registry gives the worker a job to run.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Assign {
    /// The job.
    pub job_id: JobId,
    /// What to run.
    pub spec: JobSpec,
    /// The job's place here; dropped unanswered, it reports the job lost.
    pub lease: JobLease,
}

/// The worker's connection closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Disconnected;

/// A job held by the worker.
struct Running {
    function: FunctionName,
    lease: JobLease,
}

/// One registered worker.
pub struct Worker {
    id: WorkerId,
    peer: SocketAddr,
    max_jobs: u32,
    /// The peer sent `W_SLOTS`: it gets `S_JOB` frames with deadline and metadata.
    tagged: bool,
    conn: Recipient<Outgoing>,
    registry: Addr<Registry>,
    jobs: HashMap<JobId, Running>,
    metrics: Arc<Metrics>,
    /// Add `traceparent` to msgpack-map params (v1 workers get no metadata).
    inject_trace: bool,
    /// Jobs answered by this worker, labelled with its name (taken on first use, so a
    /// worker that names itself first creates no unnamed series).
    answered: Option<IntCounter>,
}

impl Worker {
    /// A worker behind the connection `conn` from `peer`, holding at most `max_jobs` jobs.
    pub fn new(
        peer: SocketAddr,
        max_jobs: u32,
        conn: Recipient<Outgoing>,
        registry: Addr<Registry>,
        metrics: Arc<Metrics>,
        inject_trace: bool,
    ) -> Self {
        Self {
            id: WorkerId::next(),
            peer,
            max_jobs,
            tagged: false,
            conn,
            registry,
            jobs: HashMap::new(),
            metrics,
            inject_trace,
            answered: None,
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.registry.do_send(WorkerJoined {
            worker: self.id,
            addr: ctx.address(),
            peer: self.peer,
            max_jobs: self.max_jobs,
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> actix::Running {
        // The registry must forget this worker before the jobs hear they are lost, so that
        // their retries are not placed here again.
        self.registry.do_send(WorkerLeft { worker: self.id });
        self.metrics.record_worker_disconnect();
        if !self.jobs.is_empty() {
            warn!(worker = %self.id, peer = %self.peer, jobs = self.jobs.len(), "worker lost with jobs in flight");
        }
        self.jobs.clear();
        actix::Running::Stop
    }
}

impl Handler<SetName> for Worker {
    type Result = ();

    fn handle(&mut self, msg: SetName, _: &mut Self::Context) {
        let name = String::from_utf8_lossy(&msg.name).into_owned();
        debug!(worker = %self.id, %name, "worker named");
        self.answered = Some(self.metrics.worker_jobs(&name));
        self.registry.do_send(WorkerNamed {
            worker: self.id,
            name,
        });
        self.conn.do_send(Outgoing { frame: Frame::Ok });
    }
}

impl Handler<AddFunction> for Worker {
    type Result = ();

    fn handle(&mut self, msg: AddFunction, _: &mut Self::Context) {
        // The registry hears of the function before the worker hears OK, so a call made
        // after the worker's OK always finds it.
        self.registry.do_send(FunctionAdded {
            worker: self.id,
            function: msg.function,
        });
        self.conn.do_send(Outgoing { frame: Frame::Ok });
    }
}

impl Handler<RemoveFunction> for Worker {
    type Result = ();

    fn handle(&mut self, msg: RemoveFunction, _: &mut Self::Context) {
        self.registry.do_send(FunctionRemoved {
            worker: self.id,
            function: msg.function,
        });
    }
}

impl Handler<SetSlots> for Worker {
    type Result = ();

    fn handle(&mut self, msg: SetSlots, _: &mut Self::Context) {
        self.tagged = true;
        // The configured limit stays a ceiling; a worker may ask for fewer, not more.
        let max_jobs = msg.slots.clamp(1, self.max_jobs);
        self.registry.do_send(WorkerCapacity {
            worker: self.id,
            max_jobs,
        });
        self.conn.do_send(Outgoing { frame: Frame::Ok });
    }
}

impl Handler<Bye> for Worker {
    type Result = ();

    fn handle(&mut self, _: Bye, _: &mut Self::Context) {
        self.registry.do_send(WorkerBye { worker: self.id });
    }
}

impl Handler<ByeDone> for Worker {
    type Result = ();

    fn handle(&mut self, _: ByeDone, _: &mut Self::Context) {
        self.conn.do_send(Outgoing {
            frame: Frame::ByeAck,
        });
    }
}

impl Handler<Assign> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Assign, _: &mut Self::Context) {
        let spec = msg.spec;
        let frame = if self.tagged {
            let left = spec.deadline.saturating_duration_since(Instant::now());
            Frame::Job(Job {
                job_id: msg.job_id.0,
                timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
                params_type: spec.params_type,
                handle_type: spec.handle_type,
                function: spec.function.0.clone(),
                params: spec.params,
                meta: spec.meta.map(|m| (*m).clone()).unwrap_or_default(),
            })
        } else {
            let params = match (&spec.meta, self.inject_trace) {
                (Some(meta), true) if spec.params_type == ParamsType::MSGPACK => {
                    telemetry::inject_into_msgpack_map(&spec.params, meta).unwrap_or(spec.params)
                }
                _ => spec.params,
            };
            Frame::GetData(GetData {
                params_type: spec.params_type,
                handle_type: spec.handle_type,
                function: spec.function.0.clone(),
                params,
                job_id: msg.job_id.to_wire(),
            })
        };
        self.conn.do_send(Outgoing { frame });
        self.jobs.insert(
            msg.job_id,
            Running {
                function: spec.function,
                lease: msg.lease,
            },
        );
    }
}

impl Handler<JobAnswer> for Worker {
    type Result = ();

    fn handle(&mut self, msg: JobAnswer, _: &mut Self::Context) {
        let running = msg.job_id.and_then(|id| self.jobs.remove(&id));
        let Some(running) = running else {
            warn!(
                worker = %self.id,
                peer = %self.peer,
                job_id = ?msg.job_id,
                "answer for a job this worker does not hold; discarded"
            );
            return;
        };
        let late = !running.lease.complete(msg.outcome);
        self.answered
            .get_or_insert_with(|| self.metrics.worker_jobs(""))
            .inc();
        if late {
            self.metrics.record_late_result();
            debug!(worker = %self.id, function = %running.function, "late result discarded");
        }
        self.registry.do_send(JobFinished {
            worker: self.id,
            function: running.function,
            late,
        });
    }
}

impl Handler<Disconnected> for Worker {
    type Result = ();

    fn handle(&mut self, _: Disconnected, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
