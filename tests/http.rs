//! The HTTP front end end to end, against an in-process dispatcher over real TCP on
//! 127.0.0.1 with the `awc` client: `POST /call/{func}` and its params encodings, every error
//! status with its JSON `code`, nmid's gateway headers, concurrency, a caller that hangs up
//! mid-call, and the admin API.

mod common;

use std::time::{Duration, Instant};

use awc::http::header::HeaderMap;
use bytes::Bytes;
use common::{start_dispatcher_with_http, Peer, TestDispatcher};
use futures_util::future::join_all;
use nmid::codec::ParamsType;
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker, WorkerBuilder, WorkerHandle};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const JSON: (&str, &str) = ("content-type", "application/json");
/// nmid's gateway request header that makes any path a call.
const GATEWAY: (&str, &str) = ("N-NMID-RequestType", "HTTP_DO_WORK");
/// How soon an answer that should come "at once" must come: far more than a loaded 2-core
/// CI machine needs, and still well below the 30 s default deadline.
const AT_ONCE: Duration = Duration::from_secs(10);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One HTTP response, read whole.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The `code` of a JSON error body.
    fn code(&self) -> String {
        let json = self.json();
        json["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code in {json}"))
            .to_owned()
    }

    /// The `error` message of a JSON error body.
    fn error(&self) -> String {
        let json = self.json();
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {json}"))
            .to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .expect("header is text")
    }

    /// Asserts the status and the JSON error `code` together.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "body: {}",
            self.text()
        );
    }
}

/// `POST url` with `headers` and `body`.
async fn post(url: String, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut request = awc::Client::default().post(url);
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request
        .send_body(body.into())
        .await
        .expect("an HTTP response");
    let body = response.body().await.expect("the response body");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body,
    }
}

/// `POST url` with a JSON body.
async fn post_json(url: String, body: &'static str) -> Reply {
    post(url, &[JSON], body).await
}

/// `GET url`.
async fn get(url: String) -> Reply {
    let mut response = awc::Client::default()
        .get(url)
        .send()
        .await
        .expect("an HTTP response");
    let body = response.body().await.expect("the response body");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body,
    }
}

/// The defaults, with a short drain so that stopping never waits on a silent raw worker.
fn config() -> Config {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config
}

fn call_url(dispatcher: &TestDispatcher, function: &str) -> String {
    format!("{}/call/{function}", dispatcher.http_url())
}

fn worker(dispatcher: &TestDispatcher, name: &str) -> WorkerBuilder {
    Worker::builder()
        .name(name)
        .server(dispatcher.addr.to_string())
}

/// Waits until `count` workers serve `function`.
async fn serving(dispatcher: &TestDispatcher, function: &str, count: usize) {
    dispatcher
        .wait_for(&format!("{count} workers of {function}"), |s| {
            s.function(function).is_some_and(|f| f.workers == count)
        })
        .await;
}

/// A dispatcher with a library worker serving the demo's `ToUpper`.
async fn with_to_upper() -> (TestDispatcher, WorkerHandle) {
    let dispatcher = start_dispatcher_with_http(config());
    let w = worker(&dispatcher, "upper")
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&dispatcher, "ToUpper", 1).await;
    (dispatcher, w)
}

/// Calls `function` over HTTP while a raw worker takes the job; returns what the worker
/// received and the HTTP reply to its answer.
async fn seen_by_raw_worker(
    function: &'static str,
    url_suffix: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
) -> (nmid::codec::SGetData, Reply) {
    let dispatcher = start_dispatcher_with_http(config());
    let mut peer = Peer::worker(dispatcher.addr, "raw", &[function]).await;
    let url = format!("{}{url_suffix}", dispatcher.http_url());
    let call = actix_rt::spawn(post(url, headers, body));
    let job = peer.recv_job().await;
    peer.answer(&job, &RetStruct::ok("seen").encode()).await;
    let reply = call.await.expect("the call task");
    drop(peer);
    dispatcher.stop().await;
    (job, reply)
}

