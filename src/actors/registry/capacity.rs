//! How many more jobs of a function its workers could take: the background jobs' actor asks
//! before it starts jobs, so that it hands the registry no more of a function's jobs than
//! its workers here have free slots, or, when only peers serve it, than the peers' workers
//! have slots (a job beyond them would wait in a queue as `running`, its attempt's time
//! passing, where it could not be cancelled; synchronous calls waiting are served first).

use actix::prelude::*;

use super::Registry;
use crate::call::FunctionName;

/// What each function's workers could take of the jobs wanted, in the order asked.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Room>")]
pub struct Capacity {
    /// The functions, and how many of their jobs are waiting to start.
    pub wanted: Vec<(FunctionName, u32)>,
}

/// What a function's workers could take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Workers here: this many of the jobs wanted fit their free slots now (each worker's
    /// free slots shared once over the functions asked, after the calls waiting).
    Here(u32),
    /// No worker here; the peers that serve it publish this many slots in all (their own
    /// calls may hold some).
    Peers(u32),
    /// No worker here, and no peer publishes slots for it.
    Unknown,
}

impl Handler<Capacity> for Registry {
    type Result = MessageResult<Capacity>;

    fn handle(&mut self, asked: Capacity, _: &mut Self::Context) -> Self::Result {
        let scheduler = &self.scheduler;
        let here = scheduler.share_free_slots(&asked.wanted);
        let room = |((f, _), here): (&(FunctionName, u32), Option<u32>)| match here {
            Some(share) => Room::Here(share),
            None => match scheduler.peer_capacity(f) {
                0 => Room::Unknown,
                slots => Room::Peers(slots),
            },
        };
        MessageResult(asked.wanted.iter().zip(here).map(room).collect())
    }
}
