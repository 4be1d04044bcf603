//! Logs and distributed tracing: `tracing` spans exported over OTLP (Jaeger, Tempo and the
//! OpenTelemetry Collector ingest OTLP natively), with W3C trace context carried between hops.
//!
//! The spans and the trace context are the libraries' too, so they live below them in
//! `nmid_proto::trace` (re-exported here); this module installs the dispatcher's logging
//! and the exporter ([`init`]).
//!
//! Spans cost nothing unless tracing is on: every helper returns a disabled span until
//! [`init`] (or [`enable`], for programs that install their own OpenTelemetry layer) ran.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use nmid_proto::trace::{
    enable, enabled, finish, hop_span, inject_into_msgpack_map, traceparent, tracer_provider,
    with_span_context, Hop, TracingSettings, TRACE_KEYS,
};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint, ...).
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("logging already initialised: {0}")]
    Subscriber(String),
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installed telemetry; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span still buffered, then stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("nmid: flushing traces failed: {err}");
            }
        }
    }
}

/// Lines a peer can make at will, one each, from libraries that do not say who or how often:
/// off by default (the HTTP listener logs such connections itself, once per window:
/// `http_error`, [`crate::logging::RefusalLog`]). A `RUST_LOG` that names the library gets
/// them as it asks.
/// - actix-http logs every HTTP/1 connection that ends in a protocol error (`stream error:
///   parse error ...`) at `error`.
/// - h2 warns of every HTTP/2 connection that resets more streams than it may before they
///   are accepted (rapid reset: `recv_reset; remotely-reset pending-accept streams reached
///   limit`), no credentials needed; it then closes the connection.
const QUIETED: [(&str, &str); 2] = [
    ("actix_http", "actix_http::h1::dispatcher=off"),
    ("h2", "h2=error"),
];

/// Whether the `RUST_LOG` directives `spec` name `target` or a module of it.
fn names_target(spec: &str, target: &str) -> bool {
    (spec.split(',')).any(|directive| {
        let name = directive.split(['=', '[']).next().unwrap_or("").trim();
        name == target
            || name
                .strip_prefix(target)
                .is_some_and(|m| m.starts_with("::"))
    })
}

/// Installs the global subscriber: logs to stderr (filtered by `RUST_LOG`, default `info`,
/// as text or JSON) and, when tracing is enabled, the OTLP span exporter.
pub fn init(settings: &TracingSettings, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for (target, quiet) in QUIETED {
        if !names_target(std::env::var("RUST_LOG").as_deref().unwrap_or(""), target) {
            filter = filter.add_directive(quiet.parse().expect("a directive"));
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider) = if settings.enabled {
        let provider =
            tracer_provider(settings).map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let tracer = provider.tracer("nmid");
        (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Some(provider),
        )
    } else {
        (None, None)
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    if provider.is_some() {
        enable();
    }
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::names_target;

    /// A library's own lines come back only when `RUST_LOG` names it or one of its modules.
    #[test]
    fn rust_log_names_a_target_by_its_directives() {
        assert!(names_target("info,h2=debug", "h2"));
        assert!(names_target("h2::proto=warn", "h2"));
        assert!(names_target("actix_http", "actix_http"));
        assert!(!names_target("info,actix_http::h2=debug", "h2"));
        assert!(!names_target("info", "h2"));
        assert!(!names_target("", "actix_http"));
    }
}
