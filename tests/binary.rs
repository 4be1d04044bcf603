//! The `nmid` binary as a user runs it: `--demo`, SIGTERM drain, configuration (file,
//! environment, errors) and JSON logs.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{addr_in, ChildLog, Process, NMID, PROCESS_PATIENCE};
use common::{vector, Peer, DRAIN_WATCH};
use nmid::codec::Frame;

/// `nmid --demo` answers nmid's golden ToUpper call with the golden result bytes, and the
/// README's curl call over HTTP with `NMID`.
#[actix_rt::test]
async fn demo_mode_serves_to_upper() {
    let mut nmid = Process::start(&["--demo"]);
    nmid.wait_for_log("function registered");
    let mut client = Peer::connect(nmid.addr).await;
    client.send_raw(&vector("client_do_job_msgpack")).await;
    assert_eq!(client.recv_raw_frame().await, vector("server_return_data"));

    // Params without a string `name` get an error RetStruct, not a hang.
    client.call("ToUpper", b"\x80").await;
    let Frame::SReturnData(ret) = client.recv().await else {
        panic!("expected S_RETURN_DATA");
    };
    let ret = nmid::retstruct::RetStruct::decode(&ret.ret).unwrap();
    assert_eq!(ret.code, 1);
    assert!(ret.msg.contains("name"), "{}", ret.msg);

    // curl -s -X POST localhost:6809/call/ToUpper -H 'content-type: application/json' -d '{"name":"nmid"}'
    let url = format!(
        "http://{}/call/ToUpper",
        nmid.http.expect("http is on by default")
    );
    let mut response = awc::Client::default()
        .post(url)
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"name":"nmid"}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&response.body().await.unwrap()[..], b"NMID");
}

