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
