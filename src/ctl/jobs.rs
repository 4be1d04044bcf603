//! Background jobs from the command line: `nmidctl submit FUNC [JSON]` over the nmid
//! protocol with the client library (the job id on stdout; with `--wait` the result, as
//! `call` prints it), and `nmidctl jobs` over the HTTP API (`GET /api/v1/jobs` as a table,
//! `jobs ID` one job, `jobs ID --cancel` `DELETE`s it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::admin::{age, cell, print_json, Admin};
use super::call::{connect, params_of, print_result};
use super::cli::{Cli, JobsArgs, PriorityArg, SubmitArgs};
use super::{table, CtlError};
use crate::client::{JobState, JobStatus, Priority, SubmitOptions};

/// `nmidctl submit`.
pub(super) async fn submit(cli: &Cli, args: &SubmitArgs) -> Result<(), CtlError> {
    let (params, params_type) = params_of(args.params.as_deref(), args.msgpack.as_deref())?;
    let client = connect(cli, cli.request_timeout).await?;
    let mut options = SubmitOptions::default().params_type(params_type);
    options.priority = args.priority.map(|p| match p {
        PriorityArg::High => Priority::High,
        PriorityArg::Normal => Priority::Normal,
        PriorityArg::Low => Priority::Low,
    });
    options.delay = args.delay_ms.map(Duration::from_millis);
    options.unique_key = args.unique_key.clone().map(Into::into);
    options.max_attempts = args.max_attempts;
    options.timeout = args.attempt_timeout;
    let of_call = |e| CtlError::of_call(&args.function, e);
    let submitted = (client.submit(&args.function, params, options).await).map_err(of_call)?;
    if !args.wait {
        println!("{}", submitted.id);
        return Ok(());
    }
    let shared = if submitted.shared { " (shared)" } else { "" };
    eprintln!("job {}{shared}", submitted.id);
    let status = (client.wait_job(&submitted.id, args.timeout).await).map_err(of_call)?;
    match status.state {
        JobState::Succeeded => print_result(status.result.unwrap_or_default(), args.raw),
        _ => Err(job_failure(&submitted.id, status)),
    }
}

/// The error of a job that ended without a result, as a call that failed the same way.
fn job_failure(id: &str, status: JobStatus) -> CtlError {
    let message = status.error.unwrap_or_default();
    match (status.state, status.error_code.as_deref()) {
        (JobState::Cancelled, _) => CtlError::Worker(format!("job {id} was cancelled")),
        (_, Some("timeout")) => CtlError::Timeout,
        (_, Some("worker_lost")) => CtlError::WorkerLost,
        (_, Some(code)) if code != "worker_error" => CtlError::Worker(format!("{code}: {message}")),
        _ => CtlError::Worker(message),
    }
}

/// `nmidctl jobs`.
pub(super) async fn jobs(cli: &Cli, args: &JobsArgs) -> Result<(), CtlError> {
    let admin = Admin::new(cli)?;
    let Some(id) = &args.id else {
        return list(&admin, args).await;
    };
    let path = format!("/api/v1/jobs/{}", encode(id));
    let method = match args.cancel {
        true => hyper::Method::DELETE,
        false => hyper::Method::GET,
    };
    let job = answer(&path, admin.send(method, &path).await?)?;
    if args.json {
        print_json(&job);
    } else {
        println!("{}", describe(&job));
    }
    Ok(())
}

async fn list(admin: &Admin, args: &JobsArgs) -> Result<(), CtlError> {
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(function) = &args.function {
        query.push(format!("function={}", encode(function)));
    }
    if let Some(state) = &args.state {
        query.push(format!("state={}", encode(state)));
    }
    if let Some(after) = args.after {
        query.push(format!("after={after}"));
    }
    let path = format!("/api/v1/jobs?{}", query.join("&"));
    let page = answer("/api/v1/jobs", admin.get(&path).await?)?;
    if args.json {
        print_json(&page);
        return Ok(());
    }
    let jobs = (page["jobs"].as_array())
        .ok_or_else(|| CtlError::Protocol("/api/v1/jobs: no jobs array".to_owned()))?;
    let now = now_ms();
    let rows: Vec<Vec<String>> = (jobs.iter())
        .map(|job| {
            vec![
                cell(&job["id"]),
                cell(&job["function"]),
                cell(&job["state"]),
                cell(&job["priority"]),
                attempts(job),
                since(job["created_ms"].as_u64(), now),
            ]
        })
        .collect();
    let header = ["ID", "FUNCTION", "STATE", "PRIORITY", "ATTEMPTS", "AGE"];
    println!("{}", table::render(&header, &rows));
    if let Some(next) = page["next"].as_u64() {
        eprintln!("more: nmidctl jobs --after {next}");
    }
    Ok(())
}

