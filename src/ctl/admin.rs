//! The admin commands over the dispatcher's HTTP API: `functions`, `workers`, `stats`,
//! `cluster` (tables, or the JSON with `--json`) and `health`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::cli::{Cli, ListArgs};
use super::table;
use super::CtlError;

/// An HTTP client for the admin API at `cli.http`: one HTTP/1.1 request per connection,
/// over TLS for an `https` URL (trusting `--ca-file`, else the system's CAs), with the
/// token as `Authorization: Bearer`.
pub struct Admin {
    base: String,
    /// `host:port` to connect to.
    authority: String,
    /// The URL's path, prefixed to each request's.
    prefix: String,
    access: crate::net::Access,
    timeout: Duration,
    /// `Authorization: Bearer <token>`, with --token.
    token: Option<String>,
}

impl Admin {
    /// A client of the command line's URL, timeout, token and TLS trust.
    pub fn new(cli: &Cli) -> Result<Self, CtlError> {
        let base = cli.http.trim_end_matches('/').to_owned();
        let bad = |reason: String| CtlError::Usage(format!("bad --http URL {base:?}: {reason}"));
        let url = reqwest::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        let host = url.host_str().ok_or_else(|| bad("no host".to_owned()))?;
        let tls = match url.scheme() {
            "http" => None,
            "https" => {
                Some((cli.client_tls().unwrap_or_default().connector()).map_err(CtlError::Usage)?)
            }
            other => return Err(bad(format!("scheme {other:?}: use http or https"))),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self {
            authority: format!("{host}:{port}"),
            prefix: url.path().trim_end_matches('/').to_owned(),
            base,
            access: crate::net::Access {
                tls,
                ..crate::net::Access::default()
            },
            timeout: cli.request_timeout,
            token: cli.token.clone(),
        })
    }

