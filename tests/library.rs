//! The Rust worker and client libraries end to end, against an in-process dispatcher over
//! real TCP on 127.0.0.1: routing under load, lost and stopped workers, deadlines, slots,
//! mixed v1/tagged peers, nested calls, and a dispatcher restart.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    start_dispatcher, start_dispatcher_on, start_dispatcher_with, Peer, DRAIN_WATCH, PATIENCE,
};
use futures_util::future::{join_all, LocalBoxFuture};
use nmid::client::{CallOptions, Client, ClientError, Protocol};
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker, WorkerBuilder, WorkerHandle};
use serde::{Deserialize, Serialize};

/// How soon an answer that should come "at once" must come: far more than a loaded 2-core
/// CI machine needs, and still well below the 30 s default deadline that a caller would
/// otherwise wait for.
const AT_ONCE: Duration = Duration::from_secs(10);

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

/// Echoes the params back after a delay derived from them (0-7 ms), so answers come back
/// in an order unrelated to the calls'.
async fn echo_scrambled(job: Job) -> Result<Bytes, JobError> {
    let delay = job
        .params()
        .iter()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
        % 8;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    Ok(job.params().clone())
}

async fn sleep_then_echo(job: Job) -> Result<Bytes, JobError> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(job.params().clone())
}

fn worker(addr: std::net::SocketAddr, name: &str) -> WorkerBuilder {
    Worker::builder().name(name).server(addr.to_string())
}

/// Waits until `count` workers serve `function`.
async fn serving(dispatcher: &common::TestDispatcher, function: &str, count: usize) {
    dispatcher
        .wait_for(&format!("{count} workers of {function}"), |s| {
            s.function(function).is_some_and(|f| f.workers == count)
        })
        .await;
}

/// Runs a worker on a thread of its own, so the test can kill it abruptly.
struct WorkerThread {
    system: actix_rt::System,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    name: String,
}

impl WorkerThread {
    fn spawn(build: impl FnOnce() -> WorkerBuilder + Send + 'static) -> Self {
        common::record_panics();
        static SPAWNED: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nmid-test-worker-{}",
            SPAWNED.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let system = actix_rt::System::new();
                let worker = system.block_on(async move {
                    tx.send(actix_rt::System::current()).unwrap();
                    build().start().expect("worker starts")
                });
                // Runs until `kill` stops the system; then the runtime and its sockets drop.
                let ran = system.run();
                drop(worker);
                ran
            })
            .expect("spawn the worker thread");
        let system = rx.recv_timeout(PATIENCE).expect("worker thread started");
        Self {
            system,
            thread,
            name,
        }
    }

    /// Kills the worker: its runtime stops, its sockets close, no goodbye is said. Panics if
    /// the worker's thread (its session actors included) panicked before it died.
    fn kill(self) {
        self.system.stop();
        let ran = common::join_within(self.thread, PATIENCE, "the killed worker's thread");
        let panics = common::panics_on(|thread| thread == self.name);
        assert!(
            panics.is_empty(),
            "the killed worker panicked:\n{}",
            panics.join("\n")
        );
        ran.expect("the killed worker's system ran");
    }
}

/// The seed's ToUpper, through the worker and client libraries.
#[actix_rt::test]
async fn to_upper_end_to_end() {
    let dispatcher = start_dispatcher();
    let w = worker(dispatcher.addr, "Worker1")
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&dispatcher, "ToUpper", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let data = client
        .call_data("ToUpper", &Name { name: "nmid" })
        .await
        .unwrap();
    assert_eq!(&data[..], b"NMID");
    w.stop().await;
    dispatcher.stop().await;
}

