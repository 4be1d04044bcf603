//! What a connection may make the dispatcher hold on the way in: the decoder of every session,
//! [`InboundCodec`], wraps the pure codec with the dispatcher-wide bound on bytes held in
//! frames that have begun but not arrived whole (`tcp.max_incomplete_frame_bytes`), and notes
//! since when the connection's current frame has been incomplete, for the deadline on
//! completing it (`tcp.frame_timeout_ms`, checked by the session).
//!
//! The bound is shared fairly: the connections of one client (its token once it has
//! authenticated, else its IP address) hold at most `tcp.max_incomplete_frame_bytes_per_client`
//! of it together ([`ClientShare`]), so one client's almost-complete frames cannot take the
//! room another client's calls need. And until a connection has said who it is (auth on),
//! its first frame may be no larger than `tcp.max_first_frame_bytes` (an `AUTH` frame is its
//! secret), unless its address or certificate is granted already (`[[auth.v1_peers]]`).
//!
//! The HTTP front end bounds the request bodies it is receiving with a [`FrameBudget`] of its
//! own, shared by client the same way (`http.max_receiving_body_bytes_per_client`).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::BytesMut;
use foldhash::{HashMap, HashMapExt};
use tokio_util::codec::Decoder;

use crate::call::ClientKey;
use crate::codec::{BadBody, CodecError, Frame, NmidCodec};

/// The length of a frame header; its last four bytes announce the body's length.
const HEADER_LEN: usize = 12;

/// Why a connection's input was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The bytes are not valid frames.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Frames not yet whole hold too much memory across all connections, or across this
    /// client's.
    #[error("frames not yet whole would hold {wanted} bytes on {whose}, over {key} ({max})")]
    IncompleteFrames {
        /// What they would hold with this connection's frame.
        wanted: usize,
        /// The bound.
        max: usize,
        /// `all connections` or `this client's connections`.
        whose: &'static str,
        /// The config key of the bound.
        key: &'static str,
    },
}

impl From<io::Error> for InboundError {
    fn from(err: io::Error) -> Self {
        Self::Codec(CodecError::Io(err))
    }
}

/// Bytes held in incomplete frames by all connections of one dispatcher, under a bound, and
/// by each client's connections, under a share of it.
#[derive(Debug)]
pub struct FrameBudget {
    held: AtomicUsize,
    max: usize,
    /// The share of one client (`tcp.max_incomplete_frame_bytes_per_client`).
    per_client: usize,
    /// The shares of the clients with a connection open, by client.
    clients: Mutex<HashMap<ClientKey, Weak<ClientShare>>>,
}

/// The bytes one client's connections hold in incomplete frames; shared by its connections,
/// forgotten when the last one closes.
#[derive(Debug)]
pub struct ClientShare {
    held: AtomicUsize,
    key: ClientKey,
    budget: Weak<FrameBudget>,
}

impl FrameBudget {
    /// A budget of `max` bytes, of which one client may hold `per_client`.
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
            per_client,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The share of `client`, shared with its other connections.
    pub fn share(self: &Arc<Self>, client: ClientKey) -> Arc<ClientShare> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = clients.get(&client).and_then(Weak::upgrade) {
            return share;
        }
        let share = Arc::new(ClientShare {
            held: AtomicUsize::new(0),
            key: client.clone(),
            budget: Arc::downgrade(self),
        });
        clients.insert(client, Arc::downgrade(&share));
        share
    }

    /// Clients with a connection open.
    pub fn clients(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Bytes `share` may still take: what is left of its share and of the whole.
    fn free(&self, share: &ClientShare) -> usize {
        let own = self
            .per_client
            .saturating_sub(share.held.load(Ordering::Relaxed));
        own.min(self.max.saturating_sub(self.held()))
    }

    /// Takes `more` bytes for `share`, unless that would go past its share or the whole.
    pub(crate) fn take(&self, share: &ClientShare, more: usize) -> Result<(), InboundError> {
        take_under(&share.held, more, self.per_client).map_err(|wanted| {
            InboundError::IncompleteFrames {
                wanted,
                max: self.per_client,
                whose: "this client's connections",
                key: "tcp.max_incomplete_frame_bytes_per_client",
            }
        })?;
        take_under(&self.held, more, self.max).map_err(|wanted| {
            share.held.fetch_sub(more, Ordering::Relaxed);
            InboundError::IncompleteFrames {
                wanted,
                max: self.max,
                whose: "all connections",
                key: "tcp.max_incomplete_frame_bytes",
            }
        })
    }

    /// Gives back `bytes` that `share` took.
    pub(crate) fn give_back(&self, share: &ClientShare, bytes: usize) {
        share.held.fetch_sub(bytes, Ordering::Relaxed);
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let Some(budget) = self.budget.upgrade() else {
            return;
        };
        let mut clients = budget.clients.lock().unwrap_or_else(|e| e.into_inner());
        // Unless another connection of the client made a new share meanwhile.
        if clients
            .get(&self.key)
            .is_some_and(|w| w.strong_count() == 0)
        {
            clients.remove(&self.key);
        }
    }
}

