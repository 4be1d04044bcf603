//! The cluster in the shapes production runs it, on real etcd processes on 127.0.0.1: a
//! three-member etcd with a member hanging and then its leader killed, a dead endpoint first
//! in a dispatcher's list, a minute against etcd's default flags, nmid's Go consumer
//! spreading calls over every dispatcher, a peer killed with the only worker, a draining
//! dispatcher, and an advertised address that is not the listen address.

mod cluster_support;
mod common;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_support::etcd_cluster::EtcdCluster;
use cluster_support::go_consumer::{GoConsumer, Rng};
use cluster_support::load::{echo_upper, spawn_load, wait_for_calls};
use cluster_support::{free_port, member, serves, Etcd, Nmid};
use common::PATIENCE;
use nmid::client::{Client, ClientError};
use nmid::worker::{Job, Worker};

/// A three-member etcd; three dispatchers given all three endpoints (each list starting
/// with the member that hangs first), and a fourth given that member alone (it must find
/// the others in etcd's member list); a discovering worker on every dispatcher and one more
/// on the first only (calls of its function through two others are forwarded). Under load,
/// one member hangs (SIGSTOP) for 30 s, then the leader is killed and restarted 10 s later:
/// no call fails, every dispatcher's two keys are in etcd at every sample, its
/// `nmid_etcd_session_up` is 1 at every sample, no peer is logged leaving or joining, and
/// each dispatcher holds one lease throughout.
#[actix_rt::test]
async fn a_three_member_etcd_with_a_member_hung_then_its_leader_killed_changes_nothing() {
    let mut etcd = EtcdCluster::start().await;
    let first_leader = etcd.leader().await;
    let hung = (first_leader + 1) % 3;
    let endpoints = etcd.endpoints_from(hung);
    // A leader election takes etcd 1-3 s; the lease outlives it.
    let env = [("NMID__DISCOVERY__LEASE_TTL_S", "5")];
    let lists = [&endpoints, &endpoints, &endpoints, &etcd.url(hung)];
    let nmids: Vec<Nmid> = (lists.iter())
        .map(|endpoints| Nmid::start_with(endpoints, &env, &[]))
        .collect();
    let urls: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let everywhere = Worker::builder()
        .name("everywhere")
        .discover(urls.clone())
        .function("Work", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let only_first = Worker::builder()
        .name("only-first")
        .server(nmids[0].tcp.to_string())
        .function("Only", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    for nmid in &nmids {
        nmid.wait_json(
            "/api/v1/cluster",
            PATIENCE * 3,
            "every function seen",
            |v| serves(v, &nmids[0].id, "Only") && nmids.iter().all(|n| serves(v, &n.id, "Work")),
        )
        .await;
    }
    let joined: Vec<usize> = nmids
        .iter()
        .map(|n| n.logged("peer dispatcher joined").len())
        .collect();

    let running = Rc::new(Cell::new(true));
    let mut loads = Vec::new();
    let mut oks = Vec::new();
    let calls = [
        (0, "Work"),
        (1, "Work"),
        (2, "Work"),
        (3, "Work"),
        (1, "Only"),
        (3, "Only"),
    ];
    for (i, function) in calls {
        let client = Client::connect(nmids[i].tcp.to_string()).await.unwrap();
        let ok = Rc::new(Cell::new(0));
        loads.push(spawn_load(client, function, running.clone(), ok.clone()));
        oks.push(ok);
    }
    let sampler = {
        let (running, urls) = (running.clone(), urls.clone());
        let (keys, http): (Vec<[String; 2]>, Vec<_>) =
            nmids.iter().map(|n| (n.keys(), n.http)).unzip();
        actix_rt::spawn(async move {
            let (mut samples, mut missing) = (0u32, Vec::new());
            while running.get() {
                let Some(present) = cluster_support::etcd_cluster::read_keys(&urls, "").await
                else {
                    missing.push("no etcd member answered a serializable read".to_owned());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                samples += 1;
                for key in keys.iter().flatten() {
                    if !present.contains(key) {
                        missing.push(format!("sample {samples}: {key} missing"));
                    }
                }
                for addr in &http {
                    let up = cluster_support::metric_at(*addr, "nmid_etcd_session_up").await;
                    if up != Some(1.0) {
                        missing.push(format!("sample {samples}: {addr} session_up {up:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (samples, missing)
        })
    };
    let zero = [0; 6];
    wait_for_calls(&oks, &zero, 50, "before any etcd failure").await;

    let before_hang: Vec<u64> = oks.iter().map(|ok| ok.get()).collect();
    etcd.freeze(hung);
    tokio::time::sleep(Duration::from_secs(30)).await;
    wait_for_calls(&oks, &before_hang, 50, "with a member hung").await;
    etcd.thaw(hung);

    let leader = etcd.leader().await;
    let before_kill: Vec<u64> = oks.iter().map(|ok| ok.get()).collect();
    etcd.kill(leader);
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_for_calls(&oks, &before_kill, 50, "with the leader killed").await;
    etcd.restart(leader).await;
    let before_end: Vec<u64> = oks.iter().map(|ok| ok.get()).collect();
    wait_for_calls(&oks, &before_end, 50, "after the leader's restart").await;

    running.set(false);
    let mut failed = Vec::new();
    for load in loads {
        failed.extend(load.await.unwrap());
    }
    let (samples, missing) = sampler.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(samples >= 40, "only {samples} samples of etcd's keys");
    assert!(
        missing.is_empty(),
        "{} bad samples: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut shown = Vec::new();
    for (nmid, joined) in nmids.iter().zip(joined) {
        assert_eq!(
            nmid.logged("peer dispatcher joined").len(),
            joined,
            "{} saw a join",
            nmid.id
        );
        assert_eq!(nmid.logged("peer dispatcher left"), Vec::<String>::new());
        assert_eq!(nmid.logged("etcd session down"), Vec::<String>::new());
        let leases = nmid.metric("nmid_etcd_sessions_total").await;
        assert_eq!(leases, Some(1.0), "{} took another lease", nmid.id);
        let restarts = nmid.metric("nmid_etcd_watch_restarts_total").await;
        let switches = nmid.logged("etcd member failed").len();
        shown.push(format!(
            "{}: {switches} member switches, {restarts:?} watch restarts",
            nmid.tcp
        ));
    }
    let total: u64 = oks.iter().map(|ok| ok.get()).sum();
    println!(
        "3-member etcd (hung member {hung}, killed leader {leader}): {total} calls, 0 failed; \
         {samples} samples, keys and sessions always there; {shown:?}"
    );
    everywhere.stop().await;
    only_first.stop().await;
}

/// 60 s against an etcd with its default flags (`--grpc-keepalive-min-time` 5 s): a
/// dispatcher given a dead endpoint first in its list and one given etcd alone have their
/// keys in etcd and their sessions up at every sample, and their membership watches never
/// break (`nmid_etcd_watch_restarts_total` stays 0): the dead endpoint is left after its
/// first refusal, and the keep-alive pings are ones etcd accepts.
#[actix_rt::test]
async fn a_minute_with_a_dead_endpoint_first_and_default_etcd_flags_breaks_nothing() {
    let etcd = Etcd::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let with_dead = Nmid::start(&format!("{dead},{}", etcd.url));
    let plain = Nmid::start(&etcd.url);
    let started = Instant::now();
    let (mut samples, mut missing) = (0u32, Vec::new());
    while started.elapsed() < Duration::from_secs(60) {
        let keys: HashSet<String> = etcd
            .get_prefix("")
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        samples += 1;
        for key in with_dead.keys().iter().chain(&plain.keys()) {
            if !keys.contains(key) {
                missing.push(format!("{:?}: {key} missing", started.elapsed()));
            }
        }
        for nmid in [&with_dead, &plain] {
            let up = nmid.metric("nmid_etcd_session_up").await;
            if up != Some(1.0) {
                missing.push(format!(
                    "{:?}: {} session_up {up:?}",
                    started.elapsed(),
                    nmid.tcp
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(samples >= 100, "only {samples} samples");
    assert!(
        missing.is_empty(),
        "{} bad samples: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for nmid in [&with_dead, &plain] {
        let restarts = nmid.metric("nmid_etcd_watch_restarts_total").await;
        assert_eq!(
            restarts,
            Some(0.0),
            "{}'s watch broke: {:?}",
            nmid.tcp,
            nmid.logged("WARN")
        );
        assert_eq!(nmid.metric("nmid_etcd_sessions_total").await, Some(1.0));
        assert_eq!(nmid.logged("etcd session down"), Vec::<String>::new());
    }
    println!("a minute on default etcd flags, {samples} samples: keys always there, 0 watch restarts (dead endpoint {dead} first for one)");
}

/// nmid's Go consumer, as the Go code does it (`cluster_support::go_consumer`), with
/// `ToUpper` on all three dispatchers and a dead worker's lease-less key naming another
/// address (it sorts after `nmid/dispatcher-`, not after the dispatchers' keys, and changes
/// no pick): one started in a quiet cluster gets its first event
/// within the nmid key's refresh interval and more after; 3,000 picks hit each dispatcher
/// at least 25% of the time; after a SIGKILL of the one whose key sorts last, its address
/// is gone from the picks within the lease TTL + 1.5 s (etcd expires leases in rounds of
/// 500 ms; the survivors then rewrite their keys at once), and the survivors share the picks.
#[actix_rt::test]
async fn nmids_go_consumer_spreads_calls_over_every_dispatcher() {
    const REFRESH: Duration = Duration::from_secs(2);
    let etcd = Etcd::start().await;
    let refresh_ms = REFRESH.as_millis().to_string();
    let env = [
        ("NMID__DISCOVERY__LEASE_TTL_S", "1"),
        (
            "NMID__CLUSTER__NMID_REFRESH_INTERVAL_MS",
            refresh_ms.as_str(),
        ),
    ];
    let mut nmids: Vec<Nmid> = (0..3)
        .map(|_| Nmid::start_with_env(&etcd.url, &env))
        .collect();
    let addrs: Vec<String> = nmids.iter().map(|n| n.tcp.to_string()).collect();
    let worker = Worker::builder()
        .name("upper")
        .discover([etcd.url.clone()])
        .function("ToUpper", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    // Settled: every dispatcher's key lists all three.
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let values = etcd.get_prefix("nmid/~dispatcher-").await;
        let complete = values.len() == 3
            && values.iter().all(|(_, v)| {
                let map: HashMap<String, Vec<String>> = serde_json::from_slice(v).unwrap();
                map.get("ToUpper").is_some_and(|a| a.len() == 3)
            });
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nmid keys never listed all three: {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A dead worker's key, put as nmid's Go worker puts it (no lease: it stays), sorting
    // after "nmid/dispatcher-...": the dispatchers' keys must still win the merge.
    const STALE: &str = "127.0.0.1:1";
    let mut client = etcd.client().await.unwrap();
    let stale = format!(r#"{{"ToUpper":["{STALE}"]}}"#);
    client
        .put("nmid/zz-dead-worker", stale, None)
        .await
        .unwrap();

    let started = Instant::now();
    let consumer = GoConsumer::start(&etcd.url).await;
    let first = consumer
        .wait_for(
            "ToUpper",
            REFRESH + Duration::from_secs(1),
            "first event",
            |a| !a.is_empty(),
        )
        .await;
    tokio::time::sleep(REFRESH * 2).await;
    let later = consumer
        .events()
        .iter()
        .filter(|t| **t > started + first)
        .count();
    assert!(
        later >= 2,
        "{later} events in {:?} after the first",
        REFRESH * 2
    );

    let mut rng = Rng::from_clock();
    let picks = consumer.picks("ToUpper", 3000, &mut rng);
    assert!(
        !picks.contains_key(STALE),
        "a stale worker key won: {picks:?}"
    );
    for addr in &addrs {
        let n = picks.get(addr).copied().unwrap_or(0);
        assert!(n >= 750, "{addr} got {n} of 3000 picks: {picks:?}");
    }

    let last = (0..3).max_by_key(|i| nmids[*i].id.clone()).unwrap();
    let dead = addrs[last].clone();
    let ttl = Duration::from_secs(cluster_support::TEST_LEASE_TTL_S);
    let limit = ttl + Duration::from_millis(1500);
    nmids[last].kill();
    let gone = consumer
        .wait_for("ToUpper", limit, "the killed dispatcher gone", |a| {
            !a.contains(&dead) && a.len() == 2
        })
        .await;
    let survivors = consumer.picks("ToUpper", 3000, &mut rng);
    assert!(!survivors.contains_key(&dead), "{survivors:?}");
    for (addr, n) in &survivors {
        assert!(*n >= 1200, "{addr} got {n} of 3000 picks: {survivors:?}");
    }
    println!(
        "Go consumer: first event {first:?} after start (refresh {REFRESH:?}); picks {picks:?}; \
         the killed dispatcher gone from the picks {gone:?} after SIGKILL (TTL {ttl:?}); then \
         {survivors:?}"
    );
    worker.stop().await;
}

/// Dispatcher A hosts the only worker of `Only`; B forwards every call of it to A. A is
/// SIGKILLed with 16 calls at its worker: those, which a worker did get, fail `WorkerLost`;
/// every call made after them — forwarded to A while its record lingers, or refused once
/// it is gone — is refused `NoWorker` (no worker ever got it), never `WorkerLost`.
#[actix_rt::test]
async fn a_peer_killed_with_the_only_worker_costs_no_worker_lost_for_calls_it_never_got() {
    const IN_FLIGHT: usize = 16;
    let etcd = Etcd::start().await;
    let mut a = Nmid::start(&etcd.url);
    let b = Nmid::start(&etcd.url);
    let received: Arc<Mutex<HashSet<String>>> = Arc::default();
    let worker = {
        let received = received.clone();
        Worker::builder()
            .name("holder")
            .server(a.tcp.to_string())
            .slots(64)
            .function("Only", move |job: Job| {
                let params = String::from_utf8_lossy(job.params()).into_owned();
                received.lock().unwrap().insert(params);
                echo_upper(job, Duration::from_secs(20))
            })
            .start()
            .unwrap()
    };
    b.wait_json("/api/v1/cluster", PATIENCE, "A's Only seen by B", |v| {
        serves(v, &a.id, "Only")
    })
    .await;
    let client = Client::builder(b.tcp.to_string())
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    type Answer = (String, Result<Bytes, ClientError>);
    let answers: Rc<RefCell<Vec<Answer>>> = Rc::default();
    let next = Rc::new(Cell::new(0usize));
    let stop_at: Rc<Cell<Option<Instant>>> = Rc::default();
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, answers, next, stop_at) = (
                client.clone(),
                answers.clone(),
                next.clone(),
                stop_at.clone(),
            );
            actix_rt::spawn(async move {
                while next.get() < 50_000 && stop_at.get().is_none_or(|t| Instant::now() < t) {
                    let params = format!("call-{}", next.get());
                    next.set(next.get() + 1);
                    let result = client.call("Only", params.clone()).await;
                    answers.borrow_mut().push((params, result));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while received.lock().unwrap().len() < IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "the worker never held {IN_FLIGHT} calls"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held: HashSet<String> = received.lock().unwrap().clone();
    let reaped = a.kill();
    // Until A's record has left etcd (its lease TTL) and a while after.
    stop_at.set(Some(
        reaped + Duration::from_secs(cluster_support::TEST_LEASE_TTL_S + 2),
    ));
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(60), caller)
            .await
            .expect("callers end")
            .unwrap();
    }
    let answers = std::mem::take(&mut *answers.borrow_mut());
    let (mut lost, mut refused) = (0, 0);
    for (params, result) in &answers {
        match result {
            Err(ClientError::WorkerLost) => {
                assert!(
                    held.contains(params),
                    "{params} never reached a worker, yet WorkerLost"
                );
                lost += 1;
            }
            Err(ClientError::NoWorker) => {
                assert!(
                    !held.contains(params),
                    "{params} was held by the killed worker"
                );
                refused += 1;
            }
            other => panic!("{params}: {other:?}"),
        }
    }
    assert_eq!(
        lost, IN_FLIGHT,
        "the calls the killed worker held fail WorkerLost"
    );
    assert!(refused >= 100, "only {refused} calls after the kill");
    // B did forward to A after the kill (and handed those calls back), not only refuse.
    let peer_lost = b
        .metric(r#"nmid_forwarded_calls_total{outcome="peer_lost"}"#)
        .await;
    assert!(
        peer_lost.unwrap_or(0.0) > IN_FLIGHT as f64,
        "peer_lost {peer_lost:?}"
    );
    println!(
        "killed owner: {lost} WorkerLost (all held by its worker), {refused} NoWorker, \
         {peer_lost:?} forwards to it lost or refused"
    );
    worker.stop().await;
}

/// Two dispatchers, a discovering worker on both and a discovering client making calls
/// 16 at a time; one dispatcher is stopped with SIGTERM mid-run: it drains the calls it
/// holds, new calls go to the other (a draining dispatcher is skipped, and one that refuses
/// as draining is failed over), so no call fails; it exits 0 having left the cluster.
#[actix_rt::test]
async fn clients_fail_over_from_a_draining_dispatcher() {
    let etcd = Etcd::start().await;
    let mut a = Nmid::start(&etcd.url);
    let b = Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("slow")
        .discover([etcd.url.clone()])
        .slots(64)
        .function("Slow", |job| echo_upper(job, Duration::from_millis(300)))
        .start()
        .unwrap();
    let client = Client::builder("")
        .discover([etcd.url.clone()])
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let has_worker = |v: &serde_json::Value| v.as_array().is_some_and(|w| !w.is_empty());
    for nmid in [&a, &b] {
        nmid.wait_json(
            "/api/v1/workers",
            PATIENCE,
            "the worker on both",
            has_worker,
        )
        .await;
    }
    let running = Rc::new(Cell::new(true));
    let ok = Rc::new(Cell::new(0));
    let loads: Vec<_> = (0..16)
        .map(|_| spawn_load(client.clone(), "Slow", running.clone(), ok.clone()))
        .collect();
    wait_for_calls(std::slice::from_ref(&ok), &[0], 32, "before the drain").await;
    let pid = a.pid();
    let exited = tokio::task::spawn_blocking(move || {
        let status = a.terminate();
        (a, status)
    });
    let (a, status) = exited.await.unwrap();
    let after_exit = ok.get();
    wait_for_calls(
        std::slice::from_ref(&ok),
        &[after_exit],
        32,
        "after the drain",
    )
    .await;
    running.set(false);
    let mut failed = Vec::new();
    for load in loads {
        failed.extend(load.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(status.success(), "nmid {pid} exited {status}");
    assert_eq!(
        a.logged("left the cluster").len(),
        1,
        "{:?}",
        a.logged("cluster")
    );
    println!(
        "draining: {} calls, 0 failed; the drained dispatcher exited {status}",
        ok.get()
    );
    worker.stop().await;
}

/// `--advertise-addr` names the address peers and clients use, not the listen address: a
/// dispatcher reached only through a relay on another port advertises the relay's address
/// in its membership record and its nmid key, and a discovering client's calls go through
/// the relay.
#[actix_rt::test]
async fn an_advertised_address_is_where_clients_reach_the_dispatcher() {
    let etcd = Etcd::start().await;
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advertised = relay.local_addr().unwrap().to_string();
    let nmid = Nmid::start_with_args(&etcd.url, &["--advertise-addr", &advertised]);
    let relayed = Rc::new(Cell::new(0u32));
    let target = nmid.tcp;
    let relaying = {
        let relayed = relayed.clone();
        actix_rt::spawn(async move {
            while let Ok((mut inbound, _)) = relay.accept().await {
                relayed.set(relayed.get() + 1);
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                actix_rt::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        })
    };
    let worker = Worker::builder()
        .name("advertised")
        .server(nmid.tcp.to_string())
        .function("Adv", |job| echo_upper(job, Duration::ZERO))
        .start()
        .unwrap();
    let report = nmid
        .wait_json("/api/v1/cluster", PATIENCE, "Adv published", |v| {
            serves(v, &nmid.id, "Adv")
        })
        .await;
    let shown = nmid.get_json("/api/v1/cluster").await;
    let own = member(&shown, &nmid.id).expect("itself listed");
    assert_eq!(own["tcp_addr"], advertised.as_str(), "{shown:#}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let values = etcd.get_prefix("").await;
        let record = values
            .iter()
            .find(|(k, _)| k.ends_with(&nmid.id) && k.starts_with("nmid-rs/"));
        let key = values
            .iter()
            .find(|(k, _)| k.ends_with(&nmid.id) && k.starts_with("nmid/"));
        if let (Some((_, record)), Some((_, key))) = (record, key) {
            let record: serde_json::Value = serde_json::from_slice(record).unwrap();
            let key: HashMap<String, Vec<String>> = serde_json::from_slice(key).unwrap();
            if key.contains_key("Adv") {
                assert_eq!(record["tcp_addr"], advertised.as_str());
                assert_eq!(key["Adv"], vec![advertised.clone()]);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "keys never advertised {advertised}: {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::builder("")
        .discover([etcd.url.clone()])
        .connect()
        .await
        .unwrap();
    let ret = client.call("Adv", &b"adv"[..]).await.unwrap();
    assert_eq!(&ret[..], b"ADV");
    assert!(
        relayed.get() >= 1,
        "the call did not go through the advertised address"
    );
    println!(
        "advertised {advertised} (listening on {}): call relayed after {report:?}",
        nmid.tcp
    );
    relaying.abort();
    worker.stop().await;
}
