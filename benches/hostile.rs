//! Run: `cargo bench --bench hostile -- [--nmid PATH]` (default `target/release/nmid`). What
//! the hostile and faulty peers of issue 12 do to a dispatcher binary, measured: memory
//! (the process's RSS), time, series, answers, exit status. Each pattern gets a fresh `nmid`
//! on 127.0.0.1 (default configuration unless the pattern says), killed by its PID after.
//! Pointing `--nmid` at an older build measures the "before" on the same machine: only
//! configuration keys that every version knows are set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use nmid::client::Client;
use nmid::codec::{self, CDoJob, Frame, NmidCodec, ParamsType, WReturnData, HANDLE_TYPE_ENCODE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// A running `nmid`, killed by its PID when dropped.
struct Nmid {
    child: Child,
    addr: SocketAddr,
    http: SocketAddr,
}

impl Nmid {
    /// Starts `binary` with the TOML `config` (keys every version knows) on 127.0.0.1:0.
    fn start(binary: &PathBuf, config: &str) -> Self {
        let file = std::env::temp_dir().join(format!("nmid-hostile-{}.toml", std::process::id()));
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(binary)
            .args(["--config", file.to_str().unwrap()])
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nmid");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut addr, mut http) = (None, None);
        while addr.is_none() || http.is_none() {
            let line = lines.next().expect("nmid logs its addresses").unwrap();
            let at = |line: &str| line.rsplit("addr=").next().unwrap().trim().parse().ok();
            if line.contains("nmid protocol listening") {
                addr = at(&line);
            } else if line.contains("http listening") {
                http = at(&line);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr: addr.unwrap(),
            http: http.unwrap(),
        }
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = (status.lines())
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap();
        kib * 1024
    }

    fn metrics(&self) -> String {
        let Ok(mut stream) = std::net::TcpStream::connect(self.http) else {
            return String::new();
        };
        let _ = write!(stream, "GET /metrics HTTP/1.0\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }
}

impl Drop for Nmid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(frame, &mut buf).unwrap();
    buf.to_vec()
}

fn call_bytes(function: &str, params: &[u8]) -> Vec<u8> {
    frame_bytes(&Frame::CDoJob(CDoJob {
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::copy_from_slice(function.as_bytes()),
        params: Bytes::copy_from_slice(params),
    }))
}

/// Connects and registers a raw v1 worker for `functions`, reading every `OK`.
async fn raw_worker(addr: SocketAddr, name: &str, functions: &[String]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = frame_bytes(&Frame::WSetName {
        name: Bytes::copy_from_slice(name.as_bytes()),
    });
    for f in functions {
        out.extend(frame_bytes(&Frame::WAddFunc {
            function: Bytes::copy_from_slice(f.as_bytes()),
        }));
    }
    stream.write_all(&out).await.unwrap();
    let mut buf = vec![0u8; 12 * (functions.len() + 1)];
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut buf)).await;
    stream
}

/// Whether the peer closed `stream` within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn echo_worker(addr: SocketAddr) -> nmid::worker::WorkerHandle {
    let worker = nmid::worker::Worker::builder()
        .name("echo")
        .server(addr.to_string())
        .function("Echo", |job: nmid::worker::Job| async move {
            Ok::<_, nmid::worker::JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    let client = Client::connect(addr.to_string()).await.unwrap();
    while client.call("Echo", &b"x"[..]).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker
}

async fn never_reading(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let worker = echo_worker(nmid.addr).await;
    let before = nmid.rss();
    let mut stream = TcpStream::connect(nmid.addr).await.unwrap();
    let call = call_bytes("Echo", &vec![b'x'; 64 * 1024]);
    let (mut sent, mut peak) = (0u64, before);
    while sent < 100 * MIB {
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&call)).await {
            Ok(Ok(())) => sent += call.len() as u64,
            _ => break,
        }
        peak = peak.max(nmid.rss());
    }
    // Still not reading for past `tcp.slow_consumer_timeout_ms` (10 s by default); only
    // then read, to see whether the dispatcher closed it (reading earlier would make it a
    // reader, which is not closed).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
    worker.stop().await;
    format!(
        "{} MiB of calls accepted of 100 MiB sent; RSS +{} MiB; closed after 12 s unread: {closed}",
        sent / MIB,
        peak.saturating_sub(before) / MIB
    )
}