/// Adds `more` to `held` unless that would go past `max`; else what it would come to.
fn take_under(held: &AtomicUsize, more: usize, max: usize) -> Result<(), usize> {
    let mut now = held.load(Ordering::Relaxed);
    loop {
        let wanted = now.saturating_add(more);
        if wanted > max {
            return Err(wanted);
        }
        match held.compare_exchange_weak(now, wanted, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => now = actual,
        }
    }
}

/// A frame as a session receives it: whole, or with a body that could not be read (its
/// bytes consumed, so the frames after it are still in step).
pub type Inbound = Result<Frame, BadBody>;

/// Since when a connection's current frame has been incomplete (`None`: no frame begun).
pub type PartialSince = Rc<Cell<Option<Instant>>>;

/// The decoder of a dispatcher connection: [`NmidCodec`], plus the bytes it holds in an
/// incomplete frame counted against the dispatcher's [`FrameBudget`] and its client's share.
#[derive(Debug)]
pub struct InboundCodec {
    codec: NmidCodec,
    budget: Arc<FrameBudget>,
    share: Arc<ClientShare>,
    /// Bytes of an incomplete frame this connection holds in the budget: its buffer's
    /// capacity.
    held: usize,
    partial_since: PartialSince,
    /// The largest body of the next frame, while it is lower than the codec's: the first
    /// frame of a connection not identified yet.
    first_frame_max: Option<usize>,
}

impl InboundCodec {
    /// A decoder refusing bodies over `max_frame_bytes`, holding incomplete frames in
    /// `budget` under `share`, and noting in `partial_since` when a frame begins.
    pub fn new(
        max_frame_bytes: usize,
        budget: Arc<FrameBudget>,
        share: Arc<ClientShare>,
        partial_since: PartialSince,
    ) -> Self {
        Self {
            codec: NmidCodec::new(max_frame_bytes),
            budget,
            share,
            held: 0,
            partial_since,
            first_frame_max: None,
        }
    }

    /// Refuses a first frame with a body over `max` (a connection that has not said who it
    /// is yet), until [`InboundCodec::identified`].
    pub fn limit_first_frame(&mut self, max: usize) {
        self.first_frame_max = Some(max);
    }

    /// The connection is who `share` says (it authenticated): its frames count against that
    /// share from now on, and may be as large as any.
    pub fn identified(&mut self, share: Arc<ClientShare>) {
        self.first_frame_max = None;
        if Arc::ptr_eq(&share, &self.share) {
            return;
        }
        // Moved as they are: the new share may go over by this one frame at most.
        share.held.fetch_add(self.held, Ordering::Relaxed);
        self.share.held.fetch_sub(self.held, Ordering::Relaxed);
        self.share = share;
    }

    /// This connection's incomplete frame is now `bytes` long (0: none).
    fn hold(&mut self, bytes: usize) -> Result<(), InboundError> {
        match bytes.cmp(&self.held) {
            std::cmp::Ordering::Greater => self.budget.take(&self.share, bytes - self.held)?,
            std::cmp::Ordering::Less => self.budget.give_back(&self.share, self.held - bytes),
            std::cmp::Ordering::Equal => {}
        }
        self.held = bytes;
        match (bytes, self.partial_since.get()) {
            (0, _) => self.partial_since.set(None),
            (_, None) => self.partial_since.set(Some(Instant::now())),
            _ => {}
        }
        Ok(())
    }
}

impl Decoder for InboundCodec {
    type Item = Inbound;
    type Error = InboundError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, InboundError> {
        if let (Some(max), Some(header)) = (self.first_frame_max, src.get(..HEADER_LEN)) {
            let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
            if len as usize > max {
                self.hold(0)?;
                return Err(CodecError::FrameTooLarge {
                    len: u64::from(len),
                    max,
                }
                .into());
            }
        }
        // No more room is made for an incomplete frame than the budget has left (this
        // connection's own bytes included), so memory is not taken before it is refused.
        let room = self.budget.free(&self.share) + self.held;
        let read_ahead = self.codec.earned_read_ahead(src).min(room);
        let frame = self.codec.decode_frame_within(src, read_ahead);
        match &frame {
            // Whole frames leave the buffer; what is left (if anything) is the next frame's
            // beginning, counted when the decoder comes back for it and finds it incomplete.
            Ok(Some(_)) if self.held > 0 => self.hold(0)?,
            Ok(Some(_)) => {}
            // What the buffer has allocated, not what arrived: it grows by doubling, so the
            // bytes received can be half of the memory held.
            Ok(None) if src.is_empty() => self.hold(0)?,
            Ok(None) => self.hold(src.capacity())?,
            Err(_) => self.hold(0)?,
        }
        Ok(frame?)
    }
}

