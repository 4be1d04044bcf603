//! One actor per peer dispatcher: carries out the scheduler's `Forward` decisions for it.
//!
//! Started by the membership follower when a peer's record appears; the registry holds its
//! address as the peer's [`PeerPort`] and sends it [`Forward`]. It holds a small pool of
//! tagged connections to the peer (`cluster.peer_connections`, connected on first use) and
//! sends each call as `C_CALL` (`C_CALL_STREAM` for a job that takes partials, whose
//! partials it passes back through the lease as they come) with the time its caller has left, its trace context, the
//! hop marker ([`FORWARDED_META_KEY`]) that stops the peer from forwarding it again, and the
//! caller it is made for ([`CALLER_META_KEY`]): a peer that grants this link the `peer` role
//! authorizes and rate-limits the call as that caller, not as the link.
//!
//! The peer's answer goes to the job through its lease, except:
//!
//! - the peer has no worker of the function left (its worker just left; its record says
//!   otherwise for up to `cluster.publish_interval_ms`): the registry is told, so the peer
//!   gets no calls of the function until it publishes a record again (or for
//!   `cluster.peer_retry_ms`), and the lease is handed back: the job is placed again, on a
//!   local worker or another peer (`cluster.max_reroutes` times at most), else refused
//!   `NoWorker` — never reported as a lost worker.
//!
//! When the peer gives no answer, the link first tells the registry the peer is
//! unreachable (it is skipped for `cluster.peer_retry_ms`), then:
//!
//! - the call never reached the peer (it could not be reached, or refused it while
//!   draining): the lease is handed back and the job is placed again as if it had just
//!   arrived — on a local worker or another peer, else refused `NoWorker` / `CANT_DO` — never
//!   reported as a lost worker;
//! - the call was sent and the connection dropped before the answer: a worker may have run
//!   it, so the lease is dropped: the job retries (`jobs.retries`) or fails `WorkerLost`.
//!
//! A peer that accepts connections but answers nothing (hung) is found out too: once calls
//! were sent there and none has been answered for `cluster.peer_answer_timeout_ms`, whatever
//! the callers' deadlines, the link tells the registry it is unreachable, again at every
//! check (`HUNG_CHECK_MAX` apart at most) until the peer answers again, so new calls go
//! elsewhere; the calls already there wait for their own deadline. A call that ends by this
//! side's timeout is no answer from the peer (nor is a peer's own `TIMEOUT` reply, which
//! cannot be told apart: a peer that times out every call is skipped too). While it is hung
//! the link sends it a probe ([`PROBE_FUNCTION`], which no worker serves): any reply ends it.
//!
//! Nothing waits forever: the job's own deadline answers its caller.

use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use futures_util::stream::{self, StreamExt};
use tracing::{debug, Instrument};

use super::metrics::{ClusterMetrics, ForwardOutcome};
use crate::actors::registry::{Assignment, ForwardFinished, PeerLacks, PeerPort};
use crate::actors::registry::{PeerUnreachable, Registry};
use crate::call::{CallOutcome, DispatchError, JobId, JobLease, Partial, PeerId};
use crate::call::{ClientKey, CALLER_META_KEY, FORWARDED_META_KEY};
use crate::client::{CallOptions, Client, ClientError, StreamEvent};
use crate::telemetry::{self, Hop};

/// The function a link calls to learn whether a hung peer answers again: a live peer
/// answers it at once (`CANT_DO`, or a refusal), and a reply of any kind is an answer.
pub const PROBE_FUNCTION: &str = "nmid.peer-probe";

/// How far apart a hung peer is reported again at most (else a tenth of the answer
/// timeout): below `cluster.peer_retry_ms`, so the peer stays skipped without a gap.
const HUNG_CHECK_MAX: Duration = Duration::from_millis(100);

/// From the registry: a call to forward to this peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Forward {
    /// The call, with its job's lease.
    pub assignment: Assignment,
}

