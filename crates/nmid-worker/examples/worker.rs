//! Run: `cargo run -p nmid-worker --example worker` (with `make run` or any dispatcher at
//! `NMID_ADDR`, default `127.0.0.1:6808`). The seed's Worker1: serves `ToUpper`, which
//! upper-cases the `name` param and answers in nmid's RetStruct convention. Ctrl-C stops it
//! gracefully.

use nmid_worker::{Job, JobError, RetStruct, Worker};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    name: String,
}

async fn to_upper(job: Job) -> Result<RetStruct, JobError> {
    let params: Params = job.decode()?;
    Ok(RetStruct::ok(params.name.to_uppercase()))
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let addr = std::env::var("NMID_ADDR").unwrap_or_else(|_| "127.0.0.1:6808".to_owned());
    let worker = Worker::builder()
        .name("Worker1")
        .server(addr)
        .function("ToUpper", to_upper)
        .start()?;
    tokio::signal::ctrl_c().await?;
    worker.stop().await;
    Ok(())
}
