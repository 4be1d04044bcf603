//! The soak: calls through a real `nmid` process while its worker processes are SIGKILLed and
//! restarted at random, and hostile peers do what issue 12 found (a client that never reads,
//! half headers, a control-frame flood, incomplete frames). Every call is counted by its
//! request id: lost, misrouted and duplicated must all be 0, and the only error allowed is
//! `WORKER_LOST` for a call lost with as many workers as it had tries, no more often than
//! the kills and the dispatcher's retries explain (the bound is printed); the dispatcher's
//! peak RSS is printed.
//!
//! `make test` runs 5,000 calls; `make soak` 100,000 (`NMID_SOAK_CALLS`), in release.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::process::{rss_bytes, ChildLog, Process};
use common::wire;
use nmid::codec::{
    self, ErrorCode, Frame, ParamsType, SCallError, TaggedCall, TaggedResult, HANDLE_TYPE_ENCODE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The function the soak's workers serve: the params upper-cased.
const FUNCTION: &str = "Soak";
/// The function the hostile peers call, served the same way by a worker that is never
/// killed: their jobs load the dispatcher and are never lost, so every retry the dispatcher
/// counts (`nmid_job_retries_total`) is one of the soak client's jobs.
const HOSTILE_FUNCTION: &str = "SoakHostile";
/// Worker processes at any time.
const WORKERS: usize = 4;
/// Calls in flight from the soak's client.
const IN_FLIGHT: u64 = 64;
/// Jobs each worker runs at once: the most one kill can lose.
const WORKER_SLOTS: u32 = 16;
/// `jobs.retries` of the soak's dispatcher: a call lost with its worker is dispatched again
/// this many times before it is answered `WORKER_LOST`.
const RETRIES: u32 = 3;

/// Not a test on its own: the worker process the soak starts (and kills), by re-running this
/// test binary with `--ignored --exact soak_worker_role`.
#[test]
#[ignore = "a role of the soak, started by it"]
fn soak_worker_role() {
    let addr = std::env::var("NMID_SOAK_WORKER_ADDR").expect("started by the soak");
    let function = std::env::var("NMID_SOAK_WORKER_FUNCTION").expect("started by the soak");
    actix_rt::System::new().block_on(async move {
        let _worker = nmid::worker::Worker::builder()
            .name("soak")
            .server(addr)
            .slots(WORKER_SLOTS)
            .function(function, |job: nmid::worker::Job| async move {
                // A moment of work, so that a kill finds jobs in flight.
                let pause = job.params().len() % 3;
                tokio::time::sleep(Duration::from_millis(pause as u64)).await;
                let upper = job.params().to_ascii_uppercase();
                Ok::<_, nmid::worker::JobError>(upper)
            })
            .start()
            .expect("a valid worker");
        std::future::pending::<()>().await;
    });
}

/// A worker process serving `function`, killed by its PID when dropped; a panic it
/// reported on its stderr then fails the soak.
struct WorkerProcess {
    child: Child,
    log: ChildLog,
}

impl WorkerProcess {
    fn start(addr: SocketAddr, function: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "soak_worker_role", "--nocapture"])
            .env("NMID_SOAK_WORKER_ADDR", addr.to_string())
            .env("NMID_SOAK_WORKER_FUNCTION", function)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a soak worker");
        let log = ChildLog::read(child.stderr.take().unwrap());
        Self { child, log }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let who = format!("soak worker (pid {})", self.child.id());
        self.log.assert_no_panic(&who);
    }
}

/// What came back for the calls, by request id.
#[derive(Default)]
struct Tally {
    /// Answers per request id.
    answers: HashMap<u64, u32>,
    /// Results that were not their call's.
    misrouted: u64,
    /// Calls answered `WORKER_LOST`: in flight on workers that were killed, every retry
    /// included. The one error the soak allows, up to [`Tally::allowed_errors`].
    worker_lost: u64,
    /// Calls answered with any other error, by code: none is allowed (a dispatcher that
    /// fails calls while its workers come and go fails the soak).
    other_errors: HashMap<u32, u64>,
}

