//! The book's rules, one test each.

use super::*;
use crate::jobs::record::StoredPriority;

const LIMITS: Limits = Limits {
    max_jobs: 100,
    max_bytes: 1 << 20,
    window: 1,
    no_worker_retry_ms: 500,
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

fn submit(book: &mut Book, job: NewJob, now: u64) -> u64 {
    match book.submit(job, now).unwrap() {
        Accepted::New(record) => record.seq,
        Accepted::Shared(seq) => panic!("shared {seq}"),
    }
}

fn started(book: &mut Book, now: u64) -> Vec<u64> {
    book.wake(now);
    book.startable(now).iter().map(|r| r.seq).collect()
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
