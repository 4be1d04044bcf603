//! The dispatcher's configuration: defaults <- file <- environment (`NMID__SECTION__KEY`) <-
//! command-line overrides, read with the `config` crate and checked by [`Config::validate`].
//!
//! The defaults are `config/nmid.toml` itself, built into the binary, so the documented file
//! and the behaviour cannot drift apart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod callbacks;
mod cluster;
mod guard;
mod jobs;
mod security;

pub use callbacks::CallbackSecret;
pub use cluster::{ClusterConfig, DiscoveryConfig};
pub use guard::{BreakerConfig, FunctionRateLimitConfig, RateLimitConfig};
pub use jobs::JobsConfig;
pub use security::{AuthConfig, SecurityConfig, TlsConfig, TokenConfig, V1PeerConfig};

/// `config/nmid.toml`: every key with its default and its documentation.
pub const DEFAULT_TOML: &str = include_str!("../config/nmid.toml");

/// Why a configuration could not be loaded. The message names the bad key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type or an unknown key.
    /// (Not marked as the source: its message already says everything, once.)
    #[error("config: {0}")]
    Load(config::ConfigError),
    /// A value parsed but is out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `jobs.timeout_ms`.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// A value that is allowed but likely wrong; the binary logs each at start and prints it
/// with `--check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigWarning {
    /// The dotted key, e.g. `discovery.keepalive_interval_ms`.
    pub key: &'static str,
    /// What is likely wrong with its value.
    pub message: String,
}

/// The whole configuration. Tests build one with [`Config::default`] and change fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The binary protocol listener.
    pub tcp: TcpConfig,
    /// The HTTP front end.
    pub http: HttpConfig,
    /// The metrics port.
    pub metrics: MetricsConfig,
    /// Calls: deadlines and retries.
    pub jobs: JobsConfig,
    /// Workers: load limits and liveness.
    pub workers: WorkersConfig,
    /// Process-wide settings.
    pub server: ServerConfig,
    /// The dashboard's history.
    pub history: HistoryConfig,
    /// Logs.
    pub log: LogConfig,
    /// Distributed tracing.
    pub tracing: TracingConfig,
    /// etcd discovery: endpoints, credentials, lease.
    pub discovery: DiscoveryConfig,
    /// The cluster of dispatchers: advertised addresses, forwarding limits.
    pub cluster: ClusterConfig,
    /// Which peer addresses may connect.
    pub security: SecurityConfig,
    /// Identities, roles and the functions each may serve or call.
    pub auth: AuthConfig,
    /// TLS on both listeners.
    pub tls: TlsConfig,
    /// Rate limits per function and per client (off unless set).
    pub rate_limit: RateLimitConfig,
    /// Circuit breakers per worker and function (off unless enabled).
    pub breaker: BreakerConfig,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormatConfig,
    /// Refused connections of one kind are logged once per this window, then counted, ms.
    pub refusal_summary_interval_ms: u64,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatConfig {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[tracing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Export spans over OTLP.
    pub enabled: bool,
    /// OTLP/HTTP base URL; empty means the environment or the OTLP default.
    pub endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Add `traceparent` to msgpack-map params of calls to v1 workers.
    pub inject_v1_params: bool,
}

/// `[tcp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Listen address of the nmid protocol.
    pub addr: SocketAddr,
    /// Largest frame body accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Open connections beyond which new ones are closed at once.
    pub max_connections: usize,
    /// Open connections from one IP beyond which its new ones are closed; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Time for a new connection's first frame, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Time for a frame that has begun to arrive whole, in milliseconds.
    pub frame_timeout_ms: u64,
    /// Bytes all connections together may hold in frames not yet whole.
    pub max_incomplete_frame_bytes: usize,
    /// Bytes one client's connections (a token, else an IP) may hold of that together.
    pub max_incomplete_frame_bytes_per_client: usize,
    /// Largest first frame of a connection not identified yet (auth on), in bytes.
    pub max_first_frame_bytes: usize,
    /// Bytes waiting to be written to one peer past which it is no longer read.
    pub max_outbound_bytes: usize,
    /// Time over `max_outbound_bytes` before a peer is closed as a slow consumer, in ms.
    pub slow_consumer_timeout_ms: u64,
    /// Silence after which an idle client connection is closed, in ms; 0: never.
    pub client_idle_timeout_ms: u64,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve HTTP at all.
    pub enabled: bool,
    /// Listen address of the HTTP front end.
    pub addr: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// HTTP connections open at once, at most; past it new ones wait to be accepted.
    pub max_connections: usize,
    /// Request headers of `POST /call` passed on to the function (tagged workers get them
    /// as call metadata; nmid-faas's http functions send them on), by name.
    pub forward_headers: Vec<String>,
    /// Functions that must each have a worker before `GET /readyz` says ready.
    pub ready_functions: Vec<String>,
    /// HTTP connections open from one IP beyond which its new ones are closed; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Idle time after which a connection with no request in progress is closed (HTTP/1
    /// and HTTP/2), in milliseconds.
    pub keep_alive_ms: u64,
    /// Time to send a request's head (HTTP/1) or finish the HTTP/2 handshake, in ms.
    pub client_request_timeout_ms: u64,
    /// Time to send a request's whole body once its head has arrived, in milliseconds.
    pub body_timeout_ms: u64,
    /// Bytes of request bodies being received at once, over all connections.
    pub max_receiving_body_bytes: usize,
    /// Bytes of those one client's bodies (its token, else its IP) may take together.
    pub max_receiving_body_bytes_per_client: usize,
    /// Whether HTTP/2 is offered over TLS (ALPN `h2`); false: HTTP/1.1 only.
    pub http2: bool,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A port of its own for `GET /metrics`; empty for none.
    pub addr: String,
    /// Functions with series of their own; the rest count under `_other`.
    pub max_function_series: usize,
    /// Worker names with series of their own; the rest count under `_other`.
    pub max_worker_series: usize,
}

