//! Dispatch semantics over real TCP with raw v1 peers: routing by job id, refusals, limits and
//! queueing, lost workers, deadlines, cancelled callers, heartbeats, and malformed input.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    bytes, start_dispatcher, start_dispatcher_on_one_thread, start_dispatcher_with, wire, Peer,
    DRAIN_WATCH, PATIENCE,
};
use nmid::codec::{CDoJob, Frame, ParamsType, HANDLE_TYPE_ENCODE};
use nmid::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How soon an answer that should come "at once" must come: far more than a loaded 2-core
/// CI machine needs, and still well below the 30 s default job deadline that a dispatcher
/// which missed the event would fall back on.
const AT_ONCE: Duration = Duration::from_secs(10);

fn returned(frame: Frame) -> Bytes {
    match frame {
        Frame::SReturnData(ret) => ret.ret,
        other => panic!("expected S_RETURN_DATA, got {other:?}"),
    }
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    edit(&mut config);
    config
}

/// A dispatcher that trusts v1 workers with concurrent jobs (by default each gets one at a
/// time: `workers.v1_max_jobs_in_flight`), for tests of what concurrency brings.
fn concurrent_v1() -> Config {
    let mut config = Config::default();
    config.workers.v1_max_jobs_in_flight = config.workers.max_jobs_in_flight;
    config
}

/// By default a v1 worker holds one job at a time: the second call waits in the queue until
/// the first is answered, then reaches the same worker.
#[tokio::test]
async fn a_v1_worker_gets_one_job_at_a_time_by_default() {
    let dispatcher = start_dispatcher();
    let mut worker = Peer::worker(dispatcher.addr, "w", &["Echo"]).await;
    let mut first = Peer::connect(dispatcher.addr).await;
    let mut second = Peer::connect(dispatcher.addr).await;
    first.call("Echo", b"1").await;
    let job = worker.recv_job().await;
    second.call("Echo", b"2").await;
    dispatcher
        .wait_for("the second call to queue", |s| s.queued() == 1)
        .await;
    worker
        .assert_worker_got_nothing("a v1 worker holding a job got a second one")
        .await;
    worker.answer(&job, b"r1").await;
    assert_eq!(returned(first.recv().await), Bytes::from_static(b"r1"));
    let job = worker.recv_job().await;
    assert_eq!(job.params, Bytes::from_static(b"2"));
    worker.answer(&job, b"r2").await;
    assert_eq!(returned(second.recv().await), Bytes::from_static(b"r2"));
    dispatcher.stop().await;
}

/// Results answered in reverse order still reach the caller whose job they belong to.
#[tokio::test]
async fn reply_reaches_its_own_caller_when_results_return_out_of_order() {
    let dispatcher = start_dispatcher_with(concurrent_v1());
    let mut worker = Peer::worker(dispatcher.addr, "w", &["Echo"]).await;
    let mut clients = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..20u8 {
        let mut client = Peer::connect(dispatcher.addr).await;
        client.call("Echo", &[i]).await;
        jobs.push(worker.recv_job().await);
        clients.push(client);
    }
    for job in jobs.iter().rev() {
        // The result names the caller by its params, e.g. [7] -> "r7".
        worker
            .answer(job, format!("r{}", job.params[0]).as_bytes())
            .await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(returned(client.recv().await), format!("r{i}").as_bytes());
    }
    dispatcher.stop().await;
}

/// A call of a function nobody serves gets CANT_DO at once.
#[tokio::test]
async fn unknown_function_gets_cant_do_at_once() {
    let dispatcher = start_dispatcher();
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("Nobody", b"\x80").await;
    assert_eq!(client.recv_within(AT_ONCE).await, Some(Frame::CantDo));
    dispatcher.stop().await;
}

/// An empty function name or empty params gets ERROR, and the connection keeps working.
#[tokio::test]
async fn empty_function_or_params_gets_error() {
    let dispatcher = start_dispatcher();
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("", b"\x80").await;
    assert_eq!(client.recv().await, Frame::Error);
    client.call("F", b"").await;
    assert_eq!(client.recv().await, Frame::Error);
    client.call("F", b"\x80").await;
    let job = worker.recv_job().await;
    worker.answer(&job, b"ok").await;
    assert_eq!(returned(client.recv().await), &b"ok"[..]);
    dispatcher.stop().await;
}

