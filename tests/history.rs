//! The call counters and recent rates over HTTP, on a live dispatcher: `GET /api/v1/calls`
//! (cumulative totals and latency buckets per function, what `nmidctl top` reads) and
//! `GET /api/v1/history` (the dashboard's series); bad `[history]` settings are refused
//! naming the key.

mod common;

use std::time::{Duration, Instant};

use common::{start_dispatcher_with_http, PATIENCE};
use nmid::client::Client;
use nmid::config::Config;
use nmid::worker::{Job, JobError, Worker};

async fn get_json(url: &str) -> serde_json::Value {
    let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Answered calls count per function, errors apart, timeouts without latency; the history
/// turns them into calls/s, error ratio and percentiles per reading.
#[actix_rt::test]
async fn calls_and_history_report_totals_and_rates() {
    let mut config = Config::default();
    config.history.interval_ms = 100;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("history-worker")
        .server(dispatcher.addr.to_string())
        .function("Ok", |job: Job| async move {
            Ok::<_, JobError>(job.params().clone())
        })
        .function("Fails", |_job: Job| async {
            Err::<Vec<u8>, _>(JobError::new("no"))
        })
        .function("Hangs", |_job: Job| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, JobError>(Vec::new())
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("Hangs").is_some())
        .await;
    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    for _ in 0..3 {
        client.call("Ok", "x").await.unwrap();
    }
    assert!(client.call("Fails", "x").await.is_err());
    let brief = nmid::client::CallOptions::default().timeout(Duration::from_millis(300));
    let hung = client.call_with("Hangs", "x", brief).await;
    assert_eq!(hung, Err(nmid::client::ClientError::Timeout));

    let calls = get_json(&format!("{}/api/v1/calls", dispatcher.http_url())).await;
    let bounds = calls["bounds"].as_array().unwrap().len();
    let function = |name: &str| {
        calls["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .unwrap_or_else(|| panic!("{name} in {calls}"))
            .clone()
    };
    let ok = function("Ok");
    assert_eq!(
        (ok["calls"].as_u64(), ok["errors"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(ok["buckets"].as_array().unwrap().len(), bounds + 1);
    assert_eq!(ok["buckets"][bounds], 3);
    let fails = function("Fails");
    assert_eq!(
        (fails["calls"].as_u64(), fails["errors"].as_u64()),
        (Some(1), Some(1))
    );
    let hangs = function("Hangs");
    assert_eq!(hangs["errors"], 1);
    assert_eq!(hangs["buckets"][bounds], 0, "a timeout takes no latency");

    // Calls keep coming until a reading shows them, per function.
    let url = format!("{}/api/v1/history", dispatcher.http_url());
    let deadline = Instant::now() + PATIENCE;
    let history = loop {
        client.call("Ok", "x").await.unwrap();
        let history = get_json(&url).await;
        let seen = history["functions"].as_array().unwrap().iter().any(|f| {
            f["name"] == "Ok"
                && f["calls_per_second"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v.as_f64().is_some_and(|r| r > 0.0))
        });
        if seen {
            break history;
        }
        assert!(
            Instant::now() < deadline,
            "no reading with calls: {history}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(history["interval_ms"], 100);
    let times = history["times_unix_ms"].as_array().unwrap().len();
    assert!(times >= 1);
    for series in ["calls_per_second", "error_ratio", "p50_ms", "p99_ms"] {
        assert_eq!(
            history["overall"][series].as_array().unwrap().len(),
            times,
            "{series}"
        );
    }
    worker.stop().await;
    dispatcher.stop().await;
}

/// Each out-of-range `[history]` key is refused by name.
#[test]
fn bad_history_settings_are_refused_by_key() {
    for (key, value) in [
        ("history.interval_ms", "50"),
        ("history.samples", "1"),
        ("history.max_functions", "5000"),
    ] {
        let err = Config::load(None, &[(key, value.to_owned())]).unwrap_err();
        assert!(
            err.to_string().contains(&format!("config key `{key}`")),
            "{err}"
        );
    }
}
