//! The life of an `nmid-faas` process: serve the file, watch it, apply each valid new
//! version, keep the old set when a new one is refused, stop gracefully.
//!
//! The file is read again every `reload_interval_ms` (and at once on SIGHUP) and applied
//! when its text changed. Polling rather than inotify: it also sees a Kubernetes ConfigMap
//! update (a symlink swapped under the mount) and an editor's rename-over, and costs one
//! small read per interval.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::runner::{resolve_dispatchers, Applied, Credentials, Dispatchers, Health, Runner};
use super::spec::{FaasSpec, SpecError};
use crate::worker::{serve_metrics_with, WorkerMetrics};

/// Why `nmid-faas` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The functions file was refused.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A function could not be served.
    #[error("cannot serve the functions: {0}")]
    Start(String),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr} (metrics_addr): {cause}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason (in the message, so not a source too).
        cause: std::io::Error,
    },
}

/// What the command line says.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The functions file.
    pub file: PathBuf,
    /// `--server` and `--etcd` flags.
    pub dispatchers: Dispatchers,
    /// `NMID_ADDR` and `NMID_ETCD`.
    pub env: Dispatchers,
    /// `--token-file` (read) and the TLS flags; `NMID_TOKEN` and `NMID_CA_FILE` below the
    /// file's.
    pub credentials: Credentials,
    /// `--metrics-addr`, over the file's `metrics_addr`.
    pub metrics_addr: Option<SocketAddr>,
}

/// Serves the file of `options` until `shutdown` completes, then stops every function
/// gracefully. Must run inside an actix `System`. A notification on `reload` (the binary's
/// SIGHUP) reads the file again at once.
pub async fn serve(
    options: ServeOptions,
    reload: &tokio::sync::Notify,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut seen = FaasSpec::read(&options.file)?;
    let spec = FaasSpec::parse(&options.file, &seen)?;
    super::exec::hide_own_proc_files();
    super::orphans::adopt_orphans();
    let metrics_addr = options.metrics_addr.or(spec.metrics_addr);
    let mut metrics_server = None;
    let health = Arc::new(Health::default());
    let metrics = match metrics_addr {
        Some(addr) => {
            let metrics = WorkerMetrics::new();
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|cause| ServeError::Metrics { addr, cause })?;
            let bound = listener.local_addr().unwrap_or(addr);
            metrics_server = Some(
                serve_metrics_with(listener, metrics.clone(), Some(health.readiness()))
                    .map_err(|cause| ServeError::Metrics { addr, cause })?,
            );
            info!(addr = %bound, "metrics listening");
            Some(metrics)
        }
        None => None,
    };
    let mut runner = Runner::new(metrics, health);
    let dispatchers = |spec: &FaasSpec| {
        let file = Dispatchers {
            servers: spec.servers.clone(),
            etcd: spec.etcd.clone(),
        };
        resolve_dispatchers(&options.dispatchers, &file, &options.env)
    };
    let credentials = |spec: &FaasSpec| -> Result<Credentials, String> {
        let token = match (&options.credentials.token, &spec.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => Some(read_secret(file)?),
            (None, None) => None,
        };
        let tls = (options.credentials.tls.clone())
            .or_else(|| spec.tls.clone())
            .or_else(|| {
                let ca_file = std::env::var("NMID_CA_FILE")
                    .ok()
                    .filter(|f| !f.is_empty())?;
                Some(crate::security::ClientTls {
                    ca_file,
                    ..Default::default()
                })
            });
        Ok(Credentials { token, tls })
    };
    log_warnings(&spec);
    let first = credentials(&spec).map_err(ServeError::Start)?;
    let applied = runner
        .apply(&spec, dispatchers(&spec), first)
        .map_err(|e| ServeError::Start(e.to_string()))?;
    let serving = dispatchers(&spec);
    info!(functions = ?applied.added, servers = ?serving.servers, etcd = ?serving.etcd, "serving");
    let mut interval = spec.reload_interval;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = reload.notified() => info!("reload asked"),
            _ = &mut shutdown => break,
        }
        let text = match FaasSpec::read(&options.file) {
            Ok(text) => text,
            Err(err) => {
                warn!(cause = %err, "functions file unreadable; still serving the last good one");
                continue;
            }
        };
        if text == seen {
            continue;
        }
        seen = text;
        let spec = match FaasSpec::parse(&options.file, &seen) {
            Ok(spec) => spec,
            Err(err) => {
                error!(cause = %err, "functions file refused; still serving the last good one");
                continue;
            }
        };
        let credentials = match credentials(&spec) {
            Ok(credentials) => credentials,
            Err(err) => {
                error!(cause = %err, "functions file refused; still serving the last good one");
                continue;
            }
        };
        match runner.apply(&spec, dispatchers(&spec), credentials) {
            Ok(applied) => {
                interval = spec.reload_interval;
                log_applied(&applied);
                log_warnings(&spec);
            }
            Err(err) => {
                error!(cause = %err, "functions file refused; still serving the last good one")
            }
        }
    }
    info!("stopping: functions removed, finishing calls in flight");
    runner.shutdown().await;
    if let Some(server) = metrics_server {
        server.stop(true).await;
    }
    Ok(())
}

/// The secret in the file at `path` (one line; the line break is not part of it).
pub fn read_secret(path: &str) -> Result<String, String> {
    let secret = std::fs::read_to_string(path).map_err(|e| format!("token file {path}: {e}"))?;
    Ok(secret.trim_end_matches(['\r', '\n']).to_owned())
}

fn log_warnings(spec: &FaasSpec) {
    for warning in spec.warnings() {
        warn!("{warning}");
    }
}

fn log_applied(applied: &Applied) {
    if applied == &Applied::default() {
        info!("functions file changed; no function changed");
        return;
    }
    info!(
        added = ?applied.added,
        changed = ?applied.changed,
        removed = ?applied.removed,
        "functions file applied"
    );
}
