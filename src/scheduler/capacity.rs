//! How many background jobs of each function the workers here could take now, all the
//! functions asked together: a worker serving several of them has its free slots counted
//! once, and the calls already waiting for a function take their slots first.

use foldhash::{HashMap, HashMapExt};

use super::{Scheduler, Waiting};
use crate::call::{FunctionName, WorkerId};

impl<C: Waiting> Scheduler<C> {
    /// Of the jobs `wanted` of each function (in that order), how many the workers here
    /// could take now: each worker's free slots shared out once over the functions, after
    /// the calls waiting for each; `None` for a function no worker here serves.
    pub fn share_free_slots(&self, wanted: &[(FunctionName, u32)]) -> Vec<Option<u32>> {
        let mut free: HashMap<WorkerId, u32> = HashMap::new();
        let mut shares = Vec::with_capacity(wanted.len());
        for (function, want) in wanted {
            let Some(entry) = self
                .functions
                .get(function)
                .filter(|e| !e.workers.is_empty())
            else {
                shares.push(None);
                continue;
            };
            let (mut waiting, mut share) = (entry.queue.len() as u32, 0);
            for load in &entry.workers {
                let left = free
                    .entry(load.worker)
                    .or_insert_with(|| load.max_jobs.get().saturating_sub(load.in_flight.get()));
                let taken = waiting.min(*left);
                waiting -= taken;
                *left -= taken;
                let mine = (want - share).min(*left);
                share += mine;
                *left -= mine;
            }
            shares.push(Some(share));
        }
        shares
    }
}
