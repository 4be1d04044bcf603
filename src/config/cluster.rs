//! `[discovery]` (how to reach etcd) and `[cluster]` (this dispatcher among its peers).

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, ConfigWarning};

/// etcd's default `--grpc-keepalive-min-time`, in milliseconds: it closes the connection of
/// a client that pings more often with GOAWAY `too_many_pings`, breaking its watches.
pub const ETCD_KEEPALIVE_MIN_TIME_MS: u64 = 5000;

/// `[discovery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// etcd endpoints; empty turns the cluster off. A TOML list, or one comma-separated
    /// string (environment variables, `--etcd`).
    #[serde(deserialize_with = "endpoint_list")]
    pub etcd_endpoints: Vec<String>,
    /// etcd user name; empty: no authentication.
    pub username: String,
    /// etcd password.
    pub password: String,
    /// TTL of the dispatcher's lease, in seconds.
    pub lease_ttl_s: u64,
    /// Longest wait for one etcd request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Ceiling of the reconnect backoff, in milliseconds.
    pub retry_max_ms: u64,
    /// HTTP/2 pings to etcd while a stream is open, in milliseconds; 0: none.
    pub keepalive_interval_ms: u64,
    /// How often a long-lived etcd connection reads etcd's member list, in milliseconds.
    pub member_refresh_interval_ms: u64,
}

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The nmid protocol address peers reach; empty: `tcp.addr` (not a wildcard).
    pub advertise_addr: String,
    /// The HTTP address shown to peers; empty: derived.
    pub advertise_http_addr: String,
    /// This dispatcher's id; empty: generated at start.
    pub id: String,
    /// etcd prefix of the membership records.
    pub prefix: String,
    /// Shortest time between two writes of this dispatcher's records, in milliseconds.
    pub publish_interval_ms: u64,
    /// How often the nmid key is put again unchanged, in milliseconds; 0: never.
    pub nmid_refresh_interval_ms: u64,
    /// Tagged connections per peer dispatcher.
    pub peer_connections: usize,
    /// Calls forwarded to one peer at once at most.
    pub max_forwarded_per_peer: u32,
    /// Of those, calls for one caller (a token, else an address) at most.
    pub max_forwarded_per_caller: u32,
    /// How long an unreachable peer is skipped, in milliseconds.
    pub peer_retry_ms: u64,
    /// How long a peer may answer none of the calls waiting there before it counts as
    /// unreachable, in milliseconds.
    pub peer_answer_timeout_ms: u64,
    /// Times a call that peers handed back unrun is placed again, at most.
    pub max_reroutes: u32,
    /// Largest membership record read from etcd, in bytes.
    pub max_record_bytes: usize,
}

impl DiscoveryConfig {
    /// Allowed but likely wrong: keep-alive pings more often than etcd accepts by default;
    /// a request timeout so long that a lease keep-alive (sent every third of the TTL, and
    /// waiting up to the request timeout) stuck on one hung etcd member lets the lease expire.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let interval = self.keepalive_interval_ms;
        let mut warnings = Vec::new();
        if interval > 0 && interval < ETCD_KEEPALIVE_MIN_TIME_MS {
            warnings.push(ConfigWarning {
                key: "discovery.keepalive_interval_ms",
                message: format!(
                    "{interval} ms is below etcd's default --grpc-keepalive-min-time \
                     ({ETCD_KEEPALIVE_MIN_TIME_MS} ms): etcd closes such connections \
                     (too_many_pings) unless it was started with a lower one"
                ),
            });
        }
        let (timeout, ttl) = (self.request_timeout_ms, self.lease_ttl_s);
        if timeout.saturating_mul(3) >= ttl.saturating_mul(1000) {
            warnings.push(ConfigWarning {
                key: "discovery.request_timeout_ms",
                message: format!(
                    "{timeout} ms is not below a third of discovery.lease_ttl_s ({ttl} s): a \
                     lease keep-alive (every third of the TTL) waiting that long on one hung \
                     etcd member lets the lease expire; lower the timeout or raise the TTL"
                ),
            });
        }
        warnings
    }
}

impl ClusterConfig {
    /// `advertise_addr`, parsed, if set.
    pub fn advertise_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_optional_addr("cluster.advertise_addr", &self.advertise_addr)
    }

    /// `advertise_http_addr`, parsed, if set.
    pub fn advertise_http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_optional_addr("cluster.advertise_http_addr", &self.advertise_http_addr)
    }
}

fn parse_optional_addr(key: &'static str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e| ConfigError::Invalid {
        key,
        reason: format!("{e}: expected IP:PORT or empty"),
    })
}

