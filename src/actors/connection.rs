//! One actor per TCP connection: decodes frames with `FramedRead`, writes with `FramedWrite`.
//!
//! The `conn_type` of the first frame fixes the connection's role for good:
//! - a **client** connection turns each `C_DO_JOB` (v1) or `C_CALL` (tagged) into a [`Job`]
//!   actor and writes each [`JobReply`] back in the protocol of its call: `S_RETURN_DATA`,
//!   `CANT_DO`, `ERROR` or `RATELIMIT` for v1, `S_CALL_RESULT` or `S_CALL_ERROR` for tagged;
//! - a **worker** connection starts a [`Worker`] actor, forwards it the worker's frames (v1
//!   and tagged) as commands, writes the frames it sends back ([`Outgoing`]), answers heartbeats, and closes
//!   when the worker falls silent for longer than the heartbeat timeout.
//!
//! A malformed frame, or a frame of another role, closes this connection (with a log line
//! naming the cause) and touches no other. When the connection stops, its client jobs are
//! cancelled and its worker is told, so nothing it owned outlives it.

use foldhash::{HashMap, HashMapExt};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::job::{Job, JobEvent, JobReply, JobServices, NewCall, ReplyTo, Request};
use super::worker::{
    AddFunction, Bye, Disconnected, JobAnswer, Outgoing, RemoveFunction, SetName, SetSlots, Worker,
};
use super::{CallError, FunctionName, JobId, JobOutcome};
use crate::codec::{self, CodecError, ConnType, Frame, NmidCodec, ReturnData};
use crate::metrics::{self, Outcome};
use crate::retstruct::RetStruct;

/// The read buffer a connection starts with: room for dozens of small frames per read
/// syscall; the codec grows it for a larger frame. (tokio-util's default is 8 KiB, most of
/// an idle connection's memory.)
const READ_BUFFER_BYTES: usize = 4096;

/// Settings every connection reads; shared, never changed after start.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Largest frame body accepted.
    pub max_frame_bytes: usize,
    /// Default deadline of a call.
    pub job_timeout: Duration,
    /// Registry, retries and counters for the jobs this connection starts.
    pub jobs: JobServices,
    /// Jobs in flight on one worker.
    pub max_jobs_per_worker: u32,
    /// Silence after which a worker is treated as dead.
    pub heartbeat_timeout: Duration,
    /// Add `traceparent` to msgpack-map params of jobs for v1 workers.
    pub inject_trace_v1: bool,
}

/// What this connection is, decided by the `conn_type` of its first frame.
enum Role {
    Undecided,
    Client {
        /// Calls in flight, to cancel if the client goes away.
        jobs: HashMap<JobId, Addr<Job>>,
    },
    Worker {
        worker: Addr<Worker>,
        /// A frame arrived since the last heartbeat check (a flag, not a clock read per frame).
        heard: bool,
        /// When the heartbeat check last found `heard` set.
        last_heard: Instant,
    },
}

/// One TCP connection.
pub struct Connection {
    peer: SocketAddr,
    role: Role,
    writer: FramedWrite<Frame, OwnedWriteHalf, NmidCodec>,
    /// Frames to write at the end of this scheduling round (see [`Connection::send`]).
    outbox: Vec<Frame>,
    settings: Arc<ConnectionSettings>,
    /// Open connections of the dispatcher; this one leaves it when it stops.
    open: Arc<AtomicUsize>,
}

