//! What a session holds of its TCP connection: the peer, the permit, the read gate and the
//! bounded outbound buffer. Both session actors own a [`Connection`] and write through
//! [`Session::send`].
//!
//! Frames are encoded into the outbound buffer as they are sent and written at the end of the
//! thread's scheduling round. The buffer is bounded: past `tcp.max_outbound_bytes` the
//! connection stops reading (so a peer that sends calls and never reads the replies stops
//! getting its calls read), and if it stays over the bound for `tcp.slow_consumer_timeout_ms`
//! the connection is closed as a slow consumer (the rule NATS applies).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use futures_util::stream::Stream;
use tokio::io::AsyncWrite;
use tracing::{debug, info, warn};

use super::inbound::{Inbound, InboundError, PartialSince};
use super::SessionSettings;
use crate::accept::ConnectionPermit;
use crate::codec::{self, CodecError, ConnType, Frame};
use crate::metrics::{Limit, Metrics, Refusal, Role};
use crate::net::WriteHalf;
use crate::security::{Grant, Identity};

/// Capacity an emptied outbound buffer may keep; a larger one is freed, so a burst does not
/// pin its memory to the connection.
const KEEP_OUTBOUND_CAPACITY: usize = 16 * 1024;

/// A connection whose first frame has been read: what a session starts from.
pub struct Accepted {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Since when the frame being read has been incomplete (the decoder sets it).
    pub partial_since: PartialSince,
    /// The write side.
    pub write: WriteHalf,
    /// The connection's place under the connection limits.
    pub permit: ConnectionPermit,
    /// Settings shared by every session.
    pub settings: Arc<SessionSettings>,
    /// Who the peer is, and what it may do.
    pub identity: Identity,
    /// A frame to send first (the answer to its `AUTH`).
    pub greeting: Option<Frame>,
}

/// Lets a connection's frames through, or holds them back for as long as any reason to hold
/// them lasts (the peer does not read its replies; a worker sends control frames too fast).
#[derive(Debug, Default)]
pub struct ReadGate {
    holds: Cell<u8>,
    waiting: RefCell<Option<Waker>>,
}

/// Why a connection's frames are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Hold {
    /// Its outbound buffer is over `tcp.max_outbound_bytes`.
    Backpressure = 1,
    /// It sent more than `workers.max_control_frames_per_second`.
    ControlRate = 2,
}

impl ReadGate {
    /// Holds frames back for `reason` (until [`ReadGate::release`] with the same reason).
    pub fn hold(&self, reason: Hold) {
        self.holds.set(self.holds.get() | reason as u8);
    }

