//! What a deployed nmid-faas shows its HTTP callers and its orchestrator: the request id,
//! query string, headers and raw bodies reaching functions; a function's 4xx and content
//! type reaching the caller; one status per cause for a caller's deadline; failing
//! functions counted as errors; readiness that follows the dispatcher; escaped processes
//! killed; relative paths; each start-up error printed once; the concurrency warning.

use std::time::{Duration, Instant};

use nmid::config::Config;

use super::common::process::Process;
use super::common::{start_dispatcher_with_http, PATIENCE};
use super::{read_pids, served, until_gone, Faas};

/// The test upstream: `/echo` answers (as JSON) what it received: query, the forwarded
/// headers, the request id, the body and its content type; `/missing` answers 404 with a
/// text body; `/html` answers 200 `text/html`.
fn start_upstream() -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpRequest, HttpResponse};
    super::start_upstream_with(|app| {
        app.route(
            "/echo",
            web::post().to(|req: HttpRequest, body: web::Bytes| async move {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap_or_default().to_owned())
                };
                HttpResponse::Ok().json(serde_json::json!({
                    "query": req.query_string(),
                    "request_id": header("x-request-id"),
                    "accept_language": header("accept-language"),
                    "content_type": header("content-type"),
                    "body": String::from_utf8_lossy(&body),
                }))
            }),
        )
        .route(
            "/missing",
            web::post().to(|| async {
                HttpResponse::NotFound()
                    .content_type("text/plain")
                    .body("no such product")
            }),
        )
        .route(
            "/html",
            web::post().to(|| async {
                HttpResponse::Ok()
                    .content_type("text/html")
                    .body("<p>hi</p>")
            }),
        );
    })
}

