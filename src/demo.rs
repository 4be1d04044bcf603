//! The embedded demo worker of `nmid --demo`: a real v1 worker over TCP serving `ToUpper`,
//! so a first user sees a call work at once.
//!
//! `ToUpper` takes params `{"name": "<text>"}` (a msgpack map, or JSON with params type 6)
//! and answers the RetStruct `{"Code": 0, "Msg": "ok", "Data": "<TEXT>"}`; params without a
//! string `name` get `Code` 1 and a message saying so.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tracing::{info, warn};

use crate::codec::{Frame, GetData, NmidCodec, ParamsType, WorkerReturn};
use crate::retstruct::RetStruct;

/// The demo worker's name (`W_SET_NAME`).
pub const DEMO_WORKER_NAME: &str = "nmid-demo";
/// The function the demo worker serves.
pub const DEMO_FUNCTION: &str = "ToUpper";
/// Heartbeat period, as nmid's workers use.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Wait before reconnecting after the dispatcher closed the connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Serves `ToUpper` for the dispatcher at `addr` until the task is dropped, reconnecting if
/// the connection is lost.
pub async fn run_demo_worker(addr: SocketAddr) {
    loop {
        match serve(addr).await {
            Ok(()) => info!("demo worker: dispatcher closed the connection"),
            Err(err) => warn!(cause = %err, "demo worker: connection failed"),
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn serve(addr: SocketAddr) -> Result<(), crate::codec::CodecError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(stream, NmidCodec::default());
    conn.send(Frame::SetName {
        name: Bytes::from_static(DEMO_WORKER_NAME.as_bytes()),
    })
    .await?;
    conn.send(Frame::AddFunc {
        function: Bytes::from_static(DEMO_FUNCTION.as_bytes()),
    })
    .await?;
    info!(%addr, function = DEMO_FUNCTION, "demo worker registered");
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                conn.send(Frame::HeartbeatPing { body: Bytes::from_static(b"PING") }).await?;
            }
            frame = conn.next() => match frame {
                None => return Ok(()),
                Some(Err(err)) => return Err(err),
                Some(Ok(Frame::GetData(job))) => {
                    let ret = Bytes::from(to_upper(&job).encode());
                    conn.send(Frame::WorkerReturn(WorkerReturn {
                        function: job.function,
                        params: job.params,
                        ret,
                        job_id: job.job_id,
                    }))
                    .await?;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The `ToUpper` function.
fn to_upper(job: &GetData) -> RetStruct {
    match param_name(job.params_type, &job.params) {
        Some(name) => RetStruct::ok(name.to_uppercase()),
        None => RetStruct::error(1, "ToUpper wants params {\"name\": <string>}"),
    }
}

fn param_name(params_type: ParamsType, params: &[u8]) -> Option<String> {
    if params_type == ParamsType::JSON {
        let value: serde_json::Value = serde_json::from_slice(params).ok()?;
        return value.get("name")?.as_str().map(str::to_owned);
    }
    let mut bytes = params;
    let value = rmpv::decode::read_value(&mut bytes).ok()?;
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some("name"))?
        .1
        .as_str()
        .map(str::to_owned)
}
