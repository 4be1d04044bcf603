//! The functions being served, and how a new version of the file is applied to them without
//! a restart and without losing a call in flight.
//!
//! Each function is a worker of its own (named `<name>/<function>`, one connection per
//! dispatcher), because a worker's slots are per connection: that is what lets each
//! function's `concurrency` be the slots the dispatcher honours. Applying a file:
//! - a new function starts its worker;
//! - a removed function's worker stops gracefully in the background (`W_DEL_FUNC`, then the
//!   dispatcher's seal, then its calls in flight finish);
//! - a changed function gets a new handler (`WorkerHandle::add_function` under its name):
//!   calls already running finish with the old definition, new calls get the new one; a
//!   changed `concurrency` is sent as the worker's new slots (`W_SLOTS`), no reconnect;
//! - changed dispatchers (`servers`, `etcd`), `name` or `protocol` restart every function's
//!   worker: the new one first, then the old one stops gracefully.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::exec::ExecFunction;
use super::http::HttpFunction;
use super::params::Call;
use super::spec::{FaasSpec, FunctionKind, FunctionSpec};
use crate::client::Protocol;
use crate::retstruct::RetStruct;
use crate::worker::{
    Job, JobError, LinkLog, Readiness, Worker, WorkerError, WorkerHandle, WorkerMetrics,
};

/// What the last [`Runner::apply`] changed, by function name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Functions now served that were not.
    pub added: Vec<String>,
    /// Functions whose definition changed.
    pub changed: Vec<String>,
    /// Functions no longer served.
    pub removed: Vec<String>,
}

/// Settings every function's worker shares; a change restarts them all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shared {
    dispatchers: Dispatchers,
    credentials: Credentials,
    name: String,
    protocol: Protocol,
}

/// What each function's worker presents to the dispatchers: a token's secret, and TLS.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The secret of a token with the worker role (`None`: `NMID_TOKEN` if set).
    pub token: Option<String>,
    /// TLS, with whom to trust.
    pub tls: Option<crate::security::ClientTls>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// What runs a function's calls now: its backend and the local bound on calls at once.
struct Active {
    backend: Backend,
    /// With several dispatchers each may send `concurrency` calls; this keeps the total.
    permits: Semaphore,
}

enum Backend {
    Exec(ExecFunction),
    Http(HttpFunction),
}

/// One function being served.
struct Served {
    spec: FunctionSpec,
    worker: WorkerHandle,
}

/// Every function served, by name.
pub struct Runner {
    shared: Option<Shared>,
    stop_timeout: Duration,
    metrics: Option<WorkerMetrics>,
    functions: BTreeMap<String, Served>,
    stopping: Vec<actix_rt::task::JoinHandle<()>>,
    health: Arc<Health>,
    /// One connection log for every function's worker: a dispatcher's outage is one line.
    link_log: LinkLog,
}

/// What nmid-faas's `/readyz` (and `/healthz`) say, readable from the metrics server's
/// thread: ready when every function served is registered with a dispatcher and the
/// process is not stopping.
#[derive(Default)]
pub struct Health {
    functions: std::sync::Mutex<BTreeMap<String, Readiness>>,
    stopping: std::sync::atomic::AtomicBool,
}