/// From the registry at shutdown, past the drain timeout: answer every call in flight here
/// `ShuttingDown`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AbandonForwards;

/// The registry forwards calls through the link's address.
impl PeerPort for Addr<PeerLink> {
    fn forward(&self, assignment: Assignment) {
        self.do_send(Forward { assignment });
    }

    fn abandon(&self) {
        self.do_send(AbandonForwards);
    }
}

/// The link to one peer dispatcher.
pub struct PeerLink {
    peer: PeerId,
    /// This dispatcher's id: the hop marker's value, for the peer's logs and traces.
    own_id: Bytes,
    clients: Vec<Client>,
    next: usize,
    /// The leases of the calls in flight at the peer, until their answers come, with the
    /// caller each is made for.
    in_flight: HashMap<JobId, (JobLease, Option<ClientKey>)>,
    /// When the first call sent since the peer last answered (any reply from it, errors
    /// included, but not this side's timeout) was sent; `None` while nothing waits unanswered.
    unanswered_since: Option<Instant>,
    /// A probe is in flight.
    probing: bool,
    /// A peer that answers nothing for this long while calls wait there is hung.
    answer_timeout: Duration,
    registry: Addr<Registry>,
    metrics: ClusterMetrics,
}

/// How every link connects to its peer.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Tagged connections per peer (`cluster.peer_connections`).
    pub connections: usize,
    /// Largest frame a link reads.
    pub max_frame_bytes: usize,
    /// TLS when `[tls]` is on, and the token of `auth.peer_secret_*`.
    pub access: crate::net::Access,
    /// How long a peer may answer none of the calls waiting there before it counts as
    /// unreachable (`cluster.peer_answer_timeout_ms`).
    pub answer_timeout: Duration,
}

impl PeerLink {
    /// A link to `peer` at `addr` as `settings` say (connected on first use).
    pub fn new(
        peer: PeerId,
        addr: String,
        own_id: &str,
        settings: &LinkSettings,
        registry: Addr<Registry>,
        metrics: ClusterMetrics,
    ) -> Self {
        let clients = (0..settings.connections.max(1))
            .map(|_| {
                Client::builder(addr.clone())
                    .max_frame_bytes(settings.max_frame_bytes)
                    .access(settings.access.clone())
                    .build()
            })
            .collect();
        Self {
            peer,
            own_id: Bytes::copy_from_slice(own_id.as_bytes()),
            clients,
            next: 0,
            in_flight: HashMap::new(),
            unanswered_since: None,
            probing: false,
            answer_timeout: settings.answer_timeout,
            registry,
            metrics,
        }
    }
}

impl Actor for PeerLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(peer = %self.peer, "peer link started");
        let every = (self.answer_timeout / 10).clamp(Duration::from_millis(10), HUNG_CHECK_MAX);
        ctx.run_interval(every, |link, ctx| link.check_answers(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(peer = %self.peer, "peer link stopped");
    }
}

impl Handler<Forward> for PeerLink {
    type Result = ();

