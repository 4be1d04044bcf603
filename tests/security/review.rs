//! What an independent review of issue 18's work found, beyond what a peer can hold open
//! (`holding.rs`): a forged `nmid-caller` reaching workers on local calls.

use super::common::start_dispatcher_with;
use super::*;

/// Answers `<x-probe>|<nmid-caller>`: the metadata it got.
async fn metadata_seen(job: Job) -> Result<Bytes, JobError> {
    let probe = job.metadata("x-probe").unwrap_or_default();
    let caller = job.metadata("nmid-caller").unwrap_or_default();
    Ok(Bytes::from(format!("{probe}|{caller}")))
}

/// A client that writes `nmid-caller` into a local call's metadata itself (no peer hop):
/// the worker gets the rest of the metadata but never that entry, with auth off and on.
/// Before, only forwarded calls had it replaced.
#[actix_rt::test]
async fn a_forged_caller_never_reaches_a_worker_on_a_local_call() {
    for auth in [false, true] {
        let config = if auth {
            auth_config()
        } else {
            Config::default()
        };
        let dispatcher = start_dispatcher_with(config);
        let worker = Worker::builder()
            .server(dispatcher.addr.to_string())
            .token(WORKER_SECRET.to_owned())
            .function("ToUpper", metadata_seen)
            .start()
            .unwrap();
        served(&dispatcher, "ToUpper", 1).await;
        let client = Client::builder(dispatcher.addr.to_string())
            .token(CLIENT_SECRET.to_owned())
            .connect()
            .await
            .unwrap();
        let options = nmid::client::CallOptions {
            metadata: vec![
                (bytes("x-probe"), bytes("seen")),
                (bytes("nmid-caller"), bytes("token:ops")),
            ],
            ..Default::default()
        };
        let answer = client.call_with("ToUpper", "x", options).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("seen|"), "auth {auth}: {answer}");
        assert!(
            !answer.contains("token:ops"),
            "auth {auth}: the worker saw the forged caller: {answer}"
        );
        worker.stop().await;
        dispatcher.stop().await;
    }
}
