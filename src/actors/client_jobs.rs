//! The background-job requests of a tagged client connection (`docs/protocol.md`, "Background
//! jobs"): `C_SUBMIT` answered with `S_SUBMITTED`, `C_JOB_STATUS` and `C_JOB_CANCEL` with
//! `S_JOB_STATUS`, each of them or with `S_CALL_ERROR` carrying the request's id.
//!
//! A submission is vetted by the [`FrontDoor`](super::front_door::FrontDoor) exactly as a
//! `C_CALL` is (grant, size, rate limits), as the HTTP front end vets `POST /async/{func}`;
//! its options come out of its metadata (`nmid-priority`, ...) and the job's record is made
//! by [`SubmitOptions::record`], then sent to the [`Background`](super::background::Background)
//! actor. A job is seen only as [`Viewer`] allows (the rule HTTP applies too).
//!
//! Each request waiting for the jobs' actor counts as a call in flight: against the idle
//! check, and against the connection's outbound bound (it owes its params, or
//! [`JOB_REQUEST_OWED`] bytes), so a client that floods requests has its frames held back
//! as one that floods calls does. A status wait holds one entry in the jobs' actor, which
//! keeps at most `jobs.max_waiters` of them (beyond that a wait answers at once).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::background::{CancelJob, GetJob, Submit, SubmitError, Submitted, WaitForJob};
use super::client_session::ClientSession;
use super::connection::Session;
use super::front_door::{Caller, FrontEnd, Refused};
use super::JobsPort;
use crate::call::CallSpec;
use crate::call::ClientKey;
use crate::codec::{
    CJobCancel, CJobStatus, ErrorCode, Frame, JobStateCode, Metadata, SCallError, SJobStatus,
    SSubmitted, TaggedCall,
};
use crate::jobs::access::Viewer;
use crate::jobs::options::{SubmitOptions, OPTION_NAMES};
use crate::jobs::remote::{Ask, Owners, Unanswered};
use crate::jobs::{BackgroundId, JobRecord, JobState, NotCancelled};

/// What a waiting status or cancel request owes against the outbound bound: about the size
/// of its answer without a large result.
pub const JOB_REQUEST_OWED: usize = 1024;

/// The prefix of the submission options in `C_SUBMIT`'s metadata.
const OPTION_PREFIX: &str = "nmid-";

impl ClientSession {
    /// A `C_SUBMIT`, `C_JOB_STATUS` or `C_JOB_CANCEL`: answered once the jobs' actor has,
    /// or at once with why not.
    pub(super) fn job_request(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let Some(port) = self.conn.settings.jobs.clone() else {
            let id = request_id(&frame);
            let refusal = error(id, ErrorCode::BAD_REQUEST, "background jobs are off");
            return self.send(refusal, ctx);
        };
        let viewer = Viewer::of(self.conn.grant().map(|g| &**g), self.conn.peer.ip());
        let (owed, answer): (usize, BoxFuture<'static, Frame>) = match frame {
            Frame::CSubmit(call) => {
                let (id, owed) = (call.id, call.params.len() + JOB_REQUEST_OWED);
                match self.submission(call, &port) {
                    Ok(record) => (owed, Box::pin(submit(port, id, record))),
                    Err(refused) => return self.send(Frame::SCallError(refused), ctx),
                }
            }
            Frame::CJobStatus(ask) => {
                let answer = match self.elsewhere(&port, &ask.job_id) {
                    Some(asking) => asking.status(ask),
                    None => Box::pin(status(port, viewer, ask)),
                };
                (JOB_REQUEST_OWED, answer)
            }
            Frame::CJobCancel(ask) => {
                let answer = match self.elsewhere(&port, &ask.job_id) {
                    Some(asking) => asking.cancel(ask),
                    None => Box::pin(cancel(port, viewer, ask)),
                };
                (JOB_REQUEST_OWED, answer)
            }
            other => return self.conn.refuse(&other, ctx),
        };
        self.job_requests += 1;
        self.conn.owe(owed as isize);
        let answered = answer.into_actor(self).map(move |frame, session, ctx| {
            session.job_requests -= 1;
            session.conn.owe(-(owed as isize));
            session.send(frame, ctx);
        });
        ctx.spawn(answered);
    }

