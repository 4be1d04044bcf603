//! One actor per registered worker: its name, its functions, and its jobs in flight keyed by
//! job id.
//!
//! Started by a connection whose peer speaks as a worker; hears that connection's worker
//! frames (as commands) and the registry's [`Assign`]. It writes `S_GET_DATA` through the
//! connection and matches each `W_RETURN_DATA` to its job by the job id, never by function.
//! When it stops, its leases are dropped, which reports every job it held as lost.

use std::collections::HashMap;
use std::net::SocketAddr;

use actix::prelude::*;
use bytes::Bytes;
use tracing::{debug, warn};

use super::job::JobLease;
use super::registry::{
    FunctionAdded, FunctionRemoved, JobFinished, Registry, WorkerJoined, WorkerLeft, WorkerNamed,
};
use super::{FunctionName, JobId, JobSpec, WorkerId};
use crate::codec::{Frame, GetData};

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

/// `W_RETURN_DATA`: the result of a job.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobResult {
    /// The job id as the worker echoed it.
    pub job_id: Bytes,
    /// The result bytes.
    pub ret: Bytes,
}

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
    conn: Recipient<Outgoing>,
    registry: Addr<Registry>,
    jobs: HashMap<JobId, Running>,
}

impl Worker {
    /// A worker behind the connection `conn` from `peer`, holding at most `max_jobs` jobs.
    pub fn new(
        peer: SocketAddr,
        max_jobs: u32,
        conn: Recipient<Outgoing>,
        registry: Addr<Registry>,
    ) -> Self {
        Self {
            id: WorkerId::next(),
            peer,
            max_jobs,
            conn,
            registry,
            jobs: HashMap::new(),
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

impl Handler<Assign> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Assign, _: &mut Self::Context) {
        self.conn.do_send(Outgoing {
            frame: Frame::GetData(GetData {
                params_type: msg.spec.params_type,
                handle_type: msg.spec.handle_type,
                function: msg.spec.function.0.clone(),
                params: msg.spec.params,
                job_id: msg.job_id.to_wire(),
            }),
        });
        self.jobs.insert(
            msg.job_id,
            Running {
                function: msg.spec.function,
                lease: msg.lease,
            },
        );
    }
}

impl Handler<JobResult> for Worker {
    type Result = ();

    fn handle(&mut self, msg: JobResult, _: &mut Self::Context) {
        let running = JobId::from_wire(&msg.job_id).and_then(|id| self.jobs.remove(&id));
        let Some(running) = running else {
            warn!(
                worker = %self.id,
                peer = %self.peer,
                job_id = %String::from_utf8_lossy(&msg.job_id),
                "result for a job this worker does not hold; discarded"
            );
            return;
        };
        let late = !running.lease.complete(msg.ret);
        if late {
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
