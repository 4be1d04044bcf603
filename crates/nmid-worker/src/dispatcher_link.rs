//! [`DispatcherLink`]: one actor per dispatcher a worker serves (the dispatcher's actor for a
//! worker connection is its `WorkerSession`): connects, registers, heart-beats, runs jobs,
//! reconnects, and stops gracefully.
//!
//! Receives the dispatcher's frames (as a stream) and, from the worker handle or the
//! discovery follower, [`Shutdown`], [`SetSlots`], [`AddFunction`] and [`RemoveFunction`].
//! Each connection has a generation number; an answer computed for an earlier connection is
//! dropped rather than sent on the new one, since the dispatcher has already retried or failed
//! that job. So when a connection is lost, the jobs it brought are cancelled at once (their
//! futures dropped: an nmid-faas command's process group is killed) rather than left to
//! work for an answer nobody can receive.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::io::WriteHandler;
use actix::prelude::*;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tracing::{debug, error, info, warn};

use super::in_flight::{InFlight, Metered};
use super::job::{Job, JobError, NestedCalls};
use super::presence::Presence;
use super::reply::ReplyTo;
use super::{Functions, HandlerResult, Meter};
use nmid_client::Protocol;
use nmid_proto::codec::{BadBody, CodecError, Frame, NmidCodec, SAuthResult, TolerantCodec};
use nmid_proto::net::NetStream;
use nmid_proto::trace::{self, Hop};
use tracing::Instrument;

mod partials;

use partials::Outbox;
pub use partials::PartialError;
pub(crate) use partials::PartialTo;

/// Heartbeat period, as nmid's workers use.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Silence from the dispatcher after which the connection is presumed dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(35);
/// The longest wait for the dispatcher to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest wait between connection attempts (before jitter).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The waits between connection attempts: doubling from [`RECONNECT_MIN`] to
/// [`RECONNECT_MAX`], each plus a random jitter of up to itself, so that the workers of a
/// restarted dispatcher come back spread out rather than in a herd.
fn reconnect_backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}
/// A v1 dispatcher does not acknowledge `W_DEL_FUNC`: how long to wait for jobs it may
/// still have sent before the removal took effect.
const V1_STOP_GRACE: Duration = Duration::from_millis(200);

/// Stop gracefully; the receiver completes when the link has closed.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub(super) struct Shutdown;

/// Run this many jobs at once from now on (tagged dispatchers are told with `W_SLOTS`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct SetSlots {
    pub(super) slots: u32,
}

/// Serve `name` with `handler` from now on (replacing the handler of a function served).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct AddFunction {
    pub(super) name: String,
    pub(super) handler: super::SharedHandler,
}

/// Stop serving `name`; its jobs running finish.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct RemoveFunction {
    pub(super) name: String,
}

/// What a link needs to know but its address: what the builder was given, cloned for each
/// link it starts and for those the discovery follower starts later.
#[derive(Clone)]
pub(super) struct LinkSettings {
    /// TLS and token, for every dispatcher.
    pub(super) access: nmid_proto::net::Access,
    pub(super) name: String,
    pub(super) slots: u32,
    pub(super) protocol: Protocol,
    pub(super) max_frame_bytes: usize,
    /// Partial data one connection's outbox holds (`max_partial_bytes_queued`).
    pub(super) max_partial_bytes_queued: usize,
    pub(super) stop_timeout: Duration,
    /// The functions served: each link's own copy, changed as functions are added and
    /// removed while it runs (the follower's: those a new link starts with).
    pub(super) functions: Functions,
    pub(super) metrics: Option<Meter>,
    /// Links of this worker connected with their functions registered; each link counts
    /// itself in while it is (the clones of one worker's settings share the count).
    pub(super) registered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Where connection changes are logged (shared with other workers, or its own).
    pub(super) log: super::LinkLog,
}

/// A job received while every slot was busy.
struct Waiting {
    job: Job,
    reply: ReplyTo,
}

/// An open connection to the dispatcher.
struct Connection {
    writer: partials::LinkWriter,
    reader: SpawnHandle,
    /// What the dispatcher's next `OK` or `ERROR` answers (registrations, in order).
    awaiting: VecDeque<String>,
}

/// A graceful stop in progress.
struct Stopping {
    /// No further job can arrive (tagged: `S_BYE_ACK` received; v1: grace elapsed).
    sealed: bool,
    done: Vec<oneshot::Sender<()>>,
}

