//! What `GET /api/v1/cluster` and the dashboard show: every dispatcher of the cluster (this
//! one first) with its addresses, functions, load and when it was last seen, the etcd
//! session's state, and per peer what this dispatcher forwards to it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

use super::etcd::Members;
use super::record::MemberRecord;
use super::session::SessionState;
use crate::snapshot::RegistrySnapshot;

/// A handle on the cluster's state, cheap to clone, for the HTTP front end.
#[derive(Debug, Clone)]
pub struct ClusterView {
    own_id: String,
    endpoints: Vec<String>,
    members: watch::Receiver<Members>,
    session: Arc<Mutex<SessionState>>,
}

/// `GET /api/v1/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Discovery is on.
    pub enabled: bool,
    /// This dispatcher's id.
    pub id: Option<String>,
    /// The etcd session.
    pub etcd: Option<EtcdView>,
    /// Every dispatcher known, this one first.
    pub members: Vec<MemberView>,
}

/// The etcd session as reported.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdView {
    /// The endpoints.
    pub endpoints: Vec<String>,
    /// `up` (lease held, records current) or `down` (serving locally, retrying).
    pub state: &'static str,
    /// Seconds since the state last changed.
    pub since_seconds: u64,
    /// The membership watch is connected.
    pub watching: bool,
    /// Why the session last went down.
    pub last_error: Option<String>,
}

/// One dispatcher as reported.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// Its id.
    pub id: String,
    /// This dispatcher.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Its nmid protocol address.
    pub tcp_addr: String,
    /// Its HTTP address.
    pub http_addr: Option<String>,
    /// Its version.
    pub version: String,
    /// When it started, Unix seconds.
    pub started_at: u64,
    /// Functions its workers serve.
    pub functions: Vec<String>,
    /// Its jobs in flight and queued, as published.
    pub load: u32,
    /// It is shutting down.
    pub draining: bool,
    /// Seconds since its record was last read from etcd (this one: 0).
    pub last_seen_seconds: u64,
    /// Calls this dispatcher forwarded to it, unanswered yet (peers only).
    pub forwarded: Option<u32>,
    /// Its link answered lately (peers only; an unreachable peer is skipped a while).
    pub reachable: Option<bool>,
}

impl ClusterView {
    pub(super) fn new(
        own_id: String,
        endpoints: Vec<String>,
        members: watch::Receiver<Members>,
        session: Arc<Mutex<SessionState>>,
    ) -> Self {
        Self {
            own_id,
            endpoints,
            members,
            session,
        }
    }

    /// The HTTP address of the live dispatcher (not this one) whose background jobs have
    /// node name `node`, if the cluster has one.
    pub fn jobs_owner(&self, node: &str) -> Option<std::net::SocketAddr> {
        let members = self.members.borrow();
        let own_addr = self.session.lock().expect("session state").record.tcp_addr;
        (members.members.values())
            .filter(|m| !m.record.is_self(&self.own_id, own_addr))
            .find(|m| m.record.jobs_node.as_deref() == Some(node))
            .and_then(|m| m.record.http_addr)
    }

    /// The report when discovery is off.
    pub fn disabled() -> ClusterReport {
        ClusterReport {
            enabled: false,
            id: None,
            etcd: None,
            members: Vec::new(),
        }
    }

    /// The report now; `snapshot` (the registry's) gives this dispatcher's functions and
    /// load and what it forwards to each peer.
    pub fn report(&self, snapshot: &RegistrySnapshot) -> ClusterReport {
        let session = self.session.lock().expect("session state").clone();
        let members = self.members.borrow().clone();
        let now = SystemTime::now();
        let mut own = session.record.clone();
        own.functions = (snapshot.functions.iter())
            .filter(|f| f.workers > 0)
            .map(|f| f.name.clone())
            .collect();
        own.load =
            u32::try_from(snapshot.in_flight() + snapshot.queued() as u64).unwrap_or(u32::MAX);
        let mut views = vec![member_view(&own, true, 0, None)];
        let peers =
            (members.members.iter()).filter(|(_, m)| !m.record.is_self(&self.own_id, own.tcp_addr));
        for (id, member) in peers {
            let seen = now.duration_since(member.seen_at).unwrap_or_default();
            let peer = snapshot.peers.iter().find(|p| *p.id.0 == **id);
            views.push(member_view(&member.record, false, seen.as_secs(), peer));
        }
        let since = now.duration_since(session.since).unwrap_or_default();
        ClusterReport {
            enabled: true,
            id: Some(self.own_id.clone()),
            etcd: Some(EtcdView {
                endpoints: self.endpoints.clone(),
                state: if session.up { "up" } else { "down" },
                since_seconds: since.as_secs(),
                watching: members.connected,
                last_error: session.last_error,
            }),
            members: views,
        }
    }
}

fn member_view(
    record: &MemberRecord,
    is_self: bool,
    last_seen_seconds: u64,
    peer: Option<&crate::snapshot::PeerSnapshot>,
) -> MemberView {
    MemberView {
        id: record.id.clone(),
        is_self,
        tcp_addr: record.tcp_addr.to_string(),
        http_addr: record.http_addr.map(|a| a.to_string()),
        version: record.version.clone(),
        started_at: record.started_at,
        functions: record.functions.clone(),
        load: record.load,
        draining: record.draining,
        last_seen_seconds,
        forwarded: peer.map(|p| p.forwarded),
        reachable: (!is_self).then(|| peer.is_none_or(|p| p.reachable)),
    }
}