/// Reads `discovery.etcd_endpoints` from a list or from one comma-separated string; blank
/// entries are dropped (a trailing comma is fine). Only `[]` turns the cluster off: a value
/// that names no endpoint at all (`--etcd ""`, `","`, `[""]`) is kept as one blank entry,
/// which [`super::Config::validate`] refuses, naming the key.
fn endpoint_list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Endpoints {
        List(Vec<String>),
        Text(String),
    }
    let endpoints = match Endpoints::deserialize(de)? {
        Endpoints::List(list) => list,
        Endpoints::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    let given = !endpoints.is_empty();
    let named: Vec<String> = (endpoints.into_iter())
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    match given && named.is_empty() {
        true => Ok(vec![String::new()]),
        false => Ok(named),
    }
}

impl super::Config {
    /// The `[discovery]` and `[cluster]` checks; the address checks only matter, and only
    /// run, when discovery is on.
    pub(super) fn validate_cluster(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        }
        let discovery = &self.discovery;
        if !(1..=86_400).contains(&discovery.lease_ttl_s) {
            return invalid("discovery.lease_ttl_s", "must be 1 to 86400 seconds");
        }
        if discovery.request_timeout_ms < 10 {
            return invalid("discovery.request_timeout_ms", "must be at least 10");
        }
        if discovery.retry_max_ms < 100 {
            return invalid("discovery.retry_max_ms", "must be at least 100");
        }
        if (1..1000).contains(&discovery.keepalive_interval_ms) {
            return invalid(
                "discovery.keepalive_interval_ms",
                "must be 0 (off) or at least 1000",
            );
        }
        if discovery.member_refresh_interval_ms < 1000 {
            return invalid(
                "discovery.member_refresh_interval_ms",
                "must be at least 1000",
            );
        }
        if discovery.password.is_empty() != discovery.username.is_empty() {
            let key = match discovery.username.is_empty() {
                true => "discovery.username",
                false => "discovery.password",
            };
            return invalid(key, "username and password are set together or not at all");
        }
        if discovery.etcd_endpoints.iter().any(String::is_empty) {
            return invalid(
                "discovery.etcd_endpoints",
                "names no endpoint (from --etcd, NMID__DISCOVERY__ETCD_ENDPOINTS or the file): \
                 give http://HOST:PORT URLs, or leave it [] to run without a cluster",
            );
        }
        for endpoint in &discovery.etcd_endpoints {
            nmid_proto::discovery::check_endpoint(endpoint).map_err(|reason| {
                ConfigError::Invalid {
                    key: "discovery.etcd_endpoints",
                    reason,
                }
            })?;
        }
        let cluster = &self.cluster;
        if cluster.prefix.is_empty() || cluster.prefix.starts_with("nmid/") {
            return invalid(
                "cluster.prefix",
                "must be set, and outside nmid/ (which holds nmid's function keys)",
            );
        }
        if cluster.id.contains('/') {
            return invalid("cluster.id", "must not contain '/'");
        }
        if cluster.publish_interval_ms < 10 {
            return invalid("cluster.publish_interval_ms", "must be at least 10");
        }
        if (1..100).contains(&cluster.nmid_refresh_interval_ms) {
            return invalid(
                "cluster.nmid_refresh_interval_ms",
                "must be 0 (never) or at least 100",
            );
        }
        if !(1..=64).contains(&cluster.peer_connections) {
            return invalid("cluster.peer_connections", "must be 1 to 64");
        }
        if cluster.peer_answer_timeout_ms < 100 {
            return invalid("cluster.peer_answer_timeout_ms", "must be at least 100");
        }
        if cluster.max_forwarded_per_peer == 0 {
            return invalid("cluster.max_forwarded_per_peer", "must be at least 1");
        }
        if cluster.max_forwarded_per_caller == 0 {
            return invalid("cluster.max_forwarded_per_caller", "must be at least 1");
        }
        if cluster.max_record_bytes < 1024 {
            return invalid("cluster.max_record_bytes", "must be at least 1024");
        }
        let advertised = cluster.advertise_addr()?;
        cluster.advertise_http_addr()?;
        if let Some(addr) = advertised {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return invalid(
                    "cluster.advertise_addr",
                    "must be an address peers can reach: not a wildcard, not port 0",
                );
            }
        }
        let wildcard = self.tcp.addr.ip().is_unspecified();
        if self.discovery_enabled() && advertised.is_none() && wildcard {
            return Err(ConfigError::Invalid {
                key: "cluster.advertise_addr",
                reason: format!(
                    "required with discovery on, since tcp.addr {} listens on every interface: \
                     set the address peers reach this dispatcher at (or listen on one address)",
                    self.tcp.addr
                ),
            });
        }
        Ok(())
    }
}