/// A worker's link to one dispatcher.
pub(super) struct DispatcherLink {
    /// The dispatcher's address (`HOST:PORT`).
    addr: String,
    settings: LinkSettings,
    conn: Option<Connection>,
    generation: u64,
    backoff: ExponentialBackoff,
    last_heard: Instant,
    /// The jobs running, to cancel when the connection is lost.
    running: InFlight,
    backlog: VecDeque<Waiting>,
    nested: Rc<NestedCalls>,
    stopping: Option<Stopping>,
    /// Connected with every registration acknowledged, counted in `settings.registered`.
    presence: Presence,
    /// Partials of tagged jobs waiting to be written (set once started).
    outbox: Option<Rc<Outbox>>,
}

impl DispatcherLink {
    pub(super) fn new(addr: String, settings: LinkSettings) -> Self {
        let nested = Rc::new(NestedCalls::new(addr.clone(), settings.access.clone()));
        Self {
            presence: Presence::new(settings.registered.clone(), settings.log.clone(), &addr),
            addr,
            settings,
            conn: None,
            generation: 0,
            backoff: reconnect_backoff(),
            last_heard: Instant::now(),
            running: InFlight::default(),
            backlog: VecDeque::new(),
            nested,
            stopping: None,
            outbox: None,
        }
    }
}

impl Actor for DispatcherLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let max = self.settings.max_partial_bytes_queued;
        self.outbox = Some(Rc::new(Outbox::new(ctx.address().recipient(), max)));
        self.connect(ctx);
        ctx.run_interval(HEARTBEAT_INTERVAL, |link, ctx| link.heartbeat(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.presence.set_registered(false);
        if let Some(stopping) = self.stopping.take() {
            for done in stopping.done {
                let _ = done.send(());
            }
        }
        info!(addr = %self.addr, "dispatcher link closed");
    }
}

