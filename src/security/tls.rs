//! `[tls]`: rustls on the nmid protocol and HTTP listeners, with the certificate, key and
//! client CA reloaded on SIGHUP without a restart (connections already open keep theirs),
//! and the client side the client and worker libraries, `nmidctl` and `nmid-faas` use.
//!
//! One [`rustls::ServerConfig`] serves both listeners; what a reload changes lives behind
//! its certificate resolver and client verifier, so a new handshake sees the new files at
//! once.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;

/// The crypto every TLS config of this crate uses (ring, as the rest of the tree).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS could not be set up: the key and the reason.
pub type TlsError = (&'static str, String);

/// The listeners' TLS: what handshakes use now, replaced by [`TlsServer::reload`].
#[derive(Debug)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<CurrentCert>,
    clients: Arc<CurrentClientVerifier>,
    /// Plaintext nmid connections are accepted too (`tls.allow_plaintext`).
    pub allow_plaintext: bool,
}

impl TlsServer {
    /// TLS as `[tls]` says, or `None` when no certificate is set.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let provider = provider();
        let certs = Arc::new(CurrentCert(RwLock::new(load_cert(config, &provider)?)));
        let clients = Arc::new(CurrentClientVerifier(RwLock::new(load_client_verifier(
            config, &provider,
        )?)));
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("tls.cert_file", e.to_string()))?
            .with_client_cert_verifier(clients.clone())
            .with_cert_resolver(certs.clone());
        Ok(Some(Self {
            config: Arc::new(server),
            certs,
            clients,
            allow_plaintext: config.allow_plaintext,
        }))
    }

    /// Reads the certificate, key and client CA again; on an error nothing changes.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let provider = provider();
        let cert = load_cert(config, &provider)?;
        let clients = load_client_verifier(config, &provider)?;
        *self.certs.0.write().unwrap_or_else(|e| e.into_inner()) = cert;
        *self.clients.0.write().unwrap_or_else(|e| e.into_inner()) = clients;
        Ok(())
    }

    /// The server config both listeners hand to rustls.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Whether client certificates are asked for and required now (`tls.client_ca_file`).
    pub fn mutual(&self) -> bool {
        self.clients.current().is_some()
    }
}

fn load_cert(config: &TlsConfig, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs("tls.cert_file", &config.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| ("tls.key_file", format!("{}: {e}", config.key_file)))?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| ("tls.key_file", format!("{}: {e}", config.key_file)))?;
    Ok(Arc::new(certified))
}

fn load_client_verifier(
    config: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    if config.client_ca_file.is_empty() {
        return Ok(None);
    }
    let roots = roots_from("tls.client_ca_file", &config.client_ca_file)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ("tls.client_ca_file", e.to_string()))?;
    Ok(Some(verifier))
}

/// Every certificate of the PEM file at `path`; at least one.
pub fn read_certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| (key, format!("{path}: {e}")))?;
    if certs.is_empty() {
        return Err((key, format!("{path}: no certificate in it (PEM expected)")));
    }
    Ok(certs)
}

/// The certificates of the PEM file at `path`, as trust anchors.
pub fn roots_from(key: &'static str, path: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(key, path)? {
        roots.add(cert).map_err(|e| (key, format!("{path}: {e}")))?;
    }
    Ok(roots)
}

/// The DNS names (subjectAltName) of a certificate: the names `auth.v1_peers` matches a
/// mutual-TLS peer by.
pub fn cert_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => parsed.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// The server certificate handshakes use now.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The client verifier handshakes use now: none (no client certificate asked for), or the
/// one of `tls.client_ca_file` (a certificate required).
#[derive(Debug)]
struct CurrentClientVerifier(RwLock<Option<Arc<dyn ClientCertVerifier>>>);

impl CurrentClientVerifier {
    fn current(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&dyn ClientCertVerifier) -> Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        match self.current() {
            Some(verifier) => f(verifier.as_ref()),
            None => Err(rustls::Error::General(
                "no client certificates are accepted".into(),
            )),
        }
    }
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().is_some()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints live behind the lock; none tells a client to send whichever it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.with(|v| v.verify_client_cert(end_entity, intermediates, now))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.with(|v| v.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.with(|v| v.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self.current() {
            Some(verifier) => verifier.supported_verify_schemes(),
            None => provider()
                .signature_verification_algorithms
                .supported_schemes(),
        }
    }
}

/// How a client (library, `nmidctl`, `nmid-faas`, a dispatcher's peer links) connects with
/// TLS: whom it trusts, the name it expects, and its own certificate for mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// A PEM file of the CAs to trust; empty: the system's trust store.
    pub ca_file: String,
    /// The name the server's certificate must carry (SNI); empty: the host of the address.
    pub server_name: String,
    /// This client's certificate chain (PEM), for mutual TLS; empty: none.
    pub cert_file: String,
    /// Its private key (PEM).
    pub key_file: String,
}

/// A client TLS connector, ready for handshakes.
#[derive(Clone)]
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Reads the files and builds the connector; the error says which file and why.
    pub fn connector(&self) -> Result<Connector, String> {
        let roots = if self.ca_file.is_empty() {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no CA certificates in the system's trust store: give a CA file".to_owned(),
                );
            }
            roots
        } else {
            roots_from("ca_file", &self.ca_file).map_err(|(_, reason)| reason)?
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => {
                let chain = read_certs("cert_file", &self.cert_file).map_err(|(_, r)| r)?;
                let key = PrivateKeyDer::from_pem_file(&self.key_file)
                    .map_err(|e| format!("{}: {e}", self.key_file))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{}: {e}", self.key_file))?
            }
            _ => {
                return Err(
                    "a client certificate needs both its cert file and its key file".to_owned(),
                )
            }
        };
        let server_name = match self.server_name.as_str() {
            "" => None,
            name => Some(
                ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("server name {name:?}: {e}"))?,
            ),
        };
        Ok(Connector {
            config: Arc::new(config),
            server_name,
        })
    }
}

impl Connector {
    /// Runs the TLS handshake on `stream` to the server at `addr` (`host:port`; the host is
    /// the name checked unless a server name was given).
    pub async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::TlsStream<tokio::net::TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name_of(addr)?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let stream = connector.connect(name, stream).await?;
        Ok(tokio_rustls::TlsStream::Client(stream))
    }

    /// The client config, for HTTP clients (reqwest) built on the same trust.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

/// The host of `host:port` (or `[v6]:port`) as a TLS server name.
fn server_name_of(addr: &str) -> std::io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
    })
}

/// Whether `path` names a file that exists (for config checks that give the key).
pub fn file_exists(path: &str) -> bool {
    Path::new(path).is_file()
}
