//! What an independent review of issue 18's work found, beyond what a peer can hold open
//! (`holding.rs`): a forged `nmid-caller` reaching workers on local calls, and `/readyz`
//! telling anyone which functions have workers.

use super::common::start_dispatcher_with;
use super::*;

/// Answers `<x-probe>|<nmid-caller>`: the metadata it got.
async fn metadata_seen(job: Job) -> Result<Bytes, JobError> {
    let probe = job.metadata("x-probe").unwrap_or_default();
    let caller = job.metadata("nmid-caller").unwrap_or_default();
    Ok(Bytes::from(format!("{probe}|{caller}")))
}

/// A client that writes `nmid-caller` into a local call's metadata itself (no peer hop):
/// the worker gets the rest of the metadata but never that entry, with auth off and on.
/// Before, only forwarded calls had it replaced.
#[actix_rt::test]
async fn a_forged_caller_never_reaches_a_worker_on_a_local_call() {
    for auth in [false, true] {
        let config = if auth {
            auth_config()
        } else {
            Config::default()
        };
        let dispatcher = start_dispatcher_with(config);
        let worker = Worker::builder()
            .server(dispatcher.addr.to_string())
            .token(WORKER_SECRET.to_owned())
            .function("ToUpper", metadata_seen)
            .start()
            .unwrap();
        served(&dispatcher, "ToUpper", 1).await;
        let client = Client::builder(dispatcher.addr.to_string())
            .token(CLIENT_SECRET.to_owned())
            .connect()
            .await
            .unwrap();
        let options = nmid::client::CallOptions {
            metadata: vec![
                (bytes("x-probe"), bytes("seen")),
                (bytes("nmid-caller"), bytes("token:ops")),
            ],
            ..Default::default()
        };
        let answer = client.call_with("ToUpper", "x", options).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("seen|"), "auth {auth}: {answer}");
        assert!(
            !answer.contains("token:ops"),
            "auth {auth}: the worker saw the forged caller: {answer}"
        );
        worker.stop().await;
        dispatcher.stop().await;
    }
}

/// With auth on, `/readyz` tells a caller without the admin role its status and nothing
/// else: no counts of workers or functions, no names of missing functions, and it may not
/// ask about functions of its choosing (`?functions=` is 401, where the answer told which
/// functions have workers). The admin token gets the details; auth off, everyone does.
#[actix_rt::test]
async fn readiness_shows_details_only_to_the_admin_role() {
    let mut config = auth_config();
    config.http.ready_functions = vec!["ToUpper".to_owned()];
    let dispatcher = start_dispatcher_with_http(config);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", dispatcher.http_url());
    let get = |path: &str, secret: Option<&str>| {
        let mut request = http.get(url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let waiting = serde_json::json!({"status": "waiting for functions"});
    assert_eq!(get("/readyz", None).await, (503, waiting.clone()));
    assert_eq!(get("/readyz", Some(CLIENT_SECRET)).await, (503, waiting));
    let (status, body) = get("/readyz", Some(ADMIN_SECRET)).await;
    assert_eq!(
        (status, &body["missing"]),
        (503, &serde_json::json!(["ToUpper"]))
    );
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;
    let ready = serde_json::json!({"status": "ready"});
    assert_eq!(get("/readyz", None).await, (200, ready));
    for secret in [None, Some(CLIENT_SECRET), Some("not-a-token-0123456789")] {
        let (status, body) = get("/readyz?functions=ToUpper", secret).await;
        assert_eq!(status, 401, "{secret:?}: {body}");
        let (status, body) = get("/readyz?functions=Nobody", secret).await;
        assert_eq!(status, 401, "{secret:?}: {body}");
    }
    let (status, body) = get("/readyz?functions=ToUpper", Some(ADMIN_SECRET)).await;
    assert_eq!((status, body["workers"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = get("/readyz?functions=Nobody", Some(ADMIN_SECRET)).await;
    assert_eq!(
        (status, &body["missing"]),
        (503, &serde_json::json!(["Nobody"]))
    );
    worker.stop().await;
    dispatcher.stop().await;

    let open = start_dispatcher_with_http(Config::default());
    let response = reqwest::get(format!("{}/readyz?functions=Nobody", open.http_url()))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["missing"], serde_json::json!(["Nobody"]), "auth off");
    open.stop().await;
}

/// `OPTIONS *`, whose target is no path, goes through the guard like any path no route
/// covers, on both listeners: 401 without credentials, 403 for a client token, and only the
/// admin token gets the 404. Before, it was answered 404 without a decision.
#[actix_rt::test]
async fn a_request_for_no_path_passes_the_guard() {
    let dispatcher = common::start_dispatcher_with_metrics_port(auth_config());
    let metrics = dispatcher.handle().metrics_addr().unwrap();
    for addr in [dispatcher.http.unwrap(), metrics] {
        for (secret, want) in [
            (None, "401"),
            (Some(CLIENT_SECRET), "403"),
            (Some(ADMIN_SECRET), "404"),
        ] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let auth = secret.map_or(String::new(), |s| format!("Authorization: Bearer {s}\r\n"));
            let request =
                format!("OPTIONS * HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
                .await
                .expect("an answer")
                .unwrap();
            let response = String::from_utf8_lossy(&response);
            assert!(
                response.starts_with(&format!("HTTP/1.1 {want}")),
                "{addr} {secret:?}: {response}"
            );
        }
    }
    dispatcher.stop().await;
}
