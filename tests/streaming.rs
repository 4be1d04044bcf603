//! Partial results and progress (issue 23, item 4) end to end over real TCP on 127.0.0.1: a
//! worker library job's partials reach a `call_stream` client, a raw `C_CALL_STREAM` caller
//! and an SSE caller in order and before the result; `C_CALL` and v1 callers of the same
//! function get only the result, byte for byte as before; a caller that stops reading is
//! failed `slow_caller` within a bounded memory (a real `nmid` process's `VmRSS`).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::Process;
use common::{bytes, start_dispatcher_with_http, wire, Peer, PATIENCE};
use futures_util::StreamExt;
use nmid::client::{CallOptions, Client, Protocol, StreamEvent};
use nmid::codec::{
    CDoJob, ErrorCode, Frame, ParamsType, SReturnData, TaggedCall, TaggedPartial, TaggedResult,
    HANDLE_TYPE_ENCODE,
};
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker, WorkerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// The partials `Count` sends for params `n`: `part 0` .. `part n-1`.
fn part(i: u64) -> Bytes {
    Bytes::from(format!("part {i}"))
}

/// The result every `Count` call ends with.
fn count_result() -> Bytes {
    RetStruct::ok("counted").encode().into()
}

/// Sends `n` (its params, as text) partials with progress every 100, then the result.
async fn count(job: Job) -> Result<Bytes, JobError> {
    let n: u64 = std::str::from_utf8(job.params())?.parse()?;
    for i in 0..n {
        if i % 100 == 0 {
            job.progress(i, n);
            tokio::task::yield_now().await;
        }
        job.send_partial(part(i))?;
    }
    job.progress(n, n);
    Ok(count_result())
}

/// A worker of the library serving `Count` at `addr`, in `protocol`.
fn count_worker(addr: std::net::SocketAddr, protocol: Protocol) -> WorkerHandle {
    Worker::builder()
        .name("counter")
        .server(addr.to_string())
        .protocol(protocol)
        .function("Count", count)
        .start()
        .expect("a valid worker")
}

async fn serving(dispatcher: &common::TestDispatcher, function: &str) {
    dispatcher
        .wait_for(&format!("a worker of {function}"), |s| {
            s.function(function).is_some_and(|f| f.workers == 1)
        })
        .await;
}

/// The tagged call frame of `Count` with `n`, request id `id`.
fn count_call(id: u64, n: u64) -> TaggedCall {
    TaggedCall {
        id,
        timeout_ms: 30_000,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: bytes("Count"),
        params: Bytes::from(n.to_string()),
        meta: Vec::new(),
    }
}

/// What a streaming caller saw: the partials in order, the progress reports, the end.
#[derive(Debug, Default)]
struct Seen {
    partials: Vec<Bytes>,
    progress: Vec<(u64, u64)>,
}

impl Seen {
    /// Asserts `n` partials `part 0..n` in order, and progress ending at `n` of `n`.
    fn assert_count(&self, n: u64) {
        assert_eq!(self.partials.len() as u64, n, "every partial arrived");
        for (i, got) in self.partials.iter().enumerate() {
            assert_eq!(*got, part(i as u64), "partial {i} in order");
        }
        assert_eq!(self.progress.first(), Some(&(0, n)));
        assert_eq!(self.progress.last(), Some(&(n, n)));
        assert_eq!(self.progress.len() as u64, n.div_ceil(100) + 1);
    }
}

/// A worker sending 1,000 partials: a `call_stream` client receives all 1,000 in order,
/// with the progress, then the result; a plain call of the same function gets the result.
#[actix_rt::test]
async fn a_streaming_client_receives_a_thousand_partials_in_order_then_the_result() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = count_worker(dispatcher.addr, Protocol::Tagged);
    serving(&dispatcher, "Count").await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();

    let mut events = client
        .call_stream("Count", "1000", CallOptions::default())
        .await
        .unwrap();
    let mut seen = Seen::default();
    let mut done = None;
    while let Some(event) = tokio::time::timeout(PATIENCE, events.next()).await.unwrap() {
        assert!(done.is_none(), "nothing after the result: {event:?}");
        match event.unwrap() {
            StreamEvent::Partial(data) => seen.partials.push(data),
            StreamEvent::Progress {
                numerator,
                denominator,
            } => seen.progress.push((numerator, denominator)),
            StreamEvent::Done(ret) => done = Some(ret),
        }
    }
    seen.assert_count(1000);
    assert_eq!(done, Some(count_result()));

    let plain = client.call("Count", "1000").await.unwrap();
    assert_eq!(plain, count_result());
    worker.stop().await;
    dispatcher.stop().await;
}

