//! The scheduler's rules, one test each, on plain data: no actors, no sockets. Each test
//! sets its scene in full (similar shapes on purpose), so that it reads alone.

use std::cell::Cell;
use std::rc::Rc;

use super::*;

/// A call as the tests queue it: an id, and a flag its "job" clears when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    id: u64,
    live: Rc<Cell<bool>>,
}

impl Waiting for Call {
    fn job_id(&self) -> JobId {
        JobId(self.id)
    }

    fn is_live(&self) -> bool {
        self.live.get()
    }
}

fn call(id: u64) -> Call {
    Call {
        id,
        live: Rc::new(Cell::new(true)),
    }
}

fn f(name: &str) -> FunctionName {
    FunctionName::from(name)
}

/// A scheduler with `workers` workers (ids 1..) of `max_jobs` slots, all serving `F`.
fn with_workers(workers: u64, max_jobs: u32, max_queue: usize) -> Scheduler<Call> {
    let mut scheduler = Scheduler::new(max_queue);
    for id in 1..=workers {
        scheduler.join(WorkerId(id), max_jobs);
        assert!(scheduler.serve(WorkerId(id), &f("F")).is_empty());
    }
    scheduler
}

/// Places call `id` of `F` and returns the worker it went to (panics otherwise).
fn assigned(scheduler: &mut Scheduler<Call>, id: u64) -> u64 {
    match scheduler.place(&f("F"), call(id), false) {
        Some(Decision::Assign { worker, call }) => {
            assert_eq!(call.id, id);
            worker.0
        }
        other => panic!("call {id} was not assigned: {other:?}"),
    }
}