impl StreamHandler<Result<Result<Frame, BadBody>, CodecError>> for DispatcherLink {
    fn handle(
        &mut self,
        item: Result<Result<Frame, BadBody>, CodecError>,
        ctx: &mut Self::Context,
    ) {
        let frame = match item {
            Ok(Ok(frame)) => frame,
            // The frame's body is unreadable but the frames after it are in step: only this
            // frame (if it was a job, only that job; the dispatcher times it out) is lost.
            Ok(Err(bad)) => {
                warn!(addr = %self.addr, frame = bad.kind.name, cause = %bad.error, "unreadable frame from dispatcher skipped");
                return;
            }
            Err(err) => {
                warn!(addr = %self.addr, cause = %err, "bad frame from dispatcher; reconnecting");
                self.link_down(ctx);
                return;
            }
        };
        self.last_heard = Instant::now();
        match frame {
            Frame::SJob(job) => {
                let reply = ReplyTo::Tagged { job_id: job.id };
                let job = Job {
                    function: String::from_utf8_lossy(&job.function).into_owned(),
                    id: job.id.to_string(),
                    params: job.params,
                    params_type: job.params_type,
                    deadline: Some(
                        Instant::now() + Duration::from_millis(u64::from(job.timeout_ms)),
                    ),
                    metadata: job.meta,
                    nested: self.nested.clone(),
                    span: tracing::Span::none(),
                    partials: None,
                };
                self.accept(job, reply, ctx);
            }
            Frame::SGetData(job) => {
                let reply = ReplyTo::V1 {
                    function: job.function.clone(),
                    params: job.params.clone(),
                    job_id: job.job_id.clone(),
                };
                let job = Job {
                    function: String::from_utf8_lossy(&job.function).into_owned(),
                    id: String::from_utf8_lossy(&job.job_id).into_owned(),
                    params: job.params,
                    params_type: job.params_type,
                    deadline: None,
                    metadata: Vec::new(),
                    nested: self.nested.clone(),
                    span: tracing::Span::none(),
                    partials: None,
                };
                self.accept(job, reply, ctx);
            }
            Frame::SByeAck => {
                if let Some(stopping) = &mut self.stopping {
                    stopping.sealed = true;
                }
                self.check_stop(ctx);
            }
            Frame::Ok => {
                if let Some(conn) = &mut self.conn {
                    conn.awaiting.pop_front();
                }
                self.check_registered();
            }
            Frame::SAuthResult(result) if result.code == SAuthResult::ACCEPTED => {
                debug!(addr = %self.addr, grant = %String::from_utf8_lossy(&result.message), "token accepted");
            }
            // The dispatcher closes the connection after this: the reconnects back off.
            Frame::SAuthResult(result) => {
                error!(addr = %self.addr, reason = %String::from_utf8_lossy(&result.message), "dispatcher refused the worker's token");
            }
            // The dispatcher refused a registration (a limit or the token's grant; its log
            // says which).
            Frame::Error => {
                let refused = self
                    .conn
                    .as_mut()
                    .and_then(|conn| conn.awaiting.pop_front());
                let refused = refused.unwrap_or_default();
                warn!(addr = %self.addr, %refused, "dispatcher refused a registration");
                self.check_registered();
            }
            Frame::SHeartbeatPong | Frame::NoJob | Frame::Wakeuped => {}
            other => debug!(frame = other.name(), "worker ignored frame"),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        debug!(addr = %self.addr, "dispatcher closed the connection");
        self.link_down(ctx);
    }
}

impl WriteHandler<CodecError> for DispatcherLink {
    fn error(&mut self, err: CodecError, ctx: &mut Self::Context) -> Running {
        warn!(addr = %self.addr, cause = %err, "write to dispatcher failed");
        // actix calls this from inside the writer, which panics if it is dropped here
        // (`FramedWrite`'s drop borrows what the writer holds): drop the connection just after.
        let generation = self.generation;
        ctx.run_later(Duration::ZERO, move |link, ctx| {
            if link.generation == generation {
                link.link_down(ctx);
            }
        });
        Running::Continue
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // Our own close completed (graceful stop).
        if self.stopping.is_some() {
            ctx.stop();
        }
    }
}

impl Handler<Shutdown> for DispatcherLink {
    type Result = MessageResult<Shutdown>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(stopping) = &mut self.stopping {
            stopping.done.push(tx);
            return MessageResult(rx);
        }
        self.stopping = Some(Stopping {
            sealed: false,
            done: vec![tx],
        });
        let Some(conn) = &mut self.conn else {
            ctx.stop();
            return MessageResult(rx);
        };
        for name in self.settings.functions.names() {
            conn.writer.write(Frame::WDelFunc {
                function: Bytes::copy_from_slice(name.as_bytes()),
            });
        }
        match self.settings.protocol {
            Protocol::Tagged => conn.writer.write(Frame::WBye),
            Protocol::V1 => {
                ctx.run_later(V1_STOP_GRACE, |link, ctx| {
                    if let Some(stopping) = &mut link.stopping {
                        stopping.sealed = true;
                    }
                    link.check_stop(ctx);
                });
            }
        }
        ctx.run_later(self.settings.stop_timeout, |link, ctx| {
            warn!(addr = %link.addr, jobs = link.running.count(), "stop timeout: closing with jobs unfinished");
            ctx.stop();
        });
        info!(addr = %self.addr, "worker stopping: functions removed, finishing jobs in flight");
        MessageResult(rx)
    }
}

impl Handler<SetSlots> for DispatcherLink {
    type Result = ();

    fn handle(&mut self, msg: SetSlots, ctx: &mut Self::Context) {
        self.settings.slots = msg.slots.max(1);
        if let (Some(conn), Protocol::Tagged) = (&mut self.conn, self.settings.protocol) {
            conn.writer.write(Frame::WSlots {
                slots: self.settings.slots,
            });
            conn.awaiting.push_back("slots".to_owned());
        }
        // Raised: jobs waiting here (only v1 dispatchers send more than the slots) start.
        while self.running.count() < self.settings.slots {
            let Some(next) = self.backlog.pop_front() else {
                break;
            };
            self.run(next.job, next.reply, ctx);
        }
    }
}

impl Handler<AddFunction> for DispatcherLink {
    type Result = ();

    fn handle(&mut self, msg: AddFunction, _: &mut Self::Context) {
        if self.stopping.is_some() {
            return;
        }
        let shared = msg.handler;
        let handler: super::BoxedHandler = Rc::new(move |job| shared(job));
        if let Some(metrics) = &self.settings.metrics {
            metrics.serve(&msg.name);
        }
        let function = Bytes::copy_from_slice(msg.name.as_bytes());
        let awaiting = format!("function {:?}", msg.name);
        let new = self.settings.functions.insert(msg.name, handler);
        if let (true, Some(conn)) = (new, &mut self.conn) {
            conn.writer.write(Frame::WAddFunc { function });
            conn.awaiting.push_back(awaiting);
        }
    }
}

