//! The dispatcher's view of its peers: it follows the membership records (see
//! [`super::etcd::follow_members`]) and tells the registry who joined ([`PeerJoined`], with a
//! new [`PeerLink`]), who published new functions or load ([`PeerUpdated`]), and who left
//! ([`PeerLeft`]: the record was deleted, its lease expired, or the peer is draining).
//!
//! While etcd is unreachable the follower keeps the last known members, so forwarding to
//! known peers goes on; a peer that died meanwhile is found out by its link (unreachable:
//! skipped a while) and removed once etcd answers again.

use std::collections::BTreeMap;

use actix::prelude::*;
use tokio::sync::watch;

use super::etcd::Members;
use super::metrics::ClusterMetrics;
use super::peer_link::{LinkSettings, PeerLink};
use super::record::MemberRecord;
use crate::actors::registry::{PeerJoined, PeerLeft, PeerUpdated, Registry};
use crate::call::{FunctionName, PeerId};

/// What the follower needs to start links.
pub struct PeerFollower {
    /// This dispatcher's id (its own record is not a peer).
    pub own_id: String,
    /// Its advertised address (an earlier run's record there is not a peer either).
    pub own_addr: std::net::SocketAddr,
    /// The registry to tell.
    pub registry: Addr<Registry>,
    /// Where the links run (the registry's thread: a forward is then a queue push).
    pub arbiter: ArbiterHandle,
    /// How the links connect.
    pub links: LinkSettings,
    /// Peer count and forwarded calls.
    pub metrics: ClusterMetrics,
}

impl PeerFollower {
    /// Follows `members` until its sender is gone.
    pub async fn run(self, mut members: watch::Receiver<Members>) {
        let mut known: BTreeMap<String, MemberRecord> = BTreeMap::new();
        loop {
            let now = members.borrow_and_update().clone();
            self.apply(&now, &mut known);
            if members.changed().await.is_err() {
                return;
            }
        }
    }

    /// Tells the registry how `now` differs from `known`, and updates `known`.
    fn apply(&self, now: &Members, known: &mut BTreeMap<String, MemberRecord>) {
        let peers: BTreeMap<&String, &MemberRecord> = (now.members.iter())
            .filter(|(_, m)| !m.record.is_self(&self.own_id, self.own_addr) && !m.record.draining)
            .map(|(id, m)| (id, &m.record))
            .collect();
        known.retain(|id, _| {
            let stays = peers.contains_key(id);
            if !stays {
                let peer = PeerId::from(id.as_str());
                self.registry.do_send(PeerLeft { peer });
            }
            stays
        });
        for (id, record) in peers {
            let peer = PeerId::from(id.as_str());
            let functions: Vec<FunctionName> = (record.functions.iter())
                .map(|f| FunctionName::from(f.as_str()))
                .collect();
            let load = record.load;
            match known.get(id) {
                Some(old) if old == record => continue,
                // Same id, new address (a dispatcher with a fixed `cluster.id` restarted
                // elsewhere): a new link.
                Some(old) if old.tcp_addr != record.tcp_addr => {
                    let left = PeerLeft { peer: peer.clone() };
                    self.registry.do_send(left);
                    self.join(peer, record, functions);
                }
                Some(_) => {
                    let update = PeerUpdated {
                        peer,
                        functions,
                        load,
                        slots: slots_of(record),
                    };
                    self.registry.do_send(update);
                }
                None => self.join(peer, record, functions),
            }
            known.insert(id.clone(), record.clone());
        }
        self.metrics.set_peers(known.len());
        self.metrics.set_watch_restarts(now.watch_restarts);
    }

    /// Starts a link to `peer` and tells the registry it joined.
    fn join(&self, peer: PeerId, record: &MemberRecord, functions: Vec<FunctionName>) {
        let port = Box::new(self.start_link(peer.clone(), record));
        let joined = PeerJoined {
            peer,
            port,
            functions,
            load: record.load,
            slots: slots_of(record),
        };
        self.registry.do_send(joined);
    }

    fn start_link(&self, peer: PeerId, record: &MemberRecord) -> Addr<PeerLink> {
        let link = PeerLink::new(
            peer,
            record.tcp_addr.to_string(),
            &self.own_id,
            &self.links,
            self.registry.clone(),
            self.metrics.clone(),
        );
        PeerLink::start_in_arbiter(&self.arbiter, move |_| link)
    }
}

/// The slots a peer's record publishes, by function.
fn slots_of(record: &MemberRecord) -> Vec<(FunctionName, u32)> {
    (record.slots.iter())
        .map(|(function, slots)| (FunctionName::from(function.as_str()), *slots))
        .collect()
}
