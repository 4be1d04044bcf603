//! Run: `cargo bench --bench micro` (part of `make bench`). Criterion micro-benchmarks, with
//! the `nmid` binary's allocator (mimalloc), of the pure codec: encode and decode of the
//! frames on the hot paths — v1 (`C_DO_JOB`, `S_GET_DATA`) and tagged (`C_CALL`, `S_JOB`,
//! `S_CALL_RESULT`) — with 32 B and 4 KiB params, and RetStruct encode/decode.
//!
//! `dispatch` measures the dispatch path without sockets: one call's whole trip through the
//! actors, wired as the server wires them. A [`JobActor`] is started, sends `Dispatch` to
//! the [`Registry`], whose scheduler places it on an [`EchoWorker`] (a worker session
//! without its socket: it encodes the `S_JOB`, answers at once with the params through the
//! lease and frees the slot with `JobFinished`); the job replies to the caller. All on one
//! thread, as in the server (the registry shares the first connection thread). The time
//! reported is per call, with 1 and 64 calls in flight, over 1, 2 and 100 workers serving
//! the function: the cost per call should stay flat as workers grow. Each call is admitted
//! through the [`FrontDoor`], as the client sessions and HTTP admit theirs; `admission`
//! measures what that costs over starting the job directly (auth and rate limits off, and
//! with a token's grant). `compare` measures the same path end to end over TCP, with its
//! CPU per call.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use futures_util::stream::{FuturesUnordered, StreamExt};
use nmid::actors::front_door::{Caller, FrontDoor, FrontEnd};
use nmid::actors::job::{JobActor, JobServices};
use nmid::actors::registry::{
    Assignment, FunctionAdded, JobFinished, Registry, Snapshot, WorkerJoined, WorkerPort,
};
use nmid::call::{CallOutcome, CallSpec, FunctionName, JobId, WorkerId};
use nmid::codec::{
    self, CDoJob, Frame, ParamsType, SGetData, TaggedCall, TaggedResult, DEFAULT_MAX_FRAME_BYTES,
    HANDLE_TYPE_ENCODE,
};
use nmid::retstruct::RetStruct;

/// The allocator of the `nmid` binary, so the dispatch path costs what it costs there.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 2] = [32, 4096];

