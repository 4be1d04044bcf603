//! `nmidctl`, the real binary, for the claims tests/nmidctl.rs does not cover: exit statuses
//! 6 (refused: a breaker open), 7 (worker lost) and 8 (unexpected answer) end to end; `--raw` keeping a
//! failure's status; `call F -` reading params from stdin; `bench` stopping at the first
//! error that no retry fixes; flags beating the environment; `top --once` on a terminal,
//! Esc and Ctrl-C quitting the live view, and a narrow terminal keeping the summary line;
//! each binary's `--help` naming it for what it is; exit 10 for a call without a token to
//! a dispatcher with `[auth]`.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{start_dispatcher_with_http, Peer, TestDispatcher, PATIENCE};
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker, WorkerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const NMIDCTL: &str = env!("CARGO_BIN_EXE_nmidctl");

/// A worker serving `ToUpper` and `Fail` (RetStruct code 7) on `dispatcher`.
async fn worker(dispatcher: &TestDispatcher) -> WorkerHandle {
    let worker = Worker::builder()
        .name("exits-worker")
        .server(dispatcher.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .function("Fail", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::error(7, "no such order"))
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("Fail").is_some())
        .await;
    worker
}

/// Runs `nmidctl ARGS` with `env`, `stdin` as its input.
async fn ctl_with(env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(NMIDCTL)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run nmidctl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("nmidctl {args:?} did not finish"))
        .unwrap()
}