/// ToUpper over HTTP: 200, the RetStruct's Data as text, and a request id.
#[actix_rt::test]
async fn to_upper_over_http_answers_the_upper_cased_name_as_text() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post_json(call_url(&dispatcher, "ToUpper"), r#"{"name":"nmid"}"#).await;
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!(reply.text(), "NMID");
    assert!(reply.header("content-type").starts_with("text/plain"));
    assert!(!reply.header("x-request-id").is_empty());
    w.stop().await;
    dispatcher.stop().await;
}

/// A caller's `X-Request-Id` comes back on the response as it was sent.
#[actix_rt::test]
async fn a_sent_request_id_is_echoed_back() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post(
        call_url(&dispatcher, "ToUpper"),
        &[JSON, ("X-Request-Id", "req-42-abc")],
        r#"{"name":"nmid"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert_eq!(reply.header("x-request-id"), "req-42-abc");
    w.stop().await;
    dispatcher.stop().await;
}

/// A worker whose RetStruct Data is JSON text is answered as application/json.
#[actix_rt::test]
async fn json_data_is_answered_as_application_json() {
    let dispatcher = start_dispatcher_with_http(config());
    let w = worker(&dispatcher, "json")
        .function("Json", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::ok(r#"{"a":1}"#))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Json", 1).await;
    let reply = post_json(call_url(&dispatcher, "Json"), "{}").await;
    assert_eq!(reply.status, 200, "body: {}", reply.text());
    assert!(reply.header("content-type").starts_with("application/json"));
    assert_eq!(reply.json(), serde_json::json!({"a": 1}));
    w.stop().await;
    dispatcher.stop().await;
}

/// `?params=json`: the worker receives params type 6 and the JSON body exactly as sent.
#[actix_rt::test]
async fn params_json_passes_the_json_body_to_the_worker_as_is() {
    const BODY: &[u8] = br#"[1, {"b" : "two"},  3.5]"#;
    let (job, reply) =
        seen_by_raw_worker("Inspect", "/call/Inspect?params=json", &[JSON], BODY).await;
    assert_eq!(job.params_type, ParamsType::JSON);
    assert_eq!(&job.params[..], BODY);
    assert_eq!((reply.status, reply.text()), (200, "seen"));
}

/// A JSON object reaches the worker as the msgpack map (params type 5) of that object.
#[actix_rt::test]
async fn a_json_object_reaches_the_worker_as_a_msgpack_map() {
    const BODY: &str = r#"{"name":"nmid","n":[1,2.5,true,null],"o":{"k":"v"}}"#;
    let (job, reply) =
        seen_by_raw_worker("Inspect", "/call/Inspect", &[JSON], BODY.as_bytes()).await;
    let value: Value = serde_json::from_str(BODY).unwrap();
    assert_eq!(job.params_type, ParamsType::MSGPACK);
    assert_eq!(job.params[..], rmp_serde::to_vec_named(&value).unwrap()[..]);
    assert_eq!((reply.status, reply.text()), (200, "seen"));
}

/// An `application/msgpack` body reaches the worker byte for byte.
#[actix_rt::test]
async fn a_msgpack_body_reaches_the_worker_byte_for_byte() {
    // [1, bin(ff 00), "x"]: nothing JSON could have produced.
    const BODY: &[u8] = &[0x93, 0x01, 0xc4, 0x02, 0xff, 0x00, 0xa1, b'x'];
    let (job, reply) = seen_by_raw_worker(
        "Inspect",
        "/call/Inspect",
        &[("content-type", "application/msgpack")],
        BODY,
    )
    .await;
    assert_eq!(job.params_type, ParamsType::MSGPACK);
    assert_eq!(&job.params[..], BODY);
    assert_eq!((reply.status, reply.text()), (200, "seen"));
}

/// An empty JSON body reaches the worker as the empty msgpack map.
#[actix_rt::test]
async fn an_empty_json_body_reaches_the_worker_as_the_empty_map() {
    let (job, reply) = seen_by_raw_worker("Inspect", "/call/Inspect", &[JSON], b"").await;
    assert_eq!(job.params_type, ParamsType::MSGPACK);
    assert_eq!(&job.params[..], &[0x80]);
    assert_eq!((reply.status, reply.text()), (200, "seen"));
}

/// A `traceparent` header reaches a tagged worker as call metadata.
#[actix_rt::test]
async fn traceparent_reaches_a_tagged_worker_as_call_metadata() {
    let dispatcher = start_dispatcher_with_http(config());
    let w = worker(&dispatcher, "traced")
        .function("Trace", |job: Job| async move {
            let trace = job.metadata("traceparent").unwrap_or("none").to_owned();
            Ok::<_, JobError>(RetStruct::ok(trace))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Trace", 1).await;
    let reply = post(
        call_url(&dispatcher, "Trace"),
        &[JSON, ("traceparent", TRACEPARENT)],
        "{}",
    )
    .await;
    assert_eq!((reply.status, reply.text()), (200, TRACEPARENT));
    w.stop().await;
    dispatcher.stop().await;
}

/// A function no worker ever served is 404 `unknown_function`.
#[actix_rt::test]
async fn an_unknown_function_is_404_unknown_function() {
    let dispatcher = start_dispatcher_with_http(config());
    let reply = post_json(call_url(&dispatcher, "NoSuchThing"), "{}").await;
    reply.assert_error(404, "unknown_function");
    assert!(reply.error().contains("NoSuchThing"), "{}", reply.error());
    dispatcher.stop().await;
}

/// A function whose only worker left is 503 `no_worker`, not 404.
#[actix_rt::test]
async fn a_function_whose_worker_left_is_503_no_worker() {
    let dispatcher = start_dispatcher_with_http(config());
    let peer = Peer::worker(dispatcher.addr, "leaving", &["Gone"]).await;
    serving(&dispatcher, "Gone", 1).await;
    drop(peer);
    dispatcher
        .wait_for("Gone to have no worker", |s| s.function("Gone").is_none())
        .await;
    let reply = post_json(call_url(&dispatcher, "Gone"), "{}").await;
    reply.assert_error(503, "no_worker");
    dispatcher.stop().await;
}

/// A body that is not JSON is 400 `bad_request`.
#[actix_rt::test]
async fn invalid_json_is_400_bad_request() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post_json(call_url(&dispatcher, "ToUpper"), r#"{"name": "#).await;
    reply.assert_error(400, "bad_request");
    w.stop().await;
    dispatcher.stop().await;
}

/// A JSON array cannot become the worker's msgpack map: 400 `bad_request`.
#[actix_rt::test]
async fn a_json_array_body_is_400_bad_request() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post_json(call_url(&dispatcher, "ToUpper"), r#"["nmid"]"#).await;
    reply.assert_error(400, "bad_request");
    w.stop().await;
    dispatcher.stop().await;
}

/// A body of a media type that is neither JSON, msgpack nor raw (`text/plain`,
/// `application/octet-stream`, which pass as they are) is 415 `unsupported_media_type`.
#[actix_rt::test]
async fn an_image_body_is_415() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post(
        call_url(&dispatcher, "ToUpper"),
        &[("content-type", "image/png")],
        "nmid",
    )
    .await;
    reply.assert_error(415, "unsupported_media_type");
    w.stop().await;
    dispatcher.stop().await;
}

/// A chunked body (no `Content-Length`) that streams past `http.max_body_bytes` is 413
/// `body_too_large` too, refused as it arrives.
#[actix_rt::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let mut config = config();
    config.http.max_body_bytes = 64;
    let dispatcher = start_dispatcher_with_http(config);
    let mut stream = tokio::net::TcpStream::connect(dispatcher.http.unwrap())
        .await
        .unwrap();
    let mut request = b"POST /call/ToUpper HTTP/1.1\r\nHost: nmid\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"20\r\n");
        request.extend_from_slice(&[b' '; 32]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("body_too_large"), "{response}");
    dispatcher.stop().await;
}

/// A body over `http.max_body_bytes` is 413 `body_too_large`; one at the limit is not.
#[actix_rt::test]
async fn a_body_over_the_limit_is_413_body_too_large() {
    let mut config = config();
    config.http.max_body_bytes = 64;
    let dispatcher = start_dispatcher_with_http(config);
    let w = worker(&dispatcher, "upper")
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&dispatcher, "ToUpper", 1).await;

    let fits = format!(r#"{{"name":"{}"}}"#, "a".repeat(64 - 11));
    assert_eq!(fits.len(), 64);
    let reply = post(call_url(&dispatcher, "ToUpper"), &[JSON], fits).await;
    assert_eq!(reply.status, 200, "body: {}", reply.text());

    let too_big = format!(r#"{{"name":"{}"}}"#, "a".repeat(64 - 10));
    let reply = post(call_url(&dispatcher, "ToUpper"), &[JSON], too_big).await;
    reply.assert_error(413, "body_too_large");
    w.stop().await;
    dispatcher.stop().await;
}

/// A RetStruct with a non-zero Code is 502 `function_error` carrying its Msg.
#[actix_rt::test]
async fn a_retstruct_with_nonzero_code_is_502_function_error_with_its_msg() {
    let dispatcher = start_dispatcher_with_http(config());
    let w = worker(&dispatcher, "failing")
        .function("Fails", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::error(7, "no such user"))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Fails", 1).await;
    let reply = post_json(call_url(&dispatcher, "Fails"), "{}").await;
    reply.assert_error(502, "function_error");
    assert_eq!(reply.error(), "no such user");
    w.stop().await;
    dispatcher.stop().await;
}

/// A library worker's `Err(JobError)` is 502 `worker_error` carrying its message.
#[actix_rt::test]
async fn a_worker_error_is_502_worker_error_with_its_message() {
    let dispatcher = start_dispatcher_with_http(config());
    let w = worker(&dispatcher, "erring")
        .function("Boom", |_job: Job| async {
            Err::<Vec<u8>, _>(JobError::new("boom"))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Boom", 1).await;
    let reply = post_json(call_url(&dispatcher, "Boom"), "{}").await;
    reply.assert_error(502, "worker_error");
    assert!(reply.error().contains("boom"), "{}", reply.error());
    w.stop().await;
    dispatcher.stop().await;
}

/// `X-NMID-Timeout-Ms: 150` on a worker that never answers: 504 `timeout`, promptly.
#[actix_rt::test]
async fn the_timeout_header_ends_a_silent_call_with_504_timeout() {
    let dispatcher = start_dispatcher_with_http(config());
    let mut peer = Peer::worker(dispatcher.addr, "silent", &["Silent"]).await;
    let started = Instant::now();
    let reply = post(
        call_url(&dispatcher, "Silent"),
        &[JSON, ("X-NMID-Timeout-Ms", "150")],
        "{}",
    )
    .await;
    let elapsed = started.elapsed();
    reply.assert_error(504, "timeout");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    // The header's deadline, not the 30 s default, ended the call.
    assert!(elapsed < AT_ONCE, "{elapsed:?}");
    // The job did reach the worker: the deadline, not a refusal, ended the call.
    let job = peer.recv_job().await;
    assert_eq!(&job.function[..], b"Silent");
    drop(peer);
    dispatcher.stop().await;
}

/// A timeout header that is not a positive whole number of milliseconds is 400.
#[actix_rt::test]
async fn an_invalid_timeout_header_is_400_bad_request() {
    let (dispatcher, w) = with_to_upper().await;
    for bad in ["soon", "0", "-5", "1.5", "99999999999"] {
        let reply = post(
            call_url(&dispatcher, "ToUpper"),
            &[JSON, ("X-NMID-Timeout-Ms", bad)],
            r#"{"name":"nmid"}"#,
        )
        .await;
        reply.assert_error(400, "bad_request");
    }
    w.stop().await;
    dispatcher.stop().await;
}

/// The only worker busy and no queue: 429 `rate_limited` with `Retry-After`; the busy call
/// still completes.
#[actix_rt::test]
async fn a_full_function_is_429_rate_limited_with_retry_after() {
    let mut config = config();
    config.workers.max_jobs_in_flight = 1;
    config.workers.max_queue_per_function = 0;
    let dispatcher = start_dispatcher_with_http(config);
    let mut peer = Peer::worker(dispatcher.addr, "busy", &["F"]).await;
    let first = actix_rt::spawn(post_json(call_url(&dispatcher, "F"), "{}"));
    let job = peer.recv_job().await;

    let reply = post_json(call_url(&dispatcher, "F"), "{}").await;
    reply.assert_error(429, "rate_limited");
    assert!(!reply.header("retry-after").is_empty());

    peer.answer(&job, &RetStruct::ok("first").encode()).await;
    let first = first.await.expect("the first call task");
    assert_eq!((first.status, first.text()), (200, "first"));
    drop(peer);
    dispatcher.stop().await;
}

/// A worker lost mid-call with no other worker to retry on is 502 `worker_lost`, at once.
#[actix_rt::test]
async fn a_worker_lost_mid_call_is_502_worker_lost() {
    let dispatcher = start_dispatcher_with_http(config());
    let mut peer = Peer::worker(dispatcher.addr, "doomed", &["F"]).await;
    let call = actix_rt::spawn(post_json(call_url(&dispatcher, "F"), "{}"));
    peer.recv_job().await;
    let lost_at = Instant::now();
    drop(peer);
    let reply = call.await.expect("the call task");
    reply.assert_error(502, "worker_lost");
    assert!(lost_at.elapsed() < AT_ONCE, "{:?}", lost_at.elapsed());
    dispatcher.stop().await;
}

/// While the dispatcher drains a call in flight, `/readyz` is 503 `draining` and a new call
/// is 503 `shutting_down`; the call in flight completes.
#[actix_rt::test]
async fn while_draining_readyz_and_new_calls_are_503() {
    // The default drain bound (10 s): the drain lasts until the job in flight is answered.
    let mut dispatcher = start_dispatcher_with_http(Config::default());
    let mut peer = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let in_flight = actix_rt::spawn(post_json(call_url(&dispatcher, "F"), "{}"));
    let job = peer.recv_job().await;
    let readyz = format!("{}/readyz", dispatcher.http_url());
    let ready = get(readyz.clone()).await;
    assert_eq!(
        (ready.status, &ready.json()["status"]),
        (200, &"ready".into())
    );

    dispatcher.begin_shutdown();
    dispatcher
        .wait_for("the drain to begin", |s| s.draining)
        .await;
    let draining = get(readyz).await;
    assert_eq!(
        (draining.status, &draining.json()["status"]),
        (503, &"draining".into())
    );
    let refused = post_json(call_url(&dispatcher, "F"), "{}").await;
    refused.assert_error(503, "shutting_down");

    peer.answer(&job, &RetStruct::ok("finished").encode()).await;
    let reply = in_flight.await.expect("the call task");
    assert_eq!((reply.status, reply.text()), (200, "finished"));
    dispatcher.stop().await;
}

/// A path with no route and no gateway headers is a JSON 404 `not_found`.
#[actix_rt::test]
async fn an_unknown_route_is_404_not_found() {
    let dispatcher = start_dispatcher_with_http(config());
    let reply = get(format!("{}/nothing", dispatcher.http_url())).await;
    reply.assert_error(404, "not_found");
    dispatcher.stop().await;
}

/// nmid's gateway headers on any path call the named function, answered with nmid's
/// `N-NMID-PdtDataType`.
#[actix_rt::test]
async fn gateway_headers_call_the_named_function() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post(
        format!("{}/any/path/at/all", dispatcher.http_url()),
        &[
            JSON,
            ("N-NMID-RequestType", "HTTP_DO_WORK"),
            ("N-NMID-FunctionName", "ToUpper"),
        ],
        r#"{"name":"nmid"}"#,
    )
    .await;
    assert_eq!((reply.status, reply.text()), (200, "NMID"));
    assert_eq!(reply.header("n-nmid-pdtdatatype"), "PDT_S_RETURN_DATA");
    w.stop().await;
    dispatcher.stop().await;
}

/// Without `N-NMID-FunctionName` the gateway calls the function the URL path names.
#[actix_rt::test]
async fn gateway_without_function_name_calls_the_url_path() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = post(
        format!("{}/ToUpper", dispatcher.http_url()),
        &[JSON, ("N-NMID-RequestType", "HTTP_DO_WORK")],
        r#"{"name":"path"}"#,
    )
    .await;
    assert_eq!((reply.status, reply.text()), (200, "PATH"));
    assert_eq!(reply.header("n-nmid-pdtdatatype"), "PDT_S_RETURN_DATA");
    w.stop().await;
    dispatcher.stop().await;
}

/// Gateway `N-NMID-ParamsType: 6` passes the JSON body to the worker as JSON.
#[actix_rt::test]
async fn gateway_params_type_6_passes_json_through() {
    const BODY: &[u8] = br#"{"name": "as-is"}"#;
    let (job, reply) = seen_by_raw_worker(
        "Inspect",
        "/gw",
        &[
            JSON,
            ("N-NMID-RequestType", "HTTP_DO_WORK"),
            ("N-NMID-FunctionName", "Inspect"),
            ("N-NMID-ParamsType", "6"),
        ],
        BODY,
    )
    .await;
    assert_eq!(job.params_type, ParamsType::JSON);
    assert_eq!(&job.params[..], BODY);
    assert_eq!((reply.status, reply.text()), (200, "seen"));
    assert_eq!(reply.header("n-nmid-pdtdatatype"), "PDT_S_RETURN_DATA");
}

/// A gateway call of an unknown function is 404 with `PDT_CANT_DO` and an error message.
#[actix_rt::test]
async fn gateway_unknown_function_is_404_with_pdt_cant_do() {
    let dispatcher = start_dispatcher_with_http(config());
    let reply = post(
        format!("{}/x", dispatcher.http_url()),
        &[
            JSON,
            ("N-NMID-RequestType", "HTTP_DO_WORK"),
            ("N-NMID-FunctionName", "NoSuchThing"),
        ],
        "{}",
    )
    .await;
    reply.assert_error(404, "unknown_function");
    assert_eq!(reply.header("n-nmid-messagestatustype"), "PDT_CANT_DO");
    assert!(!reply.header("n-nmid-errormessage").is_empty());
    dispatcher.stop().await;
}

/// A gateway call while every worker is busy and the queue is full is 429 with
/// `PDT_RATELIMIT` and an error message.
#[actix_rt::test]
async fn gateway_rate_limited_call_is_429_with_pdt_ratelimit() {
    let mut config = config();
    config.workers.max_jobs_in_flight = 1;
    config.workers.max_queue_per_function = 0;
    let dispatcher = start_dispatcher_with_http(config);
    let mut peer = Peer::worker(dispatcher.addr, "busy", &["F"]).await;
    let first = actix_rt::spawn(post_json(call_url(&dispatcher, "F"), "{}"));
    let job = peer.recv_job().await;

    let reply = post(
        format!("{}/gw", dispatcher.http_url()),
        &[JSON, GATEWAY, ("N-NMID-FunctionName", "F")],
        "{}",
    )
    .await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.header("n-nmid-messagestatustype"), "PDT_RATELIMIT");
    assert!(!reply.header("n-nmid-errormessage").is_empty());

    peer.answer(&job, &RetStruct::ok("first").encode()).await;
    let first = first.await.expect("the first call task");
    assert_eq!((first.status, first.text()), (200, "first"));
    drop(peer);
    dispatcher.stop().await;
}

/// A gateway call whose worker reports a failure is 502 with `PDT_ERROR` and the worker's
/// message.
#[actix_rt::test]
async fn gateway_failed_call_is_502_with_pdt_error() {
    let dispatcher = start_dispatcher_with_http(config());
    let w = worker(&dispatcher, "erring")
        .function("Boom", |_job: Job| async {
            Err::<Vec<u8>, _>(JobError::new("boom"))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Boom", 1).await;
    let reply = post(
        format!("{}/Boom", dispatcher.http_url()),
        &[JSON, GATEWAY],
        "{}",
    )
    .await;
    reply.assert_error(502, "worker_error");
    assert_eq!(reply.header("n-nmid-messagestatustype"), "PDT_ERROR");
    assert!(
        reply.header("n-nmid-errormessage").contains("boom"),
        "{:?}",
        reply.headers
    );
    w.stop().await;
    dispatcher.stop().await;
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

/// 200 concurrent HTTP calls with unique payloads: each gets its own answer.
#[actix_rt::test]
async fn every_one_of_200_concurrent_calls_gets_its_own_answer() {
    const CALLS: usize = 200;
    let mut config = config();
    config.workers.max_queue_per_function = 4 * CALLS;
    let dispatcher = start_dispatcher_with_http(config);
    let w = worker(&dispatcher, "echo")
        .function("Echo", |job: Job| async move {
            let params: Name = job.decode()?;
            Ok::<_, JobError>(RetStruct::ok(params.name))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Echo", 1).await;

    let url = call_url(&dispatcher, "Echo");
    let calls = (0..CALLS).map(|i| {
        let url = url.clone();
        async move {
            let expected = format!("caller-{i}");
            let body = serde_json::json!({ "name": expected }).to_string();
            let reply = post(url, &[JSON], body).await;
            (reply.status, reply.body) == (200, Bytes::from(expected))
        }
    });
    let mismatches = join_all(calls).await.iter().filter(|ok| !**ok).count();
    assert_eq!(
        mismatches, 0,
        "{mismatches} of {CALLS} calls got a wrong answer"
    );
    w.stop().await;
    dispatcher.stop().await;
}

/// An HTTP caller that hangs up while its call waits in the queue: the call is withdrawn,
/// never reaches the worker, and nothing stays queued or in flight.
#[actix_rt::test]
async fn a_caller_that_disconnects_mid_call_leaks_nothing() {
    let mut config = config();
    config.workers.max_jobs_in_flight = 1;
    let dispatcher = start_dispatcher_with_http(config);
    let mut peer = Peer::worker(dispatcher.addr, "slow", &["F"]).await;
    let kept = actix_rt::spawn(post_json(call_url(&dispatcher, "F"), "{}"));
    let job_a = peer.recv_job().await;

    let http = dispatcher.http.expect("started with HTTP");
    let mut stream = tokio::net::TcpStream::connect(http)
        .await
        .expect("connect to the HTTP port");
    let request = format!(
        "POST /call/F HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    dispatcher
        .wait_for("the raw call to be queued", |s| s.queued() == 1)
        .await;
    drop(stream);
    dispatcher
        .wait_for("the hung-up call to be withdrawn", |s| s.queued() == 0)
        .await;

    peer.answer(&job_a, &RetStruct::ok("a").encode()).await;
    let kept = kept.await.expect("the kept call task");
    assert_eq!((kept.status, kept.text()), (200, "a"));
    dispatcher
        .wait_for("nothing in flight", |s| {
            s.in_flight() == 0 && s.queued() == 0
        })
        .await;
    peer.assert_worker_got_nothing("the withdrawn call reached the worker")
        .await;
    drop(peer);
    dispatcher.stop().await;
}

/// `/api/v1/functions` lists a served function with its worker count.
#[actix_rt::test]
async fn functions_api_lists_the_function_with_its_worker() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = get(format!("{}/api/v1/functions", dispatcher.http_url())).await;
    assert_eq!(reply.status, 200);
    let functions = reply.json();
    let to_upper = functions
        .as_array()
        .expect("an array")
        .iter()
        .find(|f| f["name"] == "ToUpper")
        .unwrap_or_else(|| panic!("no ToUpper in {functions}"));
    assert_eq!(to_upper["workers"], 1);
    w.stop().await;
    dispatcher.stop().await;
}

/// `/api/v1/workers` shows a connected worker's name and functions.
#[actix_rt::test]
async fn workers_api_shows_the_workers_name_and_functions() {
    let (dispatcher, w) = with_to_upper().await;
    let reply = get(format!("{}/api/v1/workers", dispatcher.http_url())).await;
    assert_eq!(reply.status, 200);
    let workers = reply.json();
    let upper = workers
        .as_array()
        .expect("an array")
        .iter()
        .find(|w| w["name"] == "upper")
        .unwrap_or_else(|| panic!("no worker named upper in {workers}"));
    assert_eq!(upper["functions"], serde_json::json!(["ToUpper"]));
    w.stop().await;
    dispatcher.stop().await;
}

/// `/healthz` is 200 and `/readyz` is 200 with status "ready".
#[actix_rt::test]
async fn health_and_readiness_are_200_and_ready() {
    let dispatcher = start_dispatcher_with_http(config());
    let health = get(format!("{}/healthz", dispatcher.http_url())).await;
    assert_eq!(health.status, 200, "body: {}", health.text());
    let ready = get(format!("{}/readyz", dispatcher.http_url())).await;
    assert_eq!(ready.status, 200, "body: {}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    dispatcher.stop().await;
}

/// `/api/v1/stats` counts answered calls, by outcome.
#[actix_rt::test]
async fn stats_api_counts_successful_calls() {
    let (dispatcher, w) = with_to_upper().await;
    for _ in 0..2 {
        let reply = post_json(call_url(&dispatcher, "ToUpper"), r#"{"name":"nmid"}"#).await;
        assert_eq!(reply.status, 200, "body: {}", reply.text());
    }
    let reply = get(format!("{}/api/v1/stats", dispatcher.http_url())).await;
    assert_eq!(reply.status, 200);
    let stats = reply.json();
    assert!(stats["calls"]["total"].as_u64().unwrap() >= 2, "{stats}");
    let ok = stats["calls"]["by_outcome"]
        .as_array()
        .expect("by_outcome is an array")
        .iter()
        .find(|pair| pair[0] == "ok")
        .unwrap_or_else(|| panic!("no ok outcome in {stats}"));
    assert!(ok[1].as_u64().unwrap() >= 2, "{stats}");
    w.stop().await;
    dispatcher.stop().await;
}

/// `/dashboard` is an HTML page.
#[actix_rt::test]
async fn dashboard_is_an_html_page() {
    let dispatcher = start_dispatcher_with_http(config());
    let reply = get(format!("{}/dashboard", dispatcher.http_url())).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").starts_with("text/html"));
    assert!(reply.text().contains("nmid"));
    dispatcher.stop().await;
}

/// A call whose job frame would be larger than workers accept (`tcp.max_frame_bytes`),
/// though its body is within `http.max_body_bytes`, is 413 `too_large` at once: the worker
/// never sees it (the next job it gets is the next call's).
#[actix_rt::test]
async fn a_call_too_large_for_its_worker_is_413_too_large() {
    let mut config = config();
    config.tcp.max_frame_bytes = 1024;
    let dispatcher = start_dispatcher_with_http(config);
    let mut worker = Peer::worker(dispatcher.addr, "w", &["F"]).await;
    let too_large = format!(r#"{{"name":"{}"}}"#, "a".repeat(1024));
    let reply = post(call_url(&dispatcher, "F"), &[JSON], too_large).await;
    reply.assert_error(413, "too_large");

    let small = actix_rt::spawn(post_json(call_url(&dispatcher, "F"), r#"{"name":"small"}"#));
    let job = worker.recv_job().await;
    assert!(
        job.params.len() < 64,
        "the first job is the small call's: {job:?}"
    );
    worker.answer(&job, b"\"done\"").await;
    assert_eq!(small.await.unwrap().status, 200);
    dispatcher.stop().await;
}
