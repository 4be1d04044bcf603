//! The Grafana dashboards in `grafana/dashboards` against a real Prometheus (Debian package
//! `prometheus`, installed by `make test`): Prometheus scrapes a live dispatcher's `/metrics`
//! every second while a worker answers calls of several outcomes; then every panel query and
//! every template variable of both dashboards runs through Prometheus' HTTP API, and each must
//! parse and return data.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{start_dispatcher_with_http, TestDispatcher};
use nmid::client::Client;
use nmid::config::Config;
use nmid::retstruct::RetStruct;
use nmid::worker::{Job, JobError, Worker};
use serde_json::{json, Value};

/// The Prometheus binary `make test` installs (Debian package `prometheus`).
const PROMETHEUS: &str = "prometheus";
/// How long Prometheus may take to start, or to scrape what a step waits for.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(15);
/// Scrapes of the dispatcher after the calls before the dashboards are queried.
const SCRAPES_AFTER_CALLS: u32 = 4;
/// What stands in for Grafana's `$__rate_interval` (Prometheus scrapes every second here).
const RATE_INTERVAL: &str = "10s";
/// What stands in for Grafana's `$__range`.
const RANGE: &str = "1m";
/// The only datasource the dashboards may use: the provisioned one.
const DATASOURCE_UID: &str = "prometheus";
/// The name of the test's worker, expected among the `worker` variable's values.
const WORKER_NAME: &str = "prom-worker";

/// A dashboard file and what it must at least hold.
struct Dashboard {
    file: &'static str,
    /// Titles of panels that must be there, each with at least one query.
    panels: &'static [&'static str],
    /// A value each template variable must offer, by variable name.
    variables: &'static [(&'static str, &'static str)],
}

const DASHBOARDS: &[Dashboard] = &[
    Dashboard {
        file: "nmid-overview.json",
        panels: &[
            "Calls/s by function",
            "Error ratio",
            "Call latency p50 / p95 / p99",
            "Jobs in flight",
            "Queue depth",
            "Workers per function",
            "Worker disconnects/s",
            "Retries and late results/s",
            "HTTP requests/s by route and status",
            "Background jobs queued",
            "Background jobs running and oldest wait",
            "Background job attempts and callbacks/s",
        ],
        variables: &[("function", "ToUpper")],
    },
    Dashboard {
        file: "nmid-workers.json",
        panels: &[
            "Jobs/s per worker",
            "Jobs in flight per worker",
            "Connections by role",
            "Workers and functions",
            "Worker disconnects/s",
        ],
        variables: &[("worker", WORKER_NAME)],
    },
];