    fn handle(&mut self, msg: Forward, ctx: &mut Self::Context) {
        let Assignment {
            job_id,
            spec,
            lease,
        } = msg.assignment;
        let client = self.clients[self.next % self.clients.len()].clone();
        self.next = self.next.wrapping_add(1);
        let function = spec.function.to_string();
        let function_name = spec.function.clone();
        let span = telemetry::hop_span(Hop::Forward, &function, spec.meta.as_deref());
        let meta = spec.meta.map(|m| (*m).clone()).unwrap_or_default();
        let mut options = CallOptions {
            timeout: Some(time_left(spec.deadline)),
            params_type: Some(spec.params_type),
            metadata: telemetry::with_span_context(&span, meta),
            idempotent: false,
        };
        let hop = Bytes::from_static(FORWARDED_META_KEY.as_bytes());
        options.metadata.push((hop, self.own_id.clone()));
        // Only the caller this dispatcher admitted is named: the front door removed any
        // entry a client wrote itself.
        if let Some(caller) = spec.caller.as_ref().and_then(|c| c.to_meta()) {
            let key = Bytes::from_static(CALLER_META_KEY.as_bytes());
            options.metadata.push((key, caller));
        }
        debug!(job = %job_id, peer = %self.peer, function = %spec.function.escaped(), "forwarding call");
        let caller = spec.caller.clone();
        self.in_flight.insert(job_id, (lease, caller));
        self.unanswered_since.get_or_insert_with(Instant::now);
        match spec.streams {
            false => {
                let call = async move { client.call_with(&function, spec.params, options).await };
                call.instrument(span.clone())
                    .into_actor(self)
                    .map(move |result, link, _| link.finish(job_id, result, &span, function_name))
                    .spawn(ctx);
            }
            true => {
                // The partials pass to the job as they come, in order, then the answer.
                let params = spec.params;
                let call = async move { client.call_stream(&function, params, options).await };
                let events =
                    stream::once(call.instrument(span.clone())).flat_map(|called| match called {
                        Ok(events) => events.boxed_local(),
                        Err(err) => stream::once(async { Err(err) }).boxed_local(),
                    });
                let mut function_name = Some(function_name);
                fut::wrap_stream::<_, Self>(events)
                    .map(move |event, link, _| match event {
                        Ok(StreamEvent::Partial(data)) => link.partial(job_id, Partial::Data(data)),
                        Ok(StreamEvent::Progress {
                            numerator,
                            denominator,
                        }) => link.partial(
                            job_id,
                            Partial::Progress {
                                numerator,
                                denominator,
                            },
                        ),
                        Ok(StreamEvent::Done(ret)) => {
                            let function = function_name.take().expect("one answer");
                            link.finish(job_id, Ok(ret), &span, function)
                        }
                        Err(err) => {
                            let function = function_name.take().expect("one answer");
                            link.finish(job_id, Err(err), &span, function)
                        }
                    })
                    .finish()
                    .spawn(ctx);
            }
        }
    }
}

impl PeerLink {
    /// A partial of the forwarded job `job_id`, to its job through the lease.
    fn partial(&mut self, job_id: JobId, partial: Partial) {
        if let Some((lease, _)) = self.in_flight.get(&job_id) {
            lease.partial(partial);
        }
    }

    /// The peer's reply to the forwarded job `job_id` (of `function`): to its job, and to the
    /// registry what it says of the peer.
    fn finish(
        &mut self,
        job_id: JobId,
        result: Result<Bytes, ClientError>,
        span: &tracing::Span,
        function: crate::call::FunctionName,
    ) {
        let outcome = forward_outcome(&result);
        telemetry::finish(span, outcome.as_str());
        self.metrics.forwarded(outcome);
        // Abandoned at shutdown: answered already.
        let Some((lease, caller)) = self.in_flight.remove(&job_id) else {
            return;
        };
        self.heard(&result);
        let reply = reply_of(result);
        // The registry hears first, so the job's next placement skips this peer.
        let peer = self.peer.clone();
        match reply {
            PeerReply::Answer(_) => {}
            PeerReply::NotServed => {
                self.registry.do_send(PeerLacks { peer, function });
            }
            PeerReply::Undelivered | PeerReply::Lost => {
                self.registry.do_send(PeerUnreachable { peer });
            }
        }
        match reply {
            PeerReply::Answer(answer) => {
                lease.answer(answer);
            }
            PeerReply::NotServed | PeerReply::Undelivered => lease.hand_back(),
            PeerReply::Lost => drop(lease),
        }
        let peer = self.peer.clone();
        self.registry.do_send(ForwardFinished { peer, caller });
    }
}

impl Handler<AbandonForwards> for PeerLink {
    type Result = ();

