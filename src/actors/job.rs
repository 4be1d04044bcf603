//! One actor per call. It owns the route back to the caller, the deadline and the retries.
//!
//! Started by the caller's connection; hears from the registry (refused), from the worker
//! holding its [`JobLease`] (result, or worker lost), and from its caller (cancelled). It
//! answers its caller exactly once with a [`JobReply`], and stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tracing::debug;

use super::registry::{Dispatch, Registry, Withdraw};
use super::{CallError, FunctionName, JobId, JobOutcome, JobSpec};
use crate::codec::{Metadata, ParamsType};
use crate::metrics::{Metrics, Outcome};
use crate::telemetry::{self, Hop};

/// Sent to a job by the registry, its worker's lease, or its caller.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum JobEvent {
    /// The registry could not place the job.
    Refused {
        /// Why.
        error: CallError,
    },
    /// The worker answered: a result, or its function's failure.
    Completed {
        /// [`JobOutcome::Done`] or [`JobOutcome::WorkerFailed`].
        outcome: JobOutcome,
    },
    /// The worker holding the job is gone (its lease was dropped unanswered).
    WorkerLost,
    /// The caller is gone; stop without answering.
    Cancel,
}

/// The job's one answer to its caller.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobReply {
    /// The job answered.
    pub job_id: JobId,
    /// How the caller asked, so the reply is framed the way it can read.
    pub request: Request,
    /// The worker's result, or why there is none.
    pub outcome: JobOutcome,
}

/// A call as any front end (TCP frame, HTTP request) receives it, before it becomes a job.
#[derive(Debug)]
pub struct NewCall {
    /// The function name.
    pub function: Bytes,
    /// How `params` is encoded.
    pub params_type: ParamsType,
    /// `params_handle_type`, passed through.
    pub handle_type: u32,
    /// The call's parameters.
    pub params: Bytes,
    /// Metadata (trace context), if any.
    pub meta: Option<Arc<Metadata>>,
    /// Time the caller gives the call.
    pub timeout: Duration,
}

impl NewCall {
    /// Refuses what nmid refuses: an empty function name or empty params.
    pub fn validate(&self) -> Result<(), CallError> {
        if self.function.is_empty() || self.params.is_empty() {
            Err(CallError::BadRequest)
        } else {
            Ok(())
        }
    }

    /// The job's spec, its deadline counted from now.
    pub fn into_spec(self) -> JobSpec {
        JobSpec {
            function: FunctionName(self.function),
            params_type: self.params_type,
            handle_type: self.handle_type,
            params: self.params,
            meta: self.meta,
            deadline: Instant::now() + self.timeout,
        }
    }
}

/// Where a job's one answer goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// The caller's TCP connection actor, which frames the reply as `request` asked.
    Connection {
        /// The connection.
        recipient: Recipient<JobReply>,
        /// How the call was made.
        request: Request,
    },
    /// A waiting future in this process (an HTTP request); taken by the first answer.
    Once(Option<tokio::sync::oneshot::Sender<JobOutcome>>),
}

impl ReplyTo {
    /// A reply target for a future that awaits the returned receiver.
    pub fn once() -> (Self, tokio::sync::oneshot::Receiver<JobOutcome>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Self::Once(Some(tx)), rx)
    }

    fn send(&mut self, job_id: JobId, outcome: JobOutcome) {
        match self {
            ReplyTo::Connection { recipient, request } => recipient.do_send(JobReply {
                job_id,
                request: request.clone(),
                outcome,
            }),
            ReplyTo::Once(sender) => {
                if let Some(sender) = sender.take() {
                    // The waiter may be gone (HTTP client disconnected): nothing to tell.
                    let _ = sender.send(outcome);
                }
            }
        }
    }
}

/// How a call was made: it decides the reply frame.
#[derive(Debug, Clone)]
pub enum Request {
    /// `C_DO_JOB`: the reply is `S_RETURN_DATA` (function and params echoed) or a bare
    /// `CANT_DO`/`ERROR`/`RATELIMIT`.
    V1 {
        /// The function called.
        function: Bytes,
        /// The call's params.
        params: Bytes,
    },
    /// `C_CALL`: the reply is `S_CALL_RESULT` or `S_CALL_ERROR` with this request id.
    Tagged {
        /// The client's request id.
        request_id: u64,
    },
}

/// What every job needs from the dispatcher: where to dispatch, how often to retry, where
/// to count. Cheap to clone; held by each front end.
#[derive(Debug, Clone)]
pub struct JobServices {
    /// The function registry.
    pub registry: Addr<Registry>,
    /// Retries of a job whose worker is lost.
    pub retries: u32,
    /// Call metrics.
    pub metrics: Arc<Metrics>,
}

