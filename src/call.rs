//! The ground floor of the dispatcher: what a call is, how it ends, who is who, and the two
//! handles through which the actors pass a call along without naming each other. Imports no
//! actor; the actors, the scheduler, the metrics and the HTTP front end all import it.
//!
//! - [`JobId`], [`WorkerId`], [`FunctionName`], [`ClientKey`]: who is who.
//! - [`CallSpec`]: a call as every front end hands it to its job actor.
//! - [`CallOutcome`], [`DispatchError`]: how a call ends.
//! - [`JobLease`] (over a [`JobHandle`]): a job's place while it is queued or running; whoever
//!   holds it (the registry, then a worker session) reports through it exactly once.
//! - [`Partial`]: a partial result or progress a worker sends before its answer, passed to
//!   the job through its lease without consuming it.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{ErrorCode, Metadata, ParamsType};

/// Declares a process-wide id: a `u64` newtype, allocated by `next()`, shown as the number.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            /// A process-wide unique id.
            pub fn next() -> Self {
                static NEXT: AtomicU64 = AtomicU64::new(1);
                Self(NEXT.fetch_add(1, Ordering::Relaxed))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies one call for its whole life, retries included. On the wire (v1) it is the
    /// decimal text of the number, which workers echo back.
    JobId
);

id_type!(
    /// Identifies one worker connection for as long as it is connected.
    WorkerId
);

/// The metadata key that marks a call forwarded by another dispatcher of the cluster. A call
/// carrying it is never forwarded again (the hop limit), so two dispatchers that each think
/// the other serves a function cannot pass a call back and forth.
pub const FORWARDED_META_KEY: &str = "nmid-forwarded-by";

/// The metadata key of a forwarded call that names the caller it is made for (the value of
/// [`ClientKey::to_meta`]). The receiving dispatcher believes it only from a peer whose
/// grant has the `peer` role, and then authorizes and rate-limits the call as that caller.
pub const CALLER_META_KEY: &str = "nmid-caller";

/// Call metadata key: an HTTP request's query string.
pub const QUERY_META: &str = "http-query";
/// Call metadata key prefix: a forwarded HTTP request header (`http-header-accept`).
pub const HEADER_META_PREFIX: &str = "http-header-";
/// Call metadata key: the media type of a raw HTTP body (the params are the body's bytes).
pub const CONTENT_TYPE_META: &str = "content-type";

/// Which part of the dispatcher alone writes a [reserved](RESERVED_META) metadata key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaWriter {
    /// The front door, for every call ([`CALLER_META_KEY`], on a peer hop).
    FrontDoor,
    /// The HTTP front end, from the request (functions act on these: nmid-faas sends them
    /// on as headers and URL, or sets `NMID_HEADER_*`).
    HttpFrontEnd,
}

/// The metadata keys that only the dispatcher writes, and which part of it: at admission a
/// call loses each one that its front end may not have written (compared without regard to
/// case; a key ending in `-` covers every key it begins).
pub const RESERVED_META: [(&str, MetaWriter); 4] = [
    (CALLER_META_KEY, MetaWriter::FrontDoor),
    (QUERY_META, MetaWriter::HttpFrontEnd),
    (HEADER_META_PREFIX, MetaWriter::HttpFrontEnd),
    (CONTENT_TYPE_META, MetaWriter::HttpFrontEnd),
];

/// Who alone writes metadata key `key`, if it is [reserved](RESERVED_META).
pub fn reserved_writer(key: &[u8]) -> Option<MetaWriter> {
    let reserved = |name: &str| match name.ends_with('-') {
        true => key.len() >= name.len() && key[..name.len()].eq_ignore_ascii_case(name.as_bytes()),
        false => key.eq_ignore_ascii_case(name.as_bytes()),
    };
    (RESERVED_META.iter())
        .find(|(name, _)| reserved(name))
        .map(|(_, writer)| *writer)
}

