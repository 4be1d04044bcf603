//! One actor per client connection: turns each call frame into a job actor and writes each
//! job's [`Answer`] back in the protocol of its call.
//!
//! - `C_DO_JOB` (v1) is answered with `S_RETURN_DATA` (function and params echoed), or a bare
//!   `CANT_DO`, `ERROR`, `RATELIMIT` or `BREAKER`;
//! - `C_CALL` (tagged) with `S_CALL_RESULT` or `S_CALL_ERROR` carrying its request id;
//! - `C_CALL_STREAM` (tagged) likewise, after its worker's partial results and progress
//!   ([`PartialOut`]) as `S_CALL_PARTIAL` / `S_CALL_PROGRESS`, in order. The partials of one
//!   call waiting to be written are bounded (`jobs.max_partial_bytes_buffered`): past it the
//!   call fails `slow_caller`, and none of its partials is sent after that.
//! - `C_SUBMIT`, `C_JOB_STATUS`, `C_JOB_CANCEL` (background jobs, tagged) with
//!   `S_SUBMITTED`, `S_JOB_STATUS` or `S_CALL_ERROR` (`super::client_jobs`).
//!
//! Each call is admitted through the [`FrontDoor`] (its grant, its size, the rate limits)
//! before it becomes a job; a refused call is answered at once.
//!
//! Started by the accept loop once the connection's first frame says it is a client. A
//! malformed frame, or a frame of another role, closes this connection (with a log line
//! naming the cause) and touches no other. When it closes, its calls in flight are cancelled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use futures_util::stream::Stream;
use tracing::{info, warn};

use super::connection::{start_session, Accepted, Connection, Session};
use super::front_door::{Caller, FrontDoor, FrontEnd, Refused};
use super::inbound::{Inbound, InboundError};
use super::job::{JobActor, PartialSink, Reply};
use crate::call::{CallOutcome, CallSpec, DispatchError, JobId, Partial};
use crate::codec::{self, ErrorCode, Frame};
use crate::codec::{
    SCallError, SReturnData, TaggedCall, TaggedPartial, TaggedProgress, TaggedResult,
};
use crate::metrics::{Limit, Role};
use crate::rate_limit::Refusal as OverLimit;
use crate::retstruct::RetStruct;

/// The RetStruct `Code` a v1 caller sees when a tagged worker reports its function failed.
pub const WORKER_ERROR_RET_CODE: i64 = 1;

/// A job's one answer to a call of this session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Answer {
    /// The call's job.
    pub job_id: JobId,
    /// The worker's result, or why there is none.
    pub outcome: CallOutcome,
}

/// A partial result or progress of a `C_CALL_STREAM` call of this session, from its job.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PartialOut {
    /// The call's job.
    pub job_id: JobId,
    /// What its worker sent.
    pub partial: Partial,
}

/// How a call was made: it decides the reply frame.
#[derive(Debug)]
enum Request {
    /// `C_DO_JOB`: the reply echoes the function and params.
    V1 { function: Bytes, params: Bytes },
    /// `C_CALL`: the reply carries the client's request id.
    Tagged { request_id: u64 },
}

/// A call of this session in flight.
struct InFlight {
    job: Addr<JobActor>,
    request: Request,
    /// Its params' size: about what its reply will take (counted against the outbound bound).
    owed: usize,
    /// A `C_CALL_STREAM` call: its partials waiting to be written. Boxed: every call's
    /// entry is moved into and out of `calls`, and most calls stream nothing.
    backlog: Option<Box<Backlog>>,
}

/// The partials of one streaming call written to the outbound buffer and not yet to the
/// socket, as (stream position just past the frame, its length): bounded by
/// `jobs.max_partial_bytes_buffered`.
#[derive(Debug, Default)]
struct Backlog {
    waiting: VecDeque<(u64, usize)>,
    bytes: usize,
    /// Over the bound once: the call is failing, its further partials go nowhere.
    failed: bool,
}

impl Backlog {
    /// Whether a partial of `len` bytes may join the backlog, now that the connection has
    /// written `written` bytes: one is always let through when none waits; otherwise the
    /// total must stay within `max`.
    fn admits(&mut self, written: u64, len: usize, max: usize) -> bool {
        while let Some(&(end, bytes)) = self.waiting.front() {
            if end > written {
                break;
            }
            self.waiting.pop_front();
            self.bytes -= bytes;
        }
        self.bytes == 0 || self.bytes + len <= max
    }

