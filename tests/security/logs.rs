//! What peers can put in the `nmid` binary's log (issue 18): names with control characters
//! arrive escaped on one line, a flood of refused connections writes a line per window, not
//! one each, and the start-up warnings name what the configuration leaves open.

use super::*;

/// A configuration file of its own for one `nmid` process.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("nmid-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A worker registers a function whose name holds a newline, a forged log line and ANSI
/// escapes: the dispatcher logs it on one line, escaped, and no line of its log begins with
/// the forged text or holds an ESC byte.
#[actix_rt::test]
async fn a_name_with_a_newline_and_esc_is_one_escaped_log_line() {
    let mut nmid = Process::start(&[]);
    let evil = "evil\nINFO nmid: forged line\x1b[31mred";
    let mut worker = Peer::connect(nmid.addr).await;
    worker
        .send(Frame::WAddFunc {
            function: bytes(evil),
        })
        .await;
    assert_eq!(worker.recv().await, Frame::Ok);
    let line = nmid.wait_for_log("function registered");
    assert!(
        line.contains(r"evil\nINFO nmid: forged line\u{1b}[31mred"),
        "{line}"
    );
    drop(worker);
    let _ = nmid.child.kill();
    let lines = nmid.whole_log();
    assert!(
        !lines.iter().any(|l| l.starts_with("INFO nmid: forged")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\x1b')), "{lines:#?}");
}

/// Refused connections are logged once per kind and window: 300 connections from a denied
/// address write one or a few full lines, and summaries whose counts add up to the rest.
#[actix_rt::test]
async fn a_flood_of_refused_connections_is_summarised() {
    let config = TempConfig::new(
        "summaries",
        "[security]\ndeny = [\"127.0.0.2\"]\n[log]\nrefusal_summary_interval_ms = 500\n",
    );
    let nmid = Process::start(&["--config", &config.arg()]);
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        let mut denied = connect_from("127.0.0.2", nmid.addr).await;
        assert!(closed(&mut denied).await, "a denied connection stayed open");
    }
    let full = |seen: &[String]| {
        (seen.iter())
            .filter(|l| l.contains("address not allowed"))
            .count()
    };
    let summarised = |seen: &[String]| -> usize {
        (seen.iter())
            .filter(|l| l.contains("more of the same kind"))
            .map(|l| {
                let more = l.split("more=").nth(1).expect("more=");
                more.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = nmid.log_so_far();
        let logged = full(&seen) + summarised(&seen);
        if logged == FLOOD {
            break;
        }
        assert!(
            logged < FLOOD && Instant::now() < deadline,
            "{logged} refusals logged of {FLOOD}: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = full(&nmid.log_so_far());
    assert!(
        (1..=10).contains(&lines),
        "{lines} full lines for {FLOOD} refusals"
    );
}

/// Each way the configuration leaves the dispatcher open is one `warn` line at start (here:
/// `[[auth.v1_peers]]` granting every address); a dispatcher with nothing open logs none.
#[actix_rt::test]
async fn the_start_up_warnings_name_what_is_left_open() {
    let open_v1 = TempConfig::new(
        "exposed",
        "[auth]\nenabled = true\n[[auth.v1_peers]]\nname = \"anyone\"\ncidrs = [\"0.0.0.0/0\"]\n\
         roles = [\"client\"]\nfunctions = [\"*\"]\n",
    );
    // Logged before the listeners are: among the lines read while it started.
    let nmid = Process::start(&["--config", &open_v1.arg()]);
    let seen = nmid.log_so_far();
    let warned: Vec<&String> = (seen.iter())
        .filter(|l| l.contains(r#"exposure="v1_peers_everyone""#))
        .collect();
    assert_eq!(warned.len(), 1, "{seen:#?}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains(r#""anyone""#),
        "{warned:?}"
    );
    drop(nmid);
    let quiet = Process::start(&[]);
    let seen = quiet.log_so_far();
    assert!(!seen.iter().any(|l| l.contains("exposure=")), "{seen:#?}");
}

/// Every flood a peer can make at will is logged as one full line per window, then counted
/// (`log.refusal_summary_interval_ms`: an hour here, so each kind writes one line in the
/// test): 100 each of TLS connections closed without `close_notify`, malformed HTTP/1
/// requests (actix-http's own `stream error` line for each is off), connections sending a
/// malformed frame, results for job ids the worker does not hold, and registrations
/// outside the worker's grant. Before, each wrote a line of its own.
#[actix_rt::test]
async fn floods_a_peer_can_make_are_logged_once_per_window() {
    use super::common::wire;
    use super::tls::{tls_connect, Pki};
    const FLOOD: usize = 100;
    let pki = Pki::new("floods");
    let (cert, key) = pki.server("server");
    let config = TempConfig::new(
        "floods",
        &format!(
            "[log]\nrefusal_summary_interval_ms = 3600000\n\
             [tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nallow_plaintext = true\n\
             [auth]\nenabled = true\n[[auth.v1_peers]]\nname = \"local\"\n\
             cidrs = [\"127.0.0.1/32\"]\nroles = [\"worker\"]\nfunctions = [\"Mine\"]\n"
        ),
    );
    let nmid = Process::start(&["--config", &config.arg()]);
    let register = wire(&Frame::WAddFunc {
        function: bytes("Mine"),
    });
    for _ in 0..FLOOD {
        let (mut stream, _) = tls_connect(nmid.addr, &pki.trust()).await.unwrap();
        stream.write_all(&register).await.unwrap();
        let mut ok = [0u8; 12];
        stream.read_exact(&mut ok).await.unwrap();
        // Dropped without a TLS close_notify.
    }
    for _ in 0..FLOOD {
        let (mut stream, _) = tls_connect(nmid.http.unwrap(), &pki.trust()).await.unwrap();
        stream.write_all(b"NOT HTTP\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 400");
    }
    for _ in 0..FLOOD {
        let mut peer = Peer::connect(nmid.addr).await;
        peer.send_raw(&register).await;
        assert_eq!(peer.recv().await, Frame::Ok);
        peer.send_raw(b"\x01junk that is no frame header").await;
        peer.expect_closed().await;
    }
    let mut worker = Peer::connect(nmid.addr).await;
    worker.send_raw(&register).await;
    assert_eq!(worker.recv().await, Frame::Ok);
    for n in 0..FLOOD {
        worker
            .send(Frame::WReturnData(nmid::codec::WReturnData {
                function: bytes("Mine"),
                params: Bytes::new(),
                ret: bytes("x"),
                job_id: bytes(&format!("{}", 900_000 + n)),
            }))
            .await;
    }
    for _ in 0..FLOOD {
        worker
            .send(Frame::WAddFunc {
                function: bytes("Other"),
            })
            .await;
        assert_eq!(worker.recv().await, Frame::Error);
    }
    let kinds = [
        "close_notify",
        "HTTP connection ended with an error",
        "closing connection: malformed input",
        "answer for a job this worker does not hold",
        "function registration refused: not in its grant",
    ];
    let deadline = Instant::now() + PATIENCE;
    let seen = loop {
        let seen = nmid.log_so_far();
        let count = |needle: &str| seen.iter().filter(|l| l.contains(needle)).count();
        if kinds.iter().all(|kind| count(kind) >= 1) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "a flood was never logged: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for kind in kinds {
        let lines: Vec<&String> = seen.iter().filter(|l| l.contains(kind)).collect();
        assert_eq!(lines.len(), 1, "{FLOOD} of {kind:?}: {lines:#?}");
    }
    assert!(
        !seen.iter().any(|l| l.contains("stream error")),
        "actix-http's own line: {seen:#?}"
    );
}

/// HTTP/2 rapid reset without credentials: 100 connections each open 30 streams and reset
/// each at once (`HEADERS` then `RST_STREAM`); h2 closes each connection, and its own WARN
/// line for each (`remotely-reset pending-accept streams reached limit`) is off by default,
/// as actix-http's is: the HTTP listener's `http_error` line, once per window, is all the
/// log gets. Before, a line per connection.
#[actix_rt::test]
async fn an_http2_rapid_reset_flood_is_not_a_line_per_connection() {
    use super::holding::{h2_over_tls, h2_stream_frame, read_h2};
    use super::tls::Pki;
    const FLOOD: usize = 100;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    let pki = Pki::new("rapid-reset");
    let (cert, key) = pki.server("server");
    let config = TempConfig::new(
        "rapid-reset",
        &format!(
            "[log]\nrefusal_summary_interval_ms = 3600000\n\
             [tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nallow_plaintext = true\n"
        ),
    );
    let nmid = Process::start(&["--config", &config.arg()]);
    // GET / over http (HPACK static table: :method GET, :scheme http, :path /).
    let request = [0x82, 0x86, 0x84];
    let mut burst = Vec::new();
    for stream in (1..60).step_by(2) {
        burst.extend(h2_stream_frame(HEADERS, 0x5, stream, &request));
        burst.extend(h2_stream_frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    for _ in 0..FLOOD {
        let mut stream = h2_over_tls(nmid.http.unwrap(), &pki).await;
        let _ = stream.write_all(&burst).await;
        let closed = tokio::time::timeout(PATIENCE, async {
            while read_h2(&mut stream).await.is_some() {}
        });
        assert!(closed.await.is_ok(), "a rapid-reset connection stayed open");
    }
    // A line logged after them all: every line of theirs is in by the time it is.
    let mut marker = Peer::connect(nmid.addr).await;
    marker.send_raw(b"\x01junk that is no frame header").await;
    marker.expect_closed().await;
    let deadline = Instant::now() + PATIENCE;
    let seen = loop {
        let seen = nmid.log_so_far();
        if seen.iter().any(|l| l.contains("kind=\"first_frame\"")) {
            break seen;
        }
        assert!(Instant::now() < deadline, "no marker line: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let h2_lines = seen.iter().filter(|l| l.contains("recv_reset")).count();
    assert_eq!(h2_lines, 0, "h2's own lines: {seen:#?}");
    let all = seen.len();
    assert!(all < 30, "{all} lines for {FLOOD} connections: {seen:#?}");
}

/// What a token holder can repeat at will writes a handful of lines, not one each: 100
/// connections that authenticate (`authenticated` is at `debug`), 100 connections whose
/// frame stalls (`tcp.frame_timeout_ms`: a line per window, then counted), and one worker's
/// 100 registrations and 100 removals (its first at `info`, the rest at `debug`, their
/// count in its `worker left` line). Before, each wrote a line of its own.
#[actix_rt::test]
async fn what_a_token_holder_repeats_is_a_handful_of_lines() {
    const FLOOD: usize = 100;
    let config = TempConfig::new(
        "token-floods",
        &format!(
            "[log]\nrefusal_summary_interval_ms = 3600000\n[tcp]\nframe_timeout_ms = 300\n\
             [auth]\nenabled = true\n\
             [[auth.tokens]]\nname = \"w\"\nsecret = \"{WORKER_SECRET}\"\nroles = [\"worker\"]\n\
             functions = [\"F*\"]\n\
             [[auth.tokens]]\nname = \"c\"\nsecret = \"{CLIENT_SECRET}\"\nroles = [\"client\"]\n\
             functions = [\"*\"]\n"
        ),
    );
    let nmid = Process::start(&["--config", &config.arg()]);
    for _ in 0..FLOOD {
        let mut client = Peer::connect(nmid.addr).await;
        client
            .send(Frame::CAuth {
                secret: bytes(CLIENT_SECRET),
            })
            .await;
        assert!(matches!(client.recv().await, Frame::SAuthResult(_)));
    }
    let mut stalled = Vec::new();
    for _ in 0..FLOOD {
        let mut peer = Peer::connect(nmid.addr).await;
        peer.send(Frame::CAuth {
            secret: bytes(CLIENT_SECRET),
        })
        .await;
        assert!(matches!(peer.recv().await, Frame::SAuthResult(_)));
        // A C_DO_JOB header announcing a 100-byte body, and 10 bytes of it.
        let mut begun = [0, 0, 0, 3, 0, 0, 0, 16, 0, 0, 0, 100].to_vec();
        begun.extend_from_slice(&[0; 10]);
        peer.send_raw(&begun).await;
        stalled.push(peer);
    }
    for peer in stalled {
        peer.expect_closed().await;
    }
    let mut worker = Peer::connect(nmid.addr).await;
    worker
        .send(Frame::WAuth {
            secret: bytes(WORKER_SECRET),
        })
        .await;
    assert!(matches!(worker.recv().await, Frame::SAuthResult(_)));
    for n in 0..FLOOD {
        let function = bytes(&format!("F{n}"));
        worker.send(Frame::WAddFunc { function }).await;
        assert_eq!(worker.recv().await, Frame::Ok);
    }
    for n in 0..FLOOD {
        let function = bytes(&format!("F{n}"));
        worker.send(Frame::WDelFunc { function }).await;
    }
    // Its `worker left` line comes after every registration and removal of its own.
    drop(worker);
    let deadline = Instant::now() + PATIENCE;
    let seen = loop {
        let seen = nmid.log_so_far();
        if seen.iter().any(|l| l.contains("worker left")) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never left: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |needle: &str| seen.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("authenticated"), 0, "{seen:#?}");
    assert_eq!(count("did not arrive whole in time"), 1, "{seen:#?}");
    let changes = count("function registered") + count("function removed");
    assert!(
        changes <= 2,
        "{changes} lines for {FLOOD} registrations and removals"
    );
    let left = seen.iter().find(|l| l.contains("worker left")).unwrap();
    assert!(left.contains("function_changes=200"), "{left}");
    assert!(seen.len() < 20, "{} lines: {seen:#?}", seen.len());
}

/// `security.deny = ["::/0"]` starts with a `warn` line naming the key: it denies IPv6
/// peers only, and an IPv4 peer still connects. Before, it started silently.
#[actix_rt::test]
async fn a_deny_of_every_ipv6_address_is_warned_about() {
    let config = TempConfig::new("deny-v6", "[security]\ndeny = [\"::/0\"]\n");
    let nmid = Process::start(&["--config", &config.arg()]);
    let seen = nmid.log_so_far();
    let warned: Vec<&String> = (seen.iter())
        .filter(|l| l.contains(r#"exposure="deny_ipv6_only""#))
        .collect();
    assert_eq!(warned.len(), 1, "{seen:#?}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("security.deny"),
        "{warned:?}"
    );
    let mut worker = Peer::connect(nmid.addr).await;
    worker
        .send(Frame::WAddFunc {
            function: bytes("F"),
        })
        .await;
    assert_eq!(worker.recv().await, Frame::Ok, "an IPv4 peer is allowed");
}
