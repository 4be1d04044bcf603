//! Callbacks: a background job's final state POSTed to the URL its submitter gave
//! (`X-Callback-Url`, as OpenFaaS does), signed, retried with backoff, to allowed places only.
//!
//! At submit, [`Callbacks::validate`] checks the URL against `jobs.callback_allow` (deny by
//! default: an empty list refuses every URL; `allow` says how URLs are compared). When the
//! job ends, [`Callbacks::deliver`] sends one request per attempt:
//!
//! ```text
//! POST <callback url>                 (never a redirect followed, never a proxy)
//! Content-Type: application/octet-stream
//! X-Call-Id: <job id>                 the same on every attempt: receivers dedupe on it
//! X-Nmid-Function: <function>         bytes outside visible ASCII, and '%', percent-encoded
//! X-Nmid-Job-State: succeeded | failed | cancelled
//! X-Nmid-Attempts: <the job's execution attempts>
//! X-Nmid-Submitter: token:<name> | ip:<addr> | (empty)    who submitted the job
//! X-Nmid-Callback-Attempt: <this request's number, from 1>
//! X-Nmid-Timestamp: <unix seconds when this attempt was signed>
//! X-Nmid-Signature: sha256=<hex HMAC-SHA256(jobs.callback_secret, signed string)>
//! X-Function-Name, X-Function-Status  OpenFaaS's names (unsigned): the function; 200, 500, 410
//!
//! <the result's bytes as they are; for a failed job its error message>
//! ```
//!
//! The signed string is in `sign`. A 2xx answer is delivered. A 408, 429, 5xx, timeout or
//! connection error is retried after `callback_backoff_ms`, doubling up to
//! `callback_backoff_max_ms`, until `callback_max_attempts`. Any other status is given up at
//! once: a 4xx is the receiver refusing this callback (sending it again will not change
//! that), a 3xx asks for a redirect, which is never followed (it could point anywhere).
//! At most `max_callbacks_in_flight` requests are in flight at once, and at most
//! `max_callbacks_in_flight_per_receiver` to one receiver (one allow-list entry, the first
//! the URL falls under). An attempt takes its receiver's slot, then a global one, waiting
//! for each; so a slow receiver holds at most its own share of the global slots, and a
//! callback waiting out its backoff holds none.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};
use tracing::{debug, warn};

use crate::config::JobsConfig;
use crate::metrics::{CallbackEvent, Metrics};

pub mod allow;
pub mod sign;

use allow::{AllowedPrefix, UrlRefusal};

/// The job id, the same on every attempt.
pub const CALL_ID_HEADER: &str = "x-call-id";
/// The function the job called.
pub const FUNCTION_HEADER: &str = "x-nmid-function";
/// The function, as OpenFaaS's queue worker names it (the same value, unsigned).
pub const OPENFAAS_FUNCTION_HEADER: &str = "x-function-name";
/// The outcome as an HTTP status, as OpenFaaS's queue worker sends it (unsigned):
/// [`openfaas_status`].
pub const OPENFAAS_STATUS_HEADER: &str = "x-function-status";

/// `X-Function-Status` of a job in `state`: 200 succeeded, 500 failed, 410 cancelled (it
/// never ran).
pub fn openfaas_status(state: &str) -> u16 {
    match state {
        "succeeded" => 200,
        "cancelled" => 410,
        _ => 500,
    }
}
/// `succeeded`, `failed` or `cancelled`.
pub const STATE_HEADER: &str = "x-nmid-job-state";
/// The job's execution attempts.
pub const ATTEMPTS_HEADER: &str = "x-nmid-attempts";
/// This callback request's number, from 1.
pub const CALLBACK_ATTEMPT_HEADER: &str = "x-nmid-callback-attempt";
/// Who submitted the job (`token:<name>`, `ip:<addr>`), empty when unknown.
pub const SUBMITTER_HEADER: &str = "x-nmid-submitter";
/// Unix seconds when the request was signed.
pub const TIMESTAMP_HEADER: &str = "x-nmid-timestamp";
/// `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-nmid-signature";