impl Handler<RemoveFunction> for DispatcherLink {
    type Result = ();

    fn handle(&mut self, msg: RemoveFunction, ctx: &mut Self::Context) {
        if !self.settings.functions.remove(&msg.name) {
            return;
        }
        if let Some(conn) = &mut self.conn {
            conn.writer.write(Frame::WDelFunc {
                function: Bytes::copy_from_slice(msg.name.as_bytes()),
            });
        }
        ctx.run_later(super::REMOVED_FUNCTION_GRACE, |link, _| {
            link.settings.functions.prune()
        });
    }
}

impl DispatcherLink {
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let addr = self.addr.clone();
        let access = self.settings.access.clone();
        async move { access.dial(&addr, CONNECT_TIMEOUT).await }
            .into_actor(self)
            .map(|result, link, ctx| match result {
                _ if link.stopping.is_some() => ctx.stop(),
                Ok(stream) => link.link_up(stream, ctx),
                Err(err) => {
                    link.presence.unreachable(&err);
                    debug!(addr = %link.addr, cause = %err, "cannot reach dispatcher");
                    link.schedule_reconnect(ctx);
                }
            })
            .spawn(ctx);
    }

    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        let wait = self.backoff.next().unwrap_or(RECONNECT_MAX);
        ctx.run_later(wait, |link, ctx| link.connect(ctx));
    }

    /// Registers on a fresh connection: its token (if any), name, slots (tagged), then every
    /// function.
    fn link_up(&mut self, stream: NetStream, ctx: &mut Context<Self>) {
        let (read, write) = stream.into_split();
        let codec = NmidCodec::new(self.settings.max_frame_bytes);
        self.generation += 1;
        self.backoff = reconnect_backoff();
        self.last_heard = Instant::now();
        let reader = ctx.add_stream(FramedRead::new(read, TolerantCodec(codec)));
        let mut writer = self.metered_writer(write, codec, ctx);
        let mut awaiting = VecDeque::new();
        if let Some(secret) = &self.settings.access.token {
            // Answered with S_AUTH_RESULT, before the OKs of the registrations.
            writer.write(Frame::WAuth {
                secret: secret.clone(),
            });
        }
        writer.write(Frame::WSetName {
            name: Bytes::copy_from_slice(self.settings.name.as_bytes()),
        });
        awaiting.push_back(format!("worker name {:?}", self.settings.name));
        if self.settings.protocol == Protocol::Tagged {
            writer.write(Frame::WSlots {
                slots: self.settings.slots,
            });
            awaiting.push_back("slots".to_owned());
        }
        for name in self.settings.functions.names() {
            writer.write(Frame::WAddFunc {
                function: Bytes::copy_from_slice(name.as_bytes()),
            });
            awaiting.push_back(format!("function {name:?}"));
        }
        self.conn = Some(Connection {
            writer,
            reader,
            awaiting,
        });
        if let Some(metrics) = &self.settings.metrics {
            // The first connection makes the generation 1; each loss and return adds 2.
            metrics.link(&self.addr, true, self.generation > 1);
        }
        debug!(addr = %self.addr, name = %self.settings.name, "worker registered");
    }

    /// The connection is gone: its jobs' answers could go nowhere, so they are cancelled (the
    /// dispatcher retries or fails those calls).
    fn link_down(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Both halves go, so the socket closes now: a writer left running would keep it half
        // open, and the dispatcher would hold this worker until its heartbeat timeout.
        ctx.cancel_future(conn.reader);
        ctx.cancel_future(conn.writer.handle());
        self.generation += 1;
        if let Some(metrics) = &self.settings.metrics {
            metrics.link(&self.addr, false, false);
        }
        let cancelled = self.running.cancel_all(ctx);
        if self.stopping.is_none() {
            (self.presence).disconnected(cancelled, &self.settings.name);
        }
        self.presence.set_registered(false);
        self.backlog.clear();
        if self.stopping.is_some() {
            ctx.stop();
            return;
        }
        self.schedule_reconnect(ctx);
    }

    /// Every registration of this connection is answered: the worker is registered here.
    fn check_registered(&mut self) {
        if self.conn.as_ref().is_some_and(|c| c.awaiting.is_empty()) {
            self.presence.set_registered(true);
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = &mut self.conn else {
            return;
        };
        if self.last_heard.elapsed() > HEARTBEAT_TIMEOUT {
            warn!(addr = %self.addr, "no heartbeat answer from dispatcher; reconnecting");
            self.link_down(ctx);
            return;
        }
        conn.writer.write(Frame::WHeartbeatPing {
            body: Bytes::from_static(b"PING"),
        });
    }

    /// Runs the job now if a slot is free, else keeps it for later (only v1 dispatchers
    /// send more jobs than slots).
    fn accept(&mut self, job: Job, reply: ReplyTo, ctx: &mut Context<Self>) {
        if self.running.count() >= self.settings.slots {
            self.backlog.push_back(Waiting { job, reply });
            return;
        }
        self.run(job, reply, ctx);
    }

    fn run(&mut self, mut job: Job, reply: ReplyTo, ctx: &mut Context<Self>) {
        let Some(handler) = self.settings.functions.handler(job.function.as_bytes()) else {
            let message = format!("function {:?} is not served by this worker", job.function);
            self.answer(self.generation, reply, Err(JobError::new(message)));
            return;
        };
        let generation = self.generation;
        let key = self.running.next_key();
        let metered = (self.settings.metrics.clone()).map(|metrics| Metered::start(metrics, &job));
        job.span = trace::hop_span(Hop::Worker, &job.function, Some(&job.metadata));
        job.partials = self.partial_to(reply.tagged_id());
        let span = job.span.clone();
        // A panicking handler fails its job; it does not take the worker down.
        let job = AssertUnwindSafe(handler(job))
            .catch_unwind()
            .instrument(span.clone())
            .into_actor(self)
            .map(move |result, link, ctx| {
                link.running.remove(&key);
                let result = result.unwrap_or_else(|_| Err(JobError::new("handler panicked")));
                if let Some(metered) = metered {
                    metered.finish(result.as_ref().map(|ret| &ret[..]).map_err(|_| ()));
                }
                trace::finish(&span, if result.is_ok() { "ok" } else { "error" });
                link.answer(generation, reply, result);
                if let Some(next) = link.backlog.pop_front() {
                    link.run(next.job, next.reply, ctx);
                }
                link.check_stop(ctx);
            });
        self.running.insert(key, ctx.spawn(job));
    }

    fn answer(&mut self, generation: u64, reply: ReplyTo, result: HandlerResult) {
        if generation != self.generation {
            debug!("answer for a job of a previous connection dropped");
            return;
        }
        // The job's partials leave before its answer.
        self.flush_partials();
        let Some(conn) = &mut self.conn else {
            return;
        };
        conn.writer
            .write(reply.frame(result, self.settings.max_frame_bytes, &self.addr));
    }

    /// Closes once stopping, sealed, and idle.
    fn check_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(stopping) = &self.stopping else {
            return;
        };
        if !stopping.sealed || !self.running.is_empty() || !self.backlog.is_empty() {
            return;
        }
        match &mut self.conn {
            // The write side flushes, then WriteHandler::finished stops the actor. actix's
            // `FramedWrite::close` does not wake its writer task, so a last (harmless)
            // heartbeat does; without it the close waits for the next write.
            Some(conn) => {
                conn.writer.close();
                conn.writer.write(Frame::WHeartbeatPing {
                    body: Bytes::from_static(b"PING"),
                });
            }
            None => ctx.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reconnect waits grow from 100 ms toward 5 s, each with its own jitter, so two
    /// workers of a restarted dispatcher do not retry in step.
    #[test]
    fn reconnect_waits_grow_and_are_spread_by_jitter() {
        let waits: Vec<Vec<Duration>> = (0..8)
            .map(|_| reconnect_backoff().take(12).collect())
            .collect();
        for series in &waits {
            assert!(series[0] >= RECONNECT_MIN && series[0] <= 2 * RECONNECT_MIN);
            assert!(series.iter().all(|wait| *wait <= 2 * RECONNECT_MAX));
            assert!(series[11] >= RECONNECT_MAX, "{series:?}");
        }
        let firsts: std::collections::HashSet<Duration> = waits.iter().map(|s| s[0]).collect();
        assert!(
            firsts.len() > 1,
            "eight workers waited exactly alike: {firsts:?}"
        );
    }
}
