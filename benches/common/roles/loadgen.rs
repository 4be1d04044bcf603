//! The load-generator role (`--role load --system CALLER ...`): a closed loop keeping exactly
//! `--concurrency` calls in flight, on one single-threaded tokio runtime for every system.
//!
//! Warm-up runs for `--warmup-ms`; then the role prints `START` and measures for
//! `--duration-ms` (or `--max-calls` completions, whichever comes first), then prints
//! `RESULT {json}` at once and exits (see `recorder`). The harness samples every process's CPU time when it
//! reads each marker. A loop that stalls is cut off by a timer, so the role always ends.
//!
//! Callers: `tagged` and `v1` use our client library, `nats` async-nats, `gearman` and
//! `floor` pipelined protocol clients written here (one reader and one writer per
//! connection, all frames decoded at once answered in one write).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::{Bytes, BytesMut};
use clap::ValueEnum;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::frames;
use super::gearman::{self, Packet};
use super::recorder::Recorder;
use super::{current_thread, upper, NATS_SUBJECT};
use crate::common::options::Options;
use crate::common::{payload, FUNCTION};
use nmid::client::{Client, Protocol};

/// A call not answered in this long is an error (every system's client gets the same).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the role waits for a first successful call before giving up.
const PROBE_LIMIT: Duration = Duration::from_secs(15);
/// Past the end of the window, a loop with no completion is cut off after this long.
const STALL_GRACE: Duration = Duration::from_secs(5);

/// The client a load generator drives its calls with (`--system` of the load role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Caller {
    /// Our client library, tagged: calls pipelined over `--conns` connections.
    Tagged,
    /// Our client library, protocol v1: one connection per call in flight.
    V1,
    /// async-nats request-reply.
    Nats,
    /// A pipelined Gearman client written here.
    Gearman,
    /// A pipelined client of raw tagged frames (the floor).
    Floor,
}

/// The load role's settings.
struct LoadConfig {
    caller: Caller,
    addr: String,
    concurrency: usize,
    conns: usize,
    payload: Bytes,
    expect: Bytes,
    warmup: Duration,
    duration: Duration,
    max_calls: u64,
}

/// Runs the load role; returns when the window is over.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let args = &options.child;
    let body = payload(args.payload);
    let cfg = LoadConfig {
        caller: args.caller.ok_or_else(|| anyhow!("missing --system"))?,
        addr: args.addr()?.to_owned(),
        concurrency: args.concurrency.max(1),
        conns: args.conns.unwrap_or(1).max(1),
        expect: upper(&body),
        payload: Bytes::from(body),
        warmup: Duration::from_millis(options.warmup_ms),
        duration: Duration::from_millis(args.duration_ms),
        max_calls: args.max_calls,
    };
    // Bound in time whatever happens: set-up, warm-up, window, and a margin.
    let lifetime = PROBE_LIMIT * 2 + cfg.warmup + cfg.duration + STALL_GRACE * 2;
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        println!("FAIL load role overran its {lifetime:?} bound");
        std::process::exit(3);
    });
    let runtime = current_thread()?;
    match runtime.block_on(drive(&cfg)) {
        Ok(()) => Ok(()),
        Err(e) => {
            println!("FAIL {e:#}");
            std::process::exit(1);
        }
    }
}