/// The seed's two hops: client -> Worker2 (ToUpper2) -> Worker1 (ToUpper). The nested call
/// carries the caller's trace context and a deadline no later than the caller's.
#[actix_rt::test]
async fn two_hop_chain_carries_trace_context_and_deadline() {
    let dispatcher = start_dispatcher();
    let seen: Rc<Cell<Option<(String, Instant)>>> = Rc::new(Cell::new(None));
    let seen_in_worker = seen.clone();
    let w1 = worker(dispatcher.addr, "Worker1")
        .function("ToUpper", move |job: Job| {
            let seen = seen_in_worker.clone();
            async move {
                let trace = job.metadata("traceparent").unwrap_or_default().to_owned();
                seen.set(Some((
                    trace,
                    job.deadline().expect("tagged jobs have a deadline"),
                )));
                nmid::demo::to_upper(job).await
            }
        })
        .start()
        .unwrap();
    let w2 = worker(dispatcher.addr, "Worker2")
        .function("ToUpper2", |job: Job| async move {
            Ok::<_, JobError>(job.call("ToUpper", job.params().clone()).await?)
        })
        .start()
        .unwrap();
    serving(&dispatcher, "ToUpper", 1).await;
    serving(&dispatcher, "ToUpper2", 1).await;

    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let started = Instant::now();
    let params = rmp_serde::to_vec_named(&Name { name: "nmid" }).unwrap();
    let options = CallOptions::default()
        .timeout(Duration::from_secs(3))
        .meta("traceparent", traceparent);
    let ret = client.call_with("ToUpper2", params, options).await.unwrap();
    assert_eq!(RetStruct::decode(&ret).unwrap(), RetStruct::ok("NMID"));
    let (trace, deadline) = seen.take().expect("Worker1 ran");
    assert_eq!(trace, traceparent);
    assert!(deadline <= started + Duration::from_secs(3) + Duration::from_millis(50));
    w1.stop().await;
    w2.stop().await;
    dispatcher.stop().await;
}

/// 2000 concurrent calls with unique payloads over one client connection, served by 4
/// workers answering in scrambled order: every caller gets its own answer.
#[actix_rt::test]
async fn two_thousand_concurrent_calls_each_get_their_own_answer() {
    // 4 workers x 64 slots run 256 at once; the rest must fit the queue, not be rate-limited.
    let mut config = Config::default();
    config.workers.max_queue_per_function = 2000;
    let dispatcher = start_dispatcher_with(config);
    let workers: Vec<WorkerHandle> = (0..4)
        .map(|i| {
            worker(dispatcher.addr, &format!("w{i}"))
                .slots(64)
                .function("Echo", echo_scrambled)
                .start()
                .unwrap()
        })
        .collect();
    serving(&dispatcher, "Echo", 4).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let started = Instant::now();
    let calls = (0..2000u32).map(|i| {
        let client = client.clone();
        async move {
            let payload = format!("payload-{i}");
            let ret = client.call("Echo", payload.clone()).await;
            (payload, ret)
        }
    });
    let results = join_all(calls).await;
    let elapsed = started.elapsed();
    let misrouted = results
        .iter()
        .filter(|(payload, ret)| ret.as_ref().map(|r| &r[..]) != Ok(payload.as_bytes()))
        .count();
    let failures: Vec<_> = results
        .iter()
        .filter(|(_, ret)| ret.is_err())
        .take(3)
        .collect();
    assert_eq!(
        misrouted, 0,
        "misrouted or failed replies, e.g. {failures:?}"
    );
    eprintln!(
        "2000 concurrent calls over one connection: {:.0} calls/s",
        2000.0 / elapsed.as_secs_f64()
    );
    for w in workers {
        w.stop().await;
    }
    dispatcher
        .wait_for("nothing in flight", |s| s.in_flight() == 0)
        .await;
    dispatcher.stop().await;
}

/// A worker killed mid-job with another worker available: the job is retried there and
/// the caller gets its answer at once.
#[actix_rt::test]
async fn killed_workers_job_is_retried_elsewhere_at_once() {
    let dispatcher = start_dispatcher();
    let addr = dispatcher.addr;
    let doomed = WorkerThread::spawn(move || {
        worker(addr, "doomed").function("F", |_job: Job| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, JobError>(Bytes::from_static(b"never"))
        })
    });
    serving(&dispatcher, "F", 1).await;
    let client = Client::connect(addr.to_string()).await.unwrap();
    let call = actix_rt::spawn({
        let client = client.clone();
        async move { client.call("F", Bytes::from_static(b"p")).await }
    });
    dispatcher
        .wait_for("the job to run", |s| s.in_flight() == 1)
        .await;
    let spare = worker(addr, "spare")
        .function("F", |_job: Job| async {
            Ok::<_, JobError>(Bytes::from_static(b"spare"))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "F", 2).await;

    let killed_at = Instant::now();
    doomed.kill();
    let answer = call.await.unwrap();
    assert_eq!(answer.as_deref(), Ok(&b"spare"[..]));
    assert!(killed_at.elapsed() < AT_ONCE, "{:?}", killed_at.elapsed());
    spare.stop().await;
    dispatcher.stop().await;
}

