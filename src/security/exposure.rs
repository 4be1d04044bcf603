//! What the configuration leaves open beyond this host, warned about at start (the `nmid`
//! binary logs one `warn` line per [`Exposure`]): nothing here refuses to start, since each
//! can be what an operator wants behind a firewall; each should be a choice.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;

use super::access::parse_net;
use crate::config::Config;

/// One way the dispatcher is open beyond this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Auth is off and these listeners are beyond loopback: anyone who reaches them can
    /// register a worker for any function (and read its callers' params) or call any
    /// function.
    AuthOff {
        /// The listeners.
        listeners: Vec<SocketAddr>,
    },
    /// Auth is off and these HTTP listeners are beyond loopback: the admin API (peer
    /// addresses), the dashboard and the metrics are open to anyone who reaches them.
    AdminOpen {
        /// The listeners.
        listeners: Vec<SocketAddr>,
    },
    /// These listeners are on a wildcard address (every interface) and take plaintext:
    /// their traffic, params and results, and any token, cross every network in clear.
    PlaintextWildcard {
        /// The listeners.
        listeners: Vec<SocketAddr>,
    },
    /// A `[[auth.v1_peers]]` entry grants every address (`0.0.0.0/0`, `::/0`, or networks
    /// that add up to one of them): a v1 peer from anywhere gets its roles without a token.
    V1PeersEveryone {
        /// The entry's name, or its number.
        entry: String,
    },
    /// Auth is on but `auth.open_metrics` opens `/metrics` (function and worker names, call
    /// rates) on these HTTP listeners beyond loopback, to anyone who reaches them.
    MetricsOpen {
        /// The listeners.
        listeners: Vec<SocketAddr>,
    },
    /// `security.deny` covers every IPv6 address (`::/0`) but not every IPv4 one: IPv4
    /// peers are checked as IPv4 (an IPv4-mapped address too), so every IPv4 peer not
    /// denied otherwise is still allowed, which `::/0` read as "everyone" does not say.
    DenyIpv6Only,
}

impl Exposure {
    /// A short name of the kind, for the log line's `exposure` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Exposure::AuthOff { .. } => "auth_off",
            Exposure::AdminOpen { .. } => "admin_open",
            Exposure::PlaintextWildcard { .. } => "plaintext_wildcard",
            Exposure::V1PeersEveryone { .. } => "v1_peers_everyone",
            Exposure::MetricsOpen { .. } => "metrics_open",
            Exposure::DenyIpv6Only => "deny_ipv6_only",
        }
    }
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |listeners: &[SocketAddr]| {
            listeners
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Exposure::AuthOff { listeners } => write!(
                f,
                "auth is off and {} not on loopback: anyone who reaches them can register a \
                 worker for any function (and read its callers' params) or call any function",
                list(listeners)
            ),
            Exposure::AdminOpen { listeners } => write!(
                f,
                "auth is off and HTTP on {} is not on loopback: the admin API (worker \
                 addresses), the dashboard and /metrics are open to anyone who reaches it",
                list(listeners)
            ),
            Exposure::PlaintextWildcard { listeners } => write!(
                f,
                "{} listen on every interface and take plaintext (TLS off, or \
                 tls.allow_plaintext): calls, results and tokens cross the network in clear",
                list(listeners)
            ),
            Exposure::V1PeersEveryone { entry } => write!(
                f,
                "auth.v1_peers entry {entry} grants every address: a v1 peer from anywhere \
                 gets its roles without a token"
            ),
            Exposure::MetricsOpen { listeners } => write!(
                f,
                "auth.open_metrics opens /metrics on {}, not on loopback: function and \
                 worker names and call rates to anyone who reaches it",
                list(listeners)
            ),
            Exposure::DenyIpv6Only => write!(
                f,
                "security.deny denies every IPv6 address (::/0) but IPv4 peers are still \
                 allowed: add 0.0.0.0/0 to security.deny to deny them too"
            ),
        }
    }
}

