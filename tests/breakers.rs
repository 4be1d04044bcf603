//! Circuit breakers (`[breaker]`) end to end, against an in-process dispatcher over real TCP
//! on 127.0.0.1 with real workers (the worker library) whose functions fail on demand: a
//! failing worker's breaker opens and its calls go to the healthy worker; with every breaker
//! open, callers get `BREAKER` in each protocol (v1 bytes, tagged `breaker_open`, HTTP 503)
//! and queued calls are answered at once; the breaker half-opens after its timeout and a
//! good trial closes it; a call that outlives its deadline on a worker counts as a failure;
//! the admin API and the metrics show it all; config errors name the key. (Each rule's
//! opening, half-opening and closing is pinned by the unit tests of `src/breaker.rs`; the
//! placement rules by `src/scheduler/breaker_tests.rs`.)

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{post_json, start_dispatcher_with_http, Peer, TestDispatcher, PATIENCE};
use nmid::breaker::BreakerState;
use nmid::client::{CallOptions, Client, ClientError};
use nmid::config::Config;
use nmid::worker::{Job, JobError, Worker, WorkerHandle};

/// Breakers on: rule 1, three failures in a row open, one trial, half a second open.
fn config() -> Config {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.breaker.enabled = true;
    config.breaker.rule = 1;
    config.breaker.consecutive_errors = 3;
    config.breaker.half_open_requests = 1;
    config.breaker.open_timeout_ms = 500;
    config
}

/// A worker serving `F` that fails (tagged `W_JOB_ERROR`) while its switch is on, counting
/// the jobs it gets.
struct Flaky {
    handle: WorkerHandle,
    failing: Arc<AtomicBool>,
    jobs: Arc<AtomicU64>,
}

impl Flaky {
    fn start(dispatcher: &TestDispatcher, name: &str, failing: bool) -> Self {
        let failing = Arc::new(AtomicBool::new(failing));
        let jobs = Arc::new(AtomicU64::new(0));
        let (fail, count) = (failing.clone(), jobs.clone());
        let handle = Worker::builder()
            .name(name)
            .server(dispatcher.addr.to_string())
            .function("F", move |job: Job| {
                let (fail, count) = (fail.clone(), count.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    match fail.load(Ordering::SeqCst) {
                        true => Err(JobError::new("broken")),
                        false => Ok(job.params().clone()),
                    }
                }
            })
            .start()
            .expect("the worker starts");
        Self {
            handle,
            failing,
            jobs,
        }
    }

    fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::SeqCst)
    }

    fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }
}

async fn serving(dispatcher: &TestDispatcher, workers: usize) {
    dispatcher
        .wait_for(&format!("{workers} workers of F"), |s| {
            s.function("F").is_some_and(|f| f.workers == workers)
        })
        .await;
}