/// Who a caller is, for its grant across a peer hop and its per-client rate limit.
///
/// A client that authenticated with a token (`[auth]`) is that token, wherever it connects
/// from; any other client is its peer's IP address (a TCP connection's, an HTTP request's),
/// so every unauthenticated connection from one host shares one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The name of the token the client authenticated with.
    Token(Arc<str>),
    /// The peer's IP address.
    Ip(IpAddr),
    /// Every client beyond `rate_limit.max_clients` tracked at once: they share one bucket.
    Overflow,
}

impl ClientKey {
    /// The value of [`CALLER_META_KEY`] naming this client: `token:<name>` or `ip:<addr>`
    /// (`None` for the overflow bucket, which names no one).
    pub fn to_meta(&self) -> Option<Bytes> {
        match self {
            ClientKey::Token(name) => Some(Bytes::from(format!("token:{name}"))),
            ClientKey::Ip(ip) => Some(Bytes::from(format!("ip:{}", ip.to_canonical()))),
            ClientKey::Overflow => None,
        }
    }

    /// The client a [`CALLER_META_KEY`] value names; `None` for anything else.
    pub fn from_meta(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        if let Some(name) = text.strip_prefix("token:") {
            return (!name.is_empty()).then(|| ClientKey::Token(name.into()));
        }
        let ip: IpAddr = text.strip_prefix("ip:")?.parse().ok()?;
        Some(ClientKey::Ip(ip.to_canonical()))
    }
}

/// Identifies a dispatcher of the cluster (its membership record's id): shared text, cheap
/// to clone, the same in every dispatcher's view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub Arc<str>);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

impl JobId {
    /// The id as v1 workers see it.
    pub fn to_wire(self) -> Bytes {
        Bytes::from(self.0.to_string())
    }

    /// Parses an id echoed by a worker; `None` for anything we did not send.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?.parse().ok().map(Self)
    }
}

/// A function name as it travels on the wire: bytes, cheap to clone, shown lossily as UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionName(pub Bytes);

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl FunctionName {
    /// The name as a log line may show it: control characters escaped (a worker or caller
    /// chooses it).
    pub fn escaped(&self) -> crate::logging::Escaped<'_> {
        crate::logging::Escaped(&self.0)
    }
}

impl From<&str> for FunctionName {
    fn from(name: &str) -> Self {
        Self(Bytes::copy_from_slice(name.as_bytes()))
    }
}

/// Where a call waits among its function's queued calls: every waiting high call is placed
/// before any normal one, every normal one before any low one; first in, first out within
/// one. Synchronous calls are normal; a background job says its own (gearman's
/// `SUBMIT_JOB_HIGH`/`_LOW`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Overtakes every normal and low call still waiting.
    High,
    /// The default.
    #[default]
    Normal,
    /// Waits until no high or normal call waits.
    Low,
}

impl Priority {
    /// Its place in the queue's order: 0 for high, 1 normal, 2 low.
    pub fn rank(self) -> usize {
        self as usize
    }

    /// Its name in the HTTP API and metrics: `high`, `normal`, `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The priority named `text` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        [Priority::High, Priority::Normal, Priority::Low]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }
}

/// A call as a front end (a client session's `C_DO_JOB` or `C_CALL`, an HTTP request) hands
/// it to its job actor, and as a worker receives it: everything but the sender.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The function to run.
    pub function: FunctionName,
    /// How `params` is encoded, passed through.
    pub params_type: ParamsType,
    /// `params_handle_type`, passed through.
    pub handle_type: u32,
    /// The call's parameters, opaque here.
    pub params: Bytes,
    /// The caller's metadata (trace context), if it sent any (tagged calls and HTTP only).
    pub meta: Option<Arc<Metadata>>,
    /// When the caller stops waiting; tagged workers are told the time left.
    pub deadline: Instant,
    /// Who the call is made for, once the front door admitted it: carried to a peer
    /// dispatcher when the call is forwarded ([`CALLER_META_KEY`]).
    pub caller: Option<ClientKey>,
    /// Where it waits when every worker of its function is busy.
    pub priority: Priority,
    /// Its job takes partial results ([`Partial`]): a call forwarded to a peer dispatcher
    /// is sent as a streaming call, and its partials passed back through the lease.
    pub streams: bool,
    /// It may wait in its function's queue when every worker here is busy; a background
    /// job's attempt may not (refused `RateLimited` instead: the job stays queued in the
    /// store, its attempt not begun).
    pub may_wait: bool,
}

