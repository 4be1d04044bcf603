//! A cluster of `nmid` processes on a real etcd (Debian's `etcd-server`), all on 127.0.0.1:
//! failover of a discovering client under SIGKILL, membership within the lease TTL,
//! forwarding for v1, tagged and HTTP callers, nmid's `nmid/` keys as its Go consumer reads
//! them, and an etcd outage that no local call notices.

mod cluster_support;
mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cluster_support::go_consumer::merge_like_go;
use cluster_support::load::echo_upper;
use cluster_support::{free_port, member, serves, Etcd, Nmid, TEST_LEASE_TTL_S};
use common::{vector, Peer, PATIENCE};
use nmid::client::{CallOptions, Client, ClientError};
use nmid::cluster::record::NMID_PREFIX;
use nmid::codec::{self, Frame};
use nmid::config::{Config, ConfigError};
use nmid::worker::Worker;

/// Waits until the discovering `client` sees `n` dispatchers advertising `function`.
async fn wait_for_dispatchers(client: &Client, n: usize, function: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let serving = (client.dispatchers().iter())
            .filter(|d| d.functions.iter().any(|f| f == function))
            .count();
        if serving == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{serving} of {n} dispatchers serve {function}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three dispatchers, a worker on each through `.discover`, and a discovering client making
/// 20,000 calls (64 at once; every other one idempotent) while one dispatcher is SIGKILLed
/// mid-run: every call gets exactly one answer, each the right one; the only failures are
/// `ConnectionLost` of non-idempotent calls in flight on the killed dispatcher (sent on its
/// connection before the client saw it close; at most one per caller); idempotent ones were
/// retried on a survivor; every call issued once the client had seen the kill succeeds.
#[actix_rt::test]
async fn a_discovering_client_survives_a_dispatcher_killed_mid_run() {
    const CALLS: usize = 20_000;
    const IN_FLIGHT: usize = 64;
    let etcd = Etcd::start().await;
    let mut nmids: Vec<Nmid> = (0..3).map(|_| Nmid::start(&etcd.url)).collect();
    let worker = Worker::builder()
        .name("echo")
        .discover([etcd.url.clone()])
        .slots(64)
        .function("Echo", |job| echo_upper(job, Duration::from_micros(500)))
        .start()
        .unwrap();
    let client = Client::builder("")
        .discover([etcd.url.clone()])
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    wait_for_dispatchers(&client, 3, "Echo").await;

    let next = Rc::new(RefCell::new(0usize));
    type Answer = (usize, Instant, Instant, Result<Bytes, ClientError>);
    let results: Rc<RefCell<Vec<Answer>>> = Rc::default();
    let killed_at: Rc<RefCell<Option<Instant>>> = Rc::default();
    let started = Instant::now();
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, next, results) = (client.clone(), next.clone(), results.clone());
            actix_rt::spawn(async move {
                loop {
                    let i = std::mem::replace(&mut *next.borrow_mut(), 0);
                    *next.borrow_mut() = i + 1;
                    if i >= CALLS {
                        return;
                    }
                    let mut options = CallOptions::default();
                    if i % 2 == 0 {
                        options = options.idempotent();
                    }
                    let issued = Instant::now();
                    let params = format!("call-{i}");
                    let result = client.call_with("Echo", params, options).await;
                    results
                        .borrow_mut()
                        .push((i, issued, Instant::now(), result));
                }
            })
        })
        .collect();
    // The killer: SIGKILL dispatcher 1 once half the calls were issued.
    while *next.borrow() < CALLS / 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "calls too slow"
        );
    }
    *killed_at.borrow_mut() = Some(nmids[1].kill());
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(90), caller)
            .await
            .expect("20,000 calls within 90 s")
            .unwrap();
    }
    let elapsed = started.elapsed();
    let reaped = killed_at.borrow().unwrap();

    let results = std::mem::take(&mut *results.borrow_mut());
    // The client has seen the kill once a caller got its first `ConnectionLost` (the
    // connection was marked closed before that, so no call is sent on it from then on).
    let seen = (results.iter())
        .filter(|(.., result)| matches!(result, Err(ClientError::ConnectionLost)))
        .map(|(_, _, answered, _)| *answered)
        .min()
        .unwrap_or(reaped);
    let mut answers = vec![0u32; CALLS];
    let (mut ok, mut lost, mut after_kill) = (0, 0, 0);
    let (mut idempotent_before_kill, mut retried_ok) = (0, 0);
    for (i, issued, _, result) in results.iter() {
        answers[*i] += 1;
        if *issued > seen {
            after_kill += 1;
        }
        if i % 2 == 0 && *issued < reaped {
            idempotent_before_kill += 1;
        }
        match result {
            Ok(ret) => {
                assert_eq!(&ret[..], format!("CALL-{i}").as_bytes(), "call {i}");
                ok += 1;
                if i % 2 == 0 && *issued < reaped {
                    retried_ok += 1;
                }
            }
            Err(ClientError::ConnectionLost) => {
                assert!(i % 2 == 1, "idempotent call {i} failed instead of retrying");
                assert!(
                    *issued < seen,
                    "call {i} issued {:?} after the client saw the kill failed",
                    issued.duration_since(seen)
                );
                lost += 1;
            }
            Err(other) => panic!("call {i} failed with {other:?}"),
        }
    }
    assert!(
        answers.iter().all(|n| *n == 1),
        "a call got no or two answers"
    );
    // Calls were in flight on the killed dispatcher (some non-idempotent ones lost), no
    // more than were in flight at all; every idempotent call issued before the kill, those
    // in flight there among them, succeeded; and the run went on well past the kill.
    assert!(
        (1..=IN_FLIGHT).contains(&lost),
        "{lost} calls lost: none in flight on the killed dispatcher, or more than in flight"
    );
    assert_eq!(retried_ok, idempotent_before_kill);
    assert!(
        after_kill >= CALLS / 4,
        "only {after_kill} calls after the kill"
    );
    let noticed = seen.saturating_duration_since(reaped);
    println!(
        "failover: {CALLS} calls in {elapsed:?}: {ok} ok, {lost} ConnectionLost (in flight on \
         the killed dispatcher), {after_kill} issued after the client saw the kill ({noticed:?} \
         after SIGKILL's reap) all ok; idempotent calls issued before the kill all ok \
         ({retried_ok})"
    );
    worker.stop().await;
}