/// On the wire: `C_CALL_STREAM` gets `S_CALL_PROGRESS` / `S_CALL_PARTIAL` frames with its
/// request id, in order, then `S_CALL_RESULT`; a `C_CALL` of the same function gets only
/// `S_CALL_RESULT`, and a v1 `C_DO_JOB` only `S_RETURN_DATA`, byte for byte as before.
#[actix_rt::test]
async fn only_a_stream_call_gets_partials_and_v1_bytes_are_unchanged() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = count_worker(dispatcher.addr, Protocol::Tagged);
    serving(&dispatcher, "Count").await;

    let mut streaming = Peer::connect(dispatcher.addr).await;
    streaming
        .send(Frame::CCallStream(count_call(7, 1000)))
        .await;
    let mut seen = Seen::default();
    loop {
        match streaming.recv().await {
            Frame::SCallPartial(p) => {
                assert_eq!(p.id, 7);
                seen.partials.push(p.data);
            }
            Frame::SCallProgress(p) => {
                assert_eq!(p.id, 7);
                seen.progress.push((p.numerator, p.denominator));
            }
            Frame::SCallResult(r) => {
                assert_eq!(
                    r,
                    TaggedResult {
                        id: 7,
                        ret: count_result()
                    }
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.assert_count(1000);

    let mut plain = Peer::connect(dispatcher.addr).await;
    plain.send(Frame::CCall(count_call(8, 1000))).await;
    let expected = Frame::SCallResult(TaggedResult {
        id: 8,
        ret: count_result(),
    });
    assert_eq!(plain.recv_raw_frame().await, wire(&expected));
    plain
        .assert_client_got_nothing("no partial after the result")
        .await;

    let mut v1 = Peer::connect(dispatcher.addr).await;
    let params = Bytes::from_static(b"1000");
    v1.send(Frame::CDoJob(CDoJob {
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: bytes("Count"),
        params: params.clone(),
    }))
    .await;
    let expected = Frame::SReturnData(SReturnData {
        function: bytes("Count"),
        params,
        ret: count_result(),
    });
    assert_eq!(v1.recv_raw_frame().await, wire(&expected));
    v1.assert_client_got_nothing("no partial after the result")
        .await;
    worker.stop().await;
    dispatcher.stop().await;
}

/// A v1-mode worker has no frame for partials: `send_partial` and `progress` do nothing, and
/// a streaming caller gets the result alone.
#[actix_rt::test]
async fn partials_of_a_v1_worker_are_no_ops() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = count_worker(dispatcher.addr, Protocol::V1);
    serving(&dispatcher, "Count").await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let events = client
        .call_stream("Count", "50", CallOptions::default())
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(PATIENCE, events.collect())
        .await
        .unwrap();
    assert_eq!(events, vec![Ok(StreamEvent::Done(count_result()))]);
    worker.stop().await;
    dispatcher.stop().await;
}

/// A worker's partial for a job it does not hold (an id never sent, or a job it already
/// answered) is dropped: the streaming caller gets only its own job's partial, and the
/// worker's connection stays and serves the next call.
#[actix_rt::test]
async fn partials_for_unknown_jobs_are_dropped_without_harm() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let mut worker = Peer::worker(dispatcher.addr, "raw", &[]).await;
    worker.send(Frame::WSlots { slots: 4 }).await;
    assert_eq!(worker.recv().await, Frame::Ok);
    worker
        .send(Frame::WAddFunc {
            function: bytes("Count"),
        })
        .await;
    assert_eq!(worker.recv().await, Frame::Ok);
    serving(&dispatcher, "Count").await;

    let mut caller = Peer::connect(dispatcher.addr).await;
    for round in 0..2u64 {
        caller.send(Frame::CCallStream(count_call(round, 1))).await;
        let Frame::SJob(job) = worker.recv().await else {
            panic!("expected S_JOB")
        };
        let partial = |id: u64, data: &'static [u8]| {
            Frame::WJobPartial(TaggedPartial {
                id,
                data: Bytes::from_static(data),
            })
        };
        worker.send(partial(job.id + 1_000_000, b"not yours")).await;
        worker.send(partial(job.id, b"yours")).await;
        worker
            .send(Frame::WJobResult(TaggedResult {
                id: job.id,
                ret: count_result(),
            }))
            .await;
        worker.send(partial(job.id, b"too late")).await;
        let partial = TaggedPartial {
            id: round,
            data: Bytes::from_static(b"yours"),
        };
        assert_eq!(caller.recv().await, Frame::SCallPartial(partial));
        let result = TaggedResult {
            id: round,
            ret: count_result(),
        };
        assert_eq!(caller.recv().await, Frame::SCallResult(result));
    }
    caller.assert_client_got_nothing("nothing else").await;
    worker
        .assert_worker_got_nothing("the worker's connection stays")
        .await;
    dispatcher.stop().await;
}

