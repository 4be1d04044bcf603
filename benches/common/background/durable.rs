//! The durable table's systems. Each run starts its server afresh on an empty store, a
//! worker pool of 64 slots answering at once (`Echo`: the payload upper-cased, counted),
//! then `submitters` submitters of 32-byte jobs, and ends when the system holds no job
//! queued or running.
//!
//! - *us-always* / *us-interval*: the release `nmid` with `jobs.data_dir` in the run's
//!   temporary directory and `jobs.fsync = "always"` (a submission is answered once its
//!   batch is fsynced) or `"interval"` (answered once committed; fsynced within
//!   `jobs.fsync_interval_ms`, 100 ms: a crash may lose that much). Submissions: the client library's `submit` (tagged
//!   `C_SUBMIT`, answered once the job is fsynced), one nmid-protocol connection per
//!   submitter. Worker: our worker library, one connection, 64 slots. Final:
//!   `GET /api/v1/jobs?state=queued&limit=1` and `state=running` both empty.
//! - *gearmand-sqlite*: `gearmand -q libsqlite3 --libsqlite3-db=<tmp>/gearman.sqlite`
//!   (SQLite's defaults: rollback journal, `synchronous = FULL`, each job's INSERT its own
//!   transaction before `JOB_CREATED`). Submissions: `SUBMIT_JOB_BG`, `JOB_CREATED`
//!   awaited, one connection per submitter. Workers: 64 connections doing `GRAB_JOB` /
//!   `WORK_COMPLETE`. Final: the admin `status` lists no `Echo` job.
//! - *jetstream*: `nats-server -js -sd <tmp>` (2.9: file-store blocks fsynced every 2
//!   minutes, its built-in sync interval, not configurable before 2.10; a publish is acked
//!   once the message is written to the OS). A stream of retention WorkQueue, file storage,
//!   on subject `jobs.echo`; submissions: async-nats JetStream `publish`, the ack awaited,
//!   one connection per publisher. Workers: one connection, a durable pull consumer with
//!   explicit acks, 64 tasks each pulling (batches of 8) and acking. Final: the stream
//!   holds no message.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use super::{judge, parse, submit_all, wait_final, JobsRun};
use crate::common::procs;
use crate::common::roles::gearman::{self, Packet};
use crate::common::roles::servers::{gearman_register, gearman_serve};
use crate::common::roles::upper;
use crate::common::systems::Launcher;
use crate::common::{payload, FUNCTION};
use nmid::worker::{Job, JobError, Worker};

/// nmid, `jobs.fsync = "always"`: the row the ratios divide by.
pub const US_ALWAYS: &str = "us-always";
/// nmid, `jobs.fsync = "interval"`.
pub const US_INTERVAL: &str = "us-interval";
/// gearmand with its SQLite queue.
pub const GEARMAND: &str = "gearmand-sqlite";
/// nats-server JetStream, a work-queue stream.
pub const JETSTREAM: &str = "jetstream";
/// Every system of the durable table, in its order.
pub const ALL: [&str; 4] = [US_ALWAYS, US_INTERVAL, GEARMAND, JETSTREAM];

/// Worker slots of every system's pool.
pub const SLOTS: usize = 64;
/// The payload of every job, in bytes.
pub const PAYLOAD: usize = 32;
/// gearmand's `SUBMIT_JOB_BG` packet type.
const SUBMIT_JOB_BG: u32 = 18;
/// The JetStream stream, its subject and its consumer.
const STREAM: &str = "JOBS";
const SUBJECT: &str = "jobs.echo";
const CONSUMER: &str = "workers";

/// The table's label of `system`: what runs, and how durable an accepted job is.
pub fn label(system: &str) -> String {
    match system {
        US_ALWAYS => "us: nmid, client.submit (tagged C_SUBMIT), jobs.fsync = always (answered once fsynced)",
        US_INTERVAL => "us: nmid, client.submit (tagged C_SUBMIT), jobs.fsync = interval (answered once committed, fsynced ≤ 100 ms later)",
        GEARMAND => "gearmand 1.1.20 -q libsqlite3, SUBMIT_JOB_BG (SQLite synchronous=FULL, a transaction per job)",
        JETSTREAM => "nats-server 2.9 JetStream work queue, file store, publish acked (fsync every 2 min)",
        other => other,
    }
    .to_owned()
}

