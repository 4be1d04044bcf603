//! The wire contract: a live dispatcher holds a whole v1 worker + client conversation written
//! from nmid's golden vectors, byte for byte, over real TCP on 127.0.0.1.

mod common;

use bytes::{Bytes, BytesMut};
use common::{start_dispatcher, vector, wire, Peer};
use nmid::codec::{self, Frame};

/// Decodes one golden vector into its frame.
fn vector_frame(name: &str) -> Frame {
    let mut buf = BytesMut::from(&vector(name)[..]);
    codec::decode(&mut buf, codec::DEFAULT_MAX_FRAME_BYTES)
        .unwrap()
        .expect("a whole frame")
}

/// The S_GET_DATA our dispatcher must send for the golden call: the golden frame with the
/// job id we chose in place of the Go server's UUID (all else byte-identical).
fn expected_get_data(job_id: &Bytes) -> Vec<u8> {
    let Frame::SGetData(mut job) = vector_frame("server_get_data") else {
        panic!("server_get_data is an S_GET_DATA");
    };
    job.job_id = job_id.clone();
    wire(&Frame::SGetData(job))
}

/// The golden W_RETURN_DATA with our job id in place of the UUID.
fn worker_return_for(job_id: &Bytes) -> Vec<u8> {
    let Frame::WReturnData(mut ret) = vector_frame("worker_return_data") else {
        panic!("worker_return_data is a W_RETURN_DATA");
    };
    ret.job_id = job_id.clone();
    wire(&Frame::WReturnData(ret))
}

fn job_id_of(raw_get_data: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(raw_get_data);
    match codec::decode(&mut buf, codec::DEFAULT_MAX_FRAME_BYTES).unwrap() {
        Some(Frame::SGetData(job)) => job.job_id,
        other => panic!("expected S_GET_DATA, got {other:?}"),
    }
}

/// A v1 worker and a v1 client, speaking only golden bytes, get golden bytes back.
#[tokio::test]
async fn golden_worker_and_client_conversation_is_byte_exact() {
    let dispatcher = start_dispatcher();
    let mut worker = Peer::connect(dispatcher.addr).await;

    worker.send_raw(&vector("worker_set_name")).await;
    assert_eq!(
        worker.recv_raw_frame().await,
        vector("server_ok"),
        "W_SET_NAME -> OK"
    );
    worker.send_raw(&vector("worker_add_func")).await;
    assert_eq!(
        worker.recv_raw_frame().await,
        vector("server_ok"),
        "W_ADD_FUNC -> OK"
    );
    worker.send_raw(&vector("worker_heartbeat_ping")).await;
    assert_eq!(
        worker.recv_raw_frame().await,
        vector("server_heartbeat_pong"),
        "W_HEARTBEAT_PING -> S_HEARTBEAT_PONG"
    );
    worker.send_raw(&vector("worker_grab_job")).await;
    // The next frame is the answer to a ping sent after it: W_GRAB_JOB got none.
    worker.send_raw(&vector("worker_heartbeat_ping")).await;
    assert_eq!(
        worker.recv_raw_frame().await,
        vector("server_heartbeat_pong"),
        "W_GRAB_JOB gets no reply"
    );

    let mut client = Peer::connect(dispatcher.addr).await;
    client.send_raw(&vector("client_do_job_msgpack")).await;
    let get_data = worker.recv_raw_frame().await;
    let job_id = job_id_of(&get_data);
    assert_eq!(get_data, expected_get_data(&job_id), "S_GET_DATA layout");

    worker.send_raw(&worker_return_for(&job_id)).await;
    assert_eq!(
        client.recv_raw_frame().await,
        vector("server_return_data"),
        "S_RETURN_DATA is the golden frame"
    );

    // W_DEL_FUNC takes the function away: the next call is CANT_DO.
    worker.send_raw(&vector("worker_del_func")).await;
    dispatcher
        .wait_for("ToUpper to be removed", |s| s.function("ToUpper").is_none())
        .await;
    client.send_raw(&vector("client_do_job_msgpack")).await;
    assert_eq!(client.recv_raw_frame().await, vector("server_cant_do"));
    dispatcher.stop().await;
}

/// A JSON call (params type 6) reaches the worker with its params type and bytes intact.
#[tokio::test]
async fn json_call_passes_params_type_and_bytes_through() {
    let dispatcher = start_dispatcher();
    let mut worker = Peer::worker(dispatcher.addr, "Worker1", &["ToUpper"]).await;
    let mut client = Peer::connect(dispatcher.addr).await;
    client.send_raw(&vector("client_do_job_json")).await;

    let job = worker.recv_job().await;
    assert_eq!(job.params_type, codec::ParamsType::JSON);
    assert_eq!(job.handle_type, codec::HANDLE_TYPE_ENCODE);
    assert_eq!(&job.params[..], br#"{"name": "nmid"}"#);
    worker.answer(&job, b"\x80").await;
    match client.recv().await {
        Frame::SReturnData(ret) => {
            assert_eq!(&ret.function[..], b"ToUpper");
            assert_eq!(&ret.params[..], br#"{"name": "nmid"}"#);
            assert_eq!(&ret.ret[..], b"\x80");
        }
        other => panic!("expected S_RETURN_DATA, got {other:?}"),
    }
    dispatcher.stop().await;
}
