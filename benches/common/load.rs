//! The measurement of one cell: a closed-loop load against a running system for one window,
//! with the CPU time of every process over that window, judged into a [`Run`].
//!
//! The load comes from a child of its own: our load generator (`--role load`, see
//! `roles::loadgen`) for every system but HTTP, wrk for HTTP. The harness reads each
//! process's utime + stime from /proc when the generator marks the window's start (`START`)
//! and its end (`RESULT {json}`; for wrk, the Lua `done` hook's summary line, after which
//! wrk waits on stdin so that its own CPU can be read before it exits). Every wait is
//! bounded in time, and the generator bounds its window in count too.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use super::options::{value_name, Settings};
use super::payload;
use super::procs::{Proc, Role};
use super::report::{ProcCpu, Run, RunKey};
use super::roles::loadgen::Caller;
use super::roles::recorder::LoadResult;
use super::systems::{Driver, Launcher, Running};

/// Completions counted at most in one window (a bound besides the window's length).
const MAX_CALLS: u64 = 20_000_000;
/// Longest wait for the generator's `START`, past its warm-up (connecting, the first call).
const START_GRACE: Duration = Duration::from_secs(45);
/// Longest wait for the generator's `RESULT`, past the window.
const RESULT_GRACE: Duration = Duration::from_secs(20);
/// Longest wait for wrk's summary, past the window.
const WRK_GRACE: Duration = Duration::from_secs(30);

/// Measures the cell `key` of `running`, its calls driven by `driver`: a run, failed when
/// the measurement could not be made, any call failed, or a process of the system died.
pub fn measure(
    launcher: &Launcher,
    settings: &Settings,
    driver: Driver,
    running: &mut Running,
    key: RunKey,
) -> Run {
    let measured = match driver {
        Driver::Role(caller) => role_window(launcher, settings, caller, running, &key),
        Driver::Wrk => wrk_window(launcher, settings, running, &key),
    };
    let dead = running.dead();
    match measured {
        Ok((result, cpu)) => judge(key, result, cpu, dead),
        Err(e) => match dead {
            Some(why) => Run::failed(key, format!("{why}; {e:#}")),
            None => Run::failed(key, format!("{e:#}")),
        },
    }
}

/// A run from a load result, the window's CPU, and whether a process of the system died
/// (`dead`): failed, keeping what it measured, for every reason there is to distrust it.
fn judge(key: RunKey, result: LoadResult, cpu: Vec<ProcCpu>, dead: Option<String>) -> Run {
    let calls_per_s = match result.duration_s > 0.0 {
        true => result.calls as f64 / result.duration_s,
        false => 0.0,
    };
    let first_error = result.first_error.as_deref().unwrap_or("none");
    let mut why = Vec::new();
    why.extend(dead);
    if result.calls == 0 {
        why.push(format!("no call answered; first error: {first_error}"));
    } else if result.errors > 0 {
        why.push(format!(
            "{} of {} calls failed in the measured window; first error: {first_error}",
            result.errors,
            result.calls + result.errors
        ));
    }
    if result.stalled {
        why.push("the load loop stalled and was cut off".to_owned());
    }
    Run {
        key,
        calls_per_s,
        cpu,
        error: (!why.is_empty()).then(|| why.join("; ")),
        result: Some(result),
    }
}

/// One load-generator window against `running`: the result and each process's CPU.
fn role_window(
    launcher: &Launcher,
    s: &Settings,
    caller: Caller,
    running: &mut Running,
    key: &RunKey,
) -> anyhow::Result<(LoadResult, Vec<ProcCpu>)> {
    let mut cmd = launcher.harness_command();
    cmd.envs(running.client_env.iter().map(|(k, v)| (k, v)));
    cmd.args(["--role", "load", "--system", &value_name(&caller)])
        .args(["--addr", &running.target])
        .arg("--concurrency")
        .arg(key.level.to_string())
        .arg("--conns")
        .arg(s.conns(key.level).to_string())
        .arg("--payload")
        .arg(key.payload.to_string())
        .arg("--warmup-ms")
        .arg(s.warmup_ms.to_string())
        .arg("--duration-ms")
        .arg(s.window_ms.to_string())
        .arg("--max-calls")
        .arg(MAX_CALLS.to_string());
    let mut load = Proc::spawn("load", Role::Load, cmd, &launcher.log("load"), true)?;
    let until = Instant::now() + Duration::from_millis(s.warmup_ms) + START_GRACE;
    loop {
        let line = load.next_line(until)?;
        if line == "START" {
            break;
        }
        if let Some(e) = line.strip_prefix("FAIL ") {
            bail!("load generator: {e}");
        }
    }
    let before = sample(&running.procs, &load)?;
    let until = Instant::now() + Duration::from_millis(s.window_ms) + RESULT_GRACE;
    let result: LoadResult = loop {
        let line = load.next_line(until)?;
        if let Some(json) = line.strip_prefix("RESULT ") {
            break serde_json::from_str(json)?;
        }
        if let Some(e) = line.strip_prefix("FAIL ") {
            bail!("load generator: {e}");
        }
    };
    let after = sample(&running.procs, &load)?;
    load.wait_exit(Duration::from_secs(2));
    Ok((result, cpu_delta(before, after)))
}

