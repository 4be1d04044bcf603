//! The book's rules, one test each.

use super::*;
use crate::jobs::record::StoredPriority;

const LIMITS: Limits = Limits {
    max_jobs: 100,
    max_bytes: 1 << 20,
    window: 1,
    no_worker_retry_ms: 500,
    no_worker_retry_max_ms: 4000,
    max_jobs_per_caller: 100,
    max_bytes_per_caller: 1 << 20,
    max_scan: 1000,
};

fn job(function: &str, priority: StoredPriority, run_at: u64) -> NewJob {
    let mut record = crate::jobs::record::tests::sample();
    record.function = ByteBuf::from(function.as_bytes().to_vec());
    record.priority = priority;
    record.run_at_ms = run_at;
    record.attempts = 0;
    record.output = None;
    record.finished_ms = None;
    record.started_ms = None;
    record.progress = None;
    NewJob { record }
}

fn book() -> Book {
    Book::new("n1".into(), 1, LIMITS, Vec::new(), 0).0
}

/// Submits `job` and, as the actor does once the store has it, releases it.
fn submit(book: &mut Book, job: NewJob, now: u64) -> u64 {
    match book.submit(job, now).unwrap() {
        Accepted::New(record) => {
            book.release(record.seq);
            record.seq
        }
        Accepted::Shared(seq) => panic!("shared {seq}"),
    }
}

fn started(book: &mut Book, now: u64) -> Vec<u64> {
    book.wake(now);
    book.startable(now, |_| Room::Elsewhere)
        .iter()
        .map(|r| r.seq)
        .collect()
}

/// With one slot, a high job submitted after normal ones starts before them; low last.
#[test]
fn high_jobs_overtake_queued_normal_ones() {
    let mut book = book();
    let first = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    assert_eq!(started(&mut book, 0), [first]);
    let low = submit(&mut book, job("F", StoredPriority::Low, 0), 1);
    let normal = submit(&mut book, job("F", StoredPriority::Normal, 0), 1);
    let high = submit(&mut book, job("F", StoredPriority::High, 0), 2);
    assert!(started(&mut book, 2).is_empty(), "the window is full");
    let mut order = Vec::new();
    let mut seq = first;
    for now in 3..6 {
        let end = AttemptEnd::Succeeded(Bytes::from_static(b"ok"));
        assert_eq!(
            book.finish(seq, end, now).unwrap().state,
            JobState::Succeeded
        );
        let next = started(&mut book, now);
        assert_eq!(next.len(), 1);
        seq = next[0];
        order.push(seq);
    }
    assert_eq!(order, [high, normal, low]);
}

/// A delayed job does not start before its time.
#[test]
fn a_delayed_job_waits_for_its_time() {
    let mut book = book();
    let later = submit(&mut book, job("F", StoredPriority::Normal, 1000), 0);
    assert!(started(&mut book, 999).is_empty());
    assert_eq!(book.wake(999), Some(1000));
    assert_eq!(started(&mut book, 1000), [later]);
}

/// A failed attempt is tried again after the backoff, doubling, until the attempts are
/// used; then the job fails with the last error.
#[test]
fn failed_attempts_back_off_then_fail() {
    let mut book = book();
    let seq = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    let fail = || AttemptEnd::Failed {
        code: "worker_error",
        message: "boom".into(),
        retry: true,
    };
    assert_eq!(started(&mut book, 0), [seq]);
    let record = book.finish(seq, fail(), 10).unwrap();
    assert_eq!((record.state, record.run_at_ms), (JobState::Queued, 1010));
    assert!(started(&mut book, 1009).is_empty());
    assert_eq!(started(&mut book, 1010), [seq]);
    let record = book.finish(seq, fail(), 2000).unwrap();
    assert_eq!(record.run_at_ms, 4000, "the second wait is twice the first");
    assert_eq!(started(&mut book, 4000), [seq]);
    let record = book.finish(seq, fail(), 5000).unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Failed, 3));
    assert_eq!(record.output.as_deref().map(|o| &o[..]), Some(&b"boom"[..]));
}

/// No worker, or a shutdown, uses no attempt.
#[test]
fn no_worker_and_shutdown_use_no_attempt() {
    let mut book = book();
    let seq = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    assert_eq!(started(&mut book, 0), [seq]);
    let record = book.finish(seq, AttemptEnd::NoWorker, 10).unwrap();
    assert_eq!((record.attempts, record.run_at_ms), (0, 510));
    assert_eq!(started(&mut book, 510), [seq]);
    let record = book.finish(seq, AttemptEnd::Interrupted, 600).unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Queued, 0));
}