    /// How to ask the dispatcher that owns job `job_id`, when another of the cluster does and
    /// is live; `None` for a job of this dispatcher (or of none reachable: not found here).
    fn elsewhere(&self, port: &JobsPort, job_id: &[u8]) -> Option<AskOwner> {
        let job = BackgroundId::parse(std::str::from_utf8(job_id).ok()?)?;
        let owners = port.owners.get().filter(|_| job.node != port.node)?;
        Some(AskOwner {
            owners: owners.clone(),
            owner: owners.owner(&job.node)?,
            job,
            caller: (self.conn.grant()).map(|g| g.client_key(self.conn.peer.ip().to_canonical())),
        })
    }

    /// The record of a `C_SUBMIT`, its options read from its metadata and its call vetted
    /// as a `C_CALL` would be; or the `S_CALL_ERROR` saying why not.
    fn submission(&self, call: TaggedCall, port: &JobsPort) -> Result<JobRecord, SCallError> {
        let id = call.id;
        let (options, meta) = split_options(call.meta);
        let bad = |why: String| refusal(id, ErrorCode::BAD_REQUEST, &why);
        let pairs = (options.iter()).map(|(name, value)| (name.as_str(), &value[..]));
        let mut options = SubmitOptions::from_pairs(pairs).map_err(|e| bad(e.to_string()))?;
        if let Some(url) = &options.callback_url {
            // Checked as HTTP checks `X-Callback-Url`: against `jobs.callback_allow`.
            let checked =
                (port.callbacks.validate(url)).map_err(|e| bad(format!("callback-url: {e}")))?;
            options.callback_url = Some(checked.as_str().to_owned());
        }
        let attempt_timeout = match call.timeout_ms {
            0 => self.conn.settings.job_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let mut spec = CallSpec::new(
            call.function,
            call.params_type,
            call.handle_type,
            call.params,
            attempt_timeout,
        );
        spec.meta = (!meta.is_empty()).then(|| Arc::new(meta));
        let ip = self.conn.peer.ip();
        let caller = match self.conn.grant() {
            Some(grant) => Caller::Granted { grant, ip },
            None => Caller::Anyone { ip: Some(ip) },
        };
        let spec = match self.conn.settings.door.vet(spec, caller, FrontEnd::Tcp) {
            Ok(spec) => spec,
            Err(Refused::OverLimit(over)) => {
                return Err(refusal(id, ErrorCode::RATE_LIMITED, &over.to_string()))
            }
            Err(refused) => {
                let why = refused.error();
                return Err(refusal(id, why.code(), &why.to_string()));
            }
        };
        (options.record(&spec, attempt_timeout, &port.config))
            .map_err(|e| refusal(id, ErrorCode::BAD_REQUEST, &e.to_string()))
    }
}

/// Splits a submission's metadata into its options (name without `nmid-`, value) and the
/// metadata the job keeps.
fn split_options(meta: Metadata) -> (Vec<(String, Bytes)>, Metadata) {
    let mut options = Vec::new();
    let mut kept = Metadata::new();
    for (key, value) in meta {
        let name = String::from_utf8_lossy(&key).to_ascii_lowercase();
        match name.strip_prefix(OPTION_PREFIX) {
            Some(option) if OPTION_NAMES.contains(&option) => {
                options.push((option.to_owned(), value))
            }
            _ => kept.push((key, value)),
        }
    }
    (options, kept)
}

/// Sends the vetted `record` to the jobs' actor.
async fn submit(port: JobsPort, id: u64, record: JobRecord) -> Frame {
    match port.background.send(Submit { record }).await {
        Ok(Ok(Submitted {
            id: job, shared, ..
        })) => Frame::SSubmitted(SSubmitted {
            request_id: id,
            shared,
            job_id: Bytes::from(job.to_string()),
        }),
        Ok(Err(SubmitError::ShuttingDown)) | Err(_) => shutting_down(id),
        // A store that cannot write is answered as one that is full: try again later.
        Ok(Err(why @ (SubmitError::Full(_) | SubmitError::Store(_)))) => {
            error(id, ErrorCode::STORE_FULL, &why.to_string())
        }
    }
}

/// The job's state, once it ends or after `wait_ms` (at most `jobs.timeout_ms`).
async fn status(port: JobsPort, viewer: Viewer, ask: CJobStatus) -> Frame {
    let id = ask.request_id;
    let seq = match visible(&port, &viewer, id, &ask.job_id).await {
        Ok(record) if ask.wait_ms == 0 || record.state.is_final() => {
            return status_frame(id, &record)
        }
        Ok(record) => record.seq,
        Err(refused) => return refused,
    };
    let timeout = Duration::from_millis(u64::from(ask.wait_ms).min(port.config.timeout_ms));
    if port
        .background
        .send(WaitForJob { seq, timeout })
        .await
        .is_err()
    {
        return shutting_down(id);
    }
    match visible(&port, &viewer, id, &ask.job_id).await {
        Ok(record) => status_frame(id, &record),
        Err(refused) => refused,
    }
}

/// Cancels the job if it is queued; its state after.
async fn cancel(port: JobsPort, viewer: Viewer, ask: CJobCancel) -> Frame {
    let id = ask.request_id;
    let seq = match visible(&port, &viewer, id, &ask.job_id).await {
        Ok(record) => record.seq,
        Err(refused) => return refused,
    };
    match port.background.send(CancelJob { seq }).await {
        Ok(Ok(record)) => status_frame(id, &record),
        Ok(Err(NotCancelled::NotFound)) => not_found(id, &ask.job_id),
        Ok(Err(NotCancelled::Too(state))) => {
            let job = String::from_utf8_lossy(&ask.job_id);
            let why = format!(
                "job {job} is {}: only a queued job can be cancelled",
                state.as_str()
            );
            error(id, ErrorCode::NOT_CANCELLABLE, &why)
        }
        Err(_) => shutting_down(id),
    }
}

/// A status or cancel request for a job another dispatcher of the cluster owns: asked of
/// it for this connection's caller (`docs/jobs.md`, "In a cluster").
struct AskOwner {
    owners: Owners,
    owner: std::net::SocketAddr,
    job: BackgroundId,
    /// `None`: auth is off.
    caller: Option<ClientKey>,
}

impl AskOwner {
    fn status(self, ask: CJobStatus) -> BoxFuture<'static, Frame> {
        let how = match ask.wait_ms {
            0 => Ask::Status,
            ms => Ask::Wait(Duration::from_millis(u64::from(ms))),
        };
        Box::pin(self.ask(ask.request_id, how))
    }