fn refused(decision: Option<Decision<Call>>) -> DispatchError {
    match decision {
        Some(Decision::Refuse { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn assignments(decisions: Vec<Decision<Call>>) -> Vec<(u64, u64)> {
    decisions
        .into_iter()
        .map(|d| match d {
            Decision::Assign { worker, call } => (worker.0, call.id),
            other => panic!("expected assignments only, got {other:?}"),
        })
        .collect()
}

/// Idle workers take calls in turn; ties never pile onto one worker.
#[test]
fn ties_go_round_robin() {
    let mut scheduler = with_workers(3, 8, 16);
    let order: Vec<u64> = (0..6).map(|id| assigned(&mut scheduler, id)).collect();
    assert_eq!(order, vec![1, 2, 3, 1, 2, 3]);
}

/// The least-loaded worker with room wins, even when a busier one comes first.
#[test]
fn the_least_loaded_worker_with_room_wins() {
    let mut scheduler = with_workers(3, 8, 16);
    // Load worker 1 with two jobs and worker 2 with one.
    for id in 0..3 {
        assigned(&mut scheduler, id);
    }
    scheduler.finished(WorkerId(3), &f("F"));
    // Loads now: 1 -> 1, 2 -> 1, 3 -> 0.
    assert_eq!(assigned(&mut scheduler, 10), 3);
}

/// A full worker is passed over; when every worker is full the call waits.
#[test]
fn full_workers_are_passed_over_then_calls_wait() {
    let mut scheduler = with_workers(2, 1, 16);
    assert_eq!(assigned(&mut scheduler, 1), 1);
    assert_eq!(assigned(&mut scheduler, 2), 2);
    assert_eq!(scheduler.place(&f("F"), call(3), false), None);
    assert_eq!(scheduler.functions()[0].queued, 1);
}

/// The queue holds `max_queue_per_function` calls; the next one is rate limited.
#[test]
fn the_queue_is_bounded() {
    let mut scheduler = with_workers(1, 1, 2);
    assigned(&mut scheduler, 1);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
    assert_eq!(scheduler.place(&f("F"), call(3), false), None);
    let error = refused(scheduler.place(&f("F"), call(4), false));
    assert_eq!(error, DispatchError::RateLimited);
}

/// A finished job's slot goes to the oldest waiting call; a call whose job is over is skipped.
#[test]
fn a_freed_slot_takes_the_oldest_live_call() {
    let mut scheduler = with_workers(1, 1, 16);
    assigned(&mut scheduler, 1);
    let (two, three) = (call(2), call(3));
    let two_live = two.live.clone();
    assert_eq!(scheduler.place(&f("F"), two, false), None);
    assert_eq!(scheduler.place(&f("F"), three, false), None);
    two_live.set(false);
    let handed = assignments(scheduler.finished(WorkerId(1), &f("F")));
    assert_eq!(handed, vec![(1, 3)]);
    assert_eq!(scheduler.functions()[0].queued, 0);
}

/// Raising a worker's slots serves waiting calls at once; lowering them leaves a full
/// worker full after a job finishes.
#[test]
fn slot_changes_take_effect_at_once() {
    let mut scheduler = with_workers(1, 1, 16);
    assigned(&mut scheduler, 1);
    for id in 2..=4 {
        assert_eq!(scheduler.place(&f("F"), call(id), false), None);
    }
    assert_eq!(
        assignments(scheduler.set_slots(WorkerId(1), 3)),
        vec![(1, 2), (1, 3)]
    );
    assert!(scheduler.set_slots(WorkerId(1), 1).is_empty());
    // Three in flight, one slot: a finished job frees nothing yet.
    assert!(scheduler.finished(WorkerId(1), &f("F")).is_empty());
    assert_eq!(scheduler.worker_load(WorkerId(1)).unwrap().in_flight, 2);
}

/// A worker arriving for a function with waiting calls takes them.
#[test]
fn a_new_worker_serves_the_queue() {
    let mut scheduler = with_workers(1, 1, 16);
    assigned(&mut scheduler, 1);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
    scheduler.join(WorkerId(9), 4);
    assert_eq!(
        assignments(scheduler.serve(WorkerId(9), &f("F"))),
        vec![(9, 2)]
    );
}

/// When the last worker of a function leaves, its waiting calls are refused at once; a
/// function that had workers is then `NoWorker`, one never served `UnknownFunction`.
#[test]
fn a_worker_leaving_with_queued_calls_refuses_them() {
    let mut scheduler = with_workers(1, 1, 16);
    assigned(&mut scheduler, 1);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
    let decisions = scheduler.leave(WorkerId(1));
    assert_eq!(
        decisions,
        vec![Decision::Refuse {
            call: call_like(2, &decisions),
            error: DispatchError::NoWorker
        }]
    );
    assert!(scheduler.functions().is_empty());
    let error = refused(scheduler.place(&f("F"), call(3), false));
    assert_eq!(error, DispatchError::NoWorker);
    let error = refused(scheduler.place(&f("G"), call(4), false));
    assert_eq!(error, DispatchError::UnknownFunction);
}

/// The call with `id` among `decisions` (calls compare by their flag's address too).
fn call_like(id: u64, decisions: &[Decision<Call>]) -> Call {
    decisions
        .iter()
        .find_map(|d| match d {
            Decision::Refuse { call, .. } | Decision::Assign { call, .. } if call.id == id => {
                Some(call.clone())
            }
            _ => None,
        })
        .expect("a decision for the call")
}

/// One worker of two leaving keeps the queue for the other; unserving keeps jobs in flight
/// counted until they finish.
#[test]
fn unserving_keeps_jobs_in_flight_counted() {
    let mut scheduler = with_workers(2, 1, 16);
    assigned(&mut scheduler, 1);
    assigned(&mut scheduler, 2);
    assert_eq!(scheduler.place(&f("F"), call(3), false), None);
    assert!(scheduler.unserve(WorkerId(1), &f("F")).is_empty());
    assert!(!scheduler.serves(WorkerId(1), &f("F")));
    assert_eq!(scheduler.worker_load(WorkerId(1)).unwrap().in_flight, 1);
    // Worker 1's job finishes: its slot does not go to F's queue any more.
    assert!(scheduler.finished(WorkerId(1), &f("F")).is_empty());
    // Worker 2's does.
    assert_eq!(
        assignments(scheduler.finished(WorkerId(2), &f("F"))),
        vec![(2, 3)]
    );
}

/// `W_BYE` seals a worker: it serves nothing and gets no further call.
#[test]
fn a_sealed_worker_gets_no_calls() {
    let mut scheduler = with_workers(2, 4, 16);
    scheduler.seal(WorkerId(1));
    assert!(scheduler.serving(WorkerId(1)).is_empty());
    for id in 0..4 {
        assert_eq!(assigned(&mut scheduler, id), 2);
    }
}

/// A withdrawn call leaves the queue; the slot that frees later finds nothing.
#[test]
fn a_withdrawn_call_leaves_the_queue() {
    let mut scheduler = with_workers(1, 1, 16);
    assigned(&mut scheduler, 1);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
    scheduler.withdraw(&f("F"), JobId(2));
    assert_eq!(scheduler.functions()[0].queued, 0);
    assert!(scheduler.finished(WorkerId(1), &f("F")).is_empty());
}

/// While draining, new calls are refused and retries still placed.
#[test]
fn draining_refuses_new_calls_but_places_retries() {
    let mut scheduler = with_workers(1, 4, 16);
    scheduler.drain();
    assert!(scheduler.is_draining());
    let error = refused(scheduler.place(&f("F"), call(1), false));
    assert_eq!(error, DispatchError::ShuttingDown);
    assert!(matches!(
        scheduler.place(&f("F"), call(2), true),
        Some(Decision::Assign { .. })
    ));
}

/// With 1,000 functions on one worker, a finished job with no backlog decides nothing, and
/// a backlogged function among them is still served.
#[test]
fn a_thousand_functions_on_one_worker() {
    let mut scheduler: Scheduler<Call> = Scheduler::new(16);
    scheduler.join(WorkerId(1), 1);
    for i in 0..1000 {
        scheduler.serve(WorkerId(1), &f(&format!("F{i}")));
    }
    assert_eq!(scheduler.functions().len(), 1000);
    let f500 = f("F500");
    assert!(matches!(
        scheduler.place(&f500, call(1), false),
        Some(Decision::Assign { .. })
    ));
    assert_eq!(scheduler.place(&f("F7"), call(2), false), None);
    assert_eq!(
        assignments(scheduler.finished(WorkerId(1), &f500)),
        vec![(1, 2)]
    );
    assert!(scheduler.finished(WorkerId(1), &f("F7")).is_empty());
}

/// 100 workers of 2 slots each: 200 calls spread 2 per worker, the 201st waits, and every
/// finished job hands its slot to a waiting call.
#[test]
fn a_hundred_workers_share_the_load_evenly() {
    let mut scheduler = with_workers(100, 2, 1024);
    let mut per_worker = vec![0u32; 101];
    for id in 0..200 {
        per_worker[assigned(&mut scheduler, id) as usize] += 1;
    }
    assert!(per_worker[1..].iter().all(|&n| n == 2), "{per_worker:?}");
    for id in 200..250 {
        assert_eq!(scheduler.place(&f("F"), call(id), false), None);
    }
    for worker in 1..=50 {
        let handed = assignments(scheduler.finished(WorkerId(worker), &f("F")));
        assert_eq!(handed, vec![(worker, 199 + worker)]);
    }
    assert_eq!(scheduler.functions()[0].queued, 0);
    assert_eq!(scheduler.functions()[0].in_flight, 200);
}

/// Free slots for background jobs: a worker serving two functions has its free slots
/// shared once over both, and the calls waiting for a function take theirs first.
#[test]
fn free_slots_are_shared_once_over_the_functions_and_waiting_calls_go_first() {
    let mut scheduler = Scheduler::new(16);
    scheduler.join(WorkerId(1), 2);
    assert!(scheduler.serve(WorkerId(1), &f("F")).is_empty());
    assert!(scheduler.serve(WorkerId(1), &f("G")).is_empty());
    let wanted = [(f("F"), 2), (f("G"), 2), (f("H"), 1)];
    assert_eq!(
        scheduler.share_free_slots(&wanted),
        [Some(2), Some(0), None]
    );
    assert_eq!(assigned(&mut scheduler, 1), 1);
    assert_eq!(
        scheduler.share_free_slots(&wanted),
        [Some(1), Some(0), None]
    );
    assert_eq!(assigned(&mut scheduler, 2), 1);
    // Full: a third call waits, and keeps the next free slot for itself.
    assert!(scheduler.place(&f("F"), call(3), false).is_none());
    assert_eq!(
        scheduler.share_free_slots(&wanted),
        [Some(0), Some(0), None]
    );
    let decisions = scheduler.finished(WorkerId(1), &f("F"));
    assert_eq!(decisions.len(), 1, "the waiting call takes the freed slot");
    assert_eq!(
        scheduler.share_free_slots(&wanted),
        [Some(0), Some(0), None]
    );
    scheduler.finished(WorkerId(1), &f("F"));
    assert_eq!(
        scheduler.share_free_slots(&wanted),
        [Some(1), Some(0), None]
    );
}