/// Why callbacks could not be set up, or a callback URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The URL is refused at submit (an HTTP caller gets 400 with this message).
    #[error("callback URL refused: {0}")]
    Refused(#[from] UrlRefusal),
    /// A callback key of `[jobs]` is wrong (`Config::validate` catches these first).
    #[error("config key `{key}`: {reason}")]
    Config {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("callback HTTP client: {0}")]
    Client(String),
}

/// A callback URL that passed [`Callbacks::validate`]: an http URL under the allow list.
/// Keep it as the string [`CallbackUrl::as_str`] and validate it again when it is read back
/// (the allow list may have changed since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(Url);

impl CallbackUrl {
    /// The URL, as parsed (normalised).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL without its query, for logs (a query may hold the receiver's own token).
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.query().is_some() {
            url.set_query(Some("..."));
        }
        url.to_string()
    }
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// One job's final state, to be delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The job id (`X-Call-Id`).
    pub job_id: String,
    /// The function it called.
    pub function: String,
    /// `"succeeded"`, `"failed"` or `"cancelled"`.
    pub state: &'static str,
    /// Times the job was run.
    pub attempts: u32,
    /// The result, for a succeeded job.
    pub result: Option<Bytes>,
    /// The error message, for a failed (or cancelled) job.
    pub error: Option<String>,
    /// Who submitted the job, as its record's `caller` holds it: `token:<name>` with
    /// `[auth]` on, `ip:<addr>` otherwise; `None` when unknown. Sent as `X-Nmid-Submitter`
    /// (empty for `None`) and signed, so a receiver under a prefix several tenants share
    /// can refuse another tenant's jobs.
    pub submitter: Option<String>,
}

impl Delivery {
    /// The request body: a failed job's error message, else the result, else the error,
    /// else nothing.
    fn body(&self) -> Bytes {
        let error = || self.error.clone().map(Bytes::from);
        let body = match self.state {
            "failed" => error().or_else(|| self.result.clone()),
            _ => self.result.clone().or_else(error),
        };
        body.unwrap_or_default()
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Requests sent, this one included.
        attempts: u32,
        /// The receiver's status.
        status: u16,
    },
    /// No more attempts: the last failed, or the receiver refused the callback.
    GaveUp {
        /// Requests sent.
        attempts: u32,
        /// Why the last one failed.
        last_error: String,
    },
}

/// The waits between attempts: `base` before the first retry, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (from 1).
    fn after(self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Why one attempt failed, and whether another may follow.
struct Failure {
    message: String,
    retry: bool,
}

struct Inner {
    allow: Vec<AllowedPrefix>,
    secret: Vec<u8>,
    client: reqwest::Client,
    timeout: Duration,
    max_attempts: u32,
    backoff: Backoff,
    /// The bound over all receivers.
    slots: Semaphore,
    /// The bound per receiver: one semaphore per entry of `allow`, in its order.
    receiver_slots: Vec<Semaphore>,
}

/// The callback sender: the allow list, the secret, one HTTP client and the bound on
/// requests in flight. Cheap to clone (one `Arc`); every clone shares the bound.
///
/// # Examples
///
/// ```
/// use nmid::config::Config;
/// use nmid::jobs::callback::{CallbackOutcome, CallbackUrl, Callbacks, Delivery};
///
/// let mut jobs = Config::default().jobs;
/// jobs.callback_allow = vec!["http://127.0.0.1:9000/hooks/".into()];
/// jobs.callback_secret = "a-secret-of-16-bytes-or-more".into();
/// let callbacks = Callbacks::from_config(&jobs).unwrap();
///
/// // At submit: a URL the allow list does not cover is refused (400 to an HTTP caller).
/// assert!(callbacks.validate("http://127.0.0.1:9000/admin").is_err());
/// assert!(callbacks.validate("http://127.0.0.1:9000@evil.example/hooks/").is_err());
/// let url = callbacks.validate("http://127.0.0.1:9000/hooks/orders").unwrap();
///
/// // When the job ends (in a task of its own: retries can take minutes).
/// async fn on_end(callbacks: Callbacks, url: CallbackUrl) {
///     let delivery = Delivery {
///         job_id: "job-1".into(),
///         function: "ToUpper".into(),
///         state: "succeeded",
///         attempts: 1,
///         result: Some("HELLO".into()),
///         error: None,
///         submitter: Some("token:shop".into()),
///     };
///     match callbacks.deliver(&url, delivery).await {
///         CallbackOutcome::Delivered { attempts, status } => {
///             println!("delivered ({status}) after {attempts} attempts")
///         }
///         CallbackOutcome::GaveUp { last_error, .. } => println!("given up: {last_error}"),
///     }
/// }
/// # drop(on_end(callbacks, url));
/// ```
#[derive(Clone)]
pub struct Callbacks {
    inner: Arc<Inner>,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Callbacks")
            .field("allow", &inner.allow)
            .field("secret", &"<secret>")
            .field("timeout", &inner.timeout)
            .field("max_attempts", &inner.max_attempts)
            .field("backoff", &inner.backoff)
            .field("free_slots", &inner.slots.available_permits())
            .finish()
    }
}