impl Connection {
    /// Starts the actor for `stream` on the current arbiter. `open` must already count it.
    pub fn start(
        stream: TcpStream,
        peer: SocketAddr,
        settings: Arc<ConnectionSettings>,
        open: Arc<AtomicUsize>,
    ) -> Addr<Self> {
        let codec = NmidCodec::new(settings.max_frame_bytes);
        let (read, write) = stream.into_split();
        Connection::create(move |ctx| {
            ctx.add_stream(FramedRead::with_capacity(read, codec, READ_BUFFER_BYTES));
            Connection {
                peer,
                role: Role::Undecided,
                writer: FramedWrite::new(write, codec, ctx),
                outbox: Vec::new(),
                settings,
                open,
            }
        })
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.settings
            .jobs
            .metrics
            .connection(Role::Undecided.metric(), 1);
        debug!(peer = %self.peer, "connection opened");
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        match &mut self.role {
            Role::Client { jobs } => {
                for (_, job) in jobs.drain() {
                    job.do_send(JobEvent::Cancel);
                }
            }
            Role::Worker { worker, .. } => worker.do_send(Disconnected),
            Role::Undecided => {}
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.settings
            .jobs
            .metrics
            .connection(self.role.metric(), -1);
        self.open.fetch_sub(1, Ordering::Relaxed);
        debug!(peer = %self.peer, "connection closed");
    }
}

impl StreamHandler<Result<Frame, CodecError>> for Connection {
    fn handle(&mut self, item: Result<Frame, CodecError>, ctx: &mut Self::Context) {
        let frame = match item {
            Ok(frame) => frame,
            Err(err) => {
                warn!(peer = %self.peer, cause = %err, "closing connection: malformed input");
                ctx.stop();
                return;
            }
        };
        if let Err(reason) = self.take_role(frame.sender(), ctx) {
            warn!(peer = %self.peer, frame = frame.name(), cause = reason, "closing connection: protocol violation");
            ctx.stop();
            return;
        }
        match frame {
            Frame::DoJob(call) => {
                let request = Request::V1 {
                    function: call.function.clone(),
                    params: call.params.clone(),
                };
                let call = NewCall {
                    function: call.function,
                    params_type: call.params_type,
                    handle_type: call.handle_type,
                    params: call.params,
                    meta: None,
                    timeout: self.settings.job_timeout,
                };
                self.call(call, request, ctx)
            }
            Frame::Call(call) => {
                let timeout = match call.timeout_ms {
                    0 => self.settings.job_timeout,
                    ms => Duration::from_millis(u64::from(ms)),
                };
                let call_meta = (!call.meta.is_empty()).then(|| Arc::new(call.meta));
                let request = Request::Tagged {
                    request_id: call.request_id,
                };
                let call = NewCall {
                    function: call.function,
                    params_type: call.params_type,
                    handle_type: call.handle_type,
                    params: call.params,
                    meta: call_meta,
                    timeout,
                };
                self.call(call, request, ctx)
            }
            other => self.on_worker_frame(other, ctx),
        }
    }
}

impl Handler<JobReply> for Connection {
    type Result = ();

    fn handle(&mut self, reply: JobReply, ctx: &mut Self::Context) {
        if let Role::Client { jobs } = &mut self.role {
            jobs.remove(&reply.job_id);
        }
        self.send(reply_frame(reply), ctx);
    }
}

impl Handler<Outgoing> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Outgoing, ctx: &mut Self::Context) {
        self.send(msg.frame, ctx);
    }
}

impl WriteHandler<CodecError> for Connection {
    fn error(&mut self, err: CodecError, _: &mut Self::Context) -> Running {
        info!(peer = %self.peer, cause = %err, "closing connection: write failed");
        Running::Stop
    }
}

impl Role {
    fn metric(&self) -> metrics::Role {
        match self {
            Role::Undecided => metrics::Role::Undecided,
            Role::Client { .. } => metrics::Role::Client,
            Role::Worker { .. } => metrics::Role::Worker,
        }
    }
}

