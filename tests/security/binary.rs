//! The `nmid` binary with auth and TLS on: SIGHUP reloads, `nmidctl` and `nmid-faas` with
//! tokens over TLS, bad settings refused at start, `config/hardened.toml`, and a cluster
//! forwarding over TLS.

use super::tls::{https_get, https_request, tls_connect, with_tls, Pki};
use super::*;

/// A configuration file for the `nmid` binary, rewritten in place between SIGHUPs.
pub(crate) struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub(crate) fn new(pki: &Pki, text: &str) -> Self {
        let file = Self {
            path: pki.dir.join("nmid.toml"),
        };
        file.write(text);
        file
    }

    pub(crate) fn write(&self, text: &str) {
        let next = self.path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(next, &self.path).unwrap();
    }

    pub(crate) fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

/// The `nmid` binary with auth and TLS on and `--demo`: the demo worker serves (through the
/// internal door), a client with the CA and a token calls it. SIGHUP then applies a new
/// certificate (new handshakes see it, an open connection keeps working), a new deny list
/// (an open connection from 127.0.0.2 is closed, 127.0.0.1 stays), and a broken file
/// changes nothing.
#[actix_rt::test]
async fn sighup_reloads_certificates_and_lists_of_the_binary() {
    let pki = Pki::new("sighup");
    let (cert, key) = pki.server("first");
    let settings = |cert: &str, key: &str, deny: &str| {
        format!(
            r#"
[security]
deny = [{deny}]
[auth]
enabled = true
[[auth.tokens]]
name = "web"
secret = "{CLIENT_SECRET}"
roles = ["client"]
functions = ["ToUpper"]
[[auth.v1_peers]]
cidrs = ["127.0.0.0/8"]
roles = ["worker"]
functions = ["A"]
[tls]
cert_file = "{cert}"
key_file = "{key}"
allow_plaintext = true
"#
        )
    };
    let file = ConfigFile::new(&pki, &settings(&cert, &key, ""));
    let mut nmid = Process::start(&["--config", &file.arg(), "--demo"]);
    let connect = |addr: String| {
        Client::builder(addr)
            .tls(pki.trust())
            .token(CLIENT_SECRET)
            .connect()
    };
    let deadline = Instant::now() + PATIENCE;
    let client = loop {
        let client = connect(nmid.addr.to_string()).await.unwrap();
        match client.call("ToUpper", name_params("demo")).await {
            Ok(ret) => {
                assert_eq!(data_of(&ret), "DEMO");
                break client;
            }
            Err(err) => assert!(Instant::now() < deadline, "the demo never answered: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, first) = tls_connect(nmid.addr, &pki.trust()).await.unwrap();
    assert_eq!(first, pem_der(&cert));
    // Plaintext v1 peers, from two addresses.
    let (mut from_1, answer) = register_v1(connect_from("127.0.0.1", nmid.addr).await, "A").await;
    assert_eq!(answer, Frame::Ok);
    let mut from_2 = connect_from("127.0.0.2", nmid.addr).await;
    from_2
        .write_all(&common::wire(&Frame::WSetName { name: bytes("two") }))
        .await
        .unwrap();

    let (cert, key) = pki.server("second");
    file.write(&settings(&cert, &key, r#""127.0.0.2""#));
    nmid.signal("-HUP");
    nmid.wait_for_log("[security], [auth] and [tls] reloaded");
    let (_, second) = tls_connect(nmid.addr, &pki.trust()).await.unwrap();
    assert_eq!(
        second,
        pem_der(&cert),
        "a new handshake gets the new certificate"
    );
    assert_ne!(first, second);
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("still")).await.unwrap()),
        "STILL"
    );
    assert!(
        closed(&mut from_2).await,
        "127.0.0.2 stayed connected after the reload"
    );
    let mut refused = connect_from("127.0.0.2", nmid.addr).await;
    assert!(closed(&mut refused).await);
    from_1
        .send(Frame::WHeartbeatPing {
            body: bytes("PING"),
        })
        .await
        .unwrap();
    let pong = tokio::time::timeout(PATIENCE, from_1.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Frame::SHeartbeatPong, "127.0.0.1 kept its connection");

    file.write("[security]\ndeny = [\"nonsense\"]\n");
    nmid.signal("-HUP");
    nmid.wait_for_log("the previous settings stay");
    let mut still_refused = connect_from("127.0.0.2", nmid.addr).await;
    assert!(
        closed(&mut still_refused).await,
        "the bad file replaced the deny list"
    );
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("after")).await.unwrap()),
        "AFTER"
    );
    nmid.signal("-TERM");
    assert!(nmid.wait_exit(PATIENCE * 2).success());
}