/// Submissions with one caller, function and unique key share the job while it is queued
/// or running; another caller's same key is its own job; once final, the key is free.
#[test]
fn a_unique_key_shares_one_job_per_caller() {
    let mut book = book();
    let keyed = |caller: &str| {
        let mut job = job("F", StoredPriority::Normal, 0);
        job.record.unique = Some(ByteBuf::from(b"k".to_vec()));
        job.record.caller = Some(caller.into());
        job
    };
    let seq = submit(&mut book, keyed("token:a"), 0);
    assert!(matches!(book.submit(keyed("token:a"), 0), Ok(Accepted::Shared(s)) if s == seq));
    let other = submit(&mut book, keyed("token:b"), 0);
    assert_ne!(other, seq);
    started(&mut book, 0);
    assert!(matches!(book.submit(keyed("token:a"), 0), Ok(Accepted::Shared(s)) if s == seq));
    book.finish(seq, AttemptEnd::Succeeded(Bytes::new()), 1);
    assert!(matches!(
        book.submit(keyed("token:a"), 2),
        Ok(Accepted::New(_))
    ));
}

/// Past the job or byte bound a submission is refused; expired results free room.
#[test]
fn the_store_bounds_hold_and_expiry_frees_room() {
    let limits = Limits {
        max_jobs: 2,
        ..LIMITS
    };
    let mut book = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let seq = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    submit(&mut book, job("G", StoredPriority::Normal, 0), 0);
    let refused = book
        .submit(job("F", StoredPriority::Normal, 0), 0)
        .unwrap_err();
    assert_eq!(refused, Full::Jobs(2));
    started(&mut book, 0);
    let ttl = book.get(seq).unwrap().result_ttl_ms;
    book.finish(seq, AttemptEnd::Succeeded(Bytes::new()), 10);
    assert!(book.expire(10 + ttl - 1).is_empty());
    assert_eq!(book.expire(10 + ttl), [seq]);
    assert!(book.get(seq).is_none());
    assert!(book.submit(job("F", StoredPriority::Normal, 0), 0).is_ok());
    let limits = Limits {
        max_bytes: 300,
        ..LIMITS
    };
    let mut small = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let mut big = job("F", StoredPriority::Normal, 0);
    big.record.params = ByteBuf::from(vec![0; 100]);
    assert_eq!(small.submit(big, 0).unwrap_err(), Full::Bytes(300));
}

/// Only queued jobs are cancelled; a cancelled job is final and never starts.
#[test]
fn only_queued_jobs_are_cancelled() {
    let mut book = book();
    let running = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    let queued = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    started(&mut book, 0);
    assert_eq!(
        book.cancel(running, 1).unwrap_err(),
        NotCancelled::Too(JobState::Running)
    );
    assert_eq!(book.cancel(queued, 1).unwrap().state, JobState::Cancelled);
    assert_eq!(book.cancel(999, 1).unwrap_err(), NotCancelled::NotFound);
    book.finish(running, AttemptEnd::Succeeded(Bytes::new()), 2);
    assert!(started(&mut book, 3).is_empty());
}

/// Jobs that were running when the dispatcher stopped are queued again at load, keeping
/// their attempts; numbers go on from the store's next number.
#[test]
fn running_jobs_are_queued_again_at_load() {
    let mut book = book();
    let seq = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    started(&mut book, 0);
    let stored: Vec<JobRecord> = book.records().cloned().collect();
    let (mut again, requeued) = Book::new("n1".into(), book.next_seq(), LIMITS, stored, 50);
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].state, JobState::Queued);
    assert_eq!(started(&mut again, 50), [seq]);
    assert_eq!(again.get(seq).unwrap().attempts, 2);
    let next = submit(&mut again, job("F", StoredPriority::Normal, 0), 60);
    assert!(next > seq);
}

/// A job waits for its submission to be written before it may start; one whose write
/// failed is forgotten, with its unique key.
#[test]
fn a_job_starts_only_once_written() {
    let mut book = book();
    let mut keyed = job("F", StoredPriority::Normal, 0);
    keyed.record.unique = Some(ByteBuf::from(b"k".to_vec()));
    let Ok(Accepted::New(record)) = book.submit(keyed.clone(), 0) else {
        panic!("not new")
    };
    assert!(book.is_held(record.seq));
    assert!(started(&mut book, 10).is_empty(), "not written yet");
    book.release(record.seq);
    assert_eq!(started(&mut book, 10), [record.seq]);
    let Ok(Accepted::New(other)) = book.submit(job("G", StoredPriority::Normal, 0), 20) else {
        panic!("not new")
    };
    assert!(book.forget(other.seq).is_some());
    assert!(book.get(other.seq).is_none());
    assert!(started(&mut book, 30).is_empty());
}

