//! Background jobs over HTTP, end to end against an in-process dispatcher on 127.0.0.1 with
//! library workers (issue 23): submit -> 202 with the id -> status and result; priorities
//! with one worker slot; a delayed job; unique keys shared by 100 submitters; cancel, list;
//! a job's visibility with auth on; every bad input with its status and code.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{start_dispatcher_with_http, TestDispatcher};
use futures_util::future::join_all;
use nmid::config::{Config, TokenConfig};
use nmid::worker::{Job, Worker, WorkerHandle};
use serde_json::Value;

const JSON: (&str, &str) = ("content-type", "application/json");

struct Reply {
    status: u16,
    headers: awc::http::header::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> String {
        (self.headers.get(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn assert_error(&self, status: u16, code: &str) {
        let json = self.json();
        assert_eq!(
            (self.status, json["code"].as_str()),
            (status, Some(code)),
            "{json}"
        );
        assert!(!json["error"].as_str().unwrap().is_empty(), "{json}");
    }
}

async fn request(method: &str, url: String, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut request = client.request(method.parse().unwrap(), url);
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request.send_body(body).await.expect("an HTTP response");
    let body = response.body().limit(64 << 20).await.expect("the body");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body,
    }
}

/// Submits `body` to `function` with `headers`; the reply.
async fn submit(d: &TestDispatcher, function: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let kind = match body.starts_with('{') {
        true => JSON,
        false => ("content-type", "text/plain"),
    };
    let mut all = vec![kind];
    all.extend_from_slice(headers);
    let url = format!("{}/async/{function}", d.http_url());
    request("POST", url, &all, Bytes::copy_from_slice(body.as_bytes())).await
}

/// Submits and returns the job id, asserting the 202 and its headers.
async fn submitted(
    d: &TestDispatcher,
    function: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let reply = submit(d, function, headers, body).await;
    assert_eq!(reply.status, 202, "{:?}", reply.json());
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("x-call-id"), id);
    assert_eq!(reply.header("location"), format!("/api/v1/jobs/{id}"));
    id
}

async fn status(d: &TestDispatcher, id: &str, wait_ms: u64) -> Reply {
    let url = format!("{}/api/v1/jobs/{id}?wait_ms={wait_ms}", d.http_url());
    request("GET", url, &[], Bytes::new()).await
}

/// Waits for job `id` to end; its final status.
async fn final_status(d: &TestDispatcher, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = status(d, id, 5000).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        let json = reply.json();
        if ["succeeded", "failed", "cancelled"].contains(&json["state"].as_str().unwrap()) {
            return json;
        }
        assert!(Instant::now() < deadline, "job {id} still {json}");
    }
}

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
    gated_echo_worker(
        d,
        slots,
        ran,
        Arc::new(tokio::sync::Semaphore::new(1 << 20)),
    )
    .await
}

