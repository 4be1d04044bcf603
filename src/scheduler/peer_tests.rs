//! The scheduler's forwarding rules, one test each, on plain data: peers are ids with
//! advertised functions and loads, calls are ids with a "forwarded here" flag.

use super::*;

/// A call as these tests place it: an id, and whether another dispatcher forwarded it here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    id: u64,
    forwarded: bool,
    caller: Option<ClientKey>,
}

impl Waiting for Call {
    fn job_id(&self) -> JobId {
        JobId(self.id)
    }

    fn is_live(&self) -> bool {
        true
    }

    fn forwardable(&self) -> bool {
        !self.forwarded
    }

    fn caller(&self) -> Option<&ClientKey> {
        self.caller.as_ref()
    }
}

fn call(id: u64) -> Call {
    Call {
        id,
        forwarded: false,
        caller: None,
    }
}

fn f(name: &str) -> FunctionName {
    FunctionName::from(name)
}

fn peer(id: &str) -> PeerId {
    PeerId::from(id)
}

/// Places call `id` of `F` and returns the peer it was forwarded to (panics otherwise).
fn forwarded_to(scheduler: &mut Scheduler<Call>, id: u64) -> String {
    match scheduler.place(&f("F"), call(id), false) {
        Some(Decision::Forward { peer, call }) => {
            assert_eq!(call.id, id);
            peer.to_string()
        }
        other => panic!("call {id} was not forwarded: {other:?}"),
    }
}

