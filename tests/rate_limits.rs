//! Rate limits (`[rate_limit]`) end to end, against an in-process dispatcher over real TCP on
//! 127.0.0.1: the configured rates hold within 10% over seconds of heavy offered load (per
//! function, and per client with clients on two source addresses), the refusal in each
//! protocol (v1 `RATELIMIT` bytes, tagged `rate_limited`, HTTP 429 with `Retry-After`), the
//! counters, the bound on per-client state, and config errors by key.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    post_json, start_dispatcher_with, start_dispatcher_with_http, Peer, TestDispatcher, PATIENCE,
};
use nmid::client::{Client, ClientError};
use nmid::codec::Frame;
use nmid::config::{Config, FunctionRateLimitConfig, TokenConfig};
use nmid::worker::{Job, JobError, Worker, WorkerHandle};

/// How long the rate tests offer load.
const WINDOW: Duration = Duration::from_secs(3);

fn limited(per_second: u32, burst: u32) -> Config {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.rate_limit.functions.push(FunctionRateLimitConfig {
        name: "Echo".to_owned(),
        per_second,
        burst,
    });
    config
}

async fn echo(job: Job) -> Result<Bytes, JobError> {
    Ok(job.params().clone())
}

/// A worker of 64 slots serving `Echo` and `Other`, registered when this returns.
async fn echo_worker(dispatcher: &TestDispatcher) -> WorkerHandle {
    let worker = Worker::builder()
        .name("echo")
        .server(dispatcher.addr.to_string())
        .slots(64)
        .function("Echo", echo)
        .function("Other", echo)
        .start()
        .expect("the worker starts");
    dispatcher
        .wait_for("Echo and Other served", |s| {
            ["Echo", "Other"]
                .iter()
                .all(|f| s.function(f).is_some_and(|f| f.workers == 1))
        })
        .await;
    worker
}

/// The calls a limit admits over `secs` seconds of steady calling: its burst, then its
/// rate.
/// When the callers of one bucket asked its limiter: every call's start, and the last
/// answer.
#[derive(Debug, Default)]
struct Asking {
    starts: Vec<Instant>,
    last_answer: Option<Instant>,
}

impl Asking {
    /// A call starts now.
    fn ask(&mut self) {
        self.starts.push(Instant::now());
    }

    /// A call was answered now.
    fn answered(&mut self) {
        self.last_answer = Some(Instant::now());
    }

    /// Two callers' askings as one.
    fn merge(mut self, other: Asking) -> Asking {
        self.starts.extend(other.starts);
        self.last_answer = self.last_answer.max(other.last_answer);
        self
    }
}

/// Asserts that `admitted` calls are, within 10%, what a limiter of `per_second` and
/// `burst` admits to callers that asked it from `from` on, as `asking` records. At most:
/// the burst plus `per_second` a second until the last answer. At least: the same, less
/// what pauses in the asking let overflow the bucket (a pause longer than the bucket takes
/// to fill loses the tokens past it: the test's own runtime starved on a loaded machine).
/// So a slow machine cannot fail the test, and a limiter admitting too few or too many does.
fn assert_rate(
    admitted: u64,
    per_second: u32,
    burst: u32,
    from: Instant,
    mut asking: Asking,
    what: &str,
) {
    let (rate, burst) = (f64::from(per_second), f64::from(burst));
    let until = asking.last_answer.expect("a call was answered");
    asking.starts.sort();
    let fills_in = burst / rate;
    let mut paused = 0.0;
    let mut last = from;
    for &start in asking.starts.iter().chain([&until]) {
        paused += (start.saturating_duration_since(last).as_secs_f64() - fills_in).max(0.0);
        last = last.max(start);
    }
    let asked_for = until.duration_since(from).as_secs_f64();
    let most = burst + rate * asked_for;
    let least = burst + rate * (asked_for - paused);
    println!(
        "{what}: {admitted} calls admitted in {asked_for:.2} s; {least:.0} to {most:.0} admissible (asking paused {paused:.2} s)"
    );
    let admitted = admitted as f64;
    assert!(
        admitted <= most * 1.1,
        "{what}: {admitted} calls admitted, more than {most:.0} +10%"
    );
    assert!(
        admitted >= least * 0.9,
        "{what}: {admitted} calls admitted, fewer than {least:.0} -10%"
    );
}

