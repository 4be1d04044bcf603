//! What a connection may make the dispatcher hold on the way in: the decoder of every session,
//! [`InboundCodec`], wraps the pure codec with the dispatcher-wide bound on bytes held in
//! frames that have begun but not arrived whole (`tcp.max_incomplete_frame_bytes`), and notes
//! since when the connection's current frame has been incomplete, for the deadline on
//! completing it (`tcp.frame_timeout_ms`, checked by the session).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::codec::{BadBody, CodecError, Frame, NmidCodec};

/// Why a connection's input was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The bytes are not valid frames.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Frames not yet whole hold too much memory across all connections.
    #[error(
        "frames not yet whole would hold {wanted} bytes on all connections, over \
         tcp.max_incomplete_frame_bytes ({max})"
    )]
    IncompleteFrames {
        /// What they would hold with this connection's frame.
        wanted: usize,
        /// The bound.
        max: usize,
    },
}

impl From<io::Error> for InboundError {
    fn from(err: io::Error) -> Self {
        Self::Codec(CodecError::Io(err))
    }
}

/// Bytes held in incomplete frames by all connections of one dispatcher, under a bound.
#[derive(Debug)]
pub struct FrameBudget {
    held: AtomicUsize,
    max: usize,
}

impl FrameBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Bytes that may still be taken.
    fn free(&self) -> usize {
        self.max.saturating_sub(self.held())
    }

    /// Takes `more` bytes, unless that would go past the bound.
    fn take(&self, more: usize) -> Result<(), InboundError> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let wanted = held.saturating_add(more);
            if wanted > self.max {
                return Err(InboundError::IncompleteFrames {
                    wanted,
                    max: self.max,
                });
            }
            match (self.held).compare_exchange_weak(
                held,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => held = now,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A frame as a session receives it: whole, or with a body that could not be read (its
/// bytes consumed, so the frames after it are still in step).
pub type Inbound = Result<Frame, BadBody>;

/// Since when a connection's current frame has been incomplete (`None`: no frame begun).
pub type PartialSince = Rc<Cell<Option<Instant>>>;

/// The decoder of a dispatcher connection: [`NmidCodec`], plus the bytes it holds in an
/// incomplete frame counted against the dispatcher's [`FrameBudget`].
#[derive(Debug)]
pub struct InboundCodec {
    codec: NmidCodec,
    budget: Arc<FrameBudget>,
    /// Bytes of an incomplete frame this connection holds in the budget: its buffer's
    /// capacity.
    held: usize,
    partial_since: PartialSince,
}

impl InboundCodec {
    /// A decoder refusing bodies over `max_frame_bytes`, holding incomplete frames in
    /// `budget`, and noting in `partial_since` when a frame begins.
    pub fn new(
        max_frame_bytes: usize,
        budget: Arc<FrameBudget>,
        partial_since: PartialSince,
    ) -> Self {
        Self {
            codec: NmidCodec::new(max_frame_bytes),
            budget,
            held: 0,
            partial_since,
        }
    }

    /// This connection's incomplete frame is now `bytes` long (0: none).
    fn hold(&mut self, bytes: usize) -> Result<(), InboundError> {
        match bytes.cmp(&self.held) {
            std::cmp::Ordering::Greater => self.budget.take(bytes - self.held)?,
            std::cmp::Ordering::Less => self.budget.give_back(self.held - bytes),
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
        // No more room is made for an incomplete frame than the budget has left (this
        // connection's own share included), so memory is not taken before it is refused.
        let room = self.budget.free() + self.held;
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
        self.budget.give_back(self.held);
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

    /// Two connections' incomplete frames share one budget: the one that would go past it is
    /// refused, and a connection's bytes come back when its frame completes or it closes.
    #[test]
    fn incomplete_frames_share_one_bounded_budget() {
        // What each partial frame's buffer allocates once decoded (room to spare).
        let capacity_of = |body_len, sent| {
            let mut codec = InboundCodec::new(1000, FrameBudget::new(1 << 20), <_>::default());
            let mut buf = partial_frame(body_len, sent);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.capacity()
        };
        let (first, second) = (capacity_of(500, 48), capacity_of(500, 30));
        assert!(first >= 60 && second >= 42, "{first} {second}");
        // Room for either, not both.
        let max = first + second - 1;
        let budget = FrameBudget::new(max);
        let mut a = InboundCodec::new(1000, budget.clone(), PartialSince::default());
        let mut b = InboundCodec::new(1000, budget.clone(), PartialSince::default());
        assert!(a.decode(&mut partial_frame(500, 48)).unwrap().is_none());
        assert_eq!(budget.held(), first);
        let refused = b.decode(&mut partial_frame(500, 30));
        assert!(
            matches!(refused, Err(InboundError::IncompleteFrames { wanted, max: m })
                if wanted == first + second && m == max),
            "{refused:?}"
        );
        assert_eq!(budget.held(), first);
        drop(a);
        assert_eq!(budget.held(), 0);
        assert!(b.decode(&mut partial_frame(500, 30)).unwrap().is_none());
        assert_eq!(budget.held(), second);
    }

    /// A buffer that grew by doubling is counted at its capacity, not at the bytes in it.
    #[test]
    fn the_budget_counts_what_the_buffer_allocated() {
        let budget = FrameBudget::new(1 << 20);
        let mut codec = InboundCodec::new(1 << 20, budget.clone(), PartialSince::default());
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
        let mut codec = InboundCodec::new(1000, FrameBudget::new(1 << 20), since.clone());
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
