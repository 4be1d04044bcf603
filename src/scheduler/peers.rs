//! The peer dispatchers as the scheduler sees them: which functions each advertises, its
//! advertised load, the calls this dispatcher forwarded to it, and whether it answered.
//! Plain data like the rest of the scheduler; the registry feeds it from the etcd watch and
//! the peer links.
//!
//! A peer is chosen by its advertised load plus the calls already forwarded to it and not
//! answered (the advertised figure is at most `cluster.publish_interval_ms` old; the second
//! term keeps a burst from piling onto the peer that was idlest half a second ago); among
//! equals, round-robin. A peer at `max_forwarded` is full; an unreachable one is skipped.
//!
//! The calls forwarded to one peer are shared fairly by the callers they are made for
//! (a token, else an address: [`ClientKey`]): one caller holds at most `max_per_caller` of
//! a peer's `max_forwarded` at once, so one tenant's burst cannot take every slot another
//! tenant's calls need. Past its share the peer is full for that caller alone.

use foldhash::{HashMap, HashMapExt, HashSet};

use super::{Scheduler, Waiting};
use crate::call::{ClientKey, FunctionName, PeerId};
use crate::snapshot::PeerSnapshot;

/// One peer dispatcher.
/// The scheduler's peer side: the registry reports what it hears of peers here.
impl<C: Waiting> Scheduler<C> {
    /// A peer dispatcher joined, or published its functions and load anew.
    pub fn peer_seen(&mut self, peer: PeerId, functions: Vec<FunctionName>, load: u32) {
        self.peers.seen(peer, functions, load);
    }

    /// The slots a peer dispatcher's workers have, by function, as its record publishes.
    pub fn peer_slots(&mut self, peer: &PeerId, slots: Vec<(FunctionName, u32)>) {
        if let Some(entry) = self.peers.peers.get_mut(peer) {
            entry.slots = slots.into_iter().collect();
        }
    }

    /// Jobs of `function` the workers of the peers that serve it may hold at once, all
    /// together (those that publish their slots).
    pub fn peer_capacity(&self, function: &FunctionName) -> u32 {
        (self.peers.peers.values())
            .filter(|p| p.functions.contains(function) && !p.lacking.contains(function))
            .filter_map(|p| p.slots.get(function))
            .sum()
    }

    /// A peer dispatcher left the cluster. Its forwarded calls are reported by their leases.
    pub fn peer_gone(&mut self, peer: &PeerId) {
        self.peers.gone(peer);
    }

    /// A peer could not be reached (`false`), or one such failure's skip ended (`true`).
    pub fn peer_reachable(&mut self, peer: &PeerId, reachable: bool) {
        self.peers.set_reachable(peer, reachable);
    }

    /// `peer` answered a call of `function` "no worker" (`lacking`), or may be tried again.
    pub fn peer_lacks(&mut self, peer: &PeerId, function: &FunctionName, lacking: bool) {
        self.peers.set_lacks(peer, function, lacking);
    }

    /// A call forwarded to `peer` for `caller` was answered or lost: it no longer counts.
    pub fn forward_finished(&mut self, peer: &PeerId, caller: Option<&ClientKey>) {
        self.peers.finished(peer, caller);
    }

    /// Every peer dispatcher, sorted by id.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        self.peers.snapshot()
    }
}

#[derive(Debug, Default)]
struct PeerEntry {
    functions: HashSet<FunctionName>,
    /// Advertised functions it answered "no worker" for since its last record.
    lacking: HashSet<FunctionName>,
    load: u32,
    /// The slots of its workers, by function (from its record).
    slots: HashMap<FunctionName, u32>,
    forwarded: u32,
    /// The calls in `forwarded` by the caller they are made for.
    by_caller: HashMap<ClientKey, u32>,
    /// Failures whose skip (`cluster.peer_retry_ms`) has not ended: unreachable while above
    /// 0, so the skip ends a retry period after the *last* failure, not the first (each
    /// failed call in flight would otherwise flip it back and forth).
    downs: u32,
}

/// Why no peer takes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoPeer {
    /// No peer advertises the function.
    NoneServes,
    /// Peers serve it, and the reachable ones are all at their forwarding limit.
    AllBusy,
    /// Peers serve it, but none can be reached now.
    Unreachable,
}

/// Every peer dispatcher, by id.
#[derive(Debug)]
pub(super) struct Peers {
    peers: HashMap<PeerId, PeerEntry>,
    max_forwarded: u32,
    /// Of which one caller may hold at most this many.
    max_per_caller: u32,
    /// Where the next search among equally loaded peers starts.
    cursor: usize,
}