impl CallSpec {
    /// A call of `function` with `params` that the caller gives `timeout` from now.
    pub fn new(
        function: Bytes,
        params_type: ParamsType,
        handle_type: u32,
        params: Bytes,
        timeout: Duration,
    ) -> Self {
        Self {
            function: FunctionName(function),
            params_type,
            handle_type,
            params,
            meta: None,
            deadline: Instant::now() + timeout,
            caller: None,
            priority: Priority::Normal,
            streams: false,
            may_wait: true,
        }
    }

    /// Another dispatcher forwarded this call here: it must not be forwarded again.
    pub fn is_forwarded(&self) -> bool {
        self.meta.as_deref().is_some_and(|meta| {
            meta.iter()
                .any(|(key, _)| &key[..] == FORWARDED_META_KEY.as_bytes())
        })
    }

    /// The caller a peer dispatcher names in this call's metadata ([`CALLER_META_KEY`]), if
    /// it names one (believed only from a peer with the `peer` role).
    pub fn vouched_caller(&self) -> Option<ClientKey> {
        let meta = self.meta.as_deref()?;
        let (_, value) = (meta.iter()).find(|(key, _)| &key[..] == CALLER_META_KEY.as_bytes())?;
        ClientKey::from_meta(value)
    }

    /// Removes the [reserved](RESERVED_META) entries from the metadata that the call's front
    /// end may not have written, once the front door has read them: every
    /// [`CALLER_META_KEY`] entry (a caller a client wrote there itself must reach no worker,
    /// and a peer hop names only the caller the front door admitted, [`CallSpec::caller`]),
    /// and the HTTP front end's entries unless `from_http` (the HTTP front end, or a peer
    /// dispatcher passing on what its own wrote).
    pub fn forget_reserved_meta(&mut self, from_http: bool) {
        let Some(meta) = &mut self.meta else {
            return;
        };
        let forged = |key: &[u8]| match reserved_writer(key) {
            Some(MetaWriter::FrontDoor) => true,
            Some(MetaWriter::HttpFrontEnd) => !from_http,
            None => false,
        };
        if meta.iter().any(|(key, _)| forged(key)) {
            Arc::make_mut(meta).retain(|(key, _)| !forged(key));
        }
    }

    /// Refuses what nmid refuses (an empty function name or empty params) and a call whose
    /// job frame would be larger than `max_frame_bytes`, the largest body workers accept:
    /// refused now, it cannot reach a worker that would close its connection over it.
    pub fn validate(&self, max_frame_bytes: usize) -> Result<(), DispatchError> {
        if self.function.0.is_empty() || self.params.is_empty() {
            return Err(DispatchError::BadRequest);
        }
        if self.job_frame_bound() > max_frame_bytes {
            return Err(DispatchError::TooLarge);
        }
        Ok(())
    }

    /// The most a worker's job frame for this call can take, body only: the larger of
    /// `S_GET_DATA` (with a 20-digit job id, and room for the `traceparent` a v1 worker may
    /// get in its params) and `S_JOB` (with this call's metadata and the dispatch span's).
    pub fn job_frame_bound(&self) -> usize {
        const TRACE_ROOM: usize = 128;
        let meta: usize = (self.meta.iter().flat_map(|m| m.iter()))
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        let fields = self.function.0.len() + self.params.len();
        let get_data = 20 + 20 + fields + TRACE_ROOM;
        let job = 28 + fields + 4 + meta + TRACE_ROOM;
        get_data.max(job)
    }
}

