//! Asking another dispatcher of the cluster about a job it owns, for a client of the nmid
//! protocol connected here (HTTP callers are passed on by `http::jobs` with their own
//! credentials).
//!
//! The owner is the live member whose record publishes the job id's node name; it is asked
//! over its HTTP API (`GET` or `DELETE /api/v1/jobs/{id}`) for the job's stored record
//! ([`RECORD_CONTENT_TYPE`]), so that the answer here is the `S_JOB_STATUS` the owner would
//! give. With auth on the request carries this dispatcher's peer token
//! (`auth.peer_secret_*`) and names the caller (`X-Nmid-Caller`, as a forwarded call does);
//! the owner decides what that caller may see. One hop: the owner never passes it on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::record::JobRecord;
use crate::call::ClientKey;
use crate::cluster::ClusterView;

/// The content type of a job's stored record (MessagePack by field name), which the HTTP
/// API answers instead of JSON when a request accepts it.
pub const RECORD_CONTENT_TYPE: &str = "application/x-nmid-job-record";

/// The header naming the caller a peer dispatcher asks for (a [`ClientKey::to_meta`] value).
pub const CALLER_HEADER: &str = "x-nmid-caller";

/// The header marking a request one dispatcher passes to a job's owner: never passed on.
pub const FORWARDED_HEADER: &str = "x-nmid-job-forwarded";

/// How to reach the owners of other dispatchers' jobs.
#[derive(Debug, Clone)]
pub struct Owners {
    view: ClusterView,
    http: reqwest::Client,
    /// This dispatcher's peer token (`auth.peer_secret_*`), when it has one.
    peer_secret: Option<Bytes>,
    /// The longest a request may wait (`jobs.timeout_ms`), plus the time to answer.
    max_wait: Duration,
}

/// What to ask of the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The job's record now.
    Status,
    /// The job's record once it ends, or after this long.
    Wait(Duration),
    /// Cancel it; its record after.
    Cancel,
}

/// Why the owner gave no record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// No job of that id that the caller may see (404).
    #[error("{0}")]
    NotFound(String),
    /// It cannot be cancelled in its state (409).
    #[error("{0}")]
    NotCancellable(String),
    /// The owner refused this dispatcher (401, 403: no or a wrong peer token).
    #[error("the dispatcher owning the job refused to answer for it ({status}): {message}")]
    Refused {
        /// Its HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// It did not answer, or not with a record.
    #[error("the dispatcher owning the job ({owner}) did not answer: {cause}")]
    Unreachable {
        /// Its HTTP address.
        owner: SocketAddr,
        /// Why.
        cause: String,
    },
}

impl Owners {
    /// Owners found in `view`, asked with `peer_secret` (when auth is on) and waits of at
    /// most `max_wait`.
    pub fn new(
        view: ClusterView,
        peer_secret: Option<Bytes>,
        max_wait: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        Ok(Self {
            view,
            http,
            peer_secret,
            max_wait,
        })
    }

    /// The HTTP address of the live dispatcher whose jobs have node name `node`.
    pub fn owner(&self, node: &str) -> Option<SocketAddr> {
        self.view.jobs_owner(node)
    }

    /// Asks the dispatcher at `owner` about job `id` for `caller` (`None`: auth is off).
    pub async fn ask(
        &self,
        owner: SocketAddr,
        id: &str,
        ask: Ask,
        caller: Option<&ClientKey>,
    ) -> Result<JobRecord, Unanswered> {
        let url = format!("http://{owner}/api/v1/jobs/{id}");
        let (mut request, wait) = match ask {
            Ask::Status => (self.http.get(url), Duration::ZERO),
            Ask::Wait(wait) => {
                let wait = wait.min(self.max_wait);
                let url = format!("{url}?wait_ms={}", wait.as_millis());
                (self.http.get(url), wait)
            }
            Ask::Cancel => (self.http.delete(url), Duration::ZERO),
        };
        request = (request.header("accept", RECORD_CONTENT_TYPE))
            .header(FORWARDED_HEADER, "1")
            .timeout(wait + Duration::from_secs(5));
        if let Some(secret) = &self.peer_secret {
            let mut bearer = b"Bearer ".to_vec();
            bearer.extend_from_slice(secret);
            request = request.header("authorization", bearer);
        }
        if let Some(meta) = caller.and_then(ClientKey::to_meta) {
            request = request.header(CALLER_HEADER, meta.to_vec());
        }
        let unreachable = |cause: String| Unanswered::Unreachable { owner, cause };
        let answer = (request.send().await).map_err(|e| unreachable(e.to_string()))?;
        let status = answer.status().as_u16();
        let record = (answer.headers().get("content-type"))
            .is_some_and(|v| v.as_bytes() == RECORD_CONTENT_TYPE.as_bytes());
        let body = (answer.bytes().await).map_err(|e| unreachable(e.to_string()))?;
        if status == 200 && record {
            return rmp_serde::from_slice(&body)
                .map_err(|e| unreachable(format!("an unreadable job record: {e}")));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(match status {
            404 => Unanswered::NotFound(message),
            409 => Unanswered::NotCancellable(message),
            401 | 403 => Unanswered::Refused { status, message },
            _ => unreachable(format!("{status}: {message}")),
        })
    }
}
