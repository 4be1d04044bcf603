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
//! the group (`setsid`) is found and killed by [`super::orphans`] at once: a call leaves
//! nothing behind, and such a process, should it hold the call's stdout open, neither delays
//! nor loses the output. The same happens when the call is cancelled.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
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
    ///
    /// The pipes are read here, in this future, not in tasks of their own: when the call
    /// ends (done, timed out, or dropped unfinished because its dispatcher connection was
    /// lost), nothing of it is left reading, and its process group is killed and the
    /// processes that escaped it are swept at once (`ProcessGroup::finish`).
    pub async fn run(&self, call: Call<'_>) -> Result<RetStruct, JobError> {
        let (input, format) = call.input();
        let timeout = call.time_limit(self.spec.timeout);
        let mut child = self.spawn(&call, format)?;
        let mut group = ProcessGroup::of(&child);
        let (mut output, mut errors) = (Vec::new(), Vec::new());
        let ended = {
            let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
            let io = exchange(
                pipes,
                input,
                (&mut output, self.spec.max_output_bytes),
                (&mut errors, self.spec.max_error_bytes),
            );
            tokio::pin!(io);
            let mut read_all = false;
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ended = loop {
                tokio::select! {
                    status = child.wait() => break Ended::Exited(status),
                    read = &mut io, if !read_all => match read {
                        Ok(()) => read_all = true,
                        Err(TooLarge) => break Ended::TooLarge,
                    },
                    () = &mut deadline => break Ended::TimedOut,
                }
            };
            // Whatever the command left running goes with it: its group (on a timeout or
            // too much output, the command itself), and what escaped the group.
            group.finish();
            if let (Ended::Exited(Ok(_)), false) = (&ended, read_all) {
                // The pipes still hold what the command wrote before it exited; they close
                // once the killed processes that shared them are gone.
                if let Ok(Err(TooLarge)) = tokio::time::timeout(REAP_PATIENCE, &mut io).await {
                    ended = Ended::TooLarge;
                }
            }
            ended
        };
        let status = match ended {
            Ended::Exited(Ok(status)) => status,
            Ended::Exited(Err(err)) => {
                return Err(JobError::new(format!("cannot wait for the command: {err}")))
            }
            Ended::TooLarge => {
                let _ = tokio::time::timeout(REAP_PATIENCE, child.wait()).await;
                return Err(JobError::new(format!(
                    "output larger than max_output_bytes ({}); the command was killed",
                    self.spec.max_output_bytes
                )));
            }
            Ended::TimedOut => {
                let _ = tokio::time::timeout(REAP_PATIENCE, child.wait()).await;
                return Err(JobError::new(format!(
                    "timed out after {} ms; the command's process group was killed",
                    timeout.as_millis()
                )));
            }
        };
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

/// How a call's command ended.
enum Ended {
    /// It exited (or could not be waited for).
    Exited(std::io::Result<ExitStatus>),
    /// Its output passed `max_output_bytes`.
    TooLarge,
    /// Its time ran out.
    TimedOut,
}

/// A command's stdin, stdout and stderr.
type Pipes = (Option<ChildStdin>, Option<ChildStdout>, Option<ChildStderr>);

/// The command wrote more than `max_output_bytes` to its stdout.
struct TooLarge;

/// Writes `input` to the command's stdin while reading its stdout (at most `max` bytes) and
/// the tail of its stderr; done when both reach their end, or at once when the output is
/// too large. The stdin pipe closes when all is written (or the command stops reading it),
/// and a command that does not read it is fine.
async fn exchange(
    (stdin, stdout, stderr): Pipes,
    input: Bytes,
    (output, max_output): (&mut Vec<u8>, usize),
    (errors, max_errors): (&mut Vec<u8>, usize),
) -> Result<(), TooLarge> {
    let write = async move {
        if let Some(mut pipe) = stdin {
            // A broken pipe (the command does not read its stdin) is ignored.
            let _ = pipe.write_all(&input).await;
        }
    };
    let read = async move {
        let errors = async move {
            if let Some(pipe) = stderr {
                read_tail(pipe, max_errors, errors).await;
            }
            Ok(())
        };
        let output = async move {
            match stdout {
                Some(pipe) => read_bounded(pipe, max_output, output).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(output, errors).map(|_| ())
    };
    tokio::pin!(read);
    tokio::select! {
        read = &mut read => read,
        () = write => read.await,
    }
}

/// A process group to kill: the group of a child started with `process_group(0)`,
/// registered as a running call's until the call finishes.
#[derive(Debug)]
struct ProcessGroup {
    pgid: Option<libc::pid_t>,
    /// Dropped after the group is killed: then the orphans it left are swept.
    registered: Option<super::orphans::Registered>,
}

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        let pgid = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
        Self {
            pgid,
            registered: pgid.map(super::orphans::Registered::new),
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

    /// The call is over: kills the group, and sweeps the processes that escaped it (no
    /// longer a running call's group).
    fn finish(&mut self) {
        self.kill();
        self.registered = None;
    }
}

impl Drop for ProcessGroup {
    /// A call dropped unfinished: kills the group, then (dropping the registration) sweeps.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `pipe` to its end into `out`, keeping at most `max` bytes: past that, the read
/// stops with `TooLarge`.
async fn read_bounded(
    mut pipe: impl AsyncRead + Unpin,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), TooLarge> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        if out.len() + n > max {
            return Err(TooLarge);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads `pipe` to its end into `tail`, keeping only its last `max` bytes.
async fn read_tail(mut pipe: impl AsyncRead + Unpin, max: usize, tail: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > max {
            tail.drain(..tail.len() - max);
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
        let mut tail = Vec::new();
        read_tail(&text[..], 10, &mut tail).await;
        assert_eq!(tail, (90..100u8).collect::<Vec<_>>());
        let mut tail = Vec::new();
        read_tail(&b"short"[..], 10, &mut tail).await;
        assert_eq!(tail, b"short");
    }
}