impl Tally {
    /// Counts one reply; `None` for a frame that answers no call.
    fn record(&mut self, frame: &Frame) -> Option<u64> {
        let id = match frame {
            Frame::SCallResult(r) => {
                if r.ret[..] != expected(r.id)[..] {
                    self.misrouted += 1;
                }
                r.id
            }
            Frame::SCallError(e) if e.code == ErrorCode::WORKER_LOST => {
                self.worker_lost += 1;
                e.request_id
            }
            Frame::SCallError(e) => {
                *self.other_errors.entry(e.code.0).or_default() += 1;
                e.request_id
            }
            _ => return None,
        };
        *self.answers.entry(id).or_default() += 1;
        Some(id)
    }

    /// The most `WORKER_LOST` answers that `kills` workers killed and `retried` jobs retried
    /// (the dispatcher's `nmid_job_retries_total`: the soak client's jobs only, since the
    /// hostile peers' go to a worker never killed) can explain. A call is answered
    /// `WORKER_LOST` only once it was lost with `1 + RETRIES` workers, each a different kill,
    /// and retried `RETRIES` times; each kill loses at most a worker's slots of jobs.
    fn allowed_errors(kills: u64, retried: u64) -> u64 {
        let by_kills = match kills > u64::from(RETRIES) {
            true => kills * u64::from(WORKER_SLOTS) / u64::from(1 + RETRIES),
            false => 0,
        };
        by_kills.min(retried / u64::from(RETRIES))
    }

    /// Whether `calls` calls made while `kills` workers were killed (and `retried` jobs were
    /// retried) came back as they must: each answered exactly once, with its own result or
    /// an allowed error.
    fn verdict(&self, calls: u64, kills: u64, retried: u64) -> Result<(), String> {
        let lost = (0..calls)
            .filter(|id| !self.answers.contains_key(id))
            .count();
        let duplicated = self.answers.values().filter(|n| **n > 1).count();
        let allowed = Self::allowed_errors(kills, retried);
        let mut faults = Vec::new();
        if lost > 0 || duplicated > 0 || self.misrouted > 0 {
            faults.push(format!(
                "lost {lost}, duplicated {duplicated}, misrouted {}",
                self.misrouted
            ));
        }
        if !self.other_errors.is_empty() {
            faults.push(format!(
                "errors not allowed, by code: {:?}",
                self.other_errors
            ));
        }
        if self.worker_lost > allowed {
            faults.push(format!(
                "{} WORKER_LOST, more than the {allowed} that {kills} kills and {retried} retries explain",
                self.worker_lost
            ));
        }
        match faults.is_empty() {
            true => Ok(()),
            false => Err(faults.join("; ")),
        }
    }
}

/// The expected result of call `id`.
fn expected(id: u64) -> Vec<u8> {
    format!("CALL-{id}").into_bytes()
}

fn call_frame(function: &'static str, id: u64) -> Vec<u8> {
    wire(&Frame::CCall(TaggedCall {
        id,
        timeout_ms: 20_000,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from_static(function.as_bytes()),
        params: Bytes::from(format!("call-{id}")),
        meta: Vec::new(),
    }))
}

/// Makes `calls` tagged calls and tallies every reply: all but the last pipelined,
/// `IN_FLIGHT` at a time, then the last alone once every other was answered. A reply that
/// arrives before the last call's answer and answers no call still open is a duplicate.
async fn client(addr: SocketAddr, calls: u64) -> Tally {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut tally = Tally::default();
    let last = calls - 1;
    let (mut next, mut answered, mut last_answered) = (0u64, 0u64, false);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(30 + calls / 500);
    while !last_answered {
        let mut out = Vec::new();
        while next < last && next - answered < IN_FLIGHT {
            out.extend(call_frame(FUNCTION, next));
            next += 1;
        }
        if next == last && answered >= last {
            out.extend(call_frame(FUNCTION, last));
            next += 1;
        }
        write.write_all(&out).await.unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            other => panic!("the soak's client stopped hearing back ({other:?}); {answered} of {calls} answered"),
        }
        while let Some(frame) = codec::decode(&mut buf, codec::DEFAULT_MAX_FRAME_BYTES).unwrap() {
            match tally.record(&frame) {
                Some(id) if id == last => last_answered = true,
                Some(_) => answered += 1,
                None => panic!("unexpected {frame:?}"),
            }
        }
    }
    tally
}