    /// `reason` is over; frames flow again unless another reason still holds them.
    pub fn release(&self, reason: Hold) {
        let holds = self.holds.get() & !(reason as u8);
        self.holds.set(holds);
        if holds == 0 {
            if let Some(waker) = self.waiting.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Whether frames are held back for `reason`.
    pub fn holds(&self, reason: Hold) -> bool {
        self.holds.get() & reason as u8 != 0
    }

    /// Whether frames are held back at all.
    pub fn is_closed(&self) -> bool {
        self.holds.get() != 0
    }
}

/// A stream of frames that yields only while its gate is open.
pub struct Gated<S> {
    inner: S,
    gate: Rc<ReadGate>,
}

impl<S> Gated<S> {
    /// `inner`, held back while `gate` is closed.
    pub fn new(inner: S, gate: Rc<ReadGate>) -> Self {
        Self { inner, gate }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        if self.gate.is_closed() {
            *self.gate.waiting.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// What a session holds of its TCP connection.
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Settings shared by every session.
    pub settings: Arc<SessionSettings>,
    role: Role,
    write: WriteHalf,
    /// Who the peer is, and what it may do.
    identity: Identity,
    /// Encoded frames not written yet.
    outbound: BytesMut,
    /// Bytes written to the socket since the connection opened: the stream position up to
    /// which the frames sent have left (see [`Connection::sent_end`]).
    written: u64,
    /// A flush is scheduled or running.
    flushing: bool,
    /// The gate of this connection's frames.
    gate: Rc<ReadGate>,
    /// Since when the outbound buffer is over its bound: replies the peer does not read.
    over_since: Option<Instant>,
    /// Bytes of calls accepted from the peer and not answered yet: replies to come.
    owed: usize,
    /// Close once the outbound buffer is written.
    closing: bool,
    /// Since when the frame being read has been incomplete.
    partial_since: PartialSince,
    /// Given back when the session drops it.
    _permit: ConnectionPermit,
}

impl Connection {
    /// The connection of a session whose first frame said it is a `role`, reading frames
    /// through `gate`; counted in `nmid_connections` until it drops.
    pub fn new(accepted: Accepted, role: Role, gate: Rc<ReadGate>) -> Self {
        accepted.settings.metrics.connection(role, 1);
        debug!(peer = %accepted.peer, ?role, "connection took its role");
        Self {
            peer: accepted.peer,
            role,
            write: accepted.write,
            identity: accepted.identity,
            outbound: BytesMut::new(),
            written: 0,
            flushing: false,
            gate,
            over_since: None,
            owed: 0,
            closing: false,
            partial_since: accepted.partial_since,
            settings: accepted.settings,
            _permit: accepted.permit,
        }
    }

    /// The frame `item` carries, or `None` once the connection is closed over malformed
    /// input (a frame whose body cannot be read included: clients get no leniency).
    pub fn frame<A>(
        &self,
        item: Result<Inbound, InboundError>,
        ctx: &mut Context<A>,
    ) -> Option<Frame>
    where
        A: Actor<Context = Context<A>>,
    {
        match self.inbound(item, ctx)? {
            Ok(frame) => Some(frame),
            Err(bad) => {
                if self.settings.refusals.first("malformed") {
                    warn!(peer = %self.peer, cause = %bad.error, "closing connection: malformed input");
                }
                ctx.stop();
                None
            }
        }
    }

    /// The frame `item` carries, or the body of one that cannot be read, or `None` once the
    /// connection is closed over input that leaves the stream out of step.
    pub fn inbound<A>(
        &self,
        item: Result<Inbound, InboundError>,
        ctx: &mut Context<A>,
    ) -> Option<Inbound>
    where
        A: Actor<Context = Context<A>>,
    {
        match item {
            Ok(inbound) => Some(inbound),
            Err(err @ InboundError::IncompleteFrames { .. }) => {
                self.settings.metrics.record_limit(Limit::IncompleteFrames);
                if self
                    .settings
                    .refusals
                    .first(Limit::IncompleteFrames.as_str())
                {
                    warn!(peer = %self.peer, cause = %err, "closing connection: too much memory in incomplete frames");
                }
                ctx.stop();
                None
            }
            Err(InboundError::Codec(err)) => {
                if matches!(err, CodecError::FrameTooLarge { .. }) {
                    self.settings.metrics.record_limit(Limit::InboundFrameSize);
                }
                // A read that failed (a reset, a TLS peer gone without close_notify) is no
                // malformed frame, but a peer can make either as often as it likes.
                match err {
                    CodecError::Io(_) if self.settings.refusals.first("read_failed") => {
                        warn!(peer = %self.peer, cause = %err, "closing connection: read failed");
                    }
                    CodecError::Io(_) => {}
                    _ if self.settings.refusals.first("malformed") => {
                        warn!(peer = %self.peer, cause = %err, "closing connection: malformed input");
                    }
                    _ => {}
                }
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
        if self.settings.refusals.first("protocol_violation") {
            warn!(peer = %self.peer, frame = frame.name(), cause, "closing connection: protocol violation");
        }
        ctx.stop();
    }

    /// What the peer may do; `None` with auth off (everything).
    pub fn grant(&self) -> Option<&Arc<Grant>> {
        self.identity.grant.as_ref()
    }

    /// The dispatcher's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.settings.metrics
    }

    /// The read gate, to hold this connection's frames back (or let them through again).
    pub fn gate(&self) -> &ReadGate {
        &self.gate
    }

    /// Bytes waiting to be written.
    pub fn outbound_bytes(&self) -> usize {
        self.outbound.len()
    }

    /// The stream position just past the last frame sent: once [`Connection::written`]
    /// reaches it, that frame has left (a streaming call counts its partials waiting so).
    pub fn sent_end(&self) -> u64 {
        self.written + self.outbound.len() as u64
    }

    /// Bytes written to the socket since the connection opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes what is waiting as far as the socket takes it. `Ready(Ok)` once all is written.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        while !self.outbound.is_empty() {
            match Pin::new(&mut self.write).poll_write(cx, &self.outbound) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    self.outbound.advance(n);
                    self.written += n as u64;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    self.check_bound();
                    return Poll::Pending;
                }
            }
        }
        if self.outbound.capacity() > KEEP_OUTBOUND_CAPACITY {
            self.outbound = BytesMut::new();
        }
        self.check_bound();
        // TLS holds written bytes as records until flushed; plain TCP flushes at once.
        Pin::new(&mut self.write).poll_flush(cx)
    }

    /// The peer's calls now owe it `bytes` more of replies (or fewer, when answered).
    pub fn owe(&mut self, bytes: isize) {
        self.owed = self.owed.saturating_add_signed(bytes);
        self.check_bound();
    }

    /// Holds reading back while the replies waiting to be written and those still to come
    /// are over `tcp.max_outbound_bytes`, and lets it resume once they are down to half of
    /// it. Notes since when the replies waiting alone are over it: a peer that does not read
    /// them is a slow consumer.
    fn check_bound(&mut self) {
        let bound = self.settings.limits.max_outbound_bytes;
        let waiting = self.outbound.len();
        if waiting > bound && self.over_since.is_none() {
            self.over_since = Some(Instant::now());
        } else if waiting <= bound / 2 {
            self.over_since = None;
        }
        let owed = waiting + self.owed;
        let held = self.gate.holds(Hold::Backpressure);
        if owed > bound && !held {
            self.gate.hold(Hold::Backpressure);
            self.metrics().record_limit(Limit::Backpressure);
            debug!(peer = %self.peer, waiting, owed, "holding the peer's frames back until its replies leave");
        } else if owed <= bound / 2 && held {
            self.gate.release(Hold::Backpressure);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Best effort, without waiting: the frames of the session's last round (answers to
        // its callers at shutdown, say) leave if the socket takes them now.
        if !self.outbound.is_empty() {
            let _ = self.write.try_write(&self.outbound);
        }
        self.metrics().connection(self.role, -1);
        debug!(peer = %self.peer, "connection closed");
    }
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
    A: Session + StreamHandler<Result<Inbound, InboundError>>,
    S: Stream<Item = Result<Inbound, InboundError>> + Unpin + 'static,
{
    let gate = Rc::new(ReadGate::default());
    let frames = Gated::new(frames, gate.clone());
    A::create(move |ctx| {
        ctx.add_stream(frames);
        let greeting = accepted.greeting.clone();
        let conn = Connection::new(accepted, role, gate);
        watch_deadlines(&conn, ctx);
        let mut session = make(conn);
        if let Some(frame) = greeting {
            session.send(frame, ctx);
        }
        session
    })
}

/// Closes a session whose peer stays over the outbound bound for longer than
/// `tcp.slow_consumer_timeout_ms`, or takes longer than `tcp.frame_timeout_ms` to send a
/// frame it has begun (checked every quarter of the shorter one, at most every second), or
/// that a reloaded security policy no longer admits.
fn watch_deadlines<A: Session>(conn: &Connection, ctx: &mut Context<A>) {
    let limits = &conn.settings.limits;
    let shortest = limits.slow_consumer_timeout.min(limits.frame_timeout);
    let every = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    ctx.run_interval(every, |session, ctx| {
        let conn = session.connection();
        let limits = &conn.settings.limits;
        let metrics = conn.metrics();
        let peer = conn.peer;
        if conn.over_since.is_some_and(|t| t.elapsed() >= limits.slow_consumer_timeout) {
            metrics.record_limit(Limit::SlowConsumer);
            let outbound = conn.outbound.len();
            warn!(%peer, outbound, "closing connection: slow consumer (its replies are not read)");
            ctx.stop();
        } else if (conn.partial_since.get()).is_some_and(|t| t.elapsed() >= limits.frame_timeout) {
            metrics.record_limit(Limit::FrameTimeout);
            // A peer can stall frames on as many connections as it likes: a line per window.
            if conn.settings.refusals.first("frame_timeout") {
                warn!(%peer, "closing connection: a frame it began did not arrive whole in time (tcp.frame_timeout_ms)");
            } else {
                debug!(%peer, "closing connection: a frame it began did not arrive whole in time (tcp.frame_timeout_ms)");
            }
            ctx.stop();
        } else if session.connection().security_changed() {
            session.recheck(ctx);
        }
    });
}

impl Connection {
    /// Whether the security policy was reloaded since this connection was last checked.
    fn security_changed(&self) -> bool {
        self.settings.security.generation() != self.identity.generation
    }
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
        let conn = self.connection();
        if let Err(err) = codec::encode(&frame, &mut conn.outbound) {
            // Only a field over 4 GiB fails, and frames are checked against the limits first.
            warn!(peer = %conn.peer, cause = %err, "closing connection: cannot encode a frame");
            ctx.stop();
            return;
        }
        conn.check_bound();
        if std::mem::replace(&mut conn.flushing, true) {
            return; // a flush is already scheduled or running
        }
        let flush = NextRound::default().into_actor(self).then(|(), _, _| Flush);
        ctx.spawn(flush);
    }

    /// Checks the peer against the security policy again (it was reloaded): it keeps its
    /// connection with what the policy grants it now, or is closed.
    fn recheck(&mut self, ctx: &mut Context<Self>) {
        let conn = self.connection();
        let security = &conn.settings.security;
        conn.identity.generation = security.generation();
        let verdict = security.policy().recheck(conn.peer.ip(), &conn.identity);
        let refused = match verdict {
            Ok(grant) => {
                conn.identity.grant = grant;
                let grant = conn.identity.grant.clone();
                self.still_granted(grant.as_deref()).err()
            }
            Err(reason) => Some(reason.to_owned()),
        };
        if let Some(reason) = refused {
            let conn = self.connection();
            conn.metrics().record_refusal(Refusal::Revoked);
            warn!(peer = %conn.peer, reason, "closing connection: the reloaded security policy no longer admits it");
            ctx.stop();
        }
    }

    /// Whether what the session does is still covered by `grant` (`None`: auth off); a
    /// worker checks the functions it serves.
    fn still_granted(&mut self, _grant: Option<&Grant>) -> Result<(), String> {
        Ok(())
    }

    /// Writes what is waiting, then stops the session.
    fn close_after_flush(&mut self, ctx: &mut Context<Self>) {
        let conn = self.connection();
        conn.closing = true;
        if !std::mem::replace(&mut conn.flushing, true) {
            ctx.spawn(Flush);
        }
    }
}

/// Writes a session's outbound buffer until it is empty (or the socket fails).
struct Flush;

impl<A: Session> ActorFuture<A> for Flush {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        session: &mut A,
        ctx: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let conn = session.connection();
        match conn.poll_write(task) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                conn.flushing = false;
                if conn.closing {
                    ctx.stop();
                }
                Poll::Ready(())
            }
            Poll::Ready(Err(err)) => {
                conn.flushing = false;
                info!(peer = %conn.peer, cause = %err, "closing connection: write failed");
                ctx.stop();
                Poll::Ready(())
            }
        }
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