impl Connection {
    /// Writes `frame` once the actors that are ready to run on this thread have run.
    ///
    /// The frames of one round (replies of many jobs, jobs for one worker) then leave in one
    /// write syscall instead of one each: a write to a local peer also wakes it, and those
    /// wake-ups were the largest single cost in the kernel. At 512 calls in flight this cut
    /// the CPU per call of the dispatcher, its workers and its client together by ~15%; with
    /// one call in flight the round is empty and the frame leaves at once.
    fn send(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        self.outbox.push(frame);
        if self.outbox.len() > 1 {
            return; // a flush is already scheduled
        }
        ctx.spawn(NextRound::default().into_actor(self).map(|(), conn, _| {
            for frame in conn.outbox.drain(..) {
                conn.writer.write(frame);
            }
        }));
    }

    /// Moves this connection's count from undecided to its role.
    fn took_role(&self) {
        let metrics = &self.settings.jobs.metrics;
        metrics.connection(metrics::Role::Undecided, -1);
        metrics.connection(self.role.metric(), 1);
    }

    /// Fixes the role on the first frame; refuses a frame of any other role afterwards.
    fn take_role(&mut self, sender: ConnType, ctx: &mut Context<Self>) -> Result<(), &'static str> {
        match (&mut self.role, sender) {
            (Role::Client { .. }, ConnType::Client) => Ok(()),
            (Role::Worker { heard, .. }, ConnType::Worker) => {
                *heard = true;
                Ok(())
            }
            (Role::Undecided, ConnType::Client) => {
                self.role = Role::Client {
                    jobs: HashMap::new(),
                };
                self.took_role();
                Ok(())
            }
            (Role::Undecided, ConnType::Worker) => {
                let worker = Worker::new(
                    self.peer,
                    self.settings.max_jobs_per_worker,
                    ctx.address().recipient(),
                    self.settings.jobs.registry.clone(),
                    self.settings.jobs.metrics.clone(),
                    self.settings.inject_trace_v1,
                )
                .start();
                self.role = Role::Worker {
                    worker,
                    heard: false,
                    last_heard: Instant::now(),
                };
                self.took_role();
                self.watch_heartbeat(ctx);
                info!(peer = %self.peer, "worker connected");
                Ok(())
            }
            (_, ConnType::Server) => Err("peer sent a server frame"),
            (_, ConnType::Service) => Err("service connections are not supported"),
            (Role::Client { .. }, _) => Err("client connection sent a worker frame"),
            (Role::Worker { .. }, _) => Err("worker connection sent a client frame"),
        }
    }

    /// A client's call (`C_DO_JOB` or `C_CALL`): refused at once if malformed, else handed to
    /// a new job actor.
    fn call(&mut self, call: NewCall, request: Request, ctx: &mut Context<Self>) {
        let Role::Client { jobs } = &mut self.role else {
            return;
        };
        let job_id = JobId::next();
        if let Err(error) = call.validate() {
            self.settings
                .jobs
                .metrics
                .record_refused(Outcome::of_error(error));
            let refusal = reply_frame(JobReply {
                job_id,
                request,
                outcome: JobOutcome::Failed(error),
            });
            self.send(refusal, ctx);
            return;
        }
        let reply_to = ReplyTo::Connection {
            recipient: ctx.address().recipient(),
            request,
        };
        let job = Job::new(job_id, call.into_spec(), reply_to, &self.settings.jobs).start();
        jobs.insert(job_id, job);
    }

    /// A worker's frame, turned into a command for its worker actor (or answered here).
    fn on_worker_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let Role::Worker { worker, .. } = &self.role else {
            return;
        };
        match frame {
            Frame::SetName { name } => worker.do_send(SetName { name }),
            Frame::AddFunc { function } => worker.do_send(AddFunction {
                function: FunctionName(function),
            }),
            Frame::DelFunc { function } => worker.do_send(RemoveFunction {
                function: FunctionName(function),
            }),
            Frame::WorkerReturn(ret) => worker.do_send(JobAnswer {
                job_id: JobId::from_wire(&ret.job_id),
                outcome: JobOutcome::Done(ret.ret),
            }),
            Frame::JobResult(ret) => worker.do_send(JobAnswer {
                job_id: Some(JobId(ret.job_id)),
                outcome: JobOutcome::Done(ret.ret),
            }),
            Frame::JobError(err) => worker.do_send(JobAnswer {
                job_id: Some(JobId(err.job_id)),
                outcome: JobOutcome::WorkerFailed(err.message),
            }),
            Frame::Slots { slots } => worker.do_send(SetSlots { slots }),
            Frame::Bye => worker.do_send(Bye),
            Frame::HeartbeatPing { .. } => self.send(Frame::HeartbeatPong, ctx),
            // Jobs are pushed, so a grab needs no answer (nmid's server sends none either);
            // WAKEUP is answered as nmid's server does.
            Frame::GrabJob => {}
            Frame::WakeUp => self.send(Frame::Wakeuped, ctx),
            other => debug!(peer = %self.peer, frame = other.name(), "ignored worker frame"),
        }
    }

    /// Closes a worker connection that stays silent longer than the heartbeat timeout (as
    /// seen by a check every quarter of it, at most every second).
    fn watch_heartbeat(&self, ctx: &mut Context<Self>) {
        let timeout = self.settings.heartbeat_timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        ctx.run_interval(every, move |conn, ctx| {
            if let Role::Worker {
                heard, last_heard, ..
            } = &mut conn.role
            {
                if std::mem::take(heard) {
                    *last_heard = Instant::now();
                    return;
                }
                let silent = last_heard.elapsed();
                if silent > timeout {
                    warn!(peer = %conn.peer, silent_ms = silent.as_millis() as u64, "closing worker connection: heartbeat timeout");
                    ctx.stop();
                }
            }
        });
    }
}

