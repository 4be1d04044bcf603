//! Run: `cargo run -p nmid-client --features discovery --example cluster_client -- [CALLS]`
//! (default 3) with a cluster running (`make cluster-demo` starts one). A discovering
//! client: finds the dispatchers in etcd at `NMID_ETCD` (default `http://127.0.0.1:2379`),
//! prints them, then calls `ToUpper` with `{"name": "nmid-<i>"}` CALLS times, spread over
//! the dispatchers, printing each `Data`.

use std::time::Duration;

use nmid_client::{CallOptions, Client, RetStruct};
use serde::Serialize;

#[derive(Serialize)]
struct Params {
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let etcd = std::env::var("NMID_ETCD").unwrap_or_else(|_| "http://127.0.0.1:2379".to_owned());
    let calls: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 3,
    };
    let client = Client::builder("")
        .discover(etcd.split(',').map(str::to_owned))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    for dispatcher in client.dispatchers() {
        println!(
            "dispatcher {} at {} serves {:?} (load {})",
            dispatcher.id, dispatcher.tcp_addr, dispatcher.functions, dispatcher.load
        );
    }
    for i in 0..calls {
        let params = rmp_serde::to_vec_named(&Params {
            name: format!("nmid-{i}"),
        })?;
        // Idempotent: if a dispatcher dies with this call in flight, it is sent to another.
        let ret = client
            .call_with("ToUpper", params, CallOptions::default().idempotent())
            .await?;
        let ret = RetStruct::decode(&ret)?;
        println!("{}", String::from_utf8_lossy(&ret.data));
    }
    Ok(())
}
