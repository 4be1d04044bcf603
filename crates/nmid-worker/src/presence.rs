//! Whether a worker's dispatcher link is connected with its functions registered, counted
//! across the worker's links (what a readiness probe asks, [`super::WorkerHandle::registered`]),
//! and each change logged once: "connected ... registered", "disconnected", and
//! "unreachable" once per outage rather than once per reconnect attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

/// What a worker's `GET /readyz` asks: `Ok` when ready to be sent calls, else why not.
/// [`WorkerHandle::readiness`](super::WorkerHandle::readiness) makes one for a worker.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One link's standing with its dispatcher.
#[derive(Debug)]
pub(super) struct Presence {
    /// Links of this worker registered now, this one included while it is.
    count: Arc<AtomicUsize>,
    registered: bool,
    /// The dispatcher could not be reached since the last registration (logged once).
    unreachable: bool,
}

impl Presence {
    pub(super) fn new(count: Arc<AtomicUsize>) -> Self {
        Self {
            count,
            registered: false,
            unreachable: false,
        }
    }

    /// Every registration on the connection to `addr` is answered (`true`), or the
    /// connection is gone (`false`).
    pub(super) fn set_registered(&mut self, registered: bool, addr: &str, name: &str) {
        if self.registered == registered {
            return;
        }
        self.registered = registered;
        if registered {
            self.unreachable = false;
            self.count.fetch_add(1, Ordering::Relaxed);
            info!(%addr, %name, "connected to dispatcher; functions registered");
        } else {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A connection attempt to `addr` failed with `cause`.
    pub(super) fn unreachable(&mut self, addr: &str, cause: &dyn std::fmt::Display) {
        if !std::mem::replace(&mut self.unreachable, true) {
            warn!(%addr, %cause, "dispatcher unreachable; retrying with backoff");
        }
    }
}
