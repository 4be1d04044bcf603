//! The dispatcher's actors, one per file, each file holding the messages its actor receives.
//!
//! One v1 call, bytes in to bytes out (`docs/architecture.md` draws it):
//!
//! 1. [`client_session::ClientSession`] (one per client connection) decodes `C_DO_JOB` and
//!    starts a [`job::JobActor`] for it, with a callback that sends the session an
//!    [`client_session::Answer`].
//! 2. The job sends [`registry::Dispatch`] with its [`JobLease`](crate::call::JobLease) to
//!    the [`registry::Registry`], whose [`Scheduler`](crate::scheduler::Scheduler) picks the
//!    least-loaded worker of the function (or queues the call, or refuses it).
//! 3. The registry hands the call to that worker's
//!    [`worker_session::WorkerSession`] ([`worker_session::Assign`]), which writes
//!    `S_GET_DATA` and keeps the lease under the job id.
//! 4. The worker program's `W_RETURN_DATA` is matched by that id; the lease hands the result
//!    to its job, and the session tells the registry the slot is free
//!    ([`registry::JobFinished`]).
//! 5. The job answers through its callback; the client session writes `S_RETURN_DATA`.
//!
//! Arrows point down: sessions import the job and the registry, the job imports the
//! registry, and nothing below names an actor above it. The registry reaches worker
//! sessions through [`registry::WorkerPort`] and jobs through their leases, and a job
//! reaches its caller through the callback it was given.
//!
//! Both sessions hold a [`Connection`], defined here: the writer, the peer, the permit.

pub mod client_session;
pub mod job;
pub mod registry;
pub mod worker_session;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use futures_util::stream::Stream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use crate::codec::{CodecError, ConnType, Frame, NmidCodec};
use crate::metrics::Role;
use job::JobServices;

/// What both kinds of session read; shared, never changed after start.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Largest frame body accepted.
    pub max_frame_bytes: usize,
    /// Default deadline of a call.
    pub job_timeout: Duration,
    /// Registry, retries and counters for the jobs client sessions start.
    pub jobs: JobServices,
    /// Jobs in flight on one worker.
    pub max_jobs_per_worker: u32,
    /// Silence after which a worker is treated as dead.
    pub heartbeat_timeout: Duration,
    /// Add `traceparent` to msgpack-map params of jobs for v1 workers.
    pub inject_trace_v1: bool,
}

/// What a session holds of its TCP connection: the peer, the writer with its frames of this
/// round, the settings, and the connection's permit under `tcp.max_connections`.
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Settings shared by every session.
    pub settings: Arc<SessionSettings>,
    role: Role,
    writer: FramedWrite<Frame, OwnedWriteHalf, NmidCodec>,
    /// Frames of this round, not written yet.
    frames: Vec<Frame>,
    /// Given back (to the semaphore) when the session drops it.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// The connection of the session `ctx` runs, whose first frame said it is a `role`;
    /// counted in `nmid_connections` until it drops.
    pub fn new<A>(accepted: Accepted, role: Role, ctx: &mut Context<A>) -> Self
    where
        A: Actor<Context = Context<A>> + WriteHandler<CodecError>,
    {
        let codec = NmidCodec::new(accepted.settings.max_frame_bytes);
        accepted.settings.jobs.metrics.connection(role, 1);
        debug!(peer = %accepted.peer, ?role, "connection took its role");
        Self {
            peer: accepted.peer,
            role,
            writer: FramedWrite::new(accepted.write, codec, ctx),
            frames: Vec::new(),
            settings: accepted.settings,
            _permit: accepted.permit,
        }
    }

    /// The frame `item` carries, or `None` once the connection is closed over malformed
    /// input (after a bad frame the stream's framing can no longer be trusted).
    pub fn frame<A>(&self, item: Result<Frame, CodecError>, ctx: &mut Context<A>) -> Option<Frame>
    where
        A: Actor<Context = Context<A>>,
    {
        match item {
            Ok(frame) => Some(frame),
            Err(err) => {
                warn!(peer = %self.peer, cause = %err, "closing connection: malformed input");
                ctx.stop();
                None
            }
        }
    }

    /// Closes the connection over `frame`, which its role may not send.
    pub fn refuse<A>(&self, frame: &Frame, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        let cause = match frame.sender() {
            ConnType::Server => "peer sent a server frame",
            ConnType::Service => "service connections are not supported",
            _ if self.role == Role::Client => "client connection sent a worker frame",
            _ => "worker connection sent a client frame",
        };
        warn!(peer = %self.peer, frame = frame.name(), cause, "closing connection: protocol violation");
        ctx.stop();
    }

    /// The write side failed: the session stops.
    pub fn write_failed(&self, err: CodecError) -> Running {
        info!(peer = %self.peer, cause = %err, "closing connection: write failed");
        Running::Stop
    }

    fn flush(&mut self) {
        for frame in self.frames.drain(..) {
            self.writer.write(frame);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.settings.jobs.metrics.connection(self.role, -1);
        debug!(peer = %self.peer, "connection closed");
    }
}

/// A connection whose first frame has been read: what a session starts from.
pub struct Accepted {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The write side.
    pub write: OwnedWriteHalf,
    /// The connection's permit under `tcp.max_connections`.
    pub permit: OwnedSemaphorePermit,
    /// Settings shared by every session.
    pub settings: Arc<SessionSettings>,
}

/// Starts a session actor `A` on the current arbiter: it reads `frames` (the first of which
/// named its `role`), and `make` builds it around its [`Connection`].
pub fn start_session<A, S>(
    frames: S,
    accepted: Accepted,
    role: Role,
    make: impl FnOnce(Connection) -> A + 'static,
) -> Addr<A>
where
    A: Session + StreamHandler<Result<Frame, CodecError>> + WriteHandler<CodecError>,
    S: Stream<Item = Result<Frame, CodecError>> + 'static,
{
    A::create(move |ctx| {
        ctx.add_stream(frames);
        make(Connection::new(accepted, role, ctx))
    })
}

/// A session actor: it owns a [`Connection`] and writes frames through it.
pub trait Session: Actor<Context = Context<Self>> {
    /// The session's connection.
    fn connection(&mut self) -> &mut Connection;

    /// Writes `frame` once the actors that are ready to run on this thread have run.
    ///
    /// The frames of one round (replies of many jobs, jobs for one worker) then leave in one
    /// write syscall instead of one each: a write to a local peer also wakes it, and those
    /// wake-ups were the largest single cost in the kernel. At 512 calls in flight this cut
    /// the CPU per call of the dispatcher, its workers and its client together by ~15%; with
    /// one call in flight the round is empty and the frame leaves at once.
    fn send(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let frames = &mut self.connection().frames;
        frames.push(frame);
        if frames.len() > 1 {
            return; // a flush is already scheduled
        }
        let flush = NextRound::default().into_actor(self);
        ctx.spawn(flush.map(|(), session, _| session.connection().flush()));
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
