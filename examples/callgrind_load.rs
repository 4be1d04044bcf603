//! Run: `scripts/callgrind-call` starts it (`callgrind_load worker ADDR` and
//! `callgrind_load client ADDR WARMUP CALLS IN_FLIGHT`). The fixed load of the dispatcher's
//! instruction counts under callgrind, the same for every build measured:
//!
//! - `worker`: one process, 2 worker connections of 256 slots each serving `Echo` (the
//!   payload upper-cased), as the benchmarks' us-tagged system has; prints `READY`.
//! - `client`: one tagged (pipelined) connection, IN_FLIGHT calls of 32 bytes in flight.
//!   Exactly WARMUP calls, all answered, then `WARM` on stdout; waits for a line on stdin
//!   (the script zeroes callgrind's counters meanwhile), then exactly CALLS calls, all
//!   answered, then `DONE calls=CALLS` and waits for stdin to close (the script dumps the
//!   counters first, so nothing of the disconnection is counted).
//!
//! A counted number of calls, not a time window: the dispatcher's instructions per call are
//! the dump's total divided by CALLS, whatever the machine's speed.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use nmid::client::Client;
use nmid::worker::{Job, JobError, Worker};

/// The function served and called (the benchmarks' name).
const FUNCTION: &str = "Echo";
/// Worker connections of the worker process.
const WORKER_SESSIONS: usize = 2;
/// Slots of each worker connection (the dispatcher caps them at its own limit).
const WORKER_SLOTS: u32 = 256;
/// Bytes of each call's params.
const PAYLOAD_BYTES: usize = 32;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => worker(args.get(1).context("missing ADDR")?.clone()),
        Some("client") => {
            let num = |i: usize, what: &str| -> anyhow::Result<u64> {
                args.get(i)
                    .with_context(|| format!("missing {what}"))?
                    .parse()
                    .with_context(|| format!("bad {what}"))
            };
            let addr = args.get(1).context("missing ADDR")?.clone();
            client(
                addr,
                num(2, "WARMUP")?,
                num(3, "CALLS")?,
                num(4, "IN_FLIGHT")?,
            )
        }
        _ => bail!("usage: callgrind_load worker ADDR | client ADDR WARMUP CALLS IN_FLIGHT"),
    }
}

/// Serves `Echo` on [`WORKER_SESSIONS`] connections until killed.
fn worker(addr: String) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        let mut handles = Vec::new();
        for s in 0..WORKER_SESSIONS {
            let handle = Worker::builder()
                .name(format!("callgrind-{}-{s}", std::process::id()))
                .server(addr.clone())
                .slots(WORKER_SLOTS)
                .function(FUNCTION, |job: Job| async move {
                    Ok::<_, JobError>(Bytes::from(job.params().to_ascii_uppercase()))
                })
                .start()
                .map_err(|e| anyhow!("worker: {e}"))?;
            handles.push(handle);
        }
        println!("READY");
        std::future::pending::<()>().await;
        drop(handles);
        anyhow::Ok(())
    })
}

/// The warm-up, the pause, the counted calls, the pause.
fn client(addr: String, warmup: u64, calls: u64, in_flight: u64) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        let client = Client::connect(addr).await?;
        run(&client, warmup, in_flight).await?;
        println!("WARM");
        wait_line()?;
        run(&client, calls, in_flight).await?;
        println!("DONE calls={calls}");
        wait_line()?;
        anyhow::Ok(())
    })
}

/// Exactly `total` calls, `in_flight` at a time, every one answered with the payload
/// upper-cased.
async fn run(client: &Client, total: u64, in_flight: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let params = Bytes::from(vec![b'a'; PAYLOAD_BYTES]);
    let tasks: Vec<_> = (0..in_flight.max(1))
        .map(|_| {
            let (client, params, next) = (client.clone(), params.clone(), next.clone());
            actix_rt::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let reply = client.call(FUNCTION, params.clone()).await?;
                    if reply.as_ref() != params.to_ascii_uppercase().as_slice() {
                        bail!("unexpected reply {reply:?}");
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Blocks until stdin gives a line or closes.
fn wait_line() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}