/// With every worker at its limit, calls wait in a bounded queue; past it, RATELIMIT.
#[tokio::test]
async fn full_workers_queue_calls_then_rate_limit() {
    let dispatcher = start_dispatcher_with(config(|c| {
        c.workers.max_jobs_in_flight = 1;
        c.workers.max_queue_per_function = 1;
    }));
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let (mut a, mut b, mut c) = (
        Peer::connect(dispatcher.addr).await,
        Peer::connect(dispatcher.addr).await,
        Peer::connect(dispatcher.addr).await,
    );
    a.call("F", b"a").await;
    let job_a = worker.recv_job().await;
    b.call("F", b"b").await;
    dispatcher
        .wait_for("b to be queued", |s| {
            s.function("F").is_some_and(|f| f.queued == 1)
        })
        .await;
    worker
        .assert_worker_got_nothing("a worker at its limit got a second job")
        .await;
    c.call("F", b"c").await;
    assert_eq!(c.recv().await, Frame::RateLimit);

    worker.answer(&job_a, b"A").await;
    assert_eq!(returned(a.recv().await), &b"A"[..]);
    let job_b = worker.recv_job().await;
    assert_eq!(
        &job_b.params[..],
        b"b",
        "the queued call runs when the slot frees"
    );
    worker.answer(&job_b, b"B").await;
    assert_eq!(returned(b.recv().await), &b"B"[..]);
    dispatcher
        .wait_for("all idle", |s| s.in_flight() == 0 && s.queued() == 0)
        .await;
    dispatcher.stop().await;
}

/// The least-loaded worker gets the next job: two workers share four calls two and two.
/// (Without batch slack: with it, calls that reach the registry in one turn may go three
/// and one, as they did on a loaded machine; the slack has a test of its own.)
#[tokio::test]
async fn least_loaded_worker_gets_the_next_job() {
    let mut config = concurrent_v1();
    config.workers.batch_slack = 0;
    let dispatcher = start_dispatcher_with(config);
    let mut w1 = Peer::worker(dispatcher.addr, "w1", &["F"]).await;
    let mut w2 = Peer::worker(dispatcher.addr, "w2", &["F"]).await;
    dispatcher
        .wait_for("2 workers of F", |s| {
            s.function("F").is_some_and(|f| f.workers == 2)
        })
        .await;
    let mut client = Peer::connect(dispatcher.addr).await;
    for i in 0..4u8 {
        client.call("F", &[i]).await;
    }
    let snapshot = dispatcher
        .wait_for("4 jobs in flight", |s| s.in_flight() == 4)
        .await;
    let loads: Vec<u32> = snapshot.workers.iter().map(|w| w.in_flight).collect();
    assert_eq!(loads, vec![2, 2]);
    for _ in 0..2 {
        let job = w1.recv_job().await;
        w1.answer(&job, b"1").await;
        let job = w2.recv_job().await;
        w2.answer(&job, b"2").await;
    }
    for _ in 0..4 {
        returned(client.recv().await);
    }
    dispatcher.stop().await;
}

