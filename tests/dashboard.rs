//! The built-in dashboard in a real browser: headless Chromium (installed by `make test`)
//! loads `/dashboard` from a live dispatcher with a worker, runs its JavaScript, and shows
//! the worker and its function.

mod common;

use std::process::Command;

use common::start_dispatcher_with_http;
use nmid::config::Config;
use nmid::worker::Worker;

/// The Chromium binary the test setup installs (Debian package `chromium`).
const CHROMIUM: &str = "chromium";

/// Renders `url` in headless Chromium after its scripts ran; returns the DOM as HTML.
fn render(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("nmid-dashboard-test-{}", std::process::id()));
    let output = Command::new(CHROMIUM)
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
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {CHROMIUM} ({err}): `make test` installs it (Debian package chromium)"
            )
        });
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("DOM is UTF-8")
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

/// The HTML from `marker` to the end of its element (table body or span).
fn section<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page: {dom}"));
    let rest = &dom[start..];
    let end = ["</tbody>", "</span>"]
        .iter()
        .filter_map(|close| rest.find(close).map(|i| i + close.len()))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}