impl Callbacks {
    /// The sender `[jobs]` describes.
    pub fn from_config(config: &JobsConfig) -> Result<Self, CallbackError> {
        let allow = (config.callback_allow.iter())
            .map(|entry| {
                AllowedPrefix::parse(entry).map_err(|why| CallbackError::Config {
                    key: "jobs.callback_allow",
                    reason: format!("{entry:?}: {why}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let zero = |key: &'static str| CallbackError::Config {
            key,
            reason: "must be at least 1".into(),
        };
        if config.max_callbacks_in_flight == 0 {
            return Err(zero("jobs.max_callbacks_in_flight"));
        }
        if config.max_callbacks_in_flight_per_receiver == 0 {
            return Err(zero("jobs.max_callbacks_in_flight_per_receiver"));
        }
        if config.max_callbacks_in_flight_per_receiver > config.max_callbacks_in_flight {
            return Err(CallbackError::Config {
                key: "jobs.max_callbacks_in_flight_per_receiver",
                reason: "must be at most jobs.max_callbacks_in_flight".into(),
            });
        }
        if config.callback_max_attempts == 0 {
            return Err(zero("jobs.callback_max_attempts"));
        }
        let timeout = Duration::from_millis(config.callback_timeout_ms.max(1));
        let client = reqwest::Client::builder()
            // A redirect could point anywhere: the allow list is checked once, here.
            .redirect(reqwest::redirect::Policy::none())
            // The allow list names where requests go: never through a proxy that the
            // environment may name.
            .no_proxy()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| CallbackError::Client(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                secret: config.callback_secret.expose().as_bytes().to_vec(),
                client,
                timeout,
                max_attempts: config.callback_max_attempts,
                backoff: Backoff {
                    base: Duration::from_millis(config.callback_backoff_ms),
                    max: Duration::from_millis(config.callback_backoff_max_ms),
                },
                slots: Semaphore::new(config.max_callbacks_in_flight),
                receiver_slots: (allow.iter())
                    .map(|_| Semaphore::new(config.max_callbacks_in_flight_per_receiver))
                    .collect(),
                allow,
            }),
            metrics: None,
        })
    }

    /// Counts refusals and deliveries in `metrics` (`nmid_job_callbacks_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checked at submit: Ok(url) or a clear error (400 to HTTP callers).
    pub fn validate(&self, url: &str) -> Result<CallbackUrl, CallbackError> {
        match allow::check(url, &self.inner.allow) {
            Ok(url) => Ok(CallbackUrl(url)),
            Err(why) => {
                self.count(CallbackEvent::Refused);
                Err(CallbackError::Refused(why))
            }
        }
    }

    /// Delivers one job's final state with retries and backoff; resolves when delivered or
    /// given up. Never panics; each attempt waits for a slot of its receiver
    /// (max_callbacks_in_flight_per_receiver), then for one of max_callbacks_in_flight.
    pub async fn deliver(&self, url: &CallbackUrl, delivery: Delivery) -> CallbackOutcome {
        let body = delivery.body();
        let inner = &self.inner;
        // `url` passed `validate`, so an entry covers it (unless it was made by another
        // `Callbacks`: then the global bound alone holds).
        let receiver = (inner.allow.iter())
            .position(|prefix| prefix.covers(&url.0))
            .and_then(|i| inner.receiver_slots.get(i));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.slots(receiver).await {
                Ok(_slots) => self.attempt(url, &delivery, &body, attempt).await,
                // The semaphores are never closed; were one, no request could be sent.
                Err(_) => Err(Failure {
                    message: "callbacks are shut down".into(),
                    retry: false,
                }),
            };
            let failure = match result {
                Ok(status) => {
                    debug!(job = %delivery.job_id, attempt, status, "callback delivered");
                    self.count(CallbackEvent::Delivered);
                    return CallbackOutcome::Delivered {
                        attempts: attempt,
                        status,
                    };
                }
                Err(failure) => failure,
            };
            if !failure.retry || attempt >= inner.max_attempts {
                warn!(
                    job = %delivery.job_id,
                    url = %url.redacted(),
                    attempts = attempt,
                    cause = %failure.message,
                    "callback given up"
                );
                self.count(CallbackEvent::GaveUp);
                return CallbackOutcome::GaveUp {
                    attempts: attempt,
                    last_error: failure.message,
                };
            }
            let wait = inner.backoff.after(attempt);
            debug!(
                job = %delivery.job_id,
                attempt,
                cause = %failure.message,
                wait_ms = wait.as_millis() as u64,
                "callback failed; will retry"
            );
            self.count(CallbackEvent::Retried);
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for a slot of `receiver` (when known), then for a global one: held together
    /// while one request is in flight.
    async fn slots<'a>(
        &'a self,
        receiver: Option<&'a Semaphore>,
    ) -> Result<(Option<SemaphorePermit<'a>>, SemaphorePermit<'a>), AcquireError> {
        let own = match receiver {
            Some(slots) => Some(slots.acquire().await?),
            None => None,
        };
        let global = self.inner.slots.acquire().await?;
        Ok((own, global))
    }

    /// Sends one request: the receiver's 2xx status, or why not.
    async fn attempt(
        &self,
        url: &CallbackUrl,
        delivery: &Delivery,
        body: &Bytes,
        attempt: u32,
    ) -> Result<u16, Failure> {
        let inner = &self.inner;
        let timestamp = (SystemTime::now().duration_since(UNIX_EPOCH))
            .map_or(0, |d| d.as_secs())
            .to_string();
        let call_id = header_text(&delivery.job_id);
        let function = header_text(&delivery.function);
        let state = header_text(delivery.state);
        let submitter = header_text(delivery.submitter.as_deref().unwrap_or_default());
        let target = sign::request_target(&url.0);
        let signature = sign::signature(
            &inner.secret,
            &sign::Signed {
                timestamp: &timestamp,
                call_id: &call_id,
                function: &function,
                state: &state,
                submitter: &submitter,
                target: &target,
                body,
            },
        );
        let request = (inner.client.post(url.0.clone()))
            .timeout(inner.timeout)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CALL_ID_HEADER, header_value(&call_id))
            .header(FUNCTION_HEADER, header_value(&function))
            .header(STATE_HEADER, header_value(&state))
            .header(ATTEMPTS_HEADER, delivery.attempts)
            .header(SUBMITTER_HEADER, header_value(&submitter))
            .header(CALLBACK_ATTEMPT_HEADER, attempt)
            .header(TIMESTAMP_HEADER, header_value(&timestamp))
            .header(SIGNATURE_HEADER, header_value(&signature))
            // OpenFaaS's queue worker's headers, for receivers written for it (unsigned).
            .header(OPENFAAS_FUNCTION_HEADER, header_value(&function))
            .header(OPENFAAS_STATUS_HEADER, openfaas_status(delivery.state))
            .body(body.clone());
        let response = request.send().await.map_err(|err| Failure {
            message: match err.is_timeout() {
                true => format!("no answer within {} ms", inner.timeout.as_millis()),
                false => format!("request failed: {}", root_cause(&err)),
            },
            retry: true,
        })?;
        let status = response.status();
        // The body is not read: dropping the response closes or frees the connection.
        drop(response);
        match classify(status) {
            Verdict::Delivered => Ok(status.as_u16()),
            Verdict::Retry => Err(Failure {
                message: format!("status {status}"),
                retry: true,
            }),
            Verdict::Refused => Err(Failure {
                message: format!("status {status}, not retried"),
                retry: false,
            }),
        }
    }

