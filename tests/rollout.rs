//! A rollout of the sidecar-faas pod (deploy/k8s/overlays/sidecar-faas), rehearsed with the
//! real processes on 127.0.0.1: `nmid` with the pod's configuration, `nmid-faas` with the
//! pod's functions file, and an HTTP app (Python) behind it. Calls flow; then the pod is
//! deleted: each process gets SIGTERM after its container's preStop delay from the rendered
//! overlay, all counted from the same moment, as the kubelet does. The callers stop starting
//! calls before the dispatcher's preStop ends (the endpoints controller has taken the pod
//! out of the Service by then), and calls are still in flight when the dispatcher's SIGTERM
//! comes. No call may fail, and the dispatcher says 503 on `/readyz` before any worker
//! leaves. Also: the pod is not ready before its functions are registered.

mod common;
#[path = "common/k8s.rs"]
mod k8s;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{ChildLog, Process, PROCESS_PATIENCE};

/// The app: every route answers after `delay_ms` (from the JSON body), with the params; it
/// prints its port, and dies on SIGTERM as a plain server does.
const APP: &str = r#"
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        params = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        time.sleep(params.get("delay_ms", 0) / 1000)
        data = json.dumps({"path": self.path, "params": params}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Callers in parallel.
const CALLERS: usize = 8;
/// How long the app takes per call of the steady callers.
const CALL_MS: u64 = 300;
/// Calls started just before the callers stop, long enough (under SearchProducts'
/// `timeout_ms`) to be in flight when the dispatcher's SIGTERM comes: the drain finishes them.
const STRADDLERS: usize = 4;
const STRADDLE_MS: u64 = 2500;
/// The callers stop starting calls this long before the dispatcher's preStop ends: the
/// endpoints controller has taken the pod out of the Service by then (a loaded machine may
/// take a while to deliver a request; the preStop's margin covers that in a cluster too).
const ENDPOINTS_LAG: Duration = Duration::from_millis(1500);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text under `key: |` in a ConfigMap file, unindented.
fn config_block(path: &str, key: &str) -> String {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let start = text.find(&format!("{key}: |\n")).expect("block") + key.len() + 4;
    (text[start..].lines())
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A child process killed (by PID) when dropped.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}

fn wait_exit(child: &mut Child, what: &str, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn get_status(client: &reqwest::Client, url: &str) -> Option<u16> {
    let response = client.get(url).send().await.ok()?;
    Some(response.status().as_u16())
}

/// The whole rollout, as the module doc says.
#[test]
fn sidecar_faas_rollout_drops_no_call() {
    let objects = k8s::rendered("deploy/k8s/overlays/sidecar-faas");
    let containers = k8s::containers(&objects);
    let delay =
        |name| Duration::from_secs(k8s::pre_stop_seconds(k8s::container(&containers, name)));
    let (nmid_delay, faas_delay, app_delay) = (delay("nmid"), delay("faas"), delay("app"));
    let ready_path = k8s::container(&containers, "nmid")["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap()
        .to_owned();

    let dir = std::env::temp_dir().join(format!("nmid-rollout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("nmid.toml");
    std::fs::write(
        &config,
        config_block("deploy/k8s/base/configmap.yaml", "nmid.toml"),
    )
    .unwrap();

    let mut app = Guarded(
        Command::new("python3")
            .args(["-c", APP])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (`make test` installs it)"),
    );
    let mut line = String::new();
    BufReader::new(app.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let app_port: u16 = line.trim().parse().expect("the app's port");

    let mut nmid = Process::start(&["--config", config.to_str().unwrap()]);
    let http = format!("http://{}", nmid.http.unwrap());
    let functions = config_block(
        "deploy/k8s/overlays/sidecar-faas/functions-configmap.yaml",
        "functions.toml",
    )
    .replace("127.0.0.1:8080", &format!("127.0.0.1:{app_port}"))
    .replace("127.0.0.1:6808", &nmid.addr.to_string());
    let file = dir.join("functions.toml");
    std::fs::write(&file, functions).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ready_url = format!("{http}{ready_path}");
    // Not ready: the functions are not registered yet.
    let before = runtime.block_on(get_status(&client, &ready_url));
    assert_eq!(before, Some(503), "{ready_path} before nmid-faas started");

    let mut faas = Guarded(
        Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("faas.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + PROCESS_PATIENCE;
    while runtime.block_on(get_status(&client, &ready_url)) != Some(200) {
        assert!(Instant::now() < deadline, "{ready_path} never said 200");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Calls flow; then the pod is deleted at `deleted`.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // When the last call of each caller ended: some must end after the dispatcher's SIGTERM
    // (the drain finished them).
    let last_ends = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let deleted = Instant::now() + Duration::from_secs(1);
    let stop_calls = deleted + nmid_delay - ENDPOINTS_LAG;
    // The steady callers, then the straddlers: one long call each, started just before the
    // callers stop.
    let plan = (0..CALLERS)
        .map(|i| (["GetProduct", "SearchProducts"][i % 2], CALL_MS, false))
        .chain((0..STRADDLERS).map(|_| ("SearchProducts", STRADDLE_MS, true)));
    let callers: Vec<_> = plan
        .map(|(function, call_ms, straddle)| {
            let (client, failures, calls) = (client.clone(), failures.clone(), calls.clone());
            let last_ends = last_ends.clone();
            let url = format!("{http}/call/{function}");
            runtime.spawn(async move {
                if straddle {
                    let start = stop_calls - Duration::from_millis(200);
                    tokio::time::sleep(start.saturating_duration_since(Instant::now())).await;
                }
                while Instant::now() < stop_calls {
                    let body = format!(r#"{{"id":"1","delay_ms":{call_ms}}}"#);
                    let result = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            failures.lock().unwrap().push(format!("{status} {text}"));
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    if straddle {
                        break;
                    }
                }
                last_ends.lock().unwrap().push(Instant::now());
            })
        })
        .collect();

    // The kubelet: each container's preStop, then SIGTERM, all from `deleted`.
    let pids = [
        ("nmid", nmid.child.id(), nmid_delay),
        ("faas", faas.0.id(), faas_delay),
        ("app", app.0.id(), app_delay),
    ];
    let killers: Vec<_> = pids
        .iter()
        .map(|&(name, pid, delay)| {
            std::thread::spawn(move || {
                std::thread::sleep((deleted + delay).saturating_duration_since(Instant::now()));
                term(pid);
                (name, Instant::now())
            })
        })
        .collect();

    // The dispatcher's readiness and its workers, watched until it is gone.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (http, ready_url) = (http.clone(), ready_url.clone());
        let watching = watching.clone();
        // A connection per request: a pooled one that the server closed as idle would read
        // as the dispatcher gone.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        runtime.spawn(async move {
            let (mut first_unready, mut first_worker_gone) = (None, None);
            let mut unanswered = 0;
            while watching.load(Ordering::Relaxed) {
                let ready = get_status(&client, &ready_url).await;
                if first_unready.is_none() && ready.is_some_and(|s| s != 200) {
                    first_unready = Some(Instant::now());
                }
                let workers = async {
                    let r = client
                        .get(format!("{http}/api/v1/workers"))
                        .send()
                        .await
                        .ok()?;
                    let json: serde_json::Value =
                        serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
                    Some(json.as_array()?.len())
                };
                if let Some(n) = workers.await {
                    if n < 2 && first_worker_gone.is_none() {
                        first_worker_gone = Some(Instant::now());
                    }
                }
                unanswered = if ready.is_none() { unanswered + 1 } else { 0 };
                if unanswered >= 3 && Instant::now() > deleted {
                    break; // the dispatcher is gone
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (first_unready, first_worker_gone)
        })
    };

    for caller in callers {
        runtime.block_on(caller).unwrap();
    }
    let termed: Vec<(&str, Instant)> = killers.into_iter().map(|k| k.join().unwrap()).collect();
    let limit = PROCESS_PATIENCE + Duration::from_secs(5);
    let nmid_status = nmid.wait_exit(limit);
    let faas_status = wait_exit(&mut faas.0, "nmid-faas", limit);
    // A panic nmid-faas survived fails the rollout too (its stderr went to the file).
    ChildLog::assert_no_panic_in_file(&dir.join("faas.log"), "nmid-faas");
    let _ = wait_exit(&mut app.0, "the app", limit);
    watching.store(false, Ordering::Relaxed);
    let (first_unready, first_worker_gone) = runtime.block_on(watcher).unwrap();

    let failures = failures.lock().unwrap().clone();
    let calls = calls.load(Ordering::Relaxed);
    let log = std::fs::read_to_string(dir.join("faas.log")).unwrap_or_default();
    println!(
        "rollout: {calls} calls, {} failed; SIGTERMs {termed:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:#?}",
        failures.len()
    );
    assert!(calls >= CALLERS as u64 * 2, "only {calls} calls made");
    assert!(nmid_status.success(), "nmid: {nmid_status}");
    assert!(faas_status.success(), "nmid-faas: {faas_status}\n{log}");
    let nmid_termed = termed.iter().find(|(n, _)| *n == "nmid").unwrap().1;
    let drained = (last_ends.lock().unwrap().iter())
        .filter(|end| **end > nmid_termed)
        .count();
    assert!(
        drained > 0,
        "no call was in flight at the dispatcher's SIGTERM"
    );
    let first_unready = first_unready.expect("/readyz said 503 while draining");
    let faas_termed = termed.iter().find(|(n, _)| *n == "faas").unwrap().1;
    assert!(
        first_unready < faas_termed,
        "/readyz was 200 until nmid-faas's SIGTERM"
    );
    if let Some(gone) = first_worker_gone {
        assert!(
            first_unready < gone,
            "a worker left while /readyz still said 200"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
