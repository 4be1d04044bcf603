//! `[tls]`: rustls on the nmid protocol and HTTP listeners, with the certificate, key and
//! client CA reloaded on SIGHUP without a restart (connections already open keep theirs).
//! The client side (the libraries, `nmidctl`, `nmid-faas`, the peer links) is
//! `nmid_proto::tls`, re-exported here.
//!
//! One [`rustls::ServerConfig`] serves both listeners; what a reload changes lives behind
//! its certificate resolver and client verifier, so a new handshake sees the new files at
//! once.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

pub use nmid_proto::tls::{
    cert_dns_names, provider, read_certs, roots_from, ClientTls, Connector, TlsError,
};

use crate::config::TlsConfig;

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

/// Whether `path` names a file that exists (for config checks that give the key).
pub fn file_exists(path: &str) -> bool {
    Path::new(path).is_file()
}