/// Runs `nmidctl ARGS` against `dispatcher` (through NMID_ADDR and NMID_HTTP).
async fn ctl(dispatcher: &TestDispatcher, args: &[&str]) -> Output {
    let env = [
        ("NMID_ADDR", dispatcher.addr.to_string()),
        ("NMID_HTTP", dispatcher.http_url()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ctl_with(&env, args, b"").await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fails(out: &Output, code: i32, message: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
}

/// Exit 6: a call refused because every worker of its function has an open circuit
/// breaker (the worker failed each of its last calls).
#[actix_rt::test]
async fn a_call_refused_by_an_open_breaker_exits_6() {
    let mut config = Config::default();
    config.breaker.enabled = true;
    config.breaker.consecutive_errors = 2;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("broken-worker")
        .server(dispatcher.addr.to_string())
        .function("Broken", |_job: Job| async {
            Err::<RetStruct, _>(JobError::new("always"))
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("Broken served", |s| s.function("Broken").is_some())
        .await;
    for _ in 0..2 {
        fails(&ctl(&dispatcher, &["call", "Broken"]).await, 1, "always");
    }
    dispatcher
        .wait_for("the breaker open", |s| {
            s.function("Broken").is_some_and(|f| f.breakers_open == 1)
        })
        .await;
    fails(&ctl(&dispatcher, &["call", "Broken"]).await, 6, "refused");
    worker.stop().await;
    dispatcher.stop().await;
}

/// Exit 7: the worker holding the call disconnects, and no retry is allowed.
#[actix_rt::test]
async fn a_call_whose_worker_dies_exits_7() {
    let mut config = Config::default();
    config.jobs.retries = 0;
    let dispatcher = start_dispatcher_with_http(config);
    let mut dying = Peer::worker(dispatcher.addr, "dying", &["Die"]).await;
    dispatcher
        .wait_for("Die served", |s| s.function("Die").is_some())
        .await;
    let call = tokio::spawn({
        let addr = dispatcher.addr.to_string();
        let http = dispatcher.http_url();
        async move {
            ctl_with(
                &[("NMID_ADDR", &addr), ("NMID_HTTP", &http)],
                &["call", "Die"],
                b"",
            )
            .await
        }
    });
    dying.recv_job().await;
    drop(dying);
    fails(&call.await.unwrap(), 7, "worker was lost");
    dispatcher.stop().await;
}

/// Exit 8: an HTTP answer that is not the admin API's JSON.
#[actix_rt::test]
async fn a_malformed_admin_answer_exits_8() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = std::io::Read::read(&mut stream, &mut request);
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope!";
        std::io::Write::write_all(&mut stream, reply.as_bytes()).unwrap();
    });
    let out = ctl_with(&[], &["--http", &url, "functions"], b"").await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    server.join().unwrap();
}

/// `--raw` prints the RetStruct bytes of a failed call and still exits 1; `call F -` reads
/// the params from stdin.
#[actix_rt::test]
async fn raw_keeps_the_failure_status_and_dash_reads_stdin() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = worker(&dispatcher).await;
    let out = ctl(&dispatcher, &["call", "--raw", "Fail"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(out.stdout, RetStruct::error(7, "no such order").encode());

    let env = [
        ("NMID_ADDR", dispatcher.addr.to_string()),
        ("NMID_HTTP", dispatcher.http_url()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = ctl_with(&env, &["call", "ToUpper", "-"], br#"{"name":"stdin"}"#).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "STDIN");
    let out = ctl_with(&env, &["call", "ToUpper", "-"], b"{not json").await;
    fails(&out, 2, "params are not valid JSON");
    worker.stop().await;
    dispatcher.stop().await;
}

/// `bench` of a function nobody serves stops at the first "no worker" (exit 4) instead of
/// calling for its whole duration.
#[actix_rt::test]
async fn bench_stops_at_an_error_no_retry_fixes() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let started = Instant::now();
    let out = ctl(
        &dispatcher,
        &["bench", "NoSuch", "-c", "4", "-d", "20s", "--json"],
    )
    .await;
    fails(&out, 4, "no worker serves NoSuch");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bench ran on for {:?}",
        started.elapsed()
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = summary["errors"]["no worker"].as_u64().unwrap();
    assert!((1..=4).contains(&failed), "{summary}");
    dispatcher.stop().await;
}

/// `bench` exits non-zero when any call failed, though others succeeded (the first
/// failure's status, every failure counted in the summary).
#[actix_rt::test]
async fn bench_fails_when_any_call_failed() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let calls = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let worker = Worker::builder()
        .name("half-worker")
        .server(dispatcher.addr.to_string())
        .function("Half", move |_job: Job| {
            let n = calls.get();
            calls.set(n + 1);
            async move {
                Ok::<_, JobError>(match n % 2 {
                    0 => RetStruct::ok("fine"),
                    _ => RetStruct::error(7, "every other call fails"),
                })
            }
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("Half", |s| s.function("Half").is_some())
        .await;
    let out = ctl(
        &dispatcher,
        &["bench", "Half", "-c", "1", "-n", "10", "--json"],
    )
    .await;
    fails(&out, 1, "every other call fails");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], 5, "{summary}");
    assert_eq!(summary["errors"]["function error (code 7)"], 5, "{summary}");
    worker.stop().await;
    dispatcher.stop().await;
}

/// A `bench` caller refused for load backs off instead of hammering the dispatcher: against
/// a function limited to 5 calls a second, 4 callers for 2 s make a few hundred refused
/// calls at most (not thousands), and the run exits 6 (refused).
#[actix_rt::test]
async fn bench_backs_off_when_the_dispatcher_refuses() {
    let mut config = Config::default();
    config
        .rate_limit
        .functions
        .push(nmid::config::FunctionRateLimitConfig {
            name: "ToUpper".to_owned(),
            per_second: 5,
            burst: 5,
        });
    let dispatcher = start_dispatcher_with_http(config);
    let worker = worker(&dispatcher).await;
    let started = Instant::now();
    let out = ctl(
        &dispatcher,
        &[
            "bench",
            "ToUpper",
            "-c",
            "4",
            "-d",
            "2s",
            "--params",
            r#"{"name":"b"}"#,
            "--json",
        ],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused: u64 = (summary["errors"].as_object().unwrap().iter())
        .filter(|(kind, _)| kind.starts_with("refused"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert!(summary["ok"].as_u64().unwrap() >= 5, "{summary}");
    assert!(
        (1..400).contains(&refused),
        "{refused} refused calls: {summary}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// `--addr` and `--http` win over NMID_ADDR and NMID_HTTP.
#[actix_rt::test]
async fn flags_beat_the_environment() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = worker(&dispatcher).await;
    let wrong = [
        ("NMID_ADDR", "127.0.0.1:1"),
        ("NMID_HTTP", "http://127.0.0.1:1"),
    ];
    let addr = dispatcher.addr.to_string();
    let http = dispatcher.http_url();
    let out = ctl_with(
        &wrong,
        &["--addr", &addr, "call", "ToUpper", r#"{"name":"f"}"#],
        b"",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "F");
    let out = ctl_with(&wrong, &["--http", &http, "health"], b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // And without the flags, the environment is used.
    fails(&ctl_with(&wrong, &["health"], b"").await, 1, "127.0.0.1:1");
    worker.stop().await;
    dispatcher.stop().await;
}

/// `nmidctl top ...` on a pty made by `script`, `cols` columns wide.
fn top_on_a_pty(dispatcher: &TestDispatcher, args: &str, cols: u16) -> tokio::process::Child {
    let command = format!(
        "stty cols {cols} rows 24; NMID_HTTP={} {NMIDCTL} top {args}",
        dispatcher.http_url()
    );
    Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script(1) runs nmidctl top on a pty")
}

/// Reads the pty until `done` holds for what was read.
async fn read_until(child: &mut tokio::process::Child, done: impl Fn(&str) -> bool) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut screen = Vec::new();
    let deadline = Instant::now() + PATIENCE * 3;
    while !done(&text(&screen)) {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, out.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("top drew: {}", text(&screen)))
            .unwrap();
        assert!(n > 0, "top ended early: {}", text(&screen));
        screen.extend_from_slice(&chunk[..n]);
    }
    text(&screen)
}

/// On a terminal, `top --once` prints one snapshot and exits 0; the live view quits on Esc
/// and on Ctrl-C with exit 0; 60 columns wide, every line fits and the summary line (the
/// uptime and the error ratio) is still drawn.
#[actix_rt::test]
async fn top_once_esc_ctrl_c_and_a_narrow_terminal() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = worker(&dispatcher).await;

    let mut once = top_on_a_pty(&dispatcher, "--once --interval 200ms", 100);
    let status = tokio::time::timeout(PATIENCE * 2, once.wait())
        .await
        .expect("top --once exits by itself")
        .unwrap();
    assert!(status.success(), "top --once exited {status}");
    let mut out = String::new();
    once.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(out.contains("FUNCTION") && out.contains("ToUpper"), "{out}");

    for key in [b"\x1b".as_slice(), b"\x03".as_slice()] {
        let mut live = top_on_a_pty(&dispatcher, "--interval 200ms", 100);
        read_until(&mut live, |s| s.contains("ToUpper")).await;
        live.stdin.as_mut().unwrap().write_all(key).await.unwrap();
        let status = tokio::time::timeout(PATIENCE, live.wait())
            .await
            .unwrap_or_else(|_| panic!("top did not quit on {key:?}"))
            .unwrap();
        assert!(status.success(), "top exited {status} on {key:?}");
    }

    let mut narrow = top_on_a_pty(&dispatcher, "--interval 200ms", 60);
    let screen = read_until(&mut narrow, |s| {
        s.contains("ToUpper") && s.contains("errors")
    })
    .await;
    narrow
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"q")
        .await
        .unwrap();
    let _ = tokio::time::timeout(PATIENCE, narrow.wait()).await;
    // The last full frame: what follows the last clear of the screen.
    let frame = screen.rsplit("\x1b[2J").next().unwrap();
    let plain: String = strip_escapes(frame);
    for line in plain.split("\r\n") {
        assert!(
            line.chars().count() <= 60,
            "{line:?} is wider than 60 columns"
        );
    }
    assert!(plain.contains("· up "), "no summary line: {plain}");
    worker.stop().await;
    dispatcher.stop().await;
}

/// The text without terminal escape sequences (CSI ... letter).
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Each binary's help says what it is: nmid the dispatcher, nmid-faas the function runner,
/// nmidctl the command-line tool.
#[test]
fn each_binary_names_itself_in_its_help() {
    for (binary, says, not) in [
        (
            env!("CARGO_BIN_EXE_nmid"),
            "nmid: a microservice RPC dispatcher",
            "",
        ),
        (
            env!("CARGO_BIN_EXE_nmid-faas"),
            "nmid-faas: serve the commands",
            "dispatcher (",
        ),
        (
            NMIDCTL,
            "nmidctl: call functions on an nmid dispatcher",
            "dispatcher (",
        ),
    ] {
        let out = std::process::Command::new(binary)
            .arg("--help")
            .output()
            .unwrap();
        let help = text(&out.stdout);
        assert!(out.status.success(), "{binary} --help");
        assert!(help.starts_with(says), "{binary}: {help}");
        if !not.is_empty() {
            assert!(!help.contains(not), "{binary}: {help}");
        }
    }
}

/// Exit 10: a call with no token to a dispatcher with `[auth]` is told "authentication
/// required" (its call's `S_CALL_ERROR`, before the dispatcher closes), not "connection
/// lost" (exit 3).
#[actix_rt::test]
async fn a_call_without_a_token_under_auth_exits_10() {
    let mut config = Config::default();
    config.auth.enabled = true;
    config.auth.tokens = vec![nmid::config::TokenConfig {
        name: "web".to_owned(),
        secret: "web-secret-0123456789".to_owned(),
        roles: vec!["client".to_owned()],
        functions: vec!["*".to_owned()],
        ..Default::default()
    }];
    let dispatcher = start_dispatcher_with_http(config);
    let out = ctl(&dispatcher, &["call", "ToUpper", r#"{"name":"x"}"#]).await;
    fails(&out, 10, "authentication required");
    dispatcher.stop().await;
}