/// A SIGKILLed dispatcher's keys leave etcd within the lease TTL + 2 s, and a dispatcher
/// started later has the discovering worker registered within 5 s of joining (the watch's
/// delay, milliseconds on an idle machine; nothing waits for a lease or a poll).
#[actix_rt::test]
async fn membership_follows_dispatchers_within_the_lease_ttl() {
    let etcd = Etcd::start().await;
    let mut first = Nmid::start(&etcd.url);
    let _second = Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("follower")
        .discover([etcd.url.clone()])
        .function("F", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let has_worker = |v: &serde_json::Value| v.as_array().is_some_and(|w| !w.is_empty());
    first
        .wait_json("/api/v1/workers", PATIENCE, "worker on first", has_worker)
        .await;

    let id = first.id.clone();
    let reaped = first.kill();
    let deadline = reaped + Duration::from_secs(TEST_LEASE_TTL_S + 2);
    loop {
        let keys: Vec<String> = (etcd.get_prefix("").await.into_iter())
            .map(|(k, _)| k)
            .filter(|k| k.contains(&id))
            .collect();
        if keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{keys:?} outlived TTL + 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vanished = reaped.elapsed();

    let late = Nmid::start(&etcd.url);
    let limit = Duration::from_secs(5).saturating_sub(late.registered_at.elapsed());
    let took = late
        .wait_json(
            "/api/v1/workers",
            limit,
            "worker on the late dispatcher",
            has_worker,
        )
        .await;
    println!(
        "membership: killed dispatcher's keys gone {vanished:?} after SIGKILL (TTL {TEST_LEASE_TTL_S} s); \
         late dispatcher got the worker {took:?} after polling began"
    );
    worker.stop().await;
}

/// A raw v1 worker (nmid's golden frames) on dispatcher A only: a v1 client on B and
/// `POST /call` on C both get its answer; a function nobody serves is `CANT_DO` and 404 at
/// once; a forwarded call whose owner dies is answered (`ERROR`), not left hanging.
#[actix_rt::test]
async fn calls_are_forwarded_to_the_dispatcher_whose_worker_serves_them() {
    let etcd = Etcd::start().await;
    let mut a = Nmid::start(&etcd.url);
    let b = Nmid::start(&etcd.url);
    let c = Nmid::start(&etcd.url);
    let mut worker = Peer::connect(a.tcp).await;
    worker.send_raw(&vector("worker_set_name")).await;
    assert_eq!(worker.recv_raw_frame().await, vector("server_ok"));
    worker.send_raw(&vector("worker_add_func")).await;
    assert_eq!(worker.recv_raw_frame().await, vector("server_ok"));
    for peer in [&b, &c] {
        peer.wait_json("/api/v1/cluster", PATIENCE, "A's ToUpper seen", |v| {
            serves(v, &a.id, "ToUpper")
        })
        .await;
    }
    let ret = golden_ret();

    // v1 client on B: golden bytes in, golden bytes out.
    let mut v1 = Peer::connect(b.tcp).await;
    v1.send_raw(&vector("client_do_job_msgpack")).await;
    let job = worker.recv_job().await;
    worker.answer(&job, &ret).await;
    assert_eq!(v1.recv_raw_frame().await, vector("server_return_data"));

    // POST /call on C.
    let url = format!("http://{}/call/ToUpper", c.http);
    let http = awc::Client::default();
    let request = http
        .post(&url)
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"name":"nmid"}"#);
    let answering = async {
        let job = worker.recv_job().await;
        worker.answer(&job, &ret).await;
    };
    let (response, ()) = futures_util::join!(request, answering);
    let mut response = response.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&response.body().await.unwrap()[..], b"NMID");

    // Nobody serves it anywhere: at once.
    let asked = Instant::now();
    v1.call("Nobody", b"\x80").await;
    assert_eq!(v1.recv().await, Frame::CantDo);
    let response = http.post(url.replace("ToUpper", "Nobody")).send_body("{}");
    assert_eq!(response.await.unwrap().status(), 404);
    // At once: well before any deadline (jobs.timeout_ms is 30 s) could answer it.
    let refused_in = asked.elapsed();
    assert!(refused_in < Duration::from_secs(5), "{refused_in:?}");

    // The owner dies while its worker holds the forwarded job.
    v1.send_raw(&vector("client_do_job_msgpack")).await;
    let _held = worker.recv_job().await;
    let reaped = a.kill();
    let reply = v1.recv().await;
    assert_eq!(reply, Frame::Error, "the caller hears the call failed");
    println!(
        "forwarding: CANT_DO and 404 in {refused_in:?}; caller answered {:?} after the owner died",
        reaped.elapsed()
    );
}

