//! One actor per call: it owns the way back to the caller, the deadline and the retries.
//!
//! Started by a front end (a client session, an HTTP request) with a [`Reply`] callback. It
//! sends [`Dispatch`] to the registry with a [`JobLease`], and hears back through that lease
//! (refused by the registry, answered or lost by the worker session holding it) and from its
//! caller ([`JobEvent::Cancel`]). It answers exactly once, through the callback, and stops.
//!
//! A job started with a [`PartialSink`] hands it every partial result and progress its
//! worker sends ([`JobEvent::Partial`]), in order and all before the answer; a job without
//! one drops them (the `None` check is all a call that streams nothing pays).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::debug;

use super::registry::{Dispatch, Registry, Withdraw};
use crate::call::{
    CallOutcome, CallSpec, DispatchError, JobHandle, JobId, JobLease, LeaseReport, Partial,
};
use crate::metrics::{Metrics, Outcome};
use crate::rate_limit::RateLimits;
use crate::telemetry::{self, Hop};

/// What a job hears.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum JobEvent {
    /// The registry could not place the job.
    Refused {
        /// Why.
        error: DispatchError,
    },
    /// The worker answered: [`CallOutcome::Done`] or [`CallOutcome::WorkerFailed`].
    Answered {
        /// The worker's answer.
        outcome: CallOutcome,
    },
    /// The worker holding the job is gone (its lease was dropped unanswered).
    WorkerLost,
    /// The job never reached a worker (a peer dispatcher could not take it): place it again.
    Undelivered,
    /// Shutdown gave up on the worker holding the job (the drain timed out).
    Abandoned,
    /// The caller is gone; stop without answering.
    Cancel,
    /// The worker sent a partial result or progress; the answer is still to come.
    Partial {
        /// What it sent.
        partial: Partial,
    },
    /// The caller's front end gives up on the call (a streaming caller that reads too
    /// slowly): answer `error` now.
    Fail {
        /// Why.
        error: DispatchError,
    },
}

/// How a job's one answer reaches its caller: a client session sends itself a message, an
/// HTTP request completes a channel. Called at most once.
pub type Reply = Box<dyn FnOnce(CallOutcome)>;

/// Where a job's partial results and progress go, in the order the worker sent them and all
/// before its [`Reply`]: a streaming client session writes `S_CALL_PARTIAL` /
/// `S_CALL_PROGRESS`, an SSE response writes events, a background job keeps its progress.
pub type PartialSink = Box<dyn FnMut(Partial)>;

/// What every job needs from the dispatcher: where to dispatch, how often to retry, where
/// to count. Cheap to clone; held by each front end.
#[derive(Debug, Clone)]
pub struct JobServices {
    /// The function registry.
    pub registry: Addr<Registry>,
    /// Retries of a job whose worker is lost.
    pub retries: u32,
    /// Placements again of a job that peers handed back unrun (`cluster.max_reroutes`).
    pub max_reroutes: u32,
    /// Call metrics.
    pub metrics: Arc<Metrics>,
    /// Rate limits the front ends check before a call becomes a job (`[rate_limit]`);
    /// `None` when none is configured.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// Circuit breakers are on (`breaker.enabled`): worker sessions report calls that
    /// outlive their deadline on a worker (a failure of that worker).
    pub breakers: bool,
    /// `jobs.max_partial_bytes_buffered`: the partials of one streaming call that may wait
    /// for its caller; the front ends that stream enforce it.
    pub max_partial_bytes_buffered: usize,
}

impl JobServices {
    /// The services of `registry` with nothing configured: one retry of a lost worker, no
    /// reroutes, metrics of their own, no rate limits, no breakers, 1 MiB of partials per
    /// streaming call. What unit tests and benchmarks dispatch through; the dispatcher
    /// builds its own from the configuration.
    pub fn with_registry(registry: Addr<Registry>) -> Self {
        JobServices {
            registry,
            retries: 1,
            max_reroutes: 0,
            metrics: Arc::new(Metrics::new()),
            rate_limits: None,
            breakers: false,
            max_partial_bytes_buffered: 1 << 20,
        }
    }
}