/// Calls that arrive together are batched within `workers.batch_slack`: with four idle
/// workers and a slack of 2, four calls in one write go two and two to two workers (one
/// write to each instead of one to every worker); the same calls one by one go one to each.
#[tokio::test]
async fn calls_arriving_together_go_two_by_two_within_the_batch_slack() {
    let mut config = concurrent_v1();
    config.workers.batch_slack = 2;
    // One thread: the burst's jobs all reach the registry in one turn, and each call of
    // the second half only after the turn of the one before.
    let dispatcher = start_dispatcher_on_one_thread(config);
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3", "w4"] {
        workers.push(Peer::worker(dispatcher.addr, name, &["F"]).await);
    }
    // Every registration in before the burst (on a loaded machine the last one may still be
    // on its way, and the burst would be spread over three workers).
    dispatcher
        .wait_for("4 workers of F", |s| {
            s.function("F").is_some_and(|f| f.workers == 4)
        })
        .await;
    let loads = |s: &nmid::snapshot::RegistrySnapshot| {
        let mut loads: Vec<u32> = s.workers.iter().map(|w| w.in_flight).collect();
        loads.sort_unstable();
        loads
    };
    let mut burst = Peer::connect(dispatcher.addr).await;
    let call = |i: u8| {
        wire(&Frame::CDoJob(CDoJob {
            params_type: ParamsType::MSGPACK,
            handle_type: HANDLE_TYPE_ENCODE,
            function: bytes("F"),
            params: Bytes::copy_from_slice(&[i]),
        }))
    };
    burst
        .send_raw(&(0..4).flat_map(call).collect::<Vec<u8>>())
        .await;
    let snapshot = dispatcher
        .wait_for("4 jobs in flight", |s| s.in_flight() == 4)
        .await;
    assert_eq!(loads(&snapshot), vec![0, 0, 2, 2]);
    for (worker, name) in workers.iter_mut().zip(["w1", "w2", "w3", "w4"]) {
        let held = (snapshot.workers.iter())
            .find(|w| w.name.as_deref() == Some(name))
            .map_or(0, |w| w.in_flight);
        for _ in 0..held {
            let job = worker.recv_job().await;
            worker.answer(&job, b"ok").await;
        }
    }
    for _ in 0..4 {
        returned(burst.recv().await);
    }
    dispatcher
        .wait_for("all idle", |s| s.in_flight() == 0)
        .await;
    let mut one_by_one = Peer::connect(dispatcher.addr).await;
    for i in 0..4u8 {
        one_by_one.call("F", &[i]).await;
        let n = u64::from(i) + 1;
        dispatcher
            .wait_for("the call in flight", |s| s.in_flight() == n)
            .await;
    }
    assert_eq!(loads(&dispatcher.snapshot().await), vec![1, 1, 1, 1]);
    for worker in &mut workers {
        let job = worker.recv_job().await;
        worker.answer(&job, b"ok").await;
    }
    for _ in 0..4 {
        returned(one_by_one.recv().await);
    }
    dispatcher.stop().await;
}

/// A worker that disconnects mid-job: the job is retried on another worker of the function.
#[tokio::test]
async fn lost_workers_job_is_retried_on_another_worker() {
    let dispatcher = start_dispatcher();
    let mut w1 = Peer::worker(dispatcher.addr, "w1", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"p").await;
    let first = w1.recv_job().await;
    let mut w2 = Peer::worker(dispatcher.addr, "w2", &["F"]).await;
    drop(w1);
    let retried = w2.recv_job().await;
    assert_eq!(retried.params, first.params);
    w2.answer(&retried, b"from w2").await;
    assert_eq!(returned(client.recv().await), &b"from w2"[..]);
    dispatcher.stop().await;
}

/// With `jobs.retries = 2`, a job survives two workers that die holding it: the third
/// answers it, and its caller gets that answer.
#[tokio::test]
async fn two_retries_carry_a_job_past_two_lost_workers() {
    let dispatcher = start_dispatcher_with(config(|c| c.jobs.retries = 2));
    let mut w1 = Peer::worker(dispatcher.addr, "w1", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"p").await;
    let first = w1.recv_job().await;
    let mut w2 = Peer::worker(dispatcher.addr, "w2", &["F"]).await;
    drop(w1);
    let second = w2.recv_job().await;
    assert_eq!(second.params, first.params);
    let mut w3 = Peer::worker(dispatcher.addr, "w3", &["F"]).await;
    drop(w2);
    let third = w3.recv_job().await;
    assert_eq!(third.params, first.params);
    w3.answer(&third, b"from w3").await;
    assert_eq!(returned(client.recv().await), &b"from w3"[..]);
    dispatcher.stop().await;
}

/// With `jobs.retries = 0`, a job whose worker disconnects is not retried on the spare
/// worker: its caller gets ERROR, and the spare's first job is the next call.
#[tokio::test]
async fn without_retries_a_lost_workers_job_fails_instead_of_moving_to_the_spare() {
    let dispatcher = start_dispatcher_with(config(|c| c.jobs.retries = 0));
    let mut w1 = Peer::worker(dispatcher.addr, "w1", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"lost").await;
    w1.recv_job().await;
    let mut spare = Peer::worker(dispatcher.addr, "spare", &["F"]).await;
    dispatcher
        .wait_for("two workers of F", |s| {
            s.function("F").is_some_and(|f| f.workers == 2)
        })
        .await;
    drop(w1);
    assert_eq!(client.recv_within(AT_ONCE).await, Some(Frame::Error));

    client.call("F", b"next").await;
    let job = spare.recv_job().await;
    assert_eq!(&job.params[..], b"next", "the lost job was retried");
    spare.answer(&job, b"from spare").await;
    assert_eq!(returned(client.recv().await), &b"from spare"[..]);
    dispatcher.stop().await;
}

