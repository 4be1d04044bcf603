//! How a job's partial results and progress leave the worker: [`Job::send_partial`] and
//! [`Job::progress`] queue their frame in the link's [`Outbox`] (the handler runs on the
//! link's thread) and wake the link, which writes the queue on its next turn and always
//! before any answer, so a job's partials reach the dispatcher in order and before its result.
//!
//! The outbox holds at most the builder's `max_partial_bytes_queued` of partial data, and the
//! link hands it to the connection's writer only while the writer has little left to write
//! ([`WRITER_LOW_BYTES`]; the writer is metered: bytes encoded into it against bytes the
//! socket took). A connection that stops draining therefore fills the outbox, and then
//! [`Job::send_partial`] refuses ([`PartialError::Backlog`]) and [`Job::send_partial_paced`]
//! waits until the link has taken the queue: the worker holds at most about twice the bound,
//! however long the stall. An answer takes the queue first whatever the writer holds (a job's
//! partials go before its answer). A run of progress reports with nothing between them keeps
//! only the last.
//!
//! [`Job::send_partial`]: crate::Job::send_partial
//! [`Job::send_partial_paced`]: crate::Job::send_partial_paced
//! [`Job::progress`]: crate::Job::progress

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use actix::io::FramedWrite;
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::DispatcherLink;
use nmid_proto::codec::{self, Frame, NmidCodec, TaggedPartial, TaggedProgress};
use nmid_proto::net::WriteHalf;

/// The outbox goes to the writer only while the writer holds at most this many bytes not
/// yet taken by the socket.
const WRITER_LOW_BYTES: u64 = 64 * 1024;

/// A connection's writer, metered by its link's outbox.
pub(super) type LinkWriter = FramedWrite<Frame, Metered, MeteredCodec>;

/// To the link: frames are waiting in its outbox.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct FlushPartials;

/// What a queued partial counts beyond its data: its frame's header and job id.
const PARTIAL_FRAME_OVERHEAD: usize = 24;

/// The frames of partials not yet written, with the connection generation of their job.
pub(crate) struct Outbox {
    queue: RefCell<VecDeque<(u64, Frame)>>,
    /// Bytes of partial data in `queue`.
    bytes: Cell<usize>,
    /// At most this many bytes of partial data queued (one partial is always taken when the
    /// queue is empty).
    max_bytes: usize,
    /// Woken when the link takes the queue.
    taken: tokio::sync::Notify,
    /// Bytes encoded into the current connection's writer.
    encoded: Cell<u64>,
    /// Bytes of it the socket has taken.
    written: Cell<u64>,
    /// The queue waits for the writer to drain: the meter wakes the link when it has.
    stalled: Cell<bool>,
    /// A [`FlushPartials`] is on its way.
    scheduled: Cell<bool>,
    link: Recipient<FlushPartials>,
}

impl Outbox {
    pub(super) fn new(link: Recipient<FlushPartials>, max_bytes: usize) -> Self {
        Self {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_bytes,
            taken: tokio::sync::Notify::new(),
            encoded: Cell::new(0),
            written: Cell::new(0),
            stalled: Cell::new(false),
            scheduled: Cell::new(false),
            link,
        }
    }

    fn push(&self, generation: u64, frame: Frame) {
        let mut queue = self.queue.borrow_mut();
        match (&frame, queue.back_mut()) {
            // A newer report of the same job replaces one not yet written.
            (Frame::WJobProgress(new), Some((g, Frame::WJobProgress(old))))
                if *g == generation && old.id == new.id =>
            {
                *old = *new;
            }
            _ => queue.push_back((generation, frame)),
        }
        drop(queue);
        self.schedule();
    }

    fn schedule(&self) {
        if !self.scheduled.replace(true) {
            self.link.do_send(FlushPartials);
        }
    }

    /// Bytes the writer holds that the socket has not taken.
    fn unwritten(&self) -> u64 {
        self.encoded.get() - self.written.get()
    }

    /// Takes every frame waiting, waking the handlers waiting for room.
    fn take(&self) -> VecDeque<(u64, Frame)> {
        self.bytes.set(0);
        self.taken.notify_waiters();
        std::mem::take(&mut *self.queue.borrow_mut())
    }
}

/// Where one tagged job's partials go (v1 jobs have none: v1 has no frame for them).
pub(crate) struct PartialTo {
    pub(super) job_id: u64,
    pub(super) generation: u64,
    pub(super) max_frame_bytes: usize,
    pub(super) outbox: Rc<Outbox>,
}

impl std::fmt::Debug for PartialTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialTo")
            .field("job_id", &self.job_id)
            .finish()
    }
}

