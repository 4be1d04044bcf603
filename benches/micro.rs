//! Run: `cargo bench --bench micro` (part of `make bench`). Criterion micro-benchmarks of
//! the pure codec: encode and decode of the frames on the hot paths — v1 (`C_DO_JOB`,
//! `S_GET_DATA`) and tagged (`C_CALL`, `S_JOB`, `S_CALL_RESULT`) — with 32 B and 4 KiB
//! params, and RetStruct encode/decode.
//!
//! The dispatch path without sockets (registry placement, job actor, result routing) is not
//! here: it needs the actors' internals, which the library does not export; `compare`
//! measures it end to end, with its CPU per call.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use nmid::codec::{
    self, Call, CallResult, DoJob, Frame, GetData, Job, ParamsType, DEFAULT_MAX_FRAME_BYTES,
    HANDLE_TYPE_ENCODE,
};
use nmid::retstruct::RetStruct;

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
            Frame::DoJob(DoJob {
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function: function.clone(),
                params: params(len),
            }),
        ),
        (
            "S_GET_DATA",
            Frame::GetData(GetData {
                params_type: ParamsType::MSGPACK,
                handle_type: HANDLE_TYPE_ENCODE,
                function: function.clone(),
                params: params(len),
                job_id: Bytes::from_static(b"1234567"),
            }),
        ),
        (
            "C_CALL",
            Frame::Call(Call {
                request_id: 42,
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
            Frame::Call(Call {
                request_id: 42,
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
            Frame::Job(Job {
                job_id: 1_234_567,
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
            Frame::CallResult(CallResult {
                request_id: 42,
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
    targets = encode, decode, retstruct
}
criterion_main!(benches);
