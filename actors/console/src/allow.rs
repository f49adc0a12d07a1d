//! `[console] allow_from`: which client addresses may even open a connection to the console.
//! Others are dropped before the TLS handshake.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks whose addresses may connect (CIDR, e.g. `10.0.0.0/8`; a bare address is a /32
/// or /128).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowFrom(Vec<IpNet>);

/// The default: loopback, the private IPv4 ranges (RFC 1918), IPv4 link-local, IPv6 unique
/// local (fc00::/7) and link-local (fe80::/10) — the LAN, never the internet.
pub const DEFAULT_ALLOW_FROM: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

impl AllowFrom {
    /// Parses each entry.
    ///
    /// # Errors
    /// The first entry that is neither a CIDR network nor an address, with ipnet's reason.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.as_ref().trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|err| format!("{e:?}: {err}"))
            })
            .collect::<Result<_, _>>()
            .map(AllowFrom)
    }

    /// [`DEFAULT_ALLOW_FROM`].
    pub fn lan() -> Self {
        Self::parse(DEFAULT_ALLOW_FROM).expect("the defaults parse")
    }

    /// Whether `ip` may connect (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The networks, as written in the config.
    pub fn nets(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lan_is_allowed_and_the_internet_is_not() {
        let lan = AllowFrom::lan();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.9",
            "192.168.1.20",
            "::1",
            "fd12::5",
            "::ffff:192.168.1.2",
        ] {
            assert!(lan.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.64.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!lan.allows(ip.parse().unwrap()), "{ip}");
        }
        let one = AllowFrom::parse(&["10.0.5.7", "192.168.8.0/24"]).unwrap();
        assert!(one.allows("10.0.5.7".parse().unwrap()));
        assert!(!one.allows("10.0.5.8".parse().unwrap()));
        assert!(one.allows("192.168.8.200".parse().unwrap()));
        assert_eq!(
            one.nets().collect::<Vec<_>>(),
            ["10.0.5.7/32", "192.168.8.0/24"]
        );
        let e = AllowFrom::parse(&["10.0.0.0/33"]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
    }
}
