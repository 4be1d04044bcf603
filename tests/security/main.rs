//! Who may connect, serve and call (`[security]`, `[auth]`, `[tls]`), against real
//! dispatchers on 127.0.0.1: the worker hijack of issue 13 refused, address lists by source
//! address (127.0.0.1 against 127.0.0.2), the AUTH frame right, wrong and missing, v1 grants
//! by address and by TLS certificate name, HTTP 401/403, TLS and mutual TLS on both
//! listeners with certificates made here (rcgen), reloads of lists, grants and certificates
//! (in-process and by SIGHUP to the `nmid` binary), `--demo`, `nmidctl` and `nmid-faas` with
//! TLS and tokens.
//!
//! This file holds the shared helpers and the nmid protocol's auth tests; `tls.rs` TLS,
//! `binary.rs` the `nmid` binary, `routes.rs` HTTP authorization by route, `attacks.rs` the
//! attacks of issue 18 replayed, `fairness.rs` the frame budget, `forwarding.rs` callers
//! across a peer hop, `logs.rs` what peers can put in the log.

mod attacks;
mod binary;
#[path = "../cluster_support/mod.rs"]
mod cluster_support;
#[path = "../common/mod.rs"]
mod common;
mod fairness;
mod forwarding;
mod holding;
mod logs;
mod rereview;
mod review;
mod routes;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::Process;
use common::{bytes, start_dispatcher_with_http, Peer, TestDispatcher, PATIENCE};
use futures_util::{SinkExt, StreamExt};
use nmid::client::{Client, ClientError, Protocol};
use nmid::codec::{Frame, NmidCodec, SAuthResult, TaggedCall};
use nmid::config::{Config, TokenConfig, V1PeerConfig};
use nmid::retstruct::RetStruct;
use nmid::security::ClientTls;
use nmid::worker::{Job, JobError, Worker};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

/// Secrets of the tests' tokens (16 bytes or more, as the dispatcher requires).
const WORKER_SECRET: &str = "worker-secret-0123456789";
const CLIENT_SECRET: &str = "client-secret-0123456789";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const INTRUDER_SECRET: &str = "intruder-secret-0123456789";

fn token(name: &str, secret: &str, roles: &[&str], functions: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        secret: secret.to_owned(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        ..TokenConfig::default()
    }
}

/// Auth on: a worker token for `ToUpper`, a client token for `ToUpper`, an admin token, and
/// an intruder's worker token for `Other*` only.
fn auth_config() -> Config {
    let mut config = Config::default();
    config.auth.enabled = true;
    config.auth.tokens = vec![
        token("upper-worker", WORKER_SECRET, &["worker"], &["ToUpper"]),
        token("web", CLIENT_SECRET, &["client"], &["ToUpper"]),
        token("ops", ADMIN_SECRET, &["admin"], &[]),
        token("intruder", INTRUDER_SECRET, &["worker"], &["Other*"]),
    ];
    config
}

/// `{"name": text}` as msgpack, as nmid's SDKs send params.
fn name_params(text: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Name<'a> {
        name: &'a str,
    }
    rmp_serde::to_vec_named(&Name { name: text }).unwrap()
}

/// The `Data` of a RetStruct result, as text.
fn data_of(ret: &[u8]) -> String {
    let ret = RetStruct::decode(ret).expect("a RetStruct");
    assert_eq!(ret.code, 0, "{}", ret.msg);
    String::from_utf8_lossy(&ret.data).into_owned()
}

/// Starts a `ToUpper` worker (the demo's function) presenting `secret`.
fn upper_worker(dispatcher: &TestDispatcher, secret: &str) -> nmid::worker::WorkerHandle {
    Worker::builder()
        .name("upper")
        .server(dispatcher.addr.to_string())
        .token(secret.to_owned())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap()
}

async fn served(dispatcher: &TestDispatcher, function: &str, workers: usize) {
    dispatcher
        .wait_for(&format!("{function} served by {workers}"), |s| {
            s.function(function).map_or(0, |f| f.workers) == workers
        })
        .await;
}

/// A TCP connection to `addr` from the source address `from` (127.0.0.1 or 127.0.0.2).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.expect("connect")
}