fn params(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

/// The frames measured, named as nmid names them, each with `len` bytes of params.
fn frames(len: usize) -> Vec<(&'static str, Frame)> {
    let function = Bytes::from_static(b"Echo");
    let trace = vec![(
        Bytes::from_static(b"traceparent"),
        Bytes::from_static(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )];
    vec![
        (
            "C_DO_JOB",
            Frame::CDoJob(CDoJob {
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function: function.clone(),
                params: params(len),
            }),
        ),
        (
            "S_GET_DATA",
            Frame::SGetData(SGetData {
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function: function.clone(),
                params: params(len),
                job_id: Bytes::from_static(b"1234567"),
            }),
        ),
        (
            "C_CALL",
            Frame::CCall(TaggedCall {
                id: 42,
                timeout_ms: 30_000,
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function: function.clone(),
                params: params(len),
                meta: Vec::new(),
            }),
        ),
        (
            "C_CALL+traceparent",
            Frame::CCall(TaggedCall {
                id: 42,
                timeout_ms: 30_000,
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function: function.clone(),
                params: params(len),
                meta: trace,
            }),
        ),
        (
            "S_JOB",
            Frame::SJob(TaggedCall {
                id: 1_234_567,
                timeout_ms: 29_000,
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function,
                params: params(len),
                meta: Vec::new(),
            }),
        ),
        (
            "S_CALL_RESULT",
            Frame::SCallResult(TaggedResult {
                id: 42,
                ret: params(len),
            }),
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for len in SIZES {
        for (name, frame) in frames(len) {
            group.throughput(Throughput::Bytes(codec::encoded_len(&frame) as u64));
            let mut buf = BytesMut::with_capacity(8192);
            group.bench_with_input(BenchmarkId::new(name, len), &frame, |b, frame| {
                b.iter(|| {
                    buf.clear();
                    codec::encode(black_box(frame), &mut buf).expect("encodes");
                    black_box(buf.len())
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for len in SIZES {
        for (name, frame) in frames(len) {
            let mut wire = BytesMut::new();
            codec::encode(&frame, &mut wire).expect("encodes");
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, len), &wire, |b, wire| {
                b.iter_batched_ref(
                    || wire.clone(),
                    |buf| {
                        codec::decode(black_box(buf), DEFAULT_MAX_FRAME_BYTES)
                            .expect("decodes")
                            .expect("whole frame")
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn retstruct(c: &mut Criterion) {
    let mut group = c.benchmark_group("retstruct");
    for len in SIZES {
        let ret = RetStruct::ok(params(len));
        let bytes = ret.encode();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", len), &ret, |b, ret| {
            b.iter(|| black_box(ret).encode())
        });
        group.bench_with_input(BenchmarkId::new("decode", len), &bytes, |b, bytes| {
            b.iter(|| RetStruct::decode(black_box(bytes)).expect("decodes"))
        });
        // What the dispatcher does to every result to count failed functions.
        group.bench_with_input(BenchmarkId::new("peek_code", len), &bytes, |b, bytes| {
            b.iter(|| nmid::retstruct::peek_code(black_box(bytes)).expect("a code"))
        });
    }
    group.finish();
}

/// The function every benchmark worker serves.
const FUNCTION: &str = "Echo";

/// Jobs each worker takes at once: the default `max_jobs_in_flight`, so 64 calls in flight
/// never queue, even on one worker.
const SLOTS: u32 = 64;

/// The default `max_queue_per_function`.
const MAX_QUEUE: usize = 1024;

/// Long enough that no call times out, so a timeout fails the check instead of being timed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the workers to register.
const SETUP_PATIENCE: Duration = Duration::from_secs(10);

/// A worker session without its socket: it writes each call as `S_JOB` into a buffer (the
/// encoding a session's outbox does), answers at once with the params through the lease, and
/// frees the slot, as a worker session does when the answer comes back.
struct EchoWorker {
    id: WorkerId,
    registry: Addr<Registry>,
    written: BytesMut,
}

impl Actor for EchoWorker {
    type Context = Context<Self>;
}

/// What the registry sends an echo worker.
#[derive(Message)]
#[rtype(result = "()")]
struct Assign {
    assignment: Assignment,
}

/// The registry's way to an echo worker.
struct EchoPort(Addr<EchoWorker>);

impl WorkerPort for EchoPort {
    fn assign(&self, assignment: Assignment) {
        self.0.do_send(Assign { assignment });
    }

    fn sealed(&self) {}

    fn abandon(&self) {}
}

impl Handler<Assign> for EchoWorker {
    type Result = ();

    fn handle(&mut self, msg: Assign, _: &mut Self::Context) {
        let Assignment {
            job_id,
            spec,
            lease,
        } = msg.assignment;
        let frame = Frame::SJob(TaggedCall {
            id: job_id.0,
            timeout_ms: 30_000,
            params_type: spec.params_type,
            handle_type: spec.handle_type,
            function: spec.function.0.clone(),
            params: spec.params.clone(),
            meta: Vec::new(),
        });
        self.written.clear();
        codec::encode(&frame, &mut self.written).expect("encodes");
        let late = !lease.answer(CallOutcome::Done(spec.params));
        self.registry.do_send(JobFinished {
            worker: self.id,
            function: spec.function,
            late,
            verdict: Some(nmid::breaker::Verdict::Success),
        });
    }
}

/// A registry with `workers` echo workers serving [`FUNCTION`], each with [`SLOTS`] slots,
/// ready to take calls. Must run inside the benchmark's `System`.
async fn start_dispatch(workers: usize) -> JobServices {
    let services = JobServices::with_registry(Registry::new(MAX_QUEUE).start());
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    for _ in 0..workers {
        let id = WorkerId::next();
        let registry = services.registry.clone();
        let worker = EchoWorker {
            id,
            registry: registry.clone(),
            written: BytesMut::with_capacity(4096),
        }
        .start();
        registry.do_send(WorkerJoined {
            worker: id,
            port: Box::new(EchoPort(worker)),
            peer,
            max_jobs: SLOTS,
        });
        registry.do_send(FunctionAdded {
            worker: id,
            function: FunctionName::from(FUNCTION),
        });
    }
    let deadline = Instant::now() + SETUP_PATIENCE;
    loop {
        let snapshot = services
            .registry
            .send(Snapshot)
            .await
            .expect("registry answers");
        let serving = snapshot.function(FUNCTION).map_or(0, |f| f.workers);
        if serving == workers && snapshot.workers.iter().all(|w| w.max_jobs == SLOTS) {
            return services;
        }
        assert!(
            Instant::now() < deadline,
            "{serving} of {workers} workers registered; last state: {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How a benchmark's calls become jobs.
#[derive(Clone, Copy)]
enum Admit<'a> {
    /// `JobActor::start`, no checks: the floor.
    Direct,
    /// Through the front door, as `caller`.
    Door(&'a FrontDoor, Caller<'a>),
}

/// Makes `calls` calls of [`FUNCTION`], `in_flight` of them outstanding at any time, and
/// returns the time they took. Panics on any reply but the echoed params.
async fn run_calls(
    services: &JobServices,
    admit: Admit<'_>,
    params: &Bytes,
    calls: u64,
    in_flight: usize,
) -> Duration {
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut made = 0;
    while made < calls && pending.len() < in_flight {
        pending.push(call(services, admit, params));
        made += 1;
    }
    while let Some(reply) = pending.next().await {
        match reply.expect("the job answers") {
            CallOutcome::Done(ret) if ret == *params => {}
            other => panic!("call failed: {other:?}"),
        }
        if made < calls {
            pending.push(call(services, admit, params));
            made += 1;
        }
    }
    started.elapsed()
}

/// Starts one call's job, as a front end does; the receiver gets its outcome.
fn call(
    services: &JobServices,
    admit: Admit<'_>,
    params: &Bytes,
) -> tokio::sync::oneshot::Receiver<CallOutcome> {
    let function = Bytes::from_static(FUNCTION.as_bytes());
    let params = params.clone();
    let spec = CallSpec::new(
        function,
        ParamsType::MSGPACK,
        HANDLE_TYPE_ENCODE,
        params,
        CALL_TIMEOUT,
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reply = Box::new(move |outcome| drop(tx.send(outcome)));
    match admit {
        Admit::Direct => drop(JobActor::start(JobId::next(), spec, reply, None, services)),
        Admit::Door(door, caller) => {
            door.admit(JobId::next(), spec, caller, FrontEnd::Tcp, reply, None)
                .expect("admitted");
        }
    }
    rx
}

/// The front door of `services`, with no lists, auth or TLS.
fn door_of(services: &JobServices) -> FrontDoor {
    let max_frame_bytes = nmid::codec::DEFAULT_MAX_FRAME_BYTES;
    FrontDoor::new(
        services.clone(),
        max_frame_bytes,
        nmid::security::Security::open(),
    )
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    let runner = actix_rt::System::new();
    // The echo answers with the params: a RetStruct, as real workers answer, so the
    // dispatcher's look at its `Code` is measured too.
    let params = Bytes::from(RetStruct::ok(params(32)).encode());
    let anyone = Caller::Anyone {
        ip: Some([127, 0, 0, 1].into()),
    };
    for workers in [1, 2, 100] {
        let services = runner.block_on(start_dispatch(workers));
        let door = door_of(&services);
        for in_flight in [1, 64] {
            let id = BenchmarkId::new(
                format!("workers={workers}"),
                format!("in_flight={in_flight}"),
            );
            let admit = Admit::Door(&door, anyone);
            group.bench_function(id, |b| {
                b.iter_custom(|calls| {
                    runner.block_on(run_calls(&services, admit, &params, calls, in_flight))
                })
            });
        }
    }
    group.finish();
}

/// One worker, 1 and 64 calls in flight: each call started directly, admitted by the front
/// door with auth off, and admitted as a token's grant (auth on, a `*` pattern).
fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    let runner = actix_rt::System::new();
    let params = params(32);
    let services = runner.block_on(start_dispatch(1));
    let door = door_of(&services);
    let mut config = nmid::config::Config::default();
    config.auth.enabled = true;
    config.auth.tokens = vec![nmid::config::TokenConfig {
        name: "bench".to_owned(),
        secret: "bench-secret-0123456789".to_owned(),
        roles: vec!["client".to_owned()],
        functions: vec!["*".to_owned()],
        ..Default::default()
    }];
    let policy = nmid::security::Policy::from_config(&config).expect("a valid policy");
    let grant = (policy.auth.as_ref())
        .and_then(|auth| auth.token(b"bench-secret-0123456789"))
        .expect("the bench token");
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let ways = [
        ("direct", Admit::Direct),
        (
            "door_auth_off",
            Admit::Door(&door, Caller::Anyone { ip: Some(ip) }),
        ),
        (
            "door_token",
            Admit::Door(&door, Caller::Granted { grant: &grant, ip }),
        ),
    ];
    for in_flight in [1, 64] {
        for (name, admit) in ways {
            let id = BenchmarkId::new(name, format!("in_flight={in_flight}"));
            group.bench_function(id, |b| {
                b.iter_custom(|calls| {
                    runner.block_on(run_calls(&services, admit, &params, calls, in_flight))
                })
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode, decode, retstruct, dispatch, admission
}
criterion_main!(benches);
