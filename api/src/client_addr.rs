//! Who is asking, by network address: the connection's peer, or, when the peer is a trusted
//! reverse proxy (`TRUSTED_PROXIES`), the address its `X-Forwarded-For` names. Limits keyed on
//! it (failed authentications) then hold one client to its budget, not everyone behind the proxy.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use poem::{FromRequest, Request, RequestBody};

use crate::AppState;

/// A client's address. IPv6 clients are known by their /64, the block one host is usually
/// given, so that rotating addresses within it does not reset a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    pub fn of(req: &Request, trusted_proxies: &[IpNet]) -> Self {
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let forwarded = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        Self::resolve(peer, forwarded, trusted_proxies)
    }

    /// The client behind `peer`, given the `X-Forwarded-For` values it sent.
    fn resolve<'a>(
        peer: Option<IpAddr>,
        forwarded: impl Iterator<Item = &'a str>,
        trusted_proxies: &[IpNet],
    ) -> Self {
        let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
            return Self(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        };
        let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Self::new(peer);
        }
        // Each proxy appends the address it received from: the rightmost untrusted entry is the
        // client as far as our own proxies can vouch.
        let hops: Vec<Option<IpAddr>> = forwarded.flat_map(|v| v.split(',')).map(parse_hop).collect();
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if trusted(ip) => nearest = *ip,
                Some(ip) => return Self::new(*ip),
                // Garbage where an address should be: the last hop our proxies vouch for.
                None => break,
            }
        }
        Self::new(nearest)
    }

    /// The address (an IPv6 client's /64 network address).
    pub fn ip(self) -> IpAddr {
        self.0
    }

    fn new(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'a> FromRequest<'a> for ClientAddr {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let trusted = req.data::<AppState>().map(|s| s.trusted_proxies.as_slice()).unwrap_or_default();
        Ok(Self::of(req, trusted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(peer: &str, forwarded: Option<&str>, trusted: &[&str]) -> String {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let peer = peer.parse::<std::net::SocketAddr>().unwrap().ip();
        ClientAddr::resolve(Some(peer), forwarded.into_iter(), &trusted).to_string()
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        assert_eq!(of("203.0.113.9:5000", Some("198.51.100.1"), &[]), "203.0.113.9", "an untrusted peer");
        assert_eq!(of("10.0.0.5:5000", Some("198.51.100.1"), &["10.0.0.0/8"]), "198.51.100.1");
        assert_eq!(
            of("10.0.0.5:5000", Some("1.2.3.4, 198.51.100.1, 10.0.0.7"), &["10.0.0.0/8"]),
            "198.51.100.1",
            "the rightmost untrusted hop: a client cannot choose its own address by prepending one"
        );
        assert_eq!(of("10.0.0.5:5000", None, &["10.0.0.0/8"]), "10.0.0.5", "nothing forwarded");
        assert_eq!(of("10.0.0.5:5000", Some("not an address"), &["10.0.0.0/8"]), "10.0.0.5");
        assert_eq!(
            of("10.0.0.5:5000", Some("1.2.3.4, garbage, 10.0.0.9"), &["10.0.0.0/8"]),
            "10.0.0.9",
            "garbage: the nearest hop our proxies vouch for"
        );
        assert_eq!(of("10.0.0.5:5000", Some("198.51.100.1:4711"), &["10.0.0.0/8"]), "198.51.100.1");
        assert_eq!(of("10.0.0.5:5000", Some("[2001:db8::1]:4711"), &["10.0.0.0/8"]), "2001:db8::");
    }

    #[test]
    fn ipv6_clients_are_known_by_their_64_block() {
        assert_eq!(of("[2001:db8:1:2:aaaa::1]:443", None, &[]), of("[2001:db8:1:2:bbbb::9]:443", None, &[]));
        assert_ne!(of("[2001:db8:1:2::1]:443", None, &[]), of("[2001:db8:1:3::1]:443", None, &[]));
        assert_eq!(of("[::ffff:192.0.2.1]:443", None, &[]), "192.0.2.1", "IPv4-mapped");
    }
}
