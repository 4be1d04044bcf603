//! How many more jobs of a function the workers serving it here could take now: the
//! background jobs' actor asks before it starts jobs, so that it hands the registry no more
//! of a function's jobs than its workers have free slots (a job beyond them would wait in
//! the function's queue as `running`, its attempt's time passing, where it could not be
//! cancelled; synchronous calls waiting there are served first).

use actix::prelude::*;

use super::Registry;
use crate::call::FunctionName;

/// The free slots of each function's workers here, less the calls waiting for them, in the
/// order asked (`None`: no worker serves it here).
#[derive(Debug, Message)]
#[rtype(result = "Vec<Option<u32>>")]
pub struct Capacity {
    /// The functions.
    pub functions: Vec<FunctionName>,
}

impl Handler<Capacity> for Registry {
    type Result = MessageResult<Capacity>;

    fn handle(&mut self, asked: Capacity, _: &mut Self::Context) -> Self::Result {
        let scheduler = &self.scheduler;
        MessageResult(
            asked
                .functions
                .iter()
                .map(|f| scheduler.free_slots(f))
                .collect(),
        )
    }
}
