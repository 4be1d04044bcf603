//! One attempt of a background job: the call it makes (through a [`JobActor`], as every
//! call), the progress its worker reports, and how its outcome counts for the job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tracing::warn;

use super::Background;
use crate::actors::job::{JobActor, PartialSink};
use crate::actors::registry::{Capacity, CapacityRoom};
use crate::call::{CallOutcome, CallSpec, ClientKey, DispatchError, FunctionName, JobId, Partial};
use crate::codec::ParamsType;
use crate::jobs::{AttemptEnd, JobRecord};

use super::AttemptDone;

/// A running job's worker reported progress: the latest is in `latest` (taken here).
#[derive(Message)]
#[rtype(result = "()")]
struct ProgressNoted {
    seq: u64,
    latest: Arc<Mutex<Option<(u64, u64)>>>,
}

impl Handler<ProgressNoted> for Background {
    type Result = ();

    fn handle(&mut self, noted: ProgressNoted, _: &mut Self::Context) {
        let taken = noted
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((numerator, denominator)) = taken {
            self.book.progress(noted.seq, numerator, denominator);
        }
    }
}

/// How often the slots of the functions with jobs are asked of the registry.
const SLOTS_EVERY: Duration = Duration::from_millis(20);

/// What the registry last said the workers could take, by function, less the jobs started
/// since. A slot freed by a job that ended is not counted here: a call waiting may take it;
/// the registry is asked again at once instead.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// By function.
    pub(super) known: HashMap<Bytes, CapacityRoom>,
    asking: bool,
    asked: Option<Instant>,
    /// Jobs started while a question was on its way: the registry answers before it sees
    /// them, so they come off its answer.
    started_since_asked: HashMap<Bytes, u32>,
}

impl Slots {
    /// `started` took a slot each.
    pub(super) fn taken(&mut self, started: &[JobRecord]) {
        for record in started {
            if let Some(CapacityRoom::Here(free)) = self.known.get_mut(&record.function[..]) {
                *free = free.saturating_sub(1);
            }
            if self.asking {
                let function = Bytes::copy_from_slice(&record.function);
                *self.started_since_asked.entry(function).or_default() += 1;
            }
        }
    }

    /// An attempt ended: ask the registry again at its next chance; one that found every
    /// worker of its function busy says there is no room until then.
    pub(super) fn freed(&mut self, busy: Option<&[u8]>) {
        self.asked = None;
        if let Some(CapacityRoom::Here(free)) = busy.and_then(|f| self.known.get_mut(f)) {
            *free = 0;
        }
    }

    /// The registry's answer for `functions`, less what started since the question.
    fn answered(&mut self, functions: Vec<Bytes>, answer: Vec<CapacityRoom>) {
        let since = std::mem::take(&mut self.started_since_asked);
        self.known = (functions.into_iter().zip(answer))
            .map(|(function, room)| match room {
                CapacityRoom::Here(free) => {
                    let started = since.get(&function).copied().unwrap_or(0);
                    (function, CapacityRoom::Here(free.saturating_sub(started)))
                }
                other => (function, other),
            })
            .collect();
        self.asking = false;
    }
}

impl Background {
    /// Asks the registry for the free slots of the functions with jobs (one question at a time,
    /// each [`SLOTS_EVERY`] at most, at once for a function not yet known); the jobs start
    /// again with the answer.
    pub(super) fn ask_slots(&mut self, ctx: &mut Context<Self>) {
        if self.slots.asking {
            return;
        }
        let due = (self.slots.asked).is_none_or(|at| at.elapsed() >= SLOTS_EVERY);
        let known = &self.slots.known;
        if !due && self.book.wanted().all(|(f, _)| known.contains_key(f)) {
            return;
        }
        let wanted: Vec<(Bytes, u32)> = (self.book.wanted()).map(|(f, n)| (f.clone(), n)).collect();
        if wanted.is_empty() {
            return;
        }
        self.slots.asking = true;
        self.slots.asked = Some(Instant::now());
        let asked = (wanted.iter())
            .map(|(f, n)| (FunctionName(f.clone()), *n))
            .collect();
        let question = self.services.registry.send(Capacity { wanted: asked });
        ctx.spawn(question.into_actor(self).map(move |answer, jobs, ctx| {
            let functions: Vec<Bytes> = wanted.into_iter().map(|(f, _)| f).collect();
            // No answer (the registry stopped): as if no worker served them here.
            let answer = answer.unwrap_or_else(|_| vec![CapacityRoom::Unknown; functions.len()]);
            jobs.slots.answered(functions, answer);
            jobs.pump(ctx);
        }));
    }