/// A call in flight.
pub struct JobActor {
    id: JobId,
    spec: CallSpec,
    /// Taken by the one answer.
    reply: Option<Reply>,
    /// Where partials go; `None`: dropped.
    partials: Option<PartialSink>,
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    /// When the call arrived, for its duration.
    started: Instant,
    /// The dispatch span (disabled unless tracing is on).
    span: tracing::Span,
    retries_left: u32,
    /// Placements again left for a job handed back unrun by peers.
    reroutes_left: u32,
    /// Dispatch attempts so far; a retry that finds no worker is reported as `WorkerLost`.
    attempts: u32,
}

impl JobActor {
    /// Starts the job `id` of `spec` on the current arbiter: it answers through `reply`
    /// (and hands the worker's partials to `partials`, if given), gives up at the spec's
    /// deadline, and may be retried on another worker as often as `services` says.
    pub fn start(
        id: JobId,
        mut spec: CallSpec,
        reply: Reply,
        partials: Option<PartialSink>,
        services: &JobServices,
    ) -> Addr<Self> {
        spec.streams = partials.is_some();
        let span = match telemetry::enabled() {
            true => {
                let function = spec.function.to_string();
                let span = telemetry::hop_span(Hop::Dispatcher, &function, spec.meta.as_deref());
                // Workers get the dispatch span as their parent.
                let meta = spec.meta.take().map(|m| (*m).clone()).unwrap_or_default();
                spec.meta = Some(Arc::new(telemetry::with_span_context(&span, meta)));
                span
            }
            false => tracing::Span::none(),
        };
        JobActor {
            id,
            spec,
            reply: Some(reply),
            partials,
            registry: services.registry.clone(),
            metrics: services.metrics.clone(),
            started: Instant::now(),
            span,
            retries_left: services.retries,
            reroutes_left: services.max_reroutes,
            attempts: 0,
        }
        .start()
    }

    /// Tells `job` its caller is gone: it leaves any queue and stops without answering.
    pub fn cancel(job: &Addr<Self>) {
        job.do_send(JobEvent::Cancel);
    }

    /// Tells `job` its caller's front end gives up on it: it answers `error` and stops.
    pub fn fail(job: &Addr<Self>, error: DispatchError) {
        job.do_send(JobEvent::Fail { error });
    }
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let left = self.spec.deadline.saturating_duration_since(Instant::now());
        ctx.run_later(left.max(Duration::from_millis(1)), |job, ctx| {
            debug!(job = %job.id, function = %job.spec.function.escaped(), "job deadline passed");
            job.withdraw();
            job.answer(CallOutcome::Failed(DispatchError::Timeout), ctx);
        });
        self.dispatch(ctx);
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        // Safety net: a caller is never left hanging, even if a path above forgot to answer.
        if self.reply.is_some() {
            self.finish(CallOutcome::Failed(DispatchError::WorkerLost));
        }
        Running::Stop
    }
}

impl Handler<JobEvent> for JobActor {
    type Result = ();

    fn handle(&mut self, event: JobEvent, ctx: &mut Self::Context) {
        if self.reply.is_none() {
            return;
        }
        match event {
            JobEvent::Answered { outcome } => {
                let outcome = past_deadline(outcome, self.spec.deadline, Instant::now());
                self.answer(outcome, ctx)
            }
            JobEvent::Refused { error } => {
                // A retry that finds the function's workers all gone is still a lost worker.
                let error = match (self.attempts > 1, error) {
                    (true, DispatchError::NoWorker) => DispatchError::WorkerLost,
                    (_, error) => error,
                };
                self.answer(CallOutcome::Failed(error), ctx)
            }
            JobEvent::WorkerLost => {
                if self.retries_left > 0 && Instant::now() < self.spec.deadline {
                    self.retries_left -= 1;
                    self.metrics.record_retry();
                    debug!(job = %self.id, function = %self.spec.function.escaped(), "worker lost, retrying");
                    self.dispatch(ctx);
                } else {
                    let lost = CallOutcome::Failed(DispatchError::WorkerLost);
                    self.answer(lost, ctx);
                }
            }
            JobEvent::Undelivered => {
                if self.reroutes_left == 0 {
                    // It reached no worker: not a lost worker, and no retry used up.
                    let refused = CallOutcome::Failed(DispatchError::NoWorker);
                    return self.answer(refused, ctx);
                }
                self.reroutes_left -= 1;
                debug!(job = %self.id, function = %self.spec.function, "undelivered, placing again");
                // An attempt that reached no worker does not count.
                self.attempts = self.attempts.saturating_sub(1);
                self.dispatch(ctx);
            }
            JobEvent::Abandoned => {
                // Its caller hears `ShuttingDown`; a dispatcher that forwarded it here hears
                // that a worker had it (it may have run), so it never places it again.
                let error = match self.spec.is_forwarded() {
                    true => DispatchError::WorkerLost,
                    false => DispatchError::ShuttingDown,
                };
                self.answer(CallOutcome::Failed(error), ctx)
            }
            JobEvent::Cancel => {
                self.reply = None;
                self.withdraw();
                ctx.stop();
            }
            JobEvent::Partial { partial } => {
                if let Some(sink) = &mut self.partials {
                    sink(partial);
                }
            }
            JobEvent::Fail { error } => {
                self.withdraw();
                self.answer(CallOutcome::Failed(error), ctx);
            }
        }
    }
}

