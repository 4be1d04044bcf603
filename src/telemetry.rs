//! Logs and distributed tracing: `tracing` spans exported over OTLP (Jaeger, Tempo and the
//! OpenTelemetry Collector ingest OTLP natively), with W3C trace context carried between hops.
//!
//! Every hop of a call makes one span, named `nmid/<function>` with OpenTelemetry's RPC
//! attributes (`rpc.system = "nmid"`, `rpc.method`) plus `nmid.role` and `nmid.outcome`:
//! the caller (client library or HTTP front end), the dispatcher (queue wait + worker time),
//! and the worker's execution. The trace context travels as `traceparent`/`tracestate` in
//! the tagged frames' metadata and in HTTP headers; for v1 workers an opt-in setting adds it
//! to msgpack-map params, the way nmid added SkyWalking's `sw8`.
//!
//! Spans cost nothing unless tracing is on: every helper here returns a disabled span until
//! [`init`] (or [`enable`], for programs that install their own OpenTelemetry layer) ran.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::codec::Metadata;

/// The W3C trace context keys carried between hops.
pub const TRACE_KEYS: [&str; 2] = ["traceparent", "tracestate"];

static ENABLED: AtomicBool = AtomicBool::new(false);

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

/// Where and how to export spans.
#[derive(Debug, Clone, Default)]
pub struct TracingSettings {
    /// Export spans at all.
    pub enabled: bool,
    /// OTLP/HTTP base endpoint (`http://host:4318`); empty means `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// or the OTLP default.
    pub endpoint: String,
    /// `service.name`; `OTEL_SERVICE_NAME` wins when set.
    pub service_name: String,
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

/// Installs the global subscriber: logs to stderr (filtered by `RUST_LOG`, default `info`,
/// as text or JSON) and, when tracing is enabled, the OTLP span exporter.
pub fn init(settings: &TracingSettings, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
        let provider = tracer_provider(settings)?;
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

/// An OTLP/HTTP span exporter behind a batch processor, for [`init`] or a custom subscriber
/// (`tracing_opentelemetry::layer().with_tracer(provider.tracer("..."))`, then [`enable`]).
pub fn tracer_provider(settings: &TracingSettings) -> Result<SdkTracerProvider, TelemetryError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if !settings.endpoint.is_empty() {
        let base = settings.endpoint.trim_end_matches('/');
        exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
    }
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() && !settings.service_name.is_empty() {
        resource = resource.with_service_name(settings.service_name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Turns span creation on (after an OpenTelemetry layer was installed).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are made.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Which hop a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A caller: the client library.
    Client,
    /// The HTTP front end receiving a call.
    Http,
    /// The dispatcher placing and awaiting a job.
    Dispatcher,
    /// A worker running a job.
    Worker,
    /// A dispatcher forwarding a call to a peer dispatcher of the cluster.
    Forward,
}

impl Hop {
    fn role(self) -> &'static str {
        match self {
            Hop::Client => "client",
            Hop::Http => "http",
            Hop::Dispatcher => "dispatcher",
            Hop::Worker => "worker",
            Hop::Forward => "forward",
        }
    }
}

/// The span of one hop of a call of `function`, child of the trace context in `parent`
/// (else of the current span). Disabled unless tracing is on.
pub fn hop_span(hop: Hop, function: &str, parent: Option<&Metadata>) -> Span {
    if !enabled() {
        return Span::none();
    }
    // Escaped: span fields reach the log lines of the events inside the span.
    let function = crate::logging::Escaped::from(function);
    let name = format!("nmid/{function}");
    let span = match hop {
        Hop::Client | Hop::Forward => {
            tracing::info_span!("nmid.call", otel.name = %name, otel.kind = "client",
            rpc.system = "nmid", rpc.service = "nmid", rpc.method = %function, nmid.role = hop.role(),
            nmid.outcome = tracing::field::Empty, otel.status_code = tracing::field::Empty)
        }
        Hop::Http | Hop::Dispatcher | Hop::Worker => {
            tracing::info_span!("nmid.serve", otel.name = %name,
            otel.kind = "server", rpc.system = "nmid", rpc.service = "nmid", rpc.method = %function,
            nmid.role = hop.role(), nmid.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty)
        }
    };
    if let Some(meta) = parent.filter(|m| has_trace_context(m)) {
        let context = TraceContextPropagator::new().extract(&MetaCarrier(meta));
        let _ = span.set_parent(context);
    }
    span
}

/// Records how the hop ended: `nmid.outcome`, and an error status unless it is `ok`.
pub fn finish(span: &Span, outcome: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("nmid.outcome", outcome);
    if outcome != "ok" {
        span.record("otel.status_code", "ERROR");
    }
}

/// `meta` with its trace context replaced by `span`'s, so the next hop is its child.
/// Returns `meta` unchanged when the span is disabled.
pub fn with_span_context(span: &Span, meta: Metadata) -> Metadata {
    if span.is_disabled() {
        return meta;
    }
    let mut meta: Metadata = meta
        .into_iter()
        .filter(|(k, _)| !TRACE_KEYS.iter().any(|t| k[..] == *t.as_bytes()))
        .collect();
    TraceContextPropagator::new().inject_context(&span.context(), &mut MetaInjector(&mut meta));
    meta
}

/// The `traceparent` value of `meta`, if any.
pub fn traceparent(meta: &Metadata) -> Option<&[u8]> {
    meta.iter()
        .find(|(k, _)| &k[..] == b"traceparent")
        .map(|(_, v)| &v[..])
}

fn has_trace_context(meta: &Metadata) -> bool {
    traceparent(meta).is_some()
}

/// For v1 workers (no metadata on the wire): msgpack-map `params` with a `traceparent` entry
/// added. `None` when the params are not a msgpack map or there is no trace context.
pub fn inject_into_msgpack_map(params: &[u8], meta: &Metadata) -> Option<Bytes> {
    let traceparent = std::str::from_utf8(traceparent(meta)?).ok()?;
    let mut reader = params;
    let rmpv::Value::Map(mut entries) = rmpv::decode::read_value(&mut reader).ok()? else {
        return None;
    };
    if !reader.is_empty() {
        return None;
    }
    entries.retain(|(k, _)| k.as_str() != Some("traceparent"));
    entries.push(("traceparent".into(), traceparent.into()));
    let mut out = Vec::with_capacity(params.len() + 80);
    rmpv::encode::write_value(&mut out, &rmpv::Value::Map(entries)).ok()?;
    Some(Bytes::from(out))
}

struct MetaCarrier<'a>(&'a Metadata);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k[..] == *key.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|(k, _)| std::str::from_utf8(k).ok())
            .collect()
    }
}