/// Completes on its second poll: having woken its task at the first, it lets every task
/// queued on this thread before it run in between.
#[derive(Default)]
struct NextRound {
    yielded: bool,
}

impl Future for NextRound {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The frame that tells a client how its call ended, in the protocol it called with.
///
/// v1 has no frame for a timeout or a lost worker, so those are `ERROR`, as the protocol
/// documents for failed calls; a tagged worker's failure reaches a v1 caller as a RetStruct
/// with [`WORKER_ERROR_RET_CODE`], which nmid's SDKs read as a failed call with a message.
fn reply_frame(reply: JobReply) -> Frame {
    match (reply.request, reply.outcome) {
        (Request::V1 { function, params }, JobOutcome::Done(ret)) => {
            Frame::ReturnData(ReturnData {
                function,
                params,
                ret,
            })
        }
        (Request::V1 { function, params }, JobOutcome::WorkerFailed(message)) => {
            let ret = RetStruct::error(WORKER_ERROR_RET_CODE, String::from_utf8_lossy(&message));
            Frame::ReturnData(ReturnData {
                function,
                params,
                ret: ret.encode().into(),
            })
        }
        (Request::V1 { .. }, JobOutcome::Failed(error)) => match error {
            CallError::NoWorker | CallError::UnknownFunction => Frame::CantDo,
            CallError::RateLimited => Frame::RateLimit,
            CallError::BadRequest
            | CallError::Timeout
            | CallError::WorkerLost
            | CallError::ShuttingDown => Frame::Error,
        },
        (Request::Tagged { request_id }, JobOutcome::Done(ret)) => {
            Frame::CallResult(codec::CallResult { request_id, ret })
        }
        (Request::Tagged { request_id }, JobOutcome::WorkerFailed(message)) => {
            Frame::CallError(codec::CallError {
                request_id,
                code: codec::ErrorCode::WORKER_ERROR,
                message,
            })
        }
        (Request::Tagged { request_id }, JobOutcome::Failed(error)) => {
            Frame::CallError(codec::CallError {
                request_id,
                code: error.code(),
                message: error.to_string().into(),
            })
        }
    }
}

/// The RetStruct `Code` a v1 caller sees when a tagged worker reports its function failed.
pub const WORKER_ERROR_RET_CODE: i64 = 1;
