//! Background jobs: submit a call now, ask for its state and result later, by id
//! ([`Client::submit`], [`Client::job_status`], [`Client::wait_job`], [`Client::cancel_job`]).
//!
//! The dispatcher stores the job (durably, with its `jobs.data_dir`), runs it when it is due
//! and a worker is free, retries it with backoff, and keeps its result for its result TTL.
//! On the wire these are the tagged frames `C_SUBMIT`, `C_JOB_STATUS` and `C_JOB_CANCEL`
//! (the dispatcher's `docs/protocol.md`); a `Protocol::V1` client has no such frames and
//! gets [`ClientError::Unsupported`].

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nmid_proto::codec::{
    CJobCancel, CJobStatus, Frame, JobStateCode, Metadata, ParamsType, SJobStatus, TaggedCall,
    HANDLE_TYPE_ENCODE,
};

use super::connection::{unexpected, Answer, Tagged};
use super::{Client, ClientError, Transport};

/// How long one status request asks the dispatcher to wait for the job to end, at most
/// (the dispatcher caps it at its `jobs.timeout_ms` anyway).
const WAIT_ROUND: Duration = Duration::from_secs(10);
/// The first pause of [`Client::wait_job`] after a status answered early, doubling.
const MIN_PAUSE: Duration = Duration::from_millis(20);
/// Its longest pause.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Where a background job waits among the queued jobs of its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Before every normal and low job.
    High,
    /// The default.
    #[default]
    Normal,
    /// After every high and normal job.
    Low,
}

impl Priority {
    /// Its name on the wire (`nmid-priority`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Options of one background submission; every one unset takes the dispatcher's `[jobs]`
/// default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nmid_client::{Priority, SubmitOptions};
///
/// let options = SubmitOptions::default()
///     .priority(Priority::High)
///     .delay(Duration::from_secs(5))
///     .max_attempts(3)
///     .backoff(Duration::from_millis(500))
///     .unique_key("order-7");
/// assert_eq!(options.max_attempts, Some(3));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Where it waits; normal unless set.
    pub priority: Option<Priority>,
    /// Run it no sooner than this from now (not with `run_at`).
    pub delay: Option<Duration>,
    /// Run it no sooner than this time (not with `delay`).
    pub run_at: Option<SystemTime>,
    /// Attempts at most (a failed or lost attempt is retried while some are left).
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt, doubling for each later one.
    pub backoff: Option<Duration>,
    /// How long the dispatcher keeps the job's final state and result.
    pub result_ttl: Option<Duration>,
    /// Submissions of the same caller, function and key, while one is queued or running,
    /// share its one execution (and its id).
    pub unique_key: Option<Bytes>,
    /// Where the dispatcher POSTs the final state (when it has callbacks configured).
    pub callback_url: Option<String>,
    /// Each attempt's deadline; the dispatcher's `jobs.timeout_ms` unless set.
    pub timeout: Option<Duration>,
    /// How the params are encoded; msgpack unless set.
    pub params_type: Option<ParamsType>,
    /// Metadata the job carries to its worker, e.g. `traceparent`.
    pub metadata: Metadata,
}

