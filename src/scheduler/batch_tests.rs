//! The batch slack (`workers.batch_slack`): within a round, the worker that took a
//! function's last call keeps taking its calls while it holds fewer than the least-loaded
//! worker's jobs plus the slack; calls of different rounds, and every call with the slack
//! at 0, are placed strictly least-loaded (the rules of `tests.rs`).

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Call(u64);

impl Waiting for Call {
    fn job_id(&self) -> JobId {
        JobId(self.0)
    }

    fn is_live(&self) -> bool {
        true
    }
}

fn f() -> FunctionName {
    FunctionName::from("F")
}

/// `workers` workers (ids 1..) of `max_jobs` slots serving `F`, with `slack`.
fn with_slack(workers: u64, max_jobs: u32, slack: u32) -> Scheduler<Call> {
    let mut scheduler = Scheduler::new(1024);
    scheduler.set_batch_slack(slack);
    for id in 1..=workers {
        scheduler.join(WorkerId(id), max_jobs);
        assert!(scheduler.serve(WorkerId(id), &f()).is_empty());
    }
    scheduler
}

fn assigned(scheduler: &mut Scheduler<Call>, id: u64) -> u64 {
    match scheduler.place(&f(), Call(id), false) {
        Some(Decision::Assign { worker, .. }) => worker.0,
        other => panic!("call {id} was not assigned: {other:?}"),
    }
}

/// Calls placed in one round go to one worker in runs of `slack`, then to the next
/// least-loaded one: every worker still gets its share. The registry is told once to end
/// the round.
#[test]
fn calls_of_one_round_go_to_one_worker_in_runs_of_the_slack() {
    let mut scheduler = with_slack(3, 8, 2);
    let order: Vec<u64> = (0..6).map(|id| assigned(&mut scheduler, id)).collect();
    assert_eq!(order, vec![1, 1, 2, 2, 3, 3]);
    assert!(scheduler.round_opened());
    assert!(!scheduler.round_opened(), "asked to end the round once");
    scheduler.end_round();
    assert!(!scheduler.round_opened());
}

/// Calls that arrive one by one (a round each) go round-robin, whatever the slack.
#[test]
fn calls_of_separate_rounds_go_round_robin() {
    let mut scheduler = with_slack(3, 8, 4);
    let order: Vec<u64> = (0..6)
        .map(|id| {
            let worker = assigned(&mut scheduler, id);
            assert!(scheduler.round_opened());
            scheduler.end_round();
            worker
        })
        .collect();
    assert_eq!(order, vec![1, 2, 3, 1, 2, 3]);
}

/// With the slack at 0 the calls of one round go round-robin (strict least-loaded), and no
/// round needs ending.
#[test]
fn a_slack_of_zero_is_strict_least_loaded() {
    let mut scheduler = with_slack(3, 8, 0);
    let order: Vec<u64> = (0..6).map(|id| assigned(&mut scheduler, id)).collect();
    assert_eq!(order, vec![1, 2, 3, 1, 2, 3]);
    assert!(!scheduler.round_opened());
}

/// One worker: nothing to batch among, no round to end.
#[test]
fn a_single_worker_opens_no_round() {
    let mut scheduler = with_slack(1, 8, 2);
    assert_eq!(assigned(&mut scheduler, 1), 1);
    assert!(!scheduler.round_opened());
}

/// The last worker is passed over once it is full, even within the slack.
#[test]
fn a_full_worker_takes_no_more_within_the_slack() {
    let mut scheduler = with_slack(2, 1, 8);
    let first = assigned(&mut scheduler, 1);
    let second = assigned(&mut scheduler, 2);
    assert_ne!(first, second);
    assert_eq!(scheduler.place(&f(), Call(3), false), None);
}

/// Under load, with jobs finishing and rounds ending at random, a call never goes to a
/// worker holding `slack` or more jobs above the least-loaded worker with room, and no
/// worker starves.
#[test]
fn no_call_goes_above_the_slack_and_no_worker_starves() {
    const WORKERS: u64 = 5;
    const SLACK: u32 = 4;
    let mut scheduler = with_slack(WORKERS, 16, SLACK);
    let mut load = [0u32; WORKERS as usize + 1];
    let mut taken = [0u64; WORKERS as usize + 1];
    let mut running: Vec<u64> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for id in 0..20_000u64 {
        if random() % 8 == 0 {
            scheduler.end_round();
        }
        if running.len() < 40 || (running.len() < 60 && random() % 2 == 0) {
            let least = (1..=WORKERS as usize)
                .map(|w| load[w])
                .filter(|&l| l < 16)
                .min()
                .expect("a worker has room");
            match scheduler.place(&f(), Call(id), false) {
                Some(Decision::Assign { worker, .. }) => {
                    let w = worker.0 as usize;
                    assert!(load[w] < least + SLACK, "{load:?} -> {w}");
                    load[w] += 1;
                    taken[w] += 1;
                    running.push(worker.0);
                }
                other => panic!("call {id}: {other:?}"),
            }
        } else {
            let done = running.swap_remove((random() % running.len() as u64) as usize);
            load[done as usize] -= 1;
            assert!(scheduler.finished(WorkerId(done), &f()).is_empty());
        }
    }
    let least_taken = taken[1..].iter().min().copied().unwrap();
    assert!(least_taken > 1_000, "{taken:?}");
}