impl Drop for InboundCodec {
    fn drop(&mut self) {
        self.budget.give_back(&self.share, self.held);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn partial_frame(body_len: u32, sent: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(3); // client
        buf.put_u32(16); // C_DO_JOB
        buf.put_u32(body_len);
        buf.put_slice(&vec![0; sent]);
        buf
    }

    fn client(last: u8) -> ClientKey {
        ClientKey::Ip(std::net::IpAddr::from([10, 0, 0, last]))
    }

    /// A decoder of frames up to `max` bodies, for `who`, in `budget`.
    fn codec(max: usize, budget: &Arc<FrameBudget>, who: ClientKey) -> InboundCodec {
        InboundCodec::new(
            max,
            budget.clone(),
            budget.share(who),
            PartialSince::default(),
        )
    }

    /// Two connections' incomplete frames share one budget: the one that would go past it is
    /// refused, and a connection's bytes come back when its frame completes or it closes.
    #[test]
    fn incomplete_frames_share_one_bounded_budget() {
        // What each partial frame's buffer allocates once decoded (room to spare).
        let capacity_of = |body_len, sent| {
            let mut codec = codec(1000, &FrameBudget::new(1 << 20, 1 << 20), client(1));
            let mut buf = partial_frame(body_len, sent);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.capacity()
        };
        let (first, second) = (capacity_of(500, 48), capacity_of(500, 30));
        assert!(first >= 60 && second >= 42, "{first} {second}");
        // Room for either, not both.
        let max = first + second - 1;
        let budget = FrameBudget::new(max, max);
        let mut a = codec(1000, &budget, client(1));
        let mut b = codec(1000, &budget, client(2));
        assert!(a.decode(&mut partial_frame(500, 48)).unwrap().is_none());
        assert_eq!(budget.held(), first);
        let refused = b.decode(&mut partial_frame(500, 30));
        assert!(
            matches!(refused, Err(InboundError::IncompleteFrames { wanted, max: m, .. })
                if wanted == first + second && m == max),
            "{refused:?}"
        );
        assert_eq!(budget.held(), first);
        drop(a);
        assert_eq!(budget.held(), 0);
        assert!(b.decode(&mut partial_frame(500, 30)).unwrap().is_none());
        assert_eq!(budget.held(), second);
    }

    /// The connections of one client together hold at most its share: its next frame is
    /// refused while another client's still fits the whole; a share is forgotten when its
    /// client's last connection closes.
    #[test]
    fn one_client_holds_at_most_its_share() {
        let budget = FrameBudget::new(1 << 20, 1000);
        let mut greedy = Vec::new();
        for _ in 0..8 {
            let mut codec = codec(1 << 20, &budget, client(1));
            match codec.decode(&mut partial_frame(10_000, 300)) {
                Ok(None) => greedy.push(codec),
                Err(InboundError::IncompleteFrames { key, .. }) => {
                    assert_eq!(key, "tcp.max_incomplete_frame_bytes_per_client");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!greedy.is_empty() && greedy.len() < 8, "{}", greedy.len());
        assert!(budget.held() <= 1000);
        let mut other = codec(1 << 20, &budget, client(2));
        assert!(other
            .decode(&mut partial_frame(10_000, 300))
            .unwrap()
            .is_none());
        assert_eq!(budget.clients(), 2);
        greedy.clear();
        assert_eq!(budget.clients(), 1);
    }

    /// A first frame over its limit is refused from its header; once the connection is
    /// identified its frames may be as large as any, counted in its new share.
    #[test]
    fn a_first_frame_is_small_until_the_connection_is_identified() {
        let budget = FrameBudget::new(1 << 20, 1 << 20);
        let mut codec = codec(1 << 20, &budget, client(1));
        codec.limit_first_frame(64);
        let refused = codec.decode(&mut partial_frame(65, 0));
        assert!(
            matches!(
                refused,
                Err(InboundError::Codec(CodecError::FrameTooLarge {
                    len: 65,
                    max: 64
                }))
            ),
            "{refused:?}"
        );
        let token = budget.share(ClientKey::Token("web".into()));
        codec.identified(token.clone());
        assert!(codec
            .decode(&mut partial_frame(5000, 100))
            .unwrap()
            .is_none());
        assert!(token.held.load(Ordering::Relaxed) > 0);
        assert_eq!(token.held.load(Ordering::Relaxed), budget.held());
    }

    /// A buffer that grew by doubling is counted at its capacity, not at the bytes in it.
    #[test]
    fn the_budget_counts_what_the_buffer_allocated() {
        let budget = FrameBudget::new(1 << 20, 1 << 20);
        let mut codec = codec(1 << 20, &budget, client(1));
        let mut buf = partial_frame(100_000, 0);
        buf.reserve(70_000);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= 70_000);
        assert_eq!(budget.held(), buf.capacity());
    }

    /// The clock starts when a frame begins and stops when no frame is incomplete.
    #[test]
    fn the_partial_clock_runs_only_while_a_frame_is_incomplete() {
        let since = PartialSince::default();
        let budget = FrameBudget::new(1 << 20, 1 << 20);
        let mut codec =
            InboundCodec::new(1000, budget.clone(), budget.share(client(1)), since.clone());
        let mut buf = BytesMut::new();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(since.get().is_none());
        buf.put_u32(3);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(since.get().is_some());
        buf.clear();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(since.get().is_none());
    }
}
