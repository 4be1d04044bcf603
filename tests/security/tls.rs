//! TLS and mutual TLS on both listeners, with certificates made here (rcgen): the test PKI
//! ([`Pki`]) and raw TLS helpers that the other modules use too.

use super::*;

/// A CA of the test's own, and certificates it signs, as PEM files in a directory of the
/// test's own.
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nmid-pki-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("nmid test CA {name}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    pub(crate) fn ca_file(&self) -> String {
        self.path("ca.pem")
    }

    /// A certificate for `names` (IPs or DNS names) with `usage`, as `<file>.pem` and
    /// `<file>.key`; returns both paths.
    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{file}.pem")),
            self.path(&format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub(crate) fn server(&self, file: &str) -> (String, String) {
        self.issue(
            file,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub(crate) fn client(&self, file: &str, name: &str) -> (String, String) {
        self.issue(file, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Trusting this CA, with no client certificate.
    pub(crate) fn trust(&self) -> ClientTls {
        ClientTls {
            ca_file: self.ca_file(),
            ..ClientTls::default()
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config` with TLS on from `pki`'s server certificate.
pub(crate) fn with_tls(mut config: Config, pki: &Pki) -> Config {
    let (cert, key) = pki.server("server");
    config.tls.cert_file = cert;
    config.tls.key_file = key;
    config
}

/// A raw TLS connection to `addr` trusting `tls`; the certificate the server presented.
pub(crate) async fn tls_connect(
    addr: SocketAddr,
    tls: &ClientTls,
) -> std::io::Result<(nmid::net::TlsStream, Vec<u8>)> {
    let connector = tls.connector().unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let stream = connector.connect(&addr.to_string(), tcp).await?;
    let presented = match &stream {
        tokio_rustls::TlsStream::Client(s) => {
            s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        }
        tokio_rustls::TlsStream::Server(_) => unreachable!(),
    };
    Ok((stream, presented))
}

/// A GET over a raw TLS connection: the status line.
pub(crate) async fn https_get(
    addr: SocketAddr,
    tls: &ClientTls,
    path: &str,
) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let response = https_request(addr, tls, &request).await?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

/// `request` (whole, with `Connection: close`) over a raw TLS connection: the whole
/// response, as text.
pub(crate) async fn https_request(
    addr: SocketAddr,
    tls: &ClientTls,
    request: &str,
) -> std::io::Result<String> {
    let (mut stream, _) = tls_connect(addr, tls).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("no response"))??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// TLS on both listeners: the client and worker libraries connect with the test CA and
/// call as usual, HTTPS answers; a plaintext peer is closed (no `allow_plaintext`), and a
/// client that does not trust the CA fails its handshake.
#[actix_rt::test]
async fn tls_on_the_nmid_port_and_http() {
    let pki = Pki::new("tls");
    let dispatcher = start_dispatcher_with_http(with_tls(Config::default(), &pki));
    let worker = Worker::builder()
        .server(dispatcher.addr.to_string())
        .tls(pki.trust())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    served(&dispatcher, "ToUpper", 1).await;
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("tls")).await.unwrap()),
        "TLS"
    );
    let v1 = Client::builder(format!("localhost:{}", dispatcher.addr.port()))
        .protocol(Protocol::V1)
        .tls(pki.trust())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&v1.call("ToUpper", name_params("by name")).await.unwrap()),
        "BY NAME"
    );

    let plain = Peer::connect(dispatcher.addr).await;
    let mut plain = plain;
    plain.call("ToUpper", &name_params("plain")).await;
    plain.expect_closed().await;
    let stranger = Pki::new("stranger");
    let untrusted = Client::builder(dispatcher.addr.to_string())
        .tls(stranger.trust())
        .connect()
        .await;
    assert!(
        matches!(untrusted, Err(ClientError::Connect { .. })),
        "{untrusted:?}"
    );

    let status = https_get(dispatcher.http.unwrap(), &pki.trust(), "/healthz")
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let text = {
        let (mut stream, _) = tls_connect(dispatcher.http.unwrap(), &pki.trust())
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(
        metric(&text, r#"nmid_security_refusals_total{reason="tls"}"#) >= 2.0,
        "{text}"
    );
    worker.stop().await;
    dispatcher.stop().await;
}

/// `tls.allow_plaintext`: nmid's v1 SDKs (plaintext) and TLS clients on the same port; a
/// token is refused on a plaintext connection.
#[actix_rt::test]
async fn plaintext_beside_tls_when_allowed() {
    let pki = Pki::new("plaintext");
    let mut config = with_tls(Config::default(), &pki);
    config.tls.allow_plaintext = true;
    let dispatcher = start_dispatcher_with_http(config);
    let mut v1_worker = Peer::worker(dispatcher.addr, "plain-worker", &["Echo"]).await;
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .connect()
        .await
        .unwrap();
    let call = tokio::spawn(async move { client.call("Echo", name_params("both")).await });
    let job = v1_worker.recv_job().await;
    v1_worker
        .answer(&job, &RetStruct::ok("echo").encode())
        .await;
    assert_eq!(data_of(&call.await.unwrap().unwrap()), "echo");
    dispatcher.stop().await;

    // With auth on too, a token on a plaintext connection is refused: it crossed in clear.
    let mut config = with_tls(auth_config(), &pki);
    config.tls.allow_plaintext = true;
    let dispatcher = start_dispatcher_with_http(config);
    let in_clear = Client::builder(dispatcher.addr.to_string())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert_eq!(
        in_clear.err(),
        Some(ClientError::Unauthorized(
            "tokens are taken over TLS only (this dispatcher has TLS on)".to_owned()
        ))
    );
    let over_tls = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert!(over_tls.is_ok());
    dispatcher.stop().await;
}

/// Mutual TLS: without a client certificate the handshake fails (nmid port and HTTPS);
/// with one the CA signed it succeeds; and its DNS name is an identity `auth.v1_peers`
/// grants: a v1 worker with no token registers by its certificate.
#[actix_rt::test]
async fn mutual_tls_and_certificate_names_as_identities() {
    let pki = Pki::new("mtls");
    let mut config = with_tls(auth_config(), &pki);
    config.tls.client_ca_file = pki.ca_file();
    config.auth.v1_peers = vec![V1PeerConfig {
        cert_names: vec!["legacy-worker.internal".to_owned()],
        roles: vec!["worker".to_owned()],
        functions: vec!["ToUpper".to_owned()],
        ..V1PeerConfig::default()
    }];
    let dispatcher = start_dispatcher_with_http(config);
    let no_cert = Client::builder(dispatcher.addr.to_string())
        .tls(pki.trust())
        .token(CLIENT_SECRET)
        .connect()
        .await;
    assert!(no_cert.is_err(), "connected without a client certificate");
    assert!(
        https_get(dispatcher.http.unwrap(), &pki.trust(), "/healthz")
            .await
            .is_err()
    );

    let (cert, key) = pki.client("legacy", "legacy-worker.internal");
    let with_cert = ClientTls {
        ca_file: pki.ca_file(),
        cert_file: cert,
        key_file: key,
        ..ClientTls::default()
    };
    let legacy = Worker::builder()
        .name("legacy")
        .server(dispatcher.addr.to_string())
        .protocol(Protocol::V1)
        .tls(with_cert.clone())
        .function("ToUpper", nmid::demo::to_upper)
        .start()
        .unwrap();
    served(&dispatcher, "ToUpper", 1).await;
    let (cert, key) = pki.client("web", "web.internal");
    let client_tls = ClientTls {
        ca_file: pki.ca_file(),
        cert_file: cert,
        key_file: key,
        ..ClientTls::default()
    };
    let client = Client::builder(dispatcher.addr.to_string())
        .tls(client_tls.clone())
        .token(CLIENT_SECRET)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        data_of(&client.call("ToUpper", name_params("mtls")).await.unwrap()),
        "MTLS"
    );
    // A certificate alone is no grant for a tagged client: web.internal is not in v1_peers.
    let anonymous = Client::builder(dispatcher.addr.to_string())
        .tls(client_tls.clone())
        .connect()
        .await
        .unwrap();
    assert!(anonymous.call("ToUpper", name_params("x")).await.is_err());
    assert_eq!(
        https_get(dispatcher.http.unwrap(), &client_tls, "/healthz")
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );
    legacy.stop().await;
    dispatcher.stop().await;
}