impl Health {
    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("stopping".to_owned());
        }
        let functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if functions.is_empty() {
            return Err("no function served".to_owned());
        }
        let waiting: Vec<&str> = (functions.iter())
            .filter(|(_, ready)| ready().is_err())
            .map(|(name, _)| name.as_str())
            .collect();
        match waiting.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "not registered with a dispatcher: {}",
                waiting.join(", ")
            )),
        }
    }

    /// As a worker [`Readiness`], for the metrics server.
    pub fn readiness(self: &Arc<Self>) -> Readiness {
        let health = self.clone();
        Arc::new(move || health.check())
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("shared", &self.shared)
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Runner {
    /// Serves nothing yet; `metrics`, when given, counts every function's jobs; `health`
    /// follows the functions served.
    pub fn new(metrics: Option<WorkerMetrics>, health: Arc<Health>) -> Self {
        Self {
            shared: None,
            stop_timeout: Duration::from_secs(30),
            metrics,
            functions: BTreeMap::new(),
            stopping: Vec::new(),
            health,
            link_log: LinkLog::new(),
        }
    }

    /// Tells `health` which functions are served now.
    fn publish_health(&self) {
        let served = (self.functions.iter())
            .map(|(name, served)| (name.clone(), served.worker.readiness()))
            .collect();
        *self
            .health
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = served;
    }

    /// The names of the functions served.
    pub fn names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    /// Serves what `spec` lists, on `dispatchers`, with `credentials`. Everything that can
    /// fail is checked before anything changes: on an error the functions served stay as
    /// they were.
    pub fn apply(
        &mut self,
        spec: &FaasSpec,
        dispatchers: Dispatchers,
        credentials: Credentials,
    ) -> Result<Applied, JobError> {
        if let Some(tls) = &credentials.tls {
            tls.connector()
                .map_err(|e| JobError::new(format!("TLS: {e}")))?;
        }
        let shared = Shared {
            dispatchers,
            credentials,
            name: spec.name.clone(),
            protocol: spec.protocol,
        };
        let restart_all = self.shared.as_ref().is_some_and(|s| *s != shared);
        let mut prepared = Vec::new();
        for function in &spec.functions {
            let unchanged = self
                .functions
                .get(&function.name)
                .is_some_and(|served| served.spec == *function);
            if unchanged && !restart_all {
                continue;
            }
            prepared.push((function.clone(), Arc::new(Active::new(function)?)));
        }
        self.stop_timeout = spec.stop_timeout;
        let mut applied = Applied::default();
        for (function, active) in prepared {
            let name = function.name.clone();
            match self.functions.get_mut(&name) {
                Some(served) if !restart_all => {
                    if served.spec.concurrency != function.concurrency {
                        served.worker.set_slots(function.concurrency);
                    }
                    // Calls running keep the handler they started with.
                    (served.worker)
                        .add_function(function.name.clone(), active.handler())
                        .map_err(JobError::new)?;
                    served.spec = function;
                    applied.changed.push(name);
                }
                _ => {
                    let served = self
                        .start(&shared, function, active)
                        .map_err(JobError::new)?;
                    if let Some(old) = self.functions.insert(name.clone(), served) {
                        self.stop_later(old);
                        applied.changed.push(name);
                    } else {
                        applied.added.push(name);
                    }
                }
            }
        }
        let gone: Vec<String> = (self.functions.keys())
            .filter(|name| !spec.functions.iter().any(|f| &f.name == *name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.functions.remove(&name) {
                self.stop_later(old);
            }
            applied.removed.push(name);
        }
        self.shared = Some(shared);
        self.stopping.retain(|task| !task.is_finished());
        self.publish_health();
        Ok(applied)
    }

    /// Stops every function gracefully (their calls in flight finish, bounded by
    /// `stop_timeout_ms`), and waits for the ones already stopping.
    pub async fn shutdown(mut self) {
        (self.health.stopping).store(true, std::sync::atomic::Ordering::Relaxed);
        let names = self.names();
        for name in names {
            if let Some(served) = self.functions.remove(&name) {
                self.stop_later(served);
            }
        }
        for task in self.stopping.drain(..) {
            let _ = task.await;
        }
    }

    fn start(
        &self,
        shared: &Shared,
        spec: FunctionSpec,
        active: Arc<Active>,
    ) -> Result<Served, WorkerError> {
        let mut builder = Worker::builder()
            .name(format!("{}/{}", shared.name, spec.name))
            .slots(spec.concurrency)
            .protocol(shared.protocol)
            .stop_timeout(self.stop_timeout)
            .link_log(self.link_log.clone())
            .function(spec.name.clone(), active.handler());
        if let Some(token) = &shared.credentials.token {
            builder = builder.token(token.clone());
        }
        if let Some(tls) = &shared.credentials.tls {
            builder = builder.tls(tls.clone());
        }
        if let Some(metrics) = &self.metrics {
            builder = builder.metrics(metrics.clone());
        }
        for server in &shared.dispatchers.servers {
            builder = builder.server(server.clone());
        }
        if !shared.dispatchers.etcd.is_empty() {
            builder = builder.discover(shared.dispatchers.etcd.clone());
        }
        let worker = builder.start()?;
        info!(function = %spec.name, concurrency = spec.concurrency, "function served");
        Ok(Served { spec, worker })
    }

    fn stop_later(&mut self, served: Served) {
        let name = served.spec.name;
        let worker = served.worker;
        self.stopping.push(actix_rt::spawn(async move {
            worker.stop().await;
            info!(function = %name, "function no longer served");
        }));
    }
}

impl Active {
    /// The worker's handler of this definition: each call holds the definition it started
    /// with, whatever a reload does.
    fn handler(
        self: &Arc<Self>,
    ) -> impl Fn(Job) -> LocalBoxFuture<'static, Result<RetStruct, JobError>> + Send + Sync + 'static
    {
        let active = self.clone();
        move |job: Job| {
            let active = active.clone();
            Box::pin(async move { active.call(job).await })
        }
    }

    fn new(spec: &FunctionSpec) -> Result<Self, JobError> {
        let backend = match &spec.kind {
            FunctionKind::Exec(exec) => {
                Backend::Exec(ExecFunction::new(spec.clone(), exec.clone()))
            }
            FunctionKind::Http(http) => Backend::Http(HttpFunction::new(spec.clone(), http)?),
        };
        Ok(Self {
            backend,
            permits: Semaphore::new(spec.concurrency as usize),
        })
    }

    async fn call(&self, job: Job) -> Result<RetStruct, JobError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| JobError::new("function is being removed"))?;
        if job.deadline().is_some_and(|d| d <= Instant::now()) {
            warn!(
                function = job.function(),
                "deadline passed while waiting for a slot"
            );
            return Err(JobError::new(
                "deadline passed while waiting for a free slot",
            ));
        }
        let meta = (job.all_metadata().iter()).filter_map(|(key, value)| {
            Some((
                std::str::from_utf8(key).ok()?,
                std::str::from_utf8(value).ok()?,
            ))
        });
        let call = Call {
            function: job.function(),
            job_id: job.id(),
            params: job.params(),
            json: job.params_type() == crate::codec::ParamsType::JSON,
            deadline: job.deadline(),
            trace: Vec::new(),
            request_id: None,
            query: None,
            headers: Vec::new(),
            content_type: None,
        }
        .with_metadata(meta);
        match &self.backend {
            Backend::Exec(exec) => exec.run(call).await,
            Backend::Http(http) => http.run(call).await,
        }
    }
}