    fn handle(&mut self, _: AbandonForwards, _: &mut Self::Context) {
        for (_, (lease, caller)) in self.in_flight.drain() {
            lease.refuse(DispatchError::ShuttingDown);
            let peer = self.peer.clone();
            self.registry.do_send(ForwardFinished { peer, caller });
        }
    }
}

impl PeerLink {
    /// Tells the registry the peer is unreachable while it is hung: calls were sent there
    /// and none was answered for the answer timeout since the first of them; and probes it.
    fn check_answers(&mut self, ctx: &mut Context<Self>) {
        let hung =
            (self.unanswered_since).is_some_and(|sent| sent.elapsed() >= self.answer_timeout);
        if !hung {
            return;
        }
        debug!(peer = %self.peer, timeout_ms = self.answer_timeout.as_millis() as u64, "peer answers nothing: skipped until it does");
        let peer = self.peer.clone();
        self.registry.do_send(PeerUnreachable { peer });
        if !self.probing {
            self.probe(ctx);
        }
    }

    /// Calls [`PROBE_FUNCTION`] at the peer (marked forwarded, so it goes no further); its
    /// reply, if any comes within the answer timeout, ends the hung state.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        self.probing = true;
        let client = self.clients[self.next % self.clients.len()].clone();
        let hop = Bytes::from_static(FORWARDED_META_KEY.as_bytes());
        let options = CallOptions {
            timeout: Some(self.answer_timeout),
            params_type: None,
            metadata: vec![(hop, self.own_id.clone())],
            idempotent: false,
        };
        let probe = async move { client.call_with(PROBE_FUNCTION, "probe", options).await };
        probe
            .into_actor(self)
            .map(|result, link, _| {
                link.probing = false;
                link.heard(&result);
            })
            .spawn(ctx);
    }

    /// Notes a call's result: a reply from the peer (not this side's timeout, nor a lost
    /// connection) means it answers, so it is not hung.
    fn heard(&mut self, result: &Result<Bytes, ClientError>) {
        if peer_answered(result) {
            self.unanswered_since = None;
        }
    }
}

/// The time a call has left, at least 1 ms (0 would mean "the peer's default").
fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// What a forwarded call's result means for its job.
#[derive(Debug, PartialEq)]
enum PeerReply {
    /// The peer answered: the job's answer.
    Answer(CallOutcome),
    /// The peer has no worker of the function (any more): place the call again.
    NotServed,
    /// The call never reached the peer's workers: place it again.
    Undelivered,
    /// The call was sent and no answer came: it may have run.
    Lost,
}

/// The job's answer for the peer's reply, or why there is none.
fn reply_of(result: Result<Bytes, ClientError>) -> PeerReply {
    let failed = |error| PeerReply::Answer(CallOutcome::Failed(error));
    match result {
        Ok(ret) => PeerReply::Answer(CallOutcome::Done(ret)),
        Err(ClientError::WorkerError(message)) => {
            PeerReply::Answer(CallOutcome::WorkerFailed(message.into()))
        }
        Err(ClientError::NoWorker) => PeerReply::NotServed,
        Err(ClientError::RateLimited) => failed(DispatchError::RateLimited),
        Err(ClientError::BreakerOpen) => failed(DispatchError::BreakerOpen),
        Err(ClientError::Timeout) => failed(DispatchError::Timeout),
        Err(ClientError::WorkerLost) => failed(DispatchError::WorkerLost),
        Err(ClientError::BadRequest(_)) => failed(DispatchError::BadRequest),
        Err(ClientError::TooLarge(_)) => failed(DispatchError::TooLarge),
        Err(ClientError::Forbidden(_)) => failed(DispatchError::Forbidden),
        Err(ClientError::SlowCaller(_)) => failed(DispatchError::SlowCaller),
        Err(ClientError::Other { message, .. }) => {
            PeerReply::Answer(CallOutcome::WorkerFailed(message.into()))
        }
        // Refused before it could run there: no connection, a draining peer, no access.
        Err(
            ClientError::Connect { .. }
            | ClientError::ShuttingDown
            | ClientError::NoDispatcher
            | ClientError::Unauthorized(_)
            | ClientError::Unsupported(_),
        ) => PeerReply::Undelivered,
        // Sent, and unknown whether it ran there.
        Err(
            ClientError::ConnectionLost
            | ClientError::Protocol(_)
            | ClientError::Failed
            | ClientError::Function { .. }
            | ClientError::Encode(_)
            | ClientError::Decode(_)
            // Answers to background-job requests, never to a call.
            | ClientError::JobNotFound(_)
            | ClientError::StoreFull(_)
            | ClientError::NotCancellable(_),
        ) => PeerReply::Lost,
    }
}

