//! The dispatcher's actors, one per file, each file holding the messages its actor receives.
//!
//! One v1 call, bytes in to bytes out (`docs/architecture.md` draws it):
//!
//! 1. [`client_session::ClientSession`] (one per client connection) decodes `C_DO_JOB` and
//!    starts a [`job::JobActor`] for it, with a callback that sends the session an
//!    [`client_session::Answer`].
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

pub mod client_session;
pub mod connection;
pub mod inbound;
pub mod job;
pub mod registry;
pub mod worker_session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use job::JobServices;

/// What both kinds of session read; shared, never changed after start.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Largest frame body accepted.
    pub max_frame_bytes: usize,
    /// Default deadline of a call.
    pub job_timeout: Duration,
    /// Registry, retries and counters for the jobs client sessions start.
    pub jobs: JobServices,
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

/// What one connection may make the dispatcher hold, and for how long (`[tcp]` and
/// `[workers]` keys in the configuration).
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
    /// Bytes all connections may hold in frames not yet whole
    /// (`tcp.max_incomplete_frame_bytes`).
    pub incomplete_frames: Arc<inbound::FrameBudget>,
    /// Silence after which a client connection with no call in flight is closed
    /// (`tcp.client_idle_timeout_ms`; `None`: never).
    pub client_idle_timeout: Option<Duration>,
}

/// A connection's place under `tcp.max_connections` and `tcp.max_connections_per_ip`, given
/// back when the connection (its session) drops it.
#[derive(Debug)]
pub struct ConnectionPermit {
    _global: OwnedSemaphorePermit,
    _per_ip: Option<IpSlot>,
}

impl ConnectionPermit {
    /// A permit made of the global one and, if there is a per-IP limit, the IP's slot.
    pub fn new(global: OwnedSemaphorePermit, per_ip: Option<IpSlot>) -> Self {
        Self {
            _global: global,
            _per_ip: per_ip,
        }
    }
}

/// Open connections by peer IP, under a limit.
#[derive(Debug)]
pub struct IpSlots {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl IpSlots {
    /// At most `max_per_ip` connections from one IP.
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, unless it has its maximum open.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            slots: self.clone(),
            ip,
        })
    }
}

/// One connection's slot under its IP's limit.
#[derive(Debug)]
pub struct IpSlot {
    slots: Arc<IpSlots>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = (self.slots.open.lock()).unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
