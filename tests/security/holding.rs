//! What a peer can hold open on the HTTP port, from the review of issue 18: an HTTP/2
//! connection that answers pings but sends no request (`http.keep_alive_ms`), a body
//! dribbled a byte at a time (`http.body_timeout_ms`), and announced bodies that add up to
//! more than the dispatcher receives at once (`http.max_receiving_body_bytes`).

use super::tls::{with_tls, Pki};
use super::*;

/// The longest these tests wait for the dispatcher to act on a bound of under a second.
const GENEROUS: Duration = Duration::from_secs(20);

/// One HTTP/2 frame: its type, flags and payload (RFC 9113 section 4.1).
pub(super) struct H2Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

/// The next frame of `stream`; `None` once the server has closed the connection.
pub(super) async fn read_h2<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<H2Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some(H2Frame {
        kind: head[3],
        flags: head[4],
        payload,
    })
}

/// A frame of `kind` with `flags` on stream 0.
pub(super) fn h2_frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    h2_stream_frame(kind, flags, 0, payload)
}

/// A frame of `kind` with `flags` on `stream`.
pub(super) fn h2_stream_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

pub(super) const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// An HTTP/2 connection to `http` (ALPN `h2` over TLS, trusting `pki`), its preface and
/// SETTINGS sent.
pub(super) async fn h2_over_tls(
    http: SocketAddr,
    pki: &Pki,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut client = (*pki.trust().connector().unwrap().client_config()).clone();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("a TLS handshake");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server did not choose HTTP/2"
    );
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&h2_frame(SETTINGS, 0, &[])).await.unwrap();
    stream
}

/// An HTTP/2 client (ALPN `h2` over TLS) that sends no request but answers every ping and
/// every SETTINGS, as HTTP/2 libraries do on their own, is closed once it has been idle for
/// `http.keep_alive_ms`; before, it held its connection forever.
#[actix_rt::test]
async fn an_idle_http2_connection_that_answers_pings_is_closed() {
    let pki = Pki::new("h2-idle");
    let mut config = with_tls(Config::default(), &pki);
    config.http.keep_alive_ms = 2000;
    let dispatcher = start_dispatcher_with_http(config);
    let http = dispatcher.http.unwrap();
    let opened = Instant::now();
    let mut stream = h2_over_tls(http, &pki).await;
    let (mut pings, mut settings) = (0, 0);
    let answered = tokio::time::timeout(GENEROUS, async {
        while let Some(frame) = read_h2(&mut stream).await {
            let answer = match (frame.kind, frame.flags & ACK) {
                (PING, 0) => {
                    pings += 1;
                    h2_frame(PING, ACK, &frame.payload)
                }
                (SETTINGS, 0) => {
                    settings += 1;
                    h2_frame(SETTINGS, ACK, &[])
                }
                _ => continue,
            };
            if stream.write_all(&answer).await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "an idle HTTP/2 connection stayed open {GENEROUS:?} (it answered {pings} pings)"
    );
    assert!(settings >= 1, "the server never spoke HTTP/2");
    assert!(opened.elapsed() >= Duration::from_millis(2000));
    dispatcher.stop().await;
}

/// A request head announcing a large body, then one byte of it every 100 ms: answered 408
/// `body_timeout` and closed once `http.body_timeout_ms` has passed, and counted; before,
/// it held its connection and buffer for as long as it kept dribbling.
#[actix_rt::test]
async fn a_body_dribbled_a_byte_at_a_time_is_answered_408() {
    let mut config = Config::default();
    config.http.body_timeout_ms = 500;
    let dispatcher = start_dispatcher_with_http(config);
    let mut stream = TcpStream::connect(dispatcher.http.unwrap()).await.unwrap();
    stream
        .write_all(
            b"POST /call/ToUpper HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000000\r\n\r\n{",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.split();
    let mut response = Vec::new();
    let dribbled = tokio::time::timeout(GENEROUS, async {
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if writer.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        dribbled.is_ok(),
        "the dribbling client was never answered: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(dispatcher.limit_hits("http_body_timeout").await >= 1.0);
    dispatcher.stop().await;
}

/// Bodies being received at once are bounded over all connections: with one client
/// holding a body of `max_body_bytes` announced and not sent, another body that would go
/// past `http.max_receiving_body_bytes` is answered 503 `busy` at once (counted), and a
/// small one still gets through; once the first is gone, its room is free again.
#[actix_rt::test]
async fn bodies_being_received_at_once_are_bounded() {
    let mut config = Config::default();
    config.http.max_body_bytes = 1000;
    config.http.max_receiving_body_bytes = 1500;
    let dispatcher = start_dispatcher_with_http(config);
    let http = dispatcher.http.unwrap();
    let head = |len: usize| {
        format!(
            "POST /call/Nobody HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\n\r\n"
        )
    };
    let mut holder = TcpStream::connect(http).await.unwrap();
    holder.write_all(head(1000).as_bytes()).await.unwrap();
    let status = |len: usize| async move {
        let mut stream = TcpStream::connect(http).await.unwrap();
        let body = format!("{{\"x\":\"{}\"}}", "a".repeat(len - 8));
        let request = format!("{}{body}", head(body.len()));
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut status = [0u8; 12];
        tokio::time::timeout(GENEROUS, stream.read_exact(&mut status))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&status).into_owned()
    };
    // The holder's body is taken once its handler runs: wait until a large body is refused.
    let deadline = Instant::now() + GENEROUS;
    while status(900).await != "HTTP/1.1 503" {
        assert!(Instant::now() < deadline, "a second large body was taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dispatcher.limit_hits("http_body_bytes").await >= 1.0);
    assert_eq!(
        status(400).await,
        "HTTP/1.1 404",
        "a small body gets through"
    );
    drop(holder);
    let deadline = Instant::now() + GENEROUS;
    while status(900).await != "HTTP/1.1 404" {
        assert!(
            Instant::now() < deadline,
            "the holder's room was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dispatcher.stop().await;
}
