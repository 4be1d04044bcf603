//! `security.allow` / `security.deny`: which peer addresses may connect at all, checked when
//! a connection is accepted (nmid's `WhiteList` / `BlackList`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Allowed and denied networks. Deny wins; an empty allow list allows everyone not denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// Parses `allow` and `deny` (IPs or CIDRs, IPv4 or IPv6); the error names the entry.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, (&'static str, String)> {
        let nets = |key: &'static str, entries: &[String]| {
            entries
                .iter()
                .map(|entry| parse_net(entry).map_err(|reason| (key, reason)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allow: nets("security.allow", allow)?,
            deny: nets("security.deny", deny)?,
        })
    }

    /// Nothing is listed: every address may connect (and nothing needs checking).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a peer at `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// `10.0.0.0/8`, `10.1.2.3` (one address), `fd00::/8` or `::1`. An IPv4-mapped entry
/// (`::ffff:10.1.2.3`, `::ffff:10.0.0.0/104`) is its IPv4 network, as peers are compared as
/// IPv4. An entry that is not what it seems is refused, so that a list never silently fails
/// open: one no peer can ever match (an unspecified, broadcast or multicast address, an
/// IPv4-compatible `::a.b.c.d`), an IPv6 network that holds the IPv4-mapped range only in
/// part of it (`::ffff:0:0/95`: the mapped part would never match), and a network with bits
/// set past its prefix (`10.1.2.3/8`, `127.0.0.9/0`, which would be read as a larger one).
pub fn parse_net(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    let net = match entry.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            return Err(format!(
                "{entry:?} has bits set past its /{} prefix: write {} for that network, or {} \
                 for one address",
                net.prefix_len(),
                net.trunc(),
                net.addr()
            ))
        }
        Ok(net) => net,
        Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!("{entry:?} is not an IP address or a CIDR network (e.g. 10.0.0.0/8, fd00::/8)")
        })?,
    };
    let net = canonical(net);
    match never_matched(&net) {
        Some(why) => Err(format!("{entry:?} can never match a peer: {why}")),
        None => Ok(net),
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:0:0/96` or inside it) as the IPv4 network it holds.
fn canonical(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    match v6.network().to_ipv4_mapped() {
        Some(v4) if v6.prefix_len() >= 96 => {
            Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
        }
        _ => net,
    }
}

/// Why no TCP peer can have an address in `net` (or in a part of it), if none can.
fn never_matched(net: &IpNet) -> Option<&'static str> {
    const WHY_UNSPECIFIED: &str = "the unspecified address is no peer's address";
    const WHY_MULTICAST: &str = "multicast addresses are no peer's address";
    let v4_multicast = Ipv4Net::new([224, 0, 0, 0].into(), 4).expect("a valid network");
    let v6_multicast = Ipv6Net::new([0xff00, 0, 0, 0, 0, 0, 0, 0].into(), 8).expect("valid");
    let v4_compatible = Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 96).expect("a valid network");
    let v4_mapped = Ipv6Net::new(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 96).expect("valid");
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 && n.addr().is_unspecified() => Some(WHY_UNSPECIFIED),
        IpNet::V4(n) if n.prefix_len() == 32 && n.addr().is_broadcast() => {
            Some("the broadcast address is no peer's address")
        }
        IpNet::V4(n) if v4_multicast.contains(n) => Some(WHY_MULTICAST),
        IpNet::V6(n) if n.prefix_len() == 128 && n.addr().is_unspecified() => Some(WHY_UNSPECIFIED),
        IpNet::V6(n) if v6_multicast.contains(n) => Some(WHY_MULTICAST),
        IpNet::V6(n) if v4_compatible.contains(n) && !(n.prefix_len() == 128 && n.addr().is_loopback()) => {
            Some("an IPv4-compatible address (::a.b.c.d, deprecated) is no peer's address: write the IPv4 address")
        }
        IpNet::V6(n) if n.prefix_len() > 0 && n.contains(&v4_mapped) => Some(
            "its IPv4-mapped part (::ffff:0:0/96) is compared as IPv4: list IPv4 networks apart \
             (e.g. 0.0.0.0/0), and the IPv6 ones without the mapped range",
        ),
        _ => None,
    }
}

/// Whether `ip` is in any of `nets` (an IPv4-mapped IPv6 address counts as its IPv4 one).
pub fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> AccessList {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AccessList::parse(&owned(allow), &owned(deny)).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn empty_lists_allow_everyone() {
        let open = list(&[], &[]);
        assert!(open.is_open());
        assert!(open.permits(ip("203.0.113.9")) && open.permits(ip("::1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let l = list(&["10.0.0.0/8"], &["10.1.0.0/16", "10.2.3.4"]);
        assert!(l.permits(ip("10.9.9.9")));
        assert!(!l.permits(ip("10.1.2.3")));
        assert!(!l.permits(ip("10.2.3.4")));
        assert!(l.permits(ip("10.2.3.5")));
        assert!(!l.permits(ip("192.168.1.1")), "not in the allow list");
    }

    #[test]
    fn deny_alone_allows_the_rest() {
        let l = list(&[], &["127.0.0.2"]);
        assert!(!l.permits(ip("127.0.0.2")));
        assert!(l.permits(ip("127.0.0.1")));
    }

    #[test]
    fn ipv6_and_mapped_ipv4() {
        let l = list(&["fd00::/8", "127.0.0.1"], &[]);
        assert!(l.permits(ip("fd12::1")));
        assert!(!l.permits(ip("fe80::1")));
        assert!(l.permits(ip("::ffff:127.0.0.1")), "mapped IPv4 is IPv4");
    }

    #[test]
    fn a_bad_entry_names_its_key() {
        let err = AccessList::parse(&["10.0.0.0/33".into()], &[]).unwrap_err();
        assert_eq!(err.0, "security.allow");
        assert!(err.1.contains("10.0.0.0/33"), "{}", err.1);
        let err = AccessList::parse(&[], &["example.com".into()]).unwrap_err();
        assert_eq!(err.0, "security.deny");
    }

    /// An IPv4-mapped entry matches its IPv4 peers (a deny entry so written used to match
    /// nothing: fail-open), and a mapped network is its IPv4 network.
    #[test]
    fn mapped_entries_are_their_ipv4_networks() {
        let l = list(&[], &["::ffff:127.0.0.9"]);
        assert!(!l.permits(ip("127.0.0.9")));
        assert!(!l.permits(ip("::ffff:127.0.0.9")));
        assert!(l.permits(ip("127.0.0.1")));
        assert_eq!(
            parse_net("::ffff:10.1.0.0/112").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(parse_net("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_net("fd00::/8").unwrap().to_string(), "fd00::/8");
    }

    /// An entry no peer can have is a configuration error that names its key.
    #[test]
    fn entries_that_can_never_match_are_refused() {
        for entry in [
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "239.0.0.0/8",
            "ff02::1",
        ] {
            let err = AccessList::parse(&[], &[entry.into()]).unwrap_err();
            assert_eq!(err.0, "security.deny");
            assert!(err.1.contains("can never match"), "{entry}: {}", err.1);
            let err = AccessList::parse(&[entry.into()], &[]).unwrap_err();
            assert_eq!(err.0, "security.allow", "{entry}");
        }
        assert!(parse_net("0.0.0.0/0").is_ok(), "every IPv4 address");
        assert!(parse_net("::/0").is_ok(), "every IPv6 address");
    }

    /// Entries that would have matched less than they say (fail-open for `deny`), or more
    /// (host bits past the prefix: `127.0.0.9/0` read as every address), name their key.
    #[test]
    fn entries_that_are_not_what_they_seem_are_refused() {
        for entry in ["::127.0.0.9", "::10.0.0.0/104", "::fffe:0:0/95", "::/64"] {
            let err = AccessList::parse(&[], &[entry.into()]).unwrap_err();
            assert_eq!(err.0, "security.deny");
            assert!(err.1.contains("can never match"), "{entry}: {}", err.1);
        }
        for entry in ["127.0.0.9/0", "10.1.2.3/8", "fd00::1/8", "::ffff:0:0/95"] {
            let err = AccessList::parse(&[entry.into()], &[]).unwrap_err();
            assert_eq!(err.0, "security.allow");
            assert!(err.1.contains("past its"), "{entry}: {}", err.1);
        }
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_net("::/0").unwrap().to_string(), "::/0");
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        let mut config = crate::config::Config::default();
        config.security.deny = vec!["::127.0.0.9".to_owned()];
        let err = crate::security::Security::from_config(&config).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("security.deny"), "{err}");
    }
}