    /// A partial of `len` bytes was encoded, ending at stream position `end`.
    fn sent(&mut self, end: u64, len: usize) {
        self.waiting.push_back((end, len));
        self.bytes += len;
    }
}

/// One client connection.
pub struct ClientSession {
    pub(super) conn: Connection,
    calls: HashMap<JobId, InFlight>,
    /// Background-job requests waiting for the jobs' actor (counted as calls in flight).
    pub(super) job_requests: usize,
    /// A frame arrived since the last idle check (a flag, not a clock read per frame).
    heard: bool,
    /// When the idle check last found `heard` set.
    last_heard: Instant,
}

impl ClientSession {
    /// Starts the session on the current arbiter: `frames` are the connection's frames, the
    /// first of which was a client's.
    pub fn start<S>(frames: S, accepted: Accepted) -> Addr<Self>
    where
        S: Stream<Item = Result<Inbound, InboundError>> + Unpin + 'static,
    {
        start_session(frames, accepted, Role::Client, |conn| ClientSession {
            conn,
            calls: HashMap::new(),
            job_requests: 0,
            heard: false,
            last_heard: Instant::now(),
        })
    }
}

impl Session for ClientSession {
    fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(idle) = self.conn.settings.limits.client_idle_timeout {
            self.watch_idle(idle, ctx);
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        for (_, call) in self.calls.drain() {
            JobActor::cancel(&call.job);
        }
        Running::Stop
    }
}

impl StreamHandler<Result<Inbound, InboundError>> for ClientSession {
    fn handle(&mut self, item: Result<Inbound, InboundError>, ctx: &mut Self::Context) {
        let Some(frame) = self.conn.frame(item, ctx) else {
            return;
        };
        self.heard = true;
        match frame {
            Frame::CDoJob(call) => {
                let request = Request::V1 {
                    function: call.function.clone(),
                    params: call.params.clone(),
                };
                let timeout = self.conn.settings.job_timeout;
                let spec = CallSpec::new(
                    call.function,
                    call.params_type,
                    call.handle_type,
                    call.params,
                    timeout,
                );
                self.call(spec, request, false, ctx)
            }
            Frame::CCall(call) => self.tagged_call(call, false, ctx),
            Frame::CCallStream(call) => self.tagged_call(call, true, ctx),
            job @ (Frame::CSubmit(_) | Frame::CJobStatus(_) | Frame::CJobCancel(_)) => {
                self.job_request(job, ctx)
            }
            other => self.conn.refuse(&other, ctx),
        }
    }
}

impl Handler<Answer> for ClientSession {
    type Result = ();

    fn handle(&mut self, answer: Answer, ctx: &mut Self::Context) {
        let Some(call) = self.calls.remove(&answer.job_id) else {
            return;
        };
        self.conn.owe(-(call.owed as isize));
        let (request, outcome) = (call.request, answer.outcome);
        let max = self.conn.settings.max_frame_bytes;
        // A v1 reply echoes the call's params beside the result, so a worker that echoed
        // less than it was sent can make it larger than the client accepts.
        let oversized = match (&request, &outcome) {
            (Request::V1 { function, params }, CallOutcome::Done(ret)) => {
                12 + function.len() + params.len() + ret.len() > max
            }
            _ => false,
        };
        if oversized {
            self.conn.metrics().record_limit(Limit::OutboundFrameSize);
            warn!(peer = %self.conn.peer, "result too large for its caller (tcp.max_frame_bytes); ERROR sent instead");
            let refusal = CallOutcome::Failed(DispatchError::TooLarge);
            return self.send(reply_frame(request, refusal), ctx);
        }
        self.send(reply_frame(request, outcome), ctx);
    }
}

impl Handler<PartialOut> for ClientSession {
    type Result = ();