async fn drive(cfg: &LoadConfig) -> anyhow::Result<()> {
    match cfg.caller {
        Caller::Tagged => {
            let mut clients = Vec::new();
            for _ in 0..cfg.conns.min(cfg.concurrency) {
                clients.push(
                    super::with_bench_tls(Client::builder(cfg.addr.clone()), |b, tls| b.tls(tls))
                        .timeout(CALL_TIMEOUT)
                        .connect()
                        .await?,
                );
            }
            nmid_loop(cfg, &clients).await
        }
        Caller::V1 => {
            // A v1 connection runs one call at a time: one connection per call in flight.
            let mut clients = Vec::new();
            for _ in 0..cfg.concurrency.min(512) {
                clients.push(
                    Client::builder(cfg.addr.clone())
                        .protocol(Protocol::V1)
                        .timeout(CALL_TIMEOUT)
                        .connect()
                        .await?,
                );
            }
            nmid_loop(cfg, &clients).await
        }
        Caller::Nats => {
            let mut clients = Vec::new();
            for _ in 0..cfg.conns.min(cfg.concurrency) {
                clients.push(
                    async_nats::ConnectOptions::new()
                        .request_timeout(Some(CALL_TIMEOUT))
                        .connect(cfg.addr.as_str())
                        .await
                        .with_context(|| format!("connect to nats-server at {}", cfg.addr))?,
                );
            }
            let call = |slot: usize| {
                let client = &clients[slot % clients.len()];
                let payload = cfg.payload.clone();
                async move {
                    match client.request(NATS_SUBJECT, payload).await {
                        Ok(reply) if reply.payload == cfg.expect => Ok(()),
                        Ok(_) => Err("wrong answer".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            probe(call).await?;
            let rec = RefCell::new(Recorder::new(cfg.warmup, cfg.duration, cfg.max_calls));
            run_recorder(&rec, futures_loop(&rec, cfg.concurrency, call)).await
        }
        Caller::Gearman => {
            let rec = RefCell::new(Recorder::new(cfg.warmup, cfg.duration, cfg.max_calls));
            let share = split_in_flight(cfg.concurrency, cfg.conns);
            let mut streams = Vec::new();
            for _ in &share {
                streams.push(dial(&cfg.addr).await?);
            }
            let loops = streams
                .into_iter()
                .zip(share)
                .map(|(s, k)| gearman_conn(&rec, s, k, cfg));
            run_recorder(&rec, futures_util::future::try_join_all(loops)).await
        }
        Caller::Floor => {
            let rec = RefCell::new(Recorder::new(cfg.warmup, cfg.duration, cfg.max_calls));
            let share = split_in_flight(cfg.concurrency, cfg.conns);
            let mut streams = Vec::new();
            for _ in &share {
                streams.push(dial(&cfg.addr).await?);
            }
            let loops = streams
                .into_iter()
                .zip(share)
                .map(|(s, k)| floor_conn(&rec, s, k, cfg));
            run_recorder(&rec, futures_util::future::try_join_all(loops)).await
        }
    }
}

/// Tagged or v1: calls through our client library, slot `i` on client `i % clients`.
async fn nmid_loop(cfg: &LoadConfig, clients: &[Client]) -> anyhow::Result<()> {
    let call = |slot: usize| {
        let client = &clients[slot % clients.len()];
        let payload = cfg.payload.clone();
        async move {
            match client.call(FUNCTION, payload).await {
                Ok(ret) if ret == cfg.expect => Ok(()),
                Ok(_) => Err("wrong answer".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    probe(call).await?;
    let rec = RefCell::new(Recorder::new(cfg.warmup, cfg.duration, cfg.max_calls));
    run_recorder(&rec, futures_loop(&rec, cfg.concurrency, call)).await
}

/// Calls until one succeeds (the workers may still be registering), at most PROBE_LIMIT.
async fn probe<F, Fut>(call: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let until = Instant::now() + PROBE_LIMIT;
    loop {
        match call(0).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => {
                bail!("no successful call in {PROBE_LIMIT:?}; last error: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs `body`, a closed loop feeding `rec`, and cuts it off when it stalls past the window.
async fn run_recorder<T>(
    rec: &RefCell<Recorder>,
    body: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<()> {
    let cutoff = tokio::time::Instant::from_std(rec.borrow().end() + STALL_GRACE);
    tokio::select! {
        result = body => {
            if !rec.borrow().done() {
                let e = match result {
                    Ok(_) => anyhow!("load loop ended early"),
                    Err(e) => e,
                };
                bail!("{e:#}");
            }
        }
        _ = tokio::time::sleep_until(cutoff) => {
            rec.borrow_mut().finish(Instant::now(), true);
        }
    }
    Ok(())
}

/// Keeps `concurrency` futures of `call(slot)` in flight; each completion starts the next.
async fn futures_loop<F, Fut>(
    rec: &RefCell<Recorder>,
    concurrency: usize,
    call: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let timed = |slot: usize| {
        let fut = call(slot);
        async move {
            let t0 = Instant::now();
            let outcome = fut.await;
            (slot, t0, outcome)
        }
    };
    let mut in_flight = FuturesUnordered::new();
    for slot in 0..concurrency {
        in_flight.push(timed(slot));
    }
    while let Some((slot, t0, outcome)) = in_flight.next().await {
        if !rec.borrow_mut().complete(t0, outcome) {
            return Ok(());
        }
        in_flight.push(timed(slot));
    }
    Ok(())
}

/// `total` calls in flight over `conns` connections: how many on each.
fn split_in_flight(total: usize, conns: usize) -> Vec<usize> {
    let conns = conns.clamp(1, total);
    (0..conns)
        .map(|i| total / conns + usize::from(i < total % conns))
        .collect()
}

async fn dial(addr: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The writer half of a raw pipelined connection: whatever the reader queued in `out`,
/// in one write each time it is woken. Ends once the recorder is done.
async fn writer_loop(
    rec: &RefCell<Recorder>,
    out: &RefCell<BytesMut>,
    wake: &Notify,
    mut write: tokio::net::tcp::OwnedWriteHalf,
) -> anyhow::Result<()> {
    let mut local = BytesMut::with_capacity(64 * 1024);
    loop {
        wake.notified().await;
        if rec.borrow().done() {
            return Ok(());
        }
        std::mem::swap(&mut local, &mut *out.borrow_mut());
        if !local.is_empty() {
            write.write_all(&local).await?;
            local.clear();
        }
    }
}

/// One floor connection with `k` calls in flight: C_CALL frames of our codec, request id =
/// slot, answered by the echo server's S_CALL_RESULT.
async fn floor_conn(
    rec: &RefCell<Recorder>,
    stream: TcpStream,
    k: usize,
    cfg: &LoadConfig,
) -> anyhow::Result<()> {
    let (mut read, write) = stream.into_split();
    let out = RefCell::new(BytesMut::with_capacity(64 * 1024));
    let wake = Notify::new();
    let call = |slot: usize, out: &mut BytesMut| {
        let timeout_ms = CALL_TIMEOUT.as_millis() as u32;
        frames::put_call(out, slot as u64, timeout_ms, cfg.payload.clone());
    };
    let mut sent = vec![Instant::now(); k];
    for (slot, t0) in sent.iter_mut().enumerate() {
        *t0 = Instant::now();
        call(slot, &mut out.borrow_mut());
    }
    wake.notify_one();
    let reader = async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            if read.read_buf(&mut buf).await? == 0 {
                bail!("echo server closed the connection");
            }
            while let Some((request_id, ret)) = frames::take_result(&mut buf)? {
                let slot = request_id as usize;
                let t0 = *sent
                    .get(slot)
                    .ok_or_else(|| anyhow!("unknown request id"))?;
                let outcome = match ret == cfg.expect {
                    true => Ok(()),
                    false => Err("wrong answer".to_owned()),
                };
                if !rec.borrow_mut().complete(t0, outcome) {
                    wake.notify_one();
                    return Ok(());
                }
                sent[slot] = Instant::now();
                call(slot, &mut out.borrow_mut());
            }
            wake.notify_one();
        }
    };
    let writer = writer_loop(rec, &out, &wake, write);
    // Whichever ends first ends the connection: the reader when the window is over or on
    // an error, the writer on a write error.
    tokio::select! {
        r = reader => r,
        w = writer => w,
    }
}

/// One Gearman client connection with `k` jobs in flight: SUBMIT_JOB; JOB_CREATED (in
/// submission order) gives the handle; WORK_COMPLETE is matched by handle.
async fn gearman_conn(
    rec: &RefCell<Recorder>,
    stream: TcpStream,
    k: usize,
    cfg: &LoadConfig,
) -> anyhow::Result<()> {
    let (mut read, write) = stream.into_split();
    let out = RefCell::new(BytesMut::with_capacity(64 * 1024));
    let wake = Notify::new();
    let submit = |out: &mut BytesMut| {
        gearman::put_request(
            out,
            Packet::SUBMIT_JOB,
            &[FUNCTION.as_bytes(), b"", &cfg.payload],
        );
    };
    let mut awaiting_handle: VecDeque<Instant> = VecDeque::with_capacity(k);
    let mut running: HashMap<Bytes, Instant> = HashMap::with_capacity(k);
    for _ in 0..k {
        awaiting_handle.push_back(Instant::now());
        submit(&mut out.borrow_mut());
    }
    wake.notify_one();
    let reader = async {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            if read.read_buf(&mut buf).await? == 0 {
                bail!("gearmand closed the client connection");
            }
            while let Some((kind, data)) = gearman::take_response(&mut buf)? {
                let (handle, outcome) = match kind {
                    Packet::JOB_CREATED => {
                        let t0 = awaiting_handle
                            .pop_front()
                            .ok_or_else(|| anyhow!("JOB_CREATED for no submission"))?;
                        running.insert(data, t0);
                        continue;
                    }
                    Packet::WORK_COMPLETE => {
                        let args = gearman::split_args(&data, 2);
                        let ok = args.get(1).is_some_and(|r| *r == cfg.expect);
                        let outcome = match ok {
                            true => Ok(()),
                            false => Err("wrong answer".to_owned()),
                        };
                        (args[0].clone(), outcome)
                    }
                    Packet::WORK_FAIL | Packet::WORK_EXCEPTION => {
                        let args = gearman::split_args(&data, 2);
                        (args[0].clone(), Err("WORK_FAIL".to_owned()))
                    }
                    Packet::ERROR => bail!("gearmand error: {:?}", String::from_utf8_lossy(&data)),
                    _ => continue,
                };
                let t0 = running
                    .remove(&handle)
                    .ok_or_else(|| anyhow!("result for unknown handle {handle:?}"))?;
                if !rec.borrow_mut().complete(t0, outcome) {
                    wake.notify_one();
                    return Ok(());
                }
                awaiting_handle.push_back(Instant::now());
                submit(&mut out.borrow_mut());
            }
            wake.notify_one();
        }
    };
    let writer = writer_loop(rec, &out, &wake, write);
    // Whichever ends first ends the connection: the reader when the window is over or on
    // an error, the writer on a write error.
    tokio::select! {
        r = reader => r,
        w = writer => w,
    }
}
