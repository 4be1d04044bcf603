//! The functions file of `nmid-faas`: top-level settings and one `[[function]]` table per
//! function, read into plain data and checked, so that a bad file is refused with a message
//! naming the function and the key before anything changes.
//!
//! `config/functions.toml` documents every key. Each value is read by hand from the TOML
//! table (rather than by serde) so that an error can always say which function and which key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::client::Protocol;

/// Largest functions file read, in bytes: a file is operator-written, this only stops a
/// wrong path (a log, a device) from being read whole.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Default of `concurrency`: calls of one function run at once.
pub const DEFAULT_CONCURRENCY: u32 = 8;
/// Highest `concurrency` accepted (a tagged dispatcher caps it further with
/// `workers.max_jobs_in_flight`).
pub const MAX_CONCURRENCY: u32 = 1024;
/// What a dispatcher grants a worker by default (its `workers.max_jobs_in_flight`): a
/// `concurrency` above it is capped there unless the dispatcher's key is raised.
pub const DISPATCHER_DEFAULT_SLOTS: u32 = 64;
/// Default of `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default of `max_output_bytes`: stdout or response body kept as the result.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// Highest `max_output_bytes` accepted (the dispatcher's default frame limit).
pub const MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;
/// Default of `max_error_bytes`: stderr tail or error body carried by an error.
pub const DEFAULT_MAX_ERROR_BYTES: u64 = 4096;
/// Default of `connect_timeout_ms` (http functions).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;
/// Default of `reload_interval_ms`.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 1000;
/// Default of `stop_timeout_ms`.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 30_000;
/// Default of `name`: each function's worker is named `<name>/<function>`.
pub const DEFAULT_NAME: &str = "nmid-faas";

const TOP_KEYS: &[&str] = &[
    "servers",
    "etcd",
    "token_file",
    "tls_ca_file",
    "tls_server_name",
    "tls_cert_file",
    "tls_key_file",
    "name",
    "protocol",
    "reload_interval_ms",
    "stop_timeout_ms",
    "metrics_addr",
    "function",
];
const FUNCTION_KEYS: &[&str] = &[
    "name",
    "command",
    "url",
    "concurrency",
    "timeout_ms",
    "max_output_bytes",
    "max_error_bytes",
    "env",
    "workdir",
    "connect_timeout_ms",
    "headers",
];
const EXEC_ONLY: &[&str] = &["command", "env", "workdir"];
const HTTP_ONLY: &[&str] = &["url", "connect_timeout_ms", "headers"];

/// Why a functions file was refused. Each message names the file, and the function and key
/// when there is one.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason (in the message, so not a source too).
        cause: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes; is it the functions file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not TOML; the message has the line and column.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A top-level key is wrong.
    #[error("{path}: key `{key}`: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A key of one function is wrong.
    #[error("{path}: function `{function}` ([[function]] number {number}): key `{key}`: {reason}")]
    Function {
        /// The file.
        path: PathBuf,
        /// The function's name (or `?` when the name itself is the problem).
        function: String,
        /// Its position in the file, from 1.
        number: usize,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A whole functions file, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FaasSpec {
    /// Dispatchers from `servers` (may be empty: the command line or the environment
    /// decide).
    pub servers: Vec<String>,
    /// etcd endpoints from `etcd`: serve every dispatcher registered there.
    pub etcd: Vec<String>,
    /// `token_file`: a file holding the secret of the token the workers present.
    pub token_file: Option<String>,
    /// `tls_*`: connect with TLS.
    pub tls: Option<crate::security::ClientTls>,
    /// Worker name prefix.
    pub name: String,
    /// Protocol spoken to the dispatchers.
    pub protocol: Protocol,
    /// How often the file is checked for changes.
    pub reload_interval: Duration,
    /// How long a removed function's calls in flight may take to finish, and the shutdown.
    pub stop_timeout: Duration,
    /// Where to serve this process's own `/metrics`, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The functions, in file order.
    pub functions: Vec<FunctionSpec>,
}

/// One function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The function name callers use.
    pub name: String,
    /// Calls run at once (the worker's slots).
    pub concurrency: u32,
    /// Longest run of one call.
    pub timeout: Duration,
    /// Largest result kept.
    pub max_output_bytes: usize,
    /// Largest stderr tail or error body carried by an error.
    pub max_error_bytes: usize,
    /// What runs a call.
    pub kind: FunctionKind,
}

