//! The registry's cluster side: peer dispatchers coming and going (the etcd session sends
//! [`PeerJoined`], [`PeerUpdated`], [`PeerLeft`]), the end of each call forwarded to one and
//! a peer that cannot be reached or has no worker of a function left (its link sends
//! [`ForwardFinished`], [`PeerUnreachable`], [`PeerLacks`]),
//! and the [`PeerPort`] through which the registry forwards calls.

use actix::prelude::*;
use tracing::{debug, info};

use super::{Assignment, Registry};
use crate::call::{ClientKey, FunctionName, PeerId};

/// A peer dispatcher joined the cluster (its membership record appeared in etcd).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerJoined {
    /// The peer.
    pub peer: PeerId,
    /// Where to send the calls forwarded to it.
    pub port: Box<dyn PeerPort>,
    /// Functions its workers serve.
    pub functions: Vec<FunctionName>,
    /// Its advertised load.
    pub load: u32,
    /// The slots of its workers, by function.
    pub slots: Vec<(FunctionName, u32)>,
}

/// A peer published new functions or a new load.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerUpdated {
    /// The peer.
    pub peer: PeerId,
    /// Functions its workers serve.
    pub functions: Vec<FunctionName>,
    /// Its advertised load.
    pub load: u32,
    /// The slots of its workers, by function.
    pub slots: Vec<(FunctionName, u32)>,
}

/// A peer left the cluster (its record is gone: it stopped, or its lease expired).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerLeft {
    /// The peer.
    pub peer: PeerId,
}

/// A call forwarded to a peer was answered or lost: it no longer counts against the peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ForwardFinished {
    /// The peer.
    pub peer: PeerId,
    /// Whom the call was made for (its share of the peer's slots).
    pub caller: Option<ClientKey>,
}

/// A peer could not be reached (or refused a call while draining): skip it for a while.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerUnreachable {
    /// The peer.
    pub peer: PeerId,
}

/// A peer answered a forwarded call "no worker" (its worker of the function just left, and
/// its record does not say so yet): send it no more calls of the function until it
/// publishes a record again, or for `cluster.peer_retry_ms`. The call itself is handed
/// back and placed again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerLacks {
    /// The peer.
    pub peer: PeerId,
    /// The function it has no worker of.
    pub function: FunctionName,
}

/// How the registry reaches a peer dispatcher it forwards calls to. The peer's link
/// implements it for its address, so the registry never names the cluster's actors.
pub trait PeerPort: Send {
    /// Forwards a call; its lease is answered with the peer's reply, or dropped if the peer
    /// cannot give one (the job then retries or fails with `WorkerLost`).
    fn forward(&self, assignment: Assignment);
    /// Shutdown gave up waiting: answer every call forwarded there `ShuttingDown` now.
    fn abandon(&self);
}

impl Handler<PeerJoined> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PeerJoined, _: &mut Self::Context) {
        info!(peer = %msg.peer, functions = msg.functions.len(), "peer dispatcher joined");
        self.scheduler
            .peer_seen(msg.peer.clone(), msg.functions, msg.load);
        self.scheduler.peer_slots(&msg.peer, msg.slots);
        self.peers.insert(msg.peer, msg.port);
    }
}

impl Handler<PeerUpdated> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PeerUpdated, _: &mut Self::Context) {
        if self.peers.contains_key(&msg.peer) {
            self.scheduler
                .peer_seen(msg.peer.clone(), msg.functions, msg.load);
            self.scheduler.peer_slots(&msg.peer, msg.slots);
        }
    }
}

impl Handler<PeerLeft> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PeerLeft, _: &mut Self::Context) {
        if self.peers.remove(&msg.peer).is_some() {
            info!(peer = %msg.peer, "peer dispatcher left");
        }
        self.scheduler.peer_gone(&msg.peer);
    }
}

impl Handler<ForwardFinished> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ForwardFinished, _: &mut Self::Context) {
        self.scheduler
            .forward_finished(&msg.peer, msg.caller.as_ref());
    }
}

impl Handler<PeerLacks> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PeerLacks, ctx: &mut Self::Context) {
        debug!(peer = %msg.peer, function = %msg.function.escaped(), "peer has no worker of the function: skipped for it a while");
        self.scheduler.peer_lacks(&msg.peer, &msg.function, true);
        ctx.run_later(self.peer_retry, move |registry, _| {
            (registry.scheduler).peer_lacks(&msg.peer, &msg.function, false);
        });
    }
}

impl Handler<PeerUnreachable> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PeerUnreachable, ctx: &mut Self::Context) {
        debug!(peer = %msg.peer, retry_ms = self.peer_retry.as_millis() as u64, "peer unreachable: skipped for a while");
        self.scheduler.peer_reachable(&msg.peer, false);
        ctx.run_later(self.peer_retry, move |registry, _| {
            registry.scheduler.peer_reachable(&msg.peer, true);
        });
    }
}