/// Why the dispatcher got no result for a call. Each maps to one v1 reply frame (see the
/// client session) and, for tagged peers, to an [`ErrorCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Empty function name or empty params.
    #[error("bad request: empty function name or params")]
    BadRequest,
    /// The function was served once, but no worker serves it now.
    #[error("no worker serves this function")]
    NoWorker,
    /// No worker has ever registered the function.
    #[error("no such function")]
    UnknownFunction,
    /// Every worker is full and the function's queue is full too.
    #[error("rate limited: every worker is busy and the queue is full")]
    RateLimited,
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    Timeout,
    /// The job's worker disconnected or went silent, and no retry was possible.
    #[error("worker lost while running the job")]
    WorkerLost,
    /// The dispatcher is shutting down and takes no new calls.
    #[error("dispatcher is shutting down")]
    ShuttingDown,
    /// The call's job frame would be larger than workers accept (`tcp.max_frame_bytes`).
    #[error("call too large: its job would exceed tcp.max_frame_bytes")]
    TooLarge,
    /// The caller's grant does not cover the function (`[auth]`).
    #[error("forbidden: this caller may not call this function")]
    Forbidden,
    /// Every worker of the function has an open circuit breaker (`[breaker]`).
    #[error("circuit breaker open: no worker of this function takes calls right now")]
    BreakerOpen,
    /// A streaming caller reads its partial results too slowly: more than
    /// `jobs.max_partial_bytes_buffered` of them waited to be written to it.
    #[error("slow caller: the caller reads its partial results too slowly (more than jobs.max_partial_bytes_buffered waited to be written to it)")]
    SlowCaller,
}

impl DispatchError {
    /// The tagged protocol's code for this error.
    pub fn code(self) -> ErrorCode {
        match self {
            DispatchError::BadRequest => ErrorCode::BAD_REQUEST,
            DispatchError::NoWorker | DispatchError::UnknownFunction => ErrorCode::NO_WORKER,
            DispatchError::RateLimited => ErrorCode::RATE_LIMITED,
            DispatchError::Timeout => ErrorCode::TIMEOUT,
            DispatchError::WorkerLost => ErrorCode::WORKER_LOST,
            DispatchError::ShuttingDown => ErrorCode::SHUTTING_DOWN,
            DispatchError::TooLarge => ErrorCode::TOO_LARGE,
            DispatchError::Forbidden => ErrorCode::FORBIDDEN,
            DispatchError::BreakerOpen => ErrorCode::BREAKER_OPEN,
            DispatchError::SlowCaller => ErrorCode::SLOW_CALLER,
        }
    }
}

/// How a call ended, as its job tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The worker's result bytes.
    Done(Bytes),
    /// The worker reported its function failed, with this message (tagged workers only).
    WorkerFailed(Bytes),
    /// The dispatcher could not get a result.
    Failed(DispatchError),
}

/// What becomes of a job once it was handed on: reported to the job through its lease.
#[derive(Debug)]
pub enum LeaseReport {
    /// The registry could not place it.
    Refused(DispatchError),
    /// The worker answered: [`CallOutcome::Done`] or [`CallOutcome::WorkerFailed`].
    Answered(CallOutcome),
    /// The worker holding it is gone (the lease was dropped unanswered).
    Lost,
    /// It never reached a worker (a peer dispatcher could not be reached, or refused it
    /// while draining): place it again, as if it had just arrived.
    Undelivered,
    /// The dispatcher is stopping and gave up waiting for the worker that holds it (the
    /// drain timed out): it may have run, so it is never placed again.
    Abandoned,
}

/// What a worker sends about a job before its answer (`W_JOB_PARTIAL`, `W_JOB_PROGRESS`):
/// passed to the job through its lease, which stays held. A call admitted without a partial
/// sink (every `C_DO_JOB` and `C_CALL`, plain HTTP) ignores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partial {
    /// `numerator` of `denominator` done (the worker's units).
    Progress {
        /// Work done.
        numerator: u64,
        /// Work in all.
        denominator: u64,
    },
    /// A piece of the result (a token, a row), in the order the worker sent it.
    Data(Bytes),
}

