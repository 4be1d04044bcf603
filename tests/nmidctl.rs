//! `nmidctl`, the real binary, against a live in-process dispatcher (nmid protocol and HTTP
//! on 127.0.0.1) with a worker: every subcommand's output and exit status, including each
//! error kind's status, `top` both as a snapshot and live on a terminal (a pty made by
//! `script`), `bench`, `health` while draining, and the completions.

mod cluster_support;
mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{start_dispatcher_with_http, TestDispatcher, PATIENCE};
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker, WorkerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const NMIDCTL: &str = env!("CARGO_BIN_EXE_nmidctl");

/// A dispatcher with a worker serving `ToUpper` (the demo), `Fail` (RetStruct code 7) and
/// `Slow` (answers after 2 s).
async fn setup() -> (TestDispatcher, WorkerHandle) {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = Worker::builder()
        .name("ctl-worker")
        .server(dispatcher.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .function("Fail", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::error(7, "no such order"))
        })
        .function("Slow", |job: Job| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, JobError>(RetStruct::ok(job.params().clone()))
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("Slow").is_some())
        .await;
    (dispatcher, worker)
}

/// Runs `nmidctl ARGS` against `dispatcher` (through NMID_ADDR and NMID_HTTP).
async fn ctl(dispatcher: &TestDispatcher, args: &[&str]) -> Output {
    ctl_at(&dispatcher.addr.to_string(), &dispatcher.http_url(), args).await
}

