//! Callbacks end to end: background jobs submitted over HTTP to a real dispatcher with a
//! worker, their callbacks POSTed to a receiver on 127.0.0.1 (tests/common/receiver.rs),
//! signed, naming the submitter; URLs outside the allow list refused at submission.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::receiver::{jobs, verify, Answer, Receiver};
use nmid::config::Config;

/// Submits `body` to `function` of dispatcher `d` as a background job with `headers`; the
/// status and the JSON answer.
async fn submit_job(
    d: &common::TestDispatcher,
    function: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    submit_at(d, &format!("/async/{function}"), headers).await
}

/// Submits as [`submit_job`] does, to `path`.
async fn submit_at(
    d: &common::TestDispatcher,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut request = awc::Client::default()
        .post(format!("{}{path}", d.http_url()))
        .insert_header(("content-type", "text/plain"));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request.send_body("payload").await.unwrap();
    let body = response.body().await.unwrap();
    (
        response.status().as_u16(),
        serde_json::from_slice(&body).unwrap(),
    )
}

/// Job `id`'s status once its callback was tried to its end.
async fn callback_status(d: &common::TestDispatcher, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("{}/api/v1/jobs/{id}?wait_ms=1000", d.http_url());
        let mut response = awc::Client::default().get(url).send().await.unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&response.body().await.unwrap()).unwrap();
        match json["callback"].as_str() {
            Some("pending") | None => {}
            Some(_) => return json,
        }
        assert!(Instant::now() < deadline, "no callback outcome in {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dispatcher whose `[jobs]` allow callbacks under `prefix`, with a worker of `Upper`.
async fn dispatcher_calling_back(
    prefix: &str,
) -> (common::TestDispatcher, nmid::worker::WorkerHandle) {
    let mut config = Config {
        jobs: jobs(prefix),
        ..Config::default()
    };
    config.server.drain_timeout_ms = 300;
    let d = common::start_dispatcher_with_http(config);
    let worker = nmid::worker::Worker::builder()
        .server(d.addr.to_string())
        .function("Upper", |job: nmid::worker::Job| async move {
            Ok(Bytes::from(job.params().to_ascii_uppercase()))
        })
        .start()
        .unwrap();
    d.wait_for("a worker of Upper", |s| {
        s.function("Upper").is_some_and(|f| f.workers == 1)
    })
    .await;
    (d, worker)
}

/// A background job submitted with `X-Callback-Url` ends, and its result is POSTed there,
/// signed so the receiver verifies it, with the job's id; the job's status says it was
/// delivered. A receiver failing twice gets three attempts; a URL outside the allow list is
/// refused at submission (400) and nothing is sent.
#[actix_rt::test]
async fn a_background_jobs_result_is_posted_to_its_callback() {
    let receiver = Receiver::start(|n| match n {
        1 | 2 => Answer::Status(500),
        _ => Answer::Status(204),
    })
    .await;
    let (d, worker) = dispatcher_calling_back(&receiver.url("/hooks/")).await;
    let url = receiver.url("/hooks/done");
    let (status, json) = submit_job(&d, "Upper", &[("x-callback-url", url.as_str())]).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let done = callback_status(&d, &id).await;
    assert!(
        done["callback"].as_str().unwrap().starts_with("delivered"),
        "{done}"
    );
    let first = receiver.requests()[0].clone();
    assert_eq!(first.path, "/hooks/done");
    assert_eq!(first.header("x-call-id"), id);
    assert_eq!(first.header("x-nmid-job-state"), "succeeded");
    assert_eq!(first.body, b"PAYLOAD");
    assert_eq!(first.header("x-nmid-submitter"), "ip:127.0.0.1");
    assert!(verify(&first), "the receiver verifies the signature");

    let (status, json) = submit_job(&d, "Upper", &[("x-nmid-callback-url", url.as_str())]).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let done = callback_status(&d, &id).await;
    assert!(
        done["callback"]
            .as_str()
            .unwrap()
            .contains("after 3 attempt"),
        "{done}"
    );
    assert_eq!(receiver.requests().len(), 4);

    for outside in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:1/hooks/x",
        "file:///etc/passwd",
    ] {
        let (status, json) = submit_job(&d, "Upper", &[("x-callback-url", outside)]).await;
        assert_eq!(
            (status, json["code"].as_str()),
            (400, Some("bad_request")),
            "{outside}: {json}"
        );
        assert!(
            json["error"].as_str().unwrap().contains("callback"),
            "{json}"
        );
    }
    assert_eq!(
        receiver.requests().len(),
        4,
        "nothing sent for refused URLs"
    );
    worker.stop().await;
    d.stop().await;
}

