//! The scheduler's view of load, and the choice of a worker for a call: the least-loaded
//! worker with room, ties round-robin, and within the batch slack the worker that took the
//! last call (see the rules in `scheduler.rs`).

use std::cell::Cell;
use std::rc::Rc;

use foldhash::HashMap;

use super::breakers::WorkerBreakers;
use super::queue::CallQueue;
use super::Decision;
use crate::call::{FunctionName, WorkerId};

/// A worker's load, shared by its entry and the entries of the functions it serves, so that
/// choosing among a function's workers reads their loads without a lookup per worker.
#[derive(Debug)]
pub(super) struct Load {
    pub(super) worker: WorkerId,
    pub(super) in_flight: Cell<u32>,
    pub(super) max_jobs: Cell<u32>,
}

impl Load {
    pub(super) fn has_room(&self) -> bool {
        self.in_flight.get() < self.max_jobs.get()
    }
}

/// A worker as the scheduler sees it.
pub(super) struct WorkerEntry {
    pub(super) load: Rc<Load>,
    /// Jobs in flight per function (keys are exactly the functions it serves, plus any it
    /// stopped serving while jobs of it were still running).
    pub(super) functions: HashMap<FunctionName, FunctionLoad>,
}

impl WorkerEntry {
    pub(super) fn serving(&self) -> impl Iterator<Item = &FunctionName> {
        self.functions
            .iter()
            .filter(|(_, load)| load.serving)
            .map(|(name, _)| name)
    }

    pub(super) fn serves(&self, function: &FunctionName) -> bool {
        self.functions.get(function).is_some_and(|l| l.serving)
    }
}

#[derive(Debug, Default)]
pub(super) struct FunctionLoad {
    pub(super) serving: bool,
    pub(super) in_flight: u32,
}

pub(super) struct FunctionEntry<C> {
    pub(super) workers: Vec<Rc<Load>>,
    /// Where the next search for the least-loaded worker starts, so ties go round-robin.
    pub(super) cursor: usize,
    pub(super) queue: CallQueue<C>,
    /// The circuit breakers of its workers (none while breakers are off).
    pub(super) breakers: WorkerBreakers,
    /// The round of its last pick: in that round, the worker just before `cursor` took the
    /// last call.
    pub(super) picked_in: Option<u64>,
}

impl<C> FunctionEntry<C> {
    /// Jobs its workers may hold at once, all together.
    pub(super) fn slots(&self) -> u32 {
        self.workers.iter().map(|load| load.max_jobs.get()).sum()
    }
}

impl<C> Default for FunctionEntry<C> {
    fn default() -> Self {
        Self {
            workers: Vec::new(),
            cursor: 0,
            queue: CallQueue::default(),
            breakers: WorkerBreakers::default(),
            picked_in: None,
        }
    }
}

/// Places `call` of `function` on `worker`, counting it in the worker's load.
pub(super) fn assign<C>(
    workers: &mut HashMap<WorkerId, WorkerEntry>,
    worker: WorkerId,
    function: &FunctionName,
    call: C,
) -> Decision<C> {
    let entry = workers
        .get_mut(&worker)
        .expect("the scheduler places calls only on workers it knows");
    entry.load.in_flight.set(entry.load.in_flight.get() + 1);
    match entry.functions.get_mut(function) {
        Some(load) => load.in_flight += 1,
        None => {
            let load = FunctionLoad {
                serving: false,
                in_flight: 1,
            };
            entry.functions.insert(function.clone(), load);
        }
    }
    Decision::Assign { worker, call }
}

/// The batch slack and the rounds it works within. A round is what the registry places in
/// one turn of its mailbox (the calls of one burst); it ends the round when the turn is
/// over, so a call arriving alone never counts as part of an earlier burst.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Jobs above the least-loaded worker the last-picked one may hold (0: off).
    pub(super) slack: u32,
    round: u64,
    /// A pick this round may be followed by one within the slack.
    open: bool,
    /// The registry was told to end this round.
    announced: bool,
}

impl Batch {
    /// Whether the registry must arrange to end this round (once per round that needs it).
    pub(super) fn take_opened(&mut self) -> bool {
        let new = self.open && !self.announced;
        self.announced |= new;
        new
    }

    pub(super) fn end_round(&mut self) {
        self.round = self.round.wrapping_add(1);
        self.open = false;
        self.announced = false;
    }
}

/// The worker of `entry` the next call goes to: the least loaded with a free slot (or,
/// within the batch slack, the one that took the last call this round), among those whose
/// breaker admits calls. A half-open breaker chosen has one trial fewer.
pub(super) fn pick_worker<C>(entry: &mut FunctionEntry<C>, batch: &mut Batch) -> Option<WorkerId> {
    let slack = match entry.picked_in {
        Some(round) if round == batch.round => batch.slack,
        _ => 0,
    };
    let worker = if entry.breakers.all_closed() {
        // Always so with breakers off: the breakers cost this one check.
        least_loaded(&entry.workers, &mut entry.cursor, slack, |_| true)?
    } else {
        let breakers = &mut entry.breakers;
        let admits = |w| breakers.admits(w);
        let worker = least_loaded(&entry.workers, &mut entry.cursor, slack, admits)?;
        breakers.placed(worker);
        worker
    };
    if batch.slack > 0 && entry.workers.len() > 1 {
        entry.picked_in = Some(batch.round);
        batch.open = true;
    }
    Some(worker)
}

/// The least-loaded of `workers` with a free slot that `admits`; among equals, the first at
/// or after the round-robin `cursor`, which then moves past it. An idle worker ends the
/// search at once. With `slack` > 0, the worker picked last (just before the cursor) is
/// picked again while it has room and fewer than `least + slack` jobs.
fn least_loaded(
    workers: &[Rc<Load>],
    cursor: &mut usize,
    slack: u32,
    admits: impl Fn(WorkerId) -> bool,
) -> Option<WorkerId> {
    let n = workers.len();
    if n == 0 {
        return None;
    }
    let last = &workers[(*cursor + n - 1) % n];
    let last_may = slack > 0 && n > 1 && last.has_room() && admits(last.worker);
    // No worker holds fewer than 0 jobs: below `slack`, no search is needed.
    if last_may && last.in_flight.get() < slack {
        return Some(last.worker);
    }
    let mut best: Option<(usize, u32)> = None;
    for step in 0..n {
        let index = (*cursor + step) % n;
        let load = &workers[index];
        let in_flight = load.in_flight.get();
        if !load.has_room() || best.is_some_and(|(_, least)| least <= in_flight) {
            continue;
        }
        if !admits(load.worker) {
            continue;
        }
        best = Some((index, in_flight));
        if in_flight == 0 {
            break;
        }
    }
    let (index, least) = best?;
    if last_may && last.in_flight.get() < least.saturating_add(slack) {
        return Some(last.worker);
    }
    *cursor = (index + 1) % n;
    Some(workers[index].worker)
}
