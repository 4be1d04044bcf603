//! The scheduler's circuit-breaker rules, one test each, on plain data: verdicts are handed
//! in with the time, as the registry does; the breaker's own rules are `crate::breaker`'s.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use crate::breaker::Rule;

/// A call as these tests place it: an id, whether its job still waits, and whether another
/// dispatcher forwarded it here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    id: u64,
    live: Rc<Cell<bool>>,
    forwarded: bool,
}

impl Waiting for Call {
    fn job_id(&self) -> JobId {
        JobId(self.id)
    }

    fn is_live(&self) -> bool {
        self.live.get()
    }

    fn forwardable(&self) -> bool {
        !self.forwarded
    }
}

fn call(id: u64) -> Call {
    Call {
        id,
        live: Rc::new(Cell::new(true)),
        forwarded: false,
    }
}

fn f(name: &str) -> FunctionName {
    FunctionName::from(name)
}

const W1: WorkerId = WorkerId(1);
const W2: WorkerId = WorkerId(2);

/// Rule 1, 2 failures in a row open, 2 trials, 5 s open.
fn settings() -> BreakerSettings {
    BreakerSettings {
        rule: Rule::ConsecutiveErrors,
        consecutive_errors: 2,
        error_percent: 50,
        min_requests: 10,
        window: Duration::from_secs(60),
        half_open_requests: 2,
        open_timeout: Duration::from_secs(5),
    }
}

/// Breakers on, and `workers` workers (ids 1..) of `max_jobs` slots serving each of
/// `functions`.
fn scheduler(workers: u64, max_jobs: u32, functions: &[&str]) -> Scheduler<Call> {
    let mut scheduler = Scheduler::new(16);
    scheduler.set_breakers(settings());
    for id in 1..=workers {
        scheduler.join(WorkerId(id), max_jobs);
        for function in functions {
            assert!(scheduler.serve(WorkerId(id), &f(function)).is_empty());
        }
    }
    scheduler
}

/// Places call `id` of `function`; the worker it went to (panics otherwise).
fn assigned(scheduler: &mut Scheduler<Call>, function: &str, id: u64) -> WorkerId {
    match scheduler.place(&f(function), call(id), false) {
        Some(Decision::Assign { worker, call }) => {
            assert_eq!(call.id, id);
            worker
        }
        other => panic!("call {id} was not assigned: {other:?}"),
    }
}

/// Two failures of `worker` on `function` at `now`: its breaker opens.
fn trip(scheduler: &mut Scheduler<Call>, worker: WorkerId, function: &str, now: Instant) {
    let (first, decisions) = scheduler.judge(worker, &f(function), Verdict::Failure, now);
    assert_eq!((first, decisions.len()), (None, 0));
    let (opened, _) = scheduler.judge(worker, &f(function), Verdict::Failure, now);
    assert!(
        matches!(opened, Some(Transition::Opened { .. })),
        "{opened:?}"
    );
}

fn refusals(decisions: &[Decision<Call>]) -> Vec<(u64, DispatchError)> {
    (decisions.iter())
        .map(|d| match d {
            Decision::Refuse { call, error } => (call.id, *error),
            other => panic!("expected refusals only, got {other:?}"),
        })
        .collect()
}

/// An open breaker takes its worker out of placement for that function only: the other
/// worker gets every call of it, while the tripped worker still serves other functions.
#[test]
fn an_open_breaker_takes_its_worker_out_of_that_functions_placement_only() {
    let mut scheduler = scheduler(2, 8, &["F", "G"]);
    trip(&mut scheduler, W1, "F", Instant::now());
    for id in 0..4 {
        assert_eq!(assigned(&mut scheduler, "F", id), W2);
    }
    let g: Vec<WorkerId> = (10..14)
        .map(|id| assigned(&mut scheduler, "G", id))
        .collect();
    assert!(g.contains(&W1), "{g:?}");
    let function = &scheduler.functions()[0];
    assert_eq!((function.name.as_str(), function.breakers_open), ("F", 1));
    assert_eq!(
        scheduler.breaker_states(W1),
        [
            ("F".to_owned(), BreakerState::Open),
            ("G".to_owned(), BreakerState::Closed)
        ]
    );
}

