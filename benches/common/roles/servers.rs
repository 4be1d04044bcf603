//! Server-side roles, each run in a process of its own (re-executed from the harness binary
//! with `--role NAME`) so that its CPU time can be read from /proc:
//!
//! - `nmid-worker`: our worker library (`nmid::worker::Worker`) serving `Echo`;
//! - `nats-responder`: async-nats queue-group responders on subject `echo`, `--conns`
//!   connections (one subscription each) in one process;
//! - `gearman-worker`: Gearman binary-protocol workers (CAN_DO, GRAB_JOB, PRE_SLEEP/NOOP,
//!   WORK_COMPLETE);
//! - `echo-server`: the one-hop floor, answering our tagged `C_CALL` frames directly;
//! - `http-echo-server`: the HTTP floor, a bare actix-web server answering `POST /call/Echo`
//!   itself (no middleware, no dispatcher), with as many workers as nmid's HTTP front end.
//!
//! Each prints `READY` on stdout once it serves, or `FAIL <reason>` and exits 1.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::frames;
use super::gearman::{self, Packet};
use super::{current_thread, upper, RoleName, NATS_QUEUE, NATS_SUBJECT};
use crate::common::options::ChildOptions;
use crate::common::FUNCTION;
use nmid::worker::{Job, JobError, Worker};

/// Runs the server role `role` until the harness closes stdin.
pub fn run(role: RoleName, args: &ChildOptions) -> anyhow::Result<()> {
    match role {
        RoleName::NmidWorker => nmid_worker(args),
        RoleName::NatsResponder => current_thread()?.block_on(nats_responders(args)),
        RoleName::GearmanWorker => current_thread()?.block_on(gearman_workers(args)),
        RoleName::EchoServer => current_thread()?.block_on(echo_server(args.port)),
        RoleName::HttpEchoServer => http_echo_server(args.port, args.workers),
        RoleName::Load => bail!("the load role is not a server"),
    }
}

/// `--sessions` workers (one dispatcher connection each) with `--slots`, serving `Echo` and
/// `--functions - 1` dummy functions, on one actix system.
fn nmid_worker(args: &ChildOptions) -> anyhow::Result<()> {
    let addr = args.addr()?.to_owned();
    let (slots, functions, sessions) = (args.slots, args.functions, args.sessions);
    actix_rt::System::new().block_on(async move {
        let mut handles = Vec::new();
        for s in 0..sessions {
            let mut builder = super::with_bench_tls(Worker::builder(), |b, tls| b.tls(tls))
                .name(format!("bench-{}-{s}", std::process::id()))
                .server(addr.clone())
                .slots(slots)
                .function(FUNCTION, |job: Job| async move {
                    Ok::<_, JobError>(upper(job.params()))
                });
            for f in 1..functions {
                builder = builder.function(format!("Dummy{f:04}"), |job: Job| async move {
                    Ok::<_, JobError>(job.params().clone())
                });
            }
            handles.push(builder.start().map_err(|e| anyhow!("worker: {e}"))?);
        }
        println!("READY");
        std::future::pending::<()>().await;
        drop(handles);
        anyhow::Ok(())
    })
}

/// `--conns` NATS connections (default 1), each with a subscription of its own in the queue
/// group, so that nats-server spreads the requests over them as nmid spreads calls over
/// worker connections; each request's reply is the payload upper-cased. `READY` once every
/// subscription is flushed (nats-server has it).
async fn nats_responders(args: &ChildOptions) -> anyhow::Result<()> {
    let addr = args.addr()?;
    let mut subscribed = Vec::new();
    for _ in 0..args.conns.unwrap_or(1).max(1) {
        let client = async_nats::connect(addr)
            .await
            .with_context(|| format!("connect to nats-server at {addr}"))?;
        let requests = client
            .queue_subscribe(NATS_SUBJECT, NATS_QUEUE.to_owned())
            .await?;
        client.flush().await?;
        subscribed.push((client, requests));
    }
    println!("READY");
    let loops = subscribed
        .into_iter()
        .map(|(client, requests)| nats_serve(client, requests));
    futures_util::future::try_join_all(loops).await?;
    Ok(())
}

