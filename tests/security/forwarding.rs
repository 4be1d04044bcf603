//! Callers across a peer hop (issue 18): a dispatcher forwards each call naming the caller it
//! admitted, and the peer, trusting a link with the `peer` role, applies that caller's grant
//! and rate-limit bucket, never the link's. And `cluster.max_forwarded_per_peer` answered
//! 429 end to end, as is a refusal of the serving dispatcher's own rate limit.

use super::*;

const TENANT_A: &str = "tenant-a-secret-0123456789";
const TENANT_B: &str = "tenant-b-secret-0123456789";
const TENANT_C: &str = "tenant-c-secret-0123456789";
const PROBE: &str = "probe-secret-0123456789";
const SLOW: &str = "slow-caller-secret-0123456789";
const PEERS: &str = "peers-secret-0123456789abcdef";

/// Echoes its params.
async fn echo(job: Job) -> Result<Bytes, JobError> {
    Ok(job.params().clone())
}

/// Echoes its params after 1.5 s.
async fn slow(job: Job) -> Result<Bytes, JobError> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(job.params().clone())
}

/// A cluster config with auth on, the peer token (the `peer` role only), the tenants' tokens
/// (`tenant-c` only when `with_c`), and per-client rate limits of 1 call/s with a burst of 5.
fn cluster_config(dir: &std::path::Path, with_c: bool, extra: &str) -> String {
    let secret_file = dir.join("peer.secret");
    std::fs::write(&secret_file, PEERS).unwrap();
    let client = |name: &str, secret: &str| {
        format!(
            "[[auth.tokens]]\nname = \"{name}\"\nsecret = \"{secret}\"\nroles = [\"client\"]\n\
             functions = [\"Echo\", \"Slow\"]\n"
        )
    };
    let mut text = format!(
        "{extra}\n[rate_limit]\nper_client_per_second = 1\nper_client_burst = 5\n\
         [auth]\nenabled = true\npeer_secret_file = \"{}\"\n\
         [[auth.tokens]]\nname = \"peers\"\nsecret = \"{PEERS}\"\nroles = [\"peer\"]\n\
         [[auth.tokens]]\nname = \"worker\"\nsecret = \"{WORKER_SECRET}\"\nroles = [\"worker\"]\n\
         functions = [\"Echo\", \"Slow\"]\n",
        secret_file.display()
    );
    for (name, secret) in [("tenant-a", TENANT_A), ("tenant-b", TENANT_B)] {
        text.push_str(&client(name, secret));
    }
    text.push_str(&client("probe", PROBE));
    text.push_str(&client("slow", SLOW));
    if with_c {
        text.push_str(&client("tenant-c", TENANT_C));
    }
    text
}