/// The job actor as the holder of its lease reaches it. Implemented by the job actor's
/// address, so that the registry and the worker sessions never name the job actor.
pub trait JobHandle: Send {
    /// The job still waits for this report (its actor runs).
    fn is_live(&self) -> bool;
    /// Tells the job what became of it.
    fn report(&self, report: LeaseReport);
    /// Passes the job a partial result or progress (its lease stays held).
    fn partial(&self, partial: Partial);
}

/// A job's place in the dispatcher while it is queued (held by the registry) or running
/// (held by a worker session). Whoever holds it reports through it exactly once: refused,
/// answered, handed back undelivered, or, by dropping it unanswered (the worker stopped, or
/// the assignment never arrived), lost. Nothing can lose a job silently.
pub struct JobLease {
    job: Option<Box<dyn JobHandle>>,
}

impl JobLease {
    /// A lease that reports to `job`.
    pub fn new(job: Box<dyn JobHandle>) -> Self {
        Self { job: Some(job) }
    }

    /// The job still waits (its deadline has not passed, its caller is still there).
    pub fn is_live(&self) -> bool {
        self.job.as_ref().is_some_and(|job| job.is_live())
    }

    /// Passes the worker's partial result or progress to the job, keeping the lease: its
    /// answer is still to come. Sent in the order they arrive, before the answer.
    pub fn partial(&self, partial: Partial) {
        if let Some(job) = &self.job {
            job.partial(partial);
        }
    }

    /// The registry could not place the job.
    pub fn refuse(mut self, error: DispatchError) {
        if let Some(job) = self.job.take() {
            job.report(LeaseReport::Refused(error));
        }
    }

    /// Hands the worker's answer to the job. Returns `false` when the job is already over
    /// (deadline passed, caller gone): the answer is late and is discarded.
    pub fn answer(mut self, outcome: CallOutcome) -> bool {
        match self.job.take() {
            Some(job) if job.is_live() => {
                job.report(LeaseReport::Answered(outcome));
                true
            }
            _ => false,
        }
    }
}

impl JobLease {
    /// The worker holding the job is given up on at shutdown (the drain timed out).
    pub fn abandon(mut self) {
        if let Some(job) = self.job.take() {
            job.report(LeaseReport::Abandoned);
        }
    }

    /// The job never reached a worker: it is placed again (its retries are not used up, and
    /// it is never reported as a lost worker for it).
    pub fn hand_back(mut self) {
        if let Some(job) = self.job.take() {
            job.report(LeaseReport::Undelivered);
        }
    }
}

impl fmt::Debug for JobLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLease")
            .field("held", &self.job.is_some())
            .finish()
    }
}

impl Drop for JobLease {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            job.report(LeaseReport::Lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// At admission a call from a client loses every reserved entry (any case), one from
    /// the HTTP front end (or a peer) only `nmid-caller`; other entries stay, in order.
    #[test]
    fn reserved_metadata_is_kept_only_from_its_writer() {
        let entries = [
            "traceparent",
            "nmid-caller",
            "http-header-host",
            "HTTP-Header-X",
            "http-query",
            "Content-Type",
            "http-headerless",
            "x-request-id",
        ];
        let left = |from_http: bool| {
            let mut spec = CallSpec::new(
                Bytes::from_static(b"F"),
                ParamsType::MSGPACK,
                0,
                Bytes::from_static(b"\x80"),
                Duration::from_secs(1),
            );
            let meta = entries.map(|k| (Bytes::from_static(k.as_bytes()), Bytes::new()));
            spec.meta = Some(Arc::new(meta.to_vec()));
            spec.forget_reserved_meta(from_http);
            let meta = spec.meta.unwrap();
            let keys = meta
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned());
            keys.collect::<Vec<_>>()
        };
        assert_eq!(
            left(false),
            ["traceparent", "http-headerless", "x-request-id"]
        );
        let mut from_http = entries.to_vec();
        from_http.remove(1);
        assert_eq!(left(true), from_http);
    }

