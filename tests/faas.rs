//! `nmid-faas`, the real binary, serving a live in-process dispatcher over real TCP on
//! 127.0.0.1: exec functions (results over v1, tagged and HTTP; exit codes and stderr;
//! timeouts that leave no process behind; concurrency; 200 calls at once), http functions
//! against a test HTTP service (results, non-2xx, upstream down or slow), and reloads that
//! add, change and remove functions while calls run.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{start_dispatcher_with_http, TestDispatcher, PATIENCE};
use futures_util::future::join_all;
use nmid::client::{Client, ClientError, Protocol};
use nmid::config::Config;
use serde::Serialize;

/// How long a call through a spawned process may take on a loaded 2-core machine.
const SLOW: Duration = Duration::from_secs(20);

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

/// A running `nmid-faas` on a file of its own; killed (by PID) when dropped.
struct Faas {
    child: Child,
    dir: PathBuf,
}

impl Faas {
    /// Writes `functions` as the file and starts `nmid-faas` for `dispatcher`.
    fn start(dispatcher: &TestDispatcher, functions: &str) -> Self {
        let dir = temp_dir();
        std::fs::write(dir.join("functions.toml"), functions).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
            .arg("--server")
            .arg(dispatcher.addr.to_string())
            .arg(dir.join("functions.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("start nmid-faas");
        Self { child, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces the functions file (atomically, as an editor or a ConfigMap update does).
    fn rewrite(&self, functions: &str) {
        let next = self.path("functions.toml.next");
        std::fs::write(&next, functions).unwrap();
        std::fs::rename(next, self.path("functions.toml")).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "nmid-faas never logged {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a graceful exit 0.
    async fn stop(mut self) {
        send_signal(self.child.id(), "TERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "nmid-faas exited {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nmid-faas did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Faas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A helper process, killed by its PID when the test ends (or fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (a name for kill(1)) to `pid`.
fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nmid-faas-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `function` has `workers` workers.
async fn served(dispatcher: &TestDispatcher, function: &str, workers: usize) {
    dispatcher
        .wait_for(&format!("{function} served by {workers}"), |s| {
            s.function(function).map_or(0, |f| f.workers) == workers
        })
        .await;
}

/// Whether a process with `pid` is still running (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

async fn http_post(dispatcher: &TestDispatcher, function: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/call/{function}", dispatcher.http_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("HTTP call");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

const UPPER: &str = r#"
[[function]]
name = "Upper"
command = ["tr", "a-z", "A-Z"]
"#;

/// `tr a-z A-Z` as a function answers upper-cased text to a tagged client, a v1 client and
/// an HTTP caller, each in its own protocol.
#[actix_rt::test]
async fn tr_upper_cases_through_tagged_v1_and_http() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let faas = Faas::start(&dispatcher, UPPER);
    served(&dispatcher, "Upper", 1).await;

    let tagged = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let data = tagged
        .call_data("Upper", &Name { name: "nmid" })
        .await
        .unwrap();
    assert_eq!(&data[..], br#"{"NAME":"NMID"}"#);

    let v1 = Client::builder(dispatcher.addr.to_string())
        .protocol(Protocol::V1)
        .connect()
        .await
        .unwrap();
    let data = v1
        .call_data("Upper", &Name { name: "v1 caller" })
        .await
        .unwrap();
    assert_eq!(&data[..], br#"{"NAME":"V1 CALLER"}"#);

    let (status, body) = http_post(&dispatcher, "Upper", r#"{"name":"http"}"#).await;
    assert_eq!((status, body.as_str()), (200, r#"{"NAME":"HTTP"}"#));
    faas.stop().await;
    dispatcher.stop().await;
}

/// A failing script's exit code and stderr reach the caller: as the RetStruct's Code and
/// Msg (tagged), and as a 502 `function_error` with the message (HTTP).
#[actix_rt::test]
async fn a_failing_scripts_exit_code_and_stderr_reach_the_caller() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let faas = Faas::start(
        &dispatcher,
        r#"
        [[function]]
        name = "Fail"
        command = ["sh", "-c", "cat >/dev/null; echo 'first line' >&2; echo 'bad input: no name' >&2; exit 3"]
        "#,
    );
    served(&dispatcher, "Fail", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    match client.call_data("Fail", &Name { name: "x" }).await {
        Err(ClientError::Function { code, message }) => {
            assert_eq!(code, 3);
            assert!(
                message.contains("exit status 3") && message.contains("bad input: no name"),
                "{message}"
            );
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    let (status, body) = http_post(&dispatcher, "Fail", "{}").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("function_error") && body.contains("bad input"),
        "{body}"
    );
    faas.stop().await;
    dispatcher.stop().await;
}

/// A script that outlives its `timeout_ms` is killed with everything it started (its
/// process group): the caller gets the timeout at once, and no process is left behind.
#[actix_rt::test]
async fn a_sleeping_script_is_killed_at_its_timeout_with_its_children() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let dir = temp_dir();
    let pids = dir.join("pids");
    let faas = Faas::start(
        &dispatcher,
        &format!(
            r#"
            [[function]]
            name = "Sleepy"
            command = ["sh", "-c", "sleep 60 & echo $$ $! > {}; wait"]
            timeout_ms = 400
            "#,
            pids.display()
        ),
    );
    served(&dispatcher, "Sleepy", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let started = Instant::now();
    match client.call_data("Sleepy", &Name { name: "x" }).await {
        Err(ClientError::WorkerError(message)) => {
            assert!(message.contains("timed out after 400 ms"), "{message}")
        }
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 2, "the script wrote its PID and its child's");
    let deadline = Instant::now() + PATIENCE;
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(Instant::now() < deadline, "still running: {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
    faas.stop().await;
    dispatcher.stop().await;
}

/// With `concurrency = 2`, eight calls at once never run three processes at once (each run
/// counts the runs beside it), all are answered, and two do run side by side.
#[actix_rt::test]
async fn concurrency_two_never_runs_three_at_once() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let dir = temp_dir();
    let script = format!(
        "d={}; touch $d/$$; ls $d | wc -l >> $d.seen; sleep 0.3; rm $d/$$; echo done",
        dir.display()
    );
    let faas = Faas::start(
        &dispatcher,
        &format!("[[function]]\nname = \"Two\"\nconcurrency = 2\ncommand = [\"sh\", \"-c\", {script:?}]\n"),
    );
    served(&dispatcher, "Two", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let calls = (0..8).map(|_| client.call_data("Two", &Name { name: "x" }));
    for result in join_all(calls).await {
        assert_eq!(&result.unwrap()[..], b"done\n");
    }
    let seen: Vec<u32> = std::fs::read_to_string(format!("{}.seen", dir.display()))
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 8);
    assert_eq!(
        seen.iter().max(),
        Some(&2),
        "runs at once, as each saw: {seen:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(format!("{}.seen", dir.display()));
    faas.stop().await;
    dispatcher.stop().await;
}

/// 200 concurrent calls of an exec function each get their own answer.
#[actix_rt::test]
async fn two_hundred_concurrent_calls_are_all_answered() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let faas = Faas::start(
        &dispatcher,
        "[[function]]\nname = \"Echo\"\ncommand = [\"cat\"]\nconcurrency = 16\n",
    );
    served(&dispatcher, "Echo", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("caller-{i}")).collect();
    let calls = names.iter().map(|name| {
        let client = client.clone();
        async move {
            let options = nmid::client::CallOptions::default().timeout(SLOW * 3);
            let params = rmp_serde::to_vec_named(&Name { name }).unwrap();
            let ret = client.call_with("Echo", params, options).await?;
            let ret = nmid::retstruct::RetStruct::decode(&ret).unwrap();
            Ok::<_, ClientError>((name.clone(), ret.data))
        }
    });
    for result in join_all(calls).await {
        let (name, data) = result.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&data),
            format!(r#"{{"name":"{name}"}}"#)
        );
    }
    faas.stop().await;
    dispatcher.stop().await;
}

/// Editing the file while calls run: a removed function's calls in flight finish, a new
/// function is served, a changed one answers new calls with its new command while its
/// running call finishes with the old one; a bad edit is refused (naming the function and
/// the key) and the last good set keeps serving.
#[actix_rt::test]
async fn reload_adds_changes_and_removes_functions_while_calls_run() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let v1 = r#"
        reload_interval_ms = 100
        [[function]]
        name = "Leaving"
        command = ["sh", "-c", "sleep 1; echo left"]
        [[function]]
        name = "Changing"
        command = ["sh", "-c", "sleep 1; echo old"]
        "#;
    let faas = Faas::start(&dispatcher, v1);
    served(&dispatcher, "Leaving", 1).await;
    served(&dispatcher, "Changing", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let leaving = client.call_data("Leaving", &Name { name: "x" });
    let changing = client.call_data("Changing", &Name { name: "x" });
    let edit = async {
        dispatcher
            .wait_for("both calls running", |s| s.in_flight() == 2)
            .await;
        faas.rewrite(
            r#"
            reload_interval_ms = 100
            [[function]]
            name = "Changing"
            command = ["echo", "new"]
            [[function]]
            name = "Arrived"
            command = ["echo", "hello"]
            "#,
        );
        served(&dispatcher, "Arrived", 1).await;
    };
    let (leaving, changing, ()) = tokio::join!(leaving, changing, edit);
    assert_eq!(
        &leaving.unwrap()[..],
        b"left\n",
        "the removed function's call finished"
    );
    assert_eq!(
        &changing.unwrap()[..],
        b"old\n",
        "the running call kept its definition"
    );
    let new = client
        .call_data("Changing", &Name { name: "x" })
        .await
        .unwrap();
    assert_eq!(&new[..], b"new\n");
    assert_eq!(
        &client
            .call_data("Arrived", &Name { name: "x" })
            .await
            .unwrap()[..],
        b"hello\n"
    );
    served(&dispatcher, "Leaving", 0).await;
    assert!(matches!(
        client.call_data("Leaving", &Name { name: "x" }).await,
        Err(ClientError::NoWorker)
    ));

    faas.rewrite("reload_interval_ms = 100\n[[function]]\nname = \"Arrived\"\ncomand = [\"x\"]\n");
    faas.wait_for_log("function `Arrived` ([[function]] number 1): key `comand`: unknown key")
        .await;
    assert_eq!(
        &client
            .call_data("Arrived", &Name { name: "x" })
            .await
            .unwrap()[..],
        b"hello\n"
    );
    faas.stop().await;
    dispatcher.stop().await;
}

/// A bad file at start is a clear error and exit status 2; `--check` says whether a file
/// is valid without serving it.
#[test]
fn a_bad_file_at_start_is_refused_with_exit_status_2() {
    let dir = temp_dir();
    let file = dir.join("functions.toml");
    std::fs::write(
        &file,
        "[[function]]\nname = \"F\"\ncommand = [\"tr\"]\ntimeout_ms = \"soon\"\n",
    )
    .unwrap();
    let run = |check: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nmid-faas"));
        if check {
            command.arg("--check");
        }
        command
            .arg(&file)
            .env("NMID_ADDR", "127.0.0.1:9")
            .output()
            .unwrap()
    };
    for check in [false, true] {
        let out = run(check);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(
                "function `F` ([[function]] number 1): key `timeout_ms`: must be an integer"
            ),
            "{stderr}"
        );
    }
    std::fs::write(&file, UPPER).unwrap();
    let out = run(true);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 functions, valid"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The test HTTP service behind the http functions: `/upper` upper-cases the body, `/fail`
/// answers 500 with a reason, `/slow` answers after 3 s.
fn start_upstream() -> (SocketAddr, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(|| {
        App::new()
            .route(
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
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (addr, handle)
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