/// What `config` leaves open with the nmid protocol on `tcp` and HTTP on `http` and
/// `metrics` (the addresses bound).
pub fn exposures(config: &Config, tcp: SocketAddr, http: &[SocketAddr]) -> Vec<Exposure> {
    let beyond = |addrs: &[SocketAddr]| -> Vec<SocketAddr> {
        addrs
            .iter()
            .filter(|a| !a.ip().is_loopback())
            .copied()
            .collect()
    };
    let mut found = Vec::new();
    let all: Vec<SocketAddr> = std::iter::once(tcp).chain(http.iter().copied()).collect();
    if !config.auth.enabled {
        let listeners = beyond(&all);
        if !listeners.is_empty() {
            found.push(Exposure::AuthOff { listeners });
        }
        let listeners = beyond(http);
        if !listeners.is_empty() {
            found.push(Exposure::AdminOpen { listeners });
        }
    }
    let tls = config.tls.enabled();
    let plaintext = (all.iter())
        .filter(|addr| addr.ip().is_unspecified())
        .filter(|addr| !tls || (**addr == tcp && config.tls.allow_plaintext))
        .copied()
        .collect::<Vec<_>>();
    if !plaintext.is_empty() {
        found.push(Exposure::PlaintextWildcard {
            listeners: plaintext,
        });
    }
    if config.auth.enabled && config.auth.open_metrics {
        let listeners = beyond(http);
        if !listeners.is_empty() {
            found.push(Exposure::MetricsOpen { listeners });
        }
    }
    let denied: Vec<IpNet> = (config.security.deny.iter())
        .filter_map(|entry| parse_net(entry).ok())
        .collect();
    let denied = IpNet::aggregate(&denied);
    let all_of = |v6: bool| {
        (denied.iter()).any(|net| net.prefix_len() == 0 && matches!(net, IpNet::V6(_)) == v6)
    };
    if all_of(true) && !all_of(false) {
        found.push(Exposure::DenyIpv6Only);
    }
    if config.auth.enabled {
        for (i, peer) in config.auth.v1_peers.iter().enumerate() {
            let nets: Vec<IpNet> = (peer.cidrs.iter())
                .filter_map(|cidr| parse_net(cidr).ok())
                .collect();
            // Networks that together make every address (0.0.0.0/1 and 128.0.0.0/1) too.
            let everyone = IpNet::aggregate(&nets)
                .iter()
                .any(|net| net.prefix_len() == 0);
            if everyone {
                let entry = match peer.name.as_str() {
                    "" => format!("#{}", i + 1),
                    name => format!("{name:?}"),
                };
                found.push(Exposure::V1PeersEveryone { entry });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::V1PeerConfig;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn kinds(found: &[Exposure]) -> Vec<&'static str> {
        found.iter().map(Exposure::kind).collect()
    }

    /// Auth off beyond loopback, the admin API with it, a wildcard bind in plaintext, and
    /// v1 peers open to everyone are each warned about; loopback with auth and TLS is not.
    #[test]
    fn every_exposed_combination_is_found() {
        let open = Config::default();
        let found = exposures(&open, addr("0.0.0.0:6808"), &[addr("0.0.0.0:6809")]);
        assert_eq!(
            kinds(&found),
            ["auth_off", "admin_open", "plaintext_wildcard"]
        );
        assert!(found[0].to_string().contains("0.0.0.0:6808, 0.0.0.0:6809"));

        let found = exposures(&open, addr("10.0.0.5:6808"), &[addr("127.0.0.1:6809")]);
        assert_eq!(kinds(&found), ["auth_off"], "the admin API is on loopback");
        let found = exposures(&open, addr("127.0.0.1:6808"), &[addr("127.0.0.1:6809")]);
        assert!(found.is_empty(), "{found:?}");

        let mut guarded = Config::default();
        guarded.auth.enabled = true;
        guarded.auth.v1_peers = vec![V1PeerConfig {
            name: "legacy".into(),
            cidrs: vec!["10.0.0.0/8".into(), "0.0.0.0/0".into()],
            roles: vec!["client".into()],
            functions: vec!["*".into()],
            ..V1PeerConfig::default()
        }];
        let found = exposures(&guarded, addr("0.0.0.0:6808"), &[]);
        assert_eq!(kinds(&found), ["plaintext_wildcard", "v1_peers_everyone"]);
        assert!(found[1].to_string().contains("\"legacy\""));
        guarded.auth.v1_peers[0].cidrs = vec!["0.0.0.0/1".into(), "128.0.0.0/1".into()];
        let found = exposures(&guarded, addr("127.0.0.1:6808"), &[]);
        assert_eq!(
            kinds(&found),
            ["v1_peers_everyone"],
            "two halves are everyone"
        );
        guarded.auth.v1_peers[0].cidrs = vec!["10.0.0.0/8".into()];
        assert!(exposures(&guarded, addr("127.0.0.1:6808"), &[]).is_empty());

        guarded.auth.open_metrics = true;
        let found = exposures(&guarded, addr("127.0.0.1:6808"), &[addr("10.0.0.5:9808")]);
        assert_eq!(kinds(&found), ["metrics_open"]);
        let found = exposures(&guarded, addr("127.0.0.1:6808"), &[addr("127.0.0.1:9808")]);
        assert!(found.is_empty(), "open metrics on loopback: {found:?}");
        guarded.auth.open_metrics = false;

        guarded.tls.cert_file = "cert.pem".into();
        guarded.tls.key_file = "key.pem".into();
        guarded.auth.v1_peers.clear();
        let found = exposures(&guarded, addr("0.0.0.0:6808"), &[addr("0.0.0.0:6809")]);
        assert!(found.is_empty(), "{found:?}");
        guarded.tls.allow_plaintext = true;
        let found = exposures(&guarded, addr("0.0.0.0:6808"), &[addr("0.0.0.0:6809")]);
        assert_eq!(
            found,
            [Exposure::PlaintextWildcard {
                listeners: vec![addr("0.0.0.0:6808")]
            }],
            "HTTP is TLS only"
        );
    }

    /// `security.deny = ["::/0"]` denies IPv6 peers only: warned about, naming the key,
    /// unless IPv4 is all denied too; narrower IPv6 entries are not.
    #[test]
    fn a_deny_of_every_ipv6_address_alone_is_found() {
        let mut config = Config::default();
        let local = addr("127.0.0.1:6808");
        config.security.deny = vec!["::/0".into()];
        let found = exposures(&config, local, &[]);
        assert_eq!(kinds(&found), ["deny_ipv6_only"]);
        assert!(
            found[0].to_string().contains("security.deny"),
            "{}",
            found[0]
        );
        config.security.deny = vec!["::/0".into(), "0.0.0.0/0".into()];
        assert!(exposures(&config, local, &[]).is_empty());
        config.security.deny = vec!["fd00::/8".into()];
        assert!(exposures(&config, local, &[]).is_empty());
    }
}
