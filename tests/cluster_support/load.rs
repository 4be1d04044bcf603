//! Load for the cluster tests: an echo handler, bounded call loops that count their
//! answers, and waiting for calls to have been answered (evidence instead of sleeps).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nmid::client::Client;
use nmid::worker::{Job, JobError};

use super::PROCESS_PATIENCE;

/// An echo handler that upper-cases its params after `delay`.
pub async fn echo_upper(job: Job, delay: Duration) -> Result<Bytes, JobError> {
    tokio::time::sleep(delay).await;
    Ok(Bytes::from(job.params().to_ascii_uppercase()))
}

/// Calls `function` through `client` until `running` is cleared (bounded: at most 200,000
/// calls and 180 s), counting answers that are right in `ok`; returns the failures.
pub fn spawn_load(
    client: Client,
    function: &'static str,
    running: Rc<Cell<bool>>,
    ok: Rc<Cell<u64>>,
) -> actix_rt::task::JoinHandle<Vec<String>> {
    actix_rt::spawn(async move {
        let started = Instant::now();
        let mut failed = Vec::new();
        let mut n = 0u64;
        while running.get() && n < 200_000 && started.elapsed() < Duration::from_secs(180) {
            n += 1;
            match client.call(function, format!("w{n}")).await {
                Ok(ret) if ret == format!("W{n}").as_bytes() => ok.set(ok.get() + 1),
                other => failed.push(format!("{function} call {n}: {other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        failed
    })
}

/// Waits until every counter in `oks` has grown by `more` from `from`.
pub async fn wait_for_calls(oks: &[Rc<Cell<u64>>], from: &[u64], more: u64, what: &str) {
    let deadline = Instant::now() + PROCESS_PATIENCE;
    while oks
        .iter()
        .zip(from)
        .any(|(ok, from)| ok.get() < from + more)
    {
        let now: Vec<u64> = oks.iter().map(|ok| ok.get()).collect();
        assert!(
            Instant::now() < deadline,
            "{what}: calls stalled at {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