impl SubmitOptions {
    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Runs the job no sooner than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Runs the job no sooner than `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the attempts at most.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets the wait before the second attempt (doubling after).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets how long the final state is kept.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl);
        self
    }

    /// Sets the unique key (see [`SubmitOptions::unique_key`]).
    pub fn unique_key(mut self, key: impl Into<Bytes>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Sets the callback URL.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Sets each attempt's deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the params encoding.
    pub fn params_type(mut self, params_type: ParamsType) -> Self {
        self.params_type = Some(params_type);
        self
    }

    /// Adds one metadata pair.
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        ));
        self
    }

    /// The metadata sent: the caller's, then each option set as `nmid-<name>`.
    fn wire_meta(&self) -> Metadata {
        let mut meta = self.metadata.clone();
        let mut put = |name: &'static str, value: Bytes| {
            meta.push((Bytes::from_static(name.as_bytes()), value));
        };
        let ms = |d: Duration| Bytes::from(d.as_millis().to_string());
        if let Some(priority) = self.priority {
            put(
                "nmid-priority",
                Bytes::from_static(priority.as_str().as_bytes()),
            );
        }
        if let Some(delay) = self.delay {
            put("nmid-delay-ms", ms(delay));
        }
        if let Some(at) = self.run_at {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            put("nmid-run-at", ms(since));
        }
        if let Some(n) = self.max_attempts {
            put("nmid-max-attempts", Bytes::from(n.to_string()));
        }
        if let Some(backoff) = self.backoff {
            put("nmid-backoff-ms", ms(backoff));
        }
        if let Some(ttl) = self.result_ttl {
            put("nmid-result-ttl-ms", ms(ttl));
        }
        if let Some(key) = &self.unique_key {
            put("nmid-unique-key", key.clone());
        }
        if let Some(url) = &self.callback_url {
            put("nmid-callback-url", Bytes::from(url.clone()));
        }
        meta
    }
}

/// An accepted submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The job's id, for [`Client::job_status`], [`Client::wait_job`], [`Client::cancel_job`]
    /// (and the HTTP API's `/api/v1/jobs/{id}`).
    pub id: String,
    /// The submission joined the queued or running job with the same unique key.
    pub shared: bool,
}

/// A background job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its time, a slot or a worker.
    Queued,
    /// An attempt is running.
    Running,
    /// Over: it has its result.
    Succeeded,
    /// Over: its last attempt failed.
    Failed,
    /// Over: cancelled while queued.
    Cancelled,
}

impl JobState {
    /// The job is over (succeeded, failed or cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Its name, as the HTTP API and `nmidctl` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A background job as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts at most.
    pub max_attempts: u32,
    /// The worker's last progress report (numerator, denominator), if any.
    pub progress: Option<(u64, u64)>,
    /// The job's function.
    pub function: String,
    /// Succeeded: the worker's result bytes (by nmid's convention a msgpack RetStruct).
    pub result: Option<Bytes>,
    /// Failed: the error message.
    pub error: Option<String>,
    /// Failed: why, as a short name (`worker_error`, `timeout`, ...).
    pub error_code: Option<String>,
}

impl TryFrom<SJobStatus> for JobStatus {
    type Error = ClientError;

    fn try_from(s: SJobStatus) -> Result<Self, ClientError> {
        let state = match s.state {
            JobStateCode::QUEUED => JobState::Queued,
            JobStateCode::RUNNING => JobState::Running,
            JobStateCode::SUCCEEDED => JobState::Succeeded,
            JobStateCode::FAILED => JobState::Failed,
            JobStateCode::CANCELLED => JobState::Cancelled,
            JobStateCode(other) => {
                return Err(ClientError::Protocol(format!("unknown job state {other}")))
            }
        };
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        let progress = (s.progress_denominator != 0 || s.progress_numerator != 0)
            .then_some((s.progress_numerator, s.progress_denominator));
        Ok(JobStatus {
            state,
            attempts: s.attempts,
            max_attempts: s.max_attempts,
            progress,
            function: text(&s.function),
            result: (state == JobState::Succeeded).then(|| s.output.clone()),
            error: (state == JobState::Failed).then(|| text(&s.output)),
            error_code: (!s.error_code.is_empty()).then(|| text(&s.error_code)),
        })
    }
}

impl Client {
    /// Submits `function` with `params` as a background job; returns its id once the
    /// dispatcher has stored it. The call is checked as a call would be (the token's grant,
    /// its size, rate limits); bad options are [`ClientError::BadRequest`] naming the
    /// option, a full store [`ClientError::StoreFull`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), nmid_client::ClientError> {
    /// use std::time::Duration;
    /// use nmid_client::{Client, JobState, Priority, SubmitOptions};
    ///
    /// let client = Client::connect("127.0.0.1:6808").await?;
    /// // {"name": "nmid"} as msgpack, run in the background at high priority.
    /// let options = SubmitOptions::default().priority(Priority::High);
    /// let job = client.submit("ToUpper", &b"\x81\xa4name\xa4nmid"[..], options).await?;
    /// println!("submitted {}", job.id);
    /// // Later, on this connection or another:
    /// let status = client.wait_job(&job.id, Duration::from_secs(30)).await?;
    /// if status.state == JobState::Succeeded {
    ///     println!("{} bytes of RetStruct", status.result.unwrap_or_default().len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit(
        &self,
        function: &str,
        params: impl Into<Bytes>,
        options: SubmitOptions,
    ) -> Result<Submitted, ClientError> {
        let params = params.into();
        if function.is_empty() || params.is_empty() {
            return Err(ClientError::BadRequest(
                "function name and params must not be empty".to_owned(),
            ));
        }
        let tagged = self.jobs_transport()?;
        let id = self.next_request_id();
        let frame = Frame::CSubmit(TaggedCall {
            id,
            timeout_ms: (options.timeout).map_or(0, |t| {
                u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
            params_type: options.params_type.unwrap_or(ParamsType::MSGPACK),
            handle_type: HANDLE_TYPE_ENCODE,
            function: Bytes::copy_from_slice(function.as_bytes()),
            params,
            meta: options.wire_meta(),
        });
        let timeout = self.inner.settings.timeout;
        match tagged.request(id, frame, timeout).await? {
            Answer::Submitted(s) => Ok(Submitted {
                id: String::from_utf8_lossy(&s.job_id).into_owned(),
                shared: s.shared,
            }),
            other => Err(unexpected(&other, "C_SUBMIT")),
        }
    }

    /// The state of job `id` now. An unknown job (or, with `[auth]` on, another token's) is
    /// [`ClientError::JobNotFound`].
    pub async fn job_status(&self, id: &str) -> Result<JobStatus, ClientError> {
        self.status_after(id, Duration::ZERO).await
    }

    /// Waits up to `timeout` for job `id` to end and returns its final state; still not
    /// over then: [`ClientError::Timeout`]. The dispatcher answers as soon as the job ends
    /// (each request waits there, up to its `jobs.timeout_ms`), so this does not poll.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: nmid_client::Client, id: String) -> Result<(), nmid_client::ClientError> {
    /// use std::time::Duration;
    /// use nmid_client::JobState;
    ///
    /// let status = client.wait_job(&id, Duration::from_secs(60)).await?;
    /// match status.state {
    ///     JobState::Succeeded => println!("result: {:?}", status.result),
    ///     JobState::Failed => println!("failed: {:?}", status.error),
    ///     other => println!("{}", other.as_str()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Result<JobStatus, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = MIN_PAUSE;
        loop {
            let asked = tokio::time::Instant::now();
            let left = deadline.saturating_duration_since(asked);
            let wait = left.min(WAIT_ROUND);
            let status = self.status_after(id, wait).await?;
            if status.state.is_final() {
                return Ok(status);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            // Answered well before the wait asked for and not over: the dispatcher could not
            // hold the wait (its `jobs.max_waiters` are taken, or its `jobs.timeout_ms` is
            // short). Pause before asking again, longer each time, rather than spin on it.
            if asked.elapsed() < wait / 2 {
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }

    /// Cancels job `id` if it is still queued and returns its state (cancelled); a running
    /// or finished job is [`ClientError::NotCancellable`].
    pub async fn cancel_job(&self, id: &str) -> Result<JobStatus, ClientError> {
        let tagged = self.jobs_transport()?;
        let request_id = self.next_request_id();
        let frame = Frame::CJobCancel(CJobCancel {
            request_id,
            job_id: Bytes::copy_from_slice(id.as_bytes()),
        });
        let timeout = self.inner.settings.timeout;
        match tagged.request(request_id, frame, timeout).await? {
            Answer::Status(status) => status.try_into(),
            other => Err(unexpected(&other, "C_JOB_CANCEL")),
        }
    }

    /// `C_JOB_STATUS` with `wait`.
    async fn status_after(&self, id: &str, wait: Duration) -> Result<JobStatus, ClientError> {
        let tagged = self.jobs_transport()?;
        let request_id = self.next_request_id();
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let frame = Frame::CJobStatus(CJobStatus {
            request_id,
            wait_ms,
            job_id: Bytes::copy_from_slice(id.as_bytes()),
        });
        let timeout = self.inner.settings.timeout + wait;
        match tagged.request(request_id, frame, timeout).await? {
            Answer::Status(status) => status.try_into(),
            other => Err(unexpected(&other, "C_JOB_STATUS")),
        }
    }

    /// The tagged transport, or why this client has no background jobs.
    fn jobs_transport(&self) -> Result<&Tagged, ClientError> {
        match &self.inner.transport {
            Transport::Tagged(tagged) => Ok(tagged),
            Transport::V1(_) => Err(ClientError::Unsupported(
                "background jobs need the tagged protocol: nmid protocol v1 has no frames for them (Protocol::V1)".to_owned(),
            )),
            #[cfg(feature = "discovery")]
            Transport::Discover(_) => Err(ClientError::Unsupported(
                "background jobs need a client of one dispatcher (Client::connect), not a discovering client".to_owned(),
            )),
        }
    }

    fn next_request_id(&self) -> u64 {
        self.inner.next_request.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option set travels as its `nmid-` metadata, after the caller's own.
    #[test]
    fn options_travel_as_nmid_metadata() {
        let options = SubmitOptions::default()
            .meta("traceparent", "00-x")
            .priority(Priority::Low)
            .delay(Duration::from_millis(1500))
            .max_attempts(4)
            .backoff(Duration::from_secs(2))
            .result_ttl(Duration::from_secs(60))
            .unique_key("k1")
            .callback_url("http://127.0.0.1:9/cb")
            .run_at(UNIX_EPOCH + Duration::from_millis(42));
        let meta: Vec<(String, String)> = (options.wire_meta().iter())
            .map(|(k, v)| {
                let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                (text(k), text(v))
            })
            .collect();
        let expected = [
            ("traceparent", "00-x"),
            ("nmid-priority", "low"),
            ("nmid-delay-ms", "1500"),
            ("nmid-run-at", "42"),
            ("nmid-max-attempts", "4"),
            ("nmid-backoff-ms", "2000"),
            ("nmid-result-ttl-ms", "60000"),
            ("nmid-unique-key", "k1"),
            ("nmid-callback-url", "http://127.0.0.1:9/cb"),
        ];
        let expected: Vec<(String, String)> = (expected.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(meta, expected);
    }
}