/// With `[auth]` on, a job's callback names the token that submitted it, signed: tenant A's
/// job aimed at tenant B's endpoint under a shared prefix arrives as
/// `X-Nmid-Submitter: token:tenant-a`, which B can refuse and A cannot change.
#[actix_rt::test]
async fn with_auth_the_callback_names_the_submitting_token() {
    let receiver = Receiver::start(|_| Answer::Status(204)).await;
    let mut config = Config {
        jobs: jobs(&receiver.url("/hooks/")),
        ..Config::default()
    };
    config.server.drain_timeout_ms = 300;
    config.auth.enabled = true;
    let token = |name: &str, role: &str| nmid::config::TokenConfig {
        name: name.to_owned(),
        secret: format!("{name}-secret-0123456789"),
        roles: vec![role.to_owned()],
        functions: vec!["Upper".to_owned()],
        ..nmid::config::TokenConfig::default()
    };
    config.auth.tokens = vec![token("tenant-a", "client"), token("w", "worker")];
    let d = common::start_dispatcher_with_http(config);
    let worker = nmid::worker::Worker::builder()
        .server(d.addr.to_string())
        .token("w-secret-0123456789")
        .function("Upper", |job: nmid::worker::Job| async move {
            Ok(Bytes::from(job.params().to_ascii_uppercase()))
        })
        .start()
        .unwrap();
    d.wait_for("a worker of Upper", |s| {
        s.function("Upper").is_some_and(|f| f.workers == 1)
    })
    .await;
    let url = receiver.url("/hooks/tenant-b/orders?order=42");
    let headers = [
        ("authorization", "Bearer tenant-a-secret-0123456789"),
        ("x-callback-url", url.as_str()),
    ];
    let (status, json) = submit_job(&d, "Upper", &headers).await;
    assert_eq!(status, 202, "{json}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.requests().is_empty() {
        assert!(Instant::now() < deadline, "no callback arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.requests().remove(0);
    assert_eq!(got.path, "/hooks/tenant-b/orders?order=42");
    assert_eq!(got.header("x-nmid-submitter"), "token:tenant-a");
    assert!(verify(&got), "{got:?}");
    let mut forged = got.clone();
    forged.headers.retain(|(n, _)| n != "x-nmid-submitter");
    forged
        .headers
        .push(("x-nmid-submitter".into(), "token:tenant-b".into()));
    assert!(!verify(&forged), "the submitter can be changed");
    worker.stop().await;
    d.stop().await;
}

/// A cancelled job's callback says so (state `cancelled`, empty body); a succeeded job's
/// body is the function's output as `/call` answers it (nmid's RetStruct `Data`), not the
/// RetStruct's msgpack.
#[actix_rt::test]
async fn cancelled_and_retstruct_jobs_call_back_what_they_are() {
    let receiver = Receiver::start(|_| Answer::Status(204)).await;
    let (d, worker) = dispatcher_calling_back(&receiver.url("/hooks/")).await;
    let ret = nmid::worker::Worker::builder()
        .server(d.addr.to_string())
        .function("Ret", |_job: nmid::worker::Job| async move {
            Ok(Bytes::from(
                nmid::retstruct::RetStruct::ok(Bytes::from_static(b"DATA")).encode(),
            ))
        })
        .start()
        .unwrap();
    d.wait_for("a worker of Ret", |s| {
        s.function("Ret").is_some_and(|f| f.workers == 1)
    })
    .await;
    let url = receiver.url("/hooks/later");
    let headers = [
        ("x-callback-url", url.as_str()),
        ("x-nmid-delay-ms", "600000"),
    ];
    let (status, json) = submit_job(&d, "Upper", &headers).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let cancel = format!("{}/api/v1/jobs/{id}", d.http_url());
    let mut response = awc::Client::default().delete(cancel).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.body().await
    );
    let done = callback_status(&d, &id).await;
    assert!(
        done["callback"].as_str().unwrap().starts_with("delivered"),
        "{done}"
    );
    let sent = receiver.requests()[0].clone();
    assert_eq!(sent.header("x-call-id"), id);
    assert_eq!(sent.header("x-nmid-job-state"), "cancelled");
    assert!(sent.body.is_empty());
    assert!(verify(&sent));

    let (_, json) = submit_job(&d, "Ret", &[("x-callback-url", url.as_str())]).await;
    let id = json["id"].as_str().unwrap().to_owned();
    callback_status(&d, &id).await;
    let sent = receiver.requests()[1].clone();
    assert_eq!(sent.header("x-nmid-job-state"), "succeeded");
    assert_eq!(sent.body, b"DATA");
    ret.stop().await;
    worker.stop().await;
    d.stop().await;
}

/// While a final job's callback is being delivered its status says so (`pending`), then
/// what became of it.
#[actix_rt::test]
async fn a_callback_being_delivered_shows_pending() {
    let receiver = Receiver::start(|_| Answer::Slow(204, Duration::from_millis(1500))).await;
    let (d, worker) = dispatcher_calling_back(&receiver.url("/hooks/")).await;
    let url = receiver.url("/hooks/slow");
    let (status, json) = submit_job(&d, "Upper", &[("x-callback-url", url.as_str())]).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let status_url = format!("{}/api/v1/jobs/{id}?wait_ms=5000", d.http_url());
    let mut response = awc::Client::default().get(status_url).send().await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
    assert_eq!(
        (json["state"].as_str(), json["callback"].as_str()),
        (Some("succeeded"), Some("pending")),
        "{json}"
    );
    let done = callback_status(&d, &id).await;
    assert!(
        done["callback"].as_str().unwrap().starts_with("delivered"),
        "{done}"
    );
    worker.stop().await;
    d.stop().await;
}

/// As an OpenFaaS client would: `POST /async-function/{name}` with `X-Callback-Url` is
/// accepted (202, `X-Call-Id`), and the callback carries OpenFaaS's `X-Function-Name` and
/// `X-Function-Status`; `POST /function/{name}` answers at once as `/call` does.
#[actix_rt::test]
async fn openfaas_routes_and_callback_headers() {
    let receiver = Receiver::start(|_| Answer::Status(202)).await;
    let (d, worker) = dispatcher_calling_back(&receiver.url("/hooks/")).await;
    let url = receiver.url("/hooks/faas");
    let callback = [("x-callback-url", url.as_str())];
    let (status, json) = submit_at(&d, "/async-function/Upper", &callback).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let done = callback_status(&d, &id).await;
    assert!(
        done["callback"].as_str().unwrap().starts_with("delivered"),
        "{done}"
    );
    let sent = receiver.requests()[0].clone();
    assert_eq!(sent.header("x-call-id"), id);
    assert_eq!(sent.header("x-function-name"), "Upper");
    assert_eq!(sent.header("x-function-status"), "200");
    assert_eq!(sent.body, b"PAYLOAD");
    assert!(verify(&sent));

    let mut response = awc::Client::default()
        .post(format!("{}/function/Upper", d.http_url()))
        .insert_header(("content-type", "text/plain"))
        .send_body("now")
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(&response.body().await.unwrap()[..], b"NOW");
    worker.stop().await;
    d.stop().await;
}