async fn incomplete_frames(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let before = nmid.rss();
    let body = 16 * MIB as usize;
    let mut frame = BytesMut::with_capacity(12 + body);
    frame.put_u32(3);
    frame.put_u32(16);
    frame.put_u32(body as u32);
    frame.put_bytes(0, body - 1);
    let frame = frame.freeze();
    let mut streams = join_all((0..40).map(|_| {
        let frame = frame.clone();
        async move {
            let mut s = TcpStream::connect(nmid.addr).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(20), s.write_all(&frame)).await;
            s
        }
    }))
    .await;
    let peak = nmid.rss();
    tokio::time::sleep(Duration::from_secs(35)).await;
    let mut open = 0;
    for s in &mut streams {
        if !closed_within(s, Duration::from_millis(100)).await {
            open += 1;
        }
    }
    format!(
        "RSS +{} MiB at the peak, +{} MiB 35 s later; {open} of 40 still open",
        peak.saturating_sub(before) / MIB,
        nmid.rss().saturating_sub(before) / MIB
    )
}

async fn half_headers(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let before = nmid.rss();
    let mut streams = Vec::new();
    for _ in 0..5000 {
        let mut s = TcpStream::connect(nmid.addr).await.unwrap();
        s.write_all(&[0, 0, 0, 3, 0, 0]).await.unwrap();
        streams.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let each = nmid.rss().saturating_sub(before) / 5000;
    let mut closed = 0;
    tokio::time::sleep(Duration::from_secs(10)).await;
    for s in &mut streams {
        if closed_within(s, Duration::from_millis(10)).await {
            closed += 1;
        }
    }
    format!("{each} bytes each; {closed} of 5000 closed 12 s later")
}

async fn idle_lockout(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "[tcp]\nmax_connections = 1000\n");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(nmid.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut client = TcpStream::connect(nmid.addr).await.unwrap();
    client.write_all(&call_bytes("Nobody", b"x")).await.unwrap();
    let mut reply = [0u8; 12];
    let served = matches!(
        tokio::time::timeout(Duration::from_secs(3), client.read_exact(&mut reply)).await,
        Ok(Ok(_))
    );
    format!("1000 idle sockets on 1000 slots; a new client served 12 s later: {served}")
}

async fn many_functions(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let functions: Vec<String> = (0..20_000).map(|i| format!("F{i}")).collect();
    let worker = raw_worker(nmid.addr, "many", &functions).await;
    let during = nmid.metrics();
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let (s1, b1) = (series(&during), during.len());
    drop(worker);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = nmid.metrics();
    let after = nmid.metrics();
    format!(
        "while registered: {s1} series, /metrics {} KiB; after it left: {} series, {} KiB",
        b1 / 1024,
        series(&after),
        after.len() / 1024
    )
}

async fn control_flood(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let worker = echo_worker(nmid.addr).await;
    let client = Client::connect(nmid.addr.to_string()).await.unwrap();
    let mut flooder = raw_worker(nmid.addr, "flood", &[]).await;
    let mut flood = Vec::new();
    for _ in 0..100_000 {
        flood.extend(frame_bytes(&Frame::WAddFunc {
            function: Bytes::from_static(b"X"),
        }));
        flood.extend(frame_bytes(&Frame::WDelFunc {
            function: Bytes::from_static(b"X"),
        }));
    }
    let task = tokio::spawn(async move {
        let _ = flooder.write_all(&flood).await;
        flooder
    });
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let _ = client.call("Echo", &b"p"[..]).await;
        slowest = slowest.max(t.elapsed());
    }
    task.abort();
    worker.stop().await;
    format!("slowest call of another client during the flood: {slowest:?}")
}

async fn exact_fill(binary: &PathBuf) -> String {
    let nmid = Nmid::start(
        binary,
        "[tcp]\nmax_frame_bytes = 65536\n[jobs]\ntimeout_ms = 30000\n",
    );
    let worker = nmid::worker::Worker::builder()
        .server(nmid.addr.to_string())
        .max_frame_bytes(65536)
        .function("F", |job: nmid::worker::Job| async move {
            Ok::<_, nmid::worker::JobError>(job.params().clone())
        })
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut client = TcpStream::connect(nmid.addr).await.unwrap();
    client
        .write_all(&call_bytes("F", &vec![b'p'; 65536 - 17]))
        .await
        .unwrap();
    let started = Instant::now();
    let mut reply = [0u8; 12];
    let got = tokio::time::timeout(Duration::from_secs(40), client.read_exact(&mut reply)).await;
    let kind = u32::from_be_bytes(reply[4..8].try_into().unwrap());
    worker.stop().await;
    format!(
        "params filling max_frame_bytes: answered (data type {kind}) after {:?}: {}",
        started.elapsed(),
        got.is_ok()
    )
}

