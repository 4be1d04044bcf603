//! Run: `cargo run -p nmid-worker --example chain` (with `make run`, which serves `ToUpper`,
//! or with the `worker` example; dispatcher at `NMID_ADDR`, default `127.0.0.1:6808`).
//! The seed's two-hop call: this starts Worker2, whose `ToUpper2` calls Worker1's `ToUpper`
//! through the dispatcher (carrying its deadline and trace context) and returns its answer;
//! then it calls `ToUpper2` as a client and prints `NMID`.

use nmid_client::{Client, ClientError};
use nmid_worker::{Job, JobError, Worker};
use serde::Serialize;

#[derive(Serialize)]
struct Params<'a> {
    name: &'a str,
}

/// Worker2's function: forwards its params to `ToUpper` and returns that answer as is.
async fn to_upper2(job: Job) -> Result<bytes::Bytes, JobError> {
    Ok(job.call("ToUpper", job.params().clone()).await?)
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("NMID_ADDR").unwrap_or_else(|_| "127.0.0.1:6808".to_owned());
    let worker2 = Worker::builder()
        .name("Worker2")
        .server(addr.clone())
        .function("ToUpper2", to_upper2)
        .start()?;
    let client = Client::connect(addr).await?;
    // Worker2 registers asynchronously: retry briefly until ToUpper2 is served.
    let mut attempts = 0;
    let data = loop {
        match client.call_data("ToUpper2", &Params { name: "nmid" }).await {
            Err(ClientError::NoWorker) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => break other?,
        }
    };
    println!("{}", String::from_utf8_lossy(&data));
    worker2.stop().await;
    Ok(())
}
