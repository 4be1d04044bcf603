//! The soak: calls through a real `nmid` process while its worker processes are SIGKILLed and
//! restarted at random, and hostile peers do what issue 12 found (a client that never reads,
//! half headers, a control-frame flood, incomplete frames). Every call is counted by its
//! request id: lost, misrouted and duplicated must all be 0; the dispatcher's peak RSS is
//! printed.
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
use common::process::{rss_bytes, Process};
use common::wire;
use nmid::codec::{self, Frame, ParamsType, TaggedCall, HANDLE_TYPE_ENCODE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The function the soak's workers serve: the params upper-cased.
const FUNCTION: &str = "Soak";
/// Worker processes at any time.
const WORKERS: usize = 4;
/// Calls in flight from the soak's client.
const IN_FLIGHT: u64 = 64;

/// Not a test on its own: the worker process the soak starts (and kills), by re-running this
/// test binary with `--ignored --exact soak_worker_role`.
#[test]
#[ignore = "a role of the soak, started by it"]
fn soak_worker_role() {
    let addr = std::env::var("NMID_SOAK_WORKER_ADDR").expect("started by the soak");
    actix_rt::System::new().block_on(async move {
        let _worker = nmid::worker::Worker::builder()
            .name("soak")
            .server(addr)
            .slots(16)
            .function(FUNCTION, |job: nmid::worker::Job| async move {
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

/// A worker process, killed by its PID when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(addr: SocketAddr) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "soak_worker_role", "--nocapture"])
            .env("NMID_SOAK_WORKER_ADDR", addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a soak worker");
        Self(child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What came back for the calls, by request id.
#[derive(Default)]
struct Tally {
    /// Answers per request id.
    answers: HashMap<u64, u32>,
    /// Results that were not their call's.
    misrouted: u64,
    /// Calls answered with an error (worker lost twice, ...): answered, not lost.
    errors: u64,
}

/// The expected result of call `id`.
fn expected(id: u64) -> Vec<u8> {
    format!("CALL-{id}").into_bytes()
}

fn call_frame(id: u64) -> Vec<u8> {
    wire(&Frame::CCall(TaggedCall {
        id,
        timeout_ms: 20_000,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from_static(FUNCTION.as_bytes()),
        params: Bytes::from(format!("call-{id}")),
        meta: Vec::new(),
    }))
}

/// Makes `calls` pipelined tagged calls, `IN_FLIGHT` at a time, and tallies every reply.
async fn client(addr: SocketAddr, calls: u64) -> Tally {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut tally = Tally::default();
    let mut next = 0u64;
    let mut answered = 0u64;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(30 + calls / 500);
    while answered < calls {
        let mut out = Vec::new();
        while next < calls && next - answered < IN_FLIGHT {
            out.extend(call_frame(next));
            next += 1;
        }
        write.write_all(&out).await.unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            other => panic!("the soak's client stopped hearing back ({other:?}); {answered} of {calls} answered"),
        }
        while let Some(frame) = codec::decode(&mut buf, codec::DEFAULT_MAX_FRAME_BYTES).unwrap() {
            let (id, ok) = match frame {
                Frame::SCallResult(r) => {
                    if r.ret[..] != expected(r.id)[..] {
                        tally.misrouted += 1;
                    }
                    (r.id, true)
                }
                Frame::SCallError(e) => (e.request_id, false),
                other => panic!("unexpected {other:?}"),
            };
            if !ok {
                tally.errors += 1;
            }
            *tally.answers.entry(id).or_default() += 1;
            answered += 1;
        }
    }
    // Anything more would be a duplicate.
    if let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), read.read_buf(&mut buf)).await
    {
        assert_eq!(n, 0, "a reply arrived after every call was answered");
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
                let frame = call_frame(1 << 40 | id);
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
            ("NMID__JOBS__RETRIES", "3"),
            ("NMID__TCP__HANDSHAKE_TIMEOUT_MS", "1000"),
            ("NMID__TCP__FRAME_TIMEOUT_MS", "1000"),
            ("NMID__TCP__SLOW_CONSUMER_TIMEOUT_MS", "1000"),
            ("NMID__TCP__MAX_OUTBOUND_BYTES", "1048576"),
            ("RUST_LOG", "error"),
        ],
    );
    let addr = nmid.addr;
    let pid = nmid.child.id();
    let mut workers: Vec<WorkerProcess> =
        (0..WORKERS).map(|_| WorkerProcess::start(addr)).collect();
    // Wait until the workers serve, through a plain call.
    let probe = nmid::client::Client::connect(addr.to_string())
        .await
        .unwrap();
    let ready = Instant::now();
    while probe.call(FUNCTION, &b"ready"[..]).await.is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(15),
            "the soak's workers never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    // Chaos: a random worker killed and restarted every 150-400 ms.
    let mut kills = 0u64;
    let mut seed = started.elapsed().as_nanos() as u64 | 1;
    while !tally.is_finished() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 250)).await;
        let victim = (seed as usize / 7) % workers.len();
        workers[victim] = WorkerProcess::start(addr); // the old one is killed as it drops
        kills += 1;
    }
    let tally = tally.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    hostile.await.unwrap();
    sampler.await.unwrap();

    let lost = (0..calls)
        .filter(|id| !tally.answers.contains_key(id))
        .count();
    let duplicated = tally.answers.values().filter(|n| **n > 1).count();
    println!(
        "soak: {calls} calls in {:?} with {kills} workers SIGKILLed: {} answered ({} with an error), lost {lost}, misrouted {}, duplicated {duplicated}; nmid peak RSS {} MiB",
        started.elapsed(),
        tally.answers.len(),
        tally.errors,
        tally.misrouted,
        peak.load(Ordering::Relaxed) / (1024 * 1024),
    );
    assert_eq!((lost, tally.misrouted, duplicated), (0, 0, 0));
    drop(workers);
}
