//! Background jobs over the nmid protocol (issue 23), end to end against an in-process
//! dispatcher on 127.0.0.1 with library workers: the client library's `submit`,
//! `job_status`, `wait_job` and `cancel_job` (tagged frames `C_SUBMIT` .. `C_JOB_CANCEL`);
//! priorities, delays and unique keys through the client; every error with its variant; a
//! job's visibility with auth on; the raw frames on a socket; v1 connections unaffected.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bytes, start_dispatcher_with, Peer, TestDispatcher};
use futures_util::future::join_all;
use nmid::client::{Client, ClientError, JobState, Priority, Protocol, SubmitOptions, Submitted};
use nmid::codec::{
    CJobStatus, ErrorCode, Frame, JobStateCode, ParamsType, SSubmitted, TaggedCall,
    HANDLE_TYPE_ENCODE,
};
use nmid::config::{Config, TokenConfig};
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, Worker, WorkerHandle};

/// Long enough for any job of these tests on a loaded 2-core debug build.
const PATIENCE: Duration = Duration::from_secs(30);

fn config() -> Config {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.jobs.default_backoff_ms = 50;
    config
}

async fn serving(d: &TestDispatcher, function: &str) {
    d.wait_for(&format!("a worker of {function}"), |s| {
        s.function(function).is_some_and(|f| f.workers >= 1)
    })
    .await;
}

