//! What a second review of the dispatcher with auth on found: a token whose grant covers
//! nothing holding every body buffer (so every caller got 503 `busy`), and what it and
//! callers without credentials could put in the log or learn from request ids.

use super::*;

/// How long an answer that comes "at once" may take on a loaded 2-core debug build.
const GENEROUS: Duration = Duration::from_secs(20);

/// The head of a `POST path` with `secret`, announcing a JSON body of `len` bytes, and any
/// `extra` header lines.
fn call_head(path: &str, secret: &str, len: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\
         Content-Type: application/json\r\n{extra}Content-Length: {len}\r\n\r\n"
    )
}

/// The status line's code of the answer on `stream`, within [`GENEROUS`] (`None`: none).
async fn status_of<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut status = [0u8; 12];
    let read = tokio::time::timeout(GENEROUS, stream.read_exact(&mut status)).await;
    read.ok()?.ok()?;
    Some(String::from_utf8_lossy(&status[9..12]).into_owned())
}

/// A call of a function outside the caller's grant, by `/call/{func}` and by nmid's gateway
/// header, is refused 403 at once with its announced body never sent: the grant is decided
/// before the body is read. Before, the handler waited for the body (up to
/// `http.body_timeout_ms`), holding its share of `http.max_receiving_body_bytes`.
#[actix_rt::test]
async fn a_call_outside_the_grant_is_refused_before_its_body_is_read() {
    let dispatcher = start_dispatcher_with_http(auth_config());
    let http = dispatcher.http.unwrap();
    let gateway = "N-NMID-RequestType: HTTP_DO_WORK\r\nN-NMID-FunctionName: NotMine\r\n";
    for (path, extra) in [("/call/NotMine", ""), ("/any", gateway)] {
        let mut stream = TcpStream::connect(http).await.unwrap();
        let head = call_head(path, CLIENT_SECRET, 1_048_576, extra);
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b' '; 60_000]).await.unwrap();
        let status = status_of(&mut stream).await;
        assert_eq!(status.as_deref(), Some("403"), "{path}");
    }
    dispatcher.stop().await;
}

/// One client holding bodies it never sends takes at most its share of the bodies being
/// received (`http.max_receiving_body_bytes_per_client`): past it that client gets 503
/// `busy`, while another client's calls all get through. Before, the greedy client's
/// bodies took the whole `http.max_receiving_body_bytes` and every other caller got 503.
#[actix_rt::test]
async fn a_greedy_client_at_its_share_leaves_room_for_another() {
    const GREEDY_SECRET: &str = "greedy-secret-0123456789";
    let mut config = auth_config();
    config.http.max_body_bytes = 1000;
    config.http.max_receiving_body_bytes = 4000;
    config.http.max_receiving_body_bytes_per_client = 2000;
    (config.auth.tokens).push(token("greedy", GREEDY_SECRET, &["client"], &["ToUpper"]));
    let dispatcher = start_dispatcher_with_http(config);
    let http = dispatcher.http.unwrap();
    let worker = upper_worker(&dispatcher, WORKER_SECRET);
    served(&dispatcher, "ToUpper", 1).await;
    // Each greedy connection announces a whole body and sends none of it; its body is taken
    // once its handler runs: wait until one more is refused for its share.
    let mut held = Vec::new();
    let deadline = Instant::now() + GENEROUS;
    loop {
        let mut stream = TcpStream::connect(http).await.unwrap();
        let head = call_head("/call/ToUpper", GREEDY_SECRET, 1000, "");
        stream.write_all(head.as_bytes()).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_millis(300), async {
            let mut status = [0u8; 12];
            stream.read_exact(&mut status).await.map(|_| status)
        });
        match refused.await {
            Ok(Ok(status)) => {
                assert_eq!(
                    &status[9..12],
                    b"503",
                    "{}",
                    String::from_utf8_lossy(&status)
                );
                break;
            }
            Ok(Err(err)) => panic!("a greedy connection closed: {err}"),
            Err(_) => held.push(stream),
        }
        assert!(
            held.len() < 20,
            "the greedy client's bodies were never bounded"
        );
        assert!(Instant::now() < deadline, "no greedy body refused in time");
    }
    for i in 0..10 {
        let mut stream = TcpStream::connect(http).await.unwrap();
        let body = r#"{"name":"abc"}"#;
        let head = call_head("/call/ToUpper", CLIENT_SECRET, body.len(), "");
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .unwrap();
        let status = status_of(&mut stream).await;
        assert_eq!(
            status.as_deref(),
            Some("200"),
            "the healthy client's call {i}"
        );
    }
    drop(held);
    worker.stop().await;
    dispatcher.stop().await;
}

