//! Run: `cargo run --example v1_call -- [FUNCTION] [NAME]` (defaults `ToUpper nmid`) against
//! `make run`. A plain nmid v1 client: sends `C_DO_JOB` with params `{"name": NAME}` as
//! msgpack, exactly as nmid's Go, C, PHP and Python SDKs do, and prints the result's `Data`.
//! Reads the dispatcher address from `NMID_ADDR` (default `127.0.0.1:6808`).

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use nmid::codec::{CDoJob, Frame, NmidCodec, ParamsType, HANDLE_TYPE_ENCODE};
use nmid::retstruct::RetStruct;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("NMID_ADDR").unwrap_or_else(|_| "127.0.0.1:6808".to_owned());
    let mut args = std::env::args().skip(1);
    let function = args.next().unwrap_or_else(|| "ToUpper".to_owned());
    let name = args.next().unwrap_or_else(|| "nmid".to_owned());

    let params = rmpv::Value::Map(vec![("name".into(), name.as_str().into())]);
    let mut encoded = Vec::new();
    rmpv::encode::write_value(&mut encoded, &params)?;

    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let mut conn = Framed::new(stream, NmidCodec::default());
    conn.send(Frame::CDoJob(CDoJob {
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: Bytes::from(function.clone()),
        params: Bytes::from(encoded),
    }))
    .await?;
    match conn
        .next()
        .await
        .context("dispatcher closed the connection")??
    {
        Frame::SReturnData(ret) => {
            let ret = RetStruct::decode(&ret.ret)?;
            if ret.code != 0 {
                bail!("{function} failed with code {}: {}", ret.code, ret.msg);
            }
            println!("{}", String::from_utf8_lossy(&ret.data));
        }
        Frame::CantDo => bail!("no worker serves {function} (CANT_DO)"),
        Frame::RateLimit => bail!("rate limited (RATELIMIT)"),
        Frame::Error => bail!("the call failed (ERROR)"),
        other => bail!("unexpected reply {}", other.name()),
    }
    Ok(())
}
