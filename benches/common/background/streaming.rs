//! Streaming: partial results per second to one caller, one call at a time.
//!
//! - *us*: the release `nmid` (`--no-http`), our worker library serving `Stream`, which
//!   sends `partials` partials of 32 bytes (`job.send_partial`) and then answers; the
//!   caller is our client's `call_stream` (tagged), counting the partials until the result.
//! - *nats*: `nats-server` and a responder on subject `stream` publishing `partials`
//!   messages of 32 bytes to the request's reply inbox, then an empty one to end; the
//!   requester subscribes to a fresh inbox, flushes, publishes the request with that reply
//!   subject and counts the messages until the empty one (NATS multi-reply).
//!
//! Each call is timed from its request to its end; partials/s = partials / that time. The
//! first call of each system warms up and is not counted; the table gives the median of
//! `reps` calls (and min–max).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::runtime::Runtime;

use super::durable::{PoolThread, PAYLOAD};
use crate::common::markdown::kilo;
use crate::common::payload;
use crate::common::report::median;
use crate::common::systems::Launcher;
use nmid::client::{CallOptions, Client, StreamEvent};
use nmid::worker::{Job, JobError, Worker};

/// The function (and NATS subject) that streams.
const STREAM_FUNCTION: &str = "Stream";
/// The longest one streaming call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// What one system's streaming calls measured.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRun {
    /// `us` or `nats`.
    pub system: String,
    /// Partials per call.
    pub partials: u64,
    /// Partials per second of each measured call.
    pub per_call: Vec<f64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl StreamRun {
    /// The median of the calls' partials/s.
    pub fn median(&self) -> f64 {
        median(&mut self.per_call.clone())
    }
}