/// A streaming caller that stops reading while its worker sends 128 MiB of partials: the
/// dispatcher (a real `nmid` process) holds at most `jobs.max_partial_bytes_buffered` of
/// them, its memory stays bounded, and the call fails `slow_caller` (code 11) after the
/// partials that were written; another caller's calls are answered all along.
#[actix_rt::test]
async fn a_caller_that_stops_reading_fails_slow_caller_within_bounded_memory() {
    let nmid = Process::start_with_env(
        &[],
        &[("NMID__JOBS__MAX_PARTIAL_BYTES_BUFFERED", "1048576")],
    );
    let chunk = 64 * 1024;
    let sent_bytes = 128 * MIB;
    let worker = Worker::builder()
        .name("flood")
        .server(nmid.addr.to_string())
        .function("Flood", move |job: Job| async move {
            let piece = Bytes::from(vec![b'x'; chunk]);
            for _ in 0..sent_bytes / chunk as u64 {
                job.send_partial(piece.clone())?;
                // Let the link write, so the worker's own buffer stays small.
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Ok::<_, JobError>(count_result())
        })
        .function("Count", count)
        .start()
        .unwrap();
    let other = Client::connect(nmid.addr.to_string()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while other.call("Count", "3").await != Ok(count_result()) {
        assert!(Instant::now() < deadline, "the workers never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = nmid.rss_bytes();

    let mut slow = tokio::net::TcpStream::connect(nmid.addr).await.unwrap();
    let mut call = Frame::CCallStream(count_call(1, 0));
    if let Frame::CCallStream(c) = &mut call {
        c.function = bytes("Flood");
        c.timeout_ms = 120_000;
    }
    slow.write_all(&wire(&call)).await.unwrap();
    // Other calls are answered while the flood runs; memory is sampled meanwhile.
    let mut peak = before;
    let flood_ends = Instant::now() + Duration::from_secs(8);
    while Instant::now() < flood_ends {
        assert_eq!(other.call("Count", "3").await, Ok(count_result()));
        peak = peak.max(nmid.rss_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Now read: the partials that were let through, then the error, nothing after it.
    let mut framed = tokio_util::codec::FramedRead::new(slow, nmid::codec::NmidCodec::default());
    let mut partial_bytes = 0u64;
    let error = loop {
        match tokio::time::timeout(PATIENCE, framed.next()).await {
            Ok(Some(Ok(Frame::SCallPartial(p)))) => partial_bytes += p.data.len() as u64,
            Ok(Some(Ok(Frame::SCallError(e)))) => break e,
            other => panic!("expected partials then S_CALL_ERROR, got {other:?}"),
        }
    };
    assert_eq!(error.request_id, 1);
    assert_eq!(error.code, ErrorCode::SLOW_CALLER);
    let message = String::from_utf8_lossy(&error.message);
    assert!(
        message.contains("reads its partial results too slowly"),
        "{message}"
    );
    assert!(
        partial_bytes < 32 * MIB,
        "{partial_bytes} bytes of partials let through"
    );
    let grown = peak.saturating_sub(before);
    println!(
        "RSS grew {} KiB; {} KiB of partials reached the slow caller",
        grown / 1024,
        partial_bytes / 1024
    );
    assert!(grown < 48 * MIB, "the dispatcher grew {} MiB", grown / MIB);
    assert_eq!(other.call("Count", "3").await, Ok(count_result()));
    drop(framed);
    worker.stop().await;
}

/// The events of an SSE response body: (event name, data lines joined with LF).
fn sse_events(body: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        let mut name = String::new();
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push(d);
            } else {
                panic!("not an SSE line: {line:?}");
            }
        }
        events.push((name, data.join("\n")));
    }
    events
}

/// `curl -N` posting `body` to `url` with `Accept: text/event-stream` (or none): the body.
async fn curl(url: String, body: &'static str, events: bool) -> String {
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new("curl");
        command.args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            "-H",
            "Content-Type: text/plain",
        ]);
        if events {
            command.args(["-H", "Accept: text/event-stream"]);
        }
        command.args(["--data-binary", body, &url]).output()
    })
    .await
    .unwrap()
    .expect("curl runs (it is installed with the test tools)");
    assert!(output.status.success(), "curl failed: {output:?}");
    String::from_utf8(output.stdout).expect("text")
}