/// An HTTP caller's request id, query string, `Accept-Language` (a default
/// `http.forward_headers`) and raw `text/plain` body reach an http function; the function's
/// 404 stays a 404 with its body and content type, its `text/html` stays `text/html`; an
/// exec function gets the request id as `NMID_REQUEST_ID`; every answer carries the
/// request id.
#[actix_rt::test]
async fn http_callers_reach_functions_as_openfaas_users_expect() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let (upstream, server) = start_upstream();
    let faas = Faas::start(
        &dispatcher,
        &format!(
            r#"
            [[function]]
            name = "Echo"
            url = "http://{upstream}/echo?own=1"
            [[function]]
            name = "Missing"
            url = "http://{upstream}/missing"
            [[function]]
            name = "Html"
            url = "http://{upstream}/html"
            [[function]]
            name = "Env"
            command = ["sh", "-c", "printf '%s|%s' \"$NMID_REQUEST_ID\" \"$(cat)\""]
            "#
        ),
    );
    for function in ["Echo", "Missing", "Html", "Env"] {
        served(&dispatcher, function, 1).await;
    }
    let http = reqwest::Client::new();
    let url = |f: &str| format!("{}/call/{f}", dispatcher.http_url());

    let response = http
        .post(format!("{}?lang=en&page=2", url("Echo")))
        .header("x-request-id", "req-42")
        .header("accept-language", "fr")
        .header("content-type", "text/plain; charset=utf-8")
        .body("plain words")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let echoed: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(echoed["query"], "own=1&lang=en&page=2", "{echoed}");
    assert_eq!(echoed["request_id"], "req-42");
    assert_eq!(echoed["accept_language"], "fr");
    assert_eq!(echoed["content_type"], "text/plain; charset=utf-8");
    assert_eq!(echoed["body"], "plain words");

    let raw = http
        .post(url("Echo"))
        .header("content-type", "application/octet-stream")
        .body(vec![0xffu8, 0x00, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let made_up = raw.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!made_up.is_empty());
    let echoed: serde_json::Value = serde_json::from_slice(&raw.bytes().await.unwrap()).unwrap();
    assert_eq!(
        echoed["request_id"],
        made_up.as_str(),
        "the made-up id reaches it too"
    );
    assert_eq!(echoed["content_type"], "application/octet-stream");

    let missing = http.post(url("Missing")).body("{}").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-request-id"));
    assert_eq!(missing.headers()["content-type"], "text/plain");
    assert_eq!(missing.text().await.unwrap(), "no such product");

    let html = http.post(url("Html")).body("{}").send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert_eq!(html.headers()["content-type"], "text/html");

    let env = http
        .post(url("Env"))
        .header("x-request-id", "exec-7")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(env.status(), 200);
    assert_eq!(env.text().await.unwrap(), "exec-7|hello");

    // Errors carry the request id too: no worker (404 unknown, 503 once served), 502.
    let unknown = http.post(url("Nobody")).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key("x-request-id"));
    let bad = http
        .post(url("Echo"))
        .header("x-request-id", "bad-1")
        .header("content-type", "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 415);
    assert_eq!(bad.headers()["x-request-id"], "bad-1");
    faas.stop().await;
    served(&dispatcher, "Echo", 0).await;
    let gone = http
        .post(url("Echo"))
        .header("x-request-id", "gone-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 503);
    assert_eq!(gone.headers()["x-request-id"], "gone-1");
    server.stop(true).await;
    dispatcher.stop().await;
}

/// An exec function gets what an http function gets from an HTTP caller, as environment
/// variables: the query string (`NMID_QUERY`), each forwarded header (`Accept-Language`, a
/// default `http.forward_headers`, as `NMID_HEADER_ACCEPT_LANGUAGE`) and the request id.
#[actix_rt::test]
async fn an_exec_function_gets_the_query_and_forwarded_headers() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let faas = Faas::start(
        &dispatcher,
        "[[function]]\nname = \"Env\"\ncommand = [\"sh\", \"-c\", \"cat >/dev/null; env\"]\n",
    );
    served(&dispatcher, "Env", 1).await;
    let response = reqwest::Client::new()
        .post(format!("{}/call/Env?lang=en&page=2", dispatcher.http_url()))
        .header("x-request-id", "req-9")
        .header("accept-language", "fr")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let env = response.text().await.unwrap();
    let var = |name: &str| {
        (env.lines())
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    assert_eq!(
        var("NMID_QUERY").as_deref(),
        Some("lang=en&page=2"),
        "{env}"
    );
    assert_eq!(
        var("NMID_HEADER_ACCEPT_LANGUAGE").as_deref(),
        Some("fr"),
        "{env}"
    );
    assert_eq!(var("NMID_REQUEST_ID").as_deref(), Some("req-9"), "{env}");
    faas.stop().await;
    dispatcher.stop().await;
}

/// A caller's deadline passing on a hanging function is always 504 `timeout` (never 502),
/// 20 times over; a function's own `timeout_ms`, shorter than the caller's, is 502.
#[actix_rt::test]
async fn a_callers_deadline_is_always_504() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let faas = Faas::start(
        &dispatcher,
        r#"
        [[function]]
        name = "Hang"
        command = ["sleep", "30"]
        [[function]]
        name = "Short"
        command = ["sleep", "30"]
        timeout_ms = 200
        "#,
    );
    served(&dispatcher, "Hang", 1).await;
    served(&dispatcher, "Short", 1).await;
    let http = reqwest::Client::new();
    let url = format!("{}/call/Hang", dispatcher.http_url());
    // One after another, as a user retrying would: each call alone on the machine, where
    // the worker's failure can race the dispatcher's timer.
    for _ in 0..20 {
        let response = http
            .post(&url)
            .header("x-nmid-timeout-ms", "300")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 504, "{body}");
        assert!(body.contains(r#""code":"timeout""#), "{body}");
    }
    let short = http
        .post(format!("{}/call/Short", dispatcher.http_url()))
        .header("x-nmid-timeout-ms", "5000")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        short.status(),
        502,
        "the function's own timeout is its failure"
    );
    faas.stop().await;
    dispatcher.stop().await;
}