/// Hostile peers, until `stop`: a client that never reads, half headers, a control flood,
/// incomplete frames. Each opens its connections afresh when the dispatcher closes them.
async fn hostile(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) {
        rounds += 1;
        let mut streams = Vec::new();
        // Half a header.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(&[0, 0, 0, 3, 0]).await;
            streams.push(s);
        }
        // Calls, never reading the replies.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            for id in 0..200 {
                let frame = call_frame(HOSTILE_FUNCTION, 1 << 40 | id);
                if tokio::time::timeout(Duration::from_millis(50), s.write_all(&frame))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            streams.push(s);
        }
        // A control flood.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let mut flood = Vec::new();
            for _ in 0..2_000 {
                flood.extend(wire(&Frame::WAddFunc {
                    function: Bytes::from_static(b"X"),
                }));
                flood.extend(wire(&Frame::WDelFunc {
                    function: Bytes::from_static(b"X"),
                }));
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&flood)).await;
            streams.push(s);
        }
        // A frame announced large, mostly sent.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let mut frame = vec![0, 0, 0, 3, 0, 0, 0, 16];
            frame.extend((1u32 << 20).to_be_bytes());
            frame.extend(vec![0u8; (1 << 20) - 1]);
            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&frame)).await;
            streams.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(streams);
    }
    println!("soak: {rounds} rounds of hostile peers");
}

/// `GET path` on the dispatcher's HTTP port: the body.
async fn get(http: SocketAddr, path: &str) -> String {
    let mut response = (awc::Client::default().get(format!("http://{http}{path}")))
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"));
    let body = response.body().await.expect("a body");
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the counter `name` (no labels) on `/metrics`.
async fn counter(http: SocketAddr, name: &str) -> u64 {
    let text = get(http, "/metrics").await;
    (text.lines())
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} on /metrics"))
}

/// Waits until [`WORKERS`] workers serve [`FUNCTION`] (a restarted one has registered, the
/// one killed is gone).
async fn all_serving(http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let workers: serde_json::Value =
            serde_json::from_str(&get(http, "/api/v1/workers").await).expect("JSON workers");
        let serving = (workers.as_array().expect("a list of workers").iter())
            .filter(|w| {
                w["functions"]
                    .as_array()
                    .is_some_and(|f| f.contains(&FUNCTION.into()))
            })
            .count();
        if serving == WORKERS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{serving} of the soak's {WORKERS} workers serve: a started one never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls keep being answered exactly once, each with its own result, while workers are
/// SIGKILLed and restarted at random and hostile peers press on the dispatcher.
#[actix_rt::test]
async fn calls_survive_killed_workers_and_hostile_peers() {
    let calls: u64 = std::env::var("NMID_SOAK_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let nmid = Process::start_with_env(
        &[],
        &[
            ("NMID__JOBS__RETRIES", &RETRIES.to_string()),
            ("NMID__TCP__HANDSHAKE_TIMEOUT_MS", "1000"),
            ("NMID__TCP__FRAME_TIMEOUT_MS", "1000"),
            ("NMID__TCP__SLOW_CONSUMER_TIMEOUT_MS", "1000"),
            ("NMID__TCP__MAX_OUTBOUND_BYTES", "1048576"),
            ("RUST_LOG", "error"),
        ],
    );
    let (addr, http) = (nmid.addr, nmid.http.expect("nmid serves HTTP"));
    let pid = nmid.child.id();
    let mut workers: Vec<WorkerProcess> = (0..WORKERS)
        .map(|_| WorkerProcess::start(addr, FUNCTION))
        .collect();
    let hostile_sink = WorkerProcess::start(addr, HOSTILE_FUNCTION);
    all_serving(http).await;

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let hostile = tokio::spawn(hostile(addr, stop.clone()));
    let started = Instant::now();
    let tally = tokio::spawn(client(addr, calls));
    // Chaos: a random worker killed and restarted every 150-400 ms, once its replacement
    // serves (so that the function never runs out of workers: NO_WORKER is not allowed).
    let mut kills = 0u64;
    let mut seed = started.elapsed().as_nanos() as u64 | 1;
    while !tally.is_finished() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 250)).await;
        let victim = (seed as usize / 7) % workers.len();
        workers[victim] = WorkerProcess::start(addr, FUNCTION); // the old one is killed as it drops
        kills += 1;
        all_serving(http).await;
    }
    let tally = tally.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    hostile.await.unwrap();
    sampler.await.unwrap();
    let retried = counter(http, "nmid_job_retries_total").await;

    println!(
        "soak: {calls} calls in {:?} with {kills} workers SIGKILLed and {retried} jobs retried: {} answered, {} WORKER_LOST (at most {} allowed), other errors {:?}, misrouted {}; nmid peak RSS {} MiB",
        started.elapsed(),
        tally.answers.len(),
        tally.worker_lost,
        Tally::allowed_errors(kills, retried),
        tally.other_errors,
        tally.misrouted,
        peak.load(Ordering::Relaxed) / (1024 * 1024),
    );
    if let Err(faults) = tally.verdict(calls, kills, retried) {
        panic!("the soak failed: {faults}");
    }
    drop(workers);
    drop(hostile_sink);
}