    fn count(&self, event: CallbackEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.record_callback(event);
        }
    }
}

/// What a receiver's status means for the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry,
    Refused,
}

/// 2xx delivered; 408, 429 and 5xx retried; anything else (3xx, other 4xx, 1xx) refused.
fn classify(status: StatusCode) -> Verdict {
    if status.is_success() {
        Verdict::Delivered
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Verdict::Retry
    } else {
        Verdict::Refused
    }
}

/// `text` as a header value can carry it: bytes outside visible ASCII, and `%` itself,
/// percent-encoded (so the value is unambiguous and the signature covers what was sent).
fn header_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'%' => out.push_str("%25"),
            0x21..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A header value of text [`header_text`] made (visible ASCII: always valid).
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The innermost cause of a request error ("connection refused", not the wrapping).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits double from the configured base and stop at the ceiling, without overflow.
    #[test]
    fn the_backoff_doubles_up_to_its_ceiling() {
        let backoff = Backoff {
            base: Duration::from_millis(1000),
            max: Duration::from_millis(60_000),
        };
        let waits: Vec<u64> = (1..=8)
            .map(|n| backoff.after(n).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(backoff.after(u32::MAX), Duration::from_millis(60_000));
        let flat = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_millis(500),
        };
        assert_eq!(flat.after(3), Duration::from_millis(500));
    }

    /// 2xx delivers; 408, 429, 5xx retry; 3xx and other 4xx give up.
    #[test]
    fn statuses_are_delivered_retried_or_refused() {
        for (code, verdict) in [
            (200, Verdict::Delivered),
            (204, Verdict::Delivered),
            (408, Verdict::Retry),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (503, Verdict::Retry),
            (301, Verdict::Refused),
            (307, Verdict::Refused),
            (400, Verdict::Refused),
            (401, Verdict::Refused),
            (404, Verdict::Refused),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify(status), verdict, "{code}");
        }
    }

    /// Header text keeps visible ASCII and encodes the rest (and `%`) reversibly.
    #[test]
    fn header_text_encodes_what_a_header_cannot_hold() {
        assert_eq!(header_text("ToUpper"), "ToUpper");
        assert_eq!(header_text("a b%\n\u{e9}"), "a%20b%25%0A%C3%A9");
        assert!(HeaderValue::from_str(&header_text("x\r\ny: z")).is_ok());
    }

    /// A failed job's body is its error; a succeeded one's its result.
    #[test]
    fn the_body_is_the_result_or_the_error() {
        let mut delivery = Delivery {
            job_id: "j".into(),
            function: "f".into(),
            state: "succeeded",
            attempts: 1,
            result: Some(Bytes::from_static(b"out")),
            error: None,
            submitter: None,
        };
        assert_eq!(delivery.body(), "out");
        delivery.state = "failed";
        delivery.result = None;
        delivery.error = Some("boom".into());
        assert_eq!(delivery.body(), "boom");
        delivery.state = "cancelled";
        delivery.error = None;
        assert_eq!(delivery.body(), "");
    }

    /// Refusals are counted in the metrics; the URL refused names why.
    #[test]
    fn validate_refuses_and_counts() {
        let mut config = crate::config::Config::default().jobs;
        config.callback_allow = vec!["http://127.0.0.1:9000/hooks/".into()];
        config.callback_secret = "0123456789abcdef".into();
        let metrics = Arc::new(Metrics::new());
        let callbacks = Callbacks::from_config(&config)
            .unwrap()
            .with_metrics(metrics.clone());
        assert!(callbacks.validate("http://127.0.0.1:9000/hooks/a").is_ok());
        let err = callbacks
            .validate("http://127.0.0.1:9000/admin")
            .unwrap_err();
        assert!(err.to_string().contains("jobs.callback_allow"), "{err}");
        assert_eq!(metrics.callback_count(CallbackEvent::Refused), 1);
        let shown = format!("{callbacks:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