/// nmid-faas's `/readyz` is 503 until its functions are registered, 200 while they are,
/// 503 again once the dispatcher is gone (and `/healthz` says so, still 200), and it logs
/// each transition once.
#[actix_rt::test]
async fn readiness_follows_the_dispatcher() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let port = super::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let faas = Faas::start_with(
        &dispatcher,
        "[[function]]\nname = \"Upper\"\ncommand = [\"tr\", \"a-z\", \"A-Z\"]\n",
        &["--metrics-addr", &metrics],
    );
    let get = |path: &'static str| {
        let url = format!("http://{metrics}{path}");
        async move {
            let response = reqwest::get(&url).await.ok()?;
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
            Some((status, body))
        }
    };
    let deadline = Instant::now() + PATIENCE;
    while get("/readyz").await.map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "never ready:\n{}", faas.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faas.wait_for_log("connected to dispatcher; functions registered")
        .await;
    // nmidctl health reads nmid-faas's readiness as the image's HEALTHCHECK does.
    let health = std::process::Command::new(env!("CARGO_BIN_EXE_nmidctl"))
        .args(["--http", &format!("http://{metrics}"), "health"])
        .output()
        .unwrap();
    assert!(health.status.success(), "{health:?}");

    dispatcher.stop().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get("/readyz").await.expect("nmid-faas answers");
        if status == 503 {
            assert!(body["reason"].as_str().unwrap().contains("Upper"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready without a dispatcher"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = get("/healthz").await.unwrap();
    assert_eq!(
        (status, &body["ready"]),
        (200, &serde_json::json!(false)),
        "{body}"
    );
    faas.wait_for_log("disconnected from dispatcher").await;
    faas.wait_for_log("dispatcher unreachable").await;
    let log = faas.log();
    assert_eq!(log.matches("dispatcher unreachable").count(), 1, "{log}");
    faas.stop().await;
}

/// A command that starts a process in a session of its own (`setsid`), which leaves the
/// call's process group, does not outlive the call.
#[actix_rt::test]
async fn an_escaped_setsid_child_is_killed_after_the_call() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let dir = super::temp_dir();
    let pids = dir.join("pids");
    let faas = Faas::start(
        &dispatcher,
        &format!(
            r#"
            [[function]]
            name = "Escape"
            command = ["sh", "-c", "setsid sleep 300 > /dev/null 2>&1 & echo $! >> {}; echo started"]
            "#,
            pids.display()
        ),
    );
    served(&dispatcher, "Escape", 1).await;
    let (status, body) = super::http_post(&dispatcher, "Escape", "{}").await;
    assert_eq!((status, body.trim()), (200, "started"));
    let escaped = read_pids(&pids);
    assert_eq!(escaped.len(), 1, "{escaped:?}");
    until_gone(&escaped, "its call (a setsid child)", PATIENCE, &faas).await;
    faas.stop().await;
    dispatcher.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A command whose `setsid` child keeps the call's stdout and stderr open answers what it
/// printed as soon as it exits, not empty after waiting on the pipes; and the child, left
/// holding the pipes, is killed.
#[actix_rt::test]
async fn a_setsid_child_holding_the_output_neither_delays_nor_loses_it() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let dir = super::temp_dir();
    let pids = dir.join("pids");
    let faas = Faas::start(
        &dispatcher,
        &format!(
            r#"
            [[function]]
            name = "Hold"
            command = ["sh", "-c", "setsid sh -c 'echo $$ > {pids}; exec sleep 100' & while [ ! -s {pids} ]; do sleep 0.01; done; echo hi"]
            "#,
            pids = pids.display()
        ),
    );
    served(&dispatcher, "Hold", 1).await;
    let client = nmid::client::Client::connect(dispatcher.addr.to_string())
        .await
        .unwrap();
    let started = Instant::now();
    let data = client
        .call_data("Hold", &super::Name { name: "x" })
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(&data[..], b"hi\n");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    let escaped = read_pids(&pids);
    assert_eq!(escaped.len(), 1, "{escaped:?}");
    until_gone(&escaped, "its call (a setsid child)", PATIENCE, &faas).await;
    faas.stop().await;
    dispatcher.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A relative script path (`python3 greet.py`, `./run.sh`) resolves against the functions
/// file's directory, whatever nmid-faas's working directory.
#[actix_rt::test]
async fn relative_paths_resolve_against_the_functions_file() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let functions = r#"
        [[function]]
        name = "Greet"
        command = ["python3", "greet.py"]
        [[function]]
        name = "Run"
        command = ["./run.sh"]
        "#;
    let dir = super::temp_dir();
    std::fs::write(dir.join("functions.toml"), functions).unwrap();
    std::fs::write(dir.join("greet.py"), "print('hello from greet', end='')\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\nprintf ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
        .args(["--check", "functions.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let elsewhere = super::temp_dir();
    let child = Process::adopt(
        std::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
            .args(["--server", &dispatcher.addr.to_string()])
            .arg(dir.join("functions.toml"))
            .current_dir(&elsewhere)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        "nmid-faas",
    );
    served(&dispatcher, "Greet", 1).await;
    served(&dispatcher, "Run", 1).await;
    assert_eq!(
        super::http_post(&dispatcher, "Greet", "{}").await,
        (200, "hello from greet".to_owned())
    );
    assert_eq!(
        super::http_post(&dispatcher, "Run", "{}").await,
        (200, "ran".to_owned())
    );
    drop(child); // killed, and its stderr scanned for panics
    dispatcher.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(elsewhere);
}

/// A functions file that cannot be read is reported once (not once per error layer), exit 2;
/// `--check` warns, naming both keys, when a `concurrency` is above what a dispatcher grants
/// by default.
#[test]
fn start_up_errors_once_and_the_concurrency_warning() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
        .arg("/no/such/functions.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("/no/such/functions.toml").count(),
        1,
        "{stderr}"
    );

    let dir = super::temp_dir();
    let file = dir.join("functions.toml");
    std::fs::write(
        &file,
        "[[function]]\nname = \"Wide\"\ncommand = [\"cat\"]\nconcurrency = 100\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
        .arg("--check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("concurrency 100") && stderr.contains("workers.max_jobs_in_flight"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