/// SIGTERM: the job in flight finishes and reaches its caller, then nmid exits 0.
#[tokio::test]
async fn sigterm_drains_the_job_in_flight_then_exits_zero() {
    let mut nmid = Process::start(&[]);
    let mut worker = Peer::worker(nmid.addr, "w", &["F"]).await;
    let mut client = Peer::connect(nmid.addr).await;
    client.call("F", b"p").await;
    let job = worker.recv_job().await;

    let mut late_caller = Peer::connect(nmid.addr).await;
    nmid.signal("-TERM");
    // Draining shows on a connection already open: a call of a function nobody serves gets
    // CANT_DO until the drain begins, ERROR from then on.
    let deadline = Instant::now() + PROCESS_PATIENCE;
    loop {
        late_caller.call("Nobody", b"\x80").await;
        match late_caller.recv().await {
            Frame::Error => break,
            Frame::CantDo => {}
            other => panic!("expected CANT_DO or ERROR, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "nmid never began to drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nmid.wait_for_log("shutting down");
    // The drain waits for the job: a while later nmid still runs and the call still waits.
    tokio::time::sleep(DRAIN_WATCH).await;
    let exited = nmid.child.try_wait().unwrap();
    assert!(
        exited.is_none(),
        "nmid exited with a job in flight: {exited:?}"
    );
    assert_eq!(
        client.try_recv(),
        None,
        "the call was answered before its job"
    );
    worker.answer(&job, b"done").await;
    let Frame::SReturnData(ret) = client.recv().await else {
        panic!("expected S_RETURN_DATA");
    };
    assert_eq!(&ret.ret[..], b"done");
    let status = tokio::task::spawn_blocking(move || nmid.wait_exit(PROCESS_PATIENCE))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// SIGINT with nothing in flight exits 0 at once.
#[test]
fn sigint_when_idle_exits_zero() {
    let mut nmid = Process::start(&[]);
    nmid.signal("-INT");
    let status = nmid.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
}

/// SIGTERM sent the moment nmid logs that it listens (it accepts connections from then on)
/// is a graceful shutdown, not death by the signal: nmid exits 0, every time.
#[test]
fn sigterm_right_after_listening_exits_zero() {
    for attempt in 1..=10 {
        let mut nmid = Process::start(&["--no-http"]);
        nmid.signal("-TERM");
        let status = nmid.wait_exit(PROCESS_PATIENCE);
        assert!(status.success(), "attempt {attempt}: exit status {status}");
    }
}

/// Runs `nmid` expecting a configuration error; returns its stderr. A `nmid` that accepts
/// the configuration and keeps running is killed (by its PID) and fails the test.
fn config_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let addrs = ["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"];
    failed_start(&[&addrs[..], args].concat(), env)
}

/// Runs `nmid` with `args` expecting it to fail at start and exit 2; returns its stderr. A
/// `nmid` that starts and keeps running is killed (by its PID) and fails the test.
fn failed_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(NMID);
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run nmid");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + PROCESS_PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nmid {args:?} {env:?} kept running: it should have failed to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().expect("stderr reader");
    assert_eq!(
        status.code(),
        Some(2),
        "a failed start exits 2; stderr: {stderr}"
    );
    stderr
}

/// Bad configuration from the environment, a file, or a range check names the bad key.
#[test]
fn config_errors_name_the_bad_key() {
    let stderr = config_error(&[], &[("NMID__JOBS__TIMEOUT_MS", "soon")]);
    assert!(stderr.contains("jobs.timeout_ms"), "{stderr}");

    let stderr = config_error(&[], &[("NMID__WORKERS__MAX_JOBS_IN_FLIGHT", "0")]);
    assert!(stderr.contains("workers.max_jobs_in_flight"), "{stderr}");

    for (env, key) in [
        ("NMID__SERVER__LISTEN_BACKLOG", "server.listen_backlog"),
        ("NMID__HTTP__MAX_CONNECTIONS", "http.max_connections"),
    ] {
        let stderr = config_error(&[], &[(env, "0")]);
        assert!(stderr.contains(key), "{stderr}");
    }

    let dir = std::env::temp_dir().join(format!("nmid-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typo.toml");
    std::fs::write(&file, "[jobs]\ntimeout = 5\n").unwrap();
    let stderr = config_error(&["--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("timeout"), "{stderr}");

    let stderr = config_error(&["--config", "/nonexistent/nmid.toml"], &[]);
    assert!(stderr.contains("/nonexistent/nmid.toml"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An address already in use, of either listener, is a failed start: exit 2, and stderr
/// names the configuration key, the address and the cause.
#[test]
fn an_address_in_use_exits_2_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (key, args) in [
        (
            "tcp.addr",
            ["--tcp-addr", &taken_addr, "--http-addr", "127.0.0.1:0"],
        ),
        (
            "http.addr",
            ["--tcp-addr", "127.0.0.1:0", "--http-addr", &taken_addr],
        ),
    ] {
        let stderr = failed_start(&args, &[]);
        assert!(stderr.contains(key), "{stderr}");
        assert!(stderr.contains(&taken_addr), "{stderr}");
        assert!(stderr.contains("in use"), "{stderr}");
    }
    drop(taken);
}

/// A config file's values replace the defaults, and an environment variable replaces the
/// file's value of its key.
#[tokio::test]
async fn config_file_and_environment_apply_in_order() {
    let dir = std::env::temp_dir().join(format!("nmid-config-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nmid.toml");
    std::fs::write(
        &file,
        "[jobs]\ntimeout_ms = 60000\n\
         [workers]\nmax_jobs_in_flight = 1\nmax_queue_per_function = 0\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let nmid = Process::start_with_env(
        &["--no-http", "--config", config],
        &[("NMID__JOBS__TIMEOUT_MS", "150")],
    );
    let addr = nmid.addr;

    let mut worker = Peer::worker(addr, "w", &["F"]).await;
    let mut first = Peer::connect(addr).await;
    let mut second = Peer::connect(addr).await;
    let started = Instant::now();
    first.call("F", b"p").await;
    worker.recv_job().await;
    // The file's one job per worker and empty queue (the defaults are 64 and 1024).
    second.call("F", b"q").await;
    assert_eq!(second.recv().await, Frame::RateLimit);
    // The environment's 150 ms deadline, not the file's 60 s.
    assert_eq!(first.recv().await, Frame::Error);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 150 ms from the environment applied"
    );
    drop(nmid);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `log.format = "json"`: every line nmid writes to stderr, from start to exit, is a JSON
/// object with a level and a message, and the listening line carries the address.
#[test]
fn json_log_format_writes_only_json_lines() {
    let mut nmid = Process::start_with_env(&["--no-http"], &[("NMID__LOG__FORMAT", "json")]);
    nmid.signal("-INT");
    let status = nmid.wait_exit(PROCESS_PATIENCE);
    assert!(status.success(), "exit status {status}");
    let addr = nmid.addr;
    let lines = nmid.whole_log();
    assert!(
        lines.len() >= 3,
        "start, signal and drain are logged: {lines:#?}"
    );
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(json["level"].is_string(), "no level: {line}");
        assert!(json["fields"]["message"].is_string(), "no message: {line}");
    }
    let listening = lines
        .iter()
        .find(|l| l.contains("nmid protocol listening"))
        .expect("the listening line");
    assert_eq!(addr_in(listening), addr);
}

/// With `metrics.addr` set, Prometheus metrics are also served on a port of their own, which
/// serves nothing else.
#[actix_rt::test]
async fn metrics_can_have_a_port_of_their_own() {
    let mut nmid =
        Process::start_with_env(&["--no-http"], &[("NMID__METRICS__ADDR", "127.0.0.1:0")]);
    let addr = addr_in(&nmid.wait_for_log("metrics listening"));
    let client = awc::Client::default();
    let mut response = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.body().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("nmid_build_info"));
    let response = client
        .post(format!("http://{addr}/call/ToUpper"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "the metrics port serves only /metrics"
    );
    drop(nmid);
}

/// Not a test on its own: the child process of
/// `a_panic_in_a_child_process_fails_the_test_that_stops_it`. With `NMID_TEST_CHILD_PANICS`
/// set, one of its threads panics and the process goes on and exits 0, as `nmid` does when
/// an actor or a task panics.
#[test]
#[ignore = "a role of a test, started by it"]
fn child_role() {
    let panics = std::env::var_os("NMID_TEST_CHILD_PANICS").is_some();
    let ended = std::thread::spawn(move || {
        eprintln!("the child's thread is running");
        assert!(!panics, "injected by the test");
    })
    .join();
    assert_eq!(ended.is_err(), panics);
}

/// The harness sees a child's panic that the child itself survives: the test that stops
/// the child fails, with the panic's message; a child that did not panic passes.
#[test]
fn a_panic_in_a_child_process_fails_the_test_that_stops_it() {
    let start = |panics: bool| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if panics {
            command.env("NMID_TEST_CHILD_PANICS", "1");
        }
        let mut child = (command.args(["--ignored", "--exact", "child_role", "--nocapture"]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the child");
        let log = ChildLog::read(child.stderr.take().unwrap());
        let status = child.wait().unwrap();
        assert!(status.success(), "the child exited {status}");
        log
    };
    let mut panicked = start(true);
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        panicked.assert_no_panic("the child")
    }));
    let failure = failed.expect_err("the child's panic failed the test");
    let message = failure.downcast_ref::<String>().expect("a message");
    assert!(message.contains("the child panicked"), "{message}");
    assert!(message.contains("injected by the test"), "{message}");

    start(false).assert_no_panic("a child that did not panic");
}

/// Dropping a [`Process`] (how every test that started one ends) fails the test when the
/// child reported a panic, even one it went on running after; a quiet child's drop passes.
#[test]
fn dropping_a_process_that_reported_a_panic_fails_the_test() {
    let start = |line: &str| {
        let child = Command::new("sh")
            .args(["-c", &format!("echo \"{line}\" >&2; exec sleep 30")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sh");
        let mut process = Process::adopt(child, "sh");
        process.wait_for_log(line);
        process
    };
    let panicked = start("thread 'x' panicked at a.rs:1:1:");
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(panicked)));
    let failure = dropped.expect_err("the child's panic failed the test on drop");
    let message = failure.downcast_ref::<String>().expect("a message");
    assert!(message.contains("sh (pid"), "{message}");
    assert!(message.contains("panicked at a.rs:1:1"), "{message}");

    drop(start("all is well"));
}