/// HTTP under wrk: a warm-up run of wrk (the warm-up rounded up to whole seconds), then the
/// measured run whose Lua `done` prints the summary and waits for a line on stdin.
fn wrk_window(
    launcher: &Launcher,
    s: &Settings,
    running: &mut Running,
    key: &RunKey,
) -> anyhow::Result<(LoadResult, Vec<ProcCpu>)> {
    let script = launcher.logs().join(format!("wrk-{}.lua", key.payload));
    std::fs::write(&script, wrk_script(key.payload))?;
    let wrk = |secs: u64| {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t1", "--latency", "--timeout", "10s"])
            .arg(format!("-c{}", key.level))
            .arg(format!("-d{secs}s"))
            .arg("-s")
            .arg(&script)
            .arg(&running.target);
        cmd
    };
    let warm_secs = s.warmup_ms.div_ceil(1000).max(1);
    let log = launcher.log("wrk");
    let mut warm = Proc::spawn("wrk-warmup", Role::Load, wrk(warm_secs), &log, false)?;
    if warm.wait_exit(Duration::from_secs(warm_secs + 15)) == "still running" {
        bail!("wrk warm-up did not finish; log: {}", warm.log_tail());
    }
    drop(warm);
    let secs = (s.window_ms / 1000).max(1);
    let mut cmd = wrk(secs);
    cmd.env("BENCH_HANDSHAKE", "1");
    let mut load = Proc::spawn("wrk", Role::Load, cmd, &log, true)?;
    let before = sample(&running.procs, &load)?;
    let until = Instant::now() + Duration::from_secs(secs) + WRK_GRACE;
    let line = loop {
        let line = load.next_line(until)?;
        if line.starts_with("WRK_RESULT ") {
            break line;
        }
    };
    let after = sample(&running.procs, &load)?;
    let _ = load.send_line("");
    load.wait_exit(Duration::from_secs(5));
    let field = |key: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("wrk summary without {key}: {line}"))
    };
    let errors = field("errors")? as u64;
    let status_errors = field("status_errors")? as u64;
    let result = LoadResult {
        calls: (field("requests")? as u64).saturating_sub(status_errors),
        errors,
        warmup_errors: 0,
        duration_s: field("duration_us")? / 1e6,
        p50_us: field("p50")?,
        p99_us: field("p99")?,
        p999_us: field("p999")?,
        first_error: (errors > 0).then(|| format!("wrk: {line}")),
        stalled: false,
    };
    Ok((result, cpu_delta(before, after)))
}

/// CPU seconds of every process of the system, and of the load generator, now.
fn sample(procs: &[Proc], load: &Proc) -> anyhow::Result<Vec<ProcCpu>> {
    procs
        .iter()
        .chain(std::iter::once(load))
        .map(|p| {
            Ok(ProcCpu {
                name: p.name.clone(),
                role: p.role,
                cpu_s: p
                    .cpu_seconds()
                    .with_context(|| format!("{} is gone", p.name))?,
            })
        })
        .collect()
}

/// The CPU each process used between two samples.
fn cpu_delta(before: Vec<ProcCpu>, after: Vec<ProcCpu>) -> Vec<ProcCpu> {
    after
        .into_iter()
        .zip(before)
        .map(|(a, b)| ProcCpu {
            cpu_s: (a.cpu_s - b.cpu_s).max(0.0),
            ..a
        })
        .collect()
}

/// The wrk script: POST the payload as msgpack (passed to the worker as is); `done` prints
/// one parseable summary line and, under BENCH_HANDSHAKE, waits for a line on stdin.
fn wrk_script(payload_len: usize) -> String {
    let body = String::from_utf8(payload(payload_len)).expect("ASCII payload");
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/msgpack"
wrk.body = "{body}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d errors=%d status_errors=%d duration_us=%d p50=%d p99=%d p999=%d\n",
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9)))
  io.flush()
  if os.getenv("BENCH_HANDSHAKE") then io.read("*l") end
end
"#
    )
}