/// Whether the dispatcher closes `stream` within [`PATIENCE`] (reads end), rather than
/// keeping it open.
async fn closed(stream: &mut TcpStream) -> bool {
    closed_within(stream, PATIENCE).await
}

/// Whether the dispatcher closes `stream` within `patience`.
async fn closed_within(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A v1 worker on `stream` registering `function`: the frame it got back.
async fn register_v1(stream: TcpStream, function: &str) -> (Framed<TcpStream, NmidCodec>, Frame) {
    let mut framed = Framed::new(stream, NmidCodec::default());
    framed
        .send(Frame::WAddFunc {
            function: bytes(function),
        })
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, framed.next())
        .await
        .expect("an answer")
        .expect("a frame")
        .expect("a valid frame");
    (framed, answer)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_of(dispatcher: &TestDispatcher) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", dispatcher.http_url()))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Issue 13's attack, with auth on: a worker that names itself like the real one and
/// registers `ToUpper` is refused and never receives a job; an unauthenticated v1 peer and a
/// tagged one with a wrong secret are closed; 200 authenticated callers each get their own
/// answer.
#[actix_rt::test]
async fn the_worker_hijack_fails_with_auth_on() {
    let dispatcher = start_dispatcher_with_http(auth_config());
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;

    let stolen = Arc::new(AtomicUsize::new(0));
    let seen = stolen.clone();
    let hijacker = Worker::builder()
        .name("upper")
        .server(dispatcher.addr.to_string())
        .token(INTRUDER_SECRET)
        .function("ToUpper", move |_job: Job| {
            seen.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, JobError>(RetStruct::ok("PWNED")) }
        })
        .start()
        .unwrap();
    // Without a token: closed at its first frame.
    let mut v1 = Peer::connect(dispatcher.addr).await;
    v1.send(Frame::WSetName {
        name: bytes("upper"),
    })
    .await;
    v1.expect_closed().await;
    // With a wrong secret: told so, then closed.
    let mut tagged = Peer::connect(dispatcher.addr).await;
    tagged
        .send(Frame::WAuth {
            secret: bytes("not-the-worker-secret-at-all"),
        })
        .await;
    assert_eq!(
        tagged.recv().await,
        Frame::SAuthResult(SAuthResult {
            code: SAuthResult::REFUSED,
            message: bytes("no token has this secret"),
        })
    );
    tagged.expect_closed().await;

    let deadline = Instant::now() + PATIENCE;
    while metric(
        &metrics_of(&dispatcher).await,
        r#"nmid_security_refusals_total{reason="serve"}"#,
    ) < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the hijacker's registration was not refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = Client::builder(dispatcher.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let secret = format!("secret-{i}");
            let ret = client.call("ToUpper", name_params(&secret)).await.unwrap();
            assert_eq!(data_of(&ret), secret.to_uppercase());
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(
        stolen.load(Ordering::Relaxed),
        0,
        "the hijacker received jobs"
    );
    assert_eq!(
        dispatcher
            .snapshot()
            .await
            .function("ToUpper")
            .unwrap()
            .workers,
        1
    );
    hijacker.stop().await;
    worker.stop().await;
    dispatcher.stop().await;
}