/// The breaker state of the worker named `name` for `F`, as the registry reports it.
async fn state_of(dispatcher: &TestDispatcher, name: &str) -> BreakerState {
    let snapshot = dispatcher.snapshot().await;
    let worker = (snapshot.workers.iter())
        .find(|w| w.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no worker {name}"));
    (worker.breakers.iter())
        .find(|(function, _)| function == "F")
        .map(|(_, state)| *state)
        .expect("a breaker state for F")
}

/// A failing worker's breaker opens after three failures in a row; from then on every call
/// goes to the healthy worker. Once healed and past the open timeout, a trial call closes
/// the breaker and the worker gets calls again. The admin API and the metrics follow.
#[actix_rt::test]
async fn a_failing_workers_calls_go_to_the_healthy_worker_until_its_breaker_closes() {
    let dispatcher = start_dispatcher_with_http(config());
    let flaky = Flaky::start(&dispatcher, "flaky", true);
    let healthy = Flaky::start(&dispatcher, "healthy", false);
    serving(&dispatcher, 2).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let mut failed = 0;
    for _ in 0..30 {
        match client.call("F", Bytes::from_static(b"x")).await {
            Ok(_) => {}
            Err(ClientError::WorkerError(_)) => failed += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((failed, flaky.jobs(), healthy.jobs()), (3, 3, 27));
    assert_eq!(state_of(&dispatcher, "flaky").await, BreakerState::Open);
    assert_eq!(state_of(&dispatcher, "healthy").await, BreakerState::Closed);
    let workers = get_json(&dispatcher, "/api/v1/workers").await;
    let flaky_view = (workers.as_array().unwrap().iter())
        .find(|w| w["name"] == "flaky")
        .unwrap();
    assert_eq!(flaky_view["breakers"]["F"], "open", "{workers}");
    let functions = get_json(&dispatcher, "/api/v1/functions").await;
    assert_eq!(functions[0]["breakers_open"], 1, "{functions}");
    let metrics = get_text(&dispatcher, "/metrics").await;
    for line in [
        r#"nmid_breakers_open{function="F"} 1"#,
        r#"nmid_breaker_transitions_total{function="F",to="open"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    flaky.heal();
    let deadline = Instant::now() + PATIENCE;
    while state_of(&dispatcher, "flaky").await != BreakerState::Closed {
        assert!(Instant::now() < deadline, "the breaker did not close");
        client.call("F", Bytes::from_static(b"x")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(flaky.jobs(), 4, "exactly one trial closed it");
    let before = flaky.jobs();
    for _ in 0..10 {
        client.call("F", Bytes::from_static(b"x")).await.unwrap();
    }
    assert!(flaky.jobs() > before, "the healed worker takes calls again");
    let metrics = get_text(&dispatcher, "/metrics").await;
    for to in ["half_open", "closed"] {
        let line = format!(r#"nmid_breaker_transitions_total{{function="F",to="{to}"}} 1"#);
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    flaky.handle.stop().await;
    healthy.handle.stop().await;
    dispatcher.stop().await;
}

/// With every worker's breaker open, a v1 caller gets the 12 bytes of `BREAKER` (data type
/// 19), a tagged caller `BreakerOpen`, an HTTP caller 503 `breaker_open` (nmid's gateway:
/// `PDT_BREAKER`), all at once; after the open timeout a good trial closes it again.
#[actix_rt::test]
async fn with_every_breaker_open_callers_get_breaker_in_their_protocol() {
    let dispatcher = start_dispatcher_with_http(config());
    let only = Flaky::start(&dispatcher, "only", true);
    serving(&dispatcher, 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    for _ in 0..3 {
        let failed = client.call("F", Bytes::from_static(b"x")).await;
        assert!(
            matches!(failed, Err(ClientError::WorkerError(_))),
            "{failed:?}"
        );
    }
    let refused = client.call("F", Bytes::from_static(b"x")).await;
    assert_eq!(refused, Err(ClientError::BreakerOpen));

    let mut v1 = Peer::connect(dispatcher.addr).await;
    v1.call("F", b"\x80").await;
    assert_eq!(
        v1.recv_raw_frame().await,
        [0, 0, 0, 1, 0, 0, 0, 19, 0, 0, 0, 0]
    );

    let (status, headers, body) = post(&dispatcher, "/call/F", &[]).await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["code"], "breaker_open");
    assert!(json["error"].as_str().unwrap().contains("F"), "{json}");
    assert!(headers.get("retry-after").is_none());
    let gateway = [
        ("N-NMID-RequestType", "HTTP_DO_WORK"),
        ("N-NMID-FunctionName", "F"),
    ];
    let (status, headers, _) = post(&dispatcher, "/any", &gateway).await;
    assert_eq!(status, 503);
    assert_eq!(
        headers.get("n-nmid-messagestatustype").unwrap(),
        "PDT_BREAKER"
    );
    assert_eq!(only.jobs(), 3, "no refused call reached the worker");
    let metrics = get_text(&dispatcher, "/metrics").await;
    let refused = r#"nmid_calls_total{function="F",outcome="breaker_open"} 4"#;
    assert!(metrics.lines().any(|l| l == refused), "{metrics}");

    only.heal();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.call("F", Bytes::from_static(b"x")).await {
            Ok(_) => break,
            Err(ClientError::BreakerOpen) => {}
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "no trial call within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state_of(&dispatcher, "only").await, BreakerState::Closed);
    client.call("F", Bytes::from_static(b"x")).await.unwrap();
    only.handle.stop().await;
    dispatcher.stop().await;
}

/// Calls waiting in the queue when the last breaker of their function opens are answered
/// `BreakerOpen` at once, not left to their deadline.
#[actix_rt::test]
async fn queued_calls_are_answered_breaker_when_the_last_breaker_opens() {
    let mut config = config();
    config.breaker.consecutive_errors = 1;
    let dispatcher = start_dispatcher_with_http(config);
    // The worker fails its job once the test lets it: when the other two calls are queued
    // (not after a fixed time, which a loaded machine could take to queue them).
    let failing = Arc::new(tokio::sync::Semaphore::new(0));
    let worker = Worker::builder()
        .name("slow-failing")
        .server(dispatcher.addr.to_string())
        .slots(1)
        .function("F", {
            let failing = failing.clone();
            move |_job: Job| {
                let failing = failing.clone();
                async move {
                    failing
                        .acquire()
                        .await
                        .expect("the gate stays open")
                        .forget();
                    Err::<Bytes, _>(JobError::new("broken"))
                }
            }
        })
        .start()
        .unwrap();
    serving(&dispatcher, 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let long = CallOptions::default().timeout(Duration::from_secs(20));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (client, long) = (client.clone(), long.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client.call_with("F", Bytes::from_static(b"x"), long).await;
                (result, started.elapsed())
            })
        })
        .collect();
    dispatcher
        .wait_for("two calls queued", |s| {
            s.function("F").is_some_and(|f| f.queued == 2)
        })
        .await;
    failing.add_permits(3);
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let breaker = (results.iter())
        .filter(|(result, _)| *result == Err(ClientError::BreakerOpen))
        .count();
    assert_eq!(breaker, 2, "{results:?}");
    assert!(
        results.iter().all(|(_, took)| *took < PATIENCE),
        "answered at once, not at the deadline: {results:?}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// A call whose deadline passes while a worker holds it counts as that worker's failure
/// (reported by the worker's session before the worker answers): two such calls open the
/// breaker, and the next call is refused `BreakerOpen`.
#[actix_rt::test]
async fn calls_that_outlive_their_deadline_on_a_worker_open_its_breaker() {
    let mut config = config();
    config.breaker.consecutive_errors = 2;
    config.breaker.open_timeout_ms = 60_000;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("stuck")
        .server(dispatcher.addr.to_string())
        .slots(8)
        .function("F", |job: Job| async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    serving(&dispatcher, 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let short = CallOptions::default().timeout(Duration::from_millis(100));
    for _ in 0..2 {
        let result = client
            .call_with("F", Bytes::from_static(b"x"), short.clone())
            .await;
        assert_eq!(result, Err(ClientError::Timeout));
    }
    dispatcher
        .wait_for("the stuck worker's breaker open", |s| {
            s.function("F").is_some_and(|f| f.breakers_open == 1)
        })
        .await;
    let refused = client.call_with("F", Bytes::from_static(b"x"), short).await;
    assert_eq!(refused, Err(ClientError::BreakerOpen));
    worker.stop().await;
    dispatcher.stop().await;
}

/// Bad `[breaker]` values are refused with the key named, whether or not breakers are on.
#[test]
fn bad_breaker_settings_are_refused_by_key() {
    for (key, value) in [
        ("breaker.rule", "0"),
        ("breaker.rule", "5"),
        ("breaker.consecutive_errors", "0"),
        ("breaker.error_percent", "0"),
        ("breaker.error_percent", "101"),
        ("breaker.min_requests", "0"),
        ("breaker.window_ms", "10"),
        ("breaker.half_open_requests", "0"),
        ("breaker.open_timeout_ms", "0"),
    ] {
        let err = Config::load(None, &[(key, value.to_owned())]).unwrap_err();
        assert!(
            err.to_string().contains(&format!("config key `{key}`")),
            "{key} = {value}: {err}"
        );
    }
    assert!(
        Config::default().breaker_settings().is_none(),
        "off by default"
    );
    let on = Config::from_toml("[breaker]\nenabled = true\nrule = 4\n").unwrap();
    let settings = on.breaker_settings().unwrap();
    assert_eq!(settings.rule, nmid::breaker::Rule::Both);
    assert_eq!(settings.open_timeout, Duration::from_secs(30));
}

/// `POST path` of the dispatcher's HTTP port with an empty JSON body and `headers`.
async fn post(
    dispatcher: &TestDispatcher,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, String) {
    post_json(&format!("{}{path}", dispatcher.http_url()), headers).await
}

async fn get_text(dispatcher: &TestDispatcher, path: &str) -> String {
    common::get_text(&format!("{}{path}", dispatcher.http_url()))
        .await
        .1
}

async fn get_json(dispatcher: &TestDispatcher, path: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(dispatcher, path).await).expect("JSON")
}