/// The `ret` of nmid's golden `W_RETURN_DATA` (a RetStruct with `Data` "NMID").
fn golden_ret() -> Vec<u8> {
    let mut buf = BytesMut::from(&vector("worker_return_data")[..]);
    match codec::decode(&mut buf, codec::DEFAULT_MAX_FRAME_BYTES).unwrap() {
        Some(Frame::WReturnData(ret)) => ret.ret.to_vec(),
        other => panic!("expected W_RETURN_DATA, got {other:?}"),
    }
}

/// Every value under `nmid/` — the dispatcher's and a registering worker's — decodes as
/// nmid's Go consumer decodes it (a map of function name to address list), and merged as it
/// merges them they point each function at the dispatcher serving it. The worker's key is
/// gone by the time its graceful stop returns (revoked, not left to expire).
#[actix_rt::test]
async fn nmid_keys_read_as_nmids_go_consumer_reads_them() {
    let etcd = Etcd::start().await;
    let nmid = Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("GoStyleWorker")
        .discover([etcd.url.clone()])
        .etcd_register(Duration::from_secs(TEST_LEASE_TTL_S))
        .function("ToUpper", |job| echo_upper(job, Duration::ZERO))
        .function("ToLower", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let addr = nmid.tcp.to_string();
    let deadline = Instant::now() + PATIENCE;
    let (values, merged) = loop {
        let values = etcd.get_prefix(NMID_PREFIX).await;
        let merged = merge_like_go(values.iter().map(|(_, v)| &v[..]));
        let worker_key = values.iter().any(|(k, _)| k == "nmid/GoStyleWorker");
        let dispatcher_key = (values.iter())
            .any(|(k, v)| *k == format!("nmid/~dispatcher-{}", nmid.id) && v.len() > 2);
        if worker_key && dispatcher_key {
            break (values, merged);
        }
        assert!(Instant::now() < deadline, "nmid/ keys: {values:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (key, value) in &values {
        // Go: json.Unmarshal(value, &map[string][]string{}) must succeed.
        let parsed: HashMap<String, Vec<String>> = serde_json::from_slice(value)
            .unwrap_or_else(|e| panic!("{key}: {e}: {}", String::from_utf8_lossy(value)));
        for addrs in parsed.values() {
            assert_eq!(addrs, &vec![addr.clone()], "{key}");
        }
    }
    assert_eq!(merged["ToUpper"], vec![addr.clone()]);
    assert_eq!(merged["ToLower"], vec![addr]);
    let shown: Vec<String> = (values.iter())
        .map(|(k, v)| format!("{k} = {}", String::from_utf8_lossy(v)))
        .collect();
    println!("nmid keys: {shown:?}");

    worker.stop().await;
    let left = etcd.get_prefix("nmid/GoStyleWorker").await;
    assert!(
        left.is_empty(),
        "the worker's key outlived its stop: {left:?}"
    );
}

/// etcd stopped (SIGKILL) and restarted mid-run: no call fails, neither local ones on A nor
/// ones B forwards to A (a known peer); A reports etcd down meanwhile, and its records are
/// back in etcd once etcd is.
#[actix_rt::test]
async fn an_etcd_outage_fails_no_call_and_registration_comes_back() {
    let mut etcd = Etcd::start().await;
    let a = Nmid::start(&etcd.url);
    let b = Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("local")
        .server(a.tcp.to_string())
        .function("Work", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    b.wait_json("/api/v1/cluster", PATIENCE, "A's Work seen by B", |v| {
        serves(v, &a.id, "Work")
    })
    .await;
    let local = Client::connect(a.tcp.to_string()).await.unwrap();
    let forwarded = Client::connect(b.tcp.to_string()).await.unwrap();

    let running = Rc::new(RefCell::new(true));
    let done = Rc::new(Cell::new(0u32));
    let load = {
        let (running, done) = (running.clone(), done.clone());
        actix_rt::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let started = Instant::now();
            // Bounded in count and time whatever happens.
            while *running.borrow() && ok < 200_000 && started.elapsed() < Duration::from_secs(60) {
                for client in [&local, &forwarded] {
                    match client.call("Work", &b"w"[..]).await {
                        Ok(ret) if &ret[..] == b"W" => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                    done.set(done.get() + 1);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        })
    };
    // The load runs (local and forwarded calls answered) before etcd goes.
    let deadline = Instant::now() + PATIENCE;
    while done.get() < 20 {
        assert!(Instant::now() < deadline, "the load never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    etcd.kill();
    a.wait_json("/api/v1/cluster", PATIENCE, "A sees etcd down", |v| {
        v["etcd"]["state"] == "down"
    })
    .await;
    // Longer than the lease TTL: a session that stayed down that long must re-register.
    tokio::time::sleep(Duration::from_secs(TEST_LEASE_TTL_S + 1)).await;
    etcd.restart().await;
    let back = a
        .wait_json("/api/v1/cluster", PATIENCE, "A's session up again", |v| {
            v["etcd"]["state"] == "up"
        })
        .await;
    let deadline = Instant::now() + PATIENCE;
    while !etcd
        .get_prefix("")
        .await
        .iter()
        .any(|(k, _)| k.ends_with(&a.id))
    {
        assert!(Instant::now() < deadline, "A's record did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = b.get_json("/api/v1/cluster").await;
    assert!(member(&report, &a.id).is_some(), "B lost A: {report:#}");
    *running.borrow_mut() = false;
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} calls ran");
    println!("etcd outage: {ok} calls (local and forwarded), 0 failed; A re-registered {back:?} after etcd was back");
    worker.stop().await;
}

/// A dispatcher whose etcd is down at start serves local calls, says etcd is down, and
/// joins the cluster by itself once etcd comes up (retrying with backoff meanwhile).
#[actix_rt::test]
async fn a_dispatcher_started_before_etcd_serves_and_joins_when_it_comes_up() {
    let port = free_port();
    let nmid = Nmid::start_without_etcd(&format!("http://127.0.0.1:{port}"));
    let worker = Worker::builder()
        .name("early")
        .server(nmid.tcp.to_string())
        .function("Early", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let client = Client::connect(nmid.tcp.to_string()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let ret = loop {
        match client.call("Early", &b"e"[..]).await {
            Ok(ret) => break ret,
            Err(ClientError::NoWorker) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(other) => panic!("local call failed with etcd down: {other:?}"),
        }
    };
    assert_eq!(&ret[..], b"E");
    let report = nmid.get_json("/api/v1/cluster").await;
    assert_eq!(report["etcd"]["state"], "down", "{report:#}");
    assert!(report["etcd"]["last_error"].is_string(), "{report:#}");

    let etcd = Etcd::start_on(Some(port)).await;
    let joined = nmid
        .wait_json("/api/v1/cluster", PATIENCE, "the session up", |v| {
            v["etcd"]["state"] == "up"
        })
        .await;
    let id = nmid.get_json("/api/v1/cluster").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + PATIENCE;
    while !etcd
        .get_prefix("")
        .await
        .iter()
        .any(|(k, _)| k.ends_with(&id))
    {
        assert!(Instant::now() < deadline, "its record never reached etcd");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("etcd down at start: local call ok; joined {joined:?} after etcd came up");
    worker.stop().await;
}

/// Discovery settings are checked at start-up and a bad one is named: a wildcard listen
/// address without `cluster.advertise_addr`, endpoints that are not http:// URLs (no TLS in
/// this build), a zero TTL, half a credential, a prefix inside `nmid/`, pings, member-list
/// reads or nmid key refreshes too frequent; endpoints read from
/// one comma-separated string (as `--etcd` and the environment give them). The binary exits
/// 2 saying so.
#[test]
fn discovery_settings_are_checked_and_the_bad_key_named() {
    let load = |overrides: &[(&str, &str)]| {
        let overrides: Vec<(&str, String)> =
            overrides.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::load(None, &overrides)
    };
    let key_of = |result: Result<Config, ConfigError>| match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    };
    let etcd = ("discovery.etcd_endpoints", "http://127.0.0.1:2379");
    let local = ("tcp.addr", "127.0.0.1:6808");
    let cases: [(&[(&str, &str)], &str); 10] = [
        (&[etcd], "cluster.advertise_addr"),
        (
            &[("discovery.etcd_endpoints", "127.0.0.1:2379"), local],
            "discovery.etcd_endpoints",
        ),
        (
            &[
                ("discovery.etcd_endpoints", "https://127.0.0.1:2379"),
                local,
            ],
            "discovery.etcd_endpoints",
        ),
        (
            &[etcd, local, ("discovery.lease_ttl_s", "0")],
            "discovery.lease_ttl_s",
        ),
        (
            &[etcd, local, ("discovery.username", "root")],
            "discovery.password",
        ),
        (
            &[etcd, local, ("cluster.prefix", "nmid/cluster/")],
            "cluster.prefix",
        ),
        (
            &[etcd, ("cluster.advertise_addr", "0.0.0.0:6808")],
            "cluster.advertise_addr",
        ),
        (
            &[etcd, local, ("discovery.keepalive_interval_ms", "500")],
            "discovery.keepalive_interval_ms",
        ),
        (
            &[etcd, local, ("discovery.member_refresh_interval_ms", "10")],
            "discovery.member_refresh_interval_ms",
        ),
        (
            &[etcd, local, ("cluster.nmid_refresh_interval_ms", "50")],
            "cluster.nmid_refresh_interval_ms",
        ),
    ];
    for (overrides, key) in cases {
        assert_eq!(key_of(load(overrides)), key, "{overrides:?}");
    }
    let two = load(&[
        ("discovery.etcd_endpoints", "http://a:2379, http://b:2379,"),
        local,
    ]);
    assert_eq!(
        two.unwrap().discovery.etcd_endpoints,
        ["http://a:2379", "http://b:2379"]
    );
    let advertised = load(&[etcd, ("cluster.advertise_addr", "10.0.0.5:6808")]);
    assert!(advertised.is_ok(), "{advertised:?}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nmid"))
        .args(["--etcd", "http://127.0.0.1:2379", "--no-http"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster.advertise_addr"), "{stderr}");
}

/// `nmid --check` refuses an `--etcd` that names no endpoint (it would run standalone
/// unannounced), a port out of range and a missing host, naming `discovery.etcd_endpoints`
/// and what is wrong (exit 2); a trailing comma and the default `[]` stay valid.
#[test]
fn etcd_endpoints_that_name_nothing_or_no_host_or_port_fail_the_check() {
    let check = |endpoints: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nmid"));
        command.args(["--check", "--tcp-addr", "127.0.0.1:0", "--no-http"]);
        if let Some(endpoints) = endpoints {
            command.args(["--etcd", endpoints]);
        }
        let output = command.output().unwrap();
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), said)
    };
    let refused = [
        ("", "names no endpoint"),
        (",", "names no endpoint"),
        (" , ", "names no endpoint"),
        (
            "http://127.0.0.1:99999",
            "port must be a number from 1 to 65535",
        ),
        (
            "http://127.0.0.1:0",
            "port must be a number from 1 to 65535",
        ),
        (
            "http://127.0.0.1:x",
            "port must be a number from 1 to 65535",
        ),
        ("http://", "has no host"),
        ("http://:2379", "has no host"),
        ("http://a:2379,http://", "has no host"),
        ("127.0.0.1:2379", "must be an http:// URL"),
    ];
    for (endpoints, reason) in refused {
        let (code, said) = check(Some(endpoints));
        assert_eq!(code, Some(2), "--etcd {endpoints:?}: {said}");
        assert!(
            said.contains("discovery.etcd_endpoints") && said.contains(reason),
            "--etcd {endpoints:?}: {said}"
        );
    }
    for fine in [
        Some("http://127.0.0.1:2379,"),
        Some("http://[::1]:2379"),
        Some("http://etcd"),
        None,
    ] {
        let (code, said) = check(fine);
        assert_eq!(code, Some(0), "--etcd {fine:?}: {said}");
    }
}

/// `discovery.request_timeout_ms` not below a third of `discovery.lease_ttl_s` (a lease
/// keep-alive stuck that long on one hung etcd member lets the lease expire) is allowed but
/// named: `nmid --check` warns with both keys and exits 0; below it, and by default, no
/// warning.
#[test]
fn a_request_timeout_a_keepalive_could_lose_the_lease_by_is_warned_about() {
    let check = |ttl_s: &str, timeout_ms: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nmid"));
        command
            .args(["--check", "--etcd", "http://127.0.0.1:2379"])
            .args(["--tcp-addr", "127.0.0.1:0", "--no-http"])
            .env("NMID__DISCOVERY__LEASE_TTL_S", ttl_s);
        if let Some(timeout_ms) = timeout_ms {
            command.env("NMID__DISCOVERY__REQUEST_TIMEOUT_MS", timeout_ms);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{ttl_s} s, {timeout_ms:?}: {output:?}"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    for (ttl_s, timeout_ms) in [("3", "3000"), ("3", "1000"), ("10", "5000")] {
        let warned = check(ttl_s, Some(timeout_ms));
        assert!(
            warned.contains("warning")
                && warned.contains("discovery.request_timeout_ms")
                && warned.contains("discovery.lease_ttl_s"),
            "{ttl_s} s, {timeout_ms} ms: {warned}"
        );
    }
    for (ttl_s, timeout_ms) in [("3", Some("999")), ("10", None)] {
        let quiet = check(ttl_s, timeout_ms);
        assert!(
            !quiet.contains("discovery.request_timeout_ms"),
            "{ttl_s} s, {timeout_ms:?}: {quiet}"
        );
    }
}