/// The AUTH frame: the right secret is answered ACCEPTED with the grant's name (bytes as
/// documented) and calls follow; a wrong one REFUSED and closed; none at all (no v1 grant)
/// closed at the first frame; a worker's token used by a client REFUSED for the role; a
/// call outside the grant `forbidden` (tagged code 10); the client library's errors.
#[actix_rt::test]
async fn the_auth_frame_right_wrong_and_missing() {
    let dispatcher = start_dispatcher_with_http(auth_config());
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;

    let mut right = Peer::connect(dispatcher.addr).await;
    right
        .send(Frame::CAuth {
            secret: bytes(CLIENT_SECRET),
        })
        .await;
    let accepted = right.recv_raw_frame().await;
    let expected: &[&[u8]] = &[
        &[0, 0, 0, 1],   // conn_type: server
        &[0, 0, 0, 121], // S_AUTH_RESULT
        &[0, 0, 0, 17],  // body_len
        &[0, 0, 0, 0],   // code: accepted
        &[0, 0, 0, 9],
        b"token web",
    ];
    assert_eq!(accepted, expected.concat());
    let call = |id, function: &str| {
        Frame::CCall(TaggedCall {
            id,
            timeout_ms: 5000,
            params_type: nmid::codec::ParamsType::MSGPACK,
            handle_type: nmid::codec::HANDLE_TYPE_ENCODE,
            function: bytes(function),
            params: Bytes::from(name_params("tagged")),
            meta: Vec::new(),
        })
    };
    right.send(call(7, "ToUpper")).await;
    match right.recv().await {
        Frame::SCallResult(result) => {
            assert_eq!(result.id, 7);
            assert_eq!(data_of(&result.ret), "TAGGED");
        }
        other => panic!("expected the result, got {other:?}"),
    }
    right.send(call(8, "Elsewhere")).await;
    match right.recv().await {
        Frame::SCallError(error) => {
            assert_eq!((error.request_id, error.code.0), (8, 10), "{error:?}");
        }
        other => panic!("expected forbidden, got {other:?}"),
    }

    let mut wrong = Peer::connect(dispatcher.addr).await;
    wrong
        .send(Frame::CAuth {
            secret: bytes("client-secret-0123456780"),
        })
        .await;
    assert!(matches!(wrong.recv().await, Frame::SAuthResult(r) if r.code == SAuthResult::REFUSED));
    wrong.expect_closed().await;

    let mut missing = Peer::connect(dispatcher.addr).await;
    missing.send(call(1, "ToUpper")).await;
    missing.expect_closed().await;

    let mut role = Peer::connect(dispatcher.addr).await;
    role.send(Frame::CAuth {
        secret: bytes(WORKER_SECRET),
    })
    .await;
    assert_eq!(
        role.recv().await,
        Frame::SAuthResult(SAuthResult {
            code: SAuthResult::REFUSED,
            message: bytes("token upper-worker has no client role"),
        })
    );
    role.expect_closed().await;

    let refused = Client::builder(dispatcher.addr.to_string())
        .token("0123456789-wrong-secret")
        .connect()
        .await;
    assert_eq!(
        refused.err(),
        Some(ClientError::Unauthorized(
            "no token has this secret".to_owned()
        ))
    );
    let client = Client::builder(dispatcher.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        client.call("Elsewhere", name_params("x")).await,
        Err(ClientError::Forbidden(_))
    ));
    let text = metrics_of(&dispatcher).await;
    assert!(
        metric(&text, r#"nmid_security_refusals_total{reason="bad_token"}"#) >= 2.0,
        "{text}"
    );
    assert!(metric(&text, r#"nmid_security_refusals_total{reason="no_grant"}"#) >= 1.0);
    assert!(metric(&text, r#"nmid_security_refusals_total{reason="role"}"#) >= 1.0);
    assert!(metric(&text, r#"nmid_security_refusals_total{reason="call"}"#) >= 2.0);
    worker.stop().await;
    dispatcher.stop().await;
}

/// v1 peers cannot send a token: `[[auth.v1_peers]]` grants them by address. A v1 client
/// from 127.0.0.1 calls what its grant covers (and gets ERROR outside it); a v1 worker may
/// register only its functions.
#[actix_rt::test]
async fn v1_peers_are_granted_by_address() {
    let mut config = auth_config();
    config.auth.v1_peers = vec![V1PeerConfig {
        name: "php".to_owned(),
        cidrs: vec!["127.0.0.1/32".to_owned()],
        roles: vec!["client".to_owned(), "worker".to_owned()],
        functions: vec!["Legacy*".to_owned(), "ToUpper".to_owned()],
        ..V1PeerConfig::default()
    }];
    let dispatcher = start_dispatcher_with_http(config);
    let (mut worker, answer) = register_v1(
        connect_from("127.0.0.1", dispatcher.addr).await,
        "LegacyEcho",
    )
    .await;
    assert_eq!(answer, Frame::Ok);
    worker
        .send(Frame::WAddFunc {
            function: bytes("Secret"),
        })
        .await
        .unwrap();
    assert_eq!(
        worker.next().await.unwrap().unwrap(),
        Frame::Error,
        "outside its grant"
    );
    served(&dispatcher, "LegacyEcho", 1).await;
    assert!(dispatcher.snapshot().await.function("Secret").is_none());

    let mut client = Peer::connect(dispatcher.addr).await;
    client.call("LegacyEcho", &name_params("v1")).await;
    let job = match worker.next().await.unwrap().unwrap() {
        Frame::SGetData(job) => job,
        other => panic!("expected a job, got {other:?}"),
    };
    worker
        .send(Frame::WReturnData(nmid::codec::WReturnData {
            function: job.function.clone(),
            params: job.params.clone(),
            ret: Bytes::from(RetStruct::ok("echoed").encode()),
            job_id: job.job_id.clone(),
        }))
        .await
        .unwrap();
    assert!(matches!(client.recv().await, Frame::SReturnData(_)));
    client.call("Forbidden", &name_params("v1")).await;
    assert_eq!(client.recv().await, Frame::Error);
    dispatcher.stop().await;
}

/// `security.deny` by source address: a peer from 127.0.0.2 is closed at once on the nmid
/// port and on HTTP (at accept, before any request is read), while 127.0.0.1 is served;
/// `security.allow` the other way round.
#[actix_rt::test]
async fn allow_and_deny_by_source_address() {
    let mut config = Config::default();
    config.security.deny = vec!["127.0.0.2".to_owned()];
    let dispatcher = start_dispatcher_with_http(config);
    let mut denied = connect_from("127.0.0.2", dispatcher.addr).await;
    assert!(closed(&mut denied).await, "127.0.0.2 was not closed");
    let (_worker, answer) =
        register_v1(connect_from("127.0.0.1", dispatcher.addr).await, "F").await;
    assert_eq!(answer, Frame::Ok);
    let http = |from: &str| {
        reqwest::Client::builder()
            .local_address(from.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let url = format!("{}/healthz", dispatcher.http_url());
    let refused = http("127.0.0.2").get(&url).send().await;
    assert!(refused.is_err(), "127.0.0.2 was answered: {refused:?}");
    assert_eq!(
        http("127.0.0.1")
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let text = reqwest::get(format!("{}/metrics", dispatcher.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&text, r#"nmid_security_refusals_total{reason="address"}"#) >= 2.0,
        "{text}"
    );
    dispatcher.stop().await;

    let mut config = Config::default();
    config.security.allow = vec!["127.0.0.1/32".to_owned(), "::1".to_owned()];
    let dispatcher = start_dispatcher_with_http(config);
    let mut outside = connect_from("127.0.0.2", dispatcher.addr).await;
    assert!(
        closed(&mut outside).await,
        "127.0.0.2 is not in the allow list"
    );
    let (_worker, answer) =
        register_v1(connect_from("127.0.0.1", dispatcher.addr).await, "F").await;
    assert_eq!(answer, Frame::Ok);
    dispatcher.stop().await;
}

/// HTTP with auth on: no credentials or a wrong secret 401 (with `WWW-Authenticate` and a
/// request id), a client token outside its grant or on the admin API 403, an admin token on the admin API
/// and the dashboard (Basic, as a browser sends it) 200, the probes open; `/metrics` open
/// only with `auth.open_metrics`.
#[actix_rt::test]
async fn http_answers_401_and_403() {
    let dispatcher = start_dispatcher_with_http(auth_config());
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;
    let base = dispatcher.http_url();
    let http = reqwest::Client::new();
    let call = |secret: Option<&str>, function: &str| {
        let mut request = http
            .post(format!("{base}/call/{function}"))
            .header("content-type", "application/json")
            .body(r#"{"name":"http"}"#);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        request.send()
    };
    let none = call(None, "ToUpper").await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert!(
        none.headers().contains_key("x-request-id"),
        "a refused call carries a request id too"
    );
    let challenge = none.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("Bearer") && challenge.contains("Basic"),
        "{challenge}"
    );
    assert_eq!(
        call(Some("wrong-secret-0123456789"), "ToUpper")
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let ok = call(Some(CLIENT_SECRET), "ToUpper").await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.unwrap(), "HTTP");
    let outside = call(Some(CLIENT_SECRET), "Elsewhere").await.unwrap();
    assert_eq!(outside.status().as_u16(), 403);
    let body: serde_json::Value = serde_json::from_str(&outside.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "forbidden");

    let get = |path: &str, secret: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        request.send()
    };
    assert_eq!(
        get("/api/v1/workers", Some(CLIENT_SECRET))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        get("/api/v1/workers", None)
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let workers = get("/api/v1/workers", Some(ADMIN_SECRET)).await.unwrap();
    assert_eq!(workers.status().as_u16(), 200);
    assert_eq!(get("/metrics", None).await.unwrap().status().as_u16(), 401);
    assert_eq!(get("/healthz", None).await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz", None).await.unwrap().status().as_u16(), 200);
    let dashboard = http
        .get(format!("{base}/dashboard"))
        .basic_auth("anyone", Some(ADMIN_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status().as_u16(), 200);
    // The admin token cannot call: it has no client role.
    assert_eq!(
        call(Some(ADMIN_SECRET), "ToUpper")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    worker.stop().await;
    dispatcher.stop().await;

    let mut config = auth_config();
    config.auth.open_metrics = true;
    let dispatcher = start_dispatcher_with_http(config);
    let metrics = reqwest::get(format!("{}/metrics", dispatcher.http_url()))
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let api = reqwest::get(format!("{}/api/v1/stats", dispatcher.http_url()))
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 401, "only /metrics is opened");
    dispatcher.stop().await;
}

/// A reload (what SIGHUP does) applies new lists and grants to the connections already
/// open: a peer whose address is now denied is closed, one whose token was removed is
/// closed, a worker whose grant no longer covers its function is closed; the others keep
/// their connections and go on working. A bad configuration changes nothing.
#[actix_rt::test]
async fn a_reload_rechecks_open_connections() {
    let dispatcher = start_dispatcher_with_http(auth_config());
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;
    let client = Client::builder(dispatcher.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("a")).await.unwrap()),
        "A"
    );

    let mut bad = auth_config();
    bad.security.deny = vec!["not-an-address".to_owned()];
    assert!(dispatcher.handle().reload_security(&bad).is_err());

    // Widen the client's grant, narrow the worker's: the worker goes, the client stays.
    let mut next = auth_config();
    next.auth.tokens[0].functions = vec!["Other".to_owned()];
    next.auth.tokens[1].functions = vec!["*".to_owned()];
    dispatcher.handle().reload_security(&next).unwrap();
    served(&dispatcher, "ToUpper", 0).await;
    assert!(matches!(
        client.call("ToUpper", name_params("b")).await,
        Err(ClientError::NoWorker)
    ));

    // Revoke the client's token: its connection is closed within about a second.
    let mut revoked = next.clone();
    revoked.auth.tokens.remove(1);
    dispatcher.handle().reload_security(&revoked).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.call("ToUpper", name_params("c")).await {
            Err(ClientError::Unauthorized(_)) => break,
            other => assert!(Instant::now() < deadline, "still served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics_of(&dispatcher).await;
    assert!(
        metric(&text, r#"nmid_security_refusals_total{reason="revoked"}"#) >= 2.0,
        "{text}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// A constant-time lookup: finding the first token's secret takes as long as finding none
/// (an early exit would be several times faster with eight tokens).
#[test]
fn token_lookup_time_does_not_depend_on_a_match() {
    let mut config = auth_config();
    for i in 0..4 {
        config.auth.tokens.push(token(
            &format!("t{i}"),
            &format!("filler-secret-{i:04}-0123456789"),
            &["client"],
            &["*"],
        ));
    }
    let policy = nmid::security::Policy::from_config(&config).unwrap();
    let auth = policy.auth.as_ref().unwrap();
    let time = |secret: &[u8]| {
        let started = Instant::now();
        for _ in 0..200 {
            std::hint::black_box(auth.token(std::hint::black_box(secret)));
        }
        started.elapsed()
    };
    let (mut first, mut none) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        first.push(time(WORKER_SECRET.as_bytes()));
        none.push(time(b"worker-secret-0123456780"));
    }
    // The fastest of each: what the lookup costs undisturbed. The other tests of this
    // binary and a loaded machine only add time, to some runs (the medians once differed
    // 2-10x, either way, with nothing else changed).
    let (first, none) = (first.iter().min().unwrap(), none.iter().min().unwrap());
    let (first, none) = (first.as_secs_f64(), none.as_secs_f64());
    let ratio = first.max(none) / first.min(none);
    assert!(
        ratio < 1.5,
        "fastest {first:.6} s with a match, {none:.6} s without"
    );
}