fn refused(decision: Option<Decision<Call>>) -> DispatchError {
    match decision {
        Some(Decision::Refuse { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A function no local worker serves goes to the peer that advertises it.
#[test]
fn a_call_no_local_worker_serves_goes_to_a_peer_that_does() {
    let mut scheduler = Scheduler::new(16);
    scheduler.peer_seen(peer("b"), vec![f("G")], 0);
    scheduler.peer_seen(peer("c"), vec![f("F")], 0);
    assert_eq!(forwarded_to(&mut scheduler, 1), "c");
}

/// Local workers win, even all full: the call waits for them instead of leaving.
#[test]
fn local_workers_are_preferred_even_when_full() {
    let mut scheduler = Scheduler::new(16);
    scheduler.join(WorkerId(1), 1);
    scheduler.serve(WorkerId(1), &f("F"));
    scheduler.peer_seen(peer("b"), vec![f("F")], 0);
    assert!(matches!(
        scheduler.place(&f("F"), call(1), false),
        Some(Decision::Assign { .. })
    ));
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
}

/// The lowest advertised load wins; calls forwarded and not answered count on top of it,
/// so a burst spreads instead of piling onto the idlest peer; equals take turns.
#[test]
fn the_least_loaded_peer_wins_counting_calls_already_forwarded() {
    let mut scheduler = Scheduler::new(16);
    scheduler.peer_seen(peer("a"), vec![f("F")], 3);
    scheduler.peer_seen(peer("b"), vec![f("F")], 0);
    let order: Vec<String> = (0..5).map(|id| forwarded_to(&mut scheduler, id)).collect();
    // b: 0, 1, 2 forwarded; then both score 3 and they alternate.
    assert_eq!(order, vec!["b", "b", "b", "a", "b"]);
    scheduler.forward_finished(&peer("b"), None);
    scheduler.forward_finished(&peer("b"), None);
    assert_eq!(forwarded_to(&mut scheduler, 9), "b");
}

/// A call that was forwarded here is never forwarded again (the hop limit): with no local
/// worker it is refused, as "no worker", since a dispatcher of the cluster serves it.
#[test]
fn a_forwarded_call_is_never_forwarded_again() {
    let mut scheduler = Scheduler::new(16);
    scheduler.peer_seen(peer("a"), vec![f("F")], 0);
    let hop = Call {
        id: 1,
        forwarded: true,
        caller: None,
    };
    assert_eq!(
        refused(scheduler.place(&f("F"), hop, false)),
        DispatchError::NoWorker
    );
}

/// "Unknown" only when no dispatcher serves the function; peers all unreachable: no
/// worker; peers all at their forwarding limit: rate limited.
#[test]
fn unknown_only_when_no_dispatcher_serves_the_function() {
    let mut scheduler = Scheduler::new(16);
    assert_eq!(
        refused(scheduler.place(&f("F"), call(1), false)),
        DispatchError::UnknownFunction
    );
    scheduler.peer_seen(peer("a"), vec![f("F")], 0);
    scheduler.peer_reachable(&peer("a"), false);
    assert_eq!(
        refused(scheduler.place(&f("F"), call(2), false)),
        DispatchError::NoWorker
    );
    scheduler.peer_reachable(&peer("a"), true);
    scheduler.set_max_forwarded_per_peer(1, 1);
    assert_eq!(forwarded_to(&mut scheduler, 3), "a");
    assert_eq!(
        refused(scheduler.place(&f("F"), call(4), false)),
        DispatchError::RateLimited
    );
    scheduler.peer_gone(&peer("a"));
    assert_eq!(
        refused(scheduler.place(&f("F"), call(5), false)),
        DispatchError::UnknownFunction
    );
}

/// When the last local worker leaves, the calls waiting for it go to a peer that serves
/// the function instead of being refused.
#[test]
fn calls_waiting_for_a_departed_worker_go_to_a_peer() {
    let mut scheduler = Scheduler::new(16);
    scheduler.join(WorkerId(1), 1);
    scheduler.serve(WorkerId(1), &f("F"));
    scheduler.place(&f("F"), call(1), false);
    assert_eq!(scheduler.place(&f("F"), call(2), false), None);
    scheduler.peer_seen(peer("b"), vec![f("F")], 0);
    let decisions = scheduler.leave(WorkerId(1));
    assert_eq!(
        decisions,
        vec![Decision::Forward {
            peer: peer("b"),
            call: call(2)
        }]
    );
    let snapshot = scheduler.peers();
    assert_eq!((snapshot[0].forwarded, snapshot[0].reachable), (1, true));
}

/// A peer's forwarding slots are shared fairly by the callers: one tenant at its share
/// (`cluster.max_forwarded_per_caller`) finds the peer full, another tenant's calls still
/// go; a finished call gives its tenant's slot back.
#[test]
fn one_caller_cannot_take_every_slot_of_a_peer() {
    let mut scheduler = Scheduler::new(16);
    scheduler.set_max_forwarded_per_peer(4, 2);
    scheduler.peer_seen(peer("a"), vec![f("F")], 0);
    let of = |id: u64, tenant: &str| Call {
        id,
        forwarded: false,
        caller: Some(ClientKey::Token(tenant.into())),
    };
    for id in 0..2 {
        let placed = scheduler.place(&f("F"), of(id, "greedy"), false);
        assert!(
            matches!(placed, Some(Decision::Forward { .. })),
            "{placed:?}"
        );
    }
    assert_eq!(
        refused(scheduler.place(&f("F"), of(2, "greedy"), false)),
        DispatchError::RateLimited,
        "the greedy tenant is at its share"
    );
    for id in 3..5 {
        let placed = scheduler.place(&f("F"), of(id, "other"), false);
        assert!(
            matches!(placed, Some(Decision::Forward { .. })),
            "{placed:?}"
        );
    }
    assert_eq!(scheduler.peers()[0].forwarded, 4);
    let greedy = ClientKey::Token("greedy".into());
    scheduler.forward_finished(&peer("a"), Some(&greedy));
    let placed = scheduler.place(&f("F"), of(6, "greedy"), false);
    assert!(
        matches!(placed, Some(Decision::Forward { .. })),
        "{placed:?}"
    );
}

/// A peer that answered "no worker" for `F` gets no call of `F` (the others still do, and
/// with none left the call is refused `NoWorker`, never `UnknownFunction`) until its next
/// record or the end of the skip.
#[test]
fn a_peer_without_a_worker_of_the_function_is_skipped_for_it() {
    let mut scheduler = Scheduler::new(16);
    scheduler.peer_seen(peer("b"), vec![f("F")], 0);
    scheduler.peer_seen(peer("c"), vec![f("F")], 5);
    scheduler.peer_lacks(&peer("b"), &f("F"), true);
    assert_eq!(forwarded_to(&mut scheduler, 1), "c");
    scheduler.peer_lacks(&peer("c"), &f("F"), true);
    let error = refused(scheduler.place(&f("F"), call(2), false));
    assert_eq!(error, DispatchError::NoWorker);
    scheduler.peer_seen(peer("b"), vec![f("F")], 0);
    assert_eq!(forwarded_to(&mut scheduler, 3), "b");
    scheduler.peer_lacks(&peer("b"), &f("F"), true);
    scheduler.peer_lacks(&peer("c"), &f("F"), false);
    assert_eq!(forwarded_to(&mut scheduler, 4), "c");
}

/// Two calls to a peer fail one after the other: the peer stays skipped until the skip of
/// the second ends, not the first (its reachability does not flip with every failure).
#[test]
fn a_peer_is_skipped_until_its_last_failure_has_served_its_time() {
    let mut scheduler = Scheduler::new(16);
    scheduler.peer_seen(peer("a"), vec![f("F")], 0);
    scheduler.peer_reachable(&peer("a"), false);
    scheduler.peer_reachable(&peer("a"), false);
    scheduler.peer_reachable(&peer("a"), true);
    assert!(!scheduler.peers()[0].reachable);
    let error = refused(scheduler.place(&f("F"), call(1), false));
    assert_eq!(error, DispatchError::NoWorker);
    scheduler.peer_reachable(&peer("a"), true);
    assert!(scheduler.peers()[0].reachable);
    assert_eq!(forwarded_to(&mut scheduler, 2), "a");
}