    fn cancel(self, ask: CJobCancel) -> BoxFuture<'static, Frame> {
        Box::pin(self.ask(ask.request_id, Ask::Cancel))
    }

    async fn ask(self, id: u64, how: Ask) -> Frame {
        let job = self.job.to_string();
        let asked = (self.owners).ask(self.owner, &job, how, self.caller.as_ref());
        match asked.await {
            Ok(record) => status_frame(id, &record),
            Err(Unanswered::NotFound(why)) => error(id, ErrorCode::JOB_NOT_FOUND, &why),
            Err(Unanswered::NotCancellable(why)) => error(id, ErrorCode::NOT_CANCELLABLE, &why),
            Err(refused @ Unanswered::Refused { .. }) => {
                error(id, ErrorCode::FORBIDDEN, &refused.to_string())
            }
            Err(lost @ Unanswered::Unreachable { .. }) => {
                error(id, ErrorCode::TIMEOUT, &lost.to_string())
            }
        }
    }
}

/// Job `job_id` if this dispatcher owns it and `viewer` may see it; else the
/// `JOB_NOT_FOUND` answer to request `id`.
async fn visible(
    port: &JobsPort,
    viewer: &Viewer,
    id: u64,
    job_id: &[u8],
) -> Result<JobRecord, Frame> {
    let parsed = std::str::from_utf8(job_id)
        .ok()
        .and_then(BackgroundId::parse);
    let seq = match parsed {
        Some(job) if job.node == port.node => job.seq,
        Some(job) => {
            // Another dispatcher's job, and no live member of the cluster owns it (those
            // that do are asked before this).
            let why = format!(
                "no such job: {job} is another dispatcher's (node {}), and none of the cluster has that node now",
                job.node
            );
            return Err(error(id, ErrorCode::JOB_NOT_FOUND, &why));
        }
        None => return Err(not_found(id, job_id)),
    };
    match port.background.send(GetJob { seq }).await {
        Ok(Some(record)) if viewer.sees(&record) => Ok(record),
        Ok(_) => Err(not_found(id, job_id)),
        Err(_) => Err(shutting_down(id)),
    }
}