/// A call in flight.
pub struct Job {
    id: JobId,
    spec: JobSpec,
    reply_to: ReplyTo,
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    /// When the call arrived, for its duration.
    started: Instant,
    /// The dispatch span (disabled unless tracing is on).
    span: tracing::Span,
    deadline: Instant,
    retries_left: u32,
    /// Dispatch attempts so far; a retry that finds no worker is reported as `WorkerLost`.
    attempts: u32,
    answered: bool,
}

impl Job {
    /// A job for `spec` that answers `reply_to`, gives up at the spec's deadline, and may be
    /// retried `retries` times on another worker.
    pub fn new(id: JobId, mut spec: JobSpec, reply_to: ReplyTo, services: &JobServices) -> Self {
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
        Self {
            span,
            id,
            deadline: spec.deadline,
            spec,
            reply_to,
            registry: services.registry.clone(),
            metrics: services.metrics.clone(),
            started: Instant::now(),
            retries_left: services.retries,
            attempts: 0,
            answered: false,
        }
    }
}

impl Actor for Job {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let left = self.deadline.saturating_duration_since(Instant::now());
        ctx.run_later(left.max(Duration::from_millis(1)), |job, ctx| {
            debug!(job = %job.id, function = %job.spec.function, "job deadline passed");
            job.withdraw();
            job.answer(JobOutcome::Failed(CallError::Timeout), ctx);
        });
        self.dispatch(ctx);
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        // Safety net: a caller is never left hanging, even if a path above forgot to answer.
        if !self.answered {
            self.answered = true;
            let outcome = JobOutcome::Failed(CallError::WorkerLost);
            telemetry::finish(&self.span, Outcome::of(&outcome).as_str());
            self.metrics
                .record_job(&self.spec.function, &outcome, self.started.elapsed());
            self.reply_to
                .send(self.id, JobOutcome::Failed(CallError::WorkerLost));
        }
        Running::Stop
    }
}

impl Handler<JobEvent> for Job {
    type Result = ();

    fn handle(&mut self, event: JobEvent, ctx: &mut Self::Context) {
        if self.answered {
            return;
        }
        match event {
            JobEvent::Completed { outcome } => self.answer(outcome, ctx),
            JobEvent::Refused { error } => {
                // A retry that finds the function's workers all gone is still a lost worker.
                let error = if self.attempts > 1 && error == CallError::NoWorker {
                    CallError::WorkerLost
                } else {
                    error
                };
                self.answer(JobOutcome::Failed(error), ctx)
            }
            JobEvent::WorkerLost => {
                if self.retries_left > 0 && Instant::now() < self.deadline {
                    self.retries_left -= 1;
                    self.metrics.record_retry();
                    debug!(job = %self.id, function = %self.spec.function, "worker lost, retrying");
                    self.dispatch(ctx);
                } else {
                    self.answer(JobOutcome::Failed(CallError::WorkerLost), ctx);
                }
            }
            JobEvent::Cancel => {
                self.answered = true;
                self.withdraw();
                ctx.stop();
            }
        }
    }
}

impl Job {
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        self.attempts += 1;
        self.registry.do_send(Dispatch {
            job_id: self.id,
            spec: self.spec.clone(),
            job: ctx.address(),
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

    fn answer(&mut self, outcome: JobOutcome, ctx: &mut Context<Self>) {
        self.answered = true;
        telemetry::finish(&self.span, Outcome::of(&outcome).as_str());
        self.metrics
            .record_job(&self.spec.function, &outcome, self.started.elapsed());
        self.reply_to.send(self.id, outcome);
        ctx.stop();
    }
}

/// A job's place on a worker. The worker keeps it under the job id until the result comes
/// back; if it is dropped unanswered (the worker stopped, or the assignment never arrived)
/// it tells the job at once, so the job can retry or answer `WorkerLost`.
#[derive(Debug)]
pub struct JobLease {
    job: Option<Addr<Job>>,
}

impl JobLease {
    /// A lease that reports to `job`.
    pub fn new(job: Addr<Job>) -> Self {
        Self { job: Some(job) }
    }

    /// Hands the worker's answer ([`JobOutcome::Done`] or [`JobOutcome::WorkerFailed`]) to
    /// the job. Returns `false` when the job is already over (deadline passed, caller gone):
    /// the answer is late and is discarded.
    pub fn complete(mut self, outcome: JobOutcome) -> bool {
        match self.job.take() {
            Some(job) if job.connected() => {
                job.do_send(JobEvent::Completed { outcome });
                true
            }
            _ => false,
        }
    }
}

impl Drop for JobLease {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            job.do_send(JobEvent::WorkerLost);
        }
    }
}