/// With every worker's breaker open, a call is refused `BreakerOpen` at once, and so are
/// the calls waiting in the queue when the last breaker opens (they would wait for nothing).
#[test]
fn with_every_breaker_open_calls_and_the_queue_are_refused() {
    let mut scheduler = scheduler(1, 1, &["F"]);
    assert_eq!(assigned(&mut scheduler, "F", 1), W1);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None, "queued");
    assert_eq!(scheduler.place(&f("F"), call(3), false), None, "queued");
    let now = Instant::now();
    scheduler.judge(W1, &f("F"), Verdict::Failure, now);
    let (opened, decisions) = scheduler.judge(W1, &f("F"), Verdict::Failure, now);
    assert!(matches!(opened, Some(Transition::Opened { .. })));
    assert_eq!(
        refusals(&decisions),
        [
            (2, DispatchError::BreakerOpen),
            (3, DispatchError::BreakerOpen)
        ]
    );
    assert_eq!(scheduler.functions()[0].queued, 0);
    // The worker's slot frees: still no call for it.
    assert!(scheduler.finished(W1, &f("F")).is_empty());
    match scheduler.place(&f("F"), call(4), false) {
        Some(Decision::Refuse { error, .. }) => assert_eq!(error, DispatchError::BreakerOpen),
        other => panic!("{other:?}"),
    }
}

/// While another worker's breaker is closed, a full function still queues its calls; when
/// that breaker opens too, the queue is refused.
#[test]
fn calls_wait_for_a_closed_worker_and_are_refused_when_it_opens_too() {
    let mut scheduler = scheduler(2, 1, &["F"]);
    let now = Instant::now();
    trip(&mut scheduler, W1, "F", now);
    assert_eq!(assigned(&mut scheduler, "F", 1), W2);
    assert_eq!(
        scheduler.place(&f("F"), call(2), false),
        None,
        "waits for W2"
    );
    scheduler.judge(W2, &f("F"), Verdict::Failure, now);
    let (_, decisions) = scheduler.judge(W2, &f("F"), Verdict::Failure, now);
    assert_eq!(refusals(&decisions), [(2, DispatchError::BreakerOpen)]);
}

/// After the open timeout, a half-open breaker takes `half_open_requests` trial calls and no
/// more; that many successes close it and calls flow again.
#[test]
fn half_open_takes_its_trials_and_successes_close_it() {
    let mut scheduler = scheduler(1, 8, &["F"]);
    let t0 = Instant::now();
    trip(&mut scheduler, W1, "F", t0);
    let early = scheduler.poll_breaker(W1, &f("F"), t0 + Duration::from_secs(4));
    assert_eq!(early.0, None);
    let (half, _) = scheduler.poll_breaker(W1, &f("F"), t0 + Duration::from_secs(5));
    assert_eq!(half, Some(Transition::HalfOpened));
    assert_eq!(scheduler.breaker_states(W1)[0].1, BreakerState::HalfOpen);
    assert_eq!(assigned(&mut scheduler, "F", 1), W1);
    assert_eq!(assigned(&mut scheduler, "F", 2), W1);
    match scheduler.place(&f("F"), call(3), false) {
        Some(Decision::Refuse { error, .. }) => assert_eq!(error, DispatchError::BreakerOpen),
        other => panic!("a third call while both trials run: {other:?}"),
    }
    let t1 = t0 + Duration::from_secs(6);
    assert_eq!(scheduler.judge(W1, &f("F"), Verdict::Success, t1).0, None);
    let (closed, _) = scheduler.judge(W1, &f("F"), Verdict::Success, t1);
    assert_eq!(closed, Some(Transition::Closed));
    assert_eq!(scheduler.functions()[0].breakers_open, 0);
    for id in 4..10 {
        assert_eq!(assigned(&mut scheduler, "F", id), W1);
    }
}

/// A failed trial opens the breaker again: no calls until the next timeout.
#[test]
fn a_failed_trial_opens_it_again() {
    let mut scheduler = scheduler(1, 8, &["F"]);
    let t0 = Instant::now();
    trip(&mut scheduler, W1, "F", t0);
    let t1 = t0 + Duration::from_secs(5);
    scheduler.poll_breaker(W1, &f("F"), t1);
    assert_eq!(assigned(&mut scheduler, "F", 1), W1);
    let (reopened, _) = scheduler.judge(W1, &f("F"), Verdict::Failure, t1);
    assert_eq!(
        reopened,
        Some(Transition::Opened {
            until: t1 + Duration::from_secs(5)
        })
    );
    assert!(matches!(
        scheduler.place(&f("F"), call(2), false),
        Some(Decision::Refuse {
            error: DispatchError::BreakerOpen,
            ..
        })
    ));
}