/// What runs a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionKind {
    /// A command per call.
    Exec(ExecSpec),
    /// A POST to a local HTTP service per call.
    Http(HttpSpec),
}

/// An exec function: `command` runs once per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Working directory, else the runner's.
    pub workdir: Option<PathBuf>,
}

/// An http function: each call is POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Headers added to each request.
    pub headers: BTreeMap<String, String>,
}

impl FaasSpec {
    /// What is valid but likely not what was meant, one sentence each: a `concurrency` above
    /// what a dispatcher grants by default. `nmid-faas --check` prints them, and the
    /// process logs them when it applies the file.
    pub fn warnings(&self) -> Vec<String> {
        (self.functions.iter())
            .filter(|f| f.concurrency > DISPATCHER_DEFAULT_SLOTS)
            .map(|f| {
                format!(
                    "function `{}`: concurrency {} is more than a dispatcher grants a worker by default (its workers.max_jobs_in_flight, {DISPATCHER_DEFAULT_SLOTS}): unless the dispatchers raise that key, at most {DISPATCHER_DEFAULT_SLOTS} of its calls run at once per dispatcher",
                    f.name, f.concurrency
                )
            })
            .collect()
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        Self::parse(path, &Self::read(path)?)
    }

    /// The text of the file at `path`, refused when over [`MAX_FILE_BYTES`].
    pub fn read(path: &Path) -> Result<String, SpecError> {
        let read = |cause| SpecError::Read {
            path: path.to_owned(),
            cause,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_FILE_BYTES {
            return Err(SpecError::TooLarge {
                path: path.to_owned(),
            });
        }
        std::fs::read_to_string(path).map_err(read)
    }

    /// Checks `text`, the contents of `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, SpecError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| SpecError::Syntax {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        let top = Keys {
            table: &table,
            error: &|key: &str, reason: String| SpecError::Key {
                path: path.to_owned(),
                key: key.to_owned(),
                reason,
            },
        };
        top.only(TOP_KEYS)?;
        let protocol = match top.string("protocol")?.as_deref() {
            None | Some("tagged") => Protocol::Tagged,
            Some("v1") => Protocol::V1,
            Some(other) => {
                return Err(top.bad("protocol", format!("{other:?}: use \"tagged\" or \"v1\"")))
            }
        };
        let metrics_addr = match top.string("metrics_addr")? {
            None => None,
            Some(addr) if addr.is_empty() => None,
            Some(addr) => Some(addr.parse().map_err(|e| {
                top.bad("metrics_addr", format!("{addr:?}: {e}; expected HOST:PORT"))
            })?),
        };
        let servers = top.strings("servers")?.unwrap_or_default();
        if let Some(bad) = servers.iter().find(|s| !looks_like_host_port(s)) {
            return Err(top.bad("servers", format!("{bad:?} is not HOST:PORT")));
        }
        let token_file = top.string("token_file")?.filter(|f| !f.is_empty());
        let tls_key = |key: &str| top.string(key).map(Option::unwrap_or_default);
        let tls = crate::security::ClientTls {
            ca_file: tls_key("tls_ca_file")?,
            server_name: tls_key("tls_server_name")?,
            cert_file: tls_key("tls_cert_file")?,
            key_file: tls_key("tls_key_file")?,
        };
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return Err(top.bad(
                "tls_cert_file",
                "tls_cert_file and tls_key_file are set together or not at all".to_owned(),
            ));
        }
        let tls = (tls != crate::security::ClientTls::default()).then_some(tls);
        let etcd = top.strings("etcd")?.unwrap_or_default();
        for endpoint in &etcd {
            nmid_proto::discovery::check_endpoint(endpoint).map_err(|e| top.bad("etcd", e))?;
        }
        let name = top
            .string("name")?
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        if name.is_empty() {
            return Err(top.bad("name", "must not be empty".to_owned()));
        }
        let reload = top.millis("reload_interval_ms", DEFAULT_RELOAD_INTERVAL_MS, 100)?;
        let stop_timeout = top.millis("stop_timeout_ms", DEFAULT_STOP_TIMEOUT_MS, 1)?;
        let functions = match table.get("function") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| function(path, i + 1, item))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(top.bad(
                    "function",
                    "must be an array of tables: write each as [[function]]".to_owned(),
                ))
            }
        };
        for (i, f) in functions.iter().enumerate() {
            if functions[..i].iter().any(|g| g.name == f.name) {
                return Err(SpecError::Function {
                    path: path.to_owned(),
                    function: f.name.clone(),
                    number: i + 1,
                    key: "name".to_owned(),
                    reason: "defined twice".to_owned(),
                });
            }
        }
        Ok(Self {
            servers,
            etcd,
            token_file,
            tls,
            name,
            protocol,
            reload_interval: reload,
            stop_timeout,
            metrics_addr,
            functions,
        })
    }
}