/// The soak's verdict, on tallies made by hand: a dispatcher that answers calls with errors
/// while its workers are killed fails it, as does one that loses more calls with their
/// workers than the kills explain, or answers a call twice; one that answers every call
/// with its own result passes.
#[test]
fn the_soak_fails_a_dispatcher_that_errors_calls() {
    let result = |id: u64| {
        Frame::SCallResult(TaggedResult {
            id,
            ret: Bytes::from(expected(id)),
        })
    };
    let error = |id: u64, code: ErrorCode| {
        Frame::SCallError(SCallError {
            request_id: id,
            code,
            message: Bytes::from_static(b"injected"),
        })
    };
    let tally = |replies: Vec<Frame>| {
        let mut tally = Tally::default();
        for frame in &replies {
            assert!(tally.record(frame).is_some(), "{frame:?} answers a call");
        }
        tally
    };
    let (kills, retried) = (8, 30);
    let healthy = tally((0..100).map(result).collect());
    assert_eq!(healthy.verdict(100, kills, retried), Ok(()));

    // One call in ten answered NO_WORKER (or TIMEOUT) instead of its result.
    for code in [ErrorCode::NO_WORKER, ErrorCode::TIMEOUT] {
        let faulty = tally(
            (0..100)
                .map(|id| match id % 10 {
                    0 => error(id, code),
                    _ => result(id),
                })
                .collect(),
        );
        let verdict = faulty.verdict(100, kills, retried);
        assert!(
            verdict.is_err_and(|v| v.contains("not allowed")),
            "{code:?}"
        );
    }

    // WORKER_LOST: allowed as far as the kills and the retries explain it, not beyond.
    let allowed = Tally::allowed_errors(kills, retried);
    assert_eq!(allowed, 10, "30 retries explain 10 calls lost 4 times");
    assert_eq!(
        Tally::allowed_errors(kills, 0),
        0,
        "no call lost without retries"
    );
    assert_eq!(
        Tally::allowed_errors(RETRIES.into(), 1000),
        0,
        "no call lost 4 times"
    );
    let lost_with = |n: u64| {
        tally(
            (0..100)
                .map(|id| match id < n {
                    true => error(id, ErrorCode::WORKER_LOST),
                    false => result(id),
                })
                .collect(),
        )
    };
    assert_eq!(lost_with(allowed).verdict(100, kills, retried), Ok(()));
    let verdict = lost_with(allowed + 1).verdict(100, kills, retried);
    assert!(verdict.is_err_and(|v| v.contains("WORKER_LOST")));

    // A duplicate, and a call never answered.
    let mut replies: Vec<Frame> = (0..100).map(result).collect();
    replies[99] = result(98);
    let verdict = tally(replies).verdict(100, kills, retried);
    assert!(verdict.is_err_and(|v| v.contains("lost 1, duplicated 1")));
}