/// With `tcp.max_connections = 2`, a third connection is closed at once (counted
/// `limit="connections"`); once one of the two closes, a new connection is served again.
#[tokio::test]
async fn connections_beyond_max_connections_are_closed_until_one_closes() {
    let dispatcher = start_dispatcher_with(config(|c| c.tcp.max_connections = 2));
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"p").await;
    let job = worker.recv_job().await;
    worker.answer(&job, b"served").await;
    assert_eq!(returned(client.recv().await), &b"served"[..]);

    assert_eq!(dispatcher.limit_hits("connections").await, 0.0);
    Peer::connect(dispatcher.addr).await.expect_closed().await;
    assert_eq!(dispatcher.limit_hits("connections").await, 1.0);

    drop(client);
    // The freed place is not observable; try until a connection is served (or time is up).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut next = tokio::net::TcpStream::connect(dispatcher.addr)
            .await
            .expect("connect");
        let set_name = wire(&Frame::WSetName {
            name: bytes("next"),
        });
        // A refused connection may already be closed for writing.
        let _ = next.write_all(&set_name).await;
        let mut answer = [0u8; 12];
        match tokio::time::timeout(PATIENCE, next.read_exact(&mut answer)).await {
            Ok(Ok(_)) => {
                assert_eq!(answer.to_vec(), wire(&Frame::Ok), "OK for W_SET_NAME");
                break;
            }
            Ok(Err(_)) => {} // closed: the client's connection still counted
            Err(_) => panic!("a connection was neither served nor closed"),
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one of the two closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dispatcher.stop().await;
}

/// A worker that disconnects mid-job with no other worker: the caller gets ERROR at once.
#[tokio::test]
async fn lost_worker_without_spare_answers_error_at_once() {
    let dispatcher = start_dispatcher(); // job deadline 30 s
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"p").await;
    worker.recv_job().await;
    let lost_at = Instant::now();
    drop(worker);
    assert_eq!(client.recv_within(AT_ONCE).await, Some(Frame::Error));
    assert!(lost_at.elapsed() < AT_ONCE, "{:?}", lost_at.elapsed());
    dispatcher
        .wait_for("worker gone", |s| s.workers.is_empty())
        .await;
    dispatcher.stop().await;
}

/// A worker that stops heart-beating is closed, no sooner than its heartbeat timeout, and its
/// caller gets ERROR; one that pings stays registered.
#[tokio::test]
async fn silent_worker_is_dropped_after_heartbeat_timeout() {
    const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);
    let dispatcher = start_dispatcher_with(config(|c| {
        c.workers.heartbeat_timeout_ms = HEARTBEAT_TIMEOUT.as_millis() as u64;
    }));
    // The silent worker's last frame is sent after this instant.
    let silent_since = Instant::now();
    let mut silent = Peer::worker(dispatcher.addr, "silent", &["F"]).await;
    let mut alive = Peer::worker(dispatcher.addr, "alive", &["G"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"p").await;
    silent.recv_job().await;

    // `alive` pings ten times per timeout until the silent worker's caller hears back.
    let deadline = Instant::now() + HEARTBEAT_TIMEOUT + PATIENCE;
    let answer = loop {
        alive
            .send(Frame::WHeartbeatPing {
                body: Bytes::from_static(b"PING"),
            })
            .await;
        assert_eq!(alive.recv().await, Frame::SHeartbeatPong);
        if let Some(frame) = client.recv_within(HEARTBEAT_TIMEOUT / 10).await {
            break frame;
        }
        assert!(
            Instant::now() < deadline,
            "the silent worker's caller heard nothing"
        );
    };
    assert_eq!(answer, Frame::Error);
    assert!(
        silent_since.elapsed() >= HEARTBEAT_TIMEOUT,
        "dropped after {:?}, before its heartbeat timeout",
        silent_since.elapsed()
    );
    silent.expect_closed().await;
    let snapshot = dispatcher
        .wait_for("F to be gone", |s| s.function("F").is_none())
        .await;
    assert!(snapshot.function("G").is_some(), "a pinging worker stays");
    dispatcher.stop().await;
}

