//! A cluster recovering from what production throws at it, on real etcd and `nmid`
//! processes on 127.0.0.1: leases that etcd expired or revoked, a peer whose worker has just
//! left, a drain that runs out of time (here, and at a peer holding a forwarded call), and
//! a dispatcher restarted at its own address, and a peer that answers nothing.

mod cluster_support;
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::load::echo_upper;
use cluster_support::{free_port, member, serves, Etcd, Nmid, PROCESS_PATIENCE, TEST_LEASE_TTL_S};
use common::PATIENCE;
use nmid::client::{Client, ClientError};
use nmid::worker::{Job, Worker};
use serde_json::Value;

/// Waits until every key of `keys` is in etcd (`present`) or none is, at most `limit`.
async fn wait_for_keys(etcd: &Etcd, keys: &[String], present: bool, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let now: HashSet<String> = (etcd.get_prefix("").await.into_iter())
            .map(|(k, _)| k)
            .collect();
        let there = keys.iter().filter(|k| now.contains(*k)).count();
        if (present && there == keys.len()) || (!present && there == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; etcd has {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dispatcher and a worker registering `nmid/<name>` are cut off from etcd (etcd runs on)
/// for longer than their lease TTL: etcd expires both leases and deletes their keys. Once
/// the network is back, each takes a new lease and writes its keys again. Then both leases
/// are revoked (as `etcdctl lease revoke` does): the keys come back once more.
#[actix_rt::test]
async fn a_lease_etcd_expired_or_revoked_is_replaced_and_the_keys_written_again() {
    let (etcd, relay) = Etcd::start_behind_relay().await;
    let nmid = Nmid::start(&relay.url);
    let worker = Worker::builder()
        .name("comeback")
        .discover([relay.url.clone()])
        .etcd_register(Duration::from_secs(TEST_LEASE_TTL_S))
        .function("Back", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let mut keys = nmid.keys().to_vec();
    keys.push("nmid/comeback".to_owned());
    wait_for_keys(&etcd, &keys, true, PROCESS_PATIENCE, "registered").await;

    relay.cut();
    let ttl = Duration::from_secs(TEST_LEASE_TTL_S);
    let expiry = ttl + PATIENCE;
    wait_for_keys(&etcd, &keys, false, expiry, "leases expired while cut off").await;
    relay.restore();
    let restored = Instant::now();
    wait_for_keys(
        &etcd,
        &keys,
        true,
        PROCESS_PATIENCE,
        "keys back after the cut",
    )
    .await;
    let back_after_cut = restored.elapsed();

    let mut client = etcd.client().await.unwrap();
    let mut leases = HashSet::new();
    for key in &keys {
        let found = client.get(key.as_str(), None).await.unwrap();
        leases.extend(found.kvs().iter().map(|kv| kv.lease()));
    }
    assert_eq!(
        leases.len(),
        2,
        "one lease for the dispatcher, one for the worker"
    );
    for lease in &leases {
        client.lease_revoke(*lease).await.unwrap();
    }
    let revoked = Instant::now();
    wait_for_keys(
        &etcd,
        &keys,
        true,
        PROCESS_PATIENCE,
        "keys back after the revoke",
    )
    .await;
    let back_after_revoke = revoked.elapsed();
    assert!(nmid.metric("nmid_etcd_sessions_total").await >= Some(3.0));
    println!(
        "leases replaced: keys back {back_after_cut:?} after a cut longer than the TTL, \
         {back_after_revoke:?} after a revoke"
    );
    worker.stop().await;
}

/// Dispatchers A and C each have a worker of `Twice`; B has none and forwards its calls to
/// both. A is cut off from etcd (its record, on a 60 s lease, stays as it was) and its
/// worker stops: A answers B's forwarded calls "no worker" although its record lists
/// `Twice`. Every call through B still succeeds (handed back and placed on C), and A gets
/// no more calls of `Twice` for a while. Once C's worker stops too, a call through B is
/// refused `NoWorker` at once — never `WorkerLost`: no worker ever got it.
#[actix_rt::test]
async fn a_call_a_peer_has_no_worker_for_goes_to_another_peer() {
    let (etcd, relay) = Etcd::start_behind_relay().await;
    let a = Nmid::start_with_env(&relay.url, &[("NMID__DISCOVERY__LEASE_TTL_S", "60")]);
    let b = Nmid::start(&etcd.url);
    let c = Nmid::start(&etcd.url);
    let start_worker = |nmid: &Nmid| {
        Worker::builder()
            .name("twice")
            .server(nmid.tcp.to_string())
            .function("Twice", |job| echo_upper(job, Duration::ZERO))
            .start()
            .unwrap()
    };
    let (on_a, on_c) = (start_worker(&a), start_worker(&c));
    b.wait_json(
        "/api/v1/cluster",
        PROCESS_PATIENCE,
        "A's and C's Twice seen by B",
        |v| serves(v, &a.id, "Twice") && serves(v, &c.id, "Twice"),
    )
    .await;

    relay.cut();
    on_a.stop().await;
    a.wait_json("/api/v1/workers", PATIENCE, "A's worker gone", |v| {
        v.as_array().is_some_and(|w| w.is_empty())
    })
    .await;
    let report = b.get_json("/api/v1/cluster").await;
    assert!(
        serves(&report, &a.id, "Twice"),
        "A's record is not stale: {report:#}"
    );

    let client = Client::connect(b.tcp.to_string()).await.unwrap();
    for n in 0..40 {
        let params = format!("call-{n}");
        let ret = client.call("Twice", params.clone()).await;
        assert_eq!(
            ret.as_deref().ok(),
            Some(params.to_uppercase().as_bytes()),
            "{ret:?}"
        );
    }
    let series = r#"nmid_forwarded_calls_total{outcome="cant_do"}"#;
    let handed_back = b.metric(series).await.unwrap_or(0.0);
    // Alternating, A would have had about 20; it is skipped after each "no worker" for
    // `cluster.peer_retry_ms` (500 ms here).
    assert!(
        (1.0..10.0).contains(&handed_back),
        "B sent A {handed_back} calls it had no worker for"
    );

    on_c.stop().await;
    b.wait_json("/api/v1/cluster", PATIENCE, "C's Twice gone", |v| {
        !serves(v, &c.id, "Twice")
    })
    .await;
    let asked = Instant::now();
    let refused = client.call("Twice", "late").await;
    assert!(matches!(refused, Err(ClientError::NoWorker)), "{refused:?}");
    assert!(
        asked.elapsed() < PATIENCE,
        "refused only after {:?}",
        asked.elapsed()
    );
    println!(
        "no worker at a peer: 40 calls through B all answered ({handed_back} handed back by A), \
         then refused NoWorker in {:?}",
        asked.elapsed()
    );
}

/// A dispatcher of a cluster holding a call its worker never finishes gets SIGTERM with a
/// 1 s drain timeout: the call is answered `ShuttingDown`, and each step of the shutdown runs
/// and is logged once — "shutting down", "drain timeout", the calls left answered, "left the
/// cluster" — with no "drained" after the drain gave up; its keys are gone, and it exits 3
/// (calls abandoned), as documented.
#[actix_rt::test]
async fn a_drain_that_times_out_shuts_down_once() {
    let etcd = Etcd::start().await;
    let env = [("NMID__SERVER__DRAIN_TIMEOUT_MS", "1000")];
    let mut nmid = Nmid::start_with_env(&etcd.url, &env);
    let worker = Worker::builder()
        .name("stuck")
        .server(nmid.tcp.to_string())
        .function("Stuck", |job| echo_upper(job, Duration::from_secs(60)))
        .start()
        .unwrap();
    nmid.wait_json("/api/v1/workers", PATIENCE, "the worker", |v| {
        v.as_array().is_some_and(|w| !w.is_empty())
    })
    .await;
    let client = Client::connect(nmid.tcp.to_string()).await.unwrap();
    let call = actix_rt::spawn(async move { client.call("Stuck", "x").await });
    nmid.wait_json("/api/v1/stats", PATIENCE, "the call at the worker", |v| {
        v["in_flight"] == 1
    })
    .await;
    let keys = nmid.keys().to_vec();
    let status = tokio::task::spawn_blocking(move || {
        let status = nmid.terminate();
        (nmid, status)
    });
    let (nmid, status) = status.await.unwrap();
    let answer = call.await.unwrap();
    assert!(
        matches!(answer, Err(ClientError::ShuttingDown)),
        "{answer:?}"
    );
    assert_eq!(status.code(), Some(3), "{status:?}");
    for line in [
        "shutting down",
        "drain timeout: answering",
        "calls left were answered ShuttingDown",
        "left the cluster",
        "SIGTERM received",
    ] {
        let logged = nmid.logged(line);
        assert_eq!(
            logged.len(),
            1,
            "{line:?} logged {} times: {logged:#?}",
            logged.len()
        );
    }
    let drained = nmid.logged("drained");
    assert!(
        drained.is_empty(),
        "a drain that timed out logged {drained:#?}"
    );
    wait_for_keys(&etcd, &keys, false, PATIENCE, "keys gone").await;
    worker.stop().await;
}

/// B forwards a call to A's worker, which holds it; C gets a worker of the same function.
/// A is stopped with SIGTERM and its 1 s drain timeout runs out: the call a worker held is
/// never run again on C (it may have run on A) — B's caller hears `WorkerLost` — while
/// calls made afterwards go to C.
#[actix_rt::test]
async fn a_call_abandoned_at_a_peers_drain_timeout_is_not_run_again() {
    let etcd = Etcd::start().await;
    let env = [("NMID__SERVER__DRAIN_TIMEOUT_MS", "1000")];
    let mut a = Nmid::start_with_env(&etcd.url, &env);
    let b = Nmid::start(&etcd.url);
    let c = Nmid::start(&etcd.url);
    let runs = Arc::new(AtomicU32::new(0));
    let start_worker = |nmid: &Nmid, delay: Duration| {
        let runs = runs.clone();
        Worker::builder()
            .name("counted")
            .server(nmid.tcp.to_string())
            .function("Counted", move |job: Job| {
                runs.fetch_add(1, Ordering::SeqCst);
                echo_upper(job, delay)
            })
            .start()
            .unwrap()
    };
    let on_a = start_worker(&a, Duration::from_secs(60));
    b.wait_json("/api/v1/cluster", PATIENCE, "A's Counted seen by B", |v| {
        serves(v, &a.id, "Counted")
    })
    .await;
    let client = Client::connect(b.tcp.to_string()).await.unwrap();
    let held = {
        let client = client.clone();
        actix_rt::spawn(async move { client.call("Counted", "held").await })
    };
    a.wait_json("/api/v1/stats", PATIENCE, "the call at A's worker", |v| {
        v["in_flight"] == 1
    })
    .await;
    let on_c = start_worker(&c, Duration::ZERO);
    b.wait_json("/api/v1/cluster", PATIENCE, "C's Counted seen by B", |v| {
        serves(v, &c.id, "Counted")
    })
    .await;

    let stopped = tokio::task::spawn_blocking(move || a.terminate());
    let answer = held.await.unwrap();
    assert!(matches!(answer, Err(ClientError::WorkerLost)), "{answer:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the held call ran again");
    assert_eq!(stopped.await.unwrap().code(), Some(3));
    let after = client.call("Counted", "after").await;
    assert_eq!(after.as_deref().ok(), Some(&b"AFTER"[..]), "{after:?}");
    println!("a call abandoned at a peer's drain timeout: {answer:?}, run once");
    on_a.stop().await;
    on_c.stop().await;
}

/// A dispatcher SIGKILLed and started again at once at the same address gets a new id, and
/// its earlier run's record stays in etcd until that lease expires. The earlier record is
/// not a peer: `/api/v1/cluster` lists the dispatcher once, `nmid_cluster_peers` is 0, its
/// nmid key names only what it serves now, and a call of a function only the earlier run
/// served is refused without being forwarded to itself.
#[actix_rt::test]
async fn a_dispatcher_restarted_at_its_address_is_not_its_own_peer() {
    let etcd = Etcd::start().await;
    let tcp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let env = [("NMID__DISCOVERY__LEASE_TTL_S", "30")];
    let args = ["--tcp-addr", tcp.as_str(), "--http-addr", http.as_str()];
    let mut first = Nmid::start_with(&etcd.url, &env, &args);
    let worker = Worker::builder()
        .name("old")
        .server(tcp.clone())
        .function("Old", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let first_record = first.keys()[0].clone();
    let deadline = Instant::now() + PATIENCE;
    while !(etcd.get_prefix(&first_record).await.iter())
        .any(|(_, v)| String::from_utf8_lossy(v).contains("Old"))
    {
        assert!(
            Instant::now() < deadline,
            "the first run never published Old"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    worker.stop().await;

    let second = Nmid::start_with(&etcd.url, &env, &args);
    assert_ne!(second.id, first.id);
    let second_key = second.keys()[1].clone();
    second
        .wait_json("/api/v1/cluster", PATIENCE, "watching", |v| {
            v["etcd"]["watching"] == true
        })
        .await;
    let left = etcd.get_prefix(&first_record).await;
    assert_eq!(left.len(), 1, "the first run's record expired already");
    let report = second.get_json("/api/v1/cluster").await;
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "listed twice: {report:#}");
    assert_eq!(second.metric("nmid_cluster_peers").await, Some(0.0));
    let client = Client::connect(tcp.clone()).await.unwrap();
    let refused = client.call("Old", "x").await;
    assert!(matches!(refused, Err(ClientError::NoWorker)), "{refused:?}");
    let series = r#"nmid_forwarded_calls_total{outcome="cant_do"}"#;
    let to_itself = second.metric(series).await.unwrap_or(0.0);
    assert_eq!(to_itself, 0.0, "forwarded to itself");
    let key = etcd.get_prefix(&second_key).await;
    let value = String::from_utf8_lossy(&key[0].1).into_owned();
    assert!(
        !value.contains("Old"),
        "its nmid key names the earlier run's Old: {value}"
    );
}

/// etcd killed under a dispatcher whose session is up (a 10 s lease, retries capped at
/// 2 s): while it still holds the lease it retries with backoff, not in a loop — at most 12
/// attempts in the 5 s after the first failure (a loop at 100 ms made about 50) — and its
/// session is up with its keys in etcd soon after etcd is back.
#[actix_rt::test]
async fn a_dispatcher_retries_etcd_with_backoff_not_in_a_loop() {
    let mut etcd = Etcd::start().await;
    let env = [
        ("NMID__DISCOVERY__LEASE_TTL_S", "10"),
        ("NMID__DISCOVERY__RETRY_MAX_MS", "2000"),
        ("RUST_LOG", "info,nmid::cluster::session=debug"),
    ];
    let nmid = Nmid::start_with_env(&etcd.url, &env);
    etcd.kill();
    let deadline = Instant::now() + PROCESS_PATIENCE;
    while nmid.logged("etcd member failed").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the session never noticed etcd gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A window, not a synchronisation: the attempts made in it are what is measured.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = nmid.logged("no etcd member answered").len();
    assert!(
        (1..=12).contains(&attempts),
        "{attempts} attempts in 5 s with etcd down"
    );
    assert_eq!(nmid.logged("etcd session down"), Vec::<String>::new());
    etcd.restart().await;
    wait_for_keys(
        &etcd,
        &nmid.keys(),
        true,
        PROCESS_PATIENCE,
        "keys after etcd's restart",
    )
    .await;
    nmid.wait_json("/api/v1/cluster", PROCESS_PATIENCE, "session up", |v| {
        v["etcd"]["state"] == "up"
    })
    .await;
    println!("etcd down: {attempts} attempts in 5 s (backoff to 2 s)");
}

/// `discovery.keepalive_interval_ms` below etcd's default `--grpc-keepalive-min-time`
/// (5 s) is allowed (etcd may run with a lower one) but named: `nmid --check` prints a
/// warning with the key and exits 0, and a dispatcher started with it logs the warning
/// once; 5000 and 0 (no pings) give none.
#[actix_rt::test]
async fn a_keepalive_interval_etcd_refuses_by_default_is_warned_about() {
    const KEY: &str = "discovery.keepalive_interval_ms";
    let check = |interval: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_nmid"))
            .args(["--check", "--etcd", "http://127.0.0.1:2379"])
            .args(["--tcp-addr", "127.0.0.1:0", "--no-http"])
            .env("NMID__DISCOVERY__KEEPALIVE_INTERVAL_MS", interval)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "--check with {interval}: {output:?}"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let warned = check("2000");
    assert!(
        warned.contains(KEY) && warned.contains("warning"),
        "{warned}"
    );
    for fine in ["5000", "0"] {
        let quiet = check(fine);
        assert!(!quiet.contains(KEY), "{fine}: {quiet}");
    }

    let etcd = Etcd::start().await;
    let nmid = Nmid::start_with_env(
        &etcd.url,
        &[("NMID__DISCOVERY__KEEPALIVE_INTERVAL_MS", "2000")],
    );
    let logged = nmid.logged(KEY);
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].contains("WARN"), "{logged:#?}");
}

/// A dispatcher whose etcd never answered says just that: that it is not registered yet
/// and has no membership watch yet, once each — never that its session went down, that a
/// watch was lost, or that known peers or members are kept (it knows none).
#[actix_rt::test]
async fn a_dispatcher_that_never_reached_etcd_does_not_say_it_lost_it() {
    let nmid = Nmid::start_without_etcd(&format!("http://127.0.0.1:{}", free_port()));
    let said = [
        "not registered in the cluster yet",
        "no membership watch yet",
    ];
    let deadline = Instant::now() + PROCESS_PATIENCE;
    while said.iter().any(|line| nmid.logged(line).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "not said: {:#?}",
            nmid.logged("etcd")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in said {
        assert_eq!(nmid.logged(line).len(), 1, "{:#?}", nmid.logged("etcd"));
    }
    for misleading in ["session down", "watch lost", "kept"] {
        let logged = nmid.logged(misleading);
        assert!(logged.is_empty(), "{misleading:?}: {logged:#?}");
    }
}

/// A peer that accepts connections and answers nothing (its record, forged here, says it
/// serves `Hang`) next to C, whose worker serves it: after a few calls B forwarded there
/// went unanswered for `cluster.peer_answer_timeout_ms` (500 ms here), B skips it — shown
/// unreachable — and every later call is answered through C, none waits for its deadline.
#[actix_rt::test]
async fn a_peer_that_answers_nothing_is_skipped() {
    let etcd = Etcd::start().await;
    let env = [("NMID__CLUSTER__PEER_ANSWER_TIMEOUT_MS", "500")];
    let b = Nmid::start_with_env(&etcd.url, &env);
    let c = Nmid::start(&etcd.url);
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let holding = actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream); // read nothing, answer nothing
        }
    });
    let record = serde_json::json!({
        "id": "hung", "tcp_addr": hung_addr.to_string(), "http_addr": null,
        "version": "0", "started_at": 0, "functions": ["Hang"], "load": 0, "draining": false,
    });
    let mut client = etcd.client().await.unwrap();
    client
        .put("nmid-rs/cluster/hung", record.to_string(), None)
        .await
        .unwrap();
    let worker = Worker::builder()
        .name("hang")
        .server(c.tcp.to_string())
        .function("Hang", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    b.wait_json(
        "/api/v1/cluster",
        PATIENCE,
        "both serving Hang seen by B",
        |v| serves(v, "hung", "Hang") && serves(v, &c.id, "Hang"),
    )
    .await;

    let caller = Client::builder(b.tcp.to_string())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let first: Vec<_> = (0..4)
        .map(|n| {
            let caller = caller.clone();
            actix_rt::spawn(async move { caller.call("Hang", format!("first-{n}")).await })
        })
        .collect();
    b.wait_json("/api/v1/cluster", PATIENCE, "the hung peer skipped", |v| {
        member(v, "hung").is_some_and(|m| m["reachable"] == false)
    })
    .await;
    let started = Instant::now();
    for n in 0..20 {
        let params = format!("later-{n}");
        let ret = caller.call("Hang", params.clone()).await;
        assert_eq!(
            ret.as_deref().ok(),
            Some(params.to_uppercase().as_bytes()),
            "{ret:?}"
        );
    }
    let later = started.elapsed();
    assert!(later < Duration::from_secs(4), "20 calls took {later:?}");
    let mut timed_out = 0;
    for call in first {
        if matches!(call.await.unwrap(), Err(ClientError::Timeout)) {
            timed_out += 1;
        }
    }
    assert!(timed_out >= 1, "no call reached the hung peer");
    println!("hung peer: {timed_out} of 4 first calls waited for their deadline there; 20 later calls via C in {later:?}");
    holding.abort();
    worker.stop().await;
}

/// Sends `signal` (`-STOP`, `-CONT`) to the dispatcher `nmid` by its PID.
fn signal(nmid: &Nmid, signal: &str) {
    let pid = nmid.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

/// A peer frozen with SIGSTOP while callers give each call 1 s (less than the 2 s
/// `cluster.peer_answer_timeout_ms`): once no call sent there has been answered for the
/// answer timeout it is skipped, and stays skipped (past several `cluster.peer_retry_ms`)
/// while every new call goes to the live peer; after SIGCONT its link's probe is answered and
/// it is reachable again.
#[actix_rt::test]
async fn a_hung_peer_is_skipped_though_callers_give_up_sooner_and_until_it_answers() {
    let etcd = Etcd::start().await;
    let timeout_ms = 2000;
    let env = [("NMID__CLUSTER__PEER_ANSWER_TIMEOUT_MS", "2000")];
    let b = Nmid::start_with_env(&etcd.url, &env);
    let c = Nmid::start(&etcd.url);
    // Its record must outlive the freeze: the link, not the lease, is under test.
    let d = Nmid::start_with_env(&etcd.url, &[("NMID__DISCOVERY__LEASE_TTL_S", "60")]);
    let counted = |nmid: &Nmid, runs: &Arc<AtomicU32>| {
        let runs = runs.clone();
        Worker::builder()
            .name("short")
            .server(nmid.tcp.to_string())
            .function("Short", move |job: Job| {
                runs.fetch_add(1, Ordering::SeqCst);
                echo_upper(job, Duration::ZERO)
            })
            .start()
            .unwrap()
    };
    let (on_c, on_d) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let worker_c = counted(&c, &on_c);
    let worker_d = counted(&d, &on_d);
    b.wait_json("/api/v1/cluster", PATIENCE, "C and D serve Short", |v| {
        serves(v, &c.id, "Short") && serves(v, &d.id, "Short")
    })
    .await;
    let caller = Client::builder(b.tcp.to_string())
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let reachable = |v: &Value| member(v, &d.id).map(|m| m["reachable"].clone());

    signal(&d, "-STOP");
    let frozen = Instant::now();
    let mut timed_out = 0;
    // Sequential calls, as callers with 1 s deadlines send them, until D is skipped.
    loop {
        if matches!(
            caller.call("Short", "probe").await,
            Err(ClientError::Timeout)
        ) {
            timed_out += 1;
        }
        if reachable(&b.get_json("/api/v1/cluster").await) == Some(Value::Bool(false)) {
            break;
        }
        assert!(
            frozen.elapsed() < PROCESS_PATIENCE,
            "the frozen peer was never skipped ({timed_out} calls timed out there)"
        );
    }
    let detected = frozen.elapsed();
    // The first call to D is sent at most one 1.5 s call after the freeze.
    let bound = Duration::from_millis(timeout_ms) + Duration::from_millis(1500) + PATIENCE;
    assert!(detected < bound, "skipped after {detected:?}");

    let before = on_c.load(Ordering::SeqCst);
    let skipped_from = Instant::now();
    let mut calls: u32 = 0;
    while skipped_from.elapsed() < Duration::from_secs(4) && calls < 4000 {
        let params = format!("later-{calls}");
        let ret = caller.call("Short", params.clone()).await;
        assert_eq!(
            ret.as_deref().ok(),
            Some(params.to_uppercase().as_bytes()),
            "call {calls} after the skip: {ret:?}"
        );
        calls += 1;
        let report = b.get_json("/api/v1/cluster").await;
        assert_eq!(
            reachable(&report),
            Some(Value::Bool(false)),
            "D reachable again while frozen, {:?} after the skip",
            skipped_from.elapsed()
        );
    }
    let later = skipped_from.elapsed();
    let on_c_later = on_c.load(Ordering::SeqCst) - before;
    assert_eq!(on_c_later, calls, "every later call ran on C");

    signal(&d, "-CONT");
    let back = b
        .wait_json(
            "/api/v1/cluster",
            PATIENCE,
            "D reachable after SIGCONT",
            |v| reachable(v) == Some(Value::Bool(true)),
        )
        .await;
    println!(
        "frozen peer skipped {detected:?} after SIGSTOP ({timed_out} calls timed out there); \
         {calls} later calls in {:?} all on C; reachable {back:?} after SIGCONT",
        later
    );
    worker_c.stop().await;
    worker_d.stop().await;
}
