//! Fair frame budgets (issue 18): one client's half-sent frames take at most its share of
//! `tcp.max_incomplete_frame_bytes`, so another client's large calls still get through; and
//! before a connection has said who it is, its first frame may be no larger than an `AUTH`
//! frame needs.

use bytes::BytesMut;
use nmid::codec::{CDoJob, ParamsType, HANDLE_TYPE_ENCODE};

use super::*;

const GREEDY_SECRET: &str = "greedy-secret-0123456789";
const MIB: usize = 1024 * 1024;

/// Echoes its params.
async fn echo(job: Job) -> Result<Bytes, JobError> {
    Ok(job.params().clone())
}

/// A connection authenticated with `secret` that has sent all but the last bytes of a
/// `C_CALL` of `body_len` bytes of params: the dispatcher holds what arrived as an
/// incomplete frame. `None` when the dispatcher closed it meanwhile.
async fn greedy(addr: SocketAddr, secret: &str, body_len: usize) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    nmid::codec::encode(
        &Frame::CAuth {
            secret: bytes(secret),
        },
        &mut out,
    )
    .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("S_AUTH_RESULT in time")
        .unwrap();
    let len = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    let call = Frame::CCall(TaggedCall {
        id: 1,
        timeout_ms: 0,
        params_type: ParamsType::MSGPACK,
        handle_type: HANDLE_TYPE_ENCODE,
        function: bytes("Echo"),
        params: Bytes::from(vec![0x2a; body_len]),
        meta: Vec::new(),
    });
    out.clear();
    nmid::codec::encode(&call, &mut out).unwrap();
    let sent = out.len() - 64;
    match tokio::time::timeout(PATIENCE, stream.write_all(&out[..sent])).await {
        Ok(Ok(())) => Some(stream),
        Ok(Err(_)) => None,
        Err(_) => panic!("the dispatcher read nothing of a greedy frame"),
    }
}

/// A greedy token opens twelve connections, each holding a 900 KB frame it never finishes:
/// the dispatcher keeps at most its share of them (1.5 MiB of the 4.5 MiB budget) and
/// closes the rest; meanwhile another token's 500 KB calls, and their 500 KB results, all
/// get through. (With one budget for all, the greedy token's frames held it whole and every
/// such call failed.)
#[actix_rt::test]
async fn a_greedy_client_at_its_share_leaves_room_for_another_clients_calls() {
    let mut config = auth_config();
    config.tcp.max_frame_bytes = MIB;
    config.tcp.max_incomplete_frame_bytes = 9 * MIB / 2;
    config.tcp.max_incomplete_frame_bytes_per_client = 3 * MIB / 2;
    config.auth.tokens = vec![
        token("echo-worker", WORKER_SECRET, &["worker"], &["Echo"]),
        token("web", CLIENT_SECRET, &["client"], &["Echo"]),
        token("greedy", GREEDY_SECRET, &["client"], &["Echo"]),
        token("ops", ADMIN_SECRET, &["admin"], &[]),
    ];
    let dispatcher = start_dispatcher_with_http(config);
    let worker = Worker::builder()
        .server(dispatcher.addr.to_string())
        .token(WORKER_SECRET)
        .function("Echo", echo)
        .start()
        .unwrap();
    served(&dispatcher, "Echo", 1).await;
    let mut opened = Vec::new();
    for _ in 0..12 {
        if let Some(stream) = greedy(dispatcher.addr, GREEDY_SECRET, 900_000).await {
            opened.push(stream);
        }
    }
    let still_open: Vec<bool> =
        futures_util::future::join_all(opened.iter_mut().map(|s| async { !closed(s).await })).await;
    let held = still_open.iter().filter(|open| **open).count();
    assert!(
        (1..=2).contains(&held),
        "the greedy token holds {held} of its 12 frames (its share fits one or two)"
    );
    let client = Client::builder(dispatcher.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    for i in 0..10u8 {
        let params = Bytes::from(vec![i; 500_000]);
        let ret = client.call("Echo", params.clone()).await;
        assert_eq!(
            ret.as_deref().ok(),
            Some(&params[..]),
            "call {i}: {:?}",
            ret.as_ref().err()
        );
    }
    let text = metrics_of(&dispatcher).await;
    let refused = metric(
        &text,
        r#"nmid_limit_hits_total{limit="incomplete_frame_bytes"}"#,
    );
    assert!(
        refused >= (12 - held) as f64,
        "{refused} refusals counted\n{text}"
    );
    drop(opened);
    worker.stop().await;
    dispatcher.stop().await;
}

/// With auth on, a connection that has not said who it is may send a first frame no larger
/// than `tcp.max_first_frame_bytes`: a larger one (a call before `AUTH`) closes it from its
/// header, counted as `inbound_frame_size`. A v1 peer its address already grants may send a
/// large first frame.
#[actix_rt::test]
async fn a_first_frame_before_auth_is_small() {
    let mut config = auth_config();
    config.tcp.max_first_frame_bytes = 1024;
    config.auth.v1_peers = vec![V1PeerConfig {
        name: "legacy".into(),
        cidrs: vec!["127.0.0.2".into()],
        roles: vec!["client".into()],
        functions: vec!["*".into()],
        ..V1PeerConfig::default()
    }];
    let dispatcher = start_dispatcher_with_http(config);
    let big = |function: &str| {
        Frame::CDoJob(CDoJob {
            params_type: ParamsType::MSGPACK,
            handle_type: HANDLE_TYPE_ENCODE,
            function: bytes(function),
            params: Bytes::from(vec![0x2a; 100_000]),
        })
    };
    let mut stranger = Peer::connect(dispatcher.addr).await;
    let mut out = BytesMut::new();
    nmid::codec::encode(&big("Nobody"), &mut out).unwrap();
    stranger.send_raw(&out[..12]).await;
    stranger.expect_closed().await;
    let mut legacy = Peer::connect_from("127.0.0.2".parse().unwrap(), dispatcher.addr).await;
    legacy.send(big("Nobody")).await;
    assert_eq!(
        legacy.recv().await,
        Frame::CantDo,
        "a granted v1 peer's large first frame"
    );
    let text = metrics_of(&dispatcher).await;
    assert!(
        metric(
            &text,
            r#"nmid_limit_hits_total{limit="inbound_frame_size"}"#
        ) >= 1.0,
        "{text}"
    );
    dispatcher.stop().await;
}

/// The keys of the frame budget and the refusal log are checked, each error naming its
/// key; a list entry no peer can have is refused at start, naming its list.
#[test]
fn bad_budget_log_and_list_settings_name_their_key() {
    for (key, value) in [
        ("tcp.max_incomplete_frame_bytes_per_client", "1000"),
        ("tcp.max_first_frame_bytes", "10"),
        ("log.refusal_summary_interval_ms", "5"),
    ] {
        let err = Config::load(None, &[(key, value.to_owned())]).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    let mut config = Config::default();
    config.security.deny = vec!["::ffff:127.0.0.9".to_owned(), "224.0.0.1".to_owned()];
    let err = nmid::security::Security::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("security.deny"), "{err}");
    assert!(err.to_string().contains("224.0.0.1"), "{err}");
    let mut config = auth_config();
    config.auth.v1_peers = vec![V1PeerConfig {
        cidrs: vec!["0.0.0.0".to_owned()],
        roles: vec!["client".to_owned()],
        functions: vec!["*".to_owned()],
        ..V1PeerConfig::default()
    }];
    let err = nmid::security::Security::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("auth.v1_peers"), "{err}");
}
