//! Distributed tracing across the hops of a call: the W3C trace context (`traceparent`,
//! `tracestate`) travels in the tagged frames' metadata, and, with the `otlp` feature, every
//! hop makes one span, named `nmid/<function>` with OpenTelemetry's RPC attributes
//! (`rpc.system = "nmid"`, `rpc.method`) plus `nmid.role` and `nmid.outcome`: the caller
//! (client library or HTTP front end), the dispatcher (queue wait + worker time), and the
//! worker's execution. For v1 workers, [`inject_into_msgpack_map`] adds the context to
//! msgpack-map params, the way nmid added SkyWalking's `sw8`.
//!
//! Spans cost nothing unless tracing is on: every helper here returns a disabled span until
//! [`enable`] ran, after an OpenTelemetry layer was installed (with the `otlp` feature,
//! `tracer_provider` makes the OTLP exporter's). Without that feature a job's trace context still passes on to the
//! calls it makes, unchanged.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use nmid_proto::trace::{self, Hop};
//!
//! let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let meta = vec![(Bytes::from_static(b"traceparent"), Bytes::from(tp))];
//! // Tracing is off: the span is disabled and the context passes on as it came.
//! let span = trace::hop_span(Hop::Worker, "ToUpper", Some(&meta));
//! assert_eq!(trace::with_span_context(&span, meta.clone()), meta);
//! assert_eq!(trace::traceparent(&meta), Some(tp.as_bytes()));
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
#[cfg(feature = "otlp")]
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
#[cfg(feature = "otlp")]
use opentelemetry_otlp::WithExportConfig;
#[cfg(feature = "otlp")]
use opentelemetry_sdk::propagation::TraceContextPropagator;
#[cfg(feature = "otlp")]
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
#[cfg(feature = "otlp")]
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::codec::Metadata;

/// The W3C trace context keys carried between hops.
pub const TRACE_KEYS: [&str; 2] = ["traceparent", "tracestate"];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Where and how to export spans.
#[cfg(feature = "otlp")]
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

/// An OTLP/HTTP span exporter behind a batch processor, for a subscriber of one's own
/// (`tracing_opentelemetry::layer().with_tracer(provider.tracer("..."))`, then [`enable`]).
#[cfg(feature = "otlp")]
pub fn tracer_provider(
    settings: &TracingSettings,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if !settings.endpoint.is_empty() {
        let base = settings.endpoint.trim_end_matches('/');
        exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
    }
    let exporter = exporter.build()?;
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
    let function = crate::escape::Escaped::from(function);
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
    #[cfg(feature = "otlp")]
    if let Some(meta) = parent.filter(|m| traceparent(m).is_some()) {
        let context = TraceContextPropagator::new().extract(&MetaCarrier(meta));
        let _ = span.set_parent(context);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = parent;
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
/// Returns `meta` unchanged when the span is disabled (or without the `otlp` feature).
pub fn with_span_context(span: &Span, meta: Metadata) -> Metadata {
    if span.is_disabled() {
        return meta;
    }
    #[cfg(feature = "otlp")]
    {
        let mut meta: Metadata = meta
            .into_iter()
            .filter(|(k, _)| !TRACE_KEYS.iter().any(|t| k[..] == *t.as_bytes()))
            .collect();
        TraceContextPropagator::new().inject_context(&span.context(), &mut MetaInjector(&mut meta));
        meta
    }
    #[cfg(not(feature = "otlp"))]
    meta
}

/// The `traceparent` value of `meta`, if any.
pub fn traceparent(meta: &Metadata) -> Option<&[u8]> {
    meta.iter()
        .find(|(k, _)| &k[..] == b"traceparent")
        .map(|(_, v)| &v[..])
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

#[cfg(feature = "otlp")]
struct MetaCarrier<'a>(&'a Metadata);

#[cfg(feature = "otlp")]
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

#[cfg(feature = "otlp")]
struct MetaInjector<'a>(&'a mut Metadata);

#[cfg(feature = "otlp")]
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