/// The JSON of a jobs API answer, or the error its status means.
fn answer(path: &str, (status, body): (u16, bytes::Bytes)) -> Result<Value, CtlError> {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let said = || match json.as_ref().and_then(|j| j["error"].as_str()) {
        Some(error) => error.to_owned(),
        None => String::from_utf8_lossy(&body).into_owned(),
    };
    let code = json.as_ref().and_then(|j| j["code"].as_str());
    match (status, code) {
        (200, _) => json.ok_or_else(|| CtlError::Protocol(format!("{path}: not JSON"))),
        (401 | 403, _) => Err(CtlError::Denied(format!(
            "{path}: HTTP {status}: {}",
            said()
        ))),
        (404, Some("job_not_found")) => Err(CtlError::NoSuchJob(said())),
        (404, _) => Err(CtlError::NotAvailable(format!(
            "this dispatcher has no {path} (HTTP 404)"
        ))),
        (409, _) => Err(CtlError::NotCancellable(said())),
        (400, _) => Err(CtlError::Usage(said())),
        (503, _) => Err(CtlError::Refused(said())),
        _ => Err(CtlError::Protocol(format!(
            "{path}: HTTP {status}: {}",
            said()
        ))),
    }
}

/// One job, a field a line.
fn describe(job: &Value) -> String {
    let now = now_ms();
    let mut lines = vec![
        ("id", cell(&job["id"])),
        ("function", cell(&job["function"])),
        ("state", cell(&job["state"])),
        ("priority", cell(&job["priority"])),
        ("attempts", attempts(job)),
        ("created", since(job["created_ms"].as_u64(), now)),
    ];
    if let Some(progress) = job.get("progress") {
        let share = format!(
            "{}/{}",
            cell(&progress["numerator"]),
            cell(&progress["denominator"])
        );
        lines.push(("progress", share));
    }
    for field in ["unique_key", "result", "error", "error_code", "callback"] {
        if let Some(value) = job.get(field) {
            lines.push((field, cell(value)));
        }
    }
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    (lines.iter())
        .map(|(name, value)| format!("{:<width$} {value}", format!("{name}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn attempts(job: &Value) -> String {
    format!("{}/{}", cell(&job["attempts"]), cell(&job["max_attempts"]))
}

/// How long ago `at_ms` was, as `age` writes it.
fn since(at_ms: Option<u64>, now_ms: u64) -> String {
    match at_ms {
        Some(at) => format!(
            "{} ago",
            age(Duration::from_millis(now_ms.saturating_sub(at)))
        ),
        None => "-".to_owned(),
    }
}

fn now_ms() -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH)).map_or(0, |d| d.as_millis() as u64)
}

/// `text` percent-encoded for a URL path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids and filters cannot change the path or the query they are put in.
    #[test]
    fn path_and_query_text_is_percent_encoded() {
        assert_eq!(encode("n1-7"), "n1-7");
        assert_eq!(encode("../x?y=1&z"), "..%2Fx%3Fy%3D1%26z");
    }

    /// Each jobs API status is the exit status its meaning has.
    #[test]
    fn jobs_api_statuses_map_to_exit_statuses() {
        let code = |status, body: &str| {
            answer(
                "/p",
                (status, bytes::Bytes::copy_from_slice(body.as_bytes())),
            )
            .unwrap_err()
            .exit_code()
        };
        assert_eq!(code(404, r#"{"code":"job_not_found","error":"x"}"#), 11);
        assert_eq!(code(404, "no route"), 9);
        assert_eq!(code(409, r#"{"code":"not_cancellable","error":"x"}"#), 12);
        assert_eq!(code(401, "{}"), 10);
        assert_eq!(code(500, "{}"), 8);
    }
}