/// A worker killed mid-job with no other worker: the caller gets a typed WorkerLost at once.
#[actix_rt::test]
async fn killed_worker_without_spare_gives_typed_worker_lost() {
    let dispatcher = start_dispatcher();
    let addr = dispatcher.addr;
    let doomed = WorkerThread::spawn(move || {
        worker(addr, "doomed").function("F", |_job: Job| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, JobError>(Bytes::new())
        })
    });
    serving(&dispatcher, "F", 1).await;
    let client = Client::connect(addr.to_string()).await.unwrap();
    let call = actix_rt::spawn(async move { client.call("F", Bytes::from_static(b"p")).await });
    dispatcher
        .wait_for("the job to run", |s| s.in_flight() == 1)
        .await;
    let killed_at = Instant::now();
    doomed.kill();
    assert_eq!(call.await.unwrap(), Err(ClientError::WorkerLost));
    assert!(killed_at.elapsed() < AT_ONCE, "{:?}", killed_at.elapsed());
    dispatcher.stop().await;
}

/// Stopping a worker gracefully while calls stream in loses no call: its jobs in flight
/// finish, and later calls go to the other worker.
#[actix_rt::test]
async fn graceful_stop_loses_no_job() {
    let dispatcher = start_dispatcher();
    let a = worker(dispatcher.addr, "a")
        .function("F", sleep_then_echo)
        .start()
        .unwrap();
    let b = worker(dispatcher.addr, "b")
        .function("F", sleep_then_echo)
        .start()
        .unwrap();
    serving(&dispatcher, "F", 2).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let calls: Vec<_> = (0..60u32)
        .map(|i| {
            let client = client.clone();
            actix_rt::spawn(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(i) * 5)).await;
                let payload = i.to_string();
                (payload.clone(), client.call("F", payload).await)
            })
        })
        .collect();
    dispatcher
        .wait_for("a to hold jobs", |s| {
            s.workers
                .iter()
                .any(|w| w.name.as_deref() == Some("a") && w.in_flight > 0)
        })
        .await;
    a.stop().await;
    for call in calls {
        let (payload, ret) = call.await.unwrap();
        assert_eq!(ret.as_deref(), Ok(payload.as_bytes()), "call {payload}");
    }
    let snapshot = dispatcher.snapshot().await;
    assert_eq!(
        snapshot.function("F").unwrap().workers,
        1,
        "a is gone, b stays"
    );
    b.stop().await;
    dispatcher.stop().await;
}

/// The dispatcher's shutdown waits for a Rust worker's job in flight: a while into the
/// drain it still runs and the Rust caller still waits; the job's answer then reaches it.
#[actix_rt::test]
async fn dispatcher_shutdown_waits_for_the_job_in_flight() {
    let mut dispatcher = start_dispatcher();
    let gate = Rc::new(tokio::sync::Semaphore::new(0));
    let w = worker(dispatcher.addr, "w")
        .function("Hold", held(&gate))
        .start()
        .unwrap();
    serving(&dispatcher, "Hold", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let call = actix_rt::spawn(async move { client.call("Hold", "drained").await });
    dispatcher
        .wait_for("the job to run", |s| s.in_flight() == 1)
        .await;
    dispatcher.begin_shutdown();
    dispatcher
        .wait_for("the drain to begin", |s| s.draining)
        .await;
    tokio::time::sleep(DRAIN_WATCH).await;
    assert!(dispatcher.is_running(), "stopped with a job in flight");
    assert!(!call.is_finished(), "the call ended before its job");
    gate.add_permits(1);
    assert_eq!(call.await.unwrap().as_deref(), Ok(&b"drained"[..]));
    dispatcher.stop().await;
    w.stop().await;
}

/// A dispatcher that takes calls and never answers: each call in flight gives up by itself
/// shortly after its own deadline and the grace (500 ms), with a typed Timeout.
#[actix_rt::test]
async fn a_silent_dispatcher_still_gives_typed_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        // Read everything, answer nothing.
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
    });
    let client = Client::connect(addr.to_string()).await.unwrap();
    let started = Instant::now();
    let call = |timeout_ms: u64| {
        let client = client.clone();
        async move {
            let options = CallOptions::default().timeout(Duration::from_millis(timeout_ms));
            let ret = client
                .call_with("F", Bytes::from_static(b"p"), options)
                .await;
            (ret, started.elapsed())
        }
    };
    let ((first, first_waited), (second, second_waited)) = tokio::join!(call(200), call(400));
    assert_eq!(first, Err(ClientError::Timeout));
    assert_eq!(second, Err(ClientError::Timeout));
    assert!(
        first_waited >= Duration::from_millis(700) && first_waited < AT_ONCE,
        "the 200 ms call gave up after {first_waited:?}"
    );
    assert!(
        second_waited >= Duration::from_millis(900) && second_waited < AT_ONCE,
        "the 400 ms call gave up after {second_waited:?}"
    );
    silent.abort();
}

