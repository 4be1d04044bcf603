//! How many jobs of a function the workers serving it here may hold at once: the
//! background jobs' actor asks before it starts jobs, so that it hands the registry no more
//! of a function's jobs than its workers have slots (a job beyond them would wait in the
//! function's queue as `running`, its attempt's time passing, where it could not be
//! cancelled).

use actix::prelude::*;

use super::Registry;
use crate::call::FunctionName;

/// The slots of each function's workers here, in the order asked (`None`: no worker serves
/// it here).
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
                .map(|f| scheduler.capacity(f))
                .collect(),
        )
    }
}
