//! Tracing across hops: an OTLP/HTTP receiver runs inside the test (spans decoded with the
//! `opentelemetry-proto` crate), the seed's two-hop chain runs (client -> Worker2's
//! `ToUpper2` -> Worker1's `ToUpper`, and the same over HTTP with a `traceparent` header),
//! and the spans of caller, dispatcher and both workers form one trace with the right
//! parent links.

mod cluster_support;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::ChildLog;
use common::{start_dispatcher_with, start_dispatcher_with_http, Peer};
use nmid::client::Client;
use nmid::codec::{Frame, ParamsType, TaggedCall, HANDLE_TYPE_ENCODE};
use nmid::config::Config;
use nmid::telemetry::{self, TracingSettings};
use nmid::worker::{Job, JobError, Worker};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde::Serialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// One received span, reduced to what the assertions need.
#[derive(Debug, Clone)]
struct Received {
    /// The `service.name` of the resource that exported it.
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    role: String,
    method: String,
    outcome: String,
}

/// An OTLP/HTTP receiver on 127.0.0.1: answers `POST /v1/traces` and keeps the spans. Its
/// threads are named after its port, so that a panic in one (an export that does not
/// decode) fails the test instead of only losing spans.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    threads: String,
}

fn start_receiver() -> Receiver {
    common::record_panics();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let threads = format!("otlp-receiver-{}", addr.port());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let name = threads.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || serve_otlp(stream, &sink))
                    .expect("spawn a receiver thread");
            }
        })
        .expect("spawn the receiver");
    Receiver {
        url: format!("http://{addr}"),
        spans,
        threads,
    }
}

impl Receiver {
    /// Fails the test if a thread of the receiver panicked.
    fn assert_no_panics(&self) {
        let panics = common::panics_on(|thread| thread == self.threads);
        assert!(
            panics.is_empty(),
            "the OTLP receiver panicked:\n{}",
            panics.join("\n")
        );
    }
}

/// Serves one keep-alive HTTP/1.1 connection of the exporter.
fn serve_otlp(stream: std::net::TcpStream, sink: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP trace export");
        let mut spans = sink.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone())
                .map(|v| match v {
                    Value::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attr = |key: &str| {
                        span.attributes
                            .iter()
                            .find(|kv| kv.key == key)
                            .and_then(|kv| kv.value.as_ref()?.value.clone())
                            .map(|v| match v {
                                Value::StringValue(s) => s,
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default()
                    };
                    spans.push(Received {
                        service: service.clone(),
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent: hex::encode(&span.parent_span_id),
                        role: attr("nmid.role"),
                        method: attr("rpc.method"),
                        outcome: attr("nmid.outcome"),
                    });
                }
            }
        }
        drop(spans);
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

/// The one span with `role` and `method` whose parent is `parent`.
fn child<'a>(spans: &'a [Received], parent: &str, role: &str, method: &str) -> &'a Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|s| s.parent == parent && s.role == role && s.method == method)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {role} span of {method} under {parent}, in {spans:#?}"
    );
    found[0]
}