/// A result that would take the store past its byte bound fails its job instead.
#[test]
fn a_result_too_large_for_the_store_fails_its_job() {
    let limits = Limits {
        max_bytes: 4096,
        ..LIMITS
    };
    let mut book = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let seq = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    started(&mut book, 0);
    let big = AttemptEnd::Succeeded(Bytes::from(vec![b'x'; 8192]));
    let record = book.finish(seq, big, 1).unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error_code.as_deref(), Some("result_too_large"));
    assert!(book.size().1 <= 4096, "{:?}", book.size());
}

/// A function with no worker is parked: none of its jobs starts before the wait is over,
/// and the wait doubles (up to the maximum) while no worker comes; a worker's answer ends it.
#[test]
fn a_function_without_a_worker_is_parked_with_a_growing_wait() {
    let limits = Limits {
        window: 10,
        ..LIMITS
    };
    let mut book = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let first = submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    assert_eq!(started(&mut book, 0), [first]);
    book.finish(first, AttemptEnd::NoWorker, 0);
    let second = submit(&mut book, job("F", StoredPriority::Normal, 0), 10);
    assert!(started(&mut book, 10).is_empty(), "F is parked");
    assert!(started(&mut book, 499).is_empty());
    let mut both = started(&mut book, 500);
    both.sort_unstable();
    assert_eq!(both, [first, second]);
    book.finish(first, AttemptEnd::NoWorker, 500);
    book.finish(second, AttemptEnd::NoWorker, 500);
    assert!(started(&mut book, 1499).is_empty(), "the wait doubled");
    assert_eq!(started(&mut book, 1500).len(), 2);
    let mut now = 1500;
    for _ in 0..5 {
        book.finish(first, AttemptEnd::NoWorker, now);
        book.finish(second, AttemptEnd::NoWorker, now);
        let at = book.get(first).unwrap().run_at_ms;
        assert!(at - now <= 4000, "at most the maximum");
        now = at;
        started(&mut book, now);
    }
    let end = AttemptEnd::Succeeded(Bytes::new());
    book.finish(first, end, now);
    let third = submit(&mut book, job("F", StoredPriority::Normal, 0), now);
    book.finish(second, AttemptEnd::Succeeded(Bytes::new()), now);
    assert_eq!(
        started(&mut book, now),
        [third],
        "a worker answered: not parked"
    );
}

/// One caller may store `max_jobs_per_caller` jobs; another caller still may.
#[test]
fn one_caller_cannot_fill_the_store() {
    let limits = Limits {
        max_jobs_per_caller: 2,
        ..LIMITS
    };
    let mut book = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let from = |caller: &str| {
        let mut job = job("F", StoredPriority::Normal, 60_000);
        job.record.caller = Some(caller.into());
        job
    };
    submit(&mut book, from("token:a"), 0);
    let seq = submit(&mut book, from("token:a"), 0);
    assert_eq!(
        book.submit(from("token:a"), 0).unwrap_err(),
        Full::Caller(2)
    );
    submit(&mut book, from("token:b"), 0);
    book.cancel(seq, 1).unwrap();
    book.expire(u64::MAX);
    assert!(
        book.submit(from("token:a"), 2).is_ok(),
        "room again once forgotten"
    );
}

/// One caller's jobs hold at most `max_bytes_per_caller`, results included: past it its
/// submissions are refused and a result that would not fit fails its job; another caller
/// still has room.
#[test]
fn one_callers_bytes_cannot_fill_the_store() {
    let limits = Limits {
        max_bytes_per_caller: 2_000,
        window: 2,
        ..LIMITS
    };
    let mut book = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let from = |caller: &str, params: usize| {
        let mut job = job("F", StoredPriority::Normal, 0);
        job.record.caller = Some(caller.into());
        job.record.params = ByteBuf::from(vec![0; params]);
        job
    };
    let first = submit(&mut book, from("token:a", 1_000), 0);
    assert_eq!(
        book.submit(from("token:a", 1_000), 0).unwrap_err(),
        Full::CallerBytes(2_000)
    );
    let other = submit(&mut book, from("token:b", 1_000), 0);
    assert_eq!(started(&mut book, 1), [first, other]);
    let big = AttemptEnd::Succeeded(Bytes::from(vec![b'r'; 1_500]));
    let failed = book.finish(first, big, 2).unwrap();
    assert_eq!(
        (failed.state, failed.error_code.as_deref()),
        (JobState::Failed, Some("result_too_large"))
    );
    let fits = AttemptEnd::Succeeded(Bytes::from(vec![b'r'; 500]));
    assert_eq!(
        book.finish(other, fits, 2).unwrap().state,
        JobState::Succeeded
    );
}