/// Whether the peer itself replied: a timeout is taken for this side's own, and a call that
/// never reached it or lost its connection heard nothing.
fn peer_answered(result: &Result<Bytes, ClientError>) -> bool {
    match result {
        Ok(_) => true,
        Err(ClientError::Timeout) => false,
        Err(error) => matches!(
            reply_of(Err(error.clone())),
            PeerReply::Answer(_) | PeerReply::NotServed
        ),
    }
}

/// How the forwarded call ended, for the metrics and the span.
fn forward_outcome(result: &Result<Bytes, ClientError>) -> ForwardOutcome {
    match result {
        Ok(_) => ForwardOutcome::Ok,
        Err(ClientError::WorkerError(_) | ClientError::Other { .. }) => ForwardOutcome::Error,
        Err(ClientError::NoWorker) => ForwardOutcome::CantDo,
        Err(ClientError::RateLimited | ClientError::BreakerOpen) => ForwardOutcome::RateLimited,
        Err(ClientError::Timeout) => ForwardOutcome::Timeout,
        Err(ClientError::WorkerLost | ClientError::BadRequest(_)) => ForwardOutcome::WorkerLost,
        Err(_) => ForwardOutcome::PeerLost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies that say what happened reach the job; a call the peer never took (it could
    /// not be reached, it was draining, it has no worker of the function left) is handed
    /// back to be placed again; a call whose
    /// connection dropped in flight may have run, so its worker counts as lost.
    #[test]
    fn peer_replies_map_to_job_outcomes() {
        assert_eq!(
            reply_of(Ok(Bytes::from_static(b"r"))),
            PeerReply::Answer(CallOutcome::Done(Bytes::from_static(b"r")))
        );
        assert_eq!(reply_of(Err(ClientError::NoWorker)), PeerReply::NotServed);
        assert_eq!(
            reply_of(Err(ClientError::WorkerError("boom".into()))),
            PeerReply::Answer(CallOutcome::WorkerFailed(Bytes::from_static(b"boom")))
        );
        assert_eq!(reply_of(Err(ClientError::ConnectionLost)), PeerReply::Lost);
        assert_eq!(
            reply_of(Err(ClientError::ShuttingDown)),
            PeerReply::Undelivered
        );
        let unreachable = ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(
            forward_outcome(&Err(unreachable.clone())),
            ForwardOutcome::PeerLost
        );
        assert_eq!(reply_of(Err(unreachable)), PeerReply::Undelivered);
    }

    /// A call that ended by this side's timeout, or whose connection dropped, heard nothing
    /// from the peer; any reply it sent, an error or "no worker" included, is an answer.
    #[test]
    fn only_a_reply_from_the_peer_counts_as_an_answer() {
        assert!(peer_answered(&Ok(Bytes::from_static(b"r"))));
        assert!(peer_answered(&Err(ClientError::NoWorker)));
        assert!(peer_answered(&Err(ClientError::WorkerError("boom".into()))));
        assert!(!peer_answered(&Err(ClientError::Timeout)));
        assert!(!peer_answered(&Err(ClientError::ConnectionLost)));
    }
}