/// A worker of `Echo` (answers its params as they are) with `slots` slots, recording the
/// order in which it ran its jobs.
async fn echo_worker(d: &TestDispatcher, slots: u32, ran: Arc<Mutex<Vec<String>>>) -> WorkerHandle {
    let worker = Worker::builder()
        .name("echo")
        .server(d.addr.to_string())
        .slots(slots)
        .function("Echo", move |job: Job| {
            let ran = ran.clone();
            async move {
                let text = String::from_utf8_lossy(job.params()).into_owned();
                ran.lock().unwrap().push(text);
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(d, "Echo").await;
    worker
}

async fn client(d: &TestDispatcher) -> Client {
    Client::connect(d.addr.to_string()).await.unwrap()
}

/// msgpack `{"name": name}`, as the demo's `ToUpper` reads it.
fn name_params(name: &str) -> Bytes {
    let mut params = vec![0x81, 0xa4];
    params.extend_from_slice(b"name");
    params.push(0xa0 | name.len() as u8);
    params.extend_from_slice(name.as_bytes());
    Bytes::from(params)
}

/// A submission through the client gets an id at once; `job_status` sees it, `wait_job`
/// returns it succeeded with the worker's result, and the result stays readable.
#[actix_rt::test]
async fn a_job_submitted_by_the_client_runs_and_its_result_is_kept() {
    let d = start_dispatcher_with(config());
    let _w = Worker::builder()
        .name("upper")
        .server(d.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&d, "ToUpper").await;
    let client = client(&d).await;
    let submitted = (client.submit("ToUpper", name_params("later"), SubmitOptions::default()))
        .await
        .unwrap();
    assert!(!submitted.shared);
    let now = client.job_status(&submitted.id).await.unwrap();
    assert_eq!(now.function, "ToUpper");
    let done = client.wait_job(&submitted.id, PATIENCE).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!((done.attempts, done.error.as_deref()), (1, None));
    assert_eq!((done.progress, done.error_code.as_deref()), (None, None));
    let ret = RetStruct::decode(done.result.as_ref().unwrap()).unwrap();
    assert_eq!(&ret.data[..], b"LATER");
    // Kept: asked again, on another connection, the same result.
    let again = client_of(&d).await.job_status(&submitted.id).await.unwrap();
    assert_eq!(again, done);
    d.stop().await;
}

async fn client_of(d: &TestDispatcher) -> Client {
    client(d).await
}

/// With one worker slot, high jobs submitted through the client after normal ones run
/// before them, low ones last; a job delayed by 1 s is queued until then.
#[actix_rt::test]
async fn priorities_and_delays_hold_through_the_client() {
    let d = start_dispatcher_with(config());
    let ran = Arc::new(Mutex::new(Vec::new()));
    // The first job holds the one slot until every other job is queued behind it.
    let release = Arc::new(tokio::sync::Notify::new());
    let (log, gate) = (ran.clone(), release.clone());
    let _w = Worker::builder()
        .name("ordered")
        .server(d.addr.to_string())
        .slots(1)
        .function("Echo", move |job: Job| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                let text = String::from_utf8_lossy(job.params()).into_owned();
                if text == "n0" {
                    gate.notified().await;
                }
                log.lock().unwrap().push(text);
                Ok(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(&d, "Echo").await;
    let client = client(&d).await;
    let mut ids = Vec::new();
    for (name, priority) in [
        ("n0", Priority::Normal),
        ("n1", Priority::Normal),
        ("n2", Priority::Normal),
        ("l1", Priority::Low),
        ("h1", Priority::High),
        ("h2", Priority::High),
    ] {
        let options = SubmitOptions::default().priority(priority);
        ids.push(client.submit("Echo", name, options).await.unwrap().id);
        if name == "n0" {
            // n0 holds the slot before the others arrive.
            let deadline = Instant::now() + PATIENCE;
            while client.job_status(&ids[0]).await.unwrap().state != JobState::Running {
                assert!(Instant::now() < deadline, "n0 never started");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    release.notify_one();
    for id in &ids {
        let done = client.wait_job(id, PATIENCE).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }
    assert_eq!(*ran.lock().unwrap(), ["n0", "h1", "h2", "n1", "n2", "l1"]);

    let asked = Instant::now();
    let options = SubmitOptions::default().delay(Duration::from_millis(1000));
    let id = client.submit("Echo", "later", options).await.unwrap().id;
    assert_eq!(
        client.job_status(&id).await.unwrap().state,
        JobState::Queued
    );
    let done = client.wait_job(&id, PATIENCE).await.unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"later"[..]));
    assert!(asked.elapsed() >= Duration::from_millis(1000));
    d.stop().await;
}

/// 20 submitters, each on its own connection, submit with one unique key at once: one
/// execution, one id, and every one of them reads the same result.
#[actix_rt::test]
async fn twenty_submitters_with_one_unique_key_share_one_execution() {
    let d = start_dispatcher_with(config());
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let _w = Worker::builder()
        .name("slow")
        .server(d.addr.to_string())
        .function("Slow", move |job: Job| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(&d, "Slow").await;
    let clients = join_all((0..20).map(|_| client(&d))).await;
    let options = SubmitOptions::default().unique_key("report-2026-12");
    let submitted: Vec<Submitted> =
        join_all((clients.iter()).map(|c| c.submit("Slow", "r", options.clone())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(submitted.iter().filter(|s| !s.shared).count(), 1);
    let id = &submitted[0].id;
    assert!(submitted.iter().all(|s| &s.id == id), "{submitted:?}");
    let done = join_all(clients.iter().map(|c| c.wait_job(id, PATIENCE))).await;
    for status in done {
        let status = status.unwrap();
        assert_eq!(status.state, JobState::Succeeded);
        assert_eq!(status.result.as_deref(), Some(&b"r"[..]));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one execution");
    d.stop().await;
}

/// A queued job is cancelled (and never runs); cancelling it again, or a running job, is
/// `NotCancellable`.
#[actix_rt::test]
async fn queued_jobs_cancel_and_running_ones_do_not() {
    let d = start_dispatcher_with(config());
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let _w = Worker::builder()
        .name("held")
        .server(d.addr.to_string())
        .function("Held", move |job: Job| {
            let (e, r) = (e.clone(), r.clone());
            async move {
                e.notify_one();
                r.notified().await;
                Ok(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(&d, "Held").await;
    let client = client(&d).await;
    let running = (client.submit("Held", "now", SubmitOptions::default()))
        .await
        .unwrap()
        .id;
    let delayed = SubmitOptions::default().delay(Duration::from_secs(60));
    let later = client.submit("Held", "never", delayed).await.unwrap().id;
    let cancelled = client.cancel_job(&later).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    let again = client.cancel_job(&later).await.unwrap_err();
    assert!(
        matches!(&again, ClientError::NotCancellable(m) if m.contains("cancelled")),
        "{again}"
    );
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .unwrap();
    let busy = client.cancel_job(&running).await.unwrap_err();
    assert!(
        matches!(&busy, ClientError::NotCancellable(m) if m.contains("running")),
        "{busy}"
    );
    release.notify_one();
    let done = client.wait_job(&running, PATIENCE).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        client.job_status(&later).await.unwrap().state,
        JobState::Cancelled
    );
    d.stop().await;
}

/// Bad input gets a clear error and changes nothing: unknown ids are `JobNotFound` (status
/// and cancel), a bad option `BadRequest` naming it, a full store `StoreFull` naming the
/// limit; a v1 client has no background jobs.
#[actix_rt::test]
async fn bad_ids_bad_options_and_a_full_store_are_clear_errors() {
    let mut config = config();
    config.jobs.max_stored_jobs = 2;
    let d = start_dispatcher_with(config);
    let client = client(&d).await;
    for id in ["nosuchnode-1", "junk", ""] {
        let err = client.job_status(id).await.unwrap_err();
        assert!(matches!(err, ClientError::JobNotFound(_)), "{id}: {err}");
        let err = client.cancel_job(id).await.unwrap_err();
        assert!(matches!(err, ClientError::JobNotFound(_)), "{id}: {err}");
    }
    let err = client.job_status("junk").await.unwrap_err();
    assert_eq!(err.to_string(), "job not found: junk");
    let zero = SubmitOptions::default().max_attempts(0);
    let err = client.submit("Any", "1", zero).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BadRequest(m) if m.starts_with("max-attempts")),
        "{err}"
    );
    let urgent = SubmitOptions::default().meta("nmid-priority", "urgent");
    let err = client.submit("Any", "1", urgent).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BadRequest(m) if m.starts_with("priority")),
        "{err}"
    );
    let callback = SubmitOptions::default().callback_url("http://169.254.169.254/latest");
    let err = client.submit("Any", "1", callback).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BadRequest(m) if m.starts_with("callback-url")),
        "{err}"
    );
    // No worker serves `Any`: the jobs wait, filling the store.
    for params in ["1", "2"] {
        (client.submit("Any", params, SubmitOptions::default()))
            .await
            .unwrap();
    }
    let full = (client.submit("Any", "3", SubmitOptions::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&full, ClientError::StoreFull(m) if m.contains("jobs.max_stored_jobs")),
        "{full}"
    );
    let v1 = (Client::builder(d.addr.to_string()).protocol(Protocol::V1))
        .connect()
        .await
        .unwrap();
    let err = v1.submit("Any", "1", SubmitOptions::default()).await;
    assert!(
        matches!(&err, Err(ClientError::Unsupported(m)) if m.contains("tagged")),
        "{err:?}"
    );
    d.stop().await;
}

fn token(name: &str, roles: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        secret: format!("{name}-secret-0123456789"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        functions: vec!["Echo".to_owned()],
        ..TokenConfig::default()
    }
}

async fn client_with_token(d: &TestDispatcher, name: &str) -> Client {
    (Client::builder(d.addr.to_string()).token(format!("{name}-secret-0123456789")))
        .connect()
        .await
        .unwrap()
}

/// With auth on, a job is its submitter's: another client token gets `JobNotFound` for it
/// (status and cancel) and its unique key is its own; a token with the admin role sees it;
/// a function outside the grant, or no token at all, is `Forbidden` at submission.
#[actix_rt::test]
async fn with_auth_another_tokens_job_is_not_found() {
    let mut config = config();
    config.auth.enabled = true;
    config.auth.tokens = vec![
        token("a", &["client"]),
        token("b", &["client"]),
        token("ops", &["client", "admin"]),
    ];
    let d = start_dispatcher_with(config);
    let (a, b, ops) = (
        client_with_token(&d, "a").await,
        client_with_token(&d, "b").await,
        client_with_token(&d, "ops").await,
    );
    let options = SubmitOptions::default()
        .delay(Duration::from_secs(60))
        .unique_key("k");
    let id = a.submit("Echo", "1", options.clone()).await.unwrap().id;
    assert_eq!(a.job_status(&id).await.unwrap().state, JobState::Queued);
    let err = b.job_status(&id).await.unwrap_err();
    assert!(matches!(err, ClientError::JobNotFound(_)), "{err}");
    let err = b.cancel_job(&id).await.unwrap_err();
    assert!(matches!(err, ClientError::JobNotFound(_)), "{err}");
    let other = b.submit("Echo", "1", options).await.unwrap();
    assert!(!other.shared, "b's unique key is b's own");
    assert_ne!(other.id, id);
    assert_eq!(ops.job_status(&id).await.unwrap().state, JobState::Queued);
    let err = (a.submit("NotGranted", "1", SubmitOptions::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Forbidden(_)), "{err}");
    assert_eq!(a.cancel_job(&id).await.unwrap().state, JobState::Cancelled);
    // Without a token: told why, not just closed on.
    let nobody = Client::builder(d.addr.to_string()).build();
    let err = (nobody.submit("Echo", "1", SubmitOptions::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Forbidden(m) if m.contains("authentication required")),
        "{err}"
    );
    d.stop().await;
}

/// The wire contract: a raw `C_SUBMIT` is answered `S_SUBMITTED` with its request id and the
/// job id, and a raw `C_JOB_STATUS` with `wait_ms` is answered `S_JOB_STATUS` once the job
/// ended, with the result; the options in its metadata do not reach the worker.
#[actix_rt::test]
async fn raw_submit_and_status_frames_are_answered_by_request_id() {
    let d = start_dispatcher_with(config());
    let seen_meta = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_meta.clone();
    let _w = Worker::builder()
        .name("meta")
        .server(d.addr.to_string())
        .function("Meta", move |job: Job| {
            let seen = seen.clone();
            async move {
                let keys = job.all_metadata().iter().map(|(k, _)| k.clone());
                seen.lock().unwrap().extend(keys);
                Ok(Bytes::from_static(b"done"))
            }
        })
        .start()
        .unwrap();
    serving(&d, "Meta").await;
    let mut peer = Peer::connect(d.addr).await;
    peer.send(Frame::CSubmit(TaggedCall {
        id: 77,
        timeout_ms: 0,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: bytes("Meta"),
        params: bytes("x"),
        meta: vec![
            (bytes("nmid-priority"), bytes("high")),
            (bytes("tenant"), bytes("acme")),
        ],
    }))
    .await;
    let job_id = match peer.recv().await {
        Frame::SSubmitted(SSubmitted {
            request_id: 77,
            shared: false,
            job_id,
        }) => job_id,
        other => panic!("expected S_SUBMITTED for 77, got {other:?}"),
    };
    peer.send(Frame::CJobStatus(CJobStatus {
        request_id: 78,
        wait_ms: 20_000,
        job_id: job_id.clone(),
    }))
    .await;
    match peer.recv().await {
        Frame::SJobStatus(s) => {
            assert_eq!(s.request_id, 78);
            assert_eq!(s.state, JobStateCode::SUCCEEDED, "{s:?}");
            assert_eq!((s.attempts, &s.output[..]), (1, &b"done"[..]));
            assert_eq!(&s.function[..], b"Meta");
            assert!(s.error_code.is_empty());
        }
        other => panic!("expected S_JOB_STATUS for 78, got {other:?}"),
    }
    let keys = seen_meta.lock().unwrap().clone();
    assert!(keys.iter().any(|k| &k[..] == b"tenant"), "{keys:?}");
    assert!(!keys.iter().any(|k| k.starts_with(b"nmid-")), "{keys:?}");
    peer.send(Frame::CJobStatus(CJobStatus {
        request_id: 79,
        wait_ms: 0,
        job_id: bytes("elsewhere-3"),
    }))
    .await;
    match peer.recv().await {
        Frame::SCallError(e) => {
            assert_eq!((e.request_id, e.code), (79, ErrorCode::JOB_NOT_FOUND));
            let message = String::from_utf8_lossy(&e.message);
            assert!(message.contains("another dispatcher's"), "{message}");
        }
        other => panic!("expected S_CALL_ERROR for 79, got {other:?}"),
    }
    d.stop().await;
}

/// A v1 client connection is unaffected by background jobs: while a tagged client submits
/// on its own connection, the v1 connection's call is answered `S_RETURN_DATA` exactly as
/// before, and nothing else ever arrives on it.
#[actix_rt::test]
async fn a_v1_client_connection_is_unaffected() {
    let d = start_dispatcher_with(config());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _w = echo_worker(&d, 4, ran).await;
    let tagged = client(&d).await;
    let mut v1 = Peer::connect(d.addr).await;
    let ids =
        join_all((0..10).map(|i| tagged.submit("Echo", format!("{i}"), SubmitOptions::default())))
            .await;
    v1.call("Echo", b"\x81\xa1a\x01").await;
    match v1.recv().await {
        Frame::SReturnData(ret) => {
            assert_eq!(
                (&ret.function[..], &ret.params[..]),
                (&b"Echo"[..], &b"\x81\xa1a\x01"[..])
            );
            assert_eq!(&ret.ret[..], b"\x81\xa1a\x01");
        }
        other => panic!("expected S_RETURN_DATA, got {other:?}"),
    }
    for id in ids {
        let done = tagged.wait_job(&id.unwrap().id, PATIENCE).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }
    v1.assert_client_got_nothing("no job frame reaches a v1 connection")
        .await;
    d.stop().await;
}

/// Requests waiting for the jobs' actor count against the connection's outbound bound as
/// calls in flight do: with `tcp.max_outbound_bytes` at 2 KiB, three status requests
/// waiting for a job hold the connection's later frames back until they are answered.
#[actix_rt::test]
async fn waiting_status_requests_count_against_the_connections_bound() {
    let mut config = config();
    config.tcp.max_outbound_bytes = 2048;
    let d = start_dispatcher_with(config);
    let client = client(&d).await;
    let options = SubmitOptions::default().delay(Duration::from_secs(60));
    let id = client.submit("Nobody", "1", options).await.unwrap().id;
    let mut peer = Peer::connect(d.addr).await;
    let status = |request_id, wait_ms| {
        Frame::CJobStatus(CJobStatus {
            request_id,
            wait_ms,
            job_id: Bytes::from(id.clone()),
        })
    };
    for request_id in 1..=3 {
        peer.send(status(request_id, 1500)).await;
    }
    peer.send(status(4, 0)).await;
    let mut answered = Vec::new();
    for _ in 0..4 {
        match peer.recv().await {
            Frame::SJobStatus(s) => answered.push(s.request_id),
            other => panic!("expected S_JOB_STATUS, got {other:?}"),
        }
    }
    assert_eq!(
        answered[3], 4,
        "the immediate request waited behind the held ones: {answered:?}"
    );
    d.stop().await;
}

/// A callback URL submitted over the nmid protocol is checked against `jobs.callback_allow`
/// as HTTP's `X-Callback-Url` is: outside it `BadRequest`, inside it the job's final state is
/// POSTed there, signed, naming the job.
#[actix_rt::test]
async fn a_callback_url_submitted_by_the_client_is_allow_listed_and_called() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hooks", receiver.local_addr().unwrap());
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut socket, _) = receiver.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then as many body bytes as Content-Length says.
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the callback request ended early");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length = (text.lines())
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if request.len() >= end + 4 + length {
                break;
            }
        }
        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        socket.write_all(reply.as_bytes()).await.unwrap();
        let _ = got_tx.send(String::from_utf8_lossy(&request).into_owned());
    });
    let mut config = config();
    config.jobs.callback_allow = vec![format!("{base}/")];
    config.jobs.callback_secret = "test-callback-secret-0123456789".to_owned().into();
    let d = start_dispatcher_with(config);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _w = echo_worker(&d, 1, ran).await;
    let client = client(&d).await;
    let outside = SubmitOptions::default().callback_url("http://169.254.169.254/latest");
    let err = client.submit("Echo", "1", outside).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BadRequest(m) if m.starts_with("callback-url")),
        "{err}"
    );
    let inside = SubmitOptions::default().callback_url(format!("{base}/done"));
    let id = client.submit("Echo", "1", inside).await.unwrap().id;
    let request = tokio::time::timeout(PATIENCE, got_rx)
        .await
        .unwrap()
        .unwrap();
    let lower = request.to_ascii_lowercase();
    assert!(request.starts_with("POST /hooks/done "), "{request}");
    assert!(lower.contains(&format!("x-call-id: {id}")), "{request}");
    assert!(lower.contains("x-nmid-signature: sha256="), "{request}");
    assert!(lower.contains("x-nmid-job-state: succeeded"), "{request}");
    d.stop().await;
}

