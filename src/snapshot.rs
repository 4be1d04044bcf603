//! The registry's state at one moment ([`RegistrySnapshot`]): what the admin API, the
//! metrics, the cluster's records, the drain and the tests read. Plain data below the
//! actors: the registry and its scheduler make it; nothing here names an actor.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::call::{PeerId, WorkerId};

/// The registry's state at one moment: for the admin API, metrics, tests and draining.
#[derive(Debug, Clone, Default)]
pub struct RegistrySnapshot {
    /// Every function with at least one worker or queued call, by name.
    pub functions: Vec<FunctionSnapshot>,
    /// Every connected worker, by id.
    pub workers: Vec<WorkerSnapshot>,
    /// Results that arrived after their job was over, since start.
    pub late_results: u64,
    /// Every peer dispatcher the scheduler may forward to, by id.
    pub peers: Vec<PeerSnapshot>,
    /// Shutdown has begun.
    pub draining: bool,
}

impl RegistrySnapshot {
    /// Jobs running on workers, all functions together.
    pub fn in_flight(&self) -> u64 {
        self.workers.iter().map(|w| u64::from(w.in_flight)).sum()
    }

    /// Calls forwarded to peer dispatchers and not answered yet.
    pub fn forwarded(&self) -> u64 {
        self.peers.iter().map(|p| u64::from(p.forwarded)).sum()
    }

    /// Calls waiting for a worker, all functions together.
    pub fn queued(&self) -> usize {
        self.functions.iter().map(|f| f.queued).sum()
    }

    /// The entry for `name`, if any.
    pub fn function(&self, name: &str) -> Option<&FunctionSnapshot> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// One function in a [`RegistrySnapshot`], as `/api/v1/functions` shows it too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FunctionSnapshot {
    /// The function's name.
    pub name: String,
    /// Workers serving it.
    pub workers: usize,
    /// Its jobs running on workers.
    pub in_flight: u32,
    /// Its calls waiting for a worker.
    pub queued: usize,
    /// Its workers whose circuit breaker is open or half-open (0 with breakers off).
    pub breakers_open: usize,
    /// Jobs its workers may hold at once, all together.
    pub slots: u32,
}

/// One peer dispatcher in a [`RegistrySnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// The peer's id.
    pub id: PeerId,
    /// Functions its workers serve, as it advertises them.
    pub functions: Vec<String>,
    /// Its advertised load (jobs in flight and queued there).
    pub load: u32,
    /// Calls this dispatcher forwarded to it that are not answered yet.
    pub forwarded: u32,
    /// It answered its last connection attempt (an unreachable peer is skipped a while).
    pub reachable: bool,
}

/// One worker in a [`RegistrySnapshot`].
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    /// The worker's id.
    pub id: WorkerId,
    /// Its `W_SET_NAME` name, if it sent one.
    pub name: Option<String>,
    /// The worker program's address.
    pub peer: SocketAddr,
    /// Functions it serves, by name.
    pub functions: Vec<String>,
    /// Jobs it holds.
    pub in_flight: u32,
    /// Jobs it may hold at once.
    pub max_jobs: u32,
    /// When it connected.
    pub connected_since: SystemTime,
    /// Its circuit breaker's state for each function it serves, by function name (empty
    /// with breakers off).
    pub breakers: Vec<(String, crate::breaker::BreakerState)>,
}
