//! `[auth]`: who a peer is (a token it presents, or for v1 peers, which cannot present one,
//! its address or TLS certificate) and what that grants: roles (`worker`, `client`,
//! `admin`, `peer`) and the functions it may serve or call, as glob patterns.
//!
//! Secrets are kept as SHA-256 digests and a presented secret is compared with every token's
//! in constant time: neither the time taken nor an early exit tells which bytes matched.
//! They are never logged; a grant is shown by its token's name.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::access::{in_any, parse_net};
use crate::call::ClientKey;
use crate::config::{AuthConfig, TokenConfig, V1PeerConfig};

/// Shortest secret accepted, in bytes: shorter ones are guessable.
pub const MIN_SECRET_BYTES: usize = 16;

/// What a grant lets its holder do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// Register functions and run their jobs.
    pub const WORKER: Roles = Roles(1);
    /// Call functions.
    pub const CLIENT: Roles = Roles(2);
    /// The admin API, the dashboard and `/metrics`.
    pub const ADMIN: Roles = Roles(4);
    /// Forward calls on behalf of other callers: a peer dispatcher, whose forwarded calls
    /// name their caller and are authorized and rate-limited as that caller.
    pub const PEER: Roles = Roles(8);

    /// Whether every role of `other` is in `self`.
    pub fn has(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }

    fn parse(names: &[String]) -> Result<Self, String> {
        let mut roles = Roles::default();
        for name in names {
            roles.0 |= match name.as_str() {
                "worker" => Self::WORKER.0,
                "client" => Self::CLIENT.0,
                "admin" => Self::ADMIN.0,
                "peer" => Self::PEER.0,
                other => {
                    return Err(format!(
                        "unknown role {other:?} (roles: worker, client, admin, peer)"
                    ))
                }
            };
        }
        Ok(roles)
    }
}

/// Where a grant came from, to find it again after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The token of this name, authenticated with a secret of this digest.
    Token { name: Arc<str>, digest: [u8; 32] },
    /// A `[[auth.v1_peers]]` entry, matched by address or certificate.
    V1Peer,
    /// A connection the dispatcher opened to itself (the embedded demo worker).
    Internal,
}

/// What one identity may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Shown in logs and the admin API: `token <name>` or `v1 peer <name>`.
    pub name: String,
    roles: Roles,
    functions: Vec<String>,
    source: Source,
}

impl Grant {
    /// Every role on every function, for a connection the dispatcher opened to itself (the
    /// embedded demo worker); no reload revokes it.
    pub fn internal(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            roles: Roles(Roles::WORKER.0 | Roles::CLIENT.0 | Roles::ADMIN.0),
            functions: vec!["*".to_owned()],
            source: Source::Internal,
        }
    }

    /// Whether the dispatcher gave it to a connection it opened to itself.
    pub fn is_internal(&self) -> bool {
        self.source == Source::Internal
    }

    /// The token's name when a token authenticated it: who the caller is, whichever host it
    /// connects from (a v1 grant covers every peer of its networks, so it names no one).
    pub fn token_name(&self) -> Option<&str> {
        match &self.source {
            Source::Token { name, .. } => Some(name),
            Source::V1Peer | Source::Internal => None,
        }
    }

    /// Who its holder is, connecting from `ip`: the token, else the address. (A clone of the
    /// token's shared name: nothing is allocated per call.)
    pub fn client_key(&self, ip: IpAddr) -> ClientKey {
        match &self.source {
            Source::Token { name, .. } => ClientKey::Token(name.clone()),
            Source::V1Peer | Source::Internal => ClientKey::Ip(ip),
        }
    }

    /// Whether it has `role`.
    pub fn has(&self, role: Roles) -> bool {
        self.roles.has(role)
    }

    /// Whether it may call `function`.
    pub fn may_call(&self, function: &[u8]) -> bool {
        self.has(Roles::CLIENT) && self.covers(function)
    }

    /// Whether it may register (serve) `function`.
    pub fn may_serve(&self, function: &[u8]) -> bool {
        self.has(Roles::WORKER) && self.covers(function)
    }

    fn covers(&self, function: &[u8]) -> bool {
        (self.functions.iter()).any(|pattern| glob(pattern.as_bytes(), function))
    }
}