/// A function's limit admits its burst plus `per_second` a second, within 10%, under an
/// offered load many times the limit (16 pipelined callers over one tagged connection).
#[actix_rt::test]
async fn a_function_limit_admits_its_rate_within_ten_percent() {
    let (per_second, burst) = (200, 100);
    let dispatcher = start_dispatcher_with(limited(per_second, burst));
    let worker = echo_worker(&dispatcher).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let (admitted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (client, admitted, refused) = (client.clone(), admitted.clone(), refused.clone());
            tokio::spawn(async move {
                let mut asking = Asking::default();
                while started.elapsed() < WINDOW {
                    asking.ask();
                    let answer = client.call("Echo", Bytes::from_static(b"x")).await;
                    asking.answered();
                    match answer {
                        Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                        Err(ClientError::RateLimited) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            // Still many times the limit: ~16,000 calls a second offered.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            0
                        }
                        Err(other) => panic!("unexpected {other}"),
                    };
                }
                asking
            })
        })
        .collect();
    let mut asking = Asking::default();
    for caller in callers {
        asking = asking.merge(caller.await.unwrap());
    }
    let admitted = admitted.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    assert!(
        refused > admitted,
        "the offered load was not over the limit: {refused} refused"
    );
    assert_rate(admitted, per_second, burst, started, asking, "Echo");
    // A function without a limit of its own is not limited.
    for _ in 0..500 {
        client
            .call("Other", Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    worker.stop().await;
    dispatcher.stop().await;
}

/// The per-client limit gives each client address its own rate, within 10%: two hosts
/// (127.0.0.1 and 127.0.0.2), each calling over four v1 connections at once, each get their
/// burst plus `per_second` a second, whatever the other does.
#[actix_rt::test]
async fn each_client_address_gets_its_own_rate_within_ten_percent() {
    let (per_second, burst) = (100, 50);
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.rate_limit.per_client_per_second = per_second;
    config.rate_limit.per_client_burst = burst;
    let dispatcher = start_dispatcher_with(config);
    let worker = echo_worker(&dispatcher).await;
    let hosts: [IpAddr; 2] = [[127, 0, 0, 1].into(), [127, 0, 0, 2].into()];
    let counts: Vec<Arc<AtomicU64>> = hosts.iter().map(|_| Arc::default()).collect();
    let started = Instant::now();
    let mut callers = Vec::new();
    for (host, admitted) in hosts.iter().zip(&counts) {
        for _ in 0..4 {
            let mut peer = Peer::connect_from(*host, dispatcher.addr).await;
            let admitted = admitted.clone();
            callers.push(tokio::spawn(async move {
                let mut asking = Asking::default();
                while started.elapsed() < WINDOW {
                    asking.ask();
                    peer.call("Echo", b"\x80").await;
                    let answer = peer.recv().await;
                    asking.answered();
                    match answer {
                        Frame::SReturnData(_) => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Frame::RateLimit => tokio::time::sleep(Duration::from_millis(1)).await,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                asking
            }));
        }
    }
    let mut askings: Vec<Asking> = hosts.iter().map(|_| Asking::default()).collect();
    for (i, caller) in callers.into_iter().enumerate() {
        let host = i / 4;
        askings[host] = std::mem::take(&mut askings[host]).merge(caller.await.unwrap());
    }
    for ((host, admitted), asking) in hosts.iter().zip(&counts).zip(askings) {
        let admitted = admitted.load(Ordering::Relaxed);
        assert_rate(
            admitted,
            per_second,
            burst,
            started,
            asking,
            &host.to_string(),
        );
    }
    worker.stop().await;
    dispatcher.stop().await;
}

/// Over the limit, a v1 client gets the 12 bytes of `RATELIMIT` (data type 18) and nothing
/// else, and a tagged client `rate_limited`; both are counted by function and scope.
#[actix_rt::test]
async fn over_the_limit_v1_gets_ratelimit_bytes_and_tagged_gets_rate_limited() {
    let dispatcher = start_dispatcher_with_http(limited(1, 1));
    let worker = echo_worker(&dispatcher).await;
    let mut v1 = Peer::connect(dispatcher.addr).await;
    v1.call("Echo", b"\x80").await;
    assert!(matches!(v1.recv().await, Frame::SReturnData(_)));
    v1.call("Echo", b"\x80").await;
    let ratelimit = [0, 0, 0, 1, 0, 0, 0, 18, 0, 0, 0, 0];
    assert_eq!(v1.recv_raw_frame().await, ratelimit);
    v1.assert_client_got_nothing("more than RATELIMIT").await;
    let tagged = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let refused = tagged.call("Echo", Bytes::from_static(b"x")).await;
    assert_eq!(refused, Err(ClientError::RateLimited));
    let metrics = get(&dispatcher, "/metrics").await.1;
    let counted = r#"nmid_rate_limited_total{function="Echo",scope="function"} 2"#;
    assert!(metrics.contains(counted), "{metrics}");
    assert!(
        metrics.contains(r#"nmid_calls_total{function="Echo",outcome="rate_limited"} 2"#),
        "{metrics}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// Over HTTP a refused call is 429 `rate_limited` with `Retry-After` in whole seconds (from
/// the limiter's wait, at least 1) and a message naming the limit: the function's, then the
/// client's; nmid's gateway says `PDT_RATELIMIT`.
#[actix_rt::test]
async fn over_the_limit_http_answers_429_with_retry_after() {
    let mut config = limited(1, 1);
    config.rate_limit.per_client_per_second = 2;
    config.rate_limit.per_client_burst = 2;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = echo_worker(&dispatcher).await;
    let url = |function: &str| format!("{}/call/{function}", dispatcher.http_url());
    let (status, _, _) = post_json(&url("Echo"), &[]).await;
    assert_eq!(status, 200);
    let (status, headers, body) = post_json(&url("Echo"), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("rate_limit.function"));
    // The gateway: the client's third call (its burst is 2) is refused by its own limit.
    let gateway = [
        ("N-NMID-RequestType", "HTTP_DO_WORK"),
        ("N-NMID-FunctionName", "Other"),
    ];
    let (status, headers, body) =
        post_json(&format!("{}/any", dispatcher.http_url()), &gateway).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        headers.get("n-nmid-messagestatustype").unwrap(),
        "PDT_RATELIMIT"
    );
    assert!(body.contains("rate_limit.per_client_per_second"), "{body}");
    let metrics = get(&dispatcher, "/metrics").await.1;
    for scope in ["function", "client"] {
        let line = format!(r#"nmid_rate_limited_total{{function="Echo",scope="{scope}"}}"#);
        let line = line.replace("Echo", if scope == "client" { "Other" } else { "Echo" });
        assert!(
            metrics.contains(&format!("{line} 1")),
            "{line} in {metrics}"
        );
    }
    worker.stop().await;
    dispatcher.stop().await;
}

/// Per-client state is bounded: past `max_clients` buckets, new addresses share one (the
/// first of them gets its burst, the others are refused), and buckets of idle clients are
/// dropped every `cleanup_interval_ms` (`nmid_rate_limit_clients` shows how many are held),
/// after which an address gets a bucket of its own again.
#[actix_rt::test]
async fn client_buckets_are_bounded_and_dropped_when_idle() {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.rate_limit.per_client_per_second = 1;
    config.rate_limit.per_client_burst = 1;
    config.rate_limit.max_clients = 3;
    config.rate_limit.cleanup_interval_ms = 100;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = echo_worker(&dispatcher).await;
    let host = |last: u8| IpAddr::from([127, 0, 0, last]);
    let mut answers = Vec::new();
    for last in 1..=6 {
        let mut peer = Peer::connect_from(host(last), dispatcher.addr).await;
        peer.call("Echo", b"\x80").await;
        answers.push(matches!(peer.recv().await, Frame::SReturnData(_)));
    }
    // Three buckets of their own, then one shared bucket of burst 1 for hosts 4, 5, 6.
    assert_eq!(answers, [true, true, true, true, false, false]);
    wait_for_metric(&dispatcher, "nmid_rate_limit_clients 4").await;
    wait_for_metric(&dispatcher, "nmid_rate_limit_clients 0").await;
    let mut peer = Peer::connect_from(host(6), dispatcher.addr).await;
    peer.call("Echo", b"\x80").await;
    assert!(matches!(peer.recv().await, Frame::SReturnData(_)));
    worker.stop().await;
    dispatcher.stop().await;
}

/// With `[auth]` on, a client is its token, not its address: two tokens calling from the
/// same host have a bucket each, and one token's connections (TCP and HTTP) share its bucket.
#[actix_rt::test]
async fn with_auth_on_a_client_is_its_token() {
    const WORKER: &str = "worker-secret-0123456789";
    const ALICE: &str = "alice-secret-0123456789";
    const BOB: &str = "bob-secret-0123456789";
    let token = |name: &str, secret: &str, role: &str| TokenConfig {
        name: name.to_owned(),
        secret: secret.to_owned(),
        roles: vec![role.to_owned()],
        functions: vec!["*".to_owned()],
        ..TokenConfig::default()
    };
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.rate_limit.per_client_per_second = 1;
    config.rate_limit.per_client_burst = 3;
    config.auth.enabled = true;
    config.auth.tokens = vec![
        token("worker", WORKER, "worker"),
        token("alice", ALICE, "client"),
        token("bob", BOB, "client"),
    ];
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("echo")
        .server(dispatcher.addr.to_string())
        .token(WORKER.to_owned())
        .function("Echo", echo)
        .start()
        .unwrap();
    dispatcher
        .wait_for("Echo served", |s| {
            s.function("Echo").is_some_and(|f| f.workers == 1)
        })
        .await;
    let connect = |secret: &'static str| {
        Client::builder(dispatcher.addr.to_string())
            .token(secret)
            .connect()
    };
    let (alice, alice_again, bob) = (
        connect(ALICE).await.unwrap(),
        connect(ALICE).await.unwrap(),
        connect(BOB).await.unwrap(),
    );
    async fn call(client: &Client) -> Result<Bytes, ClientError> {
        client.call("Echo", Bytes::from_static(b"x")).await
    }
    // Alice's burst of 3 spent over two connections, then her HTTP call is refused too.
    call(&alice).await.unwrap();
    call(&alice_again).await.unwrap();
    call(&alice).await.unwrap();
    assert_eq!(call(&alice_again).await, Err(ClientError::RateLimited));
    let url = format!("{}/call/Echo", dispatcher.http_url());
    let alice_http = ("authorization", format!("Bearer {ALICE}"));
    let (status, _, body) = post_json(&url, &[(alice_http.0, alice_http.1.as_str())]).await;
    assert_eq!(status, 429, "{body}");
    // Bob, from the same address, has his own bucket: by address he would be refused.
    for _ in 0..3 {
        call(&bob).await.unwrap();
    }
    assert_eq!(call(&bob).await, Err(ClientError::RateLimited));
    worker.stop().await;
    dispatcher.stop().await;
}

/// Bad `[rate_limit]` values are refused with the key named.
#[test]
fn bad_rate_limit_settings_are_refused_by_key() {
    let cases = [
        (
            "[[rate_limit.function]]\nname = \"F\"\nper_second = 0\n",
            "rate_limit.function.per_second",
        ),
        (
            "[[rate_limit.function]]\nname = \"\"\nper_second = 5\n",
            "rate_limit.function.name",
        ),
        (
            "[[rate_limit.function]]\nname = \"F\"\nper_second = 5\n\
             [[rate_limit.function]]\nname = \"F\"\nper_second = 6\n",
            "rate_limit.function.name",
        ),
        (
            "[[rate_limit.function]]\nname = \"F\"\nper_second = 1000000001\n",
            "rate_limit.function.per_second",
        ),
        (
            "[rate_limit]\nper_client_burst = 5\n",
            "rate_limit.per_client_burst",
        ),
        (
            "[rate_limit]\nper_client_per_second = 1000000001\n",
            "rate_limit.per_client_per_second",
        ),
        ("[rate_limit]\nmax_clients = 0\n", "rate_limit.max_clients"),
        (
            "[rate_limit]\ncleanup_interval_ms = 5\n",
            "rate_limit.cleanup_interval_ms",
        ),
    ];
    for (toml, key) in cases {
        let err = Config::from_toml(toml).unwrap_err().to_string();
        assert!(
            err.contains(&format!("config key `{key}`")),
            "{toml}: {err}"
        );
    }
    let err = Config::from_toml("[[rate_limit.function]]\nname = \"F\"\nper_sec = 5\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("per_sec"), "an unknown key is named: {err}");
    // A good file: the limits it sets, with burst defaulting to one second's worth.
    let config = Config::from_toml(
        "[rate_limit]\nper_client_per_second = 7\n\
         [[rate_limit.function]]\nname = \"F\"\nper_second = 5\n",
    )
    .unwrap();
    let settings = config.rate_limit_settings();
    assert_eq!(settings.functions.len(), 1);
    assert_eq!(settings.functions[0].burst.get(), 5);
    assert_eq!(
        settings.per_client.map(|(r, b)| (r.get(), b.get())),
        Some((7, 7))
    );
    // The defaults limit nothing.
    assert!(!Config::default().rate_limit_settings().any());
}

/// `GET path` of the dispatcher's HTTP port: status and body text.
async fn get(dispatcher: &TestDispatcher, path: &str) -> (u16, String) {
    common::get_text(&format!("{}{path}", dispatcher.http_url())).await
}

/// Polls `/metrics` until it has the line `line`, or fails after [`PATIENCE`].
async fn wait_for_metric(dispatcher: &TestDispatcher, line: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = get(dispatcher, "/metrics").await.1;
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