    fn handle(&mut self, out: PartialOut, ctx: &mut Self::Context) {
        let Some(call) = self.calls.get_mut(&out.job_id) else {
            return;
        };
        let (Some(backlog), Request::Tagged { request_id }) =
            (call.backlog.as_deref_mut(), &call.request)
        else {
            return;
        };
        if backlog.failed {
            return;
        }
        let frame = partial_frame(*request_id, out.partial);
        let len = codec::encoded_len(&frame);
        let max = self.conn.settings.door.jobs().max_partial_bytes_buffered;
        if !backlog.admits(self.conn.written(), len, max) {
            backlog.failed = true;
            self.conn.metrics().record_limit(Limit::PartialBacklog);
            if self.conn.settings.refusals.first("slow_caller") {
                warn!(peer = %self.conn.peer, waiting = backlog.bytes, "streaming call failed: its caller reads its partials too slowly (jobs.max_partial_bytes_buffered)");
            }
            return JobActor::fail(&call.job, DispatchError::SlowCaller);
        }
        self.send(frame, ctx);
        let end = self.conn.sent_end();
        if let Some(backlog) = self
            .calls
            .get_mut(&out.job_id)
            .and_then(|c| c.backlog.as_deref_mut())
        {
            backlog.sent(end, len);
        }
    }
}

impl ClientSession {
    /// Closes the connection once the client has sent nothing for `idle`, with no call in
    /// flight (checked every quarter of it, at most every second).
    fn watch_idle(&self, idle: Duration, ctx: &mut Context<Self>) {
        let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        ctx.run_interval(every, move |session, ctx| {
            let busy = !session.calls.is_empty() || session.job_requests > 0;
            if std::mem::take(&mut session.heard) || busy {
                session.last_heard = Instant::now();
                return;
            }
            if session.last_heard.elapsed() >= idle {
                let conn = &session.conn;
                conn.metrics().record_limit(Limit::ClientIdle);
                info!(peer = %conn.peer, "closing idle client connection (tcp.client_idle_timeout_ms)");
                ctx.stop();
            }
        });
    }