/// A TLS connection to `http` offering the ALPN `protocols`: the one the server chose, or
/// the handshake's error.
async fn alpn_chosen(
    http: SocketAddr,
    pki: &super::tls::Pki,
    protocols: &[&[u8]],
) -> std::io::Result<(Option<Vec<u8>>, tokio_rustls::client::TlsStream<TcpStream>)> {
    let mut client = (*pki.trust().connector().unwrap().client_config()).clone();
    client.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(http).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = (tokio_rustls::TlsConnector::from(Arc::new(client)))
        .connect(name, tcp)
        .await?;
    let chosen = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok((chosen, stream))
}

/// With `http.http2 = false`, TLS offers HTTP/1.1 alone: a client offering `h2` and
/// `http/1.1` gets `http/1.1` (and an answer to an HTTP/1.1 request), one offering `h2`
/// alone no handshake, and an HTTP/2 preface sent without ALPN is refused as a malformed
/// request, so no connection can hold h2's 16 MiB of header blocks. With the default
/// (`true`) the same client gets `h2`.
#[actix_rt::test]
async fn http2_can_be_turned_off() {
    let pki = super::tls::Pki::new("no-h2");
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let on = start_dispatcher_with_http(super::tls::with_tls(Config::default(), &pki));
    let (chosen, _) = alpn_chosen(on.http.unwrap(), &pki, both).await.unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    on.stop().await;

    let mut config = super::tls::with_tls(Config::default(), &pki);
    config.http.http2 = false;
    let off = start_dispatcher_with_http(config);
    let http = off.http.unwrap();
    let (chosen, mut stream) = alpn_chosen(http, &pki, both).await.unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(status_of(&mut stream).await.as_deref(), Some("200"));
    let h2_only = alpn_chosen(http, &pki, &[b"h2"]).await;
    assert!(h2_only.is_err(), "an h2-only client got a connection");
    let (chosen, mut stream) = alpn_chosen(http, &pki, &[]).await.unwrap();
    assert_eq!(chosen, None);
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(GENEROUS, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "a prior-knowledge HTTP/2 connection stayed open"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "an HTTP/2 preface was answered: {answer:.80}"
    );
    off.stop().await;
}

/// The request ids the dispatcher makes up tell nobody its job counter: two `/healthz`
/// answers in a row (no credentials) carry ids that are not consecutive numbers, and 200
/// of them are all different. Before, they were the next job ids (46684, 46685).
#[actix_rt::test]
async fn made_up_request_ids_do_not_reveal_the_job_counter() {
    let dispatcher = start_dispatcher_with_http(auth_config());
    let url = format!("{}/healthz", dispatcher.http_url());
    let client = awc::Client::default();
    let mut ids = Vec::new();
    for _ in 0..200 {
        let response = client.get(&url).send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), 200);
        let id = response
            .headers()
            .get("x-request-id")
            .expect("a request id");
        ids.push(id.to_str().unwrap().parse::<u64>().expect("a number"));
    }
    for pair in ids.windows(2) {
        assert!(pair[0].abs_diff(pair[1]) > 1000, "ids {pair:?} in a row");
    }
    let distinct: std::collections::HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a request id came twice");
    dispatcher.stop().await;
}
