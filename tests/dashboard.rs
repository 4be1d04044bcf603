//! The built-in dashboard in a real browser: headless Chromium (installed by `make test`)
//! loads `/dashboard` from a live dispatcher with a worker, runs its JavaScript, and shows
//! the worker and its function.

mod cluster_support;
mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::start_dispatcher_with_http;
use nmid::config::Config;
use nmid::worker::Worker;

/// The Chromium binary the test setup installs (Debian package `chromium`).
const CHROMIUM: &str = "chromium";
/// The longest Chromium may take to render the page (its virtual time budget is 5 s); past
/// it, it is killed and the test fails.
const CHROMIUM_PATIENCE: Duration = Duration::from_secs(60);

/// Reads `pipe` to its end on a thread; the receiver gets the bytes.
fn read_all(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// Renders `url` in headless Chromium after its scripts ran; returns the DOM as HTML.
/// Chromium runs in a process group of its own, which is killed (by its leader's PID) once
/// it is done or has run out of time, so that no helper process outlives the test.
fn render(url: &str) -> String {
    // A profile per rendering: Chromium refuses a profile another instance holds, and the
    // tests of this file render at the same time.
    static RENDERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RENDERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile =
        std::env::temp_dir().join(format!("nmid-dashboard-test-{}-{n}", std::process::id()));
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {CHROMIUM} ({err}): `make test` installs it (Debian package chromium)"
            )
        });
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + CHROMIUM_PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The group's ID is Chromium's PID; this also ends its renderer and other helpers.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    // Until the group is gone (a bounded wait: they were sent SIGKILL).
    let gone_by = Instant::now() + Duration::from_secs(5);
    while Instant::now() < gone_by {
        let alive = Command::new("kill")
            .args(["-0", "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&profile);
    let read = |pipe: mpsc::Receiver<Vec<u8>>| {
        pipe.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| b"<still open>".to_vec())
    };
    let (stdout, stderr) = (read(stdout), read(stderr));
    let stderr = String::from_utf8_lossy(&stderr);
    let status = status.unwrap_or_else(|| {
        panic!("chromium did not finish within {CHROMIUM_PATIENCE:?}, killed: {stderr}")
    });
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    String::from_utf8(stdout).expect("DOM is UTF-8")
}

/// The dashboard, opened in Chromium, lists the connected worker and its function.
#[actix_rt::test]
async fn dashboard_in_chromium_shows_the_workers_function() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = Worker::builder()
        .name("dashboard-worker")
        .server(dispatcher.addr.to_string())
        .function("ShownOnDashboard", nmid::demo::to_upper)
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("ShownOnDashboard").is_some())
        .await;

    let url = format!("{}/dashboard", dispatcher.http_url());
    let dom = actix_rt::task::spawn_blocking(move || render(&url))
        .await
        .unwrap();

    let functions = section(&dom, "id=\"function-rows\"");
    assert!(
        functions.contains("ShownOnDashboard"),
        "function table: {functions}"
    );
    let workers = section(&dom, "id=\"worker-rows\"");
    assert!(
        workers.contains("dashboard-worker"),
        "worker table: {workers}"
    );
    let status = section(&dom, "id=\"status\"");
    assert!(status.contains(">serving</span>"), "status line: {status}");
    worker.stop().await;
    dispatcher.stop().await;
}

/// In a cluster, the dashboard's cluster section shows etcd up and lists this dispatcher
/// and its peer (a real etcd and a second `nmid` process).
#[actix_rt::test]
async fn dashboard_in_chromium_shows_the_cluster() {
    let etcd = cluster_support::Etcd::start().await;
    let mut config = Config::default();
    config.discovery.etcd_endpoints = vec![etcd.url.clone()];
    let dispatcher = start_dispatcher_with_http(config);
    let peer = cluster_support::Nmid::start(&etcd.url);
    let api = format!("{}/api/v1/cluster", dispatcher.http_url());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut response = awc::Client::default().get(&api).send().await.unwrap();
        let report: serde_json::Value = response.json().await.unwrap();
        let members = report["members"].as_array().map_or(0, Vec::len);
        if report["etcd"]["state"] == "up" && members == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster never formed: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = format!("{}/dashboard", dispatcher.http_url());
    let dom = actix_rt::task::spawn_blocking(move || render(&url))
        .await
        .unwrap();
    let status = section(&dom, "id=\"cluster-status\"");
    assert!(status.contains("etcd up · 2 dispatchers"), "{status}");
    let rows = section(&dom, "id=\"cluster-rows\"");
    assert!(rows.contains(&dispatcher.addr.to_string()), "{rows}");
    assert!(rows.contains("(this one)"), "{rows}");
    assert!(rows.contains(&peer.tcp.to_string()), "{rows}");
    dispatcher.stop().await;
}

/// After calls have flowed for a few history readings, the dashboard's charts (calls/s,
/// error ratio, latency) are drawn with data, overall and for the function chosen.
#[actix_rt::test]
async fn dashboard_charts_have_data_after_load() {
    let mut config = Config::default();
    config.history.interval_ms = 200;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name("chart-worker")
        .server(dispatcher.addr.to_string())
        .function("Charted", nmid::demo::to_upper)
        .start()
        .unwrap();
    dispatcher
        .wait_for("the worker", |s| s.function("Charted").is_some())
        .await;
    let client = nmid::client::Client::connect(dispatcher.addr.to_string())
        .await
        .unwrap();
    let history_url = format!("{}/api/v1/history", dispatcher.http_url());
    // Calls in three or more reading intervals, some of an unknown function (errors).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for i in 0..20 {
            let function = if i % 5 == 0 { "Uncharted" } else { "Charted" };
            let _ = client.call(function, b"\x81\xa4name\xa1x".to_vec()).await;
        }
        let body = reqwest::get(&history_url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let history: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let busy = history["overall"]["calls_per_second"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.as_f64().is_some_and(|r| r > 0.0))
            .count();
        if busy >= 3 && history["functions"][0]["name"] == "Charted" {
            break;
        }
        assert!(Instant::now() < deadline, "history never filled: {history}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("{}/dashboard", dispatcher.http_url());
    let dom = actix_rt::task::spawn_blocking(move || render(&url))
        .await
        .unwrap();
    for chart in ["chart-rate", "chart-errors", "chart-latency"] {
        let points = chart_points(&dom, chart);
        assert!(points >= 3, "{chart} drew {points} points: {dom}");
    }
    let rate = &dom[dom.find("id=\"chart-rate\"").unwrap()..];
    assert!(
        rate[..rate.find("</svg>").unwrap()].contains("<path d=\"M"),
        "{rate}"
    );
    let functions = section(&dom, "id=\"function-rows\"");
    assert!(functions.contains("Charted"), "{functions}");
    let options = section(&dom, "id=\"scope\"");
    assert!(
        options.contains("Charted"),
        "the function can be chosen: {options}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// The `data-points` a chart says it drew.
fn chart_points(dom: &str, id: &str) -> usize {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}: {dom}"));
    let tag_end = start + dom[start..].find('>').unwrap();
    let tag = &dom[start..tag_end];
    let value = tag
        .split("data-points=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("{id} has no data-points: {tag}"));
    value[..value.find('"').unwrap()].parse().unwrap()
}

/// The HTML from `marker` to the end of its element (table body or span).
fn section<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page: {dom}"));
    let rest = &dom[start..];
    let end = ["</tbody>", "</span>", "</select>"]
        .iter()
        .filter_map(|close| rest.find(close).map(|i| i + close.len()))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}