/// A breaker that half-opens serves the calls waiting for the function (queued while the
/// other worker, closed, was full).
#[test]
fn a_half_open_breaker_serves_the_waiting_calls() {
    let mut scheduler = scheduler(2, 1, &["F"]);
    let t0 = Instant::now();
    trip(&mut scheduler, W1, "F", t0);
    assert_eq!(assigned(&mut scheduler, "F", 1), W2);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
    let (_, decisions) = scheduler.poll_breaker(W1, &f("F"), t0 + Duration::from_secs(5));
    match &decisions[..] {
        [Decision::Assign { worker, call }] => assert_eq!((*worker, call.id), (W1, 2)),
        other => panic!("{other:?}"),
    }
}

/// A call whose job ended while it waited does not take a half-open breaker's one trial.
#[test]
fn a_dead_waiting_call_does_not_waste_a_trial() {
    let mut scheduler = Scheduler::new(16);
    scheduler.set_breakers(BreakerSettings {
        half_open_requests: 1,
        ..settings()
    });
    for id in [W1, W2] {
        scheduler.join(id, 1);
        scheduler.serve(id, &f("F"));
    }
    let t0 = Instant::now();
    trip(&mut scheduler, W1, "F", t0);
    assert_eq!(assigned(&mut scheduler, "F", 1), W2);
    let dead = call(2);
    assert_eq!(scheduler.place(&f("F"), dead.clone(), false), None);
    assert_eq!(scheduler.place(&f("F"), call(3), false), None);
    dead.live.set(false);
    let (_, decisions) = scheduler.poll_breaker(W1, &f("F"), t0 + Duration::from_secs(5));
    match &decisions[..] {
        [Decision::Assign { worker, call }] => assert_eq!((*worker, call.id), (W1, 3)),
        other => panic!("{other:?}"),
    }
}

/// In a cluster, a call none of whose local workers admits calls goes to a peer that serves
/// the function; one forwarded here is refused instead (the hop limit).
#[test]
fn with_every_local_breaker_open_a_call_goes_to_a_peer() {
    let mut scheduler = scheduler(1, 8, &["F"]);
    scheduler.peer_seen(PeerId::from("B"), vec![f("F")], 0);
    trip(&mut scheduler, W1, "F", Instant::now());
    match scheduler.place(&f("F"), call(1), false) {
        Some(Decision::Forward { peer, .. }) => assert_eq!(peer.to_string(), "B"),
        other => panic!("{other:?}"),
    }
    let forwarded = Call {
        forwarded: true,
        ..call(2)
    };
    assert!(matches!(
        scheduler.place(&f("F"), forwarded, false),
        Some(Decision::Refuse {
            error: DispatchError::BreakerOpen,
            ..
        })
    ));
}

/// Breakers off (the default): verdicts change nothing, failing workers keep their calls.
#[test]
fn with_breakers_off_verdicts_change_nothing() {
    let mut scheduler: Scheduler<Call> = Scheduler::new(16);
    scheduler.join(W1, 8);
    scheduler.serve(W1, &f("F"));
    for _ in 0..100 {
        let judged = scheduler.judge(W1, &f("F"), Verdict::Failure, Instant::now());
        assert_eq!((judged.0, judged.1.len()), (None, 0));
    }
    assert_eq!(assigned(&mut scheduler, "F", 1), W1);
    assert!(scheduler.breaker_states(W1).is_empty());
}

/// A worker that stops serving a function takes its breaker with it; serving it again
/// starts closed.
#[test]
fn a_breaker_goes_with_its_workers_registration() {
    let mut scheduler = scheduler(1, 8, &["F"]);
    trip(&mut scheduler, W1, "F", Instant::now());
    assert_eq!(scheduler.functions()[0].breakers_open, 1);
    scheduler.unserve(W1, &f("F"));
    scheduler.serve(W1, &f("F"));
    assert_eq!(scheduler.functions()[0].breakers_open, 0);
    assert_eq!(assigned(&mut scheduler, "F", 1), W1);
}
