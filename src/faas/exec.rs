//! Exec functions: one process per call, in the style of OpenFaaS's classic watchdog. The
//! call's params go to stdin, stdout becomes the result, a non-zero exit is the function's
//! error (its code and the tail of stderr), and the deadline kills the whole process group.
//!
//! The program's environment is nmid-faas's without its secrets ([`SCRUBBED_ENV`]; nor can
//! it read them in nmid-faas's `/proc` files, [`hide_own_proc_files`]), plus
//! the function's `env`, plus what the call brings: `NMID_FUNCTION`, `NMID_JOB_ID`,
//! `NMID_PARAMS_FORMAT`, and from an HTTP caller what an http function gets as headers and
//! URL: `NMID_REQUEST_ID`, `NMID_QUERY` (its query string), `NMID_HEADER_<NAME>` for each
//! forwarded header (`http.forward_headers`), `NMID_CONTENT_TYPE` for a raw body.
//!
//! Each process starts in a process group of its own (its PID is the group's ID), so that a
//! kill reaches whatever it started too: a shell's children, a pipeline. When the process
//! exits, anything it left running in its group is killed as well, and a process that left
//! the group (`setsid`) is found and killed by [`super::orphans`]: a call leaves nothing
//! behind.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::params::{Call, ParamsFormat};
use super::spec::{ExecSpec, FunctionSpec};
use crate::retstruct::RetStruct;
use crate::worker::JobError;

/// The environment nmid-faas holds its own secrets in, which its functions' programs do not
/// inherit: the worker token, the OTLP exporter's headers (API keys), and systemd's
/// credentials directory. A function's own `env` may still set them.
pub const SCRUBBED_ENV: [&str; 4] = [
    "NMID_TOKEN",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "CREDENTIALS_DIRECTORY",
];

/// Makes nmid-faas non-dumpable (Linux's `PR_SET_DUMPABLE` 0): its `/proc/<pid>` files
/// (`environ`, `mem`, ...) become root's, so a function running as nmid-faas's own user
/// cannot read the secrets [`SCRUBBED_ENV`] keeps out of its environment through
/// `/proc/$PPID/environ`, nor ptrace it. A function running as root (`CAP_SYS_PTRACE`) still
/// can: functions should run as another user than nmid-faas's for real isolation. Also
/// means no core dump. Logs when it cannot.
pub fn hide_own_proc_files() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes integers and touches no memory.
    let set = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if set != 0 {
        let cause = std::io::Error::last_os_error();
        warn!(%cause, "cannot make nmid-faas non-dumpable: functions running as its user can read its secrets in /proc");
    }
}

/// How long a killed process may take to be reaped before the call gives up on it.
const REAP_PATIENCE: Duration = Duration::from_secs(5);
/// The `Code` of a process killed by a signal it did not get from us: 128 + the signal, as
/// shells report it.
const SIGNAL_CODE_BASE: i64 = 128;

/// One exec function, ready to run calls.
#[derive(Debug)]
pub struct ExecFunction {
    spec: FunctionSpec,
    exec: ExecSpec,
}

impl ExecFunction {
    /// An exec function of `spec` (whose kind is `exec`).
    pub fn new(spec: FunctionSpec, exec: ExecSpec) -> Self {
        Self { spec, exec }
    }