    /// A tagged call (`C_CALL`, or `C_CALL_STREAM` when `stream`). Inlined into the frame
    /// handler: the call is not copied out of its frame into an argument first.
    #[inline(always)]
    fn tagged_call(&mut self, call: TaggedCall, stream: bool, ctx: &mut Context<Self>) {
        let timeout = match call.timeout_ms {
            0 => self.conn.settings.job_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let request = Request::Tagged {
            request_id: call.id,
        };
        let mut spec = CallSpec::new(
            call.function,
            call.params_type,
            call.handle_type,
            call.params,
            timeout,
        );
        spec.meta = (!call.meta.is_empty()).then(|| Arc::new(call.meta));
        self.call(spec, request, stream, ctx)
    }

    /// A client's call: admitted through the [`FrontDoor`] into a new job actor (whose
    /// partials this session writes when `stream`), or answered at once with why not.
    fn call(&mut self, spec: CallSpec, request: Request, stream: bool, ctx: &mut Context<Self>) {
        let ip = self.conn.peer.ip();
        let caller = match self.conn.grant() {
            Some(grant) => Caller::Granted { grant, ip },
            None => Caller::Anyone { ip: Some(ip) },
        };
        let job_id = JobId::next();
        let session = ctx.address();
        let partials: Option<PartialSink> = stream.then(|| {
            let session = session.clone();
            let sink = move |partial| session.do_send(PartialOut { job_id, partial });
            Box::new(sink) as PartialSink
        });
        let reply: Reply = Box::new(move |outcome| session.do_send(Answer { job_id, outcome }));
        let owed = spec.params.len();
        let door: &FrontDoor = &self.conn.settings.door;
        match door.admit(job_id, spec, caller, FrontEnd::Tcp, reply, partials) {
            Ok(job) => {
                let backlog = stream.then(Box::default);
                let call = InFlight {
                    job,
                    request,
                    owed,
                    backlog,
                };
                self.calls.insert(job_id, call);
                self.conn.owe(owed as isize);
            }
            Err(Refused::OverLimit(refusal)) => {
                self.send(rate_limited_frame(request, refusal), ctx);
            }
            Err(refused) => {
                let outcome = CallOutcome::Failed(refused.error());
                self.send(reply_frame(request, outcome), ctx);
            }
        }
    }
}

/// The frame that tells a client how its call ended, in the protocol it called with.
///
/// v1 has no frame for a timeout or a lost worker, so those are `ERROR`, as the protocol
/// documents for failed calls; a tagged worker's failure reaches a v1 caller as a RetStruct
/// with [`WORKER_ERROR_RET_CODE`], which nmid's SDKs read as a failed call with a message.
fn reply_frame(request: Request, outcome: CallOutcome) -> Frame {
    match (request, outcome) {
        (Request::V1 { function, params }, CallOutcome::Done(ret)) => {
            Frame::SReturnData(SReturnData {
                function,
                params,
                ret,
            })
        }
        (Request::V1 { function, params }, CallOutcome::WorkerFailed(message)) => {
            let ret = RetStruct::error(WORKER_ERROR_RET_CODE, String::from_utf8_lossy(&message));
            Frame::SReturnData(SReturnData {
                function,
                params,
                ret: ret.encode().into(),
            })
        }
        (Request::V1 { .. }, CallOutcome::Failed(error)) => match error {
            DispatchError::NoWorker | DispatchError::UnknownFunction => Frame::CantDo,
            DispatchError::RateLimited => Frame::RateLimit,
            DispatchError::BreakerOpen => Frame::Breaker,
            DispatchError::BadRequest
            | DispatchError::Timeout
            | DispatchError::WorkerLost
            | DispatchError::ShuttingDown
            | DispatchError::TooLarge
            | DispatchError::Forbidden
            | DispatchError::SlowCaller => Frame::Error,
        },
        (Request::Tagged { request_id }, CallOutcome::Done(ret)) => {
            Frame::SCallResult(TaggedResult {
                id: request_id,
                ret,
            })
        }
        (Request::Tagged { request_id }, CallOutcome::WorkerFailed(message)) => {
            Frame::SCallError(SCallError {
                request_id,
                code: ErrorCode::WORKER_ERROR,
                message,
            })
        }
        (Request::Tagged { request_id }, CallOutcome::Failed(error)) => {
            Frame::SCallError(SCallError {
                request_id,
                code: error.code(),
                message: error.to_string().into(),
            })
        }
    }
}

/// The frame carrying a streaming call's partial result or progress.
fn partial_frame(request_id: u64, partial: Partial) -> Frame {
    match partial {
        Partial::Data(data) => Frame::SCallPartial(TaggedPartial {
            id: request_id,
            data,
        }),
        Partial::Progress {
            numerator,
            denominator,
        } => Frame::SCallProgress(TaggedProgress {
            id: request_id,
            numerator,
            denominator,
        }),
    }
}

/// The frame that tells a client a rate limit refused its call: v1 `RATELIMIT`, or tagged
/// `rate_limited` with the limit and the wait in its message.
fn rate_limited_frame(request: Request, refusal: OverLimit) -> Frame {
    match request {
        Request::V1 { .. } => Frame::RateLimit,
        Request::Tagged { request_id } => Frame::SCallError(SCallError {
            request_id,
            code: ErrorCode::RATE_LIMITED,
            message: refusal.to_string().into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry of a call that streams nothing carries no backlog inline, only a pointer:
    /// it is moved into and out of the session's map once per call.
    #[test]
    fn an_in_flight_call_keeps_its_backlog_out_of_line() {
        use std::mem::size_of;
        let inline = size_of::<Addr<JobActor>>() + size_of::<Request>() + 2 * size_of::<usize>();
        assert!(size_of::<InFlight>() <= inline, "{}", size_of::<InFlight>());
    }

    /// A backlog lets one partial through when none waits, holds at most `max` otherwise,
    /// and frees what the socket has written.
    #[test]
    fn a_backlog_is_bounded_and_freed_as_the_socket_writes() {
        let mut backlog = Backlog::default();
        assert!(backlog.admits(0, 500, 100), "one partial always goes");
        backlog.sent(500, 500);
        assert!(
            !backlog.admits(499, 1, 100),
            "over the bound while it waits"
        );
        assert!(backlog.admits(500, 60, 100), "written: freed");
        backlog.sent(560, 60);
        assert!(backlog.admits(500, 40, 100));
        backlog.sent(600, 40);
        assert!(!backlog.admits(500, 1, 100));
        assert!(backlog.admits(560, 60, 100));
        assert_eq!(backlog.bytes, 40);
    }
}
