//! The breakers of one function's workers, kept in the function's entry beside its worker
//! list, so that placement reads them without a lookup per function (see `crate::breaker`
//! for one breaker's rules). A worker without a breaker here is closed: breakers are made on
//! a worker's first verdict, and only while `[breaker]` is enabled.

use std::rc::Rc;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};

use super::Load;
use crate::breaker::{Breaker, BreakerSettings, BreakerState, Transition, Verdict};
use crate::call::WorkerId;

/// One function's breakers, by worker.
#[derive(Debug)]
pub(super) struct WorkerBreakers {
    by_worker: HashMap<WorkerId, Breaker>,
    /// Breakers that are not closed. While it is 0 (always, with breakers off) every worker
    /// admits calls and placement asks none of them.
    tripped: usize,
}

impl Default for WorkerBreakers {
    fn default() -> Self {
        Self {
            by_worker: HashMap::new(),
            tripped: 0,
        }
    }
}

impl WorkerBreakers {
    /// Every breaker is closed.
    pub(super) fn all_closed(&self) -> bool {
        self.tripped == 0
    }

    /// Breakers open or half-open.
    pub(super) fn tripped(&self) -> usize {
        self.tripped
    }

    /// Whether `worker` may be given a call (closed, or half-open with a trial left).
    pub(super) fn admits(&self, worker: WorkerId) -> bool {
        self.tripped == 0 || (self.by_worker.get(&worker)).is_none_or(|breaker| breaker.admits())
    }

    /// Whether any of `workers` may be given a call, full or not.
    pub(super) fn any_admits(&self, workers: &[Rc<Load>]) -> bool {
        self.tripped < workers.len() || workers.iter().any(|load| self.admits(load.worker))
    }

    /// A call was placed on `worker`: a half-open breaker has one trial fewer.
    pub(super) fn placed(&mut self, worker: WorkerId) {
        if self.tripped == 0 {
            return;
        }
        if let Some(breaker) = self.by_worker.get_mut(&worker) {
            breaker.placed();
        }
    }

    /// `worker`'s state.
    pub(super) fn state(&self, worker: WorkerId) -> BreakerState {
        (self.by_worker.get(&worker)).map_or(BreakerState::Closed, Breaker::state)
    }

    /// Counts a verdict on `worker`'s call at `now`.
    pub(super) fn record(
        &mut self,
        worker: WorkerId,
        verdict: Verdict,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Option<Transition> {
        let breaker = (self.by_worker.entry(worker)).or_insert_with(|| Breaker::new(now));
        let was_closed = breaker.state() == BreakerState::Closed;
        let transition = breaker.record(verdict, now, settings);
        let is_closed = breaker.state() == BreakerState::Closed;
        match (was_closed, is_closed) {
            (true, false) => self.tripped += 1,
            (false, true) => self.tripped -= 1,
            _ => {}
        }
        transition
    }

    /// Half-opens `worker`'s breaker if it is open and its timeout has ended by `now`.
    pub(super) fn poll(
        &mut self,
        worker: WorkerId,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Option<Transition> {
        // Open to half-open: tripped either way.
        self.by_worker.get_mut(&worker)?.poll(now, settings)
    }

    /// `worker` no longer serves the function: its breaker goes with it.
    pub(super) fn remove(&mut self, worker: WorkerId) {
        if let Some(breaker) = self.by_worker.remove(&worker) {
            if breaker.state() != BreakerState::Closed {
                self.tripped -= 1;
            }
        }
    }
}