/// Like [`echo_worker`], each job first waiting for a permit of `gate` (kept).
async fn gated_echo_worker(
    d: &TestDispatcher,
    slots: u32,
    ran: Arc<Mutex<Vec<String>>>,
    gate: Arc<tokio::sync::Semaphore>,
) -> WorkerHandle {
    let worker = Worker::builder()
        .name("echo")
        .server(d.addr.to_string())
        .slots(slots)
        .function("Echo", move |job: Job| {
            let ran = ran.clone();
            let gate = gate.clone();
            async move {
                let text = String::from_utf8_lossy(job.params()).into_owned();
                ran.lock().unwrap().push(text);
                gate.acquire().await.unwrap().forget();
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(d, "Echo").await;
    worker
}

/// A submission answers 202 at once with the id (X-Call-Id, Location); the job runs, and its
/// status then says succeeded with the worker's result, which `/result` answers as `/call`
/// would.
#[actix_rt::test]
async fn a_submitted_job_runs_and_its_result_is_kept() {
    let d = start_dispatcher_with_http(config());
    let _w = Worker::builder()
        .name("upper")
        .server(d.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    serving(&d, "ToUpper").await;
    let id = submitted(&d, "ToUpper", &[], r#"{"name":"later"}"#).await;
    let json = final_status(&d, &id).await;
    assert_eq!(json["state"], "succeeded", "{json}");
    assert_eq!(json["attempts"], 1);
    assert_eq!(json["function"], "ToUpper");
    let url = format!("{}/api/v1/jobs/{id}/result", d.http_url());
    let result = request("GET", url, &[], Bytes::new()).await;
    assert_eq!(result.status, 200);
    assert!(
        String::from_utf8_lossy(&result.body).contains("LATER"),
        "{:?}",
        result.body
    );
    d.stop().await;
}

/// With one worker slot, high jobs submitted after normal ones run before them, low ones
/// last; a job delayed by 1.5 s does not start before then.
#[actix_rt::test]
async fn high_jobs_overtake_queued_normal_ones_and_delays_hold() {
    let d = start_dispatcher_with_http(config());
    let ran = Arc::new(Mutex::new(Vec::new()));
    // The first job holds the one slot until every other job is queued.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let _w = gated_echo_worker(&d, 1, ran.clone(), gate.clone()).await;
    let mut ids = Vec::new();
    // The first occupies the slot; the rest wait.
    for (name, priority) in [
        ("n0", "normal"),
        ("n1", "normal"),
        ("n2", "normal"),
        ("l1", "low"),
        ("h1", "high"),
        ("h2", "high"),
    ] {
        let body = format!("\"{name}\"");
        ids.push(submitted(&d, "Echo", &[("x-nmid-priority", priority)], &body).await);
        if name == "n0" {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ran.lock().unwrap().is_empty() {
                assert!(Instant::now() < deadline, "n0 never started");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    gate.add_permits(1 << 20);
    for id in &ids {
        assert_eq!(final_status(&d, id).await["state"], "succeeded");
    }
    let order = ran.lock().unwrap().clone();
    assert_eq!(
        order,
        ["\"n0\"", "\"h1\"", "\"h2\"", "\"n1\"", "\"n2\"", "\"l1\""]
    );

    let asked = Instant::now();
    let id = submitted(&d, "Echo", &[("x-nmid-delay-ms", "1500")], "\"later\"").await;
    let json = status(&d, &id, 0).await.json();
    assert_eq!(json["state"], "queued");
    let json = final_status(&d, &id).await;
    let started = json["started_ms"].as_u64().unwrap();
    let created = json["created_ms"].as_u64().unwrap();
    assert!(
        started >= created + 1500,
        "started {} ms after submission",
        started - created
    );
    assert!(asked.elapsed() >= Duration::from_millis(1500));
    d.stop().await;
}

/// 100 concurrent submissions with one unique key while its job is queued or running: one
/// id, one execution, and the same result for every submitter.
#[actix_rt::test]
async fn submissions_with_one_unique_key_share_one_execution() {
    let d = start_dispatcher_with_http(config());
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
    let key = [("x-nmid-unique-key", "report-2026-12")];
    let replies = join_all((0..100).map(|_| submit(&d, "Slow", &key, "\"r\""))).await;
    let mut ids: Vec<String> = (replies.iter())
        .map(|r| {
            assert_eq!(r.status, 202);
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.json()["shared"] == false)
            .count(),
        1
    );
    ids.dedup();
    assert_eq!(ids.len(), 1, "every submitter got the one job");
    let results = join_all((0..100).map(|_| final_status(&d, &ids[0]))).await;
    assert!(results
        .iter()
        .all(|r| r["state"] == "succeeded" && r["result"] == "\"r\""));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one execution");
    // Once it is over, the key starts a new job.
    let again = submitted(&d, "Slow", &key, "\"r\"").await;
    assert_ne!(again, ids[0]);
    d.stop().await;
}

/// A queued job is cancelled (200, then never runs); a running one is not (409); the list
/// filters by function and state and pages with `next`.
#[actix_rt::test]
async fn queued_jobs_cancel_running_ones_do_not_and_lists_page() {
    let d = start_dispatcher_with_http(config());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _w = echo_worker(&d, 1, ran.clone()).await;
    let slow = submitted(&d, "Echo", &[("x-nmid-delay-ms", "0")], "\"first\"").await;
    let later = submitted(&d, "Echo", &[("x-nmid-delay-ms", "60000")], "\"never\"").await;
    let url = |id: &str| format!("{}/api/v1/jobs/{id}", d.http_url());
    let cancelled = request("DELETE", url(&later), &[], Bytes::new()).await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["state"], "cancelled");
    let again = request("DELETE", url(&later), &[], Bytes::new()).await;
    assert_eq!(again.status, 409, "{:?}", again.json());
    final_status(&d, &slow).await;
    assert!(!ran.lock().unwrap().contains(&"\"never\"".to_owned()));
    for i in 0..5 {
        submitted(&d, "Echo", &[("x-nmid-delay-ms", "60000")], &format!("{i}")).await;
    }
    let list = |query: &str| {
        let url = format!("{}/api/v1/jobs?{query}", d.http_url());
        request("GET", url, &[], Bytes::new())
    };
    let page = list("state=queued&limit=3").await.json();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3, "{page}");
    let next = page["next"].as_u64().unwrap();
    let rest = list(&format!("state=queued&limit=3&after={next}"))
        .await
        .json();
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 2, "{rest}");
    assert!(rest["next"].is_null());
    let cancelled = list("state=cancelled&function=Echo").await.json();
    assert_eq!(cancelled["jobs"].as_array().unwrap().len(), 1);
    list("state=bogus").await.assert_error(400, "bad_request");
    list("limit=-1").await.assert_error(400, "bad_request");
    list("after=null").await.assert_error(400, "bad_request");
    d.stop().await;
}

/// Bad input gets a clear error and changes nothing: an unknown job id 404, params over the
/// body limit 413, a bad option 400, a callback URL this dispatcher does not allow 400, a
/// full store 429 with Retry-After.
#[actix_rt::test]
async fn bad_submissions_and_ids_get_clear_errors() {
    let mut config = config();
    config.jobs.max_stored_jobs = 2;
    config.http.max_body_bytes = 1024;
    let d = start_dispatcher_with_http(config);
    status(&d, "nosuchnode-1", 0)
        .await
        .assert_error(404, "job_not_found");
    status(&d, "junk", 0)
        .await
        .assert_error(404, "job_not_found");
    let big = format!("\"{}\"", "x".repeat(4096));
    submit(&d, "Any", &[], &big)
        .await
        .assert_error(413, "body_too_large");
    submit(&d, "Any", &[("x-nmid-priority", "urgent")], "1")
        .await
        .assert_error(400, "bad_request");
    submit(&d, "Any", &[("x-nmid-max-attempts", "0")], "1")
        .await
        .assert_error(400, "bad_request");
    let callback = [("x-callback-url", "http://169.254.169.254/latest")];
    submit(&d, "Any", &callback, "1")
        .await
        .assert_error(400, "bad_request");
    // No worker serves `Any`: the jobs wait, filling the store.
    submitted(&d, "Any", &[], "1").await;
    submitted(&d, "Any", &[], "2").await;
    let full = submit(&d, "Any", &[], "3").await;
    full.assert_error(429, "store_full");
    assert_eq!(full.header("retry-after"), "1");
    assert!(full.json()["error"]
        .as_str()
        .unwrap()
        .contains("jobs.max_stored_jobs"));
    d.stop().await;
}

fn token(name: &str, secret: &str, roles: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        secret: secret.to_owned(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        functions: vec!["Echo".to_owned()],
        ..TokenConfig::default()
    }
}

/// With auth on, a job is its submitter's: another client's token gets 404 for it (and
/// cannot cancel it), and its unique key is its own; the admin sees every job; a worker's
/// token sees none.
#[actix_rt::test]
async fn with_auth_a_job_is_its_submitters() {
    let mut config = config();
    config.auth.enabled = true;
    config.auth.tokens = vec![
        token("a", "a-secret-0123456789", &["client"]),
        token("b", "b-secret-0123456789", &["client"]),
        token("ops", "ops-secret-0123456789", &["admin"]),
        token("w", "w-secret-0123456789", &["worker"]),
    ];
    let d = start_dispatcher_with_http(config);
    let bearer = |s: &str| ("authorization", format!("Bearer {s}-secret-0123456789"));
    let (name, a) = bearer("a");
    let headers_a = [
        (name, a.as_str()),
        ("x-nmid-delay-ms", "60000"),
        ("x-nmid-unique-key", "k"),
    ];
    let id = submitted(&d, "Echo", &headers_a, "1").await;
    let url = format!("{}/api/v1/jobs/{id}", d.http_url());
    let as_who = |who: &str| {
        let (name, value) = bearer(who);
        let url = url.clone();
        async move { request("GET", url, &[(name, value.as_str())], Bytes::new()).await }
    };
    assert_eq!(as_who("a").await.status, 200);
    as_who("b").await.assert_error(404, "job_not_found");
    // Waiting on another caller's job tells nothing either: refused before any wait.
    let (name, b) = bearer("b");
    let asked = Instant::now();
    let waited = request(
        "GET",
        format!("{url}?wait_ms=3000"),
        &[(name, b.as_str())],
        Bytes::new(),
    )
    .await;
    waited.assert_error(404, "job_not_found");
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "waited {:?}",
        asked.elapsed()
    );
    assert_eq!(as_who("ops").await.status, 200);
    assert_eq!(as_who("w").await.status, 403);
    let (name, b) = bearer("b");
    let cancel = request("DELETE", url.clone(), &[(name, b.as_str())], Bytes::new()).await;
    cancel.assert_error(404, "job_not_found");
    let headers_b = [
        (name, b.as_str()),
        ("x-nmid-delay-ms", "60000"),
        ("x-nmid-unique-key", "k"),
    ];
    let other = submitted(&d, "Echo", &headers_b, "1").await;
    assert_ne!(other, id, "b's unique key is b's own");
    let list = format!("{}/api/v1/jobs", d.http_url());
    let seen = request("GET", list.clone(), &[(name, b.as_str())], Bytes::new())
        .await
        .json();
    let ids: Vec<&str> = (seen["jobs"].as_array().unwrap().iter())
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [other.as_str()]);
    let (name, ops) = bearer("ops");
    let all = request("GET", list, &[(name, ops.as_str())], Bytes::new())
        .await
        .json();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let nobody = request("GET", url, &[], Bytes::new()).await;
    assert_eq!(nobody.status, 401);
    d.stop().await;
}

/// The metrics show queued jobs by function and priority, the oldest due job's age, final
/// jobs by state and attempts.
#[actix_rt::test]
async fn background_jobs_show_in_the_metrics() {
    let d = start_dispatcher_with_http(config());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _w = echo_worker(&d, 1, ran).await;
    for i in 0..3 {
        let headers = [("x-nmid-priority", "low"), ("x-nmid-delay-ms", "60000")];
        submitted(&d, "Echo", &headers, &i.to_string()).await;
    }
    let done = submitted(&d, "Echo", &[], "now").await;
    final_status(&d, &done).await;
    let metrics = || async {
        let url = format!("{}/metrics", d.http_url());
        let reply = request("GET", url, &[], Bytes::new()).await;
        String::from_utf8_lossy(&reply.body).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = [
        r#"nmid_jobs_queued{function="Echo",priority="low"} 3"#,
        r#"nmid_jobs_finished{state="succeeded"} 1"#,
        "nmid_jobs_attempts_total 1",
        "nmid_jobs_running 0",
        "nmid_jobs_oldest_queued_seconds 0",
    ];
    loop {
        let text = metrics().await;
        if wanted.iter().all(|w| text.contains(w)) {
            assert!(text.contains("nmid_jobs_store_bytes "));
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What nmidctl top shows: per function, and in the summary.
    let get = |path: &str| request("GET", format!("{}{path}", d.http_url()), &[], Bytes::new());
    let functions = get("/api/v1/functions").await.json();
    let echo = (functions.as_array().unwrap().iter())
        .find(|f| f["name"] == "Echo")
        .unwrap();
    assert_eq!(echo["jobs_queued"], 3, "{functions}");
    let stats = get("/api/v1/stats").await.json();
    assert_eq!(
        (
            stats["jobs_queued"].as_u64(),
            stats["jobs_running"].as_u64()
        ),
        (Some(3), Some(0))
    );
    d.stop().await;
}

/// A function that fails (nmid's RetStruct with a non-zero `Code`) is tried `max-attempts`
/// times with the backoff between, then the job fails with its message; a client error
/// code (4xx) is not tried again.
#[actix_rt::test]
async fn failing_functions_are_retried_then_fail() {
    let d = start_dispatcher_with_http(config());
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let _w = Worker::builder()
        .name("fails")
        .server(d.addr.to_string())
        .function("Fails", move |job: Job| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let code = match &job.params()[..] {
                    b"client" => 422,
                    _ => 500,
                };
                let ret = nmid::retstruct::RetStruct::error(code, "no luck");
                Ok(Bytes::from(ret.encode()))
            }
        })
        .start()
        .unwrap();
    serving(&d, "Fails").await;
    let id = submitted(&d, "Fails", &[("x-nmid-max-attempts", "3")], "server").await;
    let json = final_status(&d, &id).await;
    assert_eq!(json["state"], "failed", "{json}");
    assert_eq!(json["attempts"], 3);
    assert_eq!(json["error_code"], "function_error");
    assert!(
        json["error"].as_str().unwrap().contains("no luck"),
        "{json}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let id = submitted(&d, "Fails", &[("x-nmid-max-attempts", "3")], "client").await;
    let json = final_status(&d, &id).await;
    assert_eq!(
        (json["state"].as_str(), json["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    let url = format!("{}/api/v1/jobs/{id}/result", d.http_url());
    let result = request("GET", url, &[], Bytes::new()).await;
    result.assert_error(502, "function_error");
    d.stop().await;
}

/// A running background job shows its worker's latest progress in its status; partial data
/// a worker sends for it goes nowhere and harms nothing.
#[actix_rt::test]
async fn a_running_jobs_status_shows_its_progress() {
    let d = start_dispatcher_with_http(config());
    let _w = Worker::builder()
        .name("progress")
        .server(d.addr.to_string())
        .function("Steps", |job: Job| async move {
            for step in 1..=3 {
                job.progress(step, 4);
                job.send_partial(Bytes::from_static(b"chunk")).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(Bytes::from_static(b"done"))
        })
        .start()
        .unwrap();
    serving(&d, "Steps").await;
    let id = submitted(&d, "Steps", &[], "go").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json = status(&d, &id, 0).await.json();
        if json["progress"] == serde_json::json!({"numerator": 3, "denominator": 4}) {
            assert_eq!(json["state"], "running", "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress in {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let json = final_status(&d, &id).await;
    assert_eq!(
        (json["state"].as_str(), json["result"].as_str()),
        (Some("succeeded"), Some("done"))
    );
    d.stop().await;
}

/// A worker of `Nap` (300 ms, then its params) with one slot.
async fn napper(d: &TestDispatcher) -> WorkerHandle {
    let worker = Worker::builder()
        .name("napper")
        .server(d.addr.to_string())
        .slots(1)
        .function("Nap", |job: Job| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(job.params().clone())
        })
        .start()
        .unwrap();
    serving(d, "Nap").await;
    worker
}

/// Cancels job `id`, which waits for a slot: queued, so 200.
async fn cancel_waiting(d: &TestDispatcher, id: String) {
    let url = format!("{}/api/v1/jobs/{id}", d.http_url());
    let cancelled = request("DELETE", url, &[], Bytes::new()).await;
    assert_eq!(
        cancelled.status,
        200,
        "a job waiting for a slot is queued: {:?}",
        cancelled.json()
    );
}

/// Every job of `ids` ends succeeded at its first attempt.
async fn succeeded_first_time(d: &TestDispatcher, ids: &[String]) {
    for id in ids {
        let json = final_status(d, id).await;
        assert_eq!(
            (json["state"].as_str(), json["attempts"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{json}"
        );
    }
}

/// With one worker slot, jobs beyond it stay queued (no attempt counted, cancellable), one
/// runs at a time, and each attempt's time starts when a worker can take it: six jobs of
/// 300 ms with `jobs.timeout_ms = 1000` all succeed at their first attempt (handed to the
/// registry all at once, the later ones timed out waiting behind the others).
#[actix_rt::test]
async fn jobs_beyond_the_workers_slots_stay_queued_until_a_slot_is_free() {
    let mut config = config();
    config.jobs.timeout_ms = 1000;
    let d = start_dispatcher_with_http(config);
    let worker = napper(&d).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submitted(&d, "Nap", &[], &format!("{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let count = |state: &'static str| {
        let url = format!("{}/api/v1/jobs?state={state}&function=Nap", d.http_url());
        async move {
            let page = request("GET", url, &[], Bytes::new()).await.json();
            page["jobs"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("running").await, 1, "one slot, one running job");
    cancel_waiting(&d, ids.pop().unwrap()).await;
    succeeded_first_time(&d, &ids).await;
    worker.stop().await;
    d.stop().await;
}

/// A job with a result TTL of 0 is still read by a caller already waiting for it (it is
/// kept 1 s at least), then forgotten; an option given twice is refused, naming it.
#[actix_rt::test]
async fn a_waiting_caller_reads_a_job_kept_for_no_time_and_options_are_given_once() {
    let d = start_dispatcher_with_http(config());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _w = echo_worker(&d, 1, ran).await;
    let id = submitted(&d, "Echo", &[("x-nmid-result-ttl-ms", "0")], "\"brief\"").await;
    let reply = status(&d, &id, 5000).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(reply.json()["state"], "succeeded", "{:?}", reply.json());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    status(&d, &id, 0).await.assert_error(404, "job_not_found");

    // Both headers sent (the helpers' requests would keep the last).
    let twice = |headers: [(&'static str, &'static str); 2]| {
        let url = format!("{}/async/Echo", d.http_url());
        async move {
            let mut request = awc::Client::new()
                .post(url)
                .insert_header(("content-type", "text/plain"));
            for header in headers {
                request = request.append_header(header);
            }
            let mut response = request.send_body("x").await.unwrap();
            let body = response.body().await.unwrap();
            let json: Value = serde_json::from_slice(&body).unwrap();
            (
                response.status().as_u16(),
                json["error"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let (status, message) = twice([("x-nmid-delay-ms", "600000"), ("x-nmid-delay-ms", "5")]).await;
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("delay-ms") && message.contains("twice"),
        "{message}"
    );
    let (status, message) = twice([
        ("x-callback-url", "http://127.0.0.1:1/a"),
        ("x-nmid-callback-url", "http://127.0.0.1:1/b"),
    ])
    .await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("callback-url"), "{message}");
    let (status, message) =
        twice([("x-nmid-timeout-ms", "1000"), ("x-nmid-timeout-ms", "5")]).await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("twice"), "{message}");
    d.stop().await;
}

/// Synchronous calls keep the one worker slot busy: background jobs wait queued for a free
/// slot (cancellable, no attempt counted), then run within their own time; handed to the
/// registry at once they waited behind the calls until their deadline.
#[actix_rt::test]
async fn background_jobs_wait_queued_while_synchronous_calls_hold_the_slots() {
    let mut config = config();
    // A 300 ms job fits, one that also waited behind a 300 ms call would not.
    config.jobs.timeout_ms = 500;
    let d = start_dispatcher_with_http(config);
    let worker = napper(&d).await;
    let busy_until = Instant::now() + Duration::from_millis(2000);
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let addr = d.addr;
            tokio::spawn(async move {
                let client = nmid::client::Client::connect(addr.to_string())
                    .await
                    .unwrap();
                while Instant::now() < busy_until {
                    let _ = client.call("Nap", "sync").await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submitted(&d, "Nap", &[("x-nmid-max-attempts", "1")], &format!("{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel_waiting(&d, ids.pop().unwrap()).await;
    for caller in callers {
        caller.await.unwrap();
    }
    succeeded_first_time(&d, &ids).await;
    worker.stop().await;
    d.stop().await;
}

/// A worker of two functions with two slots: six jobs of both, due at one instant, share its
/// two slots (counted once, not once per function), so the others stay queued and every job
/// runs within its 500 ms (counted per function, four went at once and two timed out
/// waiting behind the others).
#[actix_rt::test]
async fn a_worker_of_two_functions_has_its_slots_counted_once() {
    let mut config = config();
    config.jobs.timeout_ms = 500;
    let d = start_dispatcher_with_http(config);
    let nap = |job: Job| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(job.params().clone())
    };
    let worker = Worker::builder()
        .name("two")
        .server(d.addr.to_string())
        .slots(2)
        .function("NapA", nap)
        .function("NapB", nap)
        .start()
        .unwrap();
    serving(&d, "NapA").await;
    serving(&d, "NapB").await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let run_at = (now_ms + 700).to_string();
    let mut ids = Vec::new();
    for i in 0..3 {
        for function in ["NapA", "NapB"] {
            let headers = [
                ("x-nmid-max-attempts", "1"),
                ("x-nmid-run-at", run_at.as_str()),
            ];
            ids.push(submitted(&d, function, &headers, &format!("{i}")).await);
        }
    }
    succeeded_first_time(&d, &ids).await;
    worker.stop().await;
    d.stop().await;
}

/// A synchronous caller and background jobs take turns at one slot: a job that ends leaves
/// its slot to the call waiting for it, and the next job starts only when the slot is free
/// again, so each runs within its 450 ms (starting the next job at once sent it behind the
/// waiting call, to time out there).
#[actix_rt::test]
async fn a_slot_a_job_leaves_goes_to_the_call_waiting_for_it() {
    let mut config = config();
    config.jobs.timeout_ms = 450;
    let d = start_dispatcher_with_http(config);
    let worker = napper(&d).await;
    let busy_until = Instant::now() + Duration::from_millis(3000);
    let addr = d.addr;
    let caller = tokio::spawn(async move {
        let client = nmid::client::Client::connect(addr.to_string())
            .await
            .unwrap();
        while Instant::now() < busy_until {
            let _ = client.call("Nap", "sync").await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submitted(&d, "Nap", &[("x-nmid-max-attempts", "1")], &format!("{i}")).await);
    }
    caller.await.unwrap();
    succeeded_first_time(&d, &ids).await;
    worker.stop().await;
    d.stop().await;
}
