//! Bounded under hostile and faulty peers: one test per pattern of issue 12, each asserting
//! the bound (memory, time, series, answer counts, exit status). Memory is measured on a real
//! `nmid` process (its `VmRSS`); the protocol patterns run against an in-process dispatcher.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::process::Process;
use common::{bytes, start_dispatcher_with, start_dispatcher_with_http, wire, Peer, PATIENCE};
use futures_util::future::join_all;
use nmid::client::{Client, ClientError};
use nmid::codec::{CDoJob, Frame, ParamsType, WReturnData, HANDLE_TYPE_ENCODE};
use nmid::config::Config;
use nmid::worker::{Job, JobError, Worker, WorkerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// A `nmid` process with `env` overrides (`NMID__SECTION__KEY`).
fn nmid(env: &[(&str, &str)]) -> Process {
    Process::start_with_env(&[], env)
}

/// The value of the metric line starting with `series` (`name{labels}`) on `/metrics`.
fn metric(http: SocketAddr, series: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(http).expect("connect to /metrics");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: nmid\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` until it holds, or panics with `what` after `limit`.
async fn eventually(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads from `stream` until the peer closes it; panics if that takes longer than `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection was not closed within {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// An echo worker (worker library, tagged) serving `Echo` for the dispatcher at `addr`.
fn echo_worker(addr: SocketAddr) -> WorkerHandle {
    Worker::builder()
        .name("echo")
        .server(addr.to_string())
        .slots(64)
        .function("Echo", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .expect("a valid worker")
}

/// The bytes of a v1 call of `function` with `params`.
fn call_bytes(function: &str, params: &[u8]) -> Vec<u8> {
    wire(&Frame::CDoJob(CDoJob {
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: bytes(function),
        params: Bytes::copy_from_slice(params),
    }))
}

/// A client that sends calls and never reads the replies is held back once 1 MiB of replies
/// wait for it, and closed as a slow consumer: 100 MiB of calls leave the dispatcher's memory
/// within a few MiB (it grew 352 MiB before the bound).
#[actix_rt::test]
async fn a_client_that_never_reads_its_replies_is_bounded_then_closed() {
    let nmid = nmid(&[
        ("NMID__TCP__MAX_OUTBOUND_BYTES", "1048576"),
        ("NMID__TCP__SLOW_CONSUMER_TIMEOUT_MS", "1000"),
    ]);
    let worker = echo_worker(nmid.addr);
    let mut probe = Client::connect(nmid.addr.to_string()).await.unwrap();
    eventually_call(&mut probe).await;
    let before = nmid.rss_bytes();

    let mut stream = TcpStream::connect(nmid.addr).await.unwrap();
    let call = call_bytes("Echo", &vec![b'x'; 64 * 1024]);
    let mut sent = 0u64;
    let started = Instant::now();
    while sent < 100 * MIB && started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_millis(500), stream.write_all(&call)).await {
            Ok(Ok(())) => sent += call.len() as u64,
            // Writes block: the dispatcher no longer reads this connection, or closed it.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let peak = nmid.rss_bytes();
    let http = nmid.http.unwrap();
    eventually("the slow consumer to be closed", PATIENCE, || {
        metric(http, r#"nmid_limit_hits_total{limit="slow_consumer"}"#) >= 1.0
    })
    .await;
    assert!(
        metric(
            http,
            r#"nmid_limit_hits_total{limit="outbound_backpressure"}"#
        ) >= 1.0
    );
    let grown = peak.saturating_sub(before);
    println!(
        "sent {} MiB of calls; RSS grew {} KiB",
        sent / MIB,
        grown / 1024
    );
    // 14 MiB measured (debug build, 2 cores); 352 MiB before the bound. The margin is for
    // a loaded machine, where the allocator's once-a-second purge runs late.
    assert!(grown < 48 * MIB, "RSS grew {grown} bytes");
    closed_within(&mut stream, PATIENCE).await;
    // Other clients are served as before.
    eventually_call(&mut probe).await;
    worker.stop().await;
}

/// Calls `Echo` until the worker is registered and answers.
async fn eventually_call(client: &mut Client) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.call("Echo", &b"ping"[..]).await {
            Ok(ret) => return assert_eq!(&ret[..], b"ping"),
            Err(err) => assert!(Instant::now() < deadline, "Echo never answered: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connections that announce large frames and send all but their last byte hold at most
/// `tcp.max_incomplete_frame_bytes` between them, and each is closed at its deadline: a first
/// frame's (`tcp.handshake_timeout_ms`) or a later frame's (`tcp.frame_timeout_ms`). Before
/// these bounds, 40 x 16 MiB held 777 MB, indefinitely.
#[actix_rt::test]
async fn incomplete_frames_are_bounded_and_closed_at_their_deadline() {
    let nmid = nmid(&[
        ("NMID__TCP__MAX_FRAME_BYTES", "4194304"),
        ("NMID__TCP__MAX_INCOMPLETE_FRAME_BYTES", "16777216"),
        ("NMID__TCP__FRAME_TIMEOUT_MS", "1500"),
        ("NMID__TCP__HANDSHAKE_TIMEOUT_MS", "1500"),
    ]);
    let before = nmid.rss_bytes();
    let body_len = 4 * MIB as usize;
    let mut frame = BytesMut::with_capacity(12 + body_len);
    frame.put_u32(3); // client
    frame.put_u32(16); // C_DO_JOB
    frame.put_u32(body_len as u32);
    frame.put_bytes(0, body_len - 1); // all but the last byte
    let frame = frame.freeze();
    let started = Instant::now();
    let connections = join_all((0..40).map(|i| {
        let frame = frame.clone();
        async move {
            let mut stream = TcpStream::connect(nmid.addr).await.unwrap();
            if i % 2 == 0 {
                // A first frame that is whole (and answered), so the incomplete one is a
                // session's, under the frame deadline.
                stream.write_all(&call_bytes("Nobody", b"x")).await.unwrap();
            }
            let _ = tokio::time::timeout(PATIENCE, stream.write_all(&frame)).await;
            stream
        }
    }))
    .await;
    let peak = nmid.rss_bytes();
    for mut stream in connections {
        closed_within(&mut stream, PATIENCE).await;
    }
    let http = nmid.http.unwrap();
    let refused = metric(
        http,
        r#"nmid_limit_hits_total{limit="incomplete_frame_bytes"}"#,
    );
    let timed_out = metric(http, r#"nmid_limit_hits_total{limit="frame_timeout"}"#)
        + metric(http, r#"nmid_limit_hits_total{limit="handshake_timeout"}"#);
    let grown = peak.saturating_sub(before);
    let closed_at = Instant::now();
    // Freed memory goes back to the system within a few seconds (the binary asks mimalloc
    // to purge once a second).
    let mut after = u64::MAX;
    while after > 48 * MIB && closed_at.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = nmid.rss_bytes().saturating_sub(before);
    }
    println!(
        "40 x 4 MiB incomplete frames (160 MiB sent): RSS grew {} MiB at the peak; {refused} refused over the budget, {timed_out} closed at their deadline, all closed after {:?}; {} MiB over the start {:?} later",
        grown / MIB,
        closed_at.duration_since(started),
        after / MIB,
        closed_at.elapsed(),
    );
    assert_eq!(refused + timed_out, 40.0);
    assert!(
        refused >= 36.0,
        "only {refused} refused over a 16 MiB budget"
    );
    // The budget is 16 MiB of buffer capacity. Above it: a refused connection's last
    // growth (allocated, then refused and freed), freed memory the allocator has not
    // purged yet (it is asked to once a second), and the allocator's own segments.
    // (Counted by bytes received instead of capacity, the peak was 65 MiB; 35 MiB measured
    // now, 777 MB before the budget. The margin is for a loaded machine, where the purge
    // runs late.)
    assert!(grown < 96 * MIB, "RSS grew {grown} bytes");
    assert!(
        after <= 48 * MIB,
        "{after} bytes over the start once closed"
    );
}

/// Connections that send half a header cost little (no read-ahead is reserved for bytes not
/// sent; each started frame reserved 32 KiB before) and are closed at the handshake deadline.
#[actix_rt::test]
async fn half_headers_cost_little_and_are_closed_at_the_handshake_deadline() {
    // Long enough that all of them are open at once even when other tests of this binary
    // load the machine (at 3 s, the first were closed before the last connected).
    let nmid = nmid(&[("NMID__TCP__HANDSHAKE_TIMEOUT_MS", "8000")]);
    let before = nmid.rss_bytes();
    // Enough of them that the allocator's growth in whole segments (which once made 400
    // connections look like 16 KiB each) is spread thin.
    let count: u32 = 1000;
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(nmid.addr).await.unwrap();
        stream.write_all(&[0, 0, 0, 3, 0, 0]).await.unwrap();
        streams.push(stream);
    }
    let http = nmid.http.unwrap();
    eventually("every connection to be read", PATIENCE, || {
        metric(http, r#"nmid_connections{role="undecided"}"#) >= f64::from(count)
    })
    .await;
    let per_connection = nmid.rss_bytes().saturating_sub(before) / u64::from(count);
    println!("{count} half-header connections: {per_connection} bytes each");
    // ~7 KiB measured; each reserved 32 KiB of read-ahead before.
    assert!(per_connection < 24 * 1024, "{per_connection} bytes each");
    for stream in &mut streams {
        closed_within(stream, Duration::from_secs(8) + PATIENCE).await;
    }
    let closed = metric(http, r#"nmid_limit_hits_total{limit="handshake_timeout"}"#);
    assert_eq!(closed, f64::from(count));
}

/// HTTP connections are bounded (`http.max_connections`): past the bound a new connection
/// waits in the backlog, unanswered, and is served once one closes; the open ones are
/// counted in `nmid_http_connections`.
#[actix_rt::test]
async fn http_connections_are_bounded() {
    let nmid = nmid(&[("NMID__HTTP__MAX_CONNECTIONS", "2")]);
    let http = nmid.http.unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(http).await.unwrap());
    }
    let mut third = TcpStream::connect(http).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: nmid\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(1), third.read_to_end(&mut answer));
    assert!(waited.await.is_err(), "served past the bound: {answer:?}");
    drop(held.pop());
    tokio::time::timeout(PATIENCE, third.read_to_end(&mut answer))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    drop(held);
    eventually("the HTTP connections to be closed", PATIENCE, || {
        // This request's own connection is the one open.
        metric(http, "nmid_http_connections") == 1.0
    })
    .await;
}

/// Idle sockets cannot lock new clients out: with every connection slot taken by sockets
/// that never send a frame, they are closed at the handshake deadline and a new client is
/// served (before, 999 idle sockets locked every new client out for good).
#[actix_rt::test]
async fn idle_sockets_cannot_lock_new_clients_out() {
    let nmid = nmid(&[
        ("NMID__TCP__MAX_CONNECTIONS", "50"),
        ("NMID__TCP__HANDSHAKE_TIMEOUT_MS", "1000"),
    ]);
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(nmid.addr).await.unwrap());
    }
    let started = Instant::now();
    for stream in &mut idle {
        closed_within(stream, PATIENCE).await;
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    let mut client = Peer::connect(nmid.addr).await;
    client.call("Nobody", b"x").await;
    assert_eq!(client.recv().await, Frame::CantDo);
}

/// Names and series stay bounded: a 1 MB function name and a function past the per-worker
/// limit are refused with ERROR; 2,000 functions of one worker make at most
/// `metrics.max_function_series` series, all gone once the worker leaves; 300 worker names
/// make at most `metrics.max_worker_series` + 1 series.
#[actix_rt::test]
async fn names_and_series_stay_bounded() {
    let nmid = nmid(&[
        ("NMID__METRICS__MAX_FUNCTION_SERIES", "100"),
        ("NMID__METRICS__MAX_WORKER_SERIES", "50"),
        ("NMID__WORKERS__MAX_FUNCTIONS_PER_WORKER", "2000"),
        ("NMID__WORKERS__MAX_CONTROL_FRAMES_PER_SECOND", "1000000"),
    ]);
    let http = nmid.http.unwrap();
    let mut worker = Peer::worker(nmid.addr, "many", &[]).await;
    worker
        .send(Frame::WAddFunc {
            function: Bytes::from(vec![b'f'; 1 << 20]),
        })
        .await;
    assert_eq!(worker.recv().await, Frame::Error, "a 1 MB name is refused");
    let mut frames = BytesMut::new();
    for i in 0..2001 {
        frames.put_slice(&wire(&Frame::WAddFunc {
            function: bytes(&format!("F{i}")),
        }));
    }
    worker.send_raw(&frames).await;
    for i in 0..2000 {
        assert_eq!(worker.recv().await, Frame::Ok, "registration {i}");
    }
    assert_eq!(worker.recv().await, Frame::Error, "the 2001st is refused");
    let text = metrics_text(http);
    let series = (text.lines())
        .filter(|l| l.starts_with("nmid_calls_total{function="))
        .map(|l| l.split('"').nth(1).unwrap().to_owned())
        .collect::<HashSet<_>>();
    println!(
        "2,000 functions: {} function labels, /metrics {} KiB",
        series.len(),
        text.len() / 1024
    );
    assert!(series.len() <= 101, "{} function labels", series.len());
    assert!(series.contains("_other"));
    drop(worker);
    eventually("the functions' series to be gone", PATIENCE, || {
        !metrics_text(http).contains(r#"function="F1""#)
    })
    .await;

    let mut workers = Vec::new();
    for i in 0..300 {
        workers.push(Peer::worker(nmid.addr, &format!("w{i}"), &["G"]).await);
    }
    let text = metrics_text(http);
    let names = (text.lines())
        .filter(|l| l.starts_with("nmid_worker_jobs_in_flight{worker="))
        .count();
    println!("300 worker names: {names} worker series");
    assert!(names <= 51, "{names} worker series");
}

fn metrics_text(http: SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: nmid\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// One worker connection's flood of W_ADD_FUNC/W_DEL_FUNC (200,000 frames) cannot stall
/// other clients: it is paced by `workers.max_control_frames_per_second` (counted in
/// `limit="control_frame_rate"`; the dispatcher reads the flood no faster than that), and
/// calls through other connections keep being answered promptly (one stalled every client
/// for 3.5 s before).
#[actix_rt::test]
async fn a_flood_of_control_frames_is_paced_and_does_not_stall_other_clients() {
    let config = Config::default();
    let per_second = f64::from(config.workers.max_control_frames_per_second);
    let dispatcher = start_dispatcher_with_http(config);
    let http = dispatcher.http.unwrap();
    let worker = echo_worker(dispatcher.addr);
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let mut probe = client.clone();
    eventually_call(&mut probe).await;
    let paced = || metric(http, r#"nmid_limit_hits_total{limit="control_frame_rate"}"#);
    assert_eq!(paced(), 0.0, "paced before the flood");

    // The flooder: a worker connection whose frames one task writes while another counts
    // the OKs the dispatcher sends back, one per W_ADD_FUNC it has read.
    let flooder = Peer::worker(dispatcher.addr, "flood", &[])
        .await
        .into_stream();
    let (mut replies, mut requests) = flooder.into_split();
    let mut flood = BytesMut::new();
    for _ in 0..100_000 {
        flood.put_slice(&wire(&Frame::WAddFunc {
            function: bytes("X"),
        }));
        flood.put_slice(&wire(&Frame::WDelFunc {
            function: bytes("X"),
        }));
    }
    let added = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let flooding = tokio::spawn(async move { requests.write_all(&flood).await });
    let counting = tokio::spawn({
        let added = added.clone();
        async move {
            let ok = wire(&Frame::Ok);
            let mut buf = BytesMut::new();
            while replies.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                while buf.len() >= ok.len() {
                    assert_eq!(buf.split_to(ok.len())[..], ok[..], "an OK per W_ADD_FUNC");
                    added.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    eventually("the flood to be paced", PATIENCE, || {
        paced() >= 1.0 || counting.is_finished()
    })
    .await;

    // Calls, 200 at least, for a second of the flood at least.
    let mut took = Vec::new();
    while took.len() < 200 || started.elapsed() < Duration::from_secs(1) {
        let started = Instant::now();
        let call = client.call("Echo", &b"p"[..]);
        match tokio::time::timeout(SLOWEST_CALL_UNDER_FLOOD, call).await {
            Ok(answer) => assert_eq!(&answer.unwrap()[..], b"p"),
            Err(_) => panic!("a call took over {SLOWEST_CALL_UNDER_FLOOD:?} during the flood"),
        }
        took.push(started.elapsed());
    }
    let flooded_for = started.elapsed();
    let read = 2 * added.load(Ordering::Relaxed);
    // The flood's tasks run until stopped here: one that ended has failed (a panic is raised
    // here), unless the whole flood was written (into the sockets' buffers) without error.
    if flooding.is_finished() {
        let written =
            (flooding.await).unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        written.expect("the flood was written");
    } else {
        flooding.abort();
    }
    if counting.is_finished() {
        (counting.await).unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        panic!("the flood's connection closed");
    }
    counting.abort();

    took.sort();
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    // The bucket holds a second's frames; a read buffer's worth may be taken in one turn.
    let most = per_second * (1.0 + flooded_for.as_secs_f64()) + READ_AHEAD_FRAMES;
    println!(
        "{} calls during a 200,000-frame control flood: median {median:?}, slowest {slowest:?}; the flood read {read} frames in {flooded_for:?} (at most {most:.0} paced), paced {} times",
        took.len(),
        paced()
    );
    assert!(paced() >= 1.0, "the flood was never paced");
    assert!(
        read as f64 >= per_second,
        "the flood was not read: {read} frames"
    );
    assert!(
        (read as f64) <= most,
        "the flood was not slowed: {read} frames in {flooded_for:?}"
    );
    assert!(
        median < Duration::from_millis(250),
        "the median call took {median:?}"
    );
    let snapshot = dispatcher.snapshot().await;
    assert!(snapshot.function("Echo").is_some());
    worker.stop().await;
    dispatcher.stop().await;
}

/// The longest a call may take while another connection floods control frames: calls
/// take milliseconds; an unpaced flood stalled them for seconds (3.5 s, and 18 s in a
/// debug build on a loaded machine).
const SLOWEST_CALL_UNDER_FLOOD: Duration = Duration::from_secs(3);

/// Control frames a worker connection's read buffer can hold past its pacing: one 64 KiB
/// read of 13-byte frames.
const READ_AHEAD_FRAMES: f64 = (64 * 1024 / 13) as f64;

/// A call whose params fill `tcp.max_frame_bytes` would become an `S_GET_DATA` over the
/// worker's limit: it is refused at once (v1 ERROR, tagged TooLarge), the worker never sees
/// it (the next job it gets is the next call's) and keeps its connection. A v1 result that
/// would be larger than its caller accepts (the worker sent the params back shorter) is
/// ERROR too. Each is counted `outbound_frame_size`.
#[actix_rt::test]
async fn a_call_too_large_for_its_worker_is_refused_at_once() {
    let mut config = Config::default();
    config.tcp.max_frame_bytes = 64 * 1024;
    let dispatcher = start_dispatcher_with(config);
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    // C_DO_JOB body: 16 + 1 (function) + params = exactly the limit.
    let params = vec![b'p'; 64 * 1024 - 17];
    client.call("F", &params).await;
    assert_eq!(client.recv().await, Frame::Error);
    // A C_CALL that fits, whose S_JOB or S_GET_DATA would not.
    let tagged = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let refused = tagged.call("F", vec![b'p'; 64 * 1024 - 40]).await;
    assert!(
        matches!(refused, Err(ClientError::TooLarge(_))),
        "{refused:?}"
    );
    assert_eq!(dispatcher.limit_hits("outbound_frame_size").await, 2.0);
    client.call("F", b"small").await;
    let job = worker.recv_job().await;
    assert_eq!(&job.params[..], b"small", "the first job the worker gets");
    worker.answer(&job, b"ok").await;
    assert!(matches!(client.recv().await, Frame::SReturnData(_)));

    // 40 KiB of params, answered with 40 KiB: a W_RETURN_DATA that fits (its params sent
    // back empty), an S_RETURN_DATA to the caller (with the params) that would not.
    client.call("F", &vec![b'p'; 40 * 1024]).await;
    let job = worker.recv_job().await;
    worker
        .send(Frame::WReturnData(WReturnData {
            function: job.function.clone(),
            params: Bytes::new(),
            ret: Bytes::from(vec![b'r'; 40 * 1024]),
            job_id: job.job_id.clone(),
        }))
        .await;
    assert_eq!(client.recv().await, Frame::Error);
    assert_eq!(dispatcher.limit_hits("outbound_frame_size").await, 3.0);
    dispatcher.stop().await;
}

/// SIGTERM with jobs still running past `server.drain_timeout_ms`: every caller gets an
/// answer (v1 ERROR) before its connection closes, `/readyz` says 503 during the drain, and
/// the process exits 3 (before: 680 of 1,000 callers got nothing, and it exited 0).
#[actix_rt::test]
async fn sigterm_past_the_drain_timeout_answers_every_caller_and_exits_3() {
    let mut nmid = nmid(&[
        ("NMID__SERVER__DRAIN_TIMEOUT_MS", "1500"),
        ("NMID__WORKERS__V1_MAX_JOBS_IN_FLIGHT", "64"),
    ]);
    let mut worker = Peer::worker(nmid.addr, "stuck", &["Stuck"]).await;
    let count = 200;
    let mut callers = Vec::new();
    for i in 0..count {
        let mut caller = Peer::connect(nmid.addr).await;
        caller.call("Stuck", format!("{i}").as_bytes()).await;
        callers.push(caller);
    }
    // 64 jobs reach the worker (its limit), the rest wait in the queue.
    for _ in 0..64 {
        worker.recv_job().await;
    }
    let http = nmid.http.unwrap();
    // An HTTP caller of the same function, waiting in the queue.
    let http_call = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(http).ok()?;
        let body = r#"{"name":"http"}"#;
        write!(
            stream,
            "POST /call/Stuck HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    });
    eventually("the HTTP call to queue", PATIENCE, || {
        metric(http, r#"nmid_queue_depth{function="Stuck"}"#) >= f64::from(count as u32 - 64 + 1)
    })
    .await;
    nmid.signal("-TERM");
    // The signal reaches the process a moment after `kill` returns: ask until the drain
    // has begun (it lasts 1.5 s), and keep the last answer.
    let ready = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + PATIENCE;
        let mut last = None;
        while Instant::now() < until {
            let mut stream = std::net::TcpStream::connect(http).ok()?;
            write!(stream, "GET /readyz HTTP/1.0\r\n\r\n").ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).ok()?;
            if text.starts_with("HTTP/1.0 503") {
                return Some(text);
            }
            last = Some(text);
            std::thread::sleep(Duration::from_millis(10));
        }
        last
    });
    let answers = join_all(callers.iter_mut().map(|c| c.recv_within(PATIENCE))).await;
    let errors = answers.iter().filter(|a| **a == Some(Frame::Error)).count();
    println!("SIGTERM past the drain timeout: {errors} of {count} callers answered ERROR");
    assert_eq!(errors, count);
    // What the drain waited for: the jobs in flight (64), the queued calls and the HTTP one.
    let timed_out = nmid.wait_for_log("drain timeout");
    let left = format!("jobs_left={}", count + 1);
    assert!(timed_out.contains(&left), "expected {left}: {timed_out}");
    let readyz = ready
        .await
        .unwrap()
        .expect("/readyz answered during the drain");
    assert!(readyz.starts_with("HTTP/1.0 503"), "{readyz}");
    let http_answer = http_call
        .await
        .unwrap()
        .expect("the HTTP caller was answered");
    assert!(http_answer.starts_with("HTTP/1.0 503"), "{http_answer}");
    assert!(http_answer.contains("shutting_down"), "{http_answer}");
    let status = nmid.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(3), "{status:?}");
}

/// A v1 worker written like nmid's Go worker SDK under load: when two jobs overlap on its
/// connection, a reply carries the other job's id, or one trailing byte. With the default
/// `workers.v1_max_jobs_in_flight` (1) no two jobs overlap: 20,000 calls from 64 callers
/// each get exactly one answer, the right one. With the limit raised to 8 the connection
/// survives, every caller is answered exactly once, and none gets another's result.
#[actix_rt::test]
async fn nmid_go_worker_race_never_misroutes_an_answer() {
    for (limit, calls) in [(1u32, 20_000u64), (8, 5_000)] {
        let mut config = Config::default();
        config.workers.v1_max_jobs_in_flight = limit;
        let dispatcher = start_dispatcher_with(config);
        let worker = Peer::worker(dispatcher.addr, "racy", &["Up"]).await;
        let racing = tokio::spawn(racy_worker(worker));
        let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
        let next = Arc::new(AtomicU64::new(0));
        let (right, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        join_all((0..64).map(|_| {
            let (client, next) = (client.clone(), next.clone());
            let (right, errors) = (right.clone(), errors.clone());
            async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= calls {
                        break;
                    }
                    let params = format!("p{n}");
                    match client.call("Up", params.clone()).await {
                        Ok(ret) => {
                            assert_eq!(
                                ret,
                                params.to_uppercase(),
                                "an answer reached the wrong caller"
                            );
                            right.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ClientError::WorkerLost) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
            }
        }))
        .await;
        let (right, errors) = (
            right.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
        );
        println!("v1 limit {limit}: {calls} calls, {right} right answers, {errors} WorkerLost, 0 misrouted");
        assert_eq!(right + errors, calls, "every call answered exactly once");
        if limit == 1 {
            assert_eq!(errors, 0, "no race with one job at a time");
        } else {
            assert!(right * 10 > calls * 8, "most answers get through a retry");
        }
        let snapshot = dispatcher.snapshot().await;
        assert_eq!(
            snapshot.workers.len(),
            1,
            "the worker's connection survived"
        );
        racing.abort();
        dispatcher.stop().await;
    }
}

/// The racy v1 worker: answers each job with its params upper-cased; when another job is
/// waiting as it answers, one reply in ten carries that job's id, and one in seven has one
/// byte too many (as nmid's Go worker SDK does when two jobs overlap on its connection).
async fn racy_worker(mut worker: Peer) {
    let mut waiting = std::collections::VecDeque::new();
    let mut replies = 0u64;
    loop {
        while let Some(frame) = worker.try_recv() {
            if let Frame::SGetData(job) = frame {
                waiting.push_back(job);
            }
        }
        let Some(job) = waiting.pop_front() else {
            if let Some(Frame::SGetData(job)) = worker.recv_within(PATIENCE).await {
                waiting.push_back(job);
            }
            continue;
        };
        replies += 1;
        let job_id = match waiting.front() {
            Some(other) if replies.is_multiple_of(10) => other.job_id.clone(),
            _ => job.job_id.clone(),
        };
        let ret = Bytes::from(String::from_utf8_lossy(&job.params).to_uppercase());
        let mut frame = wire(&Frame::WReturnData(WReturnData {
            function: job.function.clone(),
            params: job.params.clone(),
            ret,
            job_id,
        }));
        if !waiting.is_empty() && replies.is_multiple_of(7) {
            frame.push(0);
            let len = u32::from_be_bytes(frame[8..12].try_into().unwrap()) + 1;
            frame[8..12].copy_from_slice(&len.to_be_bytes());
        }
        worker.send_raw(&frame).await;
    }
}

/// nmid's C worker sends W_GRAB_JOB with a 1-byte body: tolerated (and counted), the worker
/// keeps its connection and its jobs.
#[actix_rt::test]
async fn a_grab_job_with_a_body_is_tolerated() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let mut worker = Peer::worker(dispatcher.addr, "c-sdk", &["F"]).await;
    worker
        .send_raw(&[0, 0, 0, 2, 0, 0, 0, 12, 0, 0, 0, 1, 0])
        .await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"x").await;
    let job = worker.recv_job().await;
    worker.answer(&job, b"done").await;
    assert!(matches!(client.recv().await, Frame::SReturnData(_)));
    let text = scrape(&dispatcher).await;
    assert!(
        text.contains(r#"nmid_lenient_frames_total{kind="grab_job_body"} 1"#),
        "{text}"
    );
    dispatcher.stop().await;
}

async fn scrape(dispatcher: &common::TestDispatcher) -> String {
    let http = dispatcher.http.unwrap();
    tokio::task::spawn_blocking(move || metrics_text(http))
        .await
        .unwrap()
}

/// A malformed W_RETURN_DATA whose frame is intact fails only its job (which is retried on
/// the same connection and answered); a W_RETURN_DATA with a trailing byte is accepted.
#[actix_rt::test]
async fn a_malformed_result_fails_only_its_job() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("F", b"x").await;
    let job = worker.recv_job().await;
    // handle_len 200 overruns the 10-byte body.
    let mut garbled = vec![0, 0, 0, 2, 0, 0, 0, 15, 0, 0, 0, 10];
    garbled.extend_from_slice(&[0, 0, 0, 200, 1, 2, 3, 4, 5, 6]);
    worker.send_raw(&garbled).await;
    let retried = worker.recv_job().await;
    assert_eq!(retried.params, job.params);
    let mut frame = wire(&Frame::WReturnData(WReturnData {
        function: retried.function.clone(),
        params: retried.params.clone(),
        ret: Bytes::from_static(b"right"),
        job_id: retried.job_id.clone(),
    }));
    frame.push(0);
    let len = u32::from_be_bytes(frame[8..12].try_into().unwrap()) + 1;
    frame[8..12].copy_from_slice(&len.to_be_bytes());
    worker.send_raw(&frame).await;
    let Frame::SReturnData(ret) = client.recv().await else {
        panic!("expected the result");
    };
    assert_eq!(&ret.ret[..], b"right");
    let text = scrape(&dispatcher).await;
    assert!(
        text.contains(r#"kind="return_data_malformed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kind="return_data_trailing_bytes"} 1"#),
        "{text}"
    );
    dispatcher.stop().await;
}

/// A client idle past `tcp.client_idle_timeout_ms` with no call in flight is closed; one
/// waiting for an answer is not.
#[actix_rt::test]
async fn an_idle_client_is_closed_but_a_waiting_one_is_not() {
    let mut config = Config::default();
    config.tcp.client_idle_timeout_ms = 300;
    let dispatcher = start_dispatcher_with(config);
    let mut worker = Peer::worker(dispatcher.addr, "slow", &["Slow"]).await;
    let mut waiting = Peer::connect(dispatcher.addr).await;
    waiting.call("Slow", b"x").await;
    let job = worker.recv_job().await;
    let mut idle = Peer::connect(dispatcher.addr).await;
    idle.call("Nobody", b"x").await;
    assert_eq!(idle.recv().await, Frame::CantDo);
    idle.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    worker.answer(&job, b"late but welcome").await;
    assert!(matches!(waiting.recv().await, Frame::SReturnData(_)));
    dispatcher.stop().await;
}

/// `tcp.max_connections_per_ip`: the connection past it from one address is closed at once,
/// and one more is accepted once one of them closes.
#[actix_rt::test]
async fn connections_per_ip_are_limited() {
    let mut config = Config::default();
    config.tcp.max_connections_per_ip = 3;
    let dispatcher = start_dispatcher_with(config);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut peer = Peer::connect(dispatcher.addr).await;
        peer.call("Nobody", b"x").await;
        assert_eq!(peer.recv().await, Frame::CantDo);
        open.push(peer);
    }
    Peer::connect(dispatcher.addr).await.expect_closed().await;
    drop(open.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The closed connection's slot comes back once its session has stopped.
        let mut stream = TcpStream::connect(dispatcher.addr).await.unwrap();
        let _ = stream.write_all(&call_bytes("Nobody", b"x")).await;
        let mut reply = [0u8; 12];
        if let Ok(Ok(_)) = tokio::time::timeout(PATIENCE, stream.read_exact(&mut reply)).await {
            assert_eq!(reply, wire(&Frame::CantDo)[..]);
            break;
        }
        assert!(Instant::now() < deadline, "a slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dispatcher.stop().await;
}

/// Sends `frame` and returns the dispatcher's answer.
async fn ask(peer: &mut Peer, frame: Frame) -> Frame {
    peer.send(frame).await;
    peer.recv().await
}

/// `workers.max_worker_name_bytes` and `workers.max_function_name_bytes`: a longer
/// W_SET_NAME or W_ADD_FUNC is answered ERROR and counted `name_too_long`;
/// `workers.max_functions_per_worker`: a W_ADD_FUNC past it is answered ERROR and counted
/// `functions_per_worker`. The worker keeps its connection, its name and functions within
/// the limits.
#[actix_rt::test]
async fn names_too_long_and_functions_past_the_limit_are_refused_and_counted() {
    let mut config = Config::default();
    config.workers.max_worker_name_bytes = 16;
    config.workers.max_function_name_bytes = 8;
    config.workers.max_functions_per_worker = 2;
    let dispatcher = start_dispatcher_with(config);
    let mut worker = Peer::connect(dispatcher.addr).await;
    let name = |n: usize| Frame::WSetName {
        name: Bytes::from(vec![b'w'; n]),
    };
    let add = |function: &str| Frame::WAddFunc {
        function: bytes(function),
    };
    assert_eq!(
        ask(&mut worker, name(17)).await,
        Frame::Error,
        "a 17-byte worker name"
    );
    assert_eq!(dispatcher.limit_hits("name_too_long").await, 1.0);
    assert_eq!(
        ask(&mut worker, name(16)).await,
        Frame::Ok,
        "a 16-byte worker name"
    );
    assert_eq!(ask(&mut worker, add("NineBytes")).await, Frame::Error);
    assert_eq!(dispatcher.limit_hits("name_too_long").await, 2.0);
    assert_eq!(ask(&mut worker, add("Eight__8")).await, Frame::Ok);
    assert_eq!(ask(&mut worker, add("Second")).await, Frame::Ok);
    assert_eq!(dispatcher.limit_hits("functions_per_worker").await, 0.0);
    assert_eq!(
        ask(&mut worker, add("Third")).await,
        Frame::Error,
        "a third function"
    );
    assert_eq!(dispatcher.limit_hits("functions_per_worker").await, 1.0);

    let snapshot = dispatcher.snapshot().await;
    let [registered] = &snapshot.workers[..] else {
        panic!("one worker: {snapshot:#?}");
    };
    assert_eq!(registered.name, Some("w".repeat(16)));
    let mut functions = registered.functions.clone();
    functions.sort();
    assert_eq!(functions, ["Eight__8", "Second"]);
    dispatcher.stop().await;
}

/// `tcp.max_frame_bytes` on the way in: a header announcing a larger body closes its
/// connection at once, as a first frame or a later one, each counted
/// `inbound_frame_size`.
#[actix_rt::test]
async fn a_frame_announced_over_max_frame_bytes_closes_and_is_counted() {
    let mut config = Config::default();
    config.tcp.max_frame_bytes = 64 * 1024;
    let dispatcher = start_dispatcher_with(config);
    let mut header = BytesMut::new();
    header.put_u32(3); // client
    header.put_u32(16); // C_DO_JOB
    header.put_u32(64 * 1024 + 1); // one byte over
    let mut first = Peer::connect(dispatcher.addr).await;
    first.send_raw(&header).await;
    first.expect_closed().await;
    assert_eq!(dispatcher.limit_hits("inbound_frame_size").await, 1.0);

    let mut later = Peer::connect(dispatcher.addr).await;
    later.call("Nobody", b"x").await;
    assert_eq!(later.recv().await, Frame::CantDo);
    later.send_raw(&header).await;
    later.expect_closed().await;
    assert_eq!(dispatcher.limit_hits("inbound_frame_size").await, 2.0);
    dispatcher.stop().await;
}