/// Past the deadline the caller gets ERROR; the worker's late result is discarded and its
/// slot freed.
#[tokio::test]
async fn deadline_answers_error_and_late_result_is_discarded() {
    let dispatcher = start_dispatcher_with(config(|c| c.jobs.timeout_ms = 200));
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    let called = Instant::now();
    client.call("F", b"p").await;
    let job = worker.recv_job().await;
    assert_eq!(client.recv_within(AT_ONCE).await, Some(Frame::Error));
    let waited = called.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < AT_ONCE,
        "{waited:?}"
    );

    worker.answer(&job, b"late").await;
    let snapshot = dispatcher
        .wait_for("the late result to be counted", |s| s.late_results == 1)
        .await;
    assert_eq!(snapshot.in_flight(), 0);
    client
        .assert_client_got_nothing("the late result reached the caller")
        .await;
    dispatcher.stop().await;
}

/// A caller that disconnects: its queued call is withdrawn, its running job's result is
/// discarded, and in-flight and queued counts return to zero.
#[tokio::test]
async fn caller_disconnect_cancels_its_jobs_and_leaks_nothing() {
    let dispatcher = start_dispatcher_with(config(|c| c.workers.max_jobs_in_flight = 1));
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"running").await;
    client.call("F", b"queued").await;
    let job = worker.recv_job().await;
    dispatcher
        .wait_for("one running, one queued", |s| {
            s.in_flight() == 1 && s.queued() == 1
        })
        .await;
    drop(client);
    dispatcher
        .wait_for("queue emptied", |s| s.queued() == 0)
        .await;
    worker.answer(&job, b"nobody listens").await;
    let snapshot = dispatcher
        .wait_for("nothing in flight", |s| {
            s.in_flight() == 0 && s.late_results == 1
        })
        .await;
    assert_eq!(snapshot.queued(), 0);
    worker
        .assert_worker_got_nothing("the withdrawn call reached the worker")
        .await;
    dispatcher.stop().await;
}

/// W_SET_NAME and W_ADD_FUNC are acknowledged and visible; W_DEL_FUNC removes the function;
/// W_GRAB_JOB is accepted without a reply.
#[tokio::test]
async fn worker_registration_frames_are_honoured() {
    let dispatcher = start_dispatcher();
    let mut worker = Peer::worker(dispatcher.addr, "Worker1", &["A", "B"]).await;
    let snapshot = dispatcher
        .wait_for("two functions", |s| s.functions.len() == 2)
        .await;
    assert_eq!(snapshot.workers[0].name.as_deref(), Some("Worker1"));
    assert_eq!(snapshot.workers[0].functions, vec!["A", "B"]);

    worker.send(Frame::WGrabJob).await;
    worker
        .send(Frame::WDelFunc {
            function: bytes("A"),
        })
        .await;
    let snapshot = dispatcher
        .wait_for("A removed", |s| s.function("A").is_none())
        .await;
    assert_eq!(snapshot.workers[0].functions, vec!["B"]);
    worker
        .assert_worker_got_nothing("W_GRAB_JOB or W_DEL_FUNC was answered")
        .await;

    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("A", b"\x80").await;
    assert_eq!(client.recv().await, Frame::CantDo);
    client.call("B", b"\x80").await;
    let job = worker.recv_job().await;
    worker.answer(&job, b"b").await;
    assert_eq!(returned(client.recv().await), &b"b"[..]);
    dispatcher.stop().await;
}