/// Answers the requests of one subscription on its own connection; ends only in error.
async fn nats_serve(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
) -> anyhow::Result<()> {
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            client.publish(reply, upper(&request.payload)).await?;
        }
    }
    bail!("nats-server closed the subscription")
}

/// `--conns` Gearman worker connections serving `Echo`, one job at a time each.
async fn gearman_workers(args: &ChildOptions) -> anyhow::Result<()> {
    let addr = args.addr()?.to_owned();
    let conns = args.conns.unwrap_or(2);
    let mut streams = Vec::new();
    for _ in 0..conns {
        streams.push(gearman_register(&addr).await?);
    }
    println!("READY");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loops = streams.into_iter().map(|s| gearman_serve(s, done.clone()));
    for result in futures_util::future::join_all(loops).await {
        result?;
    }
    Ok(())
}

/// Connects and registers `Echo`; returns once gearmand has processed the registration
/// (its answer to an ECHO_REQ sent after CAN_DO).
pub async fn gearman_register(addr: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to gearmand at {addr}"))?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    gearman::put_request(&mut out, Packet::CAN_DO, &[FUNCTION.as_bytes()]);
    gearman::put_request(&mut out, Packet::ECHO_REQ, &[b"ready"]);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let registered = async {
        loop {
            while let Some((kind, _)) = gearman::take_response(&mut buf)? {
                if kind == Packet::ECHO_RES {
                    return anyhow::Ok(());
                }
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("gearmand closed the connection");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), registered)
        .await
        .map_err(|_| anyhow!("gearmand did not answer ECHO_REQ"))??;
    Ok(stream)
}

/// GRAB_JOB -> JOB_ASSIGN -> WORK_COMPLETE (+ the next GRAB_JOB in the same write); on
/// NO_JOB, PRE_SLEEP until gearmand's NOOP wakes us. Counts the jobs completed in `done`.
pub async fn gearman_serve(
    mut stream: TcpStream,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<()> {
    let mut out = BytesMut::with_capacity(8192);
    let mut buf = BytesMut::with_capacity(8192);
    let mut sleeping = false;
    gearman::put_request(&mut out, Packet::GRAB_JOB, &[]);
    loop {
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("gearmand closed the worker connection");
        }
        while let Some((kind, data)) = gearman::take_response(&mut buf)? {
            match kind {
                Packet::JOB_ASSIGN => {
                    let args = gearman::split_args(&data, 3);
                    let [handle, _function, arg] = &args[..] else {
                        bail!("gearman: short JOB_ASSIGN");
                    };
                    gearman::put_request(&mut out, Packet::WORK_COMPLETE, &[handle, &upper(arg)]);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    gearman::put_request(&mut out, Packet::GRAB_JOB, &[]);
                }
                Packet::NO_JOB => {
                    sleeping = true;
                    gearman::put_request(&mut out, Packet::PRE_SLEEP, &[]);
                }
                Packet::NOOP if sleeping => {
                    sleeping = false;
                    gearman::put_request(&mut out, Packet::GRAB_JOB, &[]);
                }
                Packet::ERROR => bail!("gearmand error: {:?}", String::from_utf8_lossy(&data)),
                _ => {}
            }
        }
    }
}

/// The one-hop floor: answers each `C_CALL` with `S_CALL_RESULT` (payload upper-cased) on
/// the same connection, all frames read at once answered in one write.
async fn echo_server(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("READY");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = echo_connection(stream).await {
                eprintln!("echo-server: connection ended: {e:#}");
            }
        });
    }
}

async fn echo_connection(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        frames::answer_calls(&mut buf, &mut out, upper)?;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// The HTTP floor: `POST /call/{function}` answered with the body upper-cased, as nmid's
/// HTTP front end answers `Echo` (the same content type: the answer is UTF-8, not JSON), on
/// `workers` actix-web worker threads.
fn http_echo_server(port: u16, workers: usize) -> anyhow::Result<()> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    async fn echo(body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(upper(&body))
    }
    actix_rt::System::new().block_on(async move {
        let server = HttpServer::new(|| App::new().route("/call/{function}", web::post().to(echo)))
            .workers(workers)
            .disable_signals()
            .bind(("127.0.0.1", port))
            .with_context(|| format!("bind 127.0.0.1:{port}"))?
            .run();
        println!("READY");
        server.await?;
        bail!("the actix-web server stopped")
    })
}