    /// GETs `path`: the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, bytes::Bytes), CtlError> {
        self.send(hyper::Method::GET, path).await
    }

    /// Sends a `method` request without a body to `path`: the status and the body.
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
    ) -> Result<(u16, bytes::Bytes), CtlError> {
        let url = format!("{}{path}", self.base);
        let exchange = async {
            let stream = self.access.dial(&self.authority, self.timeout).await?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.prefix))
                .header(hyper::header::HOST, &self.authority);
            if let Some(token) = &self.token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = (request.body(http_body_util::Empty::<bytes::Bytes>::new()))
                .map_err(std::io::Error::other)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok::<_, std::io::Error>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(CtlError::Unreachable(format!("{url}: timed out"))),
            Ok(Err(err)) => Err(CtlError::Unreachable(format!(
                "cannot reach {url}: {}",
                root_cause(&err)
            ))),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// GETs `path` and reads its JSON; any status but 200 is an error.
    pub async fn json(&self, path: &str) -> Result<Value, CtlError> {
        let (status, body) = self.get(path).await?;
        if status == 401 || status == 403 {
            return Err(CtlError::Denied(format!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        if status == 404 {
            return Err(CtlError::NotAvailable(format!(
                "this dispatcher has no {path} (HTTP 404)"
            )));
        }
        if status != 200 {
            return Err(CtlError::Protocol(format!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| CtlError::Protocol(format!("{path}: not JSON: {e}")))
    }
}

fn root_cause(err: &std::io::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Prints `value` as pretty JSON.
pub(super) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A JSON value as a table cell (`-` for null).
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn list<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, CtlError> {
    value
        .as_array()
        .ok_or_else(|| CtlError::Protocol(format!("{what}: expected a JSON array")))
}

/// GETs `path`: printed as JSON (and `None`) with `--json`, else the value for a table.
async fn fetch(cli: &Cli, args: &ListArgs, path: &str) -> Result<Option<Value>, CtlError> {
    let value = Admin::new(cli)?.json(path).await?;
    if args.json {
        print_json(&value);
        return Ok(None);
    }
    Ok(Some(value))
}

pub(super) async fn functions(cli: &Cli, args: &ListArgs) -> Result<(), CtlError> {
    let Some(value) = fetch(cli, args, "/api/v1/functions").await? else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = list(&value, "functions")?
        .iter()
        .map(|f| {
            ["name", "workers", "in_flight", "queued"]
                .iter()
                .map(|k| cell(&f[k]))
                .collect()
        })
        .collect();
    println!(
        "{}",
        table::render(&["FUNCTION", "WORKERS", "IN FLIGHT", "QUEUED"], &rows)
    );
    Ok(())
}

pub(super) async fn workers(cli: &Cli, args: &ListArgs) -> Result<(), CtlError> {
    let Some(value) = fetch(cli, args, "/api/v1/workers").await? else {
        return Ok(());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows: Vec<Vec<String>> = list(&value, "workers")?
        .iter()
        .map(|w| {
            let since = w["connected_since"].as_u64().unwrap_or(now);
            vec![
                w["name"].as_str().unwrap_or("(unnamed)").to_owned(),
                cell(&w["address"]),
                cell(&w["functions"]),
                cell(&w["in_flight"]),
                cell(&w["max_jobs"]),
                age(Duration::from_secs(now.saturating_sub(since))),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &[
                "WORKER",
                "ADDRESS",
                "FUNCTIONS",
                "IN FLIGHT",
                "SLOTS",
                "CONNECTED"
            ],
            &rows
        )
    );
    Ok(())
}

pub(super) async fn stats(cli: &Cli, args: &ListArgs) -> Result<(), CtlError> {
    let Some(value) = fetch(cli, args, "/api/v1/stats").await? else {
        return Ok(());
    };
    let uptime = Duration::from_secs_f64(value["uptime_seconds"].as_f64().unwrap_or(0.0));
    let mut rows = vec![
        vec!["version".to_owned(), cell(&value["version"])],
        vec!["uptime".to_owned(), age(uptime)],
        vec!["draining".to_owned(), cell(&value["draining"])],
        vec!["workers".to_owned(), cell(&value["workers"])],
        vec!["functions".to_owned(), cell(&value["functions"])],
        vec!["in flight".to_owned(), cell(&value["in_flight"])],
        vec!["queued".to_owned(), cell(&value["queued"])],
        vec!["calls".to_owned(), cell(&value["calls"]["total"])],
        vec!["errors".to_owned(), cell(&value["calls"]["errors"])],
    ];
    for outcome in value["calls"]["by_outcome"]
        .as_array()
        .into_iter()
        .flatten()
    {
        rows.push(vec![format!("  {}", cell(&outcome[0])), cell(&outcome[1])]);
    }
    println!("{}", table::render(&["STAT", "VALUE"], &rows));
    Ok(())
}

/// `cluster`: etcd's state and every dispatcher of the cluster (`GET /api/v1/cluster`); a
/// clear "not available" (exit 9) from a dispatcher without that API (404).
pub(super) async fn cluster(cli: &Cli, args: &ListArgs) -> Result<(), CtlError> {
    let Some(report) = fetch(cli, args, "/api/v1/cluster").await? else {
        return Ok(());
    };
    if report["enabled"] != Value::Bool(true) {
        println!("discovery off: this dispatcher serves alone (start it with --etcd)");
        return Ok(());
    }
    let etcd = &report["etcd"];
    let mut status = format!(
        "etcd {} at {} for {}",
        cell(&etcd["state"]),
        cell(&etcd["endpoints"]),
        age(Duration::from_secs(
            etcd["since_seconds"].as_u64().unwrap_or(0)
        ))
    );
    if etcd["watching"] == Value::Bool(false) {
        status.push_str(" · membership watch reconnecting");
    }
    if let (Some(error), false) = (etcd["last_error"].as_str(), etcd["state"] == "up") {
        status.push_str(&format!(" · {error}"));
    }
    println!("{status}");
    let rows: Vec<Vec<String>> = list(&report["members"], "cluster members")?
        .iter()
        .map(|m| {
            let mut id = cell(&m["tcp_addr"]);
            if m["self"] == Value::Bool(true) {
                id.push_str(" (this one)");
            }
            let state = if m["draining"] == Value::Bool(true) {
                "draining"
            } else if m["reachable"] == Value::Bool(false) {
                "unreachable"
            } else {
                "serving"
            };
            vec![
                id,
                cell(&m["http_addr"]),
                cell(&m["version"]),
                state.to_owned(),
                cell(&m["load"]),
                cell(&m["forwarded"]),
                age(Duration::from_secs(
                    m["last_seen_seconds"].as_u64().unwrap_or(0),
                )),
                cell(&m["functions"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &[
                "DISPATCHER",
                "HTTP",
                "VERSION",
                "STATE",
                "LOAD",
                "FORWARDED",
                "SEEN",
                "FUNCTIONS"
            ],
            &rows
        )
    );
    Ok(())
}

/// `health`: exit 0 when `/readyz` says ready; 1 (with the reason) otherwise, reachable or
/// not, as container health checks expect.
pub(super) async fn health(cli: &Cli) -> Result<(), CtlError> {
    let (status, body) = Admin::new(cli)?
        .get("/readyz")
        .await
        .map_err(|e| CtlError::NotReady(e.to_string()))?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let said = body["status"].as_str().unwrap_or("?").to_owned();
    if status == 200 && said == "ready" {
        println!("ready");
        return Ok(());
    }
    Err(CtlError::NotReady(format!(
        "/readyz answered {status} {said}"
    )))
}

/// `1d 2h`, `3h 4m`, `5m 6s`, `7s`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}
