//! The cluster's metrics, registered in the dispatcher's registry: peers, forwarded calls
//! by outcome, the etcd session and the membership watch. Labels are bounded: a fixed set of outcomes, no peer
//! ids (a cluster that churns members would grow a series per dispatcher ever started).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::metrics::Metrics;

/// How a forwarded call ended, as counted (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// The peer's worker answered.
    Ok,
    /// The peer's worker reported its function failed.
    Error,
    /// The peer answered that no worker serves the function there (any more).
    CantDo,
    /// The peer refused for load.
    RateLimited,
    /// The call's deadline passed.
    Timeout,
    /// The peer's worker was lost, or the peer failed the call another way.
    WorkerLost,
    /// The peer could not be reached, or its connection dropped with the call in flight,
    /// or it was draining: the call was handed back to be retried.
    PeerLost,
}

impl ForwardOutcome {
    /// Every outcome.
    pub const ALL: [ForwardOutcome; 7] = [
        ForwardOutcome::Ok,
        ForwardOutcome::Error,
        ForwardOutcome::CantDo,
        ForwardOutcome::RateLimited,
        ForwardOutcome::Timeout,
        ForwardOutcome::WorkerLost,
        ForwardOutcome::PeerLost,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardOutcome::Ok => "ok",
            ForwardOutcome::Error => "error",
            ForwardOutcome::CantDo => "cant_do",
            ForwardOutcome::RateLimited => "rate_limited",
            ForwardOutcome::Timeout => "timeout",
            ForwardOutcome::WorkerLost => "worker_lost",
            ForwardOutcome::PeerLost => "peer_lost",
        }
    }
}

/// The cluster's metrics.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    peers: IntGauge,
    forwarded: IntCounterVec,
    etcd_up: IntGauge,
    etcd_sessions: IntCounter,
    watch_restarts: IntCounter,
}

impl ClusterMetrics {
    /// Creates the metrics in `metrics`' registry.
    pub fn new(metrics: &Metrics) -> Self {
        let peers = metrics.register(
            IntGauge::new(
                "nmid_cluster_peers",
                "Other dispatchers of the cluster known from etcd.",
            )
            .expect("valid metric"),
        );
        let forwarded = metrics.register(
            IntCounterVec::new(
                Opts::new(
                    "nmid_forwarded_calls_total",
                    "Calls forwarded to a peer dispatcher, by outcome.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        for outcome in ForwardOutcome::ALL {
            forwarded.with_label_values(&[outcome.as_str()]);
        }
        let etcd_up = metrics.register(
            IntGauge::new(
                "nmid_etcd_session_up",
                "1 while this dispatcher holds its etcd lease and its records are current.",
            )
            .expect("valid metric"),
        );
        let etcd_sessions = metrics.register(
            IntCounter::new(
                "nmid_etcd_sessions_total",
                "etcd leases granted to this dispatcher: 1 after a clean start, more after \
                 etcd lost the lease (an outage longer than its TTL).",
            )
            .expect("valid metric"),
        );
        let watch_restarts = metrics.register(
            IntCounter::new(
                "nmid_etcd_watch_restarts_total",
                "Membership watches that broke and were started again (an etcd member failed, \
                 or closed the connection).",
            )
            .expect("valid metric"),
        );
        Self {
            peers,
            forwarded,
            etcd_up,
            etcd_sessions,
            watch_restarts,
        }
    }

    /// Counts one forwarded call.
    pub fn forwarded(&self, outcome: ForwardOutcome) {
        self.forwarded.with_label_values(&[outcome.as_str()]).inc();
    }

    /// The number of peers known now.
    pub fn set_peers(&self, peers: usize) {
        self.peers.set(peers as i64);
    }

    /// The etcd session is up (the lease held, the keys current) or down.
    pub fn set_etcd_up(&self, up: bool) {
        self.etcd_up.set(i64::from(up));
    }

    /// etcd granted a new lease.
    pub fn lease_granted(&self) {
        self.etcd_sessions.inc();
    }

    /// The membership watch has broken `restarts` times since start (a running total).
    pub fn set_watch_restarts(&self, restarts: u64) {
        let counted = self.watch_restarts.get();
        if restarts > counted {
            self.watch_restarts.inc_by(restarts - counted);
        }
    }
}
