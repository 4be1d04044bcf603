//! Background jobs in a cluster (issue 23), on a real etcd and `nmid` processes on
//! 127.0.0.1: a job submitted to A is read and cancelled through B (B asks A, the owner its
//! id names); A killed with SIGKILL and started again on its data dir runs its jobs to the
//! end, and B answers for them again. With auth on, a client of the nmid protocol on B reads
//! and cancels its jobs on A, and only its own.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_support::{free_port, member, Etcd, Nmid};
use common::PATIENCE;
use nmid::client::{ClientError, JobState, SubmitOptions};
use nmid::worker::{Job, Worker};
use serde_json::Value;

async fn send(method: &str, url: String, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut request = client.request(method.parse().unwrap(), url);
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request
        .send_body(Bytes::copy_from_slice(body.as_bytes()))
        .await
        .expect("a response");
    let body = response.body().await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

/// Submit on A, read and cancel on B; SIGKILL A, start it again on its data dir: its jobs
/// finish, and B reads the result.
#[actix_rt::test]
async fn any_dispatcher_answers_for_a_job_and_a_restarted_owner_finishes_its_jobs() {
    let etcd = Etcd::start().await;
    let dir = std::env::temp_dir().join(format!("nmid-cluster-jobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.to_str().unwrap().to_owned();
    let tcp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let env = [("NMID__JOBS__DATA_DIR", data_dir.as_str())];
    let args = ["--tcp-addr", tcp.as_str(), "--http-addr", http.as_str()];
    let mut a = Nmid::start_with(&etcd.url, &env, &args);
    let b = Nmid::start(&etcd.url);
    let a_id = a.id.clone();
    b.wait_json("/api/v1/cluster", PATIENCE, "A among B's members", |v| {
        member(v, &a_id).is_some()
    })
    .await;
    let on = |nmid_http: std::net::SocketAddr, path: &str| format!("http://{nmid_http}{path}");
    let plain = [("content-type", "text/plain")];
    // No worker serves `Later` yet: the jobs wait on A.
    let (status, json) = send("POST", on(a.http, "/async/Later"), &plain, "first").await;
    assert_eq!(status, 202, "{json}");
    let first = json["id"].as_str().unwrap().to_owned();
    let delayed = [
        ("content-type", "text/plain"),
        ("x-nmid-delay-ms", "600000"),
    ];
    let (_, json) = send("POST", on(a.http, "/async/Later"), &delayed, "never").await;
    let never = json["id"].as_str().unwrap().to_owned();

    let (status, json) = send("GET", on(b.http, &format!("/api/v1/jobs/{first}")), &[], "").await;
    assert_eq!(
        (status, json["state"].as_str()),
        (200, Some("queued")),
        "{json}"
    );
    let cancel = on(b.http, &format!("/api/v1/jobs/{never}"));
    let (status, json) = send("DELETE", cancel, &[], "").await;
    assert_eq!(
        (status, json["state"].as_str()),
        (200, Some("cancelled")),
        "{json}"
    );
    let (status, json) = send("GET", on(b.http, "/api/v1/jobs/nosuchnode-1"), &[], "").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (404, Some("job_not_found")),
        "{json}"
    );

    a.kill();
    let mut a = Nmid::start_with(&etcd.url, &env, &args);
    let worker = Worker::builder()
        .name("later")
        .server(tcp.clone())
        .function("Later", |job: Job| async move {
            Ok(Bytes::from(job.params().to_ascii_uppercase()))
        })
        .start()
        .unwrap();
    let a_id = a.id.clone();
    b.wait_json(
        "/api/v1/cluster",
        PATIENCE,
        "A back among B's members",
        |v| member(v, &a_id).is_some(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("/api/v1/jobs/{first}?wait_ms=2000");
        let (status, json) = send("GET", on(b.http, &path), &[], "").await;
        if status == 200 && json["state"] == "succeeded" {
            assert_eq!(json["result"], "FIRST", "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "{status} {json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, json) = send("GET", on(a.http, &format!("/api/v1/jobs/{never}")), &[], "").await;
    assert_eq!(
        json["state"], "cancelled",
        "a cancellation survives the kill: {json}"
    );
    worker.stop().await;
    a.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[auth]` of both dispatchers of [`a_tagged_client_reads_and_cancels_another_dispatchers_jobs_as_itself`].
fn auth_config(dir: &std::path::Path) -> String {
    let secret_file = dir.join("peer.secret");
    std::fs::write(&secret_file, PEERS).unwrap();
    let mut text = format!(
        "[auth]\nenabled = true\npeer_secret_file = \"{}\"\n\
         [[auth.tokens]]\nname = \"peers\"\nsecret = \"{PEERS}\"\nroles = [\"peer\"]\n\
         [[auth.tokens]]\nname = \"worker\"\nsecret = \"{WORKER}\"\nroles = [\"worker\"]\n\
         functions = [\"Later\"]\n",
        secret_file.display()
    );
    for (name, secret) in [("alice", ALICE), ("bob", BOB)] {
        text.push_str(&format!(
            "[[auth.tokens]]\nname = \"{name}\"\nsecret = \"{secret}\"\nroles = [\"client\"]\n\
             functions = [\"Later\"]\n"
        ));
    }
    text
}

const PEERS: &str = "peers-secret-0123456789abcdef";
const WORKER: &str = "worker-secret-0123456789abcdef";
const ALICE: &str = "alice-secret-0123456789abcdef";
const BOB: &str = "bob-secret-0123456789abcdef-bob";

/// With auth on, a client of the nmid protocol connected to B reads, waits on and cancels
/// the jobs it submitted to A (B asks A with its peer token, naming the caller; A decides as
/// for that caller): the status is A's, byte for byte; another tenant on B is told "not
/// found" and cannot cancel them; a peer token names a caller only with its `peer` role.
#[actix_rt::test]
async fn a_tagged_client_reads_and_cancels_another_dispatchers_jobs_as_itself() {
    let etcd = Etcd::start().await;
    let dir = std::env::temp_dir().join(format!("nmid-cluster-jobs-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("nmid.toml");
    std::fs::write(&config, auth_config(&dir)).unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let a = Nmid::start_with_args(&etcd.url, &args);
    let b = Nmid::start_with_args(&etcd.url, &args);
    let alice_a = common::client_with_token(a.tcp, ALICE).await;
    let later = SubmitOptions::default().delay(Duration::from_secs(600));
    let waiting = alice_a
        .submit("Later", "first", SubmitOptions::default())
        .await
        .unwrap();
    let never = alice_a.submit("Later", "never", later).await.unwrap();

    let alice_b = common::client_with_token(b.tcp, ALICE).await;
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        // Until B has A's record (with its jobs node) in its view of the cluster.
        match alice_b.job_status(&waiting.id).await {
            Ok(status) => break status,
            Err(ClientError::JobNotFound(why)) if Instant::now() < deadline => {
                assert!(why.contains("none of the cluster"), "{why}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("alice's status of her job through B: {e}"),
        }
    };
    assert_eq!(status, alice_a.job_status(&waiting.id).await.unwrap());
    assert_eq!(
        (status.state, status.function.as_str()),
        (JobState::Queued, "Later")
    );

    let bob_b = common::client_with_token(b.tcp, BOB).await;
    match bob_b.job_status(&waiting.id).await {
        Err(ClientError::JobNotFound(_)) => {}
        other => panic!("bob sees alice's job through B: {other:?}"),
    }
    match bob_b.cancel_job(&never.id).await {
        Err(ClientError::JobNotFound(_)) => {}
        other => panic!("bob cancels alice's job through B: {other:?}"),
    }
    assert_eq!(
        alice_a.job_status(&never.id).await.unwrap().state,
        JobState::Queued
    );
    let cancelled = alice_b.cancel_job(&never.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        alice_a.job_status(&never.id).await.unwrap().state,
        JobState::Cancelled
    );
    match alice_b.cancel_job(&never.id).await {
        Err(ClientError::NotCancellable(why)) => assert!(why.contains("cancelled"), "{why}"),
        other => panic!("a second cancel through B: {other:?}"),
    }

    // Over HTTP on A: the peer token acts for the caller it names, and only it.
    let url = format!("http://{}/api/v1/jobs/{}", a.http, waiting.id);
    let bearer = |secret: &str| format!("Bearer {secret}");
    let (peers, bob) = (bearer(PEERS), bearer(BOB));
    let as_alice = [
        ("authorization", peers.as_str()),
        ("x-nmid-caller", "token:alice"),
    ];
    let (status, json) = send("GET", url.clone(), &as_alice, "").await;
    assert_eq!(
        (status, json["state"].as_str()),
        (200, Some("queued")),
        "{json}"
    );
    let as_bob = [
        ("authorization", peers.as_str()),
        ("x-nmid-caller", "token:bob"),
    ];
    assert_eq!(send("GET", url.clone(), &as_bob, "").await.0, 404);
    let as_nobody = [
        ("authorization", peers.as_str()),
        ("x-nmid-caller", "token:nobody"),
    ];
    assert_eq!(send("GET", url.clone(), &as_nobody, "").await.0, 403);
    let as_worker = [
        ("authorization", peers.as_str()),
        ("x-nmid-caller", "token:worker"),
    ];
    assert_eq!(send("GET", url.clone(), &as_worker, "").await.0, 403);
    assert_eq!(
        send("GET", url.clone(), &[("authorization", peers.as_str())], "")
            .await
            .0,
        403
    );
    let bob_naming_alice = [
        ("authorization", bob.as_str()),
        ("x-nmid-caller", "token:alice"),
    ];
    assert_eq!(send("GET", url.clone(), &bob_naming_alice, "").await.0, 404);

    // A worker on A: alice's wait through B ends with the result.
    let worker = Worker::builder()
        .name("later")
        .server(a.tcp.to_string())
        .token(WORKER)
        .function("Later", |job: Job| async move {
            Ok(Bytes::from(job.params().to_ascii_uppercase()))
        })
        .start()
        .unwrap();
    let done = alice_b
        .wait_job(&waiting.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_deref(), Some(&b"FIRST"[..]));
    worker.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Jobs submitted to A for a function only B's workers serve (one slot): A forwards them no
/// faster than B's published slots, so the others stay queued on A (cancellable, no attempt
/// used) and each attempt's time runs on B's worker, not in its queue: five jobs of 300 ms
/// with one attempt of 1 s each all succeed. (Forwarded `max_running_per_function` at once,
/// the later ones timed out in B's queue without running.)
#[actix_rt::test]
async fn jobs_for_a_peers_function_go_no_faster_than_its_slots() {
    let etcd = Etcd::start().await;
    let a = Nmid::start_with_env(&etcd.url, &[("NMID__JOBS__TIMEOUT_MS", "1000")]);
    let b = Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("napper")
        .server(b.tcp.to_string())
        .slots(1)
        .function("Nap", |job: Job| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Bytes::from(job.params().to_ascii_uppercase()))
        })
        .start()
        .unwrap();
    let b_id = b.id.clone();
    a.wait_json(
        "/api/v1/cluster",
        PATIENCE,
        "B serving Nap in A's view",
        |v| cluster_support::serves(v, &b_id, "Nap"),
    )
    .await;
    let on_a = |path: &str| format!("http://{}{path}", a.http);
    let headers = [("content-type", "text/plain"), ("x-nmid-max-attempts", "1")];
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, json) = send("POST", on_a("/async/Nap"), &headers, &format!("j{i}")).await;
        assert_eq!(status, 202, "{json}");
        ids.push(json["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, running) = send("GET", on_a("/api/v1/jobs?state=running"), &[], "").await;
    let running = running["jobs"].as_array().unwrap().len();
    assert!(
        running <= 1,
        "{running} of A's jobs forwarded to B's one slot at once"
    );
    let last = ids.pop().unwrap();
    let (status, json) = send("DELETE", on_a(&format!("/api/v1/jobs/{last}")), &[], "").await;
    assert_eq!(
        (status, json["state"].as_str()),
        (200, Some("cancelled")),
        "{json}"
    );
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let path = format!("/api/v1/jobs/{id}?wait_ms=2000");
            let (_, json) = send("GET", on_a(&path), &[], "").await;
            match json["state"].as_str() {
                Some("succeeded") => {
                    assert_eq!(json["attempts"], 1, "{json}");
                    break;
                }
                Some("queued" | "running") if Instant::now() < deadline => {}
                _ => panic!("job {id}: {json}"),
            }
        }
    }
    worker.stop().await;
}
