//! Http functions against a live HTTP service, and the examples in examples/faas.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nmid::client::{CallOptions, Client, ClientError};
use nmid::config::Config;

use super::common::{start_dispatcher_with_http, PATIENCE};
use super::{http_post, served, Faas, KillOnDrop, Name};

/// The test HTTP service behind the http functions: `/upper` upper-cases the body, `/fail`
/// answers 500 with a reason, `/slow` answers after 3 s.
fn start_upstream() -> (SocketAddr, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpResponse};
    super::start_upstream_with(|app| {
        app.route(
            "/upper",
            web::post().to(|req: actix_web::HttpRequest, body: String| async move {
                let function = req
                    .headers()
                    .get("x-nmid-function")
                    .map(|v| v.to_str().unwrap().to_owned());
                HttpResponse::Ok().body(format!(
                    "{}:{}",
                    function.unwrap_or_default(),
                    body.to_uppercase()
                ))
            }),
        )
        .route(
            "/fail",
            web::post()
                .to(|| async { HttpResponse::InternalServerError().body("database is down") }),
        )
        .route(
            "/slow",
            web::post().to(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                HttpResponse::Ok().body("late")
            }),
        );
    })
}

/// http functions against a live HTTP service: a 2xx body is the result, a 500 is the
/// function's error with status and body, a closed port is "unreachable", and a slow
/// answer is cut at the function's timeout.
#[actix_rt::test]
async fn http_functions_map_results_statuses_and_failures() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let (upstream, server) = start_upstream();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let faas = Faas::start(
        &dispatcher,
        &format!(
            r#"
            [[function]]
            name = "Upper"
            url = "http://{upstream}/upper"
            [[function]]
            name = "Broken"
            url = "http://{upstream}/fail"
            [[function]]
            name = "Down"
            url = "http://{closed}/x"
            [[function]]
            name = "Slow"
            url = "http://{upstream}/slow"
            timeout_ms = 300
            "#
        ),
    );
    for function in ["Upper", "Broken", "Down", "Slow"] {
        served(&dispatcher, function, 1).await;
    }
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let data = client
        .call_data("Upper", &Name { name: "nmid" })
        .await
        .unwrap();
    assert_eq!(&data[..], br#"Upper:{"NAME":"NMID"}"#);
    let (status, body) = http_post(&dispatcher, "Upper", r#"{"name":"via http"}"#).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"Upper:{"NAME":"VIA HTTP"}"#)
    );

    match client.call_data("Broken", &Name { name: "x" }).await {
        Err(ClientError::Function { code, message }) => {
            assert_eq!(code, 500);
            assert!(
                message.contains("HTTP 500") && message.contains("database is down"),
                "{message}"
            );
        }
        other => panic!("expected the upstream's 500, got {other:?}"),
    }
    match client.call_data("Down", &Name { name: "x" }).await {
        Err(ClientError::WorkerError(message)) => {
            assert!(
                message.contains("unreachable") && message.contains(&closed.to_string()),
                "{message}"
            )
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    let started = Instant::now();
    match client.call_data("Slow", &Name { name: "x" }).await {
        Err(ClientError::WorkerError(message)) => {
            assert!(message.contains("timed out after 300 ms"), "{message}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    faas.stop().await;
    server.stop(false).await;
    dispatcher.stop().await;
}

/// The examples in examples/faas serve as their comments say: the shell one-liners, the
/// Python script (its error exit included) and the HTTP service behind nmid-faas.
#[actix_rt::test]
async fn the_examples_serve_as_documented() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let example = |name: &str| std::fs::read_to_string(format!("examples/faas/{name}")).unwrap();
    let port = super::free_port();
    let _service = KillOnDrop(
        Command::new("python3")
            .args(["examples/faas/http_service.py", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the example service"),
    );
    let files = format!(
        "{}\n{}\n{}",
        example("shell.toml"),
        example("python.toml"),
        example("http.toml").replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    );
    let faas = Faas::start(&dispatcher, &files);
    // python.toml's `greet.py` is beside its functions file, as in examples/faas/.
    std::fs::copy("examples/faas/greet.py", faas.path("greet.py")).unwrap();
    for function in ["Upper", "WordCount", "Greet", "GetProduct", "Echo"] {
        served(&dispatcher, function, 1).await;
    }
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let data = client
        .call_data("Upper", &Name { name: "nmid" })
        .await
        .unwrap();
    assert_eq!(&data[..], br#"{"NAME":"NMID"}"#);
    let options = nmid::client::CallOptions::default().params_type(nmid::codec::ParamsType::JSON);
    let ret = client
        .call_with("WordCount", &br#""three small words""#[..], options)
        .await
        .unwrap();
    assert_eq!(
        &nmid::retstruct::RetStruct::decode(&ret).unwrap().data[..],
        b"3"
    );
    let greeting = client
        .call_data("Greet", &Name { name: "nmid" })
        .await
        .unwrap();
    let greeting: serde_json::Value = serde_json::from_slice(&greeting).unwrap();
    assert_eq!(greeting["greeting"], "Hello, nmid!");
    match client.call_data("Greet", &serde_json::json!({})).await {
        Err(ClientError::Function { code: 3, message }) => {
            assert!(message.contains("Greet wants params"), "{message}")
        }
        other => panic!("expected Greet's error, got {other:?}"),
    }
    // The service may still be starting: the first calls can find it unreachable.
    let deadline = Instant::now() + PATIENCE;
    let product = loop {
        match client
            .call_data("GetProduct", &serde_json::json!({"id": "1"}))
            .await
        {
            Ok(product) => break product,
            Err(err) => assert!(Instant::now() < deadline, "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let product: serde_json::Value = serde_json::from_slice(&product).unwrap();
    assert_eq!(product["name"], "teapot");
    match client
        .call_data("GetProduct", &serde_json::json!({"id": "9"}))
        .await
    {
        Err(ClientError::Function { code: 404, message }) => {
            assert!(message.contains("no such product"), "{message}")
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    let echoed = client.call_data("Echo", &Name { name: "e" }).await.unwrap();
    let echoed: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
    assert_eq!(
        echoed,
        serde_json::json!({"function": "Echo", "params": {"name": "e"}})
    );
    faas.stop().await;
    dispatcher.stop().await;
}

/// The test HTTP service that answers what reached it: its query string, then each request
/// header as `name: value`, one a line.
fn start_header_recorder() -> (SocketAddr, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpResponse};
    super::start_upstream_with(|app| {
        app.route(
            "/headers",
            web::post().to(|req: actix_web::HttpRequest| async move {
                let mut seen = format!("query: {}\n", req.query_string());
                for (name, value) in req.headers() {
                    seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                }
                HttpResponse::Ok().body(seen)
            }),
        );
    })
}

/// A tagged client cannot make an http function send what only the HTTP front end sets:
/// its `http-header-*`, `http-query` and `content-type` metadata (any case) is dropped at
/// admission, so no forged Authorization, Host, Content-Length (which would hang the
/// upstream) or query reaches the service; an HTTP caller's forwarded headers and query
/// still do, but never framing or hop-by-hop ones, even when `http.forward_headers` lists
/// them.
#[actix_rt::test]
async fn only_the_http_front_end_sets_what_an_http_function_sends_on() {
    let mut config = Config::default();
    config.http.forward_headers = ["accept-language", "content-length", "host", "connection"]
        .map(str::to_owned)
        .to_vec();
    let dispatcher = start_dispatcher_with_http(config);
    let (upstream, server) = start_header_recorder();
    let faas = Faas::start(
        &dispatcher,
        &format!("[[function]]\nname = \"Headers\"\nurl = \"http://{upstream}/headers\"\n"),
    );
    served(&dispatcher, "Headers", 1).await;

    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let options = CallOptions::default()
        .timeout(Duration::from_secs(10))
        .meta("http-header-authorization", "Bearer forged")
        .meta("http-header-x-forged", "forged-header")
        .meta("HTTP-Header-X-Shouting", "forged-shout")
        .meta("http-header-host", "forged.example")
        .meta("http-header-content-length", "999")
        .meta("http-query", "forged=query")
        .meta("content-type", "text/forged");
    let params = rmp_serde::to_vec_named(&Name { name: "x" }).unwrap();
    let ret = client.call_with("Headers", params, options).await.unwrap();
    let ret = nmid::retstruct::RetStruct::decode(&ret).unwrap();
    assert_eq!(ret.code, 0, "{}", ret.msg);
    let seen = String::from_utf8_lossy(&ret.data).to_ascii_lowercase();
    for forged in ["forged", "999", "authorization"] {
        assert!(
            !seen.contains(forged),
            "{forged} reached the upstream:\n{seen}"
        );
    }
    assert!(seen.contains("content-type: application/json"), "{seen}");

    let response = reqwest::Client::new()
        .post(format!("{}/call/Headers?lang=fr", dispatcher.http_url()))
        .header("content-type", "application/json")
        .header("accept-language", "fr-CH")
        .header("connection", "keep-alive, x-forged-hop")
        .body(r#"{"name":"http caller"}"#)
        .send()
        .await
        .expect("HTTP call");
    let status = response.status().as_u16();
    let seen = response.text().await.unwrap().to_ascii_lowercase();
    assert_eq!(status, 200, "{seen}");
    assert!(
        seen.contains("query: lang=fr\n") && seen.contains("accept-language: fr-ch\n"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("host: {upstream}\n")) && !seen.contains("x-forged-hop"),
        "{seen}"
    );
    let lengths = seen.lines().filter(|l| l.starts_with("content-length:"));
    assert!(lengths.count() <= 1, "{seen}");
    faas.stop().await;
    server.stop(false).await;
    dispatcher.stop().await;
}
