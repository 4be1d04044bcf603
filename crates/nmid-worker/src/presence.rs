//! Whether a worker's dispatcher link is connected with its functions registered, counted
//! across the worker's links (what a readiness probe asks, [`super::WorkerHandle::registered`]),
//! and each change of a dispatcher's state logged once ([`LinkLog`]): "connected ...
//! registered", "disconnected", and "unreachable" once per outage rather than once per
//! reconnect attempt, or per link of the workers that share the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

/// What a worker's `GET /readyz` asks: `Ok` when ready to be sent calls, else why not.
/// [`WorkerHandle::readiness`](super::WorkerHandle::readiness) makes one for a worker.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The connection log of one or more workers: each dispatcher's changes of state
/// (connected with every link registered, disconnected, unreachable) are logged once for all
/// their links, with how many there are (`workers=N`), rather than once per link. nmid-faas
/// runs a worker per function and shares one among them
/// ([`WorkerBuilder::link_log`](super::WorkerBuilder::link_log)); a worker has its own
/// otherwise. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LinkLog(Arc<Mutex<HashMap<String, Dispatcher>>>);

/// One dispatcher's state, as the log last told it.
#[derive(Debug, Default)]
struct Dispatcher {
    /// Links to it (of every worker sharing the log).
    links: usize,
    /// Links to it registered now.
    registered: usize,
    /// Logged as connected (every link registered), and not disconnected since.
    up: bool,
    /// Logged as unreachable since it was last up.
    unreachable: bool,
}

impl LinkLog {
    /// A log of its own.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, addr: &str, change: impl FnOnce(&mut Dispatcher) -> R) -> R {
        let mut dispatchers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        change(dispatchers.entry(addr.to_owned()).or_default())
    }

    fn join(&self, addr: &str) {
        self.with(addr, |d| d.links += 1);
    }

    fn leave(&self, addr: &str) {
        let mut dispatchers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dispatchers.get_mut(addr) {
            d.links = d.links.saturating_sub(1);
            if d.links == 0 {
                dispatchers.remove(addr);
            }
        }
    }

    fn registered(&self, addr: &str, registered: bool) {
        self.with(addr, |d| {
            if !registered {
                d.registered = d.registered.saturating_sub(1);
                return;
            }
            d.registered += 1;
            if !d.up && d.registered >= d.links {
                (d.up, d.unreachable) = (true, false);
                info!(%addr, workers = d.registered, "connected to dispatcher; functions registered");
            }
        });
    }

    fn disconnected(&self, addr: &str) {
        self.with(addr, |d| {
            if std::mem::replace(&mut d.up, false) {
                warn!(%addr, workers = d.links, "disconnected from dispatcher; reconnecting");
            }
        });
    }

    fn unreachable(&self, addr: &str, cause: &dyn std::fmt::Display) {
        self.with(addr, |d| {
            if !std::mem::replace(&mut d.unreachable, true) {
                d.up = false;
                warn!(%addr, workers = d.links, %cause, "dispatcher unreachable; retrying with backoff");
            }
        });
    }
}

/// One link's standing with its dispatcher.
#[derive(Debug)]
pub(super) struct Presence {
    /// Links of this worker registered now, this one included while it is.
    count: Arc<AtomicUsize>,
    registered: bool,
    log: LinkLog,
    addr: String,
}

impl Presence {
    /// The standing of a link to `addr`, counted in `count` while registered and told to `log`.
    pub(super) fn new(count: Arc<AtomicUsize>, log: LinkLog, addr: &str) -> Self {
        log.join(addr);
        Self {
            count,
            registered: false,
            log,
            addr: addr.to_owned(),
        }
    }

    /// Every registration on the connection is answered (`true`), or the connection is gone
    /// (`false`).
    pub(super) fn set_registered(&mut self, registered: bool) {
        if std::mem::replace(&mut self.registered, registered) == registered {
            return;
        }
        match registered {
            true => self.count.fetch_add(1, Ordering::Relaxed),
            false => self.count.fetch_sub(1, Ordering::Relaxed),
        };
        self.log.registered(&self.addr, registered);
    }

    /// The connection was lost, and `cancelled` jobs with it (each link that had any says
    /// so: those are its own calls).
    pub(super) fn disconnected(&mut self, cancelled: usize, name: &str) {
        self.log.disconnected(&self.addr);
        if cancelled > 0 {
            warn!(addr = %self.addr, %name, jobs_cancelled = cancelled, "calls in flight cancelled: their dispatcher connection is gone");
        }
    }

    /// A connection attempt failed with `cause`.
    pub(super) fn unreachable(&mut self, cause: &dyn std::fmt::Display) {
        self.log.unreachable(&self.addr, cause);
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.set_registered(false);
        self.log.leave(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three links of a shared log to one dispatcher: connected once all three registered,
    /// disconnected and unreachable once for the three, connected again once all are back;
    /// a link leaving does not hold the others' "connected" back.
    #[test]
    fn a_shared_log_tracks_a_dispatcher_not_each_link() {
        let log = LinkLog::new();
        let count = Arc::new(AtomicUsize::new(0));
        let mut links: Vec<Presence> = (0..3)
            .map(|_| Presence::new(count.clone(), log.clone(), "d:1"))
            .collect();
        let state = || log.with("d:1", |d| (d.links, d.registered, d.up, d.unreachable));
        links[0].set_registered(true);
        links[1].set_registered(true);
        assert_eq!(state(), (3, 2, false, false));
        links[2].set_registered(true);
        assert_eq!(state(), (3, 3, true, false));
        for link in &mut links {
            link.set_registered(false);
            link.disconnected(0, "x");
            link.unreachable(&"refused");
        }
        assert_eq!(state(), (3, 0, false, true));
        assert_eq!(count.load(Ordering::Relaxed), 0);
        drop(links.pop());
        links[0].set_registered(true);
        links[1].set_registered(true);
        assert_eq!(state(), (2, 2, true, false));
        drop(links);
        assert!(log.0.lock().unwrap().is_empty());
    }
}
