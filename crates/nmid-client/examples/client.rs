//! Run: `cargo run -p nmid-client --example client` (with `make run`, or the worker
//! example, against a dispatcher at `NMID_ADDR`, default `127.0.0.1:6808`). The seed's
//! client: calls `ToUpper` with `{"name": "nmid"}` and prints the result's `Data`: `NMID`.

use nmid_client::Client;
use serde::Serialize;

#[derive(Serialize)]
struct Params<'a> {
    name: &'a str,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("NMID_ADDR").unwrap_or_else(|_| "127.0.0.1:6808".to_owned());
    let client = Client::connect(addr).await?;
    let data = client
        .call_data("ToUpper", &Params { name: "nmid" })
        .await?;
    println!("{}", String::from_utf8_lossy(&data));
    Ok(())
}