/// A job found running at load whose attempts are used up fails (`interrupted`); numbers
/// go on past any that could have been given before the stop.
#[test]
fn a_job_interrupted_in_its_last_attempt_fails_at_load() {
    let mut book = book();
    let mut last = job("F", StoredPriority::Normal, 0);
    last.record.max_attempts = 1;
    let seq = submit(&mut book, last, 0);
    started(&mut book, 0);
    let stored: Vec<JobRecord> = book.records().cloned().collect();
    let next = book.next_seq();
    let (again, requeued) = Book::new("n1".into(), next, LIMITS, stored, 50);
    let record = again.get(seq).unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error_code.as_deref(), Some("interrupted"));
    assert_eq!(requeued.len(), 1, "written back failed");
    assert!(again.next_seq() > next + LIMITS.max_jobs as u64);
}

/// A page looks at `max_scan` jobs at most and says where to go on.
#[test]
fn a_page_looks_at_a_bounded_number_of_jobs() {
    let limits = Limits {
        max_scan: 10,
        ..LIMITS
    };
    let mut book = Book::new("n1".into(), 1, limits, Vec::new(), 0).0;
    let seqs: Vec<u64> = (0..25)
        .map(|_| submit(&mut book, job("F", StoredPriority::Normal, 60_000), 0))
        .collect();
    let none = book.list(0, 5, |_| false);
    assert!(none.jobs.is_empty());
    assert_eq!(none.next, Some(seqs[9]));
    let page = book.list(0, 5, |_| true);
    assert_eq!(page.jobs.len(), 5);
    assert_eq!(page.next, Some(seqs[4]));
    let last = book.list(seqs[19], 100, |_| true);
    assert_eq!((last.jobs.len(), last.next), (5, None));
}

/// Jobs start only into free slots of the function's workers here: the others stay queued
/// (cancellable, no attempt counted) and start as slots free; a function not yet known starts
/// none until it is; one no worker here serves goes `window` at a time.
#[test]
fn jobs_start_only_into_free_slots_of_the_functions_workers() {
    let mut book = Book::new(
        "n1".into(),
        1,
        Limits {
            window: 8,
            ..LIMITS
        },
        Vec::new(),
        0,
    )
    .0;
    let seqs: Vec<u64> = (0..4)
        .map(|_| submit(&mut book, job("F", StoredPriority::Normal, 0), 0))
        .collect();
    book.wake(0);
    let seqs_of = |records: Vec<JobRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert!(book.startable(0, |_| Room::Unknown).is_empty());
    assert_eq!(seqs_of(book.startable(1, |_| Room::Free(1))), seqs[..1]);
    let record = book.get(seqs[1]).unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Queued, 0));
    assert_eq!(book.cancel(seqs[3], 2).unwrap().state, JobState::Cancelled);
    // Busy workers (synchronous calls hold the slots): nothing starts, and the function is
    // looked at again without anything else touching it.
    assert!(book.startable(3, |_| Room::Free(0)).is_empty());
    assert_eq!(seqs_of(book.startable(4, |_| Room::Free(1))), seqs[1..2]);
    assert_eq!(seqs_of(book.startable(5, |_| Room::Elsewhere)), seqs[2..3]);
}

/// A function only peers serve starts no more jobs than their published slots, counting
/// its own running ones; `Elsewhere` (no slots published) goes `window` at a time.
#[test]
fn a_peers_function_starts_no_more_than_its_slots() {
    let mut book = Book::new(
        "n1".into(),
        1,
        Limits {
            window: 8,
            ..LIMITS
        },
        Vec::new(),
        0,
    )
    .0;
    for _ in 0..5 {
        submit(&mut book, job("F", StoredPriority::Normal, 0), 0);
    }
    book.wake(0);
    assert_eq!(book.startable(1, |_| Room::Peers(2)).len(), 2);
    assert!(
        book.startable(2, |_| Room::Peers(2)).is_empty(),
        "two running"
    );
    assert_eq!(book.startable(3, |_| Room::Peers(3)).len(), 1);
    assert_eq!(book.startable(4, |_| Room::Elsewhere).len(), 2);
}
