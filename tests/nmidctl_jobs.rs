//! `nmidctl submit` and `nmidctl jobs`, the real binary, against a live in-process
//! dispatcher (nmid protocol and HTTP on 127.0.0.1) with a worker (issue 23): the job id on
//! stdout, `--wait` printing the result as `call` does, the jobs table with its filters, one
//! job, a cancel, and each error's exit status (11 no such job, 12 not cancellable, 6 store
//! full, 2 a bad option, 1 a failed job), and the token presented both ways with `[auth]` on.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{start_dispatcher_with_http, TestDispatcher};
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker, WorkerHandle};
use tokio::process::Command;

const NMIDCTL: &str = env!("CARGO_BIN_EXE_nmidctl");

/// A dispatcher (with `config`) and a worker serving `ToUpper` (the demo) and `Fail`
/// (fails as a tagged worker, with a message).
async fn setup(config: Config) -> (TestDispatcher, WorkerHandle) {
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("ctl-jobs-worker")
        .server(dispatcher.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .function("Fail", |_job: Job| async {
            Err::<RetStruct, _>(JobError::new("the order is gone"))
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("Fail").is_some())
        .await;
    (dispatcher, worker)
}

fn config() -> Config {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    config.jobs.default_backoff_ms = 20;
    config
}

/// Runs `nmidctl ARGS` against `dispatcher` (through NMID_ADDR and NMID_HTTP).
async fn ctl(dispatcher: &TestDispatcher, args: &[&str]) -> Output {
    let run = Command::new(NMIDCTL)
        .args(args)
        .env("NMID_ADDR", dispatcher.addr.to_string())
        .env("NMID_HTTP", dispatcher.http_url())
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

/// Asserts success and returns stdout.
fn succeeds(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    stdout(out)
}

/// Asserts the exit status and that stderr contains `message`.
fn fails(out: &Output, code: i32, message: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(stderr(out).contains(message), "{}", stderr(out));
}

/// `submit --wait` prints the result's Data as `call` does (`--raw` the RetStruct); a plain
/// `submit` prints the id, which `jobs ID` shows and `jobs` lists with its filters; a
/// failed job exits 1 with the worker's message, a bad option 2.
#[actix_rt::test]
async fn submit_waits_for_the_result_and_jobs_lists_and_shows_them() {
    let (d, _worker) = setup(config()).await;
    let out = ctl(&d, &["submit", "--wait", "ToUpper", r#"{"name":"nmid"}"#]).await;
    assert_eq!(succeeds(&out), "NMID");
    assert!(stderr(&out).starts_with("job "), "{}", stderr(&out));
    let out = ctl(
        &d,
        &["submit", "--wait", "--raw", "ToUpper", r#"{"name":"a"}"#],
    )
    .await;
    assert_eq!(out.stdout, RetStruct::ok("A").encode());

    let id = succeeds(
        &ctl(
            &d,
            &["submit", "--priority", "high", "ToUpper", r#"{"name":"b"}"#],
        )
        .await,
    );
    let id = id.trim().to_owned();
    assert!(id.contains('-'), "{id}");
    let delayed = [
        "submit",
        "--delay-ms",
        "60000",
        "--unique-key",
        "k",
        "ToUpper",
    ];
    let later = succeeds(&ctl(&d, &delayed).await).trim().to_owned();
    let again = succeeds(&ctl(&d, &delayed).await).trim().to_owned();
    assert_eq!(again, later, "one unique key, one job");

    let shown = succeeds(&ctl(&d, &["jobs", &later]).await);
    for line in [
        "state:",
        "queued",
        "function:",
        "ToUpper",
        "unique_key:",
        "attempts:",
    ] {
        assert!(shown.contains(line), "{line}: {shown}");
    }
    let table = succeeds(&ctl(&d, &["jobs", "--state", "queued"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[1].starts_with(&later), "{table}");
    let all = succeeds(&ctl(&d, &["jobs", "--function", "ToUpper"]).await);
    assert_eq!(all.lines().count(), 1 + 4, "{all}");
    let page = succeeds(&ctl(&d, &["jobs", "--limit", "2"]).await);
    assert_eq!(page.lines().count(), 3, "{page}");
    let json = succeeds(&ctl(&d, &["jobs", "--json", &id]).await);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["id"], id.as_str());

    fails(
        &ctl(&d, &["submit", "--wait", "Fail", "{}"]).await,
        1,
        "the order is gone",
    );
    fails(
        &ctl(&d, &["submit", "--max-attempts", "0", "ToUpper", "{}"]).await,
        2,
        "max-attempts",
    );
    d.stop().await;
}

/// `jobs ID --cancel` cancels a queued job; again, or an unknown id, has its own exit status
/// (12, 11); a full store refuses a submission (6).
#[actix_rt::test]
async fn cancel_and_errors_have_their_exit_statuses() {
    let mut config = config();
    config.jobs.max_stored_jobs = 2;
    let (d, _worker) = setup(config).await;
    let delayed = ["submit", "--delay-ms", "60000", "ToUpper"];
    let id = succeeds(&ctl(&d, &delayed).await).trim().to_owned();
    let out = succeeds(&ctl(&d, &["jobs", &id, "--cancel"]).await);
    assert!(out.contains("cancelled"), "{out}");
    fails(
        &ctl(&d, &["jobs", &id, "--cancel"]).await,
        12,
        "only a queued job",
    );
    fails(
        &ctl(&d, &["jobs", "nosuchnode-9"]).await,
        11,
        "nosuchnode-9",
    );
    fails(&ctl(&d, &["jobs", "../functions"]).await, 11, "functions");
    succeeds(&ctl(&d, &delayed).await);
    fails(&ctl(&d, &delayed).await, 6, "jobs.max_stored_jobs");
    fails(
        &ctl(&d, &["jobs", "--state", "bogus"]).await,
        2,
        "unknown state",
    );
    d.stop().await;
}

/// With `[auth]` on, `submit` presents `--token` over the nmid protocol and `jobs` as
/// `Authorization: Bearer`; another token does not see the job (11), no token is denied (10).
#[actix_rt::test]
async fn submit_and_jobs_present_the_token() {
    let mut config = config();
    config.auth.enabled = true;
    let token = |name: &str| nmid::config::TokenConfig {
        name: name.to_owned(),
        secret: format!("{name}-secret-0123456789"),
        roles: vec!["client".to_owned(), "worker".to_owned()],
        functions: vec!["ToUpper".to_owned()],
        ..nmid::config::TokenConfig::default()
    };
    config.auth.tokens = vec![token("a"), token("b")];
    let (d, _worker) = setup_with_token(config, "a-secret-0123456789").await;
    let out = ctl(
        &d,
        &[
            "--token",
            "a-secret-0123456789",
            "submit",
            "--wait",
            "ToUpper",
            r#"{"name":"x"}"#,
        ],
    )
    .await;
    assert_eq!(succeeds(&out), "X");
    let delayed = [
        "--token",
        "a-secret-0123456789",
        "submit",
        "--delay-ms",
        "60000",
        "ToUpper",
    ];
    let id = succeeds(&ctl(&d, &delayed).await).trim().to_owned();
    let mine = succeeds(&ctl(&d, &["--token", "a-secret-0123456789", "jobs", &id]).await);
    assert!(mine.contains("queued"), "{mine}");
    fails(
        &ctl(&d, &["--token", "b-secret-0123456789", "jobs", &id]).await,
        11,
        &id,
    );
    fails(
        &ctl(&d, &["submit", "ToUpper"]).await,
        10,
        "authentication required",
    );
    d.stop().await;
}

/// [`setup`] for a dispatcher with `[auth]` on: the worker presents `secret`.
async fn setup_with_token(config: Config, secret: &str) -> (TestDispatcher, WorkerHandle) {
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("ctl-jobs-worker")
        .server(dispatcher.addr.to_string())
        .token(secret.to_owned())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("ToUpper").is_some())
        .await;
    (dispatcher, worker)
}