/// Runs `system` once: `jobs` jobs by `submitters` submitters, on the submitters' runtime
/// `rt`. A system that fails gives a failed run, not an error.
pub fn run(l: &Launcher, rt: &Runtime, system: &str, submitters: usize, jobs: u64) -> JobsRun {
    let store = l.logs().join(format!("store-{system}-{submitters}"));
    let _ = std::fs::remove_dir_all(&store);
    let result = std::fs::create_dir_all(&store)
        .map_err(anyhow::Error::from)
        .and_then(|()| match system {
            US_ALWAYS => run_us(l, rt, "always", &store, submitters, jobs),
            US_INTERVAL => run_us(l, rt, "interval", &store, submitters, jobs),
            GEARMAND => run_gearmand(l, rt, &store, submitters, jobs),
            JETSTREAM => run_jetstream(l, rt, &store, submitters, jobs),
            other => Err(anyhow!("unknown system {other}")),
        });
    let _ = std::fs::remove_dir_all(&store);
    match result {
        Ok(run) => JobsRun {
            system: system.to_owned(),
            ..run
        },
        Err(e) => JobsRun::failed(system, submitters, jobs, format!("{e:#}")),
    }
}

/// A worker pool on a thread of its own, stopped (and joined) when dropped.
pub struct PoolThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl PoolThread {
    /// Runs `serve` on a thread with a single-threaded runtime until dropped; `serve` gets
    /// a channel on which to say it serves, and this returns once it did (or failed).
    pub fn spawn<F, Fut>(serve: F) -> anyhow::Result<Self>
    where
        F: FnOnce(oneshot::Sender<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let (serving_tx, serving) = oneshot::channel();
                let work = serve(serving_tx);
                tokio::pin!(work);
                tokio::select! {
                    result = &mut work => {
                        let _ = ready_tx.send(Err(anyhow!("worker pool ended: {:?}", result.as_ref().err())));
                        return result;
                    }
                    _ = serving => {}
                }
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    result = work => result,
                    _ = stopped => Ok(()),
                }
            })
        });
        match ready_rx.recv_timeout(crate::common::systems::START_LIMIT) {
            Ok(Ok(())) => Ok(Self {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("the worker pool did not start in time"),
        }
    }
}

impl Drop for PoolThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Our worker library on `addr`: one connection of [`SLOTS`] slots serving `Echo`,
/// counting its executions in `done`.
pub fn nmid_pool(addr: String, done: Arc<AtomicU64>) -> anyhow::Result<PoolThread> {
    PoolThread::spawn(move |serving| async move {
        let handle = Worker::builder()
            .name(format!("bench-jobs-{}", std::process::id()))
            .server(addr)
            .slots(SLOTS as u32)
            .function(FUNCTION, move |job: Job| {
                done.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, JobError>(upper(job.params())) }
            })
            .start()
            .map_err(|e| anyhow!("worker: {e}"))?;
        let _ = serving.send(());
        std::future::pending::<()>().await;
        drop(handle);
        Ok(())
    })
}