struct MetaInjector<'a>(&'a mut Metadata);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .push((Bytes::copy_from_slice(key.as_bytes()), Bytes::from(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans are disabled, and metadata untouched, until tracing is enabled.
    #[test]
    fn spans_are_free_until_enabled() {
        let span = hop_span(Hop::Client, "F", None);
        assert!(span.is_disabled());
        let meta = vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))];
        assert_eq!(with_span_context(&span, meta.clone()), meta);
    }

    /// A v1 worker's msgpack map gains a traceparent entry; non-maps are left alone.
    #[test]
    fn traceparent_is_added_to_msgpack_maps_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let meta = vec![(Bytes::from_static(b"traceparent"), Bytes::from(tp))];
        // {"name": "nmid"}
        let params = [
            0x81, 0xa4, b'n', b'a', b'm', b'e', 0xa4, b'n', b'm', b'i', b'd',
        ];
        let out = inject_into_msgpack_map(&params, &meta).unwrap();
        let value = rmpv::decode::read_value(&mut &out[..]).unwrap();
        let map = value.as_map().unwrap();
        assert_eq!(map.len(), 2);
        assert!(map
            .iter()
            .any(|(k, v)| k.as_str() == Some("traceparent") && v.as_str() == Some(tp)));
        assert!(inject_into_msgpack_map(&[0x93, 1, 2, 3], &meta).is_none());
        assert!(inject_into_msgpack_map(&params, &Vec::new()).is_none());
    }
}
