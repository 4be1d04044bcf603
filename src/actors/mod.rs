//! The dispatcher's actors, one per file, each file holding the messages its actor receives.
//!
//! One v1 call, bytes in to bytes out (`docs/architecture.md` draws it):
//!
//! 1. [`client_session::ClientSession`] (one per client connection) decodes `C_DO_JOB` and
//!    admits it through the [`front_door::FrontDoor`] (the HTTP front end's calls come in
//!    through the same door), which starts a [`job::JobActor`] for it, with a callback that
//!    sends the session an [`client_session::Answer`].
//! 2. The job sends [`registry::Dispatch`] with its [`JobLease`](crate::call::JobLease) to
//!    the [`registry::Registry`], whose [`Scheduler`](crate::scheduler::Scheduler) picks the
//!    least-loaded worker of the function (or queues the call, or refuses it).
//! 3. The registry hands the call to that worker's
//!    [`worker_session::WorkerSession`] ([`worker_session::Assign`]), which writes
//!    `S_GET_DATA` and keeps the lease under the job id.
//! 4. The worker program's `W_RETURN_DATA` is matched by that id; the lease hands the result
//!    to its job, and the session tells the registry the slot is free
//!    ([`registry::JobFinished`]).
//! 5. The job answers through its callback; the client session writes `S_RETURN_DATA`.
//!
//! Arrows point down: sessions import the job and the registry, the job imports the
//! registry, and nothing below names an actor above it. The registry reaches worker
//! sessions through [`registry::WorkerPort`] and jobs through their leases, and a job
//! reaches its caller through the callback it was given.
//!
//! Both sessions hold a [`connection::Connection`]: the peer, the permit, the read gate and
//! the bounded outbound buffer.

pub mod background;
mod client_jobs;
pub mod client_session;
pub mod connection;
pub mod front_door;
pub mod inbound;
pub mod job;
pub mod registry;
pub mod worker_session;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use crate::config::{Config, TcpConfig, WorkersConfig};
use crate::logging::RefusalLog;
use crate::metrics::Metrics;
use front_door::FrontDoor;
use inbound::FrameBudget;
use registry::Registry;

/// What both kinds of session read; shared, never changed after start.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Where client sessions admit their calls (grants, limits, rate limits, the job).
    pub door: FrontDoor,
    /// The function registry, which worker sessions join.
    pub registry: Addr<Registry>,
    /// The dispatcher's metrics.
    pub metrics: Arc<Metrics>,
    /// Circuit breakers are on: worker sessions report calls that outlive their deadline.
    pub breakers: bool,
    /// Largest frame body accepted.
    pub max_frame_bytes: usize,
    /// Default deadline of a call.
    pub job_timeout: Duration,
    /// Jobs in flight on one worker.
    pub max_jobs_per_worker: u32,
    /// Silence after which a worker is treated as dead.
    pub heartbeat_timeout: Duration,
    /// Add `traceparent` to msgpack-map params of jobs for v1 workers.
    pub inject_trace_v1: bool,
    /// What one connection may make the dispatcher hold, and for how long.
    pub limits: ConnectionLimits,
    /// What one worker connection may register and send.
    pub worker_limits: WorkerLimits,
    /// Who may connect, serve and call (reloadable).
    pub security: crate::security::Security,
    /// Refused connections, logged once per kind and window.
    pub refusals: Arc<RefusalLog>,
    /// The background jobs, which tagged clients submit to and ask about (`C_SUBMIT`,
    /// `C_JOB_STATUS`, `C_JOB_CANCEL`); `None`: refused as off.
    pub jobs: Option<JobsPort>,
}

impl SessionSettings {
    /// The settings `config` gives every session, admitting calls through `door` and
    /// background jobs into `background`.
    pub fn new(
        config: &Config,
        door: FrontDoor,
        refusals: Arc<RefusalLog>,
        background: Option<JobsPort>,
    ) -> Self {
        let services = door.jobs();
        Self {
            registry: services.registry.clone(),
            metrics: services.metrics.clone(),
            breakers: services.breakers,
            security: door.security().clone(),
            door,
            max_frame_bytes: config.tcp.max_frame_bytes,
            job_timeout: config.job_timeout(),
            max_jobs_per_worker: config.workers.max_jobs_in_flight,
            heartbeat_timeout: config.heartbeat_timeout(),
            inject_trace_v1: config.tracing.inject_v1_params,
            limits: ConnectionLimits::from(&config.tcp),
            worker_limits: WorkerLimits::from(&config.workers),
            refusals,
            jobs: background,
        }
    }
}