/// Waits until a call of `Echo` through nmid at `addr` answers (the worker registered).
async fn wait_echo(addr: &str) -> anyhow::Result<()> {
    let client = nmid::client::Client::connect(addr.to_owned()).await?;
    let until = Instant::now() + crate::common::systems::START_LIMIT;
    loop {
        match client.call(FUNCTION, payload(PAYLOAD)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > until => bail!("Echo never answered: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

fn run_us(
    l: &Launcher,
    rt: &Runtime,
    fsync: &str,
    store: &Path,
    submitters: usize,
    jobs: u64,
) -> anyhow::Result<JobsRun> {
    let config = store.join("nmid.toml");
    std::fs::write(
        &config,
        format!(
            "[jobs]\ndata_dir = \"{}\"\nfsync = \"{fsync}\"\n",
            store.join("jobs").display()
        ),
    )?;
    let ports = l.ports();
    let config = config.display().to_string();
    let server = l.start_nmid_with(Some(ports.nmid_http), None, &["--config", &config])?;
    let addr = format!("127.0.0.1:{}", ports.nmid_tcp);
    let done = Arc::new(AtomicU64::new(0));
    let _pool = nmid_pool(addr.clone(), done.clone())?;
    rt.block_on(wait_echo(&addr))?;
    // The probe call above is a call, not a background job: count only the jobs.
    done.store(0, Ordering::Relaxed);
    let body = Bytes::from(payload(PAYLOAD));
    let http = ports.nmid_http;
    let cpu0 = server.cpu_seconds()?;
    let run = rt.block_on(async move {
        // One nmid-protocol connection per submitter; each submission (C_SUBMIT) answered
        // S_SUBMITTED once its job is fsynced.
        let connect = |_| {
            let addr = addr.clone();
            async move { anyhow::Ok(nmid::client::Client::connect(addr).await?) }
        };
        let submit = move |client: nmid::client::Client| {
            let body = body.clone();
            async move {
                let options = nmid::client::SubmitOptions::default();
                client.submit(FUNCTION, body, options).await?;
                anyhow::Ok(client)
            }
        };
        let (started, submitted, hist) = submit_all(submitters, jobs, connect, submit).await?;
        let none_in = |state: &'static str| {
            let body = procs::http_get(http, &format!("/api/v1/jobs?state={state}&limit=1"))?;
            parse::jobs_page_empty(&body).map_err(|e| anyhow!(e))
        };
        let finished = wait_final(&done, jobs, || async {
            Ok(none_in("queued")? && none_in("running")?)
        })
        .await?;
        anyhow::Ok(judge(
            US_ALWAYS,
            submitters,
            jobs,
            submitted,
            finished - started,
            &hist,
        ))
    })?;
    Ok(with_server_cpu(run, &server, cpu0, jobs))
}

/// `run` with the server's CPU time per 1000 jobs since `cpu0` (its CPU seconds then).
fn with_server_cpu(run: JobsRun, server: &procs::Proc, cpu0: f64, jobs: u64) -> JobsRun {
    let cpu = server.cpu_seconds().map_or(0.0, |now| now - cpu0);
    JobsRun {
        server_cpu_ms_per_1k: cpu * 1000.0 * 1000.0 / jobs.max(1) as f64,
        ..run
    }
}

/// One Gearman client connection: the stream, what was read, what to write.
struct GearmanConn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

async fn gearman_submit(mut c: GearmanConn, body: Bytes) -> anyhow::Result<GearmanConn> {
    gearman::put_request(
        &mut c.out,
        SUBMIT_JOB_BG,
        &[FUNCTION.as_bytes(), b"", &body],
    );
    c.stream.write_all(&c.out).await?;
    c.out.clear();
    loop {
        while let Some((kind, data)) = gearman::take_response(&mut c.buf)? {
            match kind {
                Packet::JOB_CREATED => return Ok(c),
                Packet::ERROR => bail!("gearmand: {:?}", String::from_utf8_lossy(&data)),
                _ => {}
            }
        }
        if c.stream.read_buf(&mut c.buf).await? == 0 {
            bail!("gearmand closed a client connection");
        }
    }
}

/// Jobs of `Echo` gearmand holds, from its admin `status`.
fn gearman_pending(port: u16) -> anyhow::Result<u64> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    stream.write_all(b"status\n")?;
    let mut text = String::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = parse::gearman_pending(&text, FUNCTION) {
            return Ok(n);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 || text.len() > 1 << 20 {
            bail!("gearmand's status answer ended early: {text:.200}");
        }
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

fn run_gearmand(
    l: &Launcher,
    rt: &Runtime,
    store: &Path,
    submitters: usize,
    jobs: u64,
) -> anyhow::Result<JobsRun> {
    let db = store.join("gearman.sqlite");
    let server = l.start_gearmand_server(&[
        "--queue-type=libsqlite3".to_owned(),
        format!("--libsqlite3-db={}", db.display()),
    ])?;
    let port = l.ports().gearmand;
    let addr = format!("127.0.0.1:{port}");
    let done = Arc::new(AtomicU64::new(0));
    let pool_addr = addr.clone();
    let pool_done = done.clone();
    let _pool = PoolThread::spawn(move |serving| async move {
        let mut streams = Vec::new();
        for _ in 0..SLOTS {
            streams.push(gearman_register(&pool_addr).await?);
        }
        let _ = serving.send(());
        let loops = streams
            .into_iter()
            .map(|s| gearman_serve(s, pool_done.clone()));
        for result in futures_util::future::join_all(loops).await {
            result?;
        }
        Ok(())
    })?;
    let body = Bytes::from(payload(PAYLOAD));
    let cpu0 = server.cpu_seconds()?;
    let run = rt.block_on(async move {
        let connect = |_| {
            let addr = addr.clone();
            async move {
                let stream = TcpStream::connect(&addr)
                    .await
                    .with_context(|| format!("connect to gearmand at {addr}"))?;
                stream.set_nodelay(true)?;
                anyhow::Ok(GearmanConn {
                    stream,
                    buf: BytesMut::with_capacity(4096),
                    out: BytesMut::with_capacity(256),
                })
            }
        };
        let submit = move |c| gearman_submit(c, body.clone());
        let (started, submitted, hist) = submit_all(submitters, jobs, connect, submit).await?;
        let finished =
            wait_final(&done, jobs, || async { Ok(gearman_pending(port)? == 0) }).await?;
        anyhow::Ok(judge(
            GEARMAND,
            submitters,
            jobs,
            submitted,
            finished - started,
            &hist,
        ))
    })?;
    Ok(with_server_cpu(run, &server, cpu0, jobs))
}

fn run_jetstream(
    l: &Launcher,
    rt: &Runtime,
    store: &Path,
    submitters: usize,
    jobs: u64,
) -> anyhow::Result<JobsRun> {
    use async_nats::jetstream::{self, consumer, stream};
    let server = l.start_nats_jetstream(&store.join("jetstream"))?;
    let addr = format!("127.0.0.1:{}", l.ports().nats);
    let js = rt.block_on(async {
        let js = jetstream::new(async_nats::connect(&addr).await?);
        let stream = js
            .create_stream(stream::Config {
                name: STREAM.to_owned(),
                subjects: vec![SUBJECT.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create the stream: {e}"))?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create the consumer: {e}"))?;
        anyhow::Ok(js)
    })?;
    let done = Arc::new(AtomicU64::new(0));
    let pool_addr = addr.clone();
    let pool_done = done.clone();
    let _pool = PoolThread::spawn(move |serving| async move {
        let js = jetstream::new(async_nats::connect(&pool_addr).await?);
        let consumer: consumer::PullConsumer = js
            .get_consumer_from_stream(CONSUMER, STREAM)
            .await
            .map_err(|e| anyhow!("get the consumer: {e}"))?;
        let mut slots = Vec::new();
        for _ in 0..SLOTS {
            let messages = consumer
                .stream()
                .max_messages_per_batch(8)
                .messages()
                .await
                .map_err(|e| anyhow!("pull: {e}"))?;
            slots.push(messages);
        }
        let _ = serving.send(());
        let loops = slots.into_iter().map(|mut messages| {
            let done = pool_done.clone();
            async move {
                while let Some(message) = messages.next().await {
                    let message = message.map_err(|e| anyhow!("pull: {e}"))?;
                    let _answer = upper(&message.payload);
                    message.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }
        });
        for result in futures_util::future::join_all(loops).await {
            result?;
        }
        Ok(())
    })?;
    let body = Bytes::from(payload(PAYLOAD));
    let cpu0 = server.cpu_seconds()?;
    let run = rt.block_on(async move {
        let connect = |_| {
            let addr = addr.clone();
            async move { anyhow::Ok(jetstream::new(async_nats::connect(&addr).await?)) }
        };
        let submit = move |js: jetstream::Context| {
            let body = body.clone();
            async move {
                js.publish(SUBJECT, body)
                    .await
                    .map_err(|e| anyhow!("publish: {e}"))?
                    .await
                    .map_err(|e| anyhow!("publish ack: {e}"))?;
                anyhow::Ok(js)
            }
        };
        let (started, submitted, hist) = submit_all(submitters, jobs, connect, submit).await?;
        let finished = wait_final(&done, jobs, || {
            let js = js.clone();
            async move {
                let mut stream = js
                    .get_stream(STREAM)
                    .await
                    .map_err(|e| anyhow!("get the stream: {e}"))?;
                let info = stream
                    .info()
                    .await
                    .map_err(|e| anyhow!("stream info: {e}"))?;
                Ok(info.state.messages == 0)
            }
        })
        .await?;
        anyhow::Ok(judge(
            JETSTREAM,
            submitters,
            jobs,
            submitted,
            finished - started,
            &hist,
        ))
    })?;
    Ok(with_server_cpu(run, &server, cpu0, jobs))
}