    /// Runs one attempt of `record` as a call, answered to this actor.
    pub(super) fn start_attempt(&mut self, record: &JobRecord, ctx: &mut Context<Self>) {
        let mut spec = CallSpec::new(
            Bytes::copy_from_slice(&record.function),
            ParamsType(record.params_type),
            record.handle_type,
            Bytes::copy_from_slice(&record.params),
            Duration::from_millis(record.attempt_timeout_ms.max(1)),
        );
        if !record.meta.is_empty() {
            let meta = (record.meta.iter())
                .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
                .collect();
            spec.meta = Some(Arc::new(meta));
        }
        spec.caller = (record.caller.as_deref()).and_then(|c| ClientKey::from_meta(c.as_bytes()));
        spec.priority = record.priority.into();
        // Only onto a worker with room: never to wait in the function's queue, as `running`.
        spec.may_wait = false;
        let me = ctx.address();
        let seq = record.seq;
        let reply = Box::new({
            let me = me.clone();
            move |outcome| me.do_send(AttemptDone { seq, outcome })
        });
        // Progress is kept in the job's status; partial data of a background job has no
        // caller to go to and is dropped (as gearman drops WORK_DATA of a background job).
        // At most one note is on its way at a time, carrying the latest progress, so a
        // worker reporting fast cannot fill this actor's mailbox.
        let latest = Arc::new(Mutex::new(None));
        let partials: PartialSink = Box::new(move |partial| {
            if let Partial::Progress {
                numerator,
                denominator,
            } = partial
            {
                let mut slot = latest.lock().unwrap_or_else(|e| e.into_inner());
                if slot.replace((numerator, denominator)).is_none() {
                    let latest = latest.clone();
                    me.do_send(ProgressNoted { seq, latest });
                }
            }
        });
        JobActor::start(JobId::next(), spec, reply, Some(partials), &self.services);
    }
}

/// How an attempt's outcome counts for its job: errors a retry may mend are retried; a
/// missing worker and a shutdown use no attempt; a refusal that would refuse again fails.
/// A result that is nmid's RetStruct with a `Code` other than 0 is the function's failure
/// (retried, unless the code is an HTTP client error: the input is wrong, and stays so).
pub(super) fn attempt_end(outcome: CallOutcome) -> AttemptEnd {
    let failed = |code: &'static str, message: String, retry: bool| AttemptEnd::Failed {
        code,
        message,
        retry,
    };
    match outcome {
        CallOutcome::Done(result) => match crate::retstruct::RetStruct::decode(&result) {
            Ok(ret) if ret.code != 0 => {
                let retry = !crate::retstruct::is_client_error(ret.code);
                let message = format!("function error {}: {}", ret.code, ret.msg);
                failed("function_error", message, retry)
            }
            _ => AttemptEnd::Succeeded(result),
        },
        CallOutcome::WorkerFailed(message) => failed(
            "worker_error",
            String::from_utf8_lossy(&message).into_owned(),
            true,
        ),
        CallOutcome::Failed(error) => {
            let code = crate::metrics::Outcome::of_error(error).as_str();
            match error {
                DispatchError::NoWorker | DispatchError::UnknownFunction => AttemptEnd::NoWorker,
                // Every worker busy (an attempt does not wait in the queue), or every peer
                // full: no attempt begun; the job waits for a free slot.
                DispatchError::RateLimited => AttemptEnd::Busy,
                DispatchError::ShuttingDown => AttemptEnd::Interrupted,
                DispatchError::Timeout
                | DispatchError::SlowCaller
                | DispatchError::WorkerLost
                | DispatchError::BreakerOpen => failed(code, error.to_string(), true),
                DispatchError::BadRequest | DispatchError::TooLarge | DispatchError::Forbidden => {
                    warn!(%error, "background job refused for good");
                    failed(code, error.to_string(), false)
                }
            }
        }
    }
}
