//! The jobs a dispatcher link runs ([`InFlight`]): each one's future, so that all can be
//! cancelled when the connection they came on is lost, and each one's metrics ([`Metered`]).

use std::collections::HashMap;
use std::time::Instant;

use actix::{ActorContext, AsyncContext, SpawnHandle};

use super::job::Job;
use super::Meter;

/// The futures of the jobs running, by a number of the link's.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    jobs: HashMap<u64, SpawnHandle>,
    next: u64,
}

impl InFlight {
    /// The key of the next job.
    pub(super) fn next_key(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The job of `key` runs as `future`.
    pub(super) fn insert(&mut self, key: u64, future: SpawnHandle) {
        self.jobs.insert(key, future);
    }

    /// The job of `key` ended.
    pub(super) fn remove(&mut self, key: &u64) {
        self.jobs.remove(key);
    }

    /// How many jobs run now.
    pub(super) fn count(&self) -> u32 {
        u32::try_from(self.jobs.len()).unwrap_or(u32::MAX)
    }

    /// Whether none runs.
    pub(super) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Cancels every job (its future is dropped with whatever it holds); returns how many.
    pub(super) fn cancel_all<A, C>(&mut self, ctx: &mut C) -> usize
    where
        A: actix::Actor<Context = C>,
        C: AsyncContext<A> + ActorContext,
    {
        let cancelled = self.jobs.len();
        for (_, future) in self.jobs.drain() {
            ctx.cancel_future(future);
        }
        cancelled
    }
}

/// A job's metrics while it runs: in flight from [`Metered::start`]; counted with its
/// answer by [`Metered::finish`], or, dropped unfinished (the job was cancelled), only out of
/// the jobs in flight.
pub(super) struct Metered {
    metrics: Meter,
    function: String,
    at: Instant,
    finished: bool,
}

impl Metered {
    pub(super) fn start(metrics: Meter, job: &Job) -> Self {
        metrics.job_started(&job.function);
        Self {
            metrics,
            function: job.function.clone(),
            at: Instant::now(),
            finished: false,
        }
    }

    pub(super) fn finish(mut self, answer: Result<&[u8], ()>) {
        self.finished = true;
        (self.metrics).job_done(&self.function, answer, self.at.elapsed());
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics.job_cancelled(&self.function);
        }
    }
}
