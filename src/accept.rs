//! Accept-time admission, the same on every listener (the nmid protocol, HTTP, the metrics
//! port): an [`AcceptGate`] checks a connection the moment it is accepted, before anything
//! is read from it and before any TLS handshake, against the address lists
//! (`security.allow` / `security.deny`) and the connection limits (`*.max_connections`,
//! `*.max_connections_per_ip`). A refused connection is closed at once, counted, and logged
//! once per window ([`RefusalLog`]); an admitted one holds a [`ConnectionPermit`] for its
//! whole life.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::logging::RefusalLog;
use crate::metrics::{Limit, Metrics, Refusal};
use crate::security::Security;

/// A connection's place under its listener's limits, given back when the connection (its
/// session) drops it.
#[derive(Debug)]
pub struct ConnectionPermit {
    _global: Option<OwnedSemaphorePermit>,
    _per_ip: Option<IpSlot>,
}

/// The checks of one listener at accept time.
#[derive(Debug)]
pub struct AcceptGate {
    /// Which listener, for the logs (`nmid protocol`, `http`, `metrics`).
    listener: &'static str,
    /// Permits of `max_connections`, when this gate refuses past it (the HTTP listeners
    /// wait for a permit before they accept instead).
    connections: Option<Arc<Semaphore>>,
    /// `max_connections_per_ip`, when set.
    per_ip: Option<(Arc<IpSlots>, Limit)>,
    security: Security,
    metrics: Arc<Metrics>,
    refusals: Arc<RefusalLog>,
}

/// What an [`AcceptGate`] enforces.
#[derive(Debug, Clone)]
pub struct GateLimits {
    /// Which listener, for the logs.
    pub listener: &'static str,
    /// Connections open at once past which new ones are closed (`None`: not this gate's
    /// job).
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP past which its new ones are closed (0: none),
    /// and the limit counted when they are.
    pub max_per_ip: (usize, Limit),
}

impl AcceptGate {
    /// A gate with `limits`, checking addresses against `security`'s lists (reloadable),
    /// counting in `metrics` and logging through `refusals`.
    pub fn new(
        limits: GateLimits,
        security: Security,
        metrics: Arc<Metrics>,
        refusals: Arc<RefusalLog>,
    ) -> Self {
        let (max_per_ip, limit) = limits.max_per_ip;
        Self {
            listener: limits.listener,
            connections: (limits.max_connections).map(|max| Arc::new(Semaphore::new(max))),
            per_ip: (max_per_ip > 0).then(|| (IpSlots::new(max_per_ip), limit)),
            security,
            metrics,
            refusals,
        }
    }

    /// A permit for a connection just accepted from `peer`, or `None` when its address may
    /// not connect or a limit is reached (counted, and logged once per window).
    pub fn admit(&self, peer: SocketAddr) -> Option<ConnectionPermit> {
        if !self.security.policy().admits(peer.ip()) {
            self.metrics.record_refusal(Refusal::Address);
            if self.refusals.first("address") {
                warn!(%peer, listener = self.listener, "closing connection: address not allowed (security.allow / security.deny)");
            }
            return None;
        }
        match self.permit(peer) {
            Ok(permit) => Some(permit),
            Err(limit) => {
                self.metrics.record_limit(limit);
                if self.refusals.first(limit.as_str()) {
                    warn!(%peer, listener = self.listener, limit = limit.as_str(), "closing connection: connection limit reached");
                }
                None
            }
        }
    }

    /// Where this listener's refusals, and the other floods a peer can make on it, are
    /// logged once per window.
    pub fn refusals(&self) -> &Arc<RefusalLog> {
        &self.refusals
    }

    /// A permit under the limits alone, for a connection the address lists do not apply to
    /// (the dispatcher's own); else the limit that refused it.
    pub fn permit(&self, peer: SocketAddr) -> Result<ConnectionPermit, Limit> {
        let global = match &self.connections {
            Some(permits) => {
                Some((permits.clone().try_acquire_owned()).map_err(|_| Limit::Connections)?)
            }
            None => None,
        };
        let per_ip = match &self.per_ip {
            Some((slots, limit)) => Some(slots.take(peer.ip()).ok_or(*limit)?),
            None => None,
        };
        Ok(ConnectionPermit {
            _global: global,
            _per_ip: per_ip,
        })
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
        let ip = ip.to_canonical();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn gate(max_connections: Option<usize>, max_per_ip: usize, deny: &[&str]) -> AcceptGate {
        let mut config = Config::default();
        config.security.deny = deny.iter().map(|d| d.to_string()).collect();
        AcceptGate::new(
            GateLimits {
                listener: "test",
                max_connections,
                max_per_ip: (max_per_ip, Limit::ConnectionsPerIp),
            },
            Security::from_config(&config).unwrap(),
            Arc::new(Metrics::new()),
            Arc::new(RefusalLog::new(Duration::from_secs(5))),
        )
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    /// A denied address is refused before any limit is taken; the others take their
    /// slots, up to the per-IP and the global limit, and give them back when dropped.
    #[test]
    fn denied_addresses_and_limits_are_refused_at_accept() {
        let gate = gate(Some(3), 2, &["127.0.0.9"]);
        assert!(gate.admit(peer("127.0.0.9")).is_none());
        let a = gate.admit(peer("127.0.0.1")).unwrap();
        let b = gate.admit(peer("::ffff:127.0.0.1")).unwrap();
        assert_eq!(
            gate.permit(peer("127.0.0.1")).unwrap_err(),
            Limit::ConnectionsPerIp,
            "a mapped address is its IPv4 one"
        );
        let c = gate.admit(peer("127.0.0.2")).unwrap();
        assert_eq!(
            gate.permit(peer("127.0.0.3")).unwrap_err(),
            Limit::Connections
        );
        drop((a, b));
        assert!(gate.admit(peer("127.0.0.1")).is_some());
        drop(c);
        assert!(gate
            .security
            .policy()
            .access
            .permits("127.0.0.2".parse().unwrap()));
    }
}