/// Runs `nmidctl ARGS` with NMID_ADDR=`addr` and NMID_HTTP=`http`.
async fn ctl_at(addr: &str, http: &str, args: &[&str]) -> Output {
    let run = Command::new(NMIDCTL)
        .args(args)
        .env("NMID_ADDR", addr)
        .env("NMID_HTTP", http)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("nmidctl {args:?} did not finish"))
        .expect("run nmidctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status and that stderr contains `message`.
fn fails(out: &Output, code: i32, message: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(stderr(out).contains(message), "{}", stderr(out));
}

/// `call` prints the Data; `--raw` the RetStruct bytes; `--msgpack` sends a file; each
/// error kind has its exit status: function error 1, bad JSON 2, unreachable 3, no worker
/// 4, timeout 5.
#[actix_rt::test]
async fn call_prints_data_and_exits_by_error_kind() {
    let (dispatcher, worker) = setup().await;
    let out = ctl(&dispatcher, &["call", "ToUpper", r#"{"name":"nmid"}"#]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "NMID");

    let out = ctl(
        &dispatcher,
        &["call", "--raw", "ToUpper", r#"{"name":"a"}"#],
    )
    .await;
    assert_eq!(out.stdout, RetStruct::ok("A").encode());

    let file = std::env::temp_dir().join(format!("nmidctl-params-{}.msgpack", std::process::id()));
    std::fs::write(
        &file,
        rmp_serde::to_vec_named(&serde_json::json!({"name": "file"})).unwrap(),
    )
    .unwrap();
    let out = ctl(
        &dispatcher,
        &["call", "ToUpper", "--msgpack", file.to_str().unwrap()],
    )
    .await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(stdout(&out), "FILE");

    fails(
        &ctl(&dispatcher, &["call", "Fail"]).await,
        1,
        "function failed with code 7: no such order",
    );
    fails(
        &ctl(&dispatcher, &["call", "ToUpper", "{nope"]).await,
        2,
        "params are not valid JSON",
    );
    fails(
        &ctl(&dispatcher, &["call", "Nobody"]).await,
        4,
        "no worker serves Nobody",
    );
    fails(
        &ctl(&dispatcher, &["call", "--timeout", "200ms", "Slow"]).await,
        5,
        "timed out",
    );
    fails(
        &ctl(&dispatcher, &["call", "--timeout", "soon", "Slow"]).await,
        2,
        "not a duration",
    );
    fails(
        &ctl(&dispatcher, &["--addr", "127.0.0.1:1", "call", "ToUpper"]).await,
        3,
        "cannot connect to 127.0.0.1:1",
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// `functions`, `workers` and `stats` print tables, or the dispatcher's JSON with `--json`;
/// `cluster` says that this dispatcher serves alone; an unreachable HTTP address is exit 3.
#[actix_rt::test]
async fn admin_commands_print_tables_or_json() {
    let (dispatcher, worker) = setup().await;
    let out = ctl(&dispatcher, &["functions"]).await;
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("FUNCTION  WORKERS  IN FLIGHT  QUEUED"),
        "{text}"
    );
    assert!(text.contains("ToUpper") && text.contains("Slow"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&ctl(&dispatcher, &["functions", "--json"]).await.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    let text = stdout(&ctl(&dispatcher, &["workers"]).await);
    assert!(
        text.contains("ctl-worker") && ["ToUpper", "Fail", "Slow"].iter().all(|f| text.contains(f)),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ctl(&dispatcher, &["workers", "--json"]).await.stdout).unwrap();
    assert_eq!(json[0]["name"], "ctl-worker");

    ctl(&dispatcher, &["call", "ToUpper", r#"{"name":"x"}"#]).await;
    let text = stdout(&ctl(&dispatcher, &["stats"]).await);
    assert!(
        text.contains("version") && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ctl(&dispatcher, &["stats", "--json"]).await.stdout).unwrap();
    assert!(json["calls"]["total"].as_u64().unwrap() >= 1);

    let out = ctl(&dispatcher, &["cluster"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("discovery off: this dispatcher serves alone"),
        "{out:?}"
    );
    fails(
        &ctl(&dispatcher, &["--http", "http://127.0.0.1:1", "functions"]).await,
        3,
        "cannot reach http://127.0.0.1:1",
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// `cluster` against two `nmid --etcd` processes (a real etcd): etcd's state, both
/// dispatchers, the one asked marked, and the function a worker of the other serves; `--json`
/// is the dispatcher's report. A dispatcher without the API (404) is exit 9.
#[actix_rt::test]
async fn cluster_lists_the_dispatchers_of_a_real_etcd() {
    let etcd = cluster_support::Etcd::start().await;
    let first = cluster_support::Nmid::start(&etcd.url);
    let second = cluster_support::Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("cluster-ctl-worker")
        .server(second.tcp.to_string())
        .function("OnlyOnSecond", nmid::demo::to_upper)
        .start()
        .unwrap();
    let (addr, http) = (first.tcp.to_string(), format!("http://{}", first.http));
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let text = stdout(&ctl_at(&addr, &http, &["cluster"]).await);
        if text.contains("OnlyOnSecond") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the peer's function never showed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut lines = text.lines();
    let status = lines.next().unwrap();
    assert!(
        status.starts_with(&format!("etcd up at {}", etcd.url)),
        "{text}"
    );
    assert!(
        lines.next().unwrap().starts_with("DISPATCHER") && text.contains("FORWARDED"),
        "{text}"
    );
    let row = |tcp: &str| {
        text.lines()
            .find(|l| l.starts_with(tcp))
            .unwrap_or("")
            .to_owned()
    };
    let own = row(&first.tcp.to_string());
    assert!(
        own.contains("(this one)") && own.contains("serving"),
        "{text}"
    );
    let peer = row(&second.tcp.to_string());
    assert!(
        peer.contains("OnlyOnSecond") && peer.contains(&second.http.to_string()),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ctl_at(&addr, &http, &["cluster", "--json"]).await.stdout).unwrap();
    assert_eq!(json["enabled"], true);
    assert_eq!(json["members"].as_array().unwrap().len(), 2, "{json}");

    // A server without the cluster API: a plain HTTP service answering 404.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_url = format!("http://{}", plain.local_addr().unwrap());
    let server = actix_web::HttpServer::new(actix_web::App::new)
        .listen(plain)
        .unwrap()
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    fails(
        &ctl_at(&addr, &plain_url, &["cluster"]).await,
        9,
        "not available: this dispatcher has no /api/v1/cluster",
    );
    handle.stop(false).await;
    worker.stop().await;
}

/// `health` exits 0 when ready; 1 while the dispatcher drains and when it is unreachable.
#[actix_rt::test]
async fn health_follows_readiness() {
    let (mut dispatcher, worker) = setup().await;
    let out = ctl(&dispatcher, &["health"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ready");

    // A call in flight keeps the drain going while health is asked.
    let client = nmid::client::Client::connect(dispatcher.addr.to_string())
        .await
        .unwrap();
    let slow = actix_rt::spawn(async move { client.call("Slow", b"\x80".to_vec()).await });
    dispatcher
        .wait_for("the slow call", |s| s.in_flight() == 1)
        .await;
    dispatcher.begin_shutdown();
    let out = ctl(&dispatcher, &["health"]).await;
    fails(&out, 1, "not ready: /readyz answered 503 draining");
    assert!(slow.await.unwrap().is_ok(), "the drain let the call finish");
    fails(
        &ctl(&dispatcher, &["--http", "http://127.0.0.1:1", "health"]).await,
        1,
        "not ready: cannot reach",
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// `bench` runs for its duration and summarizes calls/s and latency (as JSON here); a
/// function nobody serves fails with exit 4 and the count of failures.
#[actix_rt::test]
async fn bench_summarizes_a_load_run() {
    let (dispatcher, worker) = setup().await;
    let started = Instant::now();
    let out = ctl(
        &dispatcher,
        &[
            "bench",
            "ToUpper",
            "-c",
            "4",
            "-d",
            "1s",
            "--params",
            r#"{"name":"b"}"#,
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["ok"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["errors"], serde_json::json!({}));
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(summary["seconds"].as_f64().unwrap() >= 1.0);

    let out = ctl(
        &dispatcher,
        &[
            "bench",
            "ToUpper",
            "-c",
            "2",
            "-d",
            "5s",
            "-n",
            "10",
            "--params",
            r#"{"name":"b"}"#,
        ],
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("calls       10 ok, 0 failed") && text.contains("latency ms  p50"),
        "{text}"
    );

    let out = ctl(&dispatcher, &["bench", "Nobody", "-c", "2", "-d", "300ms"]).await;
    fails(&out, 4, "no worker serves Nobody");
    assert!(stdout(&out).contains("x no worker"), "{}", stdout(&out));
    worker.stop().await;
    dispatcher.stop().await;
}

/// `top` on a pipe prints one snapshot with each function's rates; on a terminal (a pty
/// from `script`) it draws live and quits on `q` with exit 0.
#[actix_rt::test]
async fn top_prints_a_snapshot_or_runs_live_until_q() {
    let (dispatcher, worker) = setup().await;
    let client = nmid::client::Client::connect(dispatcher.addr.to_string())
        .await
        .unwrap();
    let load = actix_rt::spawn(async move {
        let params = rmp_serde::to_vec_named(&serde_json::json!({"name": "t"})).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let _ = client.call("ToUpper", params.clone()).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let out = ctl(&dispatcher, &["top", "--interval", "500ms"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("ToUpper"))
        .unwrap_or_else(|| panic!("no ToUpper row: {text}"));
    assert!(text.contains("QUEUED  JOBS QUEUED  CALLS/S"), "{text}");
    let jobs_queued: u64 = row.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(jobs_queued, 0, "{row}");
    let calls_per_second: f64 = row.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(calls_per_second > 0.0, "{text}");

    let command = format!(
        "NMID_HTTP={} {NMIDCTL} top --interval 200ms",
        dispatcher.http_url()
    );
    let mut live = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script(1) runs nmidctl top on a pty");
    let mut screen = Vec::new();
    let mut pty_out = live.stdout.take().unwrap();
    let deadline = Instant::now() + PATIENCE * 2;
    while !String::from_utf8_lossy(&screen).contains("ToUpper") {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, pty_out.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!("top drew no function: {}", String::from_utf8_lossy(&screen))
            })
            .unwrap();
        assert!(
            n > 0,
            "top ended early: {}",
            String::from_utf8_lossy(&screen)
        );
        screen.extend_from_slice(&chunk[..n]);
    }
    live.stdin.as_mut().unwrap().write_all(b"q").await.unwrap();
    let status = tokio::time::timeout(PATIENCE, live.wait())
        .await
        .expect("top quits on q")
        .unwrap();
    assert!(status.success(), "top exited {status}");
    load.abort();
    worker.stop().await;
    dispatcher.stop().await;
}

/// Every subcommand has `--help`; completions are generated for bash, zsh and fish; a bad
/// subcommand is a usage error (exit 2).
#[test]
fn help_and_completions_for_every_subcommand() {
    let run = |args: &[&str]| {
        std::process::Command::new(NMIDCTL)
            .args(args)
            .output()
            .unwrap()
    };
    for sub in [
        "call",
        "submit",
        "jobs",
        "functions",
        "workers",
        "stats",
        "cluster",
        "top",
        "bench",
        "health",
        "completions",
    ] {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: nmidctl"),
            "{sub}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("nmidctl") && script.contains("bench"),
            "{shell}: {script}"
        );
    }
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}