/// The DER of the first certificate of a PEM file.
fn pem_der(path: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// `nmidctl` with `--ca-file` and `--token` (or `NMID_TOKEN`) calls over TLS and reads the
/// admin API over HTTPS; without the token it exits 10 with the dispatcher's reason.
#[actix_rt::test]
async fn nmidctl_speaks_tls_and_presents_its_token() {
    let pki = Pki::new("nmidctl");
    let dispatcher = start_dispatcher_with_http(with_tls(auth_config(), &pki));
    let worker = Worker::builder()
        .server(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(WORKER_SECRET)
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    served(&dispatcher, "ToUpper", 1).await;
    let https = format!("https://{}", dispatcher.http.unwrap());
    let ctl = |args: &[&str], token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nmidctl"));
        command
            .args([
                "--addr",
                &dispatcher.addr.to_string(),
                "--http",
                &https,
                "--ca-file",
                &pki.ca_file(),
            ])
            .args(args)
            .env_remove("NMID_TOKEN")
            .kill_on_drop(true);
        if let Some(token) = token {
            command.env("NMID_TOKEN", token);
        }
        let run = command.output();
        async move {
            tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out = ctl(
        &["call", "ToUpper", r#"{"name":"ctl"}"#],
        Some(CLIENT_SECRET),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "CTL");
    let out = ctl(&["--token", ADMIN_SECRET, "workers"], None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ToUpper"),
        "{out:?}"
    );
    let out = ctl(&["call", "ToUpper", r#"{"name":"ctl"}"#], None).await;
    assert_eq!(
        out.status.code(),
        Some(10),
        "no token: refused as unauthenticated at the first frame: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication required"),
        "{out:?}"
    );
    let out = ctl(&["call", "ToUpper", "{}"], Some("wrong-secret-0123456789")).await;
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token has this secret"),
        "{out:?}"
    );
    let out = ctl(&["workers"], Some(CLIENT_SECRET)).await;
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    worker.stop().await;
    dispatcher.stop().await;
}

/// `nmid-faas` with a token file and `--ca-file` serves its functions to a dispatcher with
/// auth and TLS on.
#[actix_rt::test]
async fn nmid_faas_serves_with_a_token_over_tls() {
    let pki = Pki::new("faas");
    let mut config = with_tls(auth_config(), &pki);
    config.auth.tokens[0].functions = vec!["Upper".to_owned()];
    config.auth.tokens[1].functions = vec!["Upper".to_owned()];
    let dispatcher = start_dispatcher_with_http(config);
    let token_file = pki.path("worker.token");
    std::fs::write(&token_file, format!("{WORKER_SECRET}\n")).unwrap();
    let functions = pki.path("functions.toml");
    std::fs::write(
        &functions,
        "[[function]]\nname = \"Upper\"\ncommand = [\"tr\", \"a-z\", \"A-Z\"]\n",
    )
    .unwrap();
    let faas = std::process::Command::new(env!("CARGO_BIN_EXE_nmid-faas"))
        .args([
            "--server",
            &dispatcher.addr.to_string(),
            "--token-file",
            &token_file,
            "--ca-file",
            &pki.ca_file(),
            &functions,
        ])
        .env_remove("NMID_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let faas = Process::adopt(faas, "nmid-faas");
    let deadline = Instant::now() + Duration::from_secs(20);
    while dispatcher
        .snapshot()
        .await
        .function("Upper")
        .is_none_or(|f| f.workers == 0)
    {
        assert!(Instant::now() < deadline, "nmid-faas never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let data = client
        .call_data("Upper", &serde_json::json!({"name": "faas"}))
        .await
        .unwrap();
    assert_eq!(&data[..], br#"{"NAME":"FAAS"}"#);
    drop(faas); // killed, and its stderr scanned for panics
    dispatcher.stop().await;
}

/// A bad `[security]`, `[auth]` or `[tls]` stops `nmid` at start, and fails `nmid --check`,
/// with exit status 2 and the key and reason, never the secret.
#[test]
fn bad_security_settings_are_refused_at_start() {
    let pki = Pki::new("bad-config");
    let (cert, key) = pki.server("server");
    let missing = pki.path("missing.pem");
    let cases = [
        ("[security]\ndeny = [\"10.0.0.0/33\"]\n", "config key `security.deny`: \"10.0.0.0/33\" is not an IP address or a CIDR network"),
        ("[security]\nallow = [\"example.com\"]\n", "config key `security.allow`"),
        (
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"t\"\nsecret = \"short-secret\"\nroles = [\"client\"]\nfunctions = [\"*\"]\n",
            "config key `auth.tokens`: token \"t\": the secret is shorter than 16 bytes",
        ),
        (
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"t\"\nsecret = \"0123456789abcdef0123\"\nroles = [\"root\"]\nfunctions = [\"*\"]\n",
            "unknown role \"root\"",
        ),
        ("[auth]\nenabled = true\n", "no [[auth.tokens]] or [[auth.v1_peers]] grants anything"),
        (
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"t\"\nsecret = \"0123456789abcdef0123\"\nroles = [\"client\"]\nfunctions = [\"*\"]\n[[auth.tokens]]\nname = \"t\"\nsecret = \"fedcba9876543210fedcba\"\nroles = [\"admin\"]\n",
            "config key `auth.tokens`: token name \"t\" is used twice",
        ),
        (&format!("[tls]\ncert_file = \"{cert}\"\n"), "config key `tls.key_file`: tls.cert_file and tls.key_file are set together"),
        (&format!("[tls]\ncert_file = \"{missing}\"\nkey_file = \"{key}\"\n"), "config key `tls.cert_file`"),
        (&format!("[tls]\ncert_file = \"{cert}\"\nkey_file = \"{cert}\"\n"), "config key `tls.key_file`"),
        ("[tls]\nallow_plaintext = true\n", "config key `tls.allow_plaintext`: needs tls.cert_file"),
        (
            &format!("[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{missing}\"\n"),
            "config key `tls.client_ca_file`",
        ),
    ];
    let path = pki.path("bad.toml");
    // Started, and checked with `--check` (which must refuse what start-up refuses).
    let runs = cases.iter().flat_map(|case| [(case, false), (case, true)]);
    for ((text, expected), check) in runs {
        std::fs::write(&path, text).unwrap();
        let mut command = std::process::Command::new(common::process::NMID);
        command.args(["--config", &path]);
        command.args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
        if check {
            command.arg("--check");
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{text} (check: {check}): {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{text}: expected {expected:?} in {stderr}"
        );
        assert!(
            !stderr.contains("0123456789abcdef0123"),
            "a secret in the log: {stderr}"
        );
    }
}

/// `config/hardened.toml`, its paths pointed at files made here, starts (on 127.0.0.1) and
/// serves `--demo`'s `ToUpper` to the `web` token over TLS, refuses plaintext outright (no
/// `allow_plaintext`: a token cannot even be sent in clear; counted as `reason="tls"`) and
/// keeps the admin API closed without the `ops` token.
#[actix_rt::test]
async fn the_hardened_config_starts_and_serves() {
    let pki = Pki::new("hardened");
    let etc = pki.dir.join("etc");
    std::fs::create_dir_all(etc.join("secrets")).unwrap();
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    for (name, secret) in [
        ("ops", ADMIN_SECRET),
        ("orders-worker", WORKER_SECRET),
        ("web", CLIENT_SECRET),
    ] {
        std::fs::write(etc.join("secrets").join(name), format!("{secret}\n")).unwrap();
    }
    let (cert, key) = pki.server("server");
    std::fs::copy(&cert, etc.join("tls/server.pem")).unwrap();
    std::fs::copy(&key, etc.join("tls/server.key")).unwrap();
    let hardened =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/hardened.toml"))
            .unwrap();
    let file = ConfigFile::new(
        &pki,
        &hardened.replace("/etc/nmid/", &format!("{}/", etc.display())),
    );
    let nmid = Process::start(&["--config", &file.arg(), "--demo"]);
    let client = Client::builder(nmid.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.call("ToUpper", name_params("hardened")).await {
            Ok(ret) => {
                assert_eq!(data_of(&ret), "HARDENED");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "no answer: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = Client::builder(nmid.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert!(
        plain.is_err(),
        "a plaintext connection was taken: {plain:?}"
    );
    let status = https_get(nmid.http.unwrap(), &pki.trust(), "/api/v1/stats")
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let scrape = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_SECRET}\r\n\
         Connection: close\r\n\r\n"
    );
    let text = https_request(nmid.http.unwrap(), &pki.trust(), &scrape)
        .await
        .unwrap();
    assert!(
        metric(&text, r#"nmid_security_refusals_total{reason="tls"}"#) >= 1.0,
        "{text}"
    );
    drop(nmid);
}

/// A cluster on a real etcd with auth and TLS on both dispatchers: a call entering the one
/// without the worker is forwarded over TLS with the peer token, and answered; the caller
/// still needs its own token at the entry.
#[actix_rt::test]
async fn a_cluster_forwards_over_tls_with_its_peer_token() {
    let pki = Pki::new("cluster");
    let (cert, key) = pki.server("server");
    let peer_secret = "peer-secret-0123456789abcdef";
    let secret_file = pki.path("peer.secret");
    std::fs::write(&secret_file, peer_secret).unwrap();
    let ca = pki.ca_file();
    let file = ConfigFile::new(
        &pki,
        &format!(
            r#"
[auth]
enabled = true
peer_secret_file = "{secret_file}"
[[auth.tokens]]
name = "peers"
secret = "{peer_secret}"
roles = ["client"]
functions = ["*"]
[[auth.tokens]]
name = "web"
secret = "{CLIENT_SECRET}"
roles = ["client"]
functions = ["ToUpper"]
[[auth.tokens]]
name = "upper-worker"
secret = "{WORKER_SECRET}"
roles = ["worker"]
functions = ["ToUpper"]
[tls]
cert_file = "{cert}"
key_file = "{key}"
peer_ca_file = "{ca}"
"#
        ),
    );
    let etcd = cluster_support::Etcd::start().await;
    let entry = cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &file.arg()]);
    let serving = cluster_support::Nmid::start_with_args(&etcd.url, &["--config", &file.arg()]);
    let worker = Worker::builder()
        .server(serving.tcp.to_string())
        .tls(pki.trust())
        .token(WORKER_SECRET)
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    let client = Client::builder(entry.tcp.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.call("ToUpper", name_params("forwarded")).await {
            Ok(ret) => {
                assert_eq!(data_of(&ret), "FORWARDED");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "never forwarded: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        client.call("Elsewhere", name_params("x")).await,
        Err(ClientError::Forbidden(_))
    ));
    worker.stop().await;
}

/// A v1 `ToUpper` call of `text` on `peer`, answered with the upper-cased text.
async fn call_upper(peer: &mut Peer, text: &str) {
    peer.call("ToUpper", &name_params(text)).await;
    match peer.recv().await {
        Frame::SReturnData(data) => assert_eq!(data_of(&data.ret), text.to_uppercase()),
        other => panic!("expected S_RETURN_DATA, got {other:?}"),
    }
}

/// One `GET /healthz` on a keep-alive connection: the response's first bytes.
async fn healthz_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// SIGHUP reloads the allow list too, not only the deny list: with 127.0.0.1 and 127.0.0.2
/// allowed, both are served; once the file allows 127.0.0.1 only, 127.0.0.2's open nmid
/// connection is closed, its keep-alive HTTP connection is answered 403 `forbidden_address`
/// at its next request, and its new connections are closed at accept on both ports, while
/// 127.0.0.1 goes on being served.
#[actix_rt::test]
async fn sighup_reloads_the_allow_list_of_the_binary() {
    let pki = Pki::new("allow");
    let allow = |list: &str| format!("[security]\nallow = [{list}]\n");
    let file = ConfigFile::new(&pki, &allow(r#""127.0.0.1", "127.0.0.2""#));
    let mut nmid = Process::start(&["--config", &file.arg(), "--demo"]);
    let (local, other): (IpAddr, IpAddr) =
        ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let mut kept = Peer::connect_from(local, nmid.addr).await;
    let mut dropped = Peer::connect_from(other, nmid.addr).await;
    let deadline = Instant::now() + PATIENCE;
    while nmid
        .log_so_far()
        .iter()
        .all(|l| !l.contains("function registered"))
    {
        assert!(
            Instant::now() < deadline,
            "the demo worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call_upper(&mut kept, "kept").await;
    call_upper(&mut dropped, "dropped").await;
    let http = nmid.http.unwrap();
    let mut keep_alive = connect_from("127.0.0.2", http).await;
    assert!(healthz_on(&mut keep_alive)
        .await
        .starts_with("HTTP/1.1 200"));

    file.write(&allow(r#""127.0.0.1""#));
    nmid.signal("-HUP");
    nmid.wait_for_log("SIGHUP: [security], [auth] and [tls] reloaded");
    dropped.expect_closed().await;
    let refused = healthz_on(&mut keep_alive).await;
    assert!(
        refused.starts_with("HTTP/1.1 403") && refused.contains("forbidden_address"),
        "{refused}"
    );
    assert!(
        closed(&mut keep_alive).await,
        "the refused keep-alive connection stayed open"
    );
    assert!(closed(&mut connect_from("127.0.0.2", nmid.addr).await).await);
    assert!(closed(&mut connect_from("127.0.0.2", http).await).await);
    call_upper(&mut kept, "still").await;
    let mut again = connect_from("127.0.0.1", http).await;
    assert!(healthz_on(&mut again).await.starts_with("HTTP/1.1 200"));
}