/// `wait_job` does not spin when the dispatcher cannot hold its waits (`jobs.max_waiters`
/// taken, here 0): it pauses between early answers, so waiting 1.5 s for a delayed job
/// sends a handful of status requests, not thousands (counted in bytes through a proxy).
#[actix_rt::test]
async fn wait_job_paces_itself_when_the_dispatcher_cannot_hold_waits() {
    use std::sync::atomic::AtomicU64;
    let mut config = config();
    config.jobs.max_waiters = 0;
    let d = start_dispatcher_with(config);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _w = echo_worker(&d, 1, ran).await;
    // A proxy counting the bytes the client sends.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let upstream = d.addr;
    tokio::spawn(async move {
        let (client_side, _) = proxy.accept().await.unwrap();
        let server_side = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client_side.into_split();
        let (mut server_read, mut server_write) = server_side.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        let mut buf = [0u8; 4096];
        loop {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            counted.fetch_add(n as u64, Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let client = Client::connect(proxy_addr.to_string()).await.unwrap();
    let options = SubmitOptions::default().delay(Duration::from_millis(1500));
    let id = client.submit("Echo", "paced", options).await.unwrap().id;
    let done = client.wait_job(&id, PATIENCE).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    // One status request is 12 + 16 + the id's length bytes; 40 of them is ~2 KiB.
    let bytes = sent.load(Ordering::SeqCst);
    assert!(bytes < 4096, "{bytes} bytes of status requests in 1.5 s");
}

/// A running background job's status through the client carries its worker's latest
/// progress (`S_JOB_STATUS` numerator/denominator).
#[actix_rt::test]
async fn a_running_jobs_status_carries_its_progress_to_the_client() {
    let d = start_dispatcher_with(config());
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let _w = Worker::builder()
        .name("progress")
        .server(d.addr.to_string())
        .function("Steps", move |job: Job| {
            let gate = gate.clone();
            async move {
                job.progress(3, 4);
                gate.notified().await;
                Ok(Bytes::from_static(b"done"))
            }
        })
        .start()
        .unwrap();
    serving(&d, "Steps").await;
    let client = client(&d).await;
    let id = (client.submit("Steps", "go", SubmitOptions::default()))
        .await
        .unwrap()
        .id;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = client.job_status(&id).await.unwrap();
        if status.progress == Some((3, 4)) {
            assert_eq!(status.state, JobState::Running, "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress in {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.notify_one();
    let done = client.wait_job(&id, PATIENCE).await.unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"done"[..]));
    d.stop().await;
}