/// Where a function's worker finds its dispatchers: addresses, etcd endpoints (every
/// dispatcher registered there, followed as they come and go), or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dispatchers {
    /// `HOST:PORT` of dispatchers.
    pub servers: Vec<String>,
    /// etcd endpoints (`http://host:2379`).
    pub etcd: Vec<String>,
}

impl Dispatchers {
    /// Named nowhere.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.etcd.is_empty()
    }

    /// From `NMID_ADDR` and `NMID_ETCD` (each comma-separated).
    pub fn from_env(addr: Option<&str>, etcd: Option<&str>) -> Self {
        Self {
            servers: split_list(addr.unwrap_or_default()),
            etcd: split_list(etcd.unwrap_or_default()),
        }
    }
}

/// `a, b,c` as `[a, b, c]`, blanks dropped.
pub fn split_list(text: &str) -> Vec<String> {
    (text.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The dispatchers to serve, from the first place that names any: the command line
/// (`--server`, `--etcd`), else the file (`servers`, `etcd`), else the environment
/// (`NMID_ADDR`, `NMID_ETCD`), else `127.0.0.1:6808`.
pub fn resolve_dispatchers(
    flags: &Dispatchers,
    file: &Dispatchers,
    env: &Dispatchers,
) -> Dispatchers {
    [flags, file, env]
        .into_iter()
        .find(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| Dispatchers {
            servers: vec![DEFAULT_SERVER.to_owned()],
            etcd: Vec::new(),
        })
}

/// The dispatcher served when nothing names one.
pub const DEFAULT_SERVER: &str = "127.0.0.1:6808";

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags win over the file, the file over the environment, which wins over the default;
    /// addresses and etcd endpoints at one level go together.
    #[test]
    fn dispatchers_come_from_flags_then_file_then_environment() {
        let servers = |s: &[&str]| Dispatchers {
            servers: s.iter().map(|s| s.to_string()).collect(),
            etcd: Vec::new(),
        };
        let etcd = Dispatchers {
            servers: Vec::new(),
            etcd: vec!["http://e:2379".to_owned()],
        };
        let env = Dispatchers::from_env(Some("c:3, d:4"), None);
        let (a, b, none) = (servers(&["a:1"]), servers(&["b:2"]), Dispatchers::default());
        assert_eq!(resolve_dispatchers(&a, &b, &env), a);
        assert_eq!(resolve_dispatchers(&etcd, &b, &env), etcd);
        assert_eq!(resolve_dispatchers(&none, &b, &env), b);
        assert_eq!(resolve_dispatchers(&none, &etcd, &env), etcd);
        assert_eq!(
            resolve_dispatchers(&none, &none, &env),
            servers(&["c:3", "d:4"])
        );
        let both = Dispatchers::from_env(Some("c:3"), Some("http://e:2379,http://f:2379"));
        assert_eq!(both.etcd, ["http://e:2379", "http://f:2379"]);
        assert_eq!(resolve_dispatchers(&none, &none, &both), both);
        assert_eq!(
            resolve_dispatchers(&none, &none, &none),
            servers(&[DEFAULT_SERVER])
        );
    }
}