    /// Runs the command once for `call`: the RetStruct of its output, or why it failed.
    pub async fn run(&self, call: Call<'_>) -> Result<RetStruct, JobError> {
        let (stdin, format) = call.input();
        let timeout = call.time_limit(self.spec.timeout);
        let mut child = self.spawn(&call, format)?;
        let group = Arc::new(ProcessGroup::of(&child));
        // The reader tasks hold the group until its pipes close: should this call be dropped
        // unfinished (its dispatcher connection lost), the group is killed here, at once.
        let _cancelled = KillOnDrop(group.clone());
        let input = child.stdin.take().map(|mut pipe| {
            tokio::spawn(async move {
                // A command that does not read its stdin is fine: the broken pipe is ignored.
                let _ = pipe.write_all(&stdin).await;
            })
        });
        let stdout = child.stdout.take().map(|pipe| {
            let group = group.clone();
            let max = self.spec.max_output_bytes;
            tokio::spawn(async move { read_bounded(pipe, max, &group).await })
        });
        let stderr = child.stderr.take().map(|pipe| {
            let max = self.spec.max_error_bytes;
            tokio::spawn(async move { read_tail(pipe, max).await })
        });
        let exited = tokio::time::timeout(timeout, child.wait()).await;
        // Whatever the command left running in its group goes with it (and on a timeout,
        // the command itself).
        group.kill();
        let status = match exited {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => {
                return Err(JobError::new(format!("cannot wait for the command: {err}")))
            }
            Err(_) => {
                let _ = tokio::time::timeout(REAP_PATIENCE, child.wait()).await;
                abort(input);
                stdout.inspect(JoinHandle::abort);
                stderr.inspect(JoinHandle::abort);
                return Err(JobError::new(format!(
                    "timed out after {} ms; the command's process group was killed",
                    timeout.as_millis()
                )));
            }
        };
        abort(input);
        let output = joined(stdout).await.unwrap_or(Ok(Vec::new()));
        let errors = joined(stderr).await.unwrap_or_default();
        let output = output.map_err(|_| {
            JobError::new(format!(
                "output larger than max_output_bytes ({}); the command was killed",
                self.spec.max_output_bytes
            ))
        })?;
        Ok(result_of(status, output, &errors))
    }

    fn spawn(&self, call: &Call<'_>, format: ParamsFormat) -> Result<Child, JobError> {
        let program = &self.exec.command[0];
        let mut command = Command::new(program);
        for secret in SCRUBBED_ENV {
            command.env_remove(secret);
        }
        command
            .args(&self.exec.command[1..])
            .envs(&self.exec.env)
            .env("NMID_FUNCTION", call.function)
            .env("NMID_JOB_ID", call.job_id)
            .env("NMID_PARAMS_FORMAT", format.as_str())
            .envs(call.trace.iter().map(|(k, v)| (k.to_uppercase(), v)))
            .envs(call.request_id.map(|id| ("NMID_REQUEST_ID", id)))
            .envs(call.content_type.map(|t| ("NMID_CONTENT_TYPE", t)))
            .envs(call.query.map(|query| ("NMID_QUERY", query)))
            .envs(header_env(&call.headers))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Should this future be dropped (the worker stopped), the group is still killed
            // by `ProcessGroup`'s drop; this reaps the leader.
            .kill_on_drop(true);
        if let Some(dir) = &self.exec.workdir {
            command.current_dir(dir);
        }
        command
            .spawn()
            .map_err(|err| JobError::new(format!("cannot start {program:?}: {err}")))
    }
}

/// The forwarded request headers as environment variables, as an http function gets them:
/// `Accept-Language` is `NMID_HEADER_ACCEPT_LANGUAGE` (upper case, every character but
/// letters and digits `_`); a header sent several times is its values joined by `, `.
fn header_env(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name: String = (name.chars())
            .map(|c| match c.is_ascii_alphanumeric() {
                true => c.to_ascii_uppercase(),
                false => '_',
            })
            .collect();
        let name = format!("{HEADER_ENV_PREFIX}{name}");
        match env.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, values)) => {
                values.push_str(", ");
                values.push_str(value);
            }
            None => env.push((name, (*value).to_owned())),
        }
    }
    env
}

/// The prefix of a forwarded header's environment variable.
pub const HEADER_ENV_PREFIX: &str = "NMID_HEADER_";

/// The RetStruct of a finished process: its stdout on exit 0, else its exit code (or 128 +
/// the signal that killed it) and the tail of its stderr.
fn result_of(status: ExitStatus, output: Vec<u8>, errors: &[u8]) -> RetStruct {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return RetStruct::ok(output);
    }
    let stderr = String::from_utf8_lossy(errors);
    let stderr = stderr.trim();
    let (code, how) = match (status.code(), status.signal()) {
        (Some(code), _) => (i64::from(code), format!("exit status {code}")),
        (None, Some(signal)) => (
            SIGNAL_CODE_BASE + i64::from(signal),
            format!("killed by signal {signal}"),
        ),
        (None, None) => (1, "failed".to_owned()),
    };
    let msg = if stderr.is_empty() {
        how
    } else {
        format!("{how}: {stderr}")
    };
    let mut ret = RetStruct::error(code, msg);
    ret.data = Bytes::from(output);
    ret
}

