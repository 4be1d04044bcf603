//! How a job's partial results and progress leave the worker: [`Job::send_partial`] and
//! [`Job::progress`] queue their frame in the link's [`Outbox`] (the handler runs on the
//! link's thread) and wake the link, which writes the queue on its next turn and always
//! before any answer, so a job's partials reach the dispatcher in order and before its result.
//!
//! [`Job::send_partial`]: crate::Job::send_partial
//! [`Job::progress`]: crate::Job::progress

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;

use super::DispatcherLink;
use nmid_proto::codec::{self, Frame, TaggedPartial, TaggedProgress};

/// To the link: frames are waiting in its outbox.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct FlushPartials;

/// The frames of partials not yet written, with the connection generation of their job.
pub(crate) struct Outbox {
    queue: RefCell<VecDeque<(u64, Frame)>>,
    /// A [`FlushPartials`] is on its way.
    scheduled: Cell<bool>,
    link: Recipient<FlushPartials>,
}

impl Outbox {
    pub(super) fn new(link: Recipient<FlushPartials>) -> Self {
        Self {
            queue: RefCell::new(VecDeque::new()),
            scheduled: Cell::new(false),
            link,
        }
    }

    fn push(&self, generation: u64, frame: Frame) {
        self.queue.borrow_mut().push_back((generation, frame));
        if !self.scheduled.replace(true) {
            self.link.do_send(FlushPartials);
        }
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
}

impl PartialTo {
    pub(crate) fn data(&self, data: Bytes) -> Result<(), PartialError> {
        let frame = Frame::WJobPartial(TaggedPartial {
            id: self.job_id,
            data,
        });
        if let Some(len) = codec::over_limit(&frame, self.max_frame_bytes) {
            let max = self.max_frame_bytes;
            return Err(PartialError::TooLarge { len, max });
        }
        self.outbox.push(self.generation, frame);
        Ok(())
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
        outbox.scheduled.set(false);
        let waiting = std::mem::take(&mut *outbox.queue.borrow_mut());
        let Some(conn) = &mut self.conn else {
            return;
        };
        for (generation, frame) in waiting {
            if generation == self.generation {
                conn.writer.write(frame);
            }
        }
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
