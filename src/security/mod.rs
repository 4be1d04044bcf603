//! Who may connect, serve and call: the address lists (`[security]`), identities and their
//! grants (`[auth]`) and TLS (`[tls]`). All of it is off by default, so nmid's SDKs work
//! unchanged; `docs/security.md` has the threat model.
//!
//! [`Security`] is shared by the accept loop, the sessions and HTTP. SIGHUP builds a new
//! [`Policy`] from the configuration file and swaps it in ([`Security::reload`]); the
//! generation it bumps tells every open session to check itself against the new one (a peer
//! now denied, or a token revoked, is closed within a second; the others keep their
//! connection).

pub mod access;
pub mod auth;
pub mod exposure;
pub mod tls;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tracing::warn;

pub use access::AccessList;
pub use auth::{Auth, Grant, Roles};
pub use exposure::{exposures, Exposure};
pub use tls::{ClientTls, Connector, TlsServer};

use crate::config::{Config, ConfigError};

/// The address lists and the grants, as the configuration says now.
#[derive(Debug, Default)]
pub struct Policy {
    /// `security.allow` / `security.deny`.
    pub access: AccessList,
    /// `[auth]`, when enabled.
    pub auth: Option<Auth>,
}

impl Policy {
    /// Builds the policy of `config`: parses the lists, reads the secrets.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let access =
            AccessList::parse(&config.security.allow, &config.security.deny).map_err(invalid)?;
        let auth = Auth::from_config(&config.auth).map_err(invalid)?;
        Ok(Self { access, auth })
    }

    /// Whether a peer at `ip` may connect.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.access.is_open() || self.access.permits(ip)
    }
}

impl Policy {
    /// What a connection's `identity` comes to under this policy (after a reload): its
    /// grant now (`None` with auth off), or why it may stay no longer.
    pub fn recheck(
        &self,
        ip: IpAddr,
        identity: &Identity,
    ) -> Result<Option<Arc<Grant>>, &'static str> {
        if let Some(grant) = identity.grant.as_ref().filter(|g| g.is_internal()) {
            return Ok(Some(grant.clone()));
        }
        if !self.admits(ip) {
            return Err("its address is no longer allowed (security.allow / security.deny)");
        }
        match (&self.auth, &identity.grant) {
            (None, _) => Ok(None),
            (Some(auth), Some(grant)) => (auth.regrant(grant, ip, &identity.cert_names))
                .map(Some)
                .ok_or("its grant was revoked (auth.tokens / auth.v1_peers)"),
            (Some(_), None) => Err("auth is now required"),
        }
    }
}

/// Who a connection is, checked again whenever the policy is reloaded.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// What it may do; `None` with auth off (everything).
    pub grant: Option<Arc<Grant>>,
    /// The DNS names of its TLS client certificate (mutual TLS).
    pub cert_names: Vec<String>,
    /// The policy generation it was last checked against.
    pub generation: u64,
}

fn invalid((key, reason): (&'static str, String)) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// The policy in force and the listeners' TLS; cheap to clone.
#[derive(Debug, Clone)]
pub struct Security {
    policy: Arc<RwLock<Arc<Policy>>>,
    generation: Arc<AtomicU64>,
    tls: Option<Arc<TlsServer>>,
}

impl Security {
    /// Builds everything `config` asks for; the error names the key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let policy = Policy::from_config(config)?;
        let tls = TlsServer::from_config(&config.tls).map_err(invalid)?;
        Ok(Self {
            policy: Arc::new(RwLock::new(Arc::new(policy))),
            generation: Arc::new(AtomicU64::new(0)),
            tls: tls.map(Arc::new),
        })
    }

    /// No lists, no auth, no TLS: what [`Config::default`] gives.
    pub fn open() -> Self {
        Self {
            policy: Arc::default(),
            generation: Arc::new(AtomicU64::new(0)),
            tls: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bumped by every reload: a session that saw another checks itself again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The listeners' TLS, when `[tls]` is set.
    pub fn tls(&self) -> Option<&Arc<TlsServer>> {
        self.tls.as_ref()
    }

    /// Applies the lists, grants and certificates of `config` (re-read from its file):
    /// all of it, or on an error none of it. TLS cannot be turned on or off without a
    /// restart (the listeners are set up for one or the other).
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        let policy = Policy::from_config(config)?;
        match (&self.tls, config.tls.enabled()) {
            (Some(tls), true) => tls.reload(&config.tls).map_err(invalid)?,
            (None, false) => {}
            (Some(_), false) | (None, true) => {
                warn!("turning TLS on or off needs a restart; the other settings are reloaded")
            }
        }
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}