    /// A job handle that records what it is told.
    struct Recorder {
        live: bool,
        told: Arc<Mutex<Vec<String>>>,
    }

    impl JobHandle for Recorder {
        fn is_live(&self) -> bool {
            self.live
        }

        fn report(&self, report: LeaseReport) {
            self.told.lock().unwrap().push(format!("{report:?}"));
        }

        fn partial(&self, partial: Partial) {
            self.told.lock().unwrap().push(format!("{partial:?}"));
        }
    }

    fn lease(live: bool) -> (JobLease, Arc<Mutex<Vec<String>>>) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let handle = Recorder {
            live,
            told: told.clone(),
        };
        (JobLease::new(Box::new(handle)), told)
    }

    /// A lease reports exactly once: an answer, a refusal, a hand-back, an abandonment, or
    /// (dropped) a loss.
    #[test]
    fn a_lease_reports_exactly_once() {
        let (answered, told) = lease(true);
        answered.partial(Partial::Data(Bytes::from_static(b"p")));
        assert_eq!(
            told.lock().unwrap().len(),
            1,
            "a partial does not end the lease"
        );
        told.lock().unwrap().clear();
        assert!(answered.answer(CallOutcome::Done(Bytes::from_static(b"x"))));
        assert_eq!(told.lock().unwrap().len(), 1);
        assert!(told.lock().unwrap()[0].starts_with("Answered"));

        let (refused, told) = lease(true);
        refused.refuse(DispatchError::NoWorker);
        assert_eq!(*told.lock().unwrap(), vec!["Refused(NoWorker)"]);

        let (dropped, told) = lease(true);
        drop(dropped);
        assert_eq!(*told.lock().unwrap(), vec!["Lost"]);

        let (handed_back, told) = lease(true);
        handed_back.hand_back();
        assert_eq!(*told.lock().unwrap(), vec!["Undelivered"]);

        let (abandoned, told) = lease(true);
        abandoned.abandon();
        assert_eq!(*told.lock().unwrap(), vec!["Abandoned"]);
    }

    /// An answer for a job that is over is late: not delivered, and not reported as lost.
    #[test]
    fn an_answer_to_a_finished_job_is_late() {
        let (over, told) = lease(false);
        assert!(!over.is_live());
        assert!(!over.answer(CallOutcome::Done(Bytes::new())));
        assert!(told.lock().unwrap().is_empty());
    }

    /// A caller survives its metadata text; other text names no one.
    #[test]
    fn callers_round_trip_through_their_metadata_text() {
        let token = ClientKey::Token("web".into());
        assert_eq!(ClientKey::from_meta(&token.to_meta().unwrap()), Some(token));
        let ip = ClientKey::Ip("10.1.2.3".parse().unwrap());
        assert_eq!(
            ClientKey::from_meta(&ip.to_meta().unwrap()),
            Some(ip.clone())
        );
        let mapped = ClientKey::Ip("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(ClientKey::from_meta(&mapped.to_meta().unwrap()), Some(ip));
        assert_eq!(ClientKey::Overflow.to_meta(), None);
        for junk in [&b"token:"[..], b"ip:nowhere", b"web", b"\xff"] {
            assert_eq!(ClientKey::from_meta(junk), None, "{junk:?}");
        }
    }

    /// Job ids survive the v1 wire text; anything else is not ours.
    #[test]
    fn job_ids_round_trip_through_their_wire_text() {
        let id = JobId(1234567890123);
        assert_eq!(JobId::from_wire(&id.to_wire()), Some(id));
        assert_eq!(JobId::from_wire(b"job-1"), None);
        assert_eq!(JobId::from_wire(b"\xff"), None);
    }
}