impl Peers {
    pub(super) fn new(max_forwarded: u32) -> Self {
        Self {
            peers: HashMap::new(),
            max_forwarded,
            max_per_caller: max_forwarded,
            cursor: 0,
        }
    }

    pub(super) fn set_max_forwarded(&mut self, max_forwarded: u32, max_per_caller: u32) {
        self.max_forwarded = max_forwarded.max(1);
        self.max_per_caller = max_per_caller.clamp(1, self.max_forwarded);
    }

    /// A peer joined or published new functions or load. Its reachability is kept.
    pub(super) fn seen(&mut self, peer: PeerId, functions: Vec<FunctionName>, load: u32) {
        let entry = self.peers.entry(peer).or_default();
        entry.functions = functions.into_iter().collect();
        entry.lacking.clear();
        entry.load = load;
    }

    /// A peer left the cluster (its etcd record is gone).
    pub(super) fn gone(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// A peer could not be reached (`false`), or one such failure's skip ended (`true`).
    pub(super) fn set_reachable(&mut self, peer: &PeerId, reachable: bool) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.downs = match reachable {
                false => entry.downs + 1,
                true => entry.downs.saturating_sub(1),
            };
        }
    }

    /// `peer` answered that no worker of `function` is left there (`lacking: true`): its
    /// record is behind (its worker just left), so no call of `function` goes there until
    /// it publishes a record again or `lacking: false` says to try it again.
    pub(super) fn set_lacks(&mut self, peer: &PeerId, function: &FunctionName, lacking: bool) {
        if let Some(entry) = self.peers.get_mut(peer) {
            match lacking {
                true => entry.lacking.insert(function.clone()),
                false => entry.lacking.remove(function),
            };
        }
    }

    /// A call forwarded to `peer` for `caller` was answered, or lost.
    pub(super) fn finished(&mut self, peer: &PeerId, caller: Option<&ClientKey>) {
        let Some(entry) = self.peers.get_mut(peer) else {
            return;
        };
        entry.forwarded = entry.forwarded.saturating_sub(1);
        if let Some(caller) = caller {
            if let Some(held) = entry.by_caller.get_mut(caller) {
                *held -= 1;
                if *held == 0 {
                    entry.by_caller.remove(caller);
                }
            }
        }
    }

    /// Any peer advertises `function` (reachable or not, full or not).
    pub(super) fn serve(&self, function: &FunctionName) -> bool {
        self.peers.values().any(|p| p.functions.contains(function))
    }

    /// The peer to forward a call of `function` for `caller` to, its forwarded counts
    /// already raised.
    pub(super) fn pick(
        &mut self,
        function: &FunctionName,
        caller: Option<&ClientKey>,
    ) -> Result<PeerId, NoPeer> {
        let share = |peer: &PeerEntry| caller.and_then(|c| peer.by_caller.get(c)).copied();
        let mut serving: Vec<(&PeerId, &PeerEntry)> = (self.peers.iter())
            .filter(|(_, p)| p.functions.contains(function) && !p.lacking.contains(function))
            .collect();
        if serving.is_empty() {
            return Err(NoPeer::NoneServes);
        }
        serving.sort_by(|a, b| a.0.cmp(b.0));
        let n = serving.len();
        let mut best: Option<(usize, u64)> = None;
        let mut busy = false;
        for step in 0..n {
            let index = (self.cursor + step) % n;
            let peer = serving[index].1;
            if peer.downs > 0 {
                continue;
            }
            let full_for_caller = share(peer).is_some_and(|held| held >= self.max_per_caller);
            if peer.forwarded >= self.max_forwarded || full_for_caller {
                busy = true;
                continue;
            }
            let score = u64::from(peer.load) + u64::from(peer.forwarded);
            if best.is_none_or(|(_, least)| score < least) {
                best = Some((index, score));
            }
        }
        let no_peer = if busy {
            NoPeer::AllBusy
        } else {
            NoPeer::Unreachable
        };
        let (index, _) = best.ok_or(no_peer)?;
        self.cursor = (index + 1) % n;
        let id = serving[index].0.clone();
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.forwarded += 1;
            if let Some(caller) = caller {
                *entry.by_caller.entry(caller.clone()).or_insert(0) += 1;
            }
        }
        Ok(id)
    }

    /// Every peer, sorted by id.
    pub(super) fn snapshot(&self) -> Vec<PeerSnapshot> {
        let mut peers: Vec<PeerSnapshot> = (self.peers.iter())
            .map(|(id, p)| {
                let mut functions: Vec<String> =
                    p.functions.iter().map(|f| f.to_string()).collect();
                functions.sort();
                PeerSnapshot {
                    id: id.clone(),
                    functions,
                    load: p.load,
                    forwarded: p.forwarded,
                    reachable: p.downs == 0,
                }
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        peers
    }
}