/// Two tenants call through a dispatcher that forwards to the one serving: each has its
/// own bucket on the peer (five calls of tenant A leave tenant B's five untouched, where
/// the peer link's one bucket ran dry before), and the peer applies each tenant's own grant
/// (a tenant only the entry knows is refused there). With `cluster.max_forwarded_per_peer =
/// 1`, concurrent HTTP calls past the one in flight are answered 429 at once.
#[actix_rt::test]
async fn forwarded_calls_count_against_their_own_callers_on_the_peer() {
    let dir = std::env::temp_dir().join(format!("nmid-forwarding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let entry_file = dir.join("entry.toml");
    let serving_file = dir.join("serving.toml");
    let entry_extra = "[cluster]\nmax_forwarded_per_peer = 1";
    std::fs::write(&entry_file, cluster_config(&dir, true, entry_extra)).unwrap();
    std::fs::write(&serving_file, cluster_config(&dir, false, "")).unwrap();
    let etcd = cluster_support::Etcd::start().await;
    let arg = |path: &std::path::Path| path.display().to_string();
    let entry = cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &arg(&entry_file)]);
    let serving =
        cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &arg(&serving_file)]);
    let worker = Worker::builder()
        .server(serving.tcp.to_string())
        .token(WORKER_SECRET)
        .function("Echo", echo)
        .function("Slow", slow)
        .start()
        .unwrap();
    let probe = common::client_with_token(entry.tcp, PROBE).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match probe.call("Echo", Bytes::from_static(b"probe")).await {
            Ok(ret) => {
                assert_eq!(&ret[..], b"probe");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "never forwarded: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    for (tenant, secret) in [("tenant-a", TENANT_A), ("tenant-b", TENANT_B)] {
        let client = common::client_with_token(entry.tcp, secret).await;
        for i in 0..5u8 {
            let ret = client.call("Echo", Bytes::from(vec![i; 8])).await;
            assert_eq!(
                ret.as_deref().ok(),
                Some(&[i; 8][..]),
                "{tenant} call {i}: {ret:?}"
            );
        }
    }
    let stranger = common::client_with_token(entry.tcp, TENANT_C).await;
    let refused = stranger.call("Echo", Bytes::from_static(b"c")).await;
    assert!(
        matches!(refused, Err(ClientError::Forbidden(_))),
        "{refused:?}"
    );

    let url = format!("http://{}/call/Slow?params=json", entry.http);
    let calls = (0..4).map(|i| {
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(SLOW)
                .body(format!("{{\"n\":{i}}}"))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    let mut statuses = futures_util::future::join_all(calls).await;
    statuses.sort_unstable();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429)
            && statuses.contains(&200)
            && statuses.contains(&429),
        "{statuses:?}"
    );
    worker.stop().await;
    drop((entry, serving));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A call refused by the serving dispatcher's rate limit (here stricter than the entry's)
/// reaches its caller through the entry as a rate-limit refusal: 429 `rate_limited` over
/// HTTP, `RateLimited` over the nmid protocol; never a generic error. (The limiter's own
/// message and wait do not cross the hop: the client library's `RateLimited` carries none.)
#[actix_rt::test]
async fn a_rate_limit_refusal_on_the_peer_reaches_the_caller_as_rate_limited() {
    let dir = std::env::temp_dir().join(format!("nmid-hop-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let entry_file = dir.join("entry.toml");
    let serving_file = dir.join("serving.toml");
    // The entry lets a burst of 5 through; the serving dispatcher 2 at most, per tenant.
    let strict =
        cluster_config(&dir, false, "").replace("per_client_burst = 5", "per_client_burst = 2");
    std::fs::write(&entry_file, cluster_config(&dir, false, "")).unwrap();
    std::fs::write(&serving_file, strict).unwrap();
    let etcd = cluster_support::Etcd::start().await;
    let arg = |path: &std::path::Path| path.display().to_string();
    let entry = cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &arg(&entry_file)]);
    let serving =
        cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &arg(&serving_file)]);
    let worker = Worker::builder()
        .server(serving.tcp.to_string())
        .token(WORKER_SECRET)
        .function("Echo", echo)
        .start()
        .unwrap();
    let probe = common::client_with_token(entry.tcp, PROBE).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe
        .call("Echo", Bytes::from_static(b"probe"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let tenant = common::client_with_token(entry.tcp, TENANT_A).await;
    let mut results = Vec::new();
    for i in 0..4u8 {
        results.push(tenant.call("Echo", Bytes::from(vec![i; 4])).await);
    }
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(ClientError::RateLimited))),
        "over the peer's limit, not refused as rate limited: {results:?}"
    );
    let url = format!("http://{}/call/Echo?params=json", entry.http);
    let mut answers = Vec::new();
    for i in 0..4 {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(TENANT_B)
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        answers.push((status, response.text().await.unwrap()));
    }
    assert!(
        answers
            .iter()
            .any(|(status, body)| *status == 429 && body.contains("rate_limited")),
        "over the peer's limit, not answered 429 rate_limited: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 200 || *status == 429),
        "{answers:?}"
    );
    worker.stop().await;
    drop((entry, serving));
    let _ = std::fs::remove_dir_all(&dir);
}
