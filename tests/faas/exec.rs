//! Exec functions: one process per call.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use nmid::client::{Client, ClientError, Protocol};
use nmid::config::Config;

use super::common::{start_dispatcher_with_http, PATIENCE};
use super::{alive, http_post, read_pids, served, serving, temp_dir, Faas, Name, SLOW, UPPER};

/// `tr a-z A-Z` as a function answers upper-cased text to a tagged client, a v1 client and
/// an HTTP caller, each in its own protocol.
#[actix_rt::test]
async fn tr_upper_cases_through_tagged_v1_and_http() {
    let (dispatcher, faas) = serving(UPPER);
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
    let (dispatcher, faas) = serving(
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
    let (dispatcher, faas) =
        serving("[[function]]\nname = \"Echo\"\ncommand = [\"cat\"]\nconcurrency = 16\n");
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

/// SIGHUP reads the file at once, whatever `reload_interval_ms` says.
#[actix_rt::test]
async fn sighup_reloads_the_file_at_once() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let hour = "reload_interval_ms = 3600000\n";
    let faas = Faas::start(&dispatcher, &format!("{hour}{UPPER}"));
    served(&dispatcher, "Upper", 1).await;
    faas.rewrite(&format!(
        "{hour}[[function]]\nname = \"Hello\"\ncommand = [\"echo\", \"hi\"]\n"
    ));
    faas.signal("HUP");
    served(&dispatcher, "Hello", 1).await;
    served(&dispatcher, "Upper", 0).await;
    faas.stop().await;
    dispatcher.stop().await;
}

/// `--metrics-addr` serves the functions' own metrics (calls by outcome, a non-zero exit
/// counted as an error) and `/healthz`.
#[actix_rt::test]
async fn metrics_addr_serves_the_functions_metrics() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let port = super::free_port();
    let addr = format!("127.0.0.1:{port}");
    let functions = format!("{UPPER}[[function]]\nname = \"Fail\"\ncommand = [\"false\"]\n");
    let faas = Faas::start_with(&dispatcher, &functions, &["--metrics-addr", &addr]);
    served(&dispatcher, "Fail", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    client
        .call_data("Upper", &Name { name: "m" })
        .await
        .unwrap();
    let failed = client.call_data("Fail", &Name { name: "m" }).await;
    assert!(
        matches!(failed, Err(ClientError::Function { code: 1, .. })),
        "{failed:?}"
    );
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"nmid_worker_handled_total{function="Upper",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"nmid_worker_handled_total{function="Fail",outcome="error"} 1"#),
        "a non-zero exit counts as an error: {text}"
    );
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
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

/// nmid-faas's own secrets (its worker token in `NMID_TOKEN`, the OTLP exporter's headers,
/// systemd's credentials directory) do not reach a function's program; the function's own
/// `env` and the call's variables do.
#[actix_rt::test]
async fn the_faas_secrets_stay_out_of_a_functions_environment() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let server = dispatcher.addr.to_string();
    let faas = Faas::start_env(
        "[[function]]\nname = \"Env\"\ncommand = [\"env\"]\nenv = { MINE = \"kept\" }\n",
        &["--server", &server],
        &[
            ("NMID_TOKEN", "worker-secret-1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=otlp-secret-2"),
            (
                "CREDENTIALS_DIRECTORY",
                "/run/credentials/nmid-faas.service",
            ),
        ],
    );
    served(&dispatcher, "Env", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let env = client.call_data("Env", &Name { name: "x" }).await.unwrap();
    let env = String::from_utf8_lossy(&env);
    for secret in ["worker-secret-1", "otlp-secret-2", "CREDENTIALS_DIRECTORY"] {
        assert!(!env.contains(secret), "{secret} leaked:\n{env}");
    }
    assert!(
        env.contains("MINE=kept") && env.contains("NMID_FUNCTION=Env"),
        "{env}"
    );
    faas.stop().await;
    dispatcher.stop().await;
}

/// A function cannot read nmid-faas's secrets through `/proc/$PPID/environ` either: run as
/// an unprivileged user (uid 65534, as a function should be, not root), nmid-faas is not
/// dumpable, so its own user's children are refused its `/proc` files.
#[actix_rt::test]
async fn a_function_cannot_read_the_faas_environment_through_proc() {
    let setpriv = Command::new("setpriv").arg("--version").output();
    assert!(
        setpriv.is_ok_and(|out| out.status.success()),
        "this test needs setpriv (util-linux) to run nmid-faas as uid 65534"
    );
    let dispatcher = start_dispatcher_with_http(Config::default());
    let server = dispatcher.addr.to_string();
    let faas = Faas::start_wrapped(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        r#"
        [[function]]
        name = "Peek"
        command = ["sh", "-c", "id -u; tr '\\000' '\\n' < /proc/$PPID/environ; echo read=$?"]
        "#,
        &["--server", &server],
        &[
            ("NMID_TOKEN", "tok-nobody-secret"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "k=otlp-nobody-secret"),
        ],
    );
    served(&dispatcher, "Peek", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let out = client.call_data("Peek", &Name { name: "x" }).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("65534\n"), "the function ran as {out}");
    for secret in ["tok-nobody-secret", "otlp-nobody-secret"] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    assert!(!out.contains("read=0"), "the environ was readable:\n{out}");
    faas.stop().await;
    dispatcher.stop().await;
}

/// A command that writes more than `max_output_bytes` (here forever) is killed at once and
/// its call fails saying so.
#[actix_rt::test]
async fn output_past_max_output_bytes_kills_the_command() {
    let (dispatcher, faas) =
        serving("[[function]]\nname = \"Flood\"\ncommand = [\"yes\"]\nmax_output_bytes = 1000\n");
    served(&dispatcher, "Flood", 1).await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let started = Instant::now();
    match client.call_data("Flood", &Name { name: "x" }).await {
        Err(ClientError::WorkerError(message)) => assert!(
            message.contains("output larger than max_output_bytes (1000)"),
            "{message}"
        ),
        other => panic!("expected too large, got {other:?}"),
    }
    assert!(started.elapsed() < SLOW, "took {:?}", started.elapsed());
    faas.stop().await;
    dispatcher.stop().await;
}