/// Why a partial result was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartialError {
    /// Its frame would be over the worker's `max_frame_bytes`, which the dispatcher would
    /// refuse by closing the connection (losing every job on it): split it.
    #[error("partial too large: a {len}-byte frame body is over the {max}-byte frame limit (max_frame_bytes); send it in smaller pieces")]
    TooLarge {
        /// The frame body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection is not keeping up: `queued` bytes of partials wait to be written, and
    /// this one would take them over the worker's `max_partial_bytes_queued`. It was not
    /// queued: send it again once there is room ([`Job::send_partial_paced`] waits for it).
    ///
    /// [`Job::send_partial_paced`]: crate::Job::send_partial_paced
    #[error("partials backlog: {queued} bytes of partials wait for the connection, over the {max}-byte max_partial_bytes_queued with this one; wait (send_partial_paced) and send it again")]
    Backlog {
        /// Bytes of partials waiting.
        queued: usize,
        /// The limit.
        max: usize,
    },
}

impl PartialTo {
    pub(crate) fn data(&self, data: Bytes) -> Result<(), PartialError> {
        // An empty partial still holds a frame: each counts its header too.
        let cost = data.len() + PARTIAL_FRAME_OVERHEAD;
        let frame = Frame::WJobPartial(TaggedPartial {
            id: self.job_id,
            data,
        });
        if let Some(len) = codec::over_limit(&frame, self.max_frame_bytes) {
            let max = self.max_frame_bytes;
            return Err(PartialError::TooLarge { len, max });
        }
        let (queued, max) = (self.outbox.bytes.get(), self.outbox.max_bytes);
        if queued > 0 && queued + cost > max {
            return Err(PartialError::Backlog { queued, max });
        }
        self.outbox.bytes.set(queued + cost);
        self.outbox.push(self.generation, frame);
        Ok(())
    }

    /// Resolves once the link has taken the partials waiting (at once when none wait).
    pub(crate) async fn room(&self) {
        let taken = self.outbox.taken.notified();
        if self.outbox.bytes.get() > 0 {
            taken.await;
        }
    }

    pub(crate) fn progress(&self, numerator: u64, denominator: u64) {
        let frame = Frame::WJobProgress(TaggedProgress {
            id: self.job_id,
            numerator,
            denominator,
        });
        self.outbox.push(self.generation, frame);
    }
}

impl Handler<FlushPartials> for DispatcherLink {
    type Result = ();

    fn handle(&mut self, _: FlushPartials, _: &mut Self::Context) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        outbox.scheduled.set(false);
        if self.conn.is_some() && outbox.unwritten() > WRITER_LOW_BYTES {
            // The meter sends another once the socket has taken enough.
            outbox.stalled.set(true);
            return;
        }
        self.flush_partials();
    }
}

impl DispatcherLink {
    /// Writes the partials waiting, those of jobs of an earlier connection dropped (the
    /// dispatcher has retried or failed those jobs).
    pub(super) fn flush_partials(&mut self) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        outbox.stalled.set(false);
        let waiting = outbox.take();
        let Some(conn) = &mut self.conn else {
            return;
        };
        for (generation, frame) in waiting {
            if generation == self.generation {
                conn.writer.write(frame);
            }
        }
    }

    /// The writer of a new connection, metered by the outbox.
    pub(super) fn metered_writer(
        &self,
        write: WriteHalf,
        codec: NmidCodec,
        ctx: &mut Context<Self>,
    ) -> LinkWriter {
        let outbox = self
            .outbox
            .clone()
            .expect("the outbox is made when the link starts");
        outbox.encoded.set(0);
        outbox.written.set(0);
        let io = Metered {
            io: write,
            outbox: outbox.clone(),
        };
        FramedWrite::new(io, MeteredCodec { codec, outbox }, ctx)
    }

    /// Where the partials of a job of the current connection go: `None` for a v1 job.
    pub(super) fn partial_to(&self, job_id: Option<u64>) -> Option<PartialTo> {
        Some(PartialTo {
            job_id: job_id?,
            generation: self.generation,
            max_frame_bytes: self.settings.max_frame_bytes,
            outbox: self.outbox.clone()?,
        })
    }
}

/// The connection's write half, counting what the socket takes into the outbox's meter and
/// waking a stalled outbox once the writer has drained.
pub(super) struct Metered {
    io: WriteHalf,
    outbox: Rc<Outbox>,
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            let outbox = &self.outbox;
            outbox.written.set(outbox.written.get() + n as u64);
            if outbox.stalled.get() && outbox.unwritten() <= WRITER_LOW_BYTES {
                outbox.stalled.set(false);
                outbox.schedule();
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The nmid codec, counting what it encodes into the outbox's meter.
pub(super) struct MeteredCodec {
    codec: NmidCodec,
    outbox: Rc<Outbox>,
}

impl tokio_util::codec::Encoder<Frame> for MeteredCodec {
    type Error = <NmidCodec as tokio_util::codec::Encoder<Frame>>::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let before = dst.len();
        self.codec.encode(frame, dst)?;
        let outbox = &self.outbox;
        outbox
            .encoded
            .set(outbox.encoded.get() + (dst.len() - before) as u64);
        Ok(())
    }
}
