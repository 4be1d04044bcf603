//! The client side of TLS (feature `tls`): how a client or worker connects to a
//! dispatcher with TLS ([`ClientTls`] -> [`Connector`]): whom it trusts (a CA file, else
//! the system's trust store), the name it expects, and its own certificate for mutual TLS.
//! rustls with ring. The dispatcher's listeners use the PEM readers here too.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;

/// The crypto every TLS config of nmid-rs uses (ring: no aws-lc, no process-wide default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS could not be set up: the key and the reason.
pub type TlsError = (&'static str, String);

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
