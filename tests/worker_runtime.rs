//! The worker library changed while it runs, and its own metrics, against in-process
//! dispatchers over real TCP on 127.0.0.1: functions added, replaced and removed (calls in
//! flight finish; a reconnect registers the current set), slots changed without a
//! reconnect, and `/metrics` counting jobs by function and outcome, and reconnects.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start_dispatcher, start_dispatcher_on, TestDispatcher};
use futures_util::future::join_all;
use nmid::client::{Client, ClientError};
use nmid::config::Config;
use nmid::worker::{serve_metrics, Job, JobError, Worker, WorkerMetrics};

async fn serving(dispatcher: &TestDispatcher, function: &str) {
    workers_of(dispatcher, function, 1).await;
}

async fn workers_of(dispatcher: &TestDispatcher, function: &str, workers: usize) {
    dispatcher
        .wait_for(&format!("{workers} workers of {function}"), |s| {
            s.function(function).map_or(0, |f| f.workers) == workers
        })
        .await;
}

/// A worker started with 1 slot and raised to 3 runs three jobs side by side, on the same
/// connection; lowered to 1 again, it never runs two.
#[actix_rt::test]
async fn set_slots_changes_jobs_at_once_without_a_reconnect() {
    let dispatcher = start_dispatcher();
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let worker = Worker::builder()
        .name("resized")
        .server(dispatcher.addr.to_string())
        .slots(1)
        .function("F", move |job: Job| {
            let (running, peak) = (r.clone(), p.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, JobError>(job.params().clone())
            }
        })
        .start()
        .unwrap();
    serving(&dispatcher, "F").await;
    let id = dispatcher.snapshot().await.workers[0].id;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();

    worker.set_slots(3);
    dispatcher
        .wait_for("3 slots", |s| {
            s.workers.first().is_some_and(|w| w.max_jobs == 3)
        })
        .await;
    let results = join_all((0..6u32).map(|i| client.call("F", i.to_string()))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(peak.swap(0, Ordering::SeqCst), 3);

    worker.set_slots(1);
    dispatcher
        .wait_for("1 slot", |s| {
            s.workers.first().is_some_and(|w| w.max_jobs == 1)
        })
        .await;
    let results = join_all((0..4u32).map(|i| client.call("F", i.to_string()))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 1);
    assert_eq!(
        dispatcher.snapshot().await.workers[0].id,
        id,
        "no reconnect"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// A worker's own `/metrics`, served over HTTP: jobs by function and outcome, the duration
/// histogram, the connection, and a reconnect after its dispatcher restarted.
#[actix_rt::test]
async fn worker_metrics_count_jobs_errors_and_reconnects() {
    let dispatcher = start_dispatcher();
    let addr = dispatcher.addr;
    let metrics = WorkerMetrics::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let server = serve_metrics(listener, metrics.clone()).unwrap();
    let worker = Worker::builder()
        .name("measured")
        .server(addr.to_string())
        .metrics(metrics)
        .function("Echo", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .function("Fail", |_job: Job| async {
            Err::<Vec<u8>, _>(JobError::new("no"))
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Echo").await;
    let client = Client::connect(addr.to_string()).await.unwrap();
    client.call("Echo", "a").await.unwrap();
    client.call("Echo", "b").await.unwrap();
    assert!(client.call("Fail", "c").await.is_err());
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    let text = scrape().await;
    for line in [
        r#"nmid_worker_handled_total{function="Echo",outcome="ok"} 2"#,
        r#"nmid_worker_handled_total{function="Fail",outcome="error"} 1"#,
        r#"nmid_worker_handler_duration_seconds_count{function="Echo"} 2"#,
        r#"nmid_worker_handlers_running{function="Echo"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!(
            r#"nmid_worker_connected{{dispatcher="{addr}"}} 1"#
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"nmid_worker_reconnects_total{{dispatcher="{addr}"}} 0"#
        )),
        "{text}"
    );

    dispatcher.stop().await;
    let restarted = start_dispatcher_on(addr, Config::default());
    serving(&restarted, "Echo").await;
    let reconnected = format!(r#"nmid_worker_reconnects_total{{dispatcher="{addr}"}} 1"#);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !scrape().await.contains(&reconnected) {
        assert!(std::time::Instant::now() < deadline, "{}", scrape().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
    server.stop(true).await;
    restarted.stop().await;
}

/// A function added to a running worker is registered on each of its dispatchers; added
/// again under the same name, new calls get the new handler while a running call finishes
/// with the old one.
#[actix_rt::test]
async fn functions_added_while_running_are_served_on_every_dispatcher() {
    let (first, second) = (start_dispatcher(), start_dispatcher());
    let worker = Worker::builder()
        .name("growing")
        .server(first.addr.to_string())
        .server(second.addr.to_string())
        .function("Base", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    serving(&first, "Base").await;
    worker
        .add_function("Added", |_job: Job| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, JobError>(b"old".to_vec())
        })
        .unwrap();
    serving(&first, "Added").await;
    serving(&second, "Added").await;
    let client = Client::connect(second.addr.to_string()).await.unwrap();
    let running = client.call("Added", "x");
    let replace = async {
        second
            .wait_for("the call running", |s| s.in_flight() == 1)
            .await;
        worker
            .add_function("Added", |_job: Job| async {
                Ok::<_, JobError>(b"new".to_vec())
            })
            .unwrap();
    };
    let (running, ()) = tokio::join!(running, replace);
    assert_eq!(
        &running.unwrap()[..],
        b"old",
        "the running call kept its handler"
    );
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while client.call("Added", "x").await.unwrap() != b"new"[..] {
        assert!(
            std::time::Instant::now() < deadline,
            "the new handler never answered"
        );
    }
    assert_eq!(
        worker.add_function("", |_job: Job| async { Ok::<_, JobError>(Vec::new()) }),
        Err(nmid::worker::WorkerError::BadFunction(String::new()))
    );
    worker.stop().await;
    first.stop().await;
    second.stop().await;
}

/// A function removed while its job runs: the job finishes and is answered, later calls
/// find no worker, and after a dispatcher restart the worker registers its current set
/// (the added function, not the removed one).
#[actix_rt::test]
async fn removed_functions_finish_their_jobs_and_stay_removed_after_a_reconnect() {
    let dispatcher = start_dispatcher();
    let addr = dispatcher.addr;
    let worker = Worker::builder()
        .name("shrinking")
        .server(addr.to_string())
        .function("Leaving", |_job: Job| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, JobError>(b"finished".to_vec())
        })
        .function("Staying", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    serving(&dispatcher, "Leaving").await;
    worker
        .add_function("Added", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .unwrap();
    serving(&dispatcher, "Added").await;
    let client = Client::connect(addr.to_string()).await.unwrap();
    let running = client.call("Leaving", "x");
    let remove = async {
        dispatcher
            .wait_for("the job running", |s| s.in_flight() == 1)
            .await;
        worker.remove_function("Leaving");
        workers_of(&dispatcher, "Leaving", 0).await;
    };
    let (running, ()) = tokio::join!(running, remove);
    assert_eq!(&running.unwrap()[..], b"finished");
    assert_eq!(
        client.call("Leaving", "x").await,
        Err(ClientError::NoWorker)
    );

    dispatcher.stop().await;
    let restarted = start_dispatcher_on(addr, Config::default());
    serving(&restarted, "Added").await;
    serving(&restarted, "Staying").await;
    let snapshot = restarted.snapshot().await;
    assert!(snapshot.function("Leaving").is_none(), "{snapshot:?}");
    worker.stop().await;
    restarted.stop().await;
}