/// Runs `system` (`us` or `nats`): one warm-up call and `reps` measured calls of
/// `partials` partials each.
pub fn run(l: &Launcher, rt: &Runtime, system: &str, partials: u64, reps: usize) -> StreamRun {
    let result = match system {
        "us" => run_us(l, rt, partials, reps),
        "nats" => run_nats(l, rt, partials, reps),
        other => Err(anyhow!("unknown streaming system {other}")),
    };
    let (per_call, error) = match result {
        Ok(v) => (v, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    StreamRun {
        system: system.to_owned(),
        partials,
        per_call,
        error,
    }
}

/// Times `reps + 1` calls of `one` (the first not counted); partials/s of each.
async fn time_calls<F, Fut>(partials: u64, reps: usize, mut one: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut rates = Vec::new();
    for rep in 0..=reps {
        let t0 = Instant::now();
        let got = tokio::time::timeout(CALL_LIMIT, one())
            .await
            .map_err(|_| anyhow!("a streaming call took over {CALL_LIMIT:?}"))??;
        let took = t0.elapsed();
        if got != partials {
            bail!("{got} partials arrived of {partials}");
        }
        if rep > 0 {
            rates.push(partials as f64 / took.as_secs_f64().max(1e-9));
        }
    }
    Ok(rates)
}

fn run_us(l: &Launcher, rt: &Runtime, partials: u64, reps: usize) -> anyhow::Result<Vec<f64>> {
    let _nmid = l.start_nmid(None, None)?;
    let addr = format!("127.0.0.1:{}", l.ports().nmid_tcp);
    let pool_addr = addr.clone();
    let _pool = PoolThread::spawn(move |serving| async move {
        let handle = Worker::builder()
            .name(format!("bench-stream-{}", std::process::id()))
            .server(pool_addr)
            .function(STREAM_FUNCTION, move |job: Job| async move {
                let piece = Bytes::from(payload(PAYLOAD));
                for _ in 0..partials {
                    job.send_partial(piece.clone())
                        .map_err(|e| JobError::new(e.to_string()))?;
                }
                Ok::<_, JobError>(Bytes::from_static(b"done"))
            })
            .start()
            .map_err(|e| anyhow!("worker: {e}"))?;
        let _ = serving.send(());
        std::future::pending::<()>().await;
        drop(handle);
        Ok(())
    })?;
    rt.block_on(async move {
        let client = Client::connect(addr).await?;
        // Until the worker has registered, a call finds no worker.
        let until = Instant::now() + crate::common::systems::START_LIMIT;
        while let Err(e) = client.call(STREAM_FUNCTION, payload(PAYLOAD)).await {
            if Instant::now() > until {
                bail!("{STREAM_FUNCTION} never answered: {e}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        time_calls(partials, reps, || {
            let client = client.clone();
            async move {
                let mut events = client
                    .call_stream(STREAM_FUNCTION, payload(PAYLOAD), CallOptions::default())
                    .await?;
                let mut got = 0;
                while let Some(event) = events.next().await {
                    match event? {
                        StreamEvent::Partial(_) => got += 1,
                        StreamEvent::Progress { .. } => {}
                        StreamEvent::Done(_) => return Ok(got),
                    }
                }
                bail!("the stream ended without a result")
            }
        })
        .await
    })
}

fn run_nats(l: &Launcher, rt: &Runtime, partials: u64, reps: usize) -> anyhow::Result<Vec<f64>> {
    let _nats = l.start_nats(0, 1)?;
    let addr = format!("127.0.0.1:{}", l.ports().nats);
    let pool_addr = addr.clone();
    let _responder = PoolThread::spawn(move |serving| async move {
        let client = async_nats::connect(&pool_addr).await?;
        let mut requests = client.subscribe(STREAM_FUNCTION).await?;
        client.flush().await?;
        let _ = serving.send(());
        let piece = Bytes::from(payload(PAYLOAD));
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            for _ in 0..partials {
                client.publish(reply.clone(), piece.clone()).await?;
            }
            client.publish(reply, Bytes::new()).await?;
            client.flush().await?;
        }
        bail!("nats-server closed the subscription")
    })?;
    rt.block_on(async move {
        let client = async_nats::connect(&addr).await?;
        time_calls(partials, reps, || {
            let client = client.clone();
            async move {
                let inbox = client.new_inbox();
                let mut replies = client.subscribe(inbox.clone()).await?;
                client.flush().await?;
                client
                    .publish_with_reply(STREAM_FUNCTION, inbox, payload(PAYLOAD).into())
                    .await?;
                let mut got = 0;
                while let Some(message) = replies.next().await {
                    if message.payload.is_empty() {
                        return Ok(got);
                    }
                    got += 1;
                }
                bail!("the inbox subscription ended early")
            }
        })
        .await
    })
}

/// The streaming table: partials/s per system (median, min–max of the calls), and us/NATS.
pub fn table(runs: &[StreamRun]) -> String {
    let mut out = String::from(
        "| system | partials per call | partials/s median (min–max) | us / it |\n|---|---:|---:|---:|\n",
    );
    let us = runs
        .iter()
        .find(|r| r.system == "us" && r.error.is_none())
        .map(StreamRun::median);
    for run in runs {
        let label = match run.system.as_str() {
            "us" => "us: nmid, worker send_partial -> client call_stream (tagged)",
            "nats" => "nats-server 2.9 multi-reply (responder publishes to the reply inbox)",
            other => other,
        };
        if let Some(error) = &run.error {
            out.push_str(&format!(
                "| {label} | {} | **failed**: {} | |\n",
                run.partials,
                error.replace('|', "/")
            ));
            continue;
        }
        let min = run.per_call.iter().copied().fold(f64::INFINITY, f64::min);
        let max = run.per_call.iter().copied().fold(0.0, f64::max);
        let ratio = match (us, run.system.as_str()) {
            (Some(u), "nats") => format!("{:.2}x", u / run.median()),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "| {label} | {} | {} ({}–{}) | {ratio} |\n",
            run.partials,
            kilo(run.median()),
            kilo(min),
            kilo(max)
        ));
    }
    out
}