/// A call whose deadline passes gets a typed Timeout from its deadline, not from the worker
/// (which answers only when the test lets it) nor the 30 s default.
#[actix_rt::test]
async fn deadline_expiry_gives_typed_timeout() {
    let dispatcher = start_dispatcher();
    let release = Rc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let w = worker(dispatcher.addr, "slow")
        .function("Slow", move |_job: Job| {
            let release = held.clone();
            async move {
                release.notified().await;
                Ok::<_, JobError>(Bytes::from_static(b"late"))
            }
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Slow", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let started = Instant::now();
    let ret = client
        .call_with(
            "Slow",
            Bytes::from_static(b"p"),
            CallOptions::default().timeout(Duration::from_millis(200)),
        )
        .await;
    assert_eq!(ret, Err(ClientError::Timeout));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < AT_ONCE,
        "{waited:?}"
    );
    release.notify_one();
    dispatcher
        .wait_for("the late result to free the slot", |s| {
            s.in_flight() == 0 && s.late_results == 1
        })
        .await;
    w.stop().await;
    dispatcher.stop().await;
}

/// A worker with 2 slots never holds 3 jobs, and every call is still answered.
#[actix_rt::test]
async fn slots_are_honoured() {
    let dispatcher = start_dispatcher();
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let w = worker(dispatcher.addr, "two-slots")
        .slots(2)
        .function("F", move |job: Job| {
            let (running, peak) = (r.clone(), p.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, JobError>(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(&dispatcher, "F", 1).await;
    let snapshot = dispatcher.snapshot().await;
    assert_eq!(
        snapshot.workers[0].max_jobs, 2,
        "the dispatcher took the worker's slots"
    );
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let results = join_all((0..20u32).map(|i| client.call("F", i.to_string()))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    w.stop().await;
    dispatcher.stop().await;
}

/// A v1 client is served by a tagged worker, a tagged client by a v1 worker; a handler's
/// error reaches each in its own protocol.
#[actix_rt::test]
async fn mixed_v1_and_tagged_peers_work_both_ways() {
    let dispatcher = start_dispatcher();
    let fails = |_job: Job| async { Err::<Bytes, _>(JobError::new("no such user")) };
    let tagged = worker(dispatcher.addr, "tagged")
        .function("TaggedUpper", nmid::demo::to_upper)
        .function("TaggedFails", fails)
        .start()
        .unwrap();
    let v1 = worker(dispatcher.addr, "v1")
        .protocol(Protocol::V1)
        .function("V1Upper", nmid::demo::to_upper)
        .function("V1Fails", fails)
        .start()
        .unwrap();
    serving(&dispatcher, "TaggedUpper", 1).await;
    serving(&dispatcher, "V1Fails", 1).await;
    let v1_client = Client::builder(dispatcher.addr.to_string())
        .protocol(Protocol::V1)
        .connect()
        .await
        .unwrap();
    let tagged_client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    for client in [&v1_client, &tagged_client] {
        for function in ["TaggedUpper", "V1Upper"] {
            let data = client.call_data(function, &Name { name: "mixed" }).await;
            assert_eq!(data.as_deref(), Ok(&b"MIXED"[..]), "{function}");
        }
    }
    let error = tagged_client
        .call("TaggedFails", Bytes::from_static(b"\x80"))
        .await;
    assert_eq!(error, Err(ClientError::WorkerError("no such user".into())));
    for (client, function) in [
        (&v1_client, "TaggedFails"),
        (&v1_client, "V1Fails"),
        (&tagged_client, "V1Fails"),
    ] {
        let error = client.call_data(function, &Name { name: "x" }).await;
        assert_eq!(
            error,
            Err(ClientError::Function {
                code: 1,
                message: "no such user".into()
            }),
            "{function}"
        );
    }
    assert_eq!(
        v1_client.call("Nobody", Bytes::from_static(b"\x80")).await,
        Err(ClientError::NoWorker)
    );
    assert_eq!(
        tagged_client
            .call("Nobody", Bytes::from_static(b"\x80"))
            .await,
        Err(ClientError::NoWorker)
    );
    tagged.stop().await;
    v1.stop().await;
    dispatcher.stop().await;
}

/// The dispatcher restarts under a connected worker and client: while it is down a call
/// fails at once with a typed error; once the worker has registered again (it reconnects by
/// itself), the client's next call reconnects and succeeds.
#[actix_rt::test]
async fn worker_and_client_reconnect_after_dispatcher_restart() {
    let dispatcher = start_dispatcher();
    let addr = dispatcher.addr;
    let w = worker(addr, "Worker1")
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&dispatcher, "ToUpper", 1).await;
    let client = Client::connect(addr.to_string()).await.unwrap();
    let data = client.call_data("ToUpper", &Name { name: "a" }).await;
    assert_eq!(data.as_deref(), Ok(&b"A"[..]));

    dispatcher.stop().await;
    let started = Instant::now();
    let down = client.call_data("ToUpper", &Name { name: "down" }).await;
    // Nothing listens any more (Connect); or the old connection was still closing when the
    // call went out on it (ConnectionLost, or ShuttingDown from the draining dispatcher).
    assert!(
        matches!(
            down,
            Err(ClientError::Connect { .. }
                | ClientError::ConnectionLost
                | ClientError::ShuttingDown)
        ),
        "a call while the dispatcher is down: {down:?}"
    );
    assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());

    let restarted = start_dispatcher_on(addr, Config::default());
    serving(&restarted, "ToUpper", 1).await;
    let data = client.call_data("ToUpper", &Name { name: "again" }).await;
    assert_eq!(data.as_deref(), Ok(&b"AGAIN"[..]));
    w.stop().await;
    restarted.stop().await;
}

/// A handler that panics fails only its own job: its caller gets a WorkerError, a job running
/// beside it on the same worker still answers, and the worker serves the next call.
#[actix_rt::test]
async fn a_panicking_handler_fails_only_its_job() {
    let dispatcher = start_dispatcher();
    let release = Rc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let w = worker(dispatcher.addr, "fragile")
        .function("Fragile", move |job: Job| {
            let release = held.clone();
            async move {
                match &job.params()[..] {
                    b"panic" => panic!("a bug in the handler"),
                    b"wait" => release.notified().await,
                    _ => {}
                }
                Ok::<_, JobError>(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Fragile", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let waiting = actix_rt::spawn({
        let client = client.clone();
        async move { client.call("Fragile", Bytes::from_static(b"wait")).await }
    });
    dispatcher
        .wait_for("the waiting job to run", |s| s.in_flight() == 1)
        .await;

    let panicked = client.call("Fragile", Bytes::from_static(b"panic")).await;
    assert!(
        matches!(&panicked, Err(ClientError::WorkerError(message)) if message.contains("panicked")),
        "{panicked:?}"
    );
    release.notify_one();
    assert_eq!(waiting.await.unwrap().as_deref(), Ok(&b"wait"[..]));
    let after = client.call("Fragile", Bytes::from_static(b"after")).await;
    assert_eq!(after.as_deref(), Ok(&b"after"[..]));
    let snapshot = dispatcher.snapshot().await;
    assert_eq!(snapshot.function("Fragile").map(|f| f.workers), Some(1));
    w.stop().await;
    dispatcher.stop().await;
}

/// Every worker busy and no room in the queue: a tagged and a v1 client each get a typed
/// RateLimited, and the busy call still completes.
#[actix_rt::test]
async fn a_full_function_gives_typed_rate_limited() {
    let mut config = Config::default();
    config.workers.max_jobs_in_flight = 1;
    config.workers.max_queue_per_function = 0;
    let dispatcher = start_dispatcher_with(config);
    let mut busy = Peer::worker(dispatcher.addr, "busy", &["F"]).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let first = actix_rt::spawn({
        let client = client.clone();
        async move { client.call("F", Bytes::from_static(b"first")).await }
    });
    let job = busy.recv_job().await;

    let tagged = client.call("F", Bytes::from_static(b"second")).await;
    assert_eq!(tagged, Err(ClientError::RateLimited));
    let v1_client = Client::builder(dispatcher.addr.to_string())
        .protocol(Protocol::V1)
        .connect()
        .await
        .unwrap();
    let v1 = v1_client.call("F", Bytes::from_static(b"third")).await;
    assert_eq!(v1, Err(ClientError::RateLimited));

    busy.answer(&job, b"done").await;
    assert_eq!(first.await.unwrap().as_deref(), Ok(&b"done"[..]));
    dispatcher.stop().await;
}

/// A connection that drops while a call is in flight fails that call at once with a typed
/// ConnectionLost, not a Timeout at its deadline.
#[actix_rt::test]
async fn a_connection_dropped_mid_call_gives_typed_connection_lost() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hang_up = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // Hang up as soon as the call starts arriving.
        let mut first = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
            .await
            .unwrap();
    });
    let client = Client::connect(addr.to_string()).await.unwrap();
    let started = Instant::now();
    let ret = client
        .call_with(
            "F",
            Bytes::from_static(b"p"),
            CallOptions::default().timeout(Duration::from_secs(25)),
        )
        .await;
    assert_eq!(ret, Err(ClientError::ConnectionLost));
    assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
    hang_up.await.unwrap();
}

#[derive(Serialize)]
struct Terms {
    a: i64,
    b: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sum {
    total: i64,
    label: String,
}

/// `call_msgpack` sends its params as a msgpack map and decodes the RetStruct's Data into the
/// caller's type; a non-zero Code is still a typed Function error.
#[actix_rt::test]
async fn call_msgpack_decodes_the_data_into_the_callers_type() {
    #[derive(Deserialize)]
    struct Received {
        a: i64,
        b: i64,
    }
    let dispatcher = start_dispatcher();
    let w = worker(dispatcher.addr, "adder")
        .function("Add", |job: Job| async move {
            let Received { a, b } = job.decode()?;
            if a < 0 || b < 0 {
                return Ok::<_, JobError>(RetStruct::error(3, "negative terms"));
            }
            let sum = Sum {
                total: a + b,
                label: format!("{a}+{b}"),
            };
            Ok(RetStruct::ok(rmp_serde::to_vec_named(&sum)?))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Add", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let sum: Result<Sum, _> = client.call_msgpack("Add", &Terms { a: 2, b: 40 }).await;
    assert_eq!(
        sum,
        Ok(Sum {
            total: 42,
            label: "2+40".into()
        })
    );
    let refused: Result<Sum, _> = client.call_msgpack("Add", &Terms { a: -1, b: 0 }).await;
    assert_eq!(
        refused,
        Err(ClientError::Function {
            code: 3,
            message: "negative terms".into()
        })
    );
    w.stop().await;
    dispatcher.stop().await;
}

/// A worker with bad settings is refused at start with a reason.
#[actix_rt::test]
async fn worker_without_server_or_function_is_refused() {
    let no_server = Worker::builder()
        .function("F", nmid::demo::to_upper)
        .start();
    assert_eq!(no_server.err(), Some(nmid::worker::WorkerError::NoServer));
    let no_function = Worker::builder().server("127.0.0.1:1").start();
    assert_eq!(
        no_function.err(),
        Some(nmid::worker::WorkerError::NoFunction)
    );
    let twice = Worker::builder()
        .server("127.0.0.1:1")
        .function("F", nmid::demo::to_upper)
        .function("F", nmid::demo::to_upper)
        .start();
    assert_eq!(
        twice.err(),
        Some(nmid::worker::WorkerError::BadFunction("F".into()))
    );
}

/// A client pointed at a closed port fails with a Connect error naming the address.
#[actix_rt::test]
async fn client_connect_failure_is_typed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    match Client::connect(addr.to_string()).await {
        Err(ClientError::Connect { addr: a, .. }) => assert_eq!(a, addr.to_string()),
        other => panic!("expected a Connect error, got {other:?}"),
    }
}

/// One worker serving two dispatchers at once (nmid's `AddServer`): each dispatcher's
/// callers are served, and a graceful stop leaves both.
#[actix_rt::test]
async fn one_worker_serves_several_dispatchers() {
    let first = start_dispatcher();
    let second = start_dispatcher();
    let w = Worker::builder()
        .name("both")
        .server(first.addr.to_string())
        .server(second.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&first, "ToUpper", 1).await;
    serving(&second, "ToUpper", 1).await;
    for (dispatcher, name) in [(&first, "one"), (&second, "two")] {
        let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
        let data = client.call_data("ToUpper", &Name { name }).await.unwrap();
        assert_eq!(data, name.to_uppercase().as_bytes());
    }
    w.stop().await;
    first
        .wait_for("the worker gone", |s| s.workers.is_empty())
        .await;
    second
        .wait_for("the worker gone", |s| s.workers.is_empty())
        .await;
    first.stop().await;
    second.stop().await;
}

/// A worker that reconnects after a bad frame from its dispatcher closes its old socket (no
/// half-open link for the dispatcher to hold until its heartbeat timeout), and registers on
/// the new one.
#[actix_rt::test]
async fn a_reconnecting_worker_closes_its_old_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let w = worker(addr, "w")
        .function("F", echo_scrambled)
        .start()
        .unwrap();
    let (mut first, _) = tokio::time::timeout(AT_ONCE, listener.accept())
        .await
        .expect("the worker connects")
        .unwrap();
    // A header with conn_type 9: the stream can no longer be trusted.
    first
        .write_all(&[0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(AT_ONCE, async {
        loop {
            match first.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the old socket stayed open");
    let (mut second, _) = tokio::time::timeout(AT_ONCE, listener.accept())
        .await
        .expect("the worker reconnects")
        .unwrap();
    let mut header = [0u8; 12];
    second.read_exact(&mut header).await.unwrap();
    assert_eq!(&header[..8], &[0, 0, 0, 2, 0, 0, 0, 23], "W_SET_NAME first");
    drop(second);
    w.stop().await;
}

/// Holds every job of a function until `release`, then echoes it: a permit per job, so a
/// job that starts after the release does not wait.
fn held(
    gate: &Rc<tokio::sync::Semaphore>,
) -> impl Fn(Job) -> LocalBoxFuture<'static, Result<Bytes, JobError>> {
    let gate = gate.clone();
    move |job: Job| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.acquire().await.expect("gate open").forget();
            Ok(job.params().clone())
        })
    }
}

/// A handler answering 17 MiB, over the 16 MiB frame limit of the worker and the
/// dispatcher: its caller gets a clear worker error at once, both workers stay connected,
/// the jobs in flight on them finish, and a later call is answered.
#[actix_rt::test]
async fn an_answer_over_the_frame_limit_fails_only_its_own_call() {
    let dispatcher = start_dispatcher();
    let gate = Rc::new(tokio::sync::Semaphore::new(0));
    let big = |_job: Job| async { Ok::<_, JobError>(RetStruct::ok(vec![b'x'; 17 << 20])) };
    let echo = |job: Job| async move { Ok::<_, JobError>(job.params().clone()) };
    let a = worker(dispatcher.addr, "a")
        .function("HoldA", held(&gate))
        .function("Big", big)
        .function("Echo", echo)
        .start()
        .unwrap();
    let b = worker(dispatcher.addr, "b")
        .function("HoldB", held(&gate))
        .function("Big", big)
        .function("Echo", echo)
        .start()
        .unwrap();
    serving(&dispatcher, "Big", 2).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let holds: Vec<_> = ["HoldA", "HoldB"]
        .into_iter()
        .map(|function| {
            let client = client.clone();
            actix_rt::spawn(async move { client.call(function, function.to_owned()).await })
        })
        .collect();
    dispatcher
        .wait_for("a job held on each worker", |s| s.in_flight() == 2)
        .await;

    let refused = client.call("Big", Bytes::from_static(b"p")).await;
    assert!(
        matches!(&refused, Err(ClientError::WorkerError(message))
            if message.starts_with("result too large") && message.contains("16777216-byte")),
        "{refused:?}"
    );
    gate.add_permits(2);
    for (hold, function) in holds.into_iter().zip(["HoldA", "HoldB"]) {
        let answer = hold.await.unwrap();
        assert_eq!(answer.as_deref(), Ok(function.as_bytes()), "{function}");
    }
    let later = client.call("Echo", Bytes::from_static(b"later")).await;
    assert_eq!(later.as_deref(), Ok(&b"later"[..]));
    let snapshot = dispatcher.snapshot().await;
    assert_eq!(snapshot.function("Big").map(|f| f.workers), Some(2));
    a.stop().await;
    b.stop().await;
    dispatcher.stop().await;
}

/// A call over the client's frame limit fails at once with TooLarge, before it is sent:
/// another call in flight on the same connection (a clone of the client) is unharmed, and
/// the connection serves the next call. Just under the limit (the frame's own fields tip it
/// over) is refused the same way.
#[actix_rt::test]
async fn a_call_over_the_frame_limit_fails_alone_with_too_large() {
    let dispatcher = start_dispatcher();
    let gate = Rc::new(tokio::sync::Semaphore::new(0));
    let w = worker(dispatcher.addr, "w")
        .function("Hold", held(&gate))
        .start()
        .unwrap();
    serving(&dispatcher, "Hold", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let hold = actix_rt::spawn({
        let client = client.clone();
        async move { client.call("Hold", Bytes::from_static(b"held")).await }
    });
    dispatcher
        .wait_for("the held job to run", |s| s.in_flight() == 1)
        .await;
    #[derive(Serialize)]
    struct Blob {
        blob: String,
    }
    for size in [17 << 20, (16 << 20) - 45] {
        let blob = "p".repeat(size);
        let refused = client.call_data("Hold", &Blob { blob }).await;
        let Err(ClientError::TooLarge(message)) = &refused else {
            panic!("{size} bytes: {refused:?}")
        };
        assert!(message.contains("16777216-byte frame limit"), "{message}");
        let shown = refused.unwrap_err().to_string();
        assert_eq!(shown.matches("too large").count(), 1, "{shown}");
    }
    gate.add_permits(2);
    assert_eq!(hold.await.unwrap().as_deref(), Ok(&b"held"[..]));
    let next = client.call("Hold", Bytes::from_static(b"next")).await;
    assert_eq!(next.as_deref(), Ok(&b"next"[..]));
    w.stop().await;
    dispatcher.stop().await;
}

/// A call the client sends but whose job would be over the workers' limit is refused by
/// the dispatcher; its message names the error once.
#[actix_rt::test]
async fn a_dispatchers_too_large_refusal_reads_once() {
    let mut config = Config::default();
    config.tcp.max_frame_bytes = 64 * 1024;
    let dispatcher = start_dispatcher_with(config);
    let w = worker(dispatcher.addr, "w")
        .max_frame_bytes(64 * 1024)
        .function("F", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    serving(&dispatcher, "F", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let refused = client.call("F", vec![b'p'; 64 * 1024 - 40]).await;
    assert!(
        matches!(refused, Err(ClientError::TooLarge(_))),
        "{refused:?}"
    );
    let shown = refused.unwrap_err().to_string();
    assert_eq!(
        shown,
        "call too large: its job would exceed tcp.max_frame_bytes"
    );
    w.stop().await;
    dispatcher.stop().await;
}

/// `jobs.timeout_ms` is the deadline of calls that carry none, such as v1 `C_DO_JOB`; the
/// Rust client sends its own (30 s by default) on every call, so a job that outlasts the
/// key still answers it, while the v1 caller of the same job gets ERROR.
#[actix_rt::test]
async fn jobs_timeout_ms_governs_v1_calls_not_the_rust_clients() {
    let mut config = Config::default();
    config.jobs.timeout_ms = 300;
    let dispatcher = start_dispatcher_with(config);
    let w = worker(dispatcher.addr, "slow")
        .function("Slow", |job: Job| async move {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Slow", 1).await;
    let mut v1 = Peer::connect(dispatcher.addr).await;
    v1.call("Slow", b"v1").await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let tagged = client.call("Slow", Bytes::from_static(b"tagged")).await;
    assert_eq!(tagged.as_deref(), Ok(&b"tagged"[..]));
    assert_eq!(v1.recv().await, nmid::codec::Frame::Error);
    w.stop().await;
    dispatcher.stop().await;
}