/// A Prometheus server on 127.0.0.1 with its own config and storage in a temp directory;
/// killed (by its PID) and waited for on drop.
struct PrometheusServer {
    child: Child,
    url: String,
    dir: PathBuf,
    http: awc::Client,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `http://{target}/metrics` every second.
    fn start(target: SocketAddr) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "nmid-prometheus-test-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the Prometheus temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: nmid\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "cannot run `{PROMETHEUS}` ({err}): this test needs a real Prometheus; \
                     `make test` installs it (Debian package prometheus)"
                )
            });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(5))
                .finish(),
        }
    }

    /// Prometheus' own output so far, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Starts Prometheus scraping `target` and waits until it is ready. Its port comes from
    /// [`free_port`], which another process may take between its release and Prometheus'
    /// bind: then Prometheus exits with "address already in use", and another port is tried.
    async fn start_ready(target: SocketAddr) -> Self {
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let mut prometheus = Self::start(target);
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(log) if log.contains("address already in use") && attempt < ATTEMPTS => {
                    eprintln!(
                        "{}: port taken before Prometheus bound it; retrying",
                        prometheus.url
                    );
                }
                Err(log) => panic!("prometheus exited at start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits until Prometheus answers `/-/ready`; `Err` with its log if it exits first,
    /// panics if it takes too long.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exit status {status}\n{}", self.log()));
            }
            let ready = self.http.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {PROMETHEUS_PATIENCE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET {url}{path}?{params}` on the HTTP API, as JSON.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(&params)
            .expect("encode the query")
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path} {params:?} from prometheus: {err}"));
        let body = response
            .body()
            .limit(16 << 20)
            .await
            .expect("prometheus' answer");
        serde_json::from_slice(&body).unwrap_or_else(|err| {
            panic!(
                "prometheus answered {path} {params:?} with non-JSON ({err}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// An instant query at the current time: the whole answer.
    async fn query(&self, expr: &str) -> Value {
        self.api("/api/v1/query", &[("query", expr)]).await
    }

    /// The result vector of a query expected to succeed.
    async fn vector(&self, expr: &str) -> Vec<Value> {
        let answer = self.query(expr).await;
        assert_eq!(answer["status"], "success", "`{expr}`: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `expr` until its first sample's value satisfies `check`; panics with `what`
    /// after [`PROMETHEUS_PATIENCE`].
    async fn wait_for(&self, what: &str, expr: &str, check: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        loop {
            let result = self.vector(expr).await;
            if result.first().and_then(sample_value).is_some_and(&check) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: `{expr}` = {result:?}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on 127.0.0.1 right now: bound, read, and released (so it may be taken before
/// Prometheus binds it: see [`PrometheusServer::start_ready`]).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The value of one instant-vector sample (`{"metric": .., "value": [ts, "v"]}`).
fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// `POST /call/{function}` with a JSON body and `headers`; returns the status.
async fn call(dispatcher: &TestDispatcher, function: &str, headers: &[(&str, &str)]) -> u16 {
    call_path(dispatcher, &format!("/call/{function}"), headers).await
}

/// `POST {path}` with a JSON body and `headers`; the status.
async fn call_path(dispatcher: &TestDispatcher, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = awc::Client::default()
        .post(format!("{}{path}", dispatcher.http_url()))
        .insert_header(("content-type", "application/json"));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request
        .send_body(r#"{"name":"nmid"}"#)
        .await
        .expect("an HTTP response");
    let _ = response.body().await;
    response.status().as_u16()
}

/// Calls answered ok, by a worker error, by cant_do, and by a timeout (whose result then
/// arrives late), over HTTP and through the Rust client.
async fn drive_calls(dispatcher: &TestDispatcher, client: &Client) {
    for _ in 0..5 {
        assert_eq!(call(dispatcher, "ToUpper", &[]).await, 200);
    }
    for _ in 0..3 {
        let data = client
            .call_data("ToUpper", &json!({"name": "nmid"}))
            .await
            .expect("ToUpper through the client");
        assert_eq!(&data[..], b"NMID");
    }
    assert_eq!(call(dispatcher, "NoSuchFunction", &[]).await, 404);
    // A background job that ran, and one that waits an hour (queued).
    assert_eq!(call_path(dispatcher, "/async/ToUpper", &[]).await, 202);
    let later = [("x-nmid-delay-ms", "3600000")];
    assert_eq!(call_path(dispatcher, "/async/ToUpper", &later).await, 202);
    assert_eq!(call(dispatcher, "Fail", &[]).await, 502);
    assert_eq!(
        call(dispatcher, "Slow", &[("x-nmid-timeout-ms", "50")]).await,
        504
    );
}

/// Every panel of `panels`, rows' nested panels included.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(all_panels(&panel["panels"]));
    }
    out
}

/// `expr` with Grafana's variables replaced as Grafana would with "All" selected.
fn substitute(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__range", RANGE)
        .replace("${__range}", RANGE);
    ["function", "worker"].iter().fold(expr, |expr, var| {
        expr.replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*")
    })
}

/// Checks one dashboard against Prometheus: required panels, the datasource, every panel
/// query parses and returns data, every template variable offers its expected value.
async fn check_dashboard(prometheus: &PrometheusServer, dashboard: &Dashboard) {
    let path = format!(
        "{}/grafana/dashboards/{}",
        env!("CARGO_MANIFEST_DIR"),
        dashboard.file
    );
    let file = dashboard.file;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));

    let panels = all_panels(&json["panels"]);
    let queried: Vec<&str> = panels
        .iter()
        .filter(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty()))
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in dashboard.panels {
        assert!(
            queried.contains(title),
            "{file} lacks the panel {title:?}; panels with queries: {queried:?}"
        );
    }

    let mut checked = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        assert_eq!(
            panel["datasource"]["uid"], DATASOURCE_UID,
            "{file}: panel {title:?} must use the provisioned datasource"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], DATASOURCE_UID,
                "{file}: a target of panel {title:?} must use the provisioned datasource"
            );
            let raw = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: a target of panel {title:?} has no expr"));
            let expr = substitute(raw);
            assert!(
                !expr.contains('$'),
                "{file}: panel {title:?}: unknown Grafana variable left in `{expr}`"
            );
            let answer = prometheus.query(&expr).await;
            assert_eq!(
                answer["status"], "success",
                "{file}: panel {title:?}: Prometheus refused `{expr}`: {answer}"
            );
            let result = &answer["data"]["result"];
            assert!(
                result.as_array().is_some_and(|r| !r.is_empty()),
                "{file}: panel {title:?}: `{expr}` returned no data: {answer}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= dashboard.panels.len(),
        "{file}: only {checked} queries"
    );

    for (name, expected) in dashboard.variables {
        let variable = json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == *name)
            .unwrap_or_else(|| panic!("{file} has no `{name}` variable"));
        assert_eq!(
            variable["datasource"]["uid"], DATASOURCE_UID,
            "{file}: ${name}"
        );
        assert_eq!(
            (
                &variable["multi"],
                &variable["includeAll"],
                &variable["allValue"]
            ),
            (&json!(true), &json!(true), &json!(".*")),
            "{file}: ${name} must be multi-value with All = .*"
        );
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_else(|| panic!("{file}: ${name} has no query"));
        let (metric, label) = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|args| args.split_once(','))
            .map(|(m, l)| (m.trim(), l.trim()))
            .unwrap_or_else(|| panic!("{file}: ${name}: not label_values(metric, label): {query}"));
        let answer = prometheus
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", metric)],
            )
            .await;
        assert_eq!(answer["status"], "success", "{file}: ${name}: {answer}");
        let values = answer["data"].as_array().cloned().unwrap_or_default();
        assert!(
            values.iter().any(|v| v == expected),
            "{file}: ${name} (`{query}`) offers {values:?}, not {expected:?}"
        );
    }
}

/// Every panel query and template variable of both Grafana dashboards parses and returns
/// data from a real Prometheus scraping a live dispatcher.
#[actix_rt::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 300;
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .name(WORKER_NAME)
        .server(dispatcher.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .function("Fail", |_job: Job| async {
            Err::<RetStruct, _>(JobError::new("fails on purpose"))
        })
        .function("Slow", |_job: Job| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, JobError>(RetStruct::ok("too late"))
        })
        .start()
        .expect("worker starts");
    dispatcher
        .wait_for("the worker's three functions", |s| {
            ["ToUpper", "Fail", "Slow"]
                .iter()
                .all(|f| s.function(f).is_some_and(|f| f.workers == 1))
        })
        .await;
    let client = Client::connect(dispatcher.addr.to_string())
        .await
        .expect("client connects");

    // Once before the first scrape, so that every series exists then and the calls after it
    // show in rates (a series' first sample counts as no increase).
    drive_calls(&dispatcher, &client).await;

    let prometheus = PrometheusServer::start_ready(dispatcher.http.expect("HTTP listener")).await;
    prometheus
        .wait_for(
            "a first scrape of the dispatcher",
            r#"up{job="nmid"}"#,
            |v| v == 1.0,
        )
        .await;

    drive_calls(&dispatcher, &client).await;
    prometheus
        .wait_for(
            "scrapes after the calls",
            r#"count_over_time(nmid_calls_total{function="ToUpper",outcome="ok"}[1m])"#,
            |n| n >= f64::from(SCRAPES_AFTER_CALLS),
        )
        .await;

    let outcomes: Vec<String> = prometheus
        .vector("sum by (outcome) (nmid_calls_total) > 0")
        .await
        .iter()
        .filter_map(|s| s["metric"]["outcome"].as_str().map(str::to_owned))
        .collect();
    for outcome in ["ok", "error", "cant_do", "timeout"] {
        assert!(
            outcomes.iter().any(|o| o == outcome),
            "outcome {outcome:?} not counted; counted: {outcomes:?}"
        );
    }

    for dashboard in DASHBOARDS {
        check_dashboard(&prometheus, dashboard).await;
    }

    drop(prometheus);
    drop(client);
    worker.stop().await;
    dispatcher.stop().await;
}

/// The expression of alert `name` in deploy/prometheus/alerts.yml (its `expr: |` block).
fn alert_expr(name: &str) -> String {
    let alerts = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
    )
    .unwrap();
    let rule = alerts
        .split("- alert: ")
        .find(|rule| rule.starts_with(&format!("{name}\n")))
        .unwrap_or_else(|| panic!("no alert {name}"));
    let block = rule.split("expr: |\n").nth(1).expect("a block expr");
    block
        .lines()
        .take_while(|l| l.starts_with("          "))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A function that always fails the way nmid-faas reports failures (a RetStruct whose
/// `Code` is not 0: a non-zero exit, an upstream 5xx) is counted under outcome `error`,
/// never `ok`: `/api/v1/stats` and `/api/v1/calls` count its errors (what `nmidctl top`,
/// `stats` and the dashboard show), and the error-ratio alert's expression, run by a real
/// Prometheus on the scraped series, is above its threshold for it.
#[actix_rt::test]
async fn a_function_that_always_fails_counts_as_errors_and_trips_the_alert() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = Worker::builder()
        .name("failing-worker")
        .server(dispatcher.addr.to_string())
        .function("AlwaysFails", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::error(3, "exit status 3: no such order"))
        })
        .start()
        .expect("worker starts");
    dispatcher
        .wait_for("AlwaysFails served", |s| {
            s.function("AlwaysFails").is_some()
        })
        .await;
    let client = Client::connect(dispatcher.addr.to_string())
        .await
        .expect("client connects");
    let fail_all = || async {
        for _ in 0..5 {
            assert_eq!(call(&dispatcher, "AlwaysFails", &[]).await, 502);
            let result = client.call_data("AlwaysFails", &json!({})).await;
            assert!(result.is_err(), "{result:?}");
        }
    };
    fail_all().await;
    let prometheus = PrometheusServer::start_ready(dispatcher.http.expect("HTTP listener")).await;
    prometheus
        .wait_for("a first scrape", r#"up{job="nmid"}"#, |v| v == 1.0)
        .await;
    fail_all().await;
    let errors = r#"nmid_calls_total{function="AlwaysFails",outcome="error"}"#;
    prometheus
        .wait_for("the second round of failures scraped", errors, |n| {
            n >= 20.0
        })
        .await;
    let ok = prometheus
        .vector(r#"nmid_calls_total{function="AlwaysFails",outcome="ok"}"#)
        .await;
    assert!(
        ok.iter().all(|s| sample_value(s) == Some(0.0)),
        "counted as ok: {ok:?}"
    );
    let expr = alert_expr("NmidHighErrorRatio");
    let firing = prometheus.vector(&expr).await;
    let ratio = firing
        .iter()
        .find(|s| s["metric"]["function"] == "AlwaysFails")
        .and_then(sample_value)
        .unwrap_or_else(|| panic!("`{expr}` has no AlwaysFails sample: {firing:?}"));
    assert!(ratio > 0.05, "error ratio {ratio}");

    let stats: Value = serde_json::from_str(
        &common::get_text(&format!("{}/api/v1/stats", dispatcher.http_url()))
            .await
            .1,
    )
    .unwrap();
    assert!(stats["calls"]["errors"].as_u64().unwrap() >= 20, "{stats}");
    let by_outcome = stats["calls"]["by_outcome"].as_array().unwrap();
    let count = |outcome: &str| {
        (by_outcome.iter())
            .find(|entry| entry[0] == outcome)
            .and_then(|entry| entry[1].as_u64())
    };
    assert_eq!(count("ok"), Some(0), "{stats}");
    drop(prometheus);
    drop(client);
    worker.stop().await;
    dispatcher.stop().await;
}

/// A function that refuses calls as the caller's fault (a RetStruct `Code` from 400 to 499:
/// an http function's upstream 4xx) is counted under outcome `client_error`, not `error`:
/// HTTP callers get the 4xx, and `/api/v1/stats` and `/api/v1/calls` (what `top`, `stats`
/// and the dashboard show) count no error for it; a 5xx `Code` still is one.
#[actix_rt::test]
async fn a_functions_4xx_is_a_client_error_and_its_5xx_an_error() {
    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker = Worker::builder()
        .name("http-like")
        .server(dispatcher.addr.to_string())
        .function("NotFound", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::error(404, "upstream answered HTTP 404"))
        })
        .function("Broken", |_job: Job| async {
            Ok::<_, JobError>(RetStruct::error(503, "upstream answered HTTP 503"))
        })
        .start()
        .expect("worker starts");
    for function in ["NotFound", "Broken"] {
        dispatcher
            .wait_for(function, |s| s.function(function).is_some())
            .await;
    }
    for _ in 0..3 {
        assert_eq!(call(&dispatcher, "NotFound", &[]).await, 404);
    }
    assert_eq!(call(&dispatcher, "Broken", &[]).await, 502);
    let get = |path: &'static str| {
        let url = format!("{}{path}", dispatcher.http_url());
        async move { serde_json::from_str::<Value>(&common::get_text(&url).await.1).unwrap() }
    };
    let stats = get("/api/v1/stats").await;
    let by_outcome = stats["calls"]["by_outcome"].as_array().unwrap();
    let count = |outcome: &str| {
        (by_outcome.iter())
            .find(|entry| entry[0] == outcome)
            .and_then(|entry| entry[1].as_u64())
    };
    assert_eq!(count("client_error"), Some(3), "{stats}");
    assert_eq!(count("error"), Some(1), "{stats}");
    assert_eq!(stats["calls"]["errors"], 1, "{stats}");
    let calls = get("/api/v1/calls").await;
    let function = |name: &str| {
        (calls["functions"].as_array().unwrap().iter())
            .find(|f| f["function"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {calls}"))
    };
    assert_eq!(function("NotFound")["errors"], 0, "{calls}");
    assert_eq!(function("NotFound")["calls"], 3, "{calls}");
    assert_eq!(function("Broken")["errors"], 1, "{calls}");
    let text = common::get_text(&format!("{}/metrics", dispatcher.http_url()))
        .await
        .1;
    let client_errors = r#"nmid_calls_total{function="NotFound",outcome="client_error"} 3"#;
    assert!(text.contains(client_errors), "{text}");
    assert!(
        !alert_expr("NmidHighErrorRatio").contains(r#"outcome!="ok""#),
        "the error ratio must leave client errors out"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// The provisioned datasource is the one the dashboards name.
#[test]
fn provisioned_datasource_has_the_dashboards_uid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grafana/provisioning/datasources/prometheus.yaml"
    );
    let text = std::fs::read_to_string(path).expect("read the datasource provisioning");
    assert!(
        text.lines()
            .any(|l| l.trim() == format!("uid: {DATASOURCE_UID}")),
        "{path} must declare `uid: {DATASOURCE_UID}`"
    );
}