/// Each kind of malformed input closes only the connection that sent it; a worker and a
/// client connected beside it keep working.
#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let dispatcher = start_dispatcher_with(config(|c| c.tcp.max_frame_bytes = 1024));
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;

    let header = |conn: u32, data: u32, len: u32| {
        [conn.to_be_bytes(), data.to_be_bytes(), len.to_be_bytes()].concat()
    };
    let mut overrun = header(3, 16, 12);
    overrun.extend([0, 0, 0, 5, 0, 0, 0, 10, 0, 0, 0, 200]); // handle_len 200 in a 12-byte body
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown conn_type", header(9, 16, 0)),
        ("unknown data_type", header(3, 77, 0)),
        ("worker data_type from a client", header(3, 13, 0)),
        ("server frame from a peer", header(1, 1, 0)),
        ("length inside the body overruns it", overrun),
        ("announced frame over the limit", header(3, 16, 1025)),
        ("announced 4 GiB", header(2, 15, u32::MAX)),
    ];
    for (what, bytes) in cases {
        let mut bad = Peer::connect(dispatcher.addr).await;
        bad.send_raw(&bytes).await;
        tokio::time::timeout(Duration::from_secs(5), bad.expect_closed())
            .await
            .unwrap_or_else(|_| panic!("{what}: connection not closed"));
    }
    // A client that then speaks as a worker is closed too.
    let mut switcher = Peer::connect(dispatcher.addr).await;
    switcher.call("F", b"x").await;
    let job = worker.recv_job().await;
    switcher.send(Frame::WGrabJob).await;
    switcher.expect_closed().await;
    worker.answer(&job, b"late").await;

    client.call("F", b"still fine").await;
    let job = worker.recv_job().await;
    assert_eq!(&job.params[..], b"still fine");
    worker.answer(&job, b"ok").await;
    assert_eq!(returned(client.recv().await), &b"ok"[..]);
    dispatcher.stop().await;
}

/// A frame split across many writes, and many frames in one write, are both read right.
#[tokio::test]
async fn frames_split_and_coalesced_on_the_socket_are_read_right() {
    let dispatcher = start_dispatcher();
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    let call = |p: &'static [u8]| {
        common::wire(&Frame::CDoJob(CDoJob {
            params_type: ParamsType::MSGPACK,
            handle_type: HANDLE_TYPE_ENCODE,
            function: bytes("F"),
            params: Bytes::from_static(p),
        }))
    };
    for byte in call(b"split") {
        client.send_raw(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client
        .send_raw(&[call(b"one"), call(b"two")].concat())
        .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let job = worker.recv_job().await;
        seen.push(job.params.clone());
        worker.answer(&job, &job.params.clone()).await;
    }
    assert_eq!(seen, vec![&b"split"[..], &b"one"[..], &b"two"[..]]);
    for _ in 0..3 {
        returned(client.recv().await);
    }
    dispatcher.stop().await;
}

/// On shutdown a job in flight still finishes and reaches its caller, while a new call is
/// refused with ERROR.
#[tokio::test]
async fn shutdown_drains_jobs_in_flight_and_refuses_new_calls() {
    let mut dispatcher = start_dispatcher();
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    let mut late_caller = Peer::connect(dispatcher.addr).await;
    client.call("F", b"p").await;
    let job = worker.recv_job().await;

    let registry_view = dispatcher.snapshot().await;
    assert_eq!(registry_view.in_flight(), 1);
    dispatcher.begin_shutdown();
    dispatcher
        .wait_for("the drain to begin", |s| s.draining)
        .await;
    late_caller.call("F", b"too late").await;
    assert_eq!(late_caller.recv().await, Frame::Error);
    // The drain waits for the job: a while later the dispatcher still runs and the call
    // still waits.
    tokio::time::sleep(DRAIN_WATCH).await;
    assert!(
        dispatcher.is_running(),
        "the dispatcher stopped with a job in flight"
    );
    assert_eq!(
        client.try_recv(),
        None,
        "the call was answered before its job"
    );

    worker.answer(&job, b"finished").await;
    assert_eq!(returned(client.recv().await), &b"finished"[..]);
    dispatcher.stop().await;
}

/// A slot freed by one function's job goes to a call queued for another function the same
/// worker serves.
#[tokio::test]
async fn freed_slot_serves_a_call_queued_for_another_function() {
    let dispatcher = start_dispatcher_with(config(|c| c.workers.max_jobs_in_flight = 1));
    let mut worker = Peer::worker(dispatcher.addr, "w", &["A", "B"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("A", b"a").await;
    let job_a = worker.recv_job().await;
    client.call("B", b"b").await;
    dispatcher
        .wait_for("B queued", |s| {
            s.function("B").is_some_and(|f| f.queued == 1)
        })
        .await;
    worker.answer(&job_a, b"A").await;
    let job_b = worker.recv_job().await;
    assert_eq!(&job_b.function[..], b"B");
    worker.answer(&job_b, b"B").await;
    let mut answers = vec![returned(client.recv().await), returned(client.recv().await)];
    answers.sort();
    assert_eq!(
        answers,
        vec![Bytes::from_static(b"A"), Bytes::from_static(b"B")]
    );
    dispatcher.stop().await;
}
