//! Background jobs in a cluster (issue 23), on a real etcd and `nmid` processes on
//! 127.0.0.1: a job submitted to A is read and cancelled through B (B asks A, the owner its
//! id names); A killed with SIGKILL and started again on its data dir runs its jobs to the
//! end, and B answers for them again.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_support::{free_port, member, Etcd, Nmid};
use common::PATIENCE;
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
