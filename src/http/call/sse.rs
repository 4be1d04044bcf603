//! `POST /call/{func}` with `Accept: text/event-stream`: the call's progress and partial
//! results as server-sent events while it runs, then its result or error, then the response
//! ends. Admitted through the same front door as every call; a refusal before the job starts
//! is the usual status and JSON body.
//!
//! ```text
//! event: progress         data: {"numerator":3,"denominator":10}
//! event: partial          data: the partial's bytes (UTF-8 without CR; each line a data: line)
//! event: partial-base64   data: any other partial, base64 (standard alphabet, padded)
//! event: result           data: the result as the plain call's body would be (same rule;
//!                               result-base64 for bytes)
//! event: error            data: {"code":"timeout","error":"call timed out"}
//! ```
//!
//! Memory is bounded per call: events waiting for the HTTP connection to take them (the
//! caller reads too slowly) may hold `jobs.max_partial_bytes_buffered`; past it the call
//! fails `slow_caller`, and that error is the stream's last event.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use actix::Addr;
use actix_web::http::header;
use actix_web::HttpResponse;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::Stream;
use tokio::sync::mpsc;

use super::{answer_of, CallerOf, HttpError};
use crate::actors::front_door::{FrontEnd, Refused};
use crate::actors::job::{JobActor, PartialSink, Reply};
use crate::call::{CallOutcome, CallSpec, DispatchError, JobId, Partial};
use crate::http::HttpState;
use crate::metrics::Limit;

/// Whether a request asks for server-sent events (`Accept: text/event-stream`).
pub fn wants_events(headers: &header::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).any(|value| {
        (value.as_bytes().split(|b| *b == b','))
            .any(|item| item.trim_ascii().starts_with(b"text/event-stream"))
    })
}

/// What the job sends the response.
enum Event {
    Partial(Partial),
    Done(CallOutcome),
}

/// The bytes of events queued for the response and not yet taken by it.
#[derive(Default)]
struct Backlog {
    bytes: AtomicUsize,
}

/// Starts `call` as a job whose partials and answer stream out as events; or the error
/// response of a refusal.
pub(super) fn stream_call(
    state: &HttpState,
    job_id: JobId,
    call: CallSpec,
    caller: CallerOf,
) -> Result<HttpResponse, HttpError> {
    let function = call.function.to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let job_cell: Arc<OnceLock<Addr<JobActor>>> = Arc::new(OnceLock::new());
    let max = state.door.jobs().max_partial_bytes_buffered;
    let metrics = state.metrics().clone();
    let partials: PartialSink = {
        let (tx, backlog, job_cell) = (tx.clone(), backlog.clone(), job_cell.clone());
        let mut failed = false;
        Box::new(move |partial: Partial| {
            if failed {
                return;
            }
            let len = partial_len(&partial);
            let waiting = backlog.bytes.load(Ordering::Acquire);
            if waiting > 0 && waiting + len > max {
                failed = true;
                metrics.record_limit(Limit::PartialBacklog);
                if let Some(job) = job_cell.get() {
                    JobActor::fail(job, DispatchError::SlowCaller);
                }
                return;
            }
            backlog.bytes.fetch_add(len, Ordering::AcqRel);
            let _ = tx.send(Event::Partial(partial));
        })
    };
    // The response may be gone (the caller disconnected): nothing to tell then.
    let reply: Reply = Box::new(move |outcome| drop(tx.send(Event::Done(outcome))));
    let admitted = (state.door).admit(
        job_id,
        call,
        caller.caller(),
        FrontEnd::Http,
        reply,
        Some(partials),
    );
    let job = match admitted {
        Ok(job) => job,
        Err(Refused::Forbidden { who }) => {
            return Err(HttpError::Forbidden(format!(
                "{who} may not call {function}"
            )))
        }
        Err(Refused::OverLimit(refusal)) => return Err(HttpError::OverRateLimit { refusal }),
        Err(Refused::Invalid(error)) => return Err(HttpError::from_call(error, &function)),
    };
    let _ = job_cell.set(job.clone());
    let events = Events {
        rx,
        backlog,
        function,
        job: Some(job),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events))
}