/// What one worker connection may register and send (`[workers]` keys).
#[derive(Debug, Clone)]
pub struct WorkerLimits {
    /// Jobs in flight on a v1 worker (`workers.v1_max_jobs_in_flight`).
    pub v1_max_jobs: u32,
    /// Longest function name, in bytes (`workers.max_function_name_bytes`).
    pub max_function_name_bytes: usize,
    /// Longest worker name, in bytes (`workers.max_worker_name_bytes`).
    pub max_worker_name_bytes: usize,
    /// Functions one connection may serve (`workers.max_functions_per_worker`).
    pub max_functions: usize,
    /// Control frames per second (`workers.max_control_frames_per_second`).
    pub control_frames_per_second: u32,
}

impl From<&WorkersConfig> for WorkerLimits {
    fn from(workers: &WorkersConfig) -> Self {
        Self {
            v1_max_jobs: workers.v1_max_jobs_in_flight,
            max_function_name_bytes: workers.max_function_name_bytes,
            max_worker_name_bytes: workers.max_worker_name_bytes,
            max_functions: workers.max_functions_per_worker,
            control_frames_per_second: workers.max_control_frames_per_second,
        }
    }
}

/// What one connection may make the dispatcher hold, and for how long (`[tcp]` keys).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Bytes waiting to be written to a peer past which its frames are no longer read
    /// (`tcp.max_outbound_bytes`).
    pub max_outbound_bytes: usize,
    /// How long a peer may stay over that bound before it is closed as a slow consumer
    /// (`tcp.slow_consumer_timeout_ms`).
    pub slow_consumer_timeout: Duration,
    /// Time for a new connection's first frame (`tcp.handshake_timeout_ms`).
    pub handshake_timeout: Duration,
    /// Time for a frame that has begun to arrive whole (`tcp.frame_timeout_ms`).
    pub frame_timeout: Duration,
    /// Bytes all connections, and each client's, may hold in frames not yet whole
    /// (`tcp.max_incomplete_frame_bytes`, `tcp.max_incomplete_frame_bytes_per_client`).
    pub incomplete_frames: Arc<FrameBudget>,
    /// Largest first frame of a connection not identified yet, with auth on
    /// (`tcp.max_first_frame_bytes`).
    pub max_first_frame_bytes: usize,
    /// Silence after which a client connection with no call in flight is closed
    /// (`tcp.client_idle_timeout_ms`; `None`: never).
    pub client_idle_timeout: Option<Duration>,
}

impl From<&TcpConfig> for ConnectionLimits {
    fn from(tcp: &TcpConfig) -> Self {
        Self {
            max_outbound_bytes: tcp.max_outbound_bytes,
            slow_consumer_timeout: Duration::from_millis(tcp.slow_consumer_timeout_ms),
            handshake_timeout: Duration::from_millis(tcp.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(tcp.frame_timeout_ms),
            incomplete_frames: FrameBudget::new(
                tcp.max_incomplete_frame_bytes,
                (tcp.max_incomplete_frame_bytes_per_client).min(tcp.max_incomplete_frame_bytes),
            ),
            max_first_frame_bytes: tcp.max_first_frame_bytes.min(tcp.max_frame_bytes),
            client_idle_timeout: (tcp.client_idle_timeout_ms > 0)
                .then(|| Duration::from_millis(tcp.client_idle_timeout_ms)),
        }
    }
}

/// What a front end needs to reach the background jobs: the actor, `[jobs]`, and the node
/// name in this dispatcher's job ids (a job id naming another node is not found here).
#[derive(Debug, Clone)]
pub struct JobsPort {
    /// The jobs' actor.
    pub background: Addr<background::Background>,
    /// `[jobs]`.
    pub config: Arc<crate::config::JobsConfig>,
    /// The node name in this dispatcher's job ids.
    pub node: String,
    /// Checks callback URLs against `jobs.callback_allow`.
    pub callbacks: crate::jobs::callback::Callbacks,
    /// How to ask the other dispatchers of the cluster about their jobs: set once the
    /// cluster has started (never without one).
    pub owners: Arc<std::sync::OnceLock<crate::jobs::remote::Owners>>,
}
