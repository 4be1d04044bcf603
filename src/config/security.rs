//! `[security]`, `[auth]` and `[tls]`: their keys and the checks of keys that go together.

use serde::Deserialize;

use super::{Config, ConfigError};

/// `[security]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// IPs and CIDRs that may connect; empty: every address not denied.
    pub allow: Vec<String>,
    /// IPs and CIDRs that may not connect (wins over `allow`).
    pub deny: Vec<String>,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Peers must present a token, or match a `v1_peers` grant.
    pub enabled: bool,
    /// `GET /metrics` needs no token.
    pub open_metrics: bool,
    /// `[[auth.tokens]]`.
    pub tokens: Vec<TokenConfig>,
    /// `[[auth.v1_peers]]`: grants to peers that cannot present a token.
    pub v1_peers: Vec<V1PeerConfig>,
    /// A file with the secret this dispatcher presents to its cluster peers.
    pub peer_secret_file: String,
    /// An environment variable with that secret.
    pub peer_secret_env: String,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Shown in logs and metrics (never the secret).
    pub name: String,
    /// The secret itself.
    pub secret: String,
    /// A file holding the secret (one line).
    pub secret_file: String,
    /// An environment variable holding the secret.
    pub secret_env: String,
    /// Out of `worker`, `client`, `admin`.
    pub roles: Vec<String>,
    /// Glob patterns of the functions it may serve or call.
    pub functions: Vec<String>,
}

/// One `[[auth.v1_peers]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct V1PeerConfig {
    /// Shown in logs.
    pub name: String,
    /// IPs and CIDRs it grants to.
    pub cidrs: Vec<String>,
    /// TLS client certificate DNS names it grants to (mutual TLS).
    pub cert_names: Vec<String>,
    /// Out of `worker`, `client`.
    pub roles: Vec<String>,
    /// Glob patterns of the functions they may serve or call.
    pub functions: Vec<String>,
}

/// `[tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM); empty: no TLS.
    pub cert_file: String,
    /// Its private key (PEM).
    pub key_file: String,
    /// CAs of client certificates (PEM); set: every TLS client must present one.
    pub client_ca_file: String,
    /// Also accept plaintext nmid connections (for v1 SDKs, which cannot speak TLS).
    pub allow_plaintext: bool,
    /// CAs the certificates of peer dispatchers are checked against (cluster links).
    pub peer_ca_file: String,
}

impl TlsConfig {
    /// TLS is on: a certificate is set.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

impl Config {
    /// The `[tls]` checks of keys that go together. (The lists, secrets and certificates
    /// are read and checked by `security::Security::from_config`, at start and on reload.)
    pub(super) fn validate_security(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            let key = match tls.cert_file.is_empty() {
                true => "tls.cert_file",
                false => "tls.key_file",
            };
            return Err(ConfigError::Invalid {
                key,
                reason: "tls.cert_file and tls.key_file are set together or not at all".into(),
            });
        }
        if !tls.enabled() && (!tls.client_ca_file.is_empty() || tls.allow_plaintext) {
            let key = match tls.allow_plaintext {
                true => "tls.allow_plaintext",
                false => "tls.client_ca_file",
            };
            return Err(ConfigError::Invalid {
                key,
                reason: "needs tls.cert_file and tls.key_file (TLS is off)".into(),
            });
        }
        Ok(())
    }
}