/// The bytes a partial takes in the backlog: about its event's.
fn partial_len(partial: &Partial) -> usize {
    match partial {
        Partial::Data(data) => data.len() + 32,
        Partial::Progress { .. } => 64,
    }
}

/// The response body: one chunk per event; ends after the answer. Dropped before (the
/// caller went away), it cancels the job.
struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    backlog: Arc<Backlog>,
    function: String,
    /// Cancelled when dropped before the answer.
    job: Option<Addr<JobActor>>,
}

impl Stream for Events {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.job.is_none() {
            return Poll::Ready(None);
        }
        let event = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(event)) => event,
            Poll::Ready(None) => Event::Done(CallOutcome::Failed(DispatchError::WorkerLost)),
        };
        let chunk = match event {
            Event::Partial(partial) => {
                let len = partial_len(&partial);
                self.backlog.bytes.fetch_sub(len, Ordering::AcqRel);
                partial_event(partial)
            }
            Event::Done(outcome) => {
                self.job = None;
                final_event(answer_of(outcome, &self.function))
            }
        };
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            JobActor::cancel(&job);
        }
    }
}

fn partial_event(partial: Partial) -> Bytes {
    match partial {
        Partial::Progress {
            numerator,
            denominator,
        } => {
            let data = format!(r#"{{"numerator":{numerator},"denominator":{denominator}}}"#);
            event("progress", data.as_bytes())
        }
        Partial::Data(data) => bytes_event("partial", &data),
    }
}

fn final_event(answer: Result<super::CallData, HttpError>) -> Bytes {
    match answer {
        Ok(data) => bytes_event("result", &data.bytes),
        Err(err) => {
            let body = serde_json::json!({ "code": err.code(), "error": err.to_string() });
            event("error", body.to_string().as_bytes())
        }
    }
}

/// An event carrying `data`: as text when it is UTF-8 without a CR (which no `data:` line
/// can carry), else as `{name}-base64`.
fn bytes_event(name: &str, data: &[u8]) -> Bytes {
    match std::str::from_utf8(data) {
        Ok(text) if !text.contains('\r') => event(name, data),
        _ => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(data);
            event(&format!("{name}-base64"), encoded.as_bytes())
        }
    }
}

/// `event: {name}`, a `data:` line per line of `data` (LF-separated, no CR), a blank line.
fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(name.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_u8(b'\n');
    for line in data.split(|b| *b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line);
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line of a partial is a `data:` line (a trailing newline too), so a client
    /// joining them with LF gets the bytes back; CR or non-UTF-8 goes as base64.
    #[test]
    fn partials_become_events_by_the_sse_rules() {
        let text = partial_event(Partial::Data(Bytes::from_static(b"one\ntwo\n")));
        assert_eq!(
            &text[..],
            b"event: partial\ndata: one\ndata: two\ndata: \n\n"
        );
        let binary = partial_event(Partial::Data(Bytes::from_static(b"\xff\x00")));
        assert_eq!(&binary[..], b"event: partial-base64\ndata: /wA=\n\n");
        let cr = partial_event(Partial::Data(Bytes::from_static(b"a\r\n")));
        assert_eq!(&cr[..], b"event: partial-base64\ndata: YQ0K\n\n");
        let progress = partial_event(Partial::Progress {
            numerator: 3,
            denominator: 10,
        });
        assert_eq!(
            &progress[..],
            b"event: progress\ndata: {\"numerator\":3,\"denominator\":10}\n\n"
        );
    }

    /// Only an `Accept` naming `text/event-stream` asks for events.
    #[test]
    fn events_are_asked_for_by_the_accept_header() {
        let mut headers = header::HeaderMap::new();
        assert!(!wants_events(&headers));
        let accept = header::HeaderValue::from_static("application/json, text/event-stream");
        headers.insert(header::ACCEPT, accept);
        assert!(wants_events(&headers));
        headers.insert(header::ACCEPT, header::HeaderValue::from_static("*/*"));
        assert!(!wants_events(&headers));
    }
}
