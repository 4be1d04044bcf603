//! Run: `cargo run --release --example load -- [IN_FLIGHT] [SECONDS]` (defaults 64, 5)
//! against `make run` (dispatcher at `NMID_ADDR`, default `127.0.0.1:6808`). A quick
//! closed-loop load: IN_FLIGHT concurrent `ToUpper` calls over one tagged client connection
//! for SECONDS (at most 10 million calls), then prints calls/s and latency percentiles.

use std::time::{Duration, Instant};

use nmid::client::Client;
use serde::Serialize;

#[derive(Serialize)]
struct Params<'a> {
    name: &'a str,
}

const MAX_CALLS: u64 = 10_000_000;

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("NMID_ADDR").unwrap_or_else(|_| "127.0.0.1:6808".to_owned());
    let mut args = std::env::args().skip(1);
    let in_flight: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let client = Client::connect(addr).await?;
    let params = bytes::Bytes::from(rmp_serde::to_vec_named(&Params { name: "nmid" })?);
    let until = Instant::now() + Duration::from_secs(seconds);
    let per_task = MAX_CALLS / in_flight as u64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, params) = (client.clone(), params.clone());
            actix_rt::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < until && (latencies.len() as u64) < per_task {
                    let t = Instant::now();
                    match client.call("ToUpper", params.clone()).await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    println!(
        "in_flight={in_flight} calls={} errors={errors} calls_per_s={:.0} p50={:?} p99={:?}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
    );
    Ok(())
}