/// `S_JOB_STATUS` of `record`, answering request `id`.
pub(super) fn status_frame(id: u64, record: &JobRecord) -> Frame {
    let state = match record.state {
        JobState::Queued => JobStateCode::QUEUED,
        JobState::Running => JobStateCode::RUNNING,
        JobState::Succeeded => JobStateCode::SUCCEEDED,
        JobState::Failed => JobStateCode::FAILED,
        JobState::Cancelled => JobStateCode::CANCELLED,
    };
    let (numerator, denominator) = record.progress.unwrap_or((0, 0));
    let output = match record.state {
        JobState::Succeeded | JobState::Failed => {
            record.output.as_deref().map_or(&[][..], |o| &o[..])
        }
        _ => &[][..],
    };
    Frame::SJobStatus(SJobStatus {
        request_id: id,
        state,
        attempts: record.attempts,
        max_attempts: record.max_attempts,
        progress_numerator: numerator,
        progress_denominator: denominator,
        function: Bytes::copy_from_slice(&record.function),
        output: Bytes::copy_from_slice(output),
        error_code: Bytes::from(record.error_code.clone().unwrap_or_default()),
    })
}

/// The request id of a job request.
fn request_id(frame: &Frame) -> u64 {
    match frame {
        Frame::CSubmit(call) => call.id,
        Frame::CJobStatus(ask) => ask.request_id,
        Frame::CJobCancel(ask) => ask.request_id,
        _ => 0,
    }
}

fn not_found(id: u64, job_id: &[u8]) -> Frame {
    let why = format!("no such job: {}", String::from_utf8_lossy(job_id));
    error(id, ErrorCode::JOB_NOT_FOUND, &why)
}

fn shutting_down(id: u64) -> Frame {
    error(id, ErrorCode::SHUTTING_DOWN, "dispatcher is shutting down")
}

fn error(id: u64, code: ErrorCode, message: &str) -> Frame {
    Frame::SCallError(refusal(id, code, message))
}

fn refusal(id: u64, code: ErrorCode, message: &str) -> SCallError {
    SCallError {
        request_id: id,
        code,
        message: Bytes::copy_from_slice(message.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options come out of the metadata by their `nmid-` names, in any case; the rest stays.
    #[test]
    fn submission_options_are_taken_out_of_the_metadata() {
        let meta = vec![
            (
                Bytes::from_static(b"NMID-Priority"),
                Bytes::from_static(b"high"),
            ),
            (
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(b"00-x"),
            ),
            (
                Bytes::from_static(b"nmid-unique-key"),
                Bytes::from_static(b"k"),
            ),
            (
                Bytes::from_static(b"nmid-other"),
                Bytes::from_static(b"kept"),
            ),
        ];
        let (options, kept) = split_options(meta);
        let names: Vec<&str> = options.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["priority", "unique-key"]);
        let kept: Vec<&[u8]> = kept.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(kept, [&b"traceparent"[..], b"nmid-other"]);
    }
}