/// A process group to kill: the group of a child started with `process_group(0)`,
/// registered as a running call's while this lives.
#[derive(Debug)]
struct ProcessGroup {
    pgid: Option<libc::pid_t>,
    /// Dropped after the group is killed: then the orphans it left are swept.
    _registered: Option<super::orphans::Registered>,
}

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        let pgid = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
        Self {
            pgid,
            _registered: pgid.map(super::orphans::Registered::new),
        }
    }

    /// SIGKILL to every process of the group; nothing when the group is already gone.
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg takes plain integers and touches no memory of ours. The group's
            // ID cannot name another group while any member of ours is alive (Linux does not
            // reuse a PID that is still a process group's ID).
            let killed = unsafe { libc::killpg(pgid, libc::SIGKILL) };
            if killed == 0 {
                debug!(pgid, "process group killed");
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills its process group when dropped.
struct KillOnDrop(Arc<ProcessGroup>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// Reads `pipe` to its end, keeping at most `max` bytes; past that the group is killed and
/// the read fails.
async fn read_bounded(
    mut pipe: impl AsyncRead + Unpin,
    max: usize,
    group: &ProcessGroup,
) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            group.kill();
            return Err(());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads `pipe` to its end, keeping only its last `max` bytes.
async fn read_tail(mut pipe: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return tail;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > max {
            tail.drain(..tail.len() - max);
        }
    }
}

fn abort(task: Option<JoinHandle<()>>) {
    if let Some(task) = task {
        task.abort();
    }
}

/// The result of a reader task, waited for at most [`REAP_PATIENCE`]: the pipes close once
/// the group is dead, so a reader still open after that is abandoned.
async fn joined<T>(task: Option<JoinHandle<T>>) -> Option<T> {
    let task = task?;
    let stop = task.abort_handle();
    match tokio::time::timeout(REAP_PATIENCE, task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(_)) => None,
        Err(_) => {
            stop.abort();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// Exit 0 is the output as `Data`; a non-zero exit carries its code, stderr and output;
    /// a signal is 128 + its number.
    #[test]
    fn exit_statuses_become_retstructs() {
        let ok = result_of(ExitStatus::from_raw(0), b"out".to_vec(), b"noise");
        assert_eq!(ok, RetStruct::ok("out"));
        let failed = result_of(
            ExitStatus::from_raw(3 << 8),
            b"partial".to_vec(),
            b"bad input\n",
        );
        assert_eq!(
            (failed.code, failed.msg.as_str()),
            (3, "exit status 3: bad input")
        );
        assert_eq!(&failed.data[..], b"partial");
        let killed = result_of(ExitStatus::from_raw(9), Vec::new(), b"");
        assert_eq!(
            (killed.code, killed.msg.as_str()),
            (137, "killed by signal 9")
        );
    }

    /// Header names become variable names; a repeated header's values are joined.
    #[test]
    fn forwarded_headers_become_environment_variables() {
        let headers = [
            ("accept-language", "fr"),
            ("x-b3.id", "1"),
            ("x-b3.id", "2"),
        ];
        assert_eq!(
            header_env(&headers),
            [
                ("NMID_HEADER_ACCEPT_LANGUAGE".to_owned(), "fr".to_owned()),
                ("NMID_HEADER_X_B3_ID".to_owned(), "1, 2".to_owned()),
            ]
        );
    }

    /// The stderr reader keeps only the tail.
    #[actix_rt::test]
    async fn stderr_keeps_its_tail() {
        let text: Vec<u8> = (0..100u8).collect();
        assert_eq!(
            read_tail(&text[..], 10).await,
            (90..100u8).collect::<Vec<_>>()
        );
        assert_eq!(read_tail(&b"short"[..], 10).await, b"short");
    }
}
