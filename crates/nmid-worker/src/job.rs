//! What a handler receives ([`Job`]) and what it may fail with ([`JobError`]).

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::dispatcher_link::{PartialError, PartialTo};
use nmid_client::{CallOptions, Client, ClientError};
use nmid_proto::codec::{Metadata, ParamsType};
use nmid_proto::trace::{self, TRACE_KEYS};

/// One job for a handler: the call's function, params, deadline and trace context.
#[derive(Debug)]
pub struct Job {
    pub(super) function: String,
    pub(super) id: String,
    pub(super) params: Bytes,
    pub(super) params_type: ParamsType,
    pub(super) deadline: Option<Instant>,
    pub(super) metadata: Metadata,
    pub(super) nested: Rc<NestedCalls>,
    /// This job's span (disabled unless tracing is on); nested calls are its children.
    pub(super) span: tracing::Span,
    /// Where its partials go: `None` for a v1 job (or one not yet running).
    pub(super) partials: Option<PartialTo>,
}

impl Job {
    /// The function called.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The dispatcher's job id, as text.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw params bytes.
    pub fn params(&self) -> &Bytes {
        &self.params
    }

    /// How the params are encoded (5 msgpack, 6 JSON).
    pub fn params_type(&self) -> ParamsType {
        self.params_type
    }

    /// Decodes the params into `T`: from JSON when the params type says JSON, else msgpack
    /// (a msgpack map decodes into a struct by field names, as nmid's SDKs send it).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        if self.params_type == ParamsType::JSON {
            serde_json::from_slice(&self.params)
                .map_err(|e| JobError::new(format!("bad JSON params: {e}")))
        } else {
            rmp_serde::from_slice(&self.params)
                .map_err(|e| JobError::new(format!("bad msgpack params: {e}")))
        }
    }

    /// When the caller stops waiting (tagged dispatchers say; v1 ones do not).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The value of one metadata key, e.g. `traceparent`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| &k[..] == key.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All metadata of the call.
    pub fn all_metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Options for a call made on this job's behalf: the time this job has left as its
    /// deadline, and this job's trace context (`traceparent`, `tracestate`).
    pub fn call_options(&self) -> CallOptions {
        let mut options = CallOptions::default();
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            options.timeout = Some(left.max(Duration::from_millis(1)));
        }
        let trace: Metadata = self
            .metadata
            .iter()
            .filter(|(k, _)| TRACE_KEYS.iter().any(|t| k[..] == *t.as_bytes()))
            .cloned()
            .collect();
        options.metadata = trace::with_span_context(&self.span, trace);
        options
    }

    /// Sends the caller a partial result (a token, a row) before the job's answer
    /// (`W_JOB_PARTIAL`). Partials reach the dispatcher in the order they are sent and all
    /// before the answer; a caller that asked for them (`Client::call_stream`, HTTP
    /// `Accept: text/event-stream`) receives them in that order, any other caller never sees
    /// them. It does not wait: the frame is queued on the job's connection, and written when
    /// the handler next awaits. While the connection cannot keep up, at most the builder's
    /// [`max_partial_bytes_queued`](crate::WorkerBuilder::max_partial_bytes_queued) wait:
    /// past it the partial is not queued and [`PartialError::Backlog`] says so; a handler
    /// that streams much should use [`Job::send_partial_paced`], which waits for room.
    ///
    /// On a v1 connection ([`Protocol::V1`](nmid_client::Protocol::V1)) it does nothing and
    /// returns `Ok`: v1 has no frame for it, so v1 callers get only the final result. A
    /// partial whose frame would be over the worker's `max_frame_bytes` is not sent:
    /// [`PartialError::TooLarge`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use nmid_worker::{Job, JobError};
    ///
    /// async fn count(job: Job) -> Result<Vec<u8>, JobError> {
    ///     for i in 0..10u64 {
    ///         job.progress(i, 10);
    ///         job.send_partial(format!("row {i}\n"))?;
    ///     }
    ///     Ok(b"done".to_vec())
    /// }
    /// ```
    pub fn send_partial(&self, data: impl Into<Bytes>) -> Result<(), PartialError> {
        match &self.partials {
            Some(to) => to.data(data.into()),
            None => Ok(()),
        }
    }

    /// [`Job::send_partial`], waiting while the connection's partials backlog is full
    /// ([`PartialError::Backlog`]) instead of refusing: a handler streaming faster than the
    /// dispatcher (or the caller behind it) reads is slowed to its pace, and its memory stays
    /// bounded. Errors only as [`Job::send_partial`] does otherwise.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use nmid_worker::{Job, JobError};
    ///
    /// async fn rows(job: Job) -> Result<Vec<u8>, JobError> {
    ///     for i in 0..1_000_000u64 {
    ///         job.send_partial_paced(format!("row {i}\n")).await?;
    ///     }
    ///     Ok(b"done".to_vec())
    /// }
    /// ```
    pub async fn send_partial_paced(&self, data: impl Into<Bytes>) -> Result<(), PartialError> {
        let Some(to) = &self.partials else {
            return Ok(());
        };
        let data = data.into();
        loop {
            match to.data(data.clone()) {
                Err(PartialError::Backlog { .. }) => to.room().await,
                sent => return sent,
            }
        }
    }

    /// Tells the caller how far the job has come: `numerator` of `denominator`, in the
    /// handler's own units (`W_JOB_PROGRESS`, gearman's `WORK_STATUS`). Ordered with
    /// [`Job::send_partial`]; a no-op on a v1 connection.
    pub fn progress(&self, numerator: u64, denominator: u64) {
        if let Some(to) = &self.partials {
            to.progress(numerator, denominator);
        }
    }

    /// Calls another function through the dispatcher this job came from, carrying this
    /// job's deadline and trace context (nmid's `ClientCall`). Params are msgpack.
    pub async fn call(
        &self,
        function: &str,
        params: impl Into<Bytes>,
    ) -> Result<Bytes, ClientError> {
        let client = self.nested.client().await?;
        client
            .call_with(function, params, self.call_options())
            .await
    }

    /// The client [`Job::call`] uses: connected to this job's dispatcher, shared by the
    /// worker's jobs.
    pub async fn client(&self) -> Result<Client, ClientError> {
        self.nested.client().await
    }
}

/// The client of nested calls, connected on first use and shared by a link's jobs.
#[derive(Debug)]
pub(super) struct NestedCalls {
    addr: String,
    /// The worker's TLS and token: nested calls are made as the worker.
    access: nmid_proto::net::Access,
    client: tokio::sync::OnceCell<Client>,
}

impl NestedCalls {
    pub(super) fn new(addr: String, access: nmid_proto::net::Access) -> Self {
        Self {
            addr,
            access,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<Client, ClientError> {
        let connect = || {
            Client::builder(self.addr.clone())
                .access(self.access.clone())
                .connect()
        };
        self.client.get_or_try_init(connect).await.cloned()
    }
}

/// A handler's failure: a message for the caller. Any error converts into it with `?`.
pub struct JobError {
    message: String,
}

impl JobError {
    /// A failure with `message`.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The message the caller receives.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JobError").field(&self.message).finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Like `anyhow`, `JobError` is not itself an `Error`, so that every error converts into it.
impl<E: std::error::Error> From<E> for JobError {
    fn from(err: E) -> Self {
        Self::new(err)
    }
}