impl MetricsConfig {
    /// The separate metrics address, if one is set.
    pub fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.addr.is_empty() {
            return Ok(None);
        }
        self.addr
            .parse()
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: "metrics.addr",
                reason: format!("{e}: expected HOST:PORT or empty"),
            })
    }
}

/// `[workers]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Jobs in flight on one worker at once.
    pub max_jobs_in_flight: u32,
    /// Jobs in flight on one v1 worker at once.
    pub v1_max_jobs_in_flight: u32,
    /// Longest function name, in bytes.
    pub max_function_name_bytes: usize,
    /// Longest worker name, in bytes.
    pub max_worker_name_bytes: usize,
    /// Functions one worker connection may serve.
    pub max_functions_per_worker: usize,
    /// Control frames one worker connection may send per second.
    pub max_control_frames_per_second: u32,
    /// Calls that may wait per function while its workers are full.
    pub max_queue_per_function: usize,
    /// Jobs above the least-loaded worker that the worker given a function's last call may
    /// hold and still take the next one (0: strict least-loaded, ties round-robin).
    pub batch_slack: u32,
    /// Silence after which a worker connection is closed as dead, in milliseconds.
    pub heartbeat_timeout_ms: u64,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Connection threads (the registry runs on the first); 0 means one per CPU core.
    pub io_threads: usize,
    /// Longest wait for jobs to finish on shutdown, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Connections the kernel queues for each listener before they are accepted.
    pub listen_backlog: u32,
}

/// `[history]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Time between two readings, in milliseconds.
    pub interval_ms: u64,
    /// Readings kept.
    pub samples: usize,
    /// Functions kept per reading.
    pub max_functions: usize,
}

impl From<config::ConfigError> for ConfigError {
    fn from(err: config::ConfigError) -> Self {
        Self::Load(err)
    }
}