/// Waits until the receiver holds at least `count` spans.
fn wait_for_spans(receiver: &Receiver, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        receiver.assert_no_panics();
        let now = receiver.spans.lock().unwrap().clone();
        if now.len() >= count {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "only {} spans arrived: {now:#?}",
            now.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Client -> dispatcher -> Worker2 -> (nested client) -> dispatcher -> Worker1 is one trace
/// with each span the child of the one before; an HTTP call with a `traceparent` header
/// continues the caller's trace.
#[actix_rt::test]
async fn two_hop_chain_is_one_trace_with_correct_parents() {
    let receiver = start_receiver();
    let provider = telemetry::tracer_provider(&TracingSettings {
        enabled: true,
        endpoint: receiver.url.clone(),
        service_name: "nmid-tracing-test".to_owned(),
    })
    .unwrap();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("nmid-test")))
        .init();
    telemetry::enable();

    let dispatcher = start_dispatcher_with_http(Config::default());
    let worker1 = Worker::builder()
        .name("Worker1")
        .server(dispatcher.addr.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    let worker2 = Worker::builder()
        .name("Worker2")
        .server(dispatcher.addr.to_string())
        .function("ToUpper2", |job: Job| async move {
            Ok::<Bytes, JobError>(job.call("ToUpper", job.params().clone()).await?)
        })
        .start()
        .unwrap();
    dispatcher
        .wait_for("both workers", |s| s.functions.len() == 2)
        .await;

    let client = Client::connect(dispatcher.addr.to_string()).await.unwrap();
    let data = client
        .call_data("ToUpper2", &Name { name: "nmid" })
        .await
        .unwrap();
    assert_eq!(&data[..], b"NMID");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut response = awc::Client::default()
        .post(format!("{}/call/ToUpper2", dispatcher.http_url()))
        .insert_header(("content-type", "application/json"))
        .insert_header(("traceparent", format!("00-{trace_id}-{caller_span}-01")))
        .send_body(r#"{"name":"http"}"#)
        .await
        .unwrap();
    assert_eq!(&response.body().await.unwrap()[..], b"HTTP");

    provider.force_flush().unwrap();
    // 6 spans per chain through the client, 6 through HTTP (http, dispatch, worker, nested
    // client, dispatch, worker).
    let all = wait_for_spans(&receiver, 12);
    // (`OTEL_SERVICE_NAME`, when set, would win over the configured name.)
    let services: Vec<&str> = all.iter().map(|s| s.service.as_str()).collect();
    assert!(
        services.iter().all(|s| *s == "nmid-tracing-test"),
        "every span under the configured service name: {services:?}"
    );

    // Through the client library: the client span is the root.
    let root = all
        .iter()
        .find(|s| s.role == "client" && s.method == "ToUpper2" && s.parent.is_empty())
        .unwrap_or_else(|| panic!("no root client span in {all:#?}"));
    let dispatch2 = child(&all, &root.span_id, "dispatcher", "ToUpper2");
    let worker2_span = child(&all, &dispatch2.span_id, "worker", "ToUpper2");
    let nested = child(&all, &worker2_span.span_id, "client", "ToUpper");
    let dispatch1 = child(&all, &nested.span_id, "dispatcher", "ToUpper");
    let worker1_span = child(&all, &dispatch1.span_id, "worker", "ToUpper");
    for span in [
        root,
        dispatch2,
        worker2_span,
        nested,
        dispatch1,
        worker1_span,
    ] {
        assert_eq!(span.trace_id, root.trace_id, "one trace: {span:?}");
        assert_eq!(span.outcome, "ok", "{span:?}");
    }

    // Through HTTP: the caller's traceparent is the parent of the HTTP span.
    let http = child(&all, caller_span, "http", "ToUpper2");
    assert_eq!(http.trace_id, trace_id);
    let dispatch = child(&all, &http.span_id, "dispatcher", "ToUpper2");
    let worker = child(&all, &dispatch.span_id, "worker", "ToUpper2");
    let nested = child(&all, &worker.span_id, "client", "ToUpper");
    let dispatch = child(&all, &nested.span_id, "dispatcher", "ToUpper");
    let worker = child(&all, &dispatch.span_id, "worker", "ToUpper");
    assert_eq!(
        worker.trace_id, trace_id,
        "the caller's trace reaches Worker1"
    );

    worker1.stop().await;
    worker2.stop().await;
    dispatcher.stop().await;
    provider.shutdown().unwrap();
    receiver.assert_no_panics();
}

/// A call forwarded between dispatchers is one trace: B's HTTP span, B's dispatch span, B's
/// forwarding hop (`nmid.role = forward`), the peer link's client span and A's dispatch span,
/// each the child of the one before (two `nmid` processes on a real etcd, exporting over
/// OTLP; their spans flushed on SIGTERM).
#[actix_rt::test]
async fn a_forwarded_call_is_one_trace_across_dispatchers() {
    let receiver = start_receiver();
    let etcd = cluster_support::Etcd::start().await;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str())];
    let mut a = cluster_support::Nmid::start_with_env(&etcd.url, &env);
    let mut b = cluster_support::Nmid::start_with_env(&etcd.url, &env);
    let worker = Worker::builder()
        .name("Traced")
        .server(a.tcp.to_string())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    b.wait_json(
        "/api/v1/cluster",
        Duration::from_secs(10),
        "B sees A's ToUpper",
        |v| cluster_support::serves(v, &a.id, "ToUpper"),
    )
    .await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "10f067aa0ba902b7";
    let mut response = awc::Client::default()
        .post(format!("http://{}/call/ToUpper", b.http))
        .insert_header(("content-type", "application/json"))
        .insert_header(("traceparent", format!("00-{trace_id}-{caller_span}-01")))
        .send_body(r#"{"name":"hop"}"#)
        .await
        .unwrap();
    assert_eq!(&response.body().await.unwrap()[..], b"HOP");
    worker.stop().await;
    assert!(b.terminate().success());
    assert!(a.terminate().success());

    let all = wait_for_spans(&receiver, 5);
    let http = child(&all, caller_span, "http", "ToUpper");
    let dispatch_b = child(&all, &http.span_id, "dispatcher", "ToUpper");
    let forward = child(&all, &dispatch_b.span_id, "forward", "ToUpper");
    let link = child(&all, &forward.span_id, "client", "ToUpper");
    let dispatch_a = child(&all, &link.span_id, "dispatcher", "ToUpper");
    for span in [http, dispatch_b, forward, link, dispatch_a] {
        assert_eq!(span.trace_id, trace_id, "one trace: {span:?}");
        assert_eq!(span.outcome, "ok", "{span:?}");
    }
    receiver.assert_no_panics();
}

/// A running `nmid`, killed (by its PID) and waited for on drop if still running.
struct Nmid(std::process::Child);

impl Drop for Nmid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `nmid` binary, traced through `OTEL_EXPORTER_OTLP_ENDPOINT`, exports the spans of an
/// HTTP call under its default service name (`nmid`) by the time it exits on SIGTERM
/// (flushed on shutdown).
#[actix_rt::test]
async fn binary_exports_spans_and_flushes_them_on_shutdown() {
    use std::process::{Command, Stdio};
    const PROCESS_PATIENCE: Duration = Duration::from_secs(10);
    let receiver = start_receiver();
    let mut nmid = Nmid(
        Command::new(env!("CARGO_BIN_EXE_nmid"))
            .args([
                "--demo",
                "--tcp-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
            .env_remove("OTEL_SERVICE_NAME")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nmid"),
    );
    let mut log = ChildLog::read(nmid.0.stderr.take().unwrap());
    let mut wait_for = |needle: &str| {
        (log.wait_for(needle, PROCESS_PATIENCE))
            .unwrap_or_else(|seen| panic!("nmid never logged {needle:?}; it logged {seen:#?}"))
    };
    let http = wait_for("http listening");
    let http = http.rsplit("addr=").next().unwrap().trim().to_owned();
    wait_for("function registered");
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut response = awc::Client::default()
        .post(format!("http://{http}/call/ToUpper"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01")))
        .send_body(r#"{"name":"flush"}"#)
        .await
        .unwrap();
    assert_eq!(&response.body().await.unwrap()[..], b"FLUSH");

    let killed = Command::new("kill")
        .args(["-TERM", &nmid.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (nmid, status) = actix_rt::task::spawn_blocking(move || {
        let deadline = Instant::now() + PROCESS_PATIENCE;
        loop {
            if let Some(status) = nmid.0.try_wait().expect("wait for nmid") {
                return (nmid, status);
            }
            assert!(
                Instant::now() < deadline,
                "nmid did not exit within {PROCESS_PATIENCE:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    drop(nmid);
    assert!(status.success(), "{status}");
    log.assert_no_panic("nmid");
    receiver.assert_no_panics();
    let received = receiver.spans.lock().unwrap().clone();
    let traced: Vec<&Received> = received.iter().filter(|s| s.trace_id == trace_id).collect();
    for role in ["http", "dispatcher", "worker"] {
        assert!(
            traced.iter().any(|s| s.role == role),
            "{role} span exported before exit: {received:#?}"
        );
    }
    for span in traced {
        assert_eq!(span.service, "nmid", "the default service.name: {span:?}");
    }
}

/// `tracing.inject_v1_params`: a traced call to a v1 worker (which gets no metadata) has
/// the call's `traceparent` added to its msgpack-map params when the key is on; params that
/// are no msgpack map, and every call when the key is off, reach the worker unchanged.
#[actix_rt::test]
async fn inject_v1_params_adds_the_traceparent_to_msgpack_map_params() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let map = |entries: Vec<(&str, &str)>| {
        let value = rmpv::Value::Map(
            (entries.into_iter())
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        Bytes::from(bytes)
    };
    let traced_call = |id: u64, params: Bytes| {
        Frame::CCall(TaggedCall {
            id,
            timeout_ms: 5_000,
            params_type: ParamsType::MSGPACK,
            handle_type: HANDLE_TYPE_ENCODE,
            function: Bytes::from_static(b"V1"),
            params,
            meta: vec![(
                Bytes::from_static(b"traceparent"),
                Bytes::from_static(TRACEPARENT.as_bytes()),
            )],
        })
    };
    let plain = map(vec![("name", "nmid")]);
    let injected = map(vec![("name", "nmid"), ("traceparent", TRACEPARENT)]);
    let not_a_map = Bytes::from_static(b"\xa4nmid"); // a msgpack string
    for (inject, expected) in [(true, &injected), (false, &plain)] {
        let mut config = Config::default();
        config.tracing.inject_v1_params = inject;
        let dispatcher = start_dispatcher_with(config);
        let mut worker = Peer::worker(dispatcher.addr, "v1", &["V1"]).await;
        let mut client = Peer::connect(dispatcher.addr).await;
        for (id, params, expected) in [(1, &plain, expected), (2, &not_a_map, &not_a_map)] {
            client.send(traced_call(id, params.clone())).await;
            let job = worker.recv_job().await;
            assert_eq!(
                &job.params, expected,
                "inject_v1_params = {inject}, call {id}"
            );
            worker.answer(&job, b"done").await;
            assert!(matches!(client.recv().await, Frame::SCallResult(r) if r.id == id));
        }
        dispatcher.stop().await;
    }
}