/// The registry and the worker sessions reach a job through its lease, which holds this.
impl JobHandle for Addr<JobActor> {
    fn is_live(&self) -> bool {
        self.connected()
    }

    fn report(&self, report: LeaseReport) {
        self.do_send(match report {
            LeaseReport::Refused(error) => JobEvent::Refused { error },
            LeaseReport::Answered(outcome) => JobEvent::Answered { outcome },
            LeaseReport::Lost => JobEvent::WorkerLost,
            LeaseReport::Undelivered => JobEvent::Undelivered,
            LeaseReport::Abandoned => JobEvent::Abandoned,
        });
    }

    fn partial(&self, partial: Partial) {
        self.do_send(JobEvent::Partial { partial });
    }
}

impl JobActor {
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        self.attempts += 1;
        self.registry.do_send(Dispatch {
            job_id: self.id,
            spec: self.spec.clone(),
            lease: JobLease::new(Box::new(ctx.address())),
            retry: self.attempts > 1,
        });
    }

    /// Takes the job out of its function's queue, if it is still waiting there.
    fn withdraw(&self) {
        self.registry.do_send(Withdraw {
            job_id: self.id,
            function: self.spec.function.clone(),
        });
    }

    fn answer(&mut self, outcome: CallOutcome, ctx: &mut Context<Self>) {
        self.finish(outcome);
        ctx.stop();
    }

    /// Counts the call and hands its outcome to the caller.
    fn finish(&mut self, outcome: CallOutcome) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        let kind = Outcome::of(&outcome);
        telemetry::finish(&self.span, kind.as_str());
        let elapsed = self.started.elapsed();
        self.metrics
            .record_job(&self.spec.function, &outcome, kind, elapsed);
        reply(outcome);
    }
}

/// One status per cause: a worker's failure that reaches the job once the caller's
/// `deadline` has passed (`now`) is the deadline's doing — a worker (nmid-faas) that ran the
/// call up to the deadline it was told, then gave up on it — and is answered as a timeout,
/// as it would have been had the job's own timer fired first. A result is delivered as it
/// is.
fn past_deadline(outcome: CallOutcome, deadline: Instant, now: Instant) -> CallOutcome {
    match outcome {
        CallOutcome::WorkerFailed(_) if now >= deadline => {
            CallOutcome::Failed(DispatchError::Timeout)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A worker failure at or after the deadline is a timeout; before it, a failure; results
    /// and the dispatcher's own errors pass as they are.
    #[test]
    fn a_worker_failure_after_the_deadline_is_a_timeout() {
        let earlier = Instant::now();
        let deadline = earlier + Duration::from_millis(5);
        let failed = || CallOutcome::WorkerFailed(Bytes::from_static(b"timed out"));
        let timeout = CallOutcome::Failed(DispatchError::Timeout);
        assert_eq!(past_deadline(failed(), deadline, deadline), timeout);
        let later = deadline + Duration::from_millis(5);
        assert_eq!(past_deadline(failed(), deadline, later), timeout);
        assert_eq!(past_deadline(failed(), deadline, earlier), failed());
        let done = CallOutcome::Done(Bytes::from_static(b"late but here"));
        assert_eq!(past_deadline(done.clone(), deadline, later), done);
        let lost = CallOutcome::Failed(DispatchError::WorkerLost);
        assert_eq!(past_deadline(lost.clone(), deadline, later), lost);
    }
}