async fn drain(binary: &PathBuf) -> String {
    let mut nmid = Nmid::start(binary, "[server]\ndrain_timeout_ms = 1000\n");
    let mut worker = raw_worker(nmid.addr, "stuck", &["Stuck".to_owned()]).await;
    let mut callers = Vec::new();
    for i in 0..1000 {
        let mut c = TcpStream::connect(nmid.addr).await.unwrap();
        c.write_all(&call_bytes("Stuck", format!("{i}").as_bytes()))
            .await
            .unwrap();
        callers.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &nmid.child.id().to_string()])
        .status();
    let answered = Arc::new(AtomicU64::new(0));
    join_all(callers.iter_mut().map(|c| {
        let answered = answered.clone();
        async move {
            let mut reply = [0u8; 12];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut reply)).await
            {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
    .await;
    let status = nmid.child.wait().unwrap();
    let mut sink = [0u8; 1];
    let _ = worker.read(&mut sink).await;
    format!(
        "SIGTERM past the drain: {} of 1000 callers answered; exit status {:?}",
        answered.load(Ordering::Relaxed),
        status.code()
    )
}

async fn go_worker_race(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let worker = raw_worker(nmid.addr, "racy", &["Up".to_owned()]).await;
    tokio::spawn(racy(worker));
    let client = Client::connect(nmid.addr.to_string()).await.unwrap();
    let (next, right, wrong, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    join_all((0..64).map(|_| {
        let (client, next, right, wrong, errors) = (
            client.clone(),
            next.clone(),
            right.clone(),
            wrong.clone(),
            errors.clone(),
        );
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= 20_000 {
                    break;
                }
                let params = format!("p{n}");
                let call = tokio::time::timeout(
                    Duration::from_secs(35),
                    client.call("Up", params.clone()),
                );
                match call.await {
                    Ok(Ok(ret)) if ret == params.to_uppercase() => {
                        right.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(Ok(_)) => wrong.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }))
    .await;
    format!(
        "nmid's Go worker race, 20,000 calls from 64 callers: {} right, {} misrouted, {} failed",
        right.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    )
}

/// A v1 worker racing as nmid's Go SDK does when two jobs overlap on its connection.
async fn racy(stream: TcpStream) {
    use futures_util::{SinkExt, StreamExt};
    let mut conn = tokio_util::codec::Framed::new(stream, NmidCodec::default());
    let mut waiting = std::collections::VecDeque::new();
    let mut replies = 0u64;
    loop {
        if waiting.is_empty() {
            match conn.next().await {
                Some(Ok(Frame::SGetData(job))) => waiting.push_back(job),
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
        while let Some(Some(Ok(frame))) = futures_util::FutureExt::now_or_never(conn.next()) {
            if let Frame::SGetData(job) = frame {
                waiting.push_back(job);
            }
        }
        let job = waiting.pop_front().unwrap();
        replies += 1;
        let job_id = match waiting.front() {
            Some(other) if replies.is_multiple_of(10) => other.job_id.clone(),
            _ => job.job_id.clone(),
        };
        let ret = Bytes::from(String::from_utf8_lossy(&job.params).to_uppercase());
        let frame = Frame::WReturnData(WReturnData {
            function: job.function,
            params: job.params,
            ret,
            job_id,
        });
        if conn.send(frame).await.is_err() {
            return;
        }
    }
}

async fn grab_body(binary: &PathBuf) -> String {
    let nmid = Nmid::start(binary, "");
    let mut worker = raw_worker(nmid.addr, "c-sdk", &["F".to_owned()]).await;
    worker
        .write_all(&[0, 0, 0, 2, 0, 0, 0, 12, 0, 0, 0, 1, 0])
        .await
        .unwrap();
    let closed = closed_within(&mut worker, Duration::from_secs(2)).await;
    format!("W_GRAB_JOB with a 1-byte body (nmid's C SDK): connection closed: {closed}")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .iter()
        .position(|a| a == "--nmid")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nmid"))
        });
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    println!("hostile peers against {}", binary.display());
    actix_rt::System::new().block_on(async move {
        type Pattern = for<'a> fn(
            &'a PathBuf,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = String> + 'a>,
        >;
        let patterns: [(&str, Pattern); 10] = [
            ("never_reading", |b| Box::pin(never_reading(b))),
            ("incomplete_frames", |b| Box::pin(incomplete_frames(b))),
            ("half_headers", |b| Box::pin(half_headers(b))),
            ("idle_lockout", |b| Box::pin(idle_lockout(b))),
            ("many_functions", |b| Box::pin(many_functions(b))),
            ("control_flood", |b| Box::pin(control_flood(b))),
            ("exact_fill", |b| Box::pin(exact_fill(b))),
            ("drain", |b| Box::pin(drain(b))),
            ("go_worker_race", |b| Box::pin(go_worker_race(b))),
            ("grab_body", |b| Box::pin(grab_body(b))),
        ];
        for (name, pattern) in patterns {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            println!("| {name} | {} |", pattern(&binary).await);
        }
    });
}