/// An SSE caller (`curl -N`, `Accept: text/event-stream`) gets the 1,000 partials as
/// `partial` events in order, `progress` events, then `event: result` with the body the
/// plain call answers, and the response ends; without the header nothing changes.
#[actix_rt::test]
async fn an_sse_caller_receives_the_partials_in_order_then_the_result() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = count_worker(dispatcher.addr, Protocol::Tagged);
    serving(&dispatcher, "Count").await;
    let url = format!("{}/call/Count", dispatcher.http_url());

    let plain = curl(url.clone(), "1000", false).await;
    assert_eq!(plain, "counted");
    let body = curl(url.clone(), "1000", true).await;
    let events = sse_events(&body);
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last, &("result".to_owned(), "counted".to_owned()));
    let mut seen = Seen::default();
    for (name, data) in rest {
        match name.as_str() {
            "partial" => seen.partials.push(Bytes::from(data.clone())),
            "progress" => {
                let value: serde_json::Value = serde_json::from_str(data).unwrap();
                let n = |key: &str| value[key].as_u64().unwrap();
                seen.progress.push((n("numerator"), n("denominator")));
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    seen.assert_count(1000);

    // A function nobody serves: refused before the stream begins, as a plain call is.
    let refused = curl(format!("{}/call/Nobody", dispatcher.http_url()), "x", true).await;
    assert!(
        refused.contains("\"code\":\"unknown_function\""),
        "{refused}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// An SSE caller that stops reading while the worker floods partials: the call fails
/// `slow_caller` once `jobs.max_partial_bytes_buffered` wait for it, and when it reads
/// again it gets the partials let through, then `event: error` with that code, then the end.
#[actix_rt::test]
async fn an_sse_caller_that_stops_reading_gets_a_slow_caller_error_event() {
    let mut config = Config::default();
    config.jobs.max_partial_bytes_buffered = 256 * 1024;
    let dispatcher = start_dispatcher_with_http(config);
    let chunk = 16 * 1024;
    let worker = Worker::builder()
        .name("flood")
        .server(dispatcher.addr.to_string())
        .function("Flood", move |job: Job| async move {
            let piece = Bytes::from(vec![b'x'; chunk]);
            for i in 0..4096 {
                job.send_partial(piece.clone())?;
                if i % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok::<_, JobError>(count_result())
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Flood").await;

    let http = dispatcher.http.unwrap();
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let request = "POST /call/Flood HTTP/1.1\r\nHost: nmid\r\nAccept: text/event-stream\r\n\
                   Content-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx";
    stream.write_all(request.as_bytes()).await.unwrap();
    let deadline = Instant::now() + 3 * PATIENCE;
    while dispatcher.limit_hits("partial_backlog").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the slow SSE caller was never failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    tokio::time::timeout(PATIENCE, read).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, _) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let tail = text.trim_end_matches("\r\n0\r\n\r\n");
    let last = tail.rsplit("event: ").next().unwrap();
    assert!(last.starts_with("error\ndata: {"), "{last}");
    assert!(last.contains("\"code\":\"slow_caller\""), "{last}");
    assert!(
        last.contains("reads its partial results too slowly"),
        "{last}"
    );
    let partials = text.matches("event: partial\n").count();
    assert!(partials < 4096, "{partials} partials were all let through");
    worker.stop().await;
    dispatcher.stop().await;
}

/// `nmidctl call --stream` prints the partials as they arrive, then the result's `Data`;
/// the progress goes to stderr.
#[actix_rt::test]
async fn nmidctl_call_stream_prints_the_partials_then_the_result() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = count_worker(dispatcher.addr, Protocol::Tagged);
    serving(&dispatcher, "Count").await;
    let addr = dispatcher.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_nmidctl"))
            .args(["call", "--stream", "Count", "3"])
            .env("NMID_ADDR", addr)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .expect("run nmidctl");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "part 0part 1part 2counted"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("progress 0/3") && stderr.contains("progress 3/3"),
        "{stderr}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// A partial whose frame would be over the worker's `max_frame_bytes` is refused by the
/// library with a clear error (the dispatcher would close the connection over it); the
/// partials that fit still go.
#[actix_rt::test]
async fn a_partial_over_the_frame_limit_is_refused_by_the_worker() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = Worker::builder()
        .name("big")
        .server(dispatcher.addr.to_string())
        .max_frame_bytes(64 * 1024)
        .function("Big", |job: Job| async move {
            job.send_partial("small")?;
            match job.send_partial(vec![b'x'; 64 * 1024]) {
                Err(err) => Err(JobError::new(err)),
                Ok(()) => Ok(Bytes::from_static(b"sent")),
            }
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Big").await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let events = client
        .call_stream("Big", "x", CallOptions::default())
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(PATIENCE, events.collect())
        .await
        .unwrap();
    assert_eq!(
        events[0],
        Ok(StreamEvent::Partial(Bytes::from_static(b"small")))
    );
    let Err(nmid::client::ClientError::WorkerError(message)) = &events[1] else {
        panic!("{events:?}")
    };
    assert!(
        message.starts_with(
            "partial too large: a 65548-byte frame body is over the 65536-byte frame limit"
        ),
        "{message}"
    );
    assert_eq!(events.len(), 2);
    worker.stop().await;
    dispatcher.stop().await;
}
