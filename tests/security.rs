//! Who may connect, serve and call (`[security]`, `[auth]`, `[tls]`), against real
//! dispatchers on 127.0.0.1: the worker hijack of issue 13 refused, address lists by source
//! address (127.0.0.1 against 127.0.0.2), the AUTH frame right, wrong and missing, v1 grants
//! by address and by TLS certificate name, HTTP 401/403, TLS and mutual TLS on both
//! listeners with certificates made here (rcgen), reloads of lists, grants and certificates
//! (in-process and by SIGHUP to the `nmid` binary), `--demo`, `nmidctl` and `nmid-faas` with
//! TLS and tokens.

mod cluster_support;
mod common;

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
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + PATIENCE;
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
/// port and answered 403 on HTTP, while 127.0.0.1 is served; `security.allow` the other way
/// round.
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
    let refused = http("127.0.0.2").get(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: serde_json::Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "forbidden_address");
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
/// request id), a
/// client token outside its grant or on the admin API 403, an admin token on the admin API
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

/// A CA of the test's own, and certificates it signs, as PEM files in a directory of the
/// test's own.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nmid-pki-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("nmid test CA {name}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn ca_file(&self) -> String {
        self.path("ca.pem")
    }

    /// A certificate for `names` (IPs or DNS names) with `usage`, as `<file>.pem` and
    /// `<file>.key`; returns both paths.
    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{file}.pem")),
            self.path(&format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn server(&self, file: &str) -> (String, String) {
        self.issue(
            file,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, file: &str, name: &str) -> (String, String) {
        self.issue(file, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Trusting this CA, with no client certificate.
    fn trust(&self) -> ClientTls {
        ClientTls {
            ca_file: self.ca_file(),
            ..ClientTls::default()
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config` with TLS on from `pki`'s server certificate.
fn with_tls(mut config: Config, pki: &Pki) -> Config {
    let (cert, key) = pki.server("server");
    config.tls.cert_file = cert;
    config.tls.key_file = key;
    config
}

/// A raw TLS connection to `addr` trusting `tls`; the certificate the server presented.
async fn tls_connect(
    addr: SocketAddr,
    tls: &ClientTls,
) -> std::io::Result<(nmid::net::TlsStream, Vec<u8>)> {
    let connector = tls.connector().unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let stream = connector.connect(&addr.to_string(), tcp).await?;
    let presented = match &stream {
        tokio_rustls::TlsStream::Client(s) => {
            s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        }
        tokio_rustls::TlsStream::Server(_) => unreachable!(),
    };
    Ok((stream, presented))
}

/// A GET over a raw TLS connection: the status line.
async fn https_get(addr: SocketAddr, tls: &ClientTls, path: &str) -> std::io::Result<String> {
    let (mut stream, _) = tls_connect(addr, tls).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("no response"))??;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// TLS on both listeners: the client and worker libraries connect with the test CA and
/// call as usual, HTTPS answers; a plaintext peer is closed (no `allow_plaintext`), and a
/// client that does not trust the CA fails its handshake.
#[actix_rt::test]
async fn tls_on_the_nmid_port_and_http() {
    let pki = Pki::new("tls");
    let dispatcher = start_dispatcher_with_http(with_tls(Config::default(), &pki));
    let worker = Worker::builder()
        .server(dispatcher.addr.to_string())
        .tls(pki.trust())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    served(&dispatcher, "ToUpper", 1).await;
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("tls")).await.unwrap()),
        "TLS"
    );
    let v1 = Client::builder(format!("localhost:{}", dispatcher.addr.port()))
        .protocol(Protocol::V1)
        .tls(pki.trust())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&v1.call("ToUpper", name_params("by name")).await.unwrap()),
        "BY NAME"
    );

    let plain = Peer::connect(dispatcher.addr).await;
    let mut plain = plain;
    plain.call("ToUpper", &name_params("plain")).await;
    plain.expect_closed().await;
    let stranger = Pki::new("stranger");
    let untrusted = Client::builder(dispatcher.addr.to_string())
        .tls(stranger.trust())
        .connect()
        .await;
    assert!(
        matches!(untrusted, Err(ClientError::Connect { .. })),
        "{untrusted:?}"
    );

    let status = https_get(dispatcher.http.unwrap(), &pki.trust(), "/healthz")
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let text = {
        let (mut stream, _) = tls_connect(dispatcher.http.unwrap(), &pki.trust())
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(
        metric(&text, r#"nmid_security_refusals_total{reason="tls"}"#) >= 2.0,
        "{text}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// `tls.allow_plaintext`: nmid's v1 SDKs (plaintext) and TLS clients on the same port; a
/// token is refused on a plaintext connection.
#[actix_rt::test]
async fn plaintext_beside_tls_when_allowed() {
    let pki = Pki::new("plaintext");
    let mut config = with_tls(Config::default(), &pki);
    config.tls.allow_plaintext = true;
    let dispatcher = start_dispatcher_with_http(config);
    let mut v1_worker = Peer::worker(dispatcher.addr, "plain-worker", &["Echo"]).await;
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .connect()
        .await
        .unwrap();
    let call = tokio::spawn(async move { client.call("Echo", name_params("both")).await });
    let job = v1_worker.recv_job().await;
    v1_worker
        .answer(&job, &RetStruct::ok("echo").encode())
        .await;
    assert_eq!(data_of(&call.await.unwrap().unwrap()), "echo");
    dispatcher.stop().await;

    // With auth on too, a token on a plaintext connection is refused: it crossed in clear.
    let mut config = with_tls(auth_config(), &pki);
    config.tls.allow_plaintext = true;
    let dispatcher = start_dispatcher_with_http(config);
    let in_clear = Client::builder(dispatcher.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert_eq!(
        in_clear.err(),
        Some(ClientError::Unauthorized(
            "tokens are taken over TLS only (this dispatcher has TLS on)".to_owned()
        ))
    );
    let over_tls = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert!(over_tls.is_ok());
    dispatcher.stop().await;
}

/// Mutual TLS: without a client certificate the handshake fails (nmid port and HTTPS);
/// with one the CA signed it succeeds; and its DNS name is an identity `auth.v1_peers`
/// grants: a v1 worker with no token registers by its certificate.
#[actix_rt::test]
async fn mutual_tls_and_certificate_names_as_identities() {
    let pki = Pki::new("mtls");
    let mut config = with_tls(auth_config(), &pki);
    config.tls.client_ca_file = pki.ca_file();
    config.auth.v1_peers = vec![V1PeerConfig {
        cert_names: vec!["legacy-worker.internal".to_owned()],
        roles: vec!["worker".to_owned()],
        functions: vec!["ToUpper".to_owned()],
        ..V1PeerConfig::default()
    }];
    let dispatcher = start_dispatcher_with_http(config);
    let no_cert = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert!(no_cert.is_err(), "connected without a client certificate");
    assert!(
        https_get(dispatcher.http.unwrap(), &pki.trust(), "/healthz")
            .await
            .is_err()
    );

    let (cert, key) = pki.client("legacy", "legacy-worker.internal");
    let with_cert = ClientTls {
        ca_file: pki.ca_file(),
        cert_file: cert,
        key_file: key,
        ..ClientTls::default()
    };
    let legacy = Worker::builder()
        .name("legacy")
        .server(dispatcher.addr.to_string())
        .protocol(Protocol::V1)
        .tls(with_cert.clone())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    served(&dispatcher, "ToUpper", 1).await;
    let (cert, key) = pki.client("web", "web.internal");
    let client_tls = ClientTls {
        ca_file: pki.ca_file(),
        cert_file: cert,
        key_file: key,
        ..ClientTls::default()
    };
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(client_tls.clone())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("mtls")).await.unwrap()),
        "MTLS"
    );
    // A certificate alone is no grant for a tagged client: web.internal is not in v1_peers.
    let anonymous = Client::builder(dispatcher.addr.to_string())
        .tls(client_tls.clone())
        .connect()
        .await
        .unwrap();
    assert!(anonymous.call("ToUpper", name_params("x")).await.is_err());
    assert_eq!(
        https_get(dispatcher.http.unwrap(), &client_tls, "/healthz")
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );
    legacy.stop().await;
    dispatcher.stop().await;
}

/// A configuration file for the `nmid` binary, rewritten in place between SIGHUPs.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(pki: &Pki, text: &str) -> Self {
        let file = Self {
            path: pki.dir.join("nmid.toml"),
        };
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        let next = self.path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(next, &self.path).unwrap();
    }

    fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

/// The `nmid` binary with auth and TLS on and `--demo`: the demo worker serves (through the
/// internal door), a client with the CA and a token calls it. SIGHUP then applies a new
/// certificate (new handshakes see it, an open connection keeps working), a new deny list
/// (an open connection from 127.0.0.2 is closed, 127.0.0.1 stays), and a broken file
/// changes nothing.
#[actix_rt::test]
async fn sighup_reloads_certificates_and_lists_of_the_binary() {
    let pki = Pki::new("sighup");
    let (cert, key) = pki.server("first");
    let settings = |cert: &str, key: &str, deny: &str| {
        format!(
            r#"
[security]
deny = [{deny}]
[auth]
enabled = true
[[auth.tokens]]
name = "web"
secret = "{CLIENT_SECRET}"
roles = ["client"]
functions = ["ToUpper"]
[[auth.v1_peers]]
cidrs = ["127.0.0.0/8"]
roles = ["worker"]
functions = ["A"]
[tls]
cert_file = "{cert}"
key_file = "{key}"
allow_plaintext = true
"#
        )
    };
    let file = ConfigFile::new(&pki, &settings(&cert, &key, ""));
    let mut nmid = Process::start(&["--config", &file.arg(), "--demo"]);
    let connect = |addr: String| {
        Client::builder(addr)
            .tls(pki.trust())
            .token(CLIENT_SECRET)
            .connect()
    };
    let deadline = Instant::now() + PATIENCE;
    let client = loop {
        let client = connect(nmid.addr.to_string()).await.unwrap();
        match client.call("ToUpper", name_params("demo")).await {
            Ok(ret) => {
                assert_eq!(data_of(&ret), "DEMO");
                break client;
            }
            Err(err) => assert!(Instant::now() < deadline, "the demo never answered: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, first) = tls_connect(nmid.addr, &pki.trust()).await.unwrap();
    assert_eq!(first, pem_der(&cert));
    // Plaintext v1 peers, from two addresses.
    let (mut from_1, answer) = register_v1(connect_from("127.0.0.1", nmid.addr).await, "A").await;
    assert_eq!(answer, Frame::Ok);
    let mut from_2 = connect_from("127.0.0.2", nmid.addr).await;
    from_2
        .write_all(&common::wire(&Frame::WSetName { name: bytes("two") }))
        .await
        .unwrap();

    let (cert, key) = pki.server("second");
    file.write(&settings(&cert, &key, r#""127.0.0.2""#));
    nmid.signal("-HUP");
    nmid.wait_for_log("[security], [auth] and [tls] reloaded");
    let (_, second) = tls_connect(nmid.addr, &pki.trust()).await.unwrap();
    assert_eq!(
        second,
        pem_der(&cert),
        "a new handshake gets the new certificate"
    );
    assert_ne!(first, second);
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("still")).await.unwrap()),
        "STILL"
    );
    assert!(
        closed(&mut from_2).await,
        "127.0.0.2 stayed connected after the reload"
    );
    let mut refused = connect_from("127.0.0.2", nmid.addr).await;
    assert!(closed(&mut refused).await);
    from_1
        .send(Frame::WHeartbeatPing {
            body: bytes("PING"),
        })
        .await
        .unwrap();
    let pong = tokio::time::timeout(PATIENCE, from_1.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Frame::SHeartbeatPong, "127.0.0.1 kept its connection");

    file.write("[security]\ndeny = [\"nonsense\"]\n");
    nmid.signal("-HUP");
    nmid.wait_for_log("the previous settings stay");
    let mut still_refused = connect_from("127.0.0.2", nmid.addr).await;
    assert!(
        closed(&mut still_refused).await,
        "the bad file replaced the deny list"
    );
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("after")).await.unwrap()),
        "AFTER"
    );
    nmid.signal("-TERM");
    assert!(nmid.wait_exit(PATIENCE * 2).success());
}

/// The DER of the first certificate of a PEM file.
fn pem_der(path: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// `nmidctl` with `--ca-file` and `--token` (or `NMID_TOKEN`) calls over TLS and reads the
/// admin API over HTTPS; without the token it exits 10 with the dispatcher's reason.
#[actix_rt::test]
async fn nmidctl_speaks_tls_and_presents_its_token() {
    let pki = Pki::new("nmidctl");
    let dispatcher = start_dispatcher_with_http(with_tls(auth_config(), &pki));
    let worker = Worker::builder()
        .server(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(WORKER_SECRET)
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    served(&dispatcher, "ToUpper", 1).await;
    let https = format!("https://{}", dispatcher.http.unwrap());
    let ctl = |args: &[&str], token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nmidctl"));
        command
            .args([
                "--addr",
                &dispatcher.addr.to_string(),
                "--http",
                &https,
                "--ca-file",
                &pki.ca_file(),
            ])
            .args(args)
            .env_remove("NMID_TOKEN")
            .kill_on_drop(true);
        if let Some(token) = token {
            command.env("NMID_TOKEN", token);
        }
        let run = command.output();
        async move {
            tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out = ctl(
        &["call", "ToUpper", r#"{"name":"ctl"}"#],
        Some(CLIENT_SECRET),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "CTL");
    let out = ctl(&["--token", ADMIN_SECRET, "workers"], None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ToUpper"),
        "{out:?}"
    );
    let out = ctl(&["call", "ToUpper", r#"{"name":"ctl"}"#], None).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "no token: closed at the first frame: {out:?}"
    );
    let out = ctl(&["call", "ToUpper", "{}"], Some("wrong-secret-0123456789")).await;
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token has this secret"),
        "{out:?}"
    );
    let out = ctl(&["workers"], Some(CLIENT_SECRET)).await;
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    worker.stop().await;
    dispatcher.stop().await;
}

/// `nmid-faas` with a token file and `--ca-file` serves its functions to a dispatcher with
/// auth and TLS on.
#[actix_rt::test]
async fn nmid_faas_serves_with_a_token_over_tls() {
    let pki = Pki::new("faas");
    let mut config = with_tls(auth_config(), &pki);
    config.auth.tokens[0].functions = vec!["Upper".to_owned()];
    config.auth.tokens[1].functions = vec!["Upper".to_owned()];
    let dispatcher = start_dispatcher_with_http(config);
    let token_file = pki.path("worker.token");
    std::fs::write(&token_file, format!("{WORKER_SECRET}\n")).unwrap();
    let functions = pki.path("functions.toml");
    std::fs::write(
        &functions,
        "[[function]]\nname = \"Upper\"\ncommand = [\"tr\", \"a-z\", \"A-Z\"]\n",
    )
    .unwrap();
    let faas = tokio::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
        .args([
            "--server",
            &dispatcher.addr.to_string(),
            "--token-file",
            &token_file,
            "--ca-file",
            &pki.ca_file(),
            &functions,
        ])
        .env_remove("NMID_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dispatcher
        .snapshot()
        .await
        .function("Upper")
        .is_none_or(|f| f.workers == 0)
    {
        assert!(Instant::now() < deadline, "nmid-faas never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let data = client
        .call_data("Upper", &serde_json::json!({"name": "faas"}))
        .await
        .unwrap();
    assert_eq!(&data[..], br#"{"NAME":"FAAS"}"#);
    drop(faas);
    dispatcher.stop().await;
}

/// A bad `[security]`, `[auth]` or `[tls]` stops `nmid` at start with exit status 2 and the
/// key and reason, never the secret.
#[test]
fn bad_security_settings_are_refused_at_start() {
    let pki = Pki::new("bad-config");
    let (cert, key) = pki.server("server");
    let missing = pki.path("missing.pem");
    let cases = [
        ("[security]\ndeny = [\"10.0.0.0/33\"]\n", "config key `security.deny`: \"10.0.0.0/33\" is not an IP address or a CIDR network"),
        ("[security]\nallow = [\"example.com\"]\n", "config key `security.allow`"),
        (
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"t\"\nsecret = \"short-secret\"\nroles = [\"client\"]\nfunctions = [\"*\"]\n",
            "config key `auth.tokens`: token \"t\": the secret is shorter than 16 bytes",
        ),
        (
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"t\"\nsecret = \"0123456789abcdef0123\"\nroles = [\"root\"]\nfunctions = [\"*\"]\n",
            "unknown role \"root\"",
        ),
        ("[auth]\nenabled = true\n", "no [[auth.tokens]] or [[auth.v1_peers]] grants anything"),
        (&format!("[tls]\ncert_file = \"{cert}\"\n"), "config key `tls.key_file`: tls.cert_file and tls.key_file are set together"),
        (&format!("[tls]\ncert_file = \"{missing}\"\nkey_file = \"{key}\"\n"), "config key `tls.cert_file`"),
        (&format!("[tls]\ncert_file = \"{cert}\"\nkey_file = \"{cert}\"\n"), "config key `tls.key_file`"),
        ("[tls]\nallow_plaintext = true\n", "config key `tls.allow_plaintext`: needs tls.cert_file"),
        (
            &format!("[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{missing}\"\n"),
            "config key `tls.client_ca_file`",
        ),
    ];
    for (text, expected) in cases {
        let path = pki.path("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(common::process::NMID)
            .args([
                "--config",
                &path,
                "--tcp-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{text}: expected {expected:?} in {stderr}"
        );
        assert!(
            !stderr.contains("0123456789abcdef0123"),
            "a secret in the log: {stderr}"
        );
    }
}

/// `config/hardened.toml`, its paths pointed at files made here, starts (on 127.0.0.1) and
/// serves `--demo`'s `ToUpper` to the `web` token over TLS, refuses plaintext tokens and
/// keeps the admin API closed without the `ops` token.
#[actix_rt::test]
async fn the_hardened_config_starts_and_serves() {
    let pki = Pki::new("hardened");
    let etc = pki.dir.join("etc");
    std::fs::create_dir_all(etc.join("secrets")).unwrap();
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    for (name, secret) in [
        ("ops", ADMIN_SECRET),
        ("orders-worker", WORKER_SECRET),
        ("web", CLIENT_SECRET),
    ] {
        std::fs::write(etc.join("secrets").join(name), format!("{secret}\n")).unwrap();
    }
    let (cert, key) = pki.server("server");
    std::fs::copy(&cert, etc.join("tls/server.pem")).unwrap();
    std::fs::copy(&key, etc.join("tls/server.key")).unwrap();
    let hardened =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/hardened.toml"))
            .unwrap();
    let file = ConfigFile::new(
        &pki,
        &hardened.replace("/etc/nmid/", &format!("{}/", etc.display())),
    );
    let nmid = Process::start(&["--config", &file.arg(), "--demo"]);
    let client = Client::builder(nmid.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.call("ToUpper", name_params("hardened")).await {
            Ok(ret) => {
                assert_eq!(data_of(&ret), "HARDENED");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "no answer: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = Client::builder(nmid.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert!(
        matches!(plain, Err(ClientError::Unauthorized(_))),
        "{plain:?}"
    );
    let status = https_get(nmid.http.unwrap(), &pki.trust(), "/api/v1/stats")
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    drop(nmid);
}

/// A cluster on a real etcd with auth and TLS on both dispatchers: a call entering the one
/// without the worker is forwarded over TLS with the peer token, and answered; the caller
/// still needs its own token at the entry.
#[actix_rt::test]
async fn a_cluster_forwards_over_tls_with_its_peer_token() {
    let pki = Pki::new("cluster");
    let (cert, key) = pki.server("server");
    let peer_secret = "peer-secret-0123456789abcdef";
    let secret_file = pki.path("peer.secret");
    std::fs::write(&secret_file, peer_secret).unwrap();
    let ca = pki.ca_file();
    let file = ConfigFile::new(
        &pki,
        &format!(
            r#"
[auth]
enabled = true
peer_secret_file = "{secret_file}"
[[auth.tokens]]
name = "peers"
secret = "{peer_secret}"
roles = ["client"]
functions = ["*"]
[[auth.tokens]]
name = "web"
secret = "{CLIENT_SECRET}"
roles = ["client"]
functions = ["ToUpper"]
[[auth.tokens]]
name = "upper-worker"
secret = "{WORKER_SECRET}"
roles = ["worker"]
functions = ["ToUpper"]
[tls]
cert_file = "{cert}"
key_file = "{key}"
peer_ca_file = "{ca}"
"#
        ),
    );
    let etcd = cluster_support::Etcd::start().await;
    let entry = cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &file.arg()]);
    let serving = cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &file.arg()]);
    let worker = Worker::builder()
        .server(serving.tcp.to_string())
        .tls(pki.trust())
        .token(WORKER_SECRET)
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    let client = Client::builder(entry.tcp.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.call("ToUpper", name_params("forwarded")).await {
            Ok(ret) => {
                assert_eq!(data_of(&ret), "FORWARDED");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "never forwarded: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        client.call("Elsewhere", name_params("x")).await,
        Err(ClientError::Forbidden(_))
    ));
    worker.stop().await;
}
