//! The embedded demo worker of `nmid --demo`: the worker library serving `ToUpper` over real
//! TCP, so a first user sees a call work at once.
//!
//! `ToUpper` takes params `{"name": "<text>"}` (a msgpack map, or JSON with params type 6)
//! and answers the RetStruct `{"Code": 0, "Msg": "ok", "Data": "<TEXT>"}`; params without a
//! string `name` get `Code` 1 and a message saying so.

use serde::Deserialize;

use crate::net::Access;
use crate::retstruct::RetStruct;
use crate::worker::{Job, JobError, Worker, WorkerError, WorkerHandle};

/// The demo worker's name (`W_SET_NAME`).
pub const DEMO_WORKER_NAME: &str = "nmid-demo";
/// The function the demo worker serves.
pub const DEMO_FUNCTION: &str = "ToUpper";

#[derive(Deserialize)]
struct Params {
    name: String,
}

/// The `ToUpper` function: upper-cases the `name` param.
pub async fn to_upper(job: Job) -> Result<RetStruct, JobError> {
    Ok(match job.decode::<Params>() {
        Ok(params) => RetStruct::ok(params.name.to_uppercase()),
        Err(_) => RetStruct::error(1, "ToUpper wants params {\"name\": <string>}"),
    })
}

/// Starts the demo worker of the dispatcher `handle` on the current actix arbiter. It
/// connects through the dispatcher's internal door (a loopback connection that skips the
/// address lists, TLS and auth), so it serves whatever `[security]`, `[auth]` and `[tls]`
/// say.
pub fn start_demo_worker(handle: &crate::server::Handle) -> Result<WorkerHandle, WorkerError> {
    Worker::builder()
        .name(DEMO_WORKER_NAME)
        .server(handle.tcp_addr().to_string())
        .access(Access {
            internal: Some(handle.internal_dial()),
            ..Access::default()
        })
        .function(DEMO_FUNCTION, to_upper)
        .start()
}