/// A configured token.
#[derive(Debug)]
struct Token {
    digest: [u8; 32],
    grant: Arc<Grant>,
}

/// A configured `[[auth.v1_peers]]` entry.
#[derive(Debug)]
struct V1Peer {
    nets: Vec<IpNet>,
    cert_names: Vec<String>,
    grant: Arc<Grant>,
}

/// The tokens and v1 grants of `[auth]`, checked.
#[derive(Debug)]
pub struct Auth {
    tokens: Vec<Token>,
    v1_peers: Vec<V1Peer>,
    /// `GET /metrics` needs no token.
    pub open_metrics: bool,
}

/// A bad `[auth]` entry: the key and the reason (never the secret).
pub type AuthError = (&'static str, String);

impl Auth {
    /// Builds `[auth]`: reads each token's secret (inline, from a file or from the
    /// environment) and checks every entry. `None` when auth is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, AuthError> {
        if !config.enabled {
            return Ok(None);
        }
        let mut tokens: Vec<Token> = Vec::new();
        for (i, token) in config.tokens.iter().enumerate() {
            let built = build_token(token).map_err(|reason| {
                (
                    "auth.tokens",
                    format!("token {}: {reason}", label(i, &token.name)),
                )
            })?;
            if tokens.iter().any(|t| t.grant.name == built.grant.name) {
                return Err((
                    "auth.tokens",
                    format!("token name {:?} is used twice", token.name),
                ));
            }
            if tokens.iter().any(|t| t.digest == built.digest) {
                return Err((
                    "auth.tokens",
                    format!("token {:?} has the same secret as another", token.name),
                ));
            }
            tokens.push(built);
        }
        let v1_peers = (config.v1_peers.iter().enumerate())
            .map(|(i, peer)| {
                build_v1_peer(i, peer)
                    .map_err(|reason| ("auth.v1_peers", format!("entry {}: {reason}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if tokens.is_empty() && v1_peers.is_empty() {
            return Err((
                "auth.tokens",
                "auth is enabled but no [[auth.tokens]] or [[auth.v1_peers]] grants anything: \
                 nobody could connect"
                    .to_owned(),
            ));
        }
        Ok(Some(Self {
            tokens,
            v1_peers,
            open_metrics: config.open_metrics,
        }))
    }

    /// The grant of the token whose secret is `secret`. Every token is compared, in
    /// constant time, whatever matches: no early exit, no `==`.
    pub fn token(&self, secret: &[u8]) -> Option<Arc<Grant>> {
        let digest: [u8; 32] = Sha256::digest(secret).into();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(same_digest(&token.digest, &digest)) {
                found = Some(token.grant.clone());
            }
        }
        found
    }

    /// The grant of the caller a peer dispatcher names (a forwarded call's
    /// [`CALLER_META_KEY`](crate::call::CALLER_META_KEY)): the token of that name, or the
    /// `[[auth.v1_peers]]` grant of that address; `None` when this dispatcher grants it
    /// nothing.
    pub fn vouched(&self, caller: &ClientKey) -> Option<Arc<Grant>> {
        match caller {
            ClientKey::Token(name) => (self.tokens.iter())
                .find(|t| t.grant.token_name() == Some(&**name))
                .map(|t| t.grant.clone()),
            ClientKey::Ip(ip) => self.v1_peer(*ip, &[]),
            ClientKey::Overflow => None,
        }
    }

    /// The grant of the first `[[auth.v1_peers]]` entry that matches a peer at `ip` with the
    /// TLS certificate names `cert_names` (empty without mutual TLS).
    pub fn v1_peer(&self, ip: IpAddr, cert_names: &[String]) -> Option<Arc<Grant>> {
        self.v1_peers
            .iter()
            .find(|peer| {
                in_any(&peer.nets, ip) || peer.cert_names.iter().any(|n| cert_names.contains(n))
            })
            .map(|peer| peer.grant.clone())
    }

    /// What `old` (a grant held by a connection) has become after a reload: the same token
    /// with the same secret, or for a v1 peer whatever now matches it; `None` when revoked.
    pub fn regrant(&self, old: &Grant, ip: IpAddr, cert_names: &[String]) -> Option<Arc<Grant>> {
        match &old.source {
            Source::Token { name, digest } => (self.tokens.iter())
                .find(|t| matches!(&t.grant.source, Source::Token { name: n, digest: d } if n == name && d == digest))
                .map(|t| t.grant.clone()),
            Source::V1Peer => self.v1_peer(ip, cert_names),
            Source::Internal => Some(Arc::new(old.clone())),
        }
    }
}

/// Whether two digests are equal, in constant time: the one comparison every lookup makes
/// with every stored digest (counted in test builds, so that a test can see it is).
fn same_digest(stored: &[u8; 32], presented: &[u8; 32]) -> subtle::Choice {
    #[cfg(test)]
    COMPARISONS.with(|n| n.set(n.get() + 1));
    stored.ct_eq(presented)
}

#[cfg(test)]
thread_local! {
    /// Digest comparisons made on this thread ([`same_digest`]).
    static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn label(index: usize, name: &str) -> String {
    match name {
        "" => format!("number {}", index + 1),
        name => format!("{name:?}"),
    }
}

fn build_token(token: &TokenConfig) -> Result<Token, String> {
    if token.name.is_empty() {
        return Err("`name` must be set".to_owned());
    }
    let given = [
        !token.secret.is_empty(),
        !token.secret_file.is_empty(),
        !token.secret_env.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("set exactly one of `secret`, `secret_file` and `secret_env`".to_owned());
    }
    let secret = if !token.secret.is_empty() {
        token.secret.clone()
    } else if !token.secret_file.is_empty() {
        std::fs::read_to_string(&token.secret_file)
            .map_err(|e| format!("secret_file {:?}: {e}", token.secret_file))?
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    } else {
        std::env::var(&token.secret_env)
            .map_err(|_| format!("secret_env: ${} is not set", token.secret_env))?
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret is shorter than {MIN_SECRET_BYTES} bytes (make one with `openssl rand -hex 32`)"
        ));
    }
    let roles = Roles::parse(&token.roles)?;
    let functions = check_patterns(&token.functions, roles)?;
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    Ok(Token {
        digest,
        grant: Arc::new(Grant {
            name: format!("token {}", token.name),
            roles,
            functions,
            source: Source::Token {
                name: token.name.as_str().into(),
                digest,
            },
        }),
    })
}

fn build_v1_peer(index: usize, peer: &V1PeerConfig) -> Result<V1Peer, String> {
    if peer.cidrs.is_empty() && peer.cert_names.is_empty() {
        return Err("set `cidrs`, `cert_names` or both: which v1 peers this grants to".to_owned());
    }
    let nets = (peer.cidrs.iter())
        .map(|c| parse_net(c))
        .collect::<Result<Vec<_>, _>>()?;
    let roles = Roles::parse(&peer.roles)?;
    if roles.has(Roles::ADMIN) || roles.has(Roles::PEER) {
        return Err(
            "the admin and peer roles are for tokens (v1 peers have no admin API and forward nothing)"
                .to_owned(),
        );
    }
    let functions = check_patterns(&peer.functions, roles)?;
    let name = match peer.name.as_str() {
        "" => format!("v1 peers #{}", index + 1),
        name => format!("v1 peers {name}"),
    };
    Ok(V1Peer {
        nets,
        cert_names: peer.cert_names.clone(),
        grant: Arc::new(Grant {
            name,
            roles,
            functions,
            source: Source::V1Peer,
        }),
    })
}

fn check_patterns(patterns: &[String], roles: Roles) -> Result<Vec<String>, String> {
    if roles == Roles::default() {
        return Err("`roles` must name at least one of worker, client, admin".to_owned());
    }
    let needs_functions = roles.has(Roles::WORKER) || roles.has(Roles::CLIENT);
    if needs_functions && patterns.is_empty() {
        return Err(
            "`functions` must list the functions it may serve or call (glob patterns, e.g. [\"*\"] or [\"Order*\"])"
                .to_owned(),
        );
    }
    if let Some(empty) = patterns.iter().find(|p| p.is_empty()) {
        return Err(format!("`functions` has an empty pattern {empty:?}"));
    }
    Ok(patterns.to_vec())
}

/// Whether `name` matches `pattern`, where `*` is any run of bytes (also none) and `?` is
/// any one byte; everything else matches itself.
pub fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the byte of `name` it is tried against next.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte, and try again after it.
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, roles: &[&str], functions: &[&str]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            secret: secret.into(),
            secret_file: String::new(),
            secret_env: String::new(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            functions: functions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn auth(tokens: Vec<TokenConfig>, v1_peers: Vec<V1PeerConfig>) -> Result<Auth, AuthError> {
        Auth::from_config(&AuthConfig {
            enabled: true,
            tokens,
            v1_peers,
            ..AuthConfig::default()
        })
        .map(Option::unwrap)
    }

    const S1: &str = "0123456789abcdef-one";
    const S2: &str = "0123456789abcdef-two";

    #[test]
    fn globs() {
        for (pattern, name, matches) in [
            ("*", "", true),
            ("*", "Anything", true),
            ("Order*", "OrderCreate", true),
            ("Order*", "Order", true),
            ("Order*", "Orde", false),
            ("*Create", "OrderCreate", true),
            ("*Create", "OrderCreated", false),
            ("Or*er*te", "OrderCreate", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("ToUpper", "ToUpper", true),
            ("ToUpper", "ToUpperX", false),
            ("**x", "abx", true),
            (
                "*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), name.as_bytes()),
                matches,
                "{pattern} vs {name}"
            );
        }
    }

    #[test]
    fn tokens_grant_their_roles_and_functions_only() {
        let a = auth(
            vec![
                token("orders", S1, &["worker"], &["Order*"]),
                token("web", S2, &["client"], &["OrderGet", "ToUpper"]),
            ],
            vec![],
        )
        .unwrap();
        let worker = a.token(S1.as_bytes()).unwrap();
        assert_eq!(worker.name, "token orders");
        assert!(worker.may_serve(b"OrderCreate") && !worker.may_serve(b"ToUpper"));
        assert!(!worker.may_call(b"OrderCreate"), "no client role");
        let client = a.token(S2.as_bytes()).unwrap();
        assert!(client.may_call(b"ToUpper") && !client.may_call(b"OrderCreate"));
        assert!(!client.has(Roles::ADMIN));
        assert!(a.token(b"0123456789abcdef-bad").is_none());
        assert!(a.token(b"").is_none());
    }

    /// Every lookup compares the presented secret's digest with every stored one, whether
    /// the first, the last or none matches: a plain `==`, or an early exit, compares fewer
    /// (and so takes a time that tells which token, or that none, matched).
    #[test]
    fn every_lookup_compares_every_stored_digest() {
        let tokens = (0..8)
            .map(|i| token(&format!("t{i}"), &format!("{S1}-{i}"), &["client"], &["*"]))
            .collect();
        let a = auth(tokens, vec![]).unwrap();
        for (secret, found) in [
            (format!("{S1}-0"), Some("token t0")),
            (format!("{S1}-7"), Some("token t7")),
            (format!("{S1}-none"), None),
        ] {
            COMPARISONS.with(|n| n.set(0));
            let grant = a.token(secret.as_bytes());
            assert_eq!(COMPARISONS.with(|n| n.get()), 8, "{secret}");
            assert_eq!(grant.map(|g| g.name.clone()).as_deref(), found);
        }
    }

    /// A peer dispatcher's named caller is found by token name or by v1 address, and is
    /// nobody when this dispatcher grants it nothing.
    #[test]
    fn vouched_callers_are_found_by_token_name_or_address() {
        let a = auth(
            vec![token("web", S1, &["client"], &["A"])],
            vec![V1PeerConfig {
                name: "php".into(),
                cidrs: vec!["10.0.0.0/8".into()],
                roles: vec!["client".into()],
                functions: vec!["B".into()],
                ..V1PeerConfig::default()
            }],
        )
        .unwrap();
        let web = a.vouched(&ClientKey::Token("web".into())).unwrap();
        assert!(web.may_call(b"A") && !web.may_call(b"B"));
        let php = a
            .vouched(&ClientKey::Ip("10.1.2.3".parse().unwrap()))
            .unwrap();
        assert!(php.may_call(b"B"));
        assert!(a.vouched(&ClientKey::Token("nobody".into())).is_none());
        assert!(a
            .vouched(&ClientKey::Ip("192.0.2.1".parse().unwrap()))
            .is_none());
        assert!(a.vouched(&ClientKey::Overflow).is_none());
        let key = web.client_key("127.0.0.1".parse().unwrap());
        assert_eq!(key, ClientKey::Token("web".into()));
    }

    #[test]
    fn v1_peers_match_by_address_or_certificate_name() {
        let a = auth(
            vec![],
            vec![V1PeerConfig {
                name: "php".into(),
                cidrs: vec!["10.0.0.0/8".into()],
                cert_names: vec!["worker-1.internal".into()],
                roles: vec!["worker".into(), "client".into()],
                functions: vec!["*".into()],
            }],
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(a.v1_peer(ip("10.1.2.3"), &[]).is_some());
        assert!(a.v1_peer(ip("192.168.0.1"), &[]).is_none());
        let named = a.v1_peer(ip("192.168.0.1"), &["worker-1.internal".into()]);
        assert_eq!(named.unwrap().name, "v1 peers php");
    }

    #[test]
    fn regrant_follows_a_reload() {
        let before = auth(vec![token("t", S1, &["client"], &["A"])], vec![]).unwrap();
        let grant = before.token(S1.as_bytes()).unwrap();
        let ip = "127.0.0.1".parse().unwrap();
        let widened = auth(vec![token("t", S1, &["client"], &["A", "B"])], vec![]).unwrap();
        assert!(widened.regrant(&grant, ip, &[]).unwrap().may_call(b"B"));
        let rotated = auth(vec![token("t", S2, &["client"], &["A"])], vec![]).unwrap();
        assert!(rotated.regrant(&grant, ip, &[]).is_none(), "secret changed");
        let removed = auth(vec![token("u", S2, &["client"], &["A"])], vec![]).unwrap();
        assert!(removed.regrant(&grant, ip, &[]).is_none());
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let cases = [
            (
                token("t", "short", &["client"], &["*"]),
                "shorter than 16 bytes",
            ),
            (token("t", S1, &["root"], &["*"]), "unknown role \"root\""),
            (token("t", S1, &["client"], &[]), "`functions` must list"),
            (token("", S1, &["client"], &["*"]), "`name` must be set"),
            (token("t", "", &["client"], &["*"]), "set exactly one of"),
        ];
        for (bad, reason) in cases {
            let err = auth(vec![bad], vec![]).unwrap_err();
            assert_eq!(err.0, "auth.tokens");
            assert!(err.1.contains(reason), "{err:?}");
            assert!(!err.1.contains(S1), "a secret in an error: {err:?}");
        }
        let twice = auth(
            vec![
                token("t", S1, &["client"], &["*"]),
                token("t", S2, &["client"], &["*"]),
            ],
            vec![],
        );
        assert!(twice.unwrap_err().1.contains("used twice"));
        let none = auth(vec![], vec![]).unwrap_err();
        assert!(none.1.contains("nobody could connect"), "{none:?}");
        let mut env = token("t", "", &["client"], &["*"]);
        env.secret_env = "NMID_TEST_SECRET_THAT_IS_NOT_SET".into();
        assert!(auth(vec![env], vec![])
            .unwrap_err()
            .1
            .contains("is not set"));
    }

    #[test]
    fn secrets_come_from_files_and_the_environment() {
        let path = std::env::temp_dir().join(format!("nmid-secret-{}", std::process::id()));
        std::fs::write(&path, format!("{S1}\n")).unwrap();
        let mut from_file = token("f", "", &["client"], &["*"]);
        from_file.secret_file = path.display().to_string();
        std::env::set_var("NMID_TEST_SECRET_TWO", S2);
        let mut from_env = token("e", "", &["client"], &["*"]);
        from_env.secret_env = "NMID_TEST_SECRET_TWO".into();
        let a = auth(vec![from_file, from_env], vec![]).unwrap();
        let _ = std::fs::remove_file(path);
        assert_eq!(a.token(S1.as_bytes()).unwrap().name, "token f");
        assert_eq!(a.token(S2.as_bytes()).unwrap().name, "token e");
    }
}