/// Reads one `[[function]]` table.
fn function(path: &Path, number: usize, item: &Value) -> Result<FunctionSpec, SpecError> {
    let guessed_name = item
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("?")
        .to_owned();
    let error = |key: &str, reason: String| SpecError::Function {
        path: path.to_owned(),
        function: guessed_name.clone(),
        number,
        key: key.to_owned(),
        reason,
    };
    let Value::Table(table) = item else {
        return Err(error("function", "must be a table".to_owned()));
    };
    let keys = Keys {
        table,
        error: &error,
    };
    keys.only(FUNCTION_KEYS)?;
    let name = keys
        .string("name")?
        .ok_or_else(|| keys.bad("name", "missing: every function needs a name".to_owned()))?;
    if name.is_empty() || name.len() > 255 {
        return Err(keys.bad("name", "must be 1 to 255 bytes".to_owned()));
    }
    let kind = match (table.contains_key("command"), table.contains_key("url")) {
        (true, false) => {
            keys.none_of(HTTP_ONLY, "http functions (url)")?;
            FunctionKind::Exec(exec(&keys, &base_dir(path))?)
        }
        (false, true) => {
            keys.none_of(EXEC_ONLY, "exec functions (command)")?;
            FunctionKind::Http(http(&keys)?)
        }
        _ => {
            return Err(keys.bad(
                "command",
                "set exactly one of `command` (run a program per call) or `url` (POST to an HTTP service)"
                    .to_owned(),
            ))
        }
    };
    let concurrency = keys.integer("concurrency", u64::from(DEFAULT_CONCURRENCY))?;
    if !(1..=u64::from(MAX_CONCURRENCY)).contains(&concurrency) {
        return Err(keys.bad("concurrency", format!("must be 1 to {MAX_CONCURRENCY}")));
    }
    let max_output = keys.integer("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)?;
    if !(1..=MAX_OUTPUT_BYTES).contains(&max_output) {
        return Err(keys.bad(
            "max_output_bytes",
            format!("must be 1 to {MAX_OUTPUT_BYTES}"),
        ));
    }
    let max_error = keys.integer("max_error_bytes", DEFAULT_MAX_ERROR_BYTES)?;
    if !(1..=MAX_OUTPUT_BYTES).contains(&max_error) {
        return Err(keys.bad(
            "max_error_bytes",
            format!("must be 1 to {MAX_OUTPUT_BYTES}"),
        ));
    }
    Ok(FunctionSpec {
        name,
        concurrency: concurrency as u32,
        timeout: keys.millis("timeout_ms", DEFAULT_TIMEOUT_MS, 1)?,
        max_output_bytes: max_output as usize,
        max_error_bytes: max_error as usize,
        kind,
    })
}

/// The directory of the functions file at `path`, absolute: relative paths of the file
/// (`workdir`, a program) resolve against it, whatever nmid-faas's working directory.
fn base_dir(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    (absolute.parent()).map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

/// An `exec` function's keys; `base` is the functions file's directory: a relative
/// `workdir` is under it, and a missing one is it (so `command = ["python3", "greet.py"]`
/// finds `greet.py` beside the file); a relative program path (`./run.sh`) is made absolute
/// under the `workdir`.
fn exec(keys: &Keys<'_>, base: &Path) -> Result<ExecSpec, SpecError> {
    let mut command = keys.strings("command")?.unwrap_or_default();
    let Some(program) = command.first().cloned() else {
        return Err(keys.bad(
            "command",
            "must name a program: [\"prog\", \"arg\", ...]".to_owned(),
        ));
    };
    let env = keys.string_map("env")?;
    if let Some(bad) = env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(keys.bad("env", format!("{bad:?} is not a variable name")));
    }
    let workdir = match keys.string("workdir")? {
        Some(dir) => base.join(dir),
        None => base.to_owned(),
    };
    if !workdir.is_dir() {
        return Err(keys.bad(
            "workdir",
            format!("{} is not a directory", workdir.display()),
        ));
    }
    let path_var = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    if program.contains('/') && Path::new(&program).is_relative() {
        command[0] = workdir.join(&program).display().to_string();
    }
    if !program_exists(&command[0], &path_var) {
        return Err(keys.bad(
            "command",
            format!(
                "program {program:?} not found (or not executable) in PATH or {}",
                workdir.display()
            ),
        ));
    }
    Ok(ExecSpec {
        command,
        env,
        workdir: Some(workdir),
    })
}

fn http(keys: &Keys<'_>) -> Result<HttpSpec, SpecError> {
    let url = keys.string("url")?.unwrap_or_default();
    let parsed = reqwest::Url::parse(&url).map_err(|e| keys.bad("url", format!("{url:?}: {e}")))?;
    if parsed.scheme() != "http" || parsed.host_str().is_none() {
        return Err(keys.bad(
            "url",
            format!("{url:?}: must be http://HOST[:PORT]/PATH (the sidecar calls a local service; no TLS)"),
        ));
    }
    let headers = keys.string_map("headers")?;
    for (name, value) in &headers {
        let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && reqwest::header::HeaderValue::from_str(value).is_ok();
        if !valid {
            return Err(keys.bad("headers", format!("{name:?}: not a valid header")));
        }
    }
    Ok(HttpSpec {
        url,
        connect_timeout: keys.millis("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS, 1)?,
        headers,
    })
}

/// Typed reads from one table; every error names the key.
struct Keys<'a> {
    table: &'a Table,
    error: &'a dyn Fn(&str, String) -> SpecError,
}

impl Keys<'_> {
    fn bad(&self, key: &str, reason: String) -> SpecError {
        (self.error)(key, reason)
    }

    fn only(&self, known: &[&str]) -> Result<(), SpecError> {
        match self.table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(self.bad(key, format!("unknown key (known: {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    fn none_of(&self, keys: &[&str], applies_to: &str) -> Result<(), SpecError> {
        match keys.iter().find(|k| self.table.contains_key(**k)) {
            Some(key) => Err(self.bad(key, format!("applies to {applies_to} only"))),
            None => Ok(()),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, SpecError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.bad(key, format!("must be a string, not {}", other.type_str())))
            }
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, SpecError> {
        let Some(value) = self.table.get(key) else {
            return Ok(None);
        };
        let wrong = || self.bad(key, "must be an array of strings".to_owned());
        let Value::Array(items) = value else {
            return Err(wrong());
        };
        items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, SpecError> {
        let Some(value) = self.table.get(key) else {
            return Ok(BTreeMap::new());
        };
        let wrong = || {
            self.bad(
                key,
                "must be a table of strings, e.g. { NAME = \"value\" }".to_owned(),
            )
        };
        let Value::Table(items) = value else {
            return Err(wrong());
        };
        items
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(wrong)?.to_owned())))
            .collect()
    }

    fn integer(&self, key: &str, default: u64) -> Result<u64, SpecError> {
        match self.table.get(key) {
            None => Ok(default),
            Some(Value::Integer(n)) if *n >= 0 => Ok(*n as u64),
            Some(Value::Integer(_)) => Err(self.bad(key, "must not be negative".to_owned())),
            Some(other) => {
                Err(self.bad(key, format!("must be an integer, not {}", other.type_str())))
            }
        }
    }

    fn millis(&self, key: &str, default: u64, min: u64) -> Result<Duration, SpecError> {
        let ms = self.integer(key, default)?;
        if ms < min || ms > u64::from(u32::MAX) {
            return Err(self.bad(key, format!("must be {min} to {} ms", u32::MAX)));
        }
        Ok(Duration::from_millis(ms))
    }
}

fn looks_like_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Whether `program` can be run: a path to an executable file, or a name found in
/// `path_var`.
fn program_exists(program: &str, path_var: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::split_paths(path_var).any(|dir| executable(&dir.join(program)))
}

#[cfg(test)]
mod tests;