impl Default for Config {
    /// The values of `config/nmid.toml`.
    fn default() -> Self {
        Self::build(None, false, &[]).expect("config/nmid.toml is a valid configuration")
    }
}

impl Config {
    /// Builds the configuration: built-in defaults, then `file` if given, then `NMID__*`
    /// environment variables, then `overrides` (dotted key, value), and validates it.
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        Self::build(file, true, overrides)
    }

    /// Builds the configuration from the defaults and the TOML `text` (no file, no
    /// environment), and validates it: what `--config` does with a file's contents.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let builder = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    fn build(
        file: Option<&Path>,
        with_env: bool,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        if with_env {
            builder = builder.add_source(
                config::Environment::with_prefix("NMID")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.as_str())?;
        }
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges the types cannot express; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        }
        if self.tcp.max_frame_bytes < 64 {
            return invalid("tcp.max_frame_bytes", "must be at least 64");
        }
        if self.tcp.max_frame_bytes > u32::MAX as usize {
            return invalid("tcp.max_frame_bytes", "must fit a u32 (at most 4294967295)");
        }
        if self.tcp.max_connections == 0 {
            return invalid("tcp.max_connections", "must be at least 1");
        }
        if (self.http.forward_headers.iter()).any(|name| {
            actix_web::http::header::HeaderName::from_bytes(name.as_bytes())
                .map_or(true, |name| name == actix_web::http::header::AUTHORIZATION)
        }) {
            return invalid("http.forward_headers", "header names, never Authorization");
        }
        if self.tcp.handshake_timeout_ms == 0 {
            return invalid("tcp.handshake_timeout_ms", "must be at least 1");
        }
        if self.tcp.frame_timeout_ms == 0 {
            return invalid("tcp.frame_timeout_ms", "must be at least 1");
        }
        if self.tcp.max_incomplete_frame_bytes < self.tcp.max_frame_bytes {
            return invalid(
                "tcp.max_incomplete_frame_bytes",
                "must be at least tcp.max_frame_bytes, or no frame of the largest size could arrive",
            );
        }
        let tcp = &self.tcp;
        if tcp.max_incomplete_frame_bytes_per_client < tcp.max_frame_bytes {
            return invalid(
                "tcp.max_incomplete_frame_bytes_per_client",
                "must be at least tcp.max_frame_bytes, or no frame of the largest size could arrive",
            );
        }
        if tcp.max_first_frame_bytes < 64 {
            return invalid("tcp.max_first_frame_bytes", "must be at least 64");
        }
        if self.log.refusal_summary_interval_ms < 100 {
            return invalid("log.refusal_summary_interval_ms", "must be at least 100");
        }
        if self.tcp.max_outbound_bytes < 64 * 1024 {
            return invalid("tcp.max_outbound_bytes", "must be at least 65536");
        }
        if self.tcp.slow_consumer_timeout_ms == 0 {
            return invalid("tcp.slow_consumer_timeout_ms", "must be at least 1");
        }
        self.metrics.addr()?;
        if self.http.max_body_bytes == 0 {
            return invalid("http.max_body_bytes", "must be at least 1");
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections", "must be at least 1");
        }
        let http = &self.http;
        for (key, ms) in [
            ("http.keep_alive_ms", http.keep_alive_ms),
            (
                "http.client_request_timeout_ms",
                http.client_request_timeout_ms,
            ),
            ("http.body_timeout_ms", http.body_timeout_ms),
        ] {
            if ms == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if http.max_receiving_body_bytes < http.max_body_bytes {
            return invalid(
                "http.max_receiving_body_bytes",
                "must be at least http.max_body_bytes, or no body of the largest size could arrive",
            );
        }
        if http.max_receiving_body_bytes_per_client < http.max_body_bytes {
            return invalid(
                "http.max_receiving_body_bytes_per_client",
                "must be at least http.max_body_bytes, or no body of the largest size could arrive",
            );
        }
        if self.jobs.max_partial_bytes_buffered == 0 {
            return invalid("jobs.max_partial_bytes_buffered", "must be at least 1");
        }
        if self.workers.max_jobs_in_flight == 0 {
            return invalid("workers.max_jobs_in_flight", "must be at least 1");
        }
        if self.workers.v1_max_jobs_in_flight == 0 {
            return invalid("workers.v1_max_jobs_in_flight", "must be at least 1");
        }
        if self.workers.v1_max_jobs_in_flight > self.workers.max_jobs_in_flight {
            return invalid(
                "workers.v1_max_jobs_in_flight",
                "must be at most workers.max_jobs_in_flight",
            );
        }
        if self.workers.max_function_name_bytes == 0 {
            return invalid("workers.max_function_name_bytes", "must be at least 1");
        }
        if self.workers.max_worker_name_bytes == 0 {
            return invalid("workers.max_worker_name_bytes", "must be at least 1");
        }
        if self.workers.max_functions_per_worker == 0 {
            return invalid("workers.max_functions_per_worker", "must be at least 1");
        }
        if self.workers.max_control_frames_per_second == 0 {
            return invalid(
                "workers.max_control_frames_per_second",
                "must be at least 1",
            );
        }
        if self.workers.heartbeat_timeout_ms < 100 {
            return invalid("workers.heartbeat_timeout_ms", "must be at least 100");
        }
        if self.server.listen_backlog == 0 || self.server.listen_backlog > 65535 {
            return invalid("server.listen_backlog", "must be 1 to 65535");
        }
        if self.server.io_threads > 1024 {
            return invalid("server.io_threads", "must be at most 1024");
        }
        if !(100..=3_600_000).contains(&self.history.interval_ms) {
            return invalid("history.interval_ms", "must be 100 to 3600000");
        }
        if !(2..=100_000).contains(&self.history.samples) {
            return invalid("history.samples", "must be 2 to 100000");
        }
        if self.history.max_functions > 1000 {
            return invalid("history.max_functions", "must be at most 1000");
        }
        self.jobs.validate()?;
        self.validate_callbacks()?;
        self.validate_cluster()?;
        self.validate_rate_limit()?;
        self.validate_breaker()?;
        self.validate_security()
    }

    /// Discovery (and so the cluster) is on: etcd endpoints are set.
    pub fn discovery_enabled(&self) -> bool {
        !self.discovery.etcd_endpoints.is_empty()
    }

    /// What this configuration allows but is likely wrong, each naming its key.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        match self.discovery_enabled() {
            true => self.discovery.warnings(),
            false => Vec::new(),
        }
    }

    /// The default job deadline.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_millis(self.jobs.timeout_ms)
    }

    /// How long a worker may stay silent.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.workers.heartbeat_timeout_ms)
    }

    /// The longest shutdown drain.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.server.drain_timeout_ms)
    }

    /// The tracing settings: on when configured, or when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub fn tracing_settings(&self) -> crate::telemetry::TracingSettings {
        let from_env = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty());
        crate::telemetry::TracingSettings {
            enabled: self.tracing.enabled || from_env,
            endpoint: self.tracing.endpoint.clone(),
            service_name: self.tracing.service_name.clone(),
        }
    }

    /// The log format.
    pub fn log_format(&self) -> crate::telemetry::LogFormat {
        match self.log.format {
            LogFormatConfig::Text => crate::telemetry::LogFormat::Text,
            LogFormatConfig::Json => crate::telemetry::LogFormat::Json,
        }
    }

    /// The dashboard history's settings.
    pub fn history_settings(&self) -> crate::history::HistorySettings {
        crate::history::HistorySettings {
            interval: Duration::from_millis(self.history.interval_ms),
            samples: self.history.samples,
            max_functions: self.history.max_functions,
        }
    }

    /// Connection threads to start.
    pub fn io_threads(&self) -> usize {
        match self.server.io_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}
