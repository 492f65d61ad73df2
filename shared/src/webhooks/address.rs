//! Where webhooks may be sent: the URL rules and the address rules, checked when an endpoint is
//! registered and again at every delivery, after DNS resolution (the worker connects to the
//! address it checked, so a name that resolves elsewhere by the time of the delivery, DNS
//! rebinding, cannot steer a delivery into the private network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// What an operator allows beyond the safe defaults (`WEBHOOK_ALLOW_HTTP`,
/// `WEBHOOK_ALLOW_PRIVATE_ADDRESSES`; both off by default, on in tests with a local receiver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// `http://` URLs are accepted too (the body and its signature then travel in clear).
    pub allow_http: bool,
    /// Loopback, private, link-local and the other special-purpose ranges are accepted.
    pub allow_private: bool,
}

/// Longest URL an endpoint may have.
pub const MAX_URL_LEN: usize = 2048;

/// An endpoint URL that passed [`Policy::check_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: url::Url,
}

impl EndpointUrl {
    /// The URL as it will be requested.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host to resolve (a name, or an address literal without brackets).
    pub fn host(&self) -> &str {
        self.url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or_default()
    }

    /// The port to connect to (the scheme's when none is given).
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(443)
    }

    /// The host when it is an address literal (then nothing is resolved).
    pub fn literal_address(&self) -> Option<IpAddr> {
        match self.url.host()? {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        }
    }
}

/// Why a URL or an address may not receive webhooks (said to the client; never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an absolute URL.
    #[error("must be an absolute https:// URL")]
    Malformed,
    /// Longer than [`MAX_URL_LEN`].
    #[error("must be at most 2048 characters")]
    TooLong,
    /// `http://` while http is not allowed, or another scheme.
    #[error("must use https (http is allowed only when the operator sets WEBHOOK_ALLOW_HTTP=true)")]
    Scheme,
    /// User name or password in the URL (they would be stored and shown in clear).
    #[error("must not carry a user name or password")]
    Credentials,
    /// A `#fragment` (never sent to a server).
    #[error("must not have a #fragment")]
    Fragment,
    /// The host did not resolve (or not in time).
    #[error("its host does not resolve")]
    Unresolved,
    /// The host is (or resolves to) an address in a range webhooks may not reach.
    #[error("its host is a {0} address, which webhooks may not reach")]
    Address(&'static str),
}

impl Policy {
    /// Checks a URL's form: an absolute `https://` (or allowed `http://`) URL with a host, no
    /// credentials, no fragment, and, when its host is an address, an allowed one. A name is
    /// checked by [`Policy::resolve`].
    pub fn check_url(self, raw: &str) -> Result<EndpointUrl, Refused> {
        if raw.len() > MAX_URL_LEN {
            return Err(Refused::TooLong);
        }
        let url = url::Url::parse(raw.trim()).map_err(|_| Refused::Malformed)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(Refused::Scheme),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Refused::Malformed);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        if url.fragment().is_some() {
            return Err(Refused::Fragment);
        }
        let url = EndpointUrl { url };
        if let Some(ip) = url.literal_address() {
            self.check_address(ip)?;
        }
        Ok(url)
    }

    /// `Ok` when webhooks may be sent to `ip`.
    pub fn check_address(self, ip: IpAddr) -> Result<(), Refused> {
        match special_purpose(ip) {
            Some(range) if !self.allow_private => Err(Refused::Address(range)),
            _ => Ok(()),
        }
    }

    /// The addresses `host` resolves to that webhooks may reach, with `port`: an error when it
    /// resolves to none, or to none allowed. What a delivery connects to is only ever one of
    /// these.
    pub async fn resolve(self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port)).await.map_err(|_| Refused::Unresolved)?.collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match self.check_address(addr.ip()) {
                Ok(()) => true,
                Err(e) => {
                    refused.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(refused)) => Err(refused),
            (true, None) => Err(Refused::Unresolved),
        }
    }
}

/// The special-purpose range `ip` is in, named, if any: loopback, private (RFC 1918, unique
/// local fc00::/7), link-local, unspecified, shared address space (CGNAT 100.64.0.0/10),
/// multicast, broadcast, documentation, benchmarking and reserved ranges, and IPv4 addresses of
/// those kinds in IPv6 clothing (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4).
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[(&str, &str)] = &[
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        // Before the reserved block it belongs to: the first match names the address.
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, _)| net.parse::<Ipv4Net>().expect("a valid range").contains(&ip))
        .map(|(_, name)| *name)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 =
        |high: usize| Ipv4Addr::from(((segments[high] as u32) << 16) | segments[high + 1] as u32);
    // IPv4 in IPv6: the IPv4 address decides (::ffff:127.0.0.1 is loopback).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if "64:ff9b::/96".parse::<Ipv6Net>().expect("a valid range").contains(&ip) {
        return special_v4(embedded_v4(6));
    }
    if "2002::/16".parse::<Ipv6Net>().expect("a valid range").contains(&ip) {
        return special_v4(embedded_v4(1));
    }
    const RANGES: &[(&str, &str)] = &[
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        // Deprecated IPv4-compatible addresses (::a.b.c.d).
        ("::/96", "IPv4-compatible"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ];
    RANGES
        .iter()
        .find(|(net, _)| net.parse::<IpNet>().expect("a valid range").contains(&IpAddr::V6(ip)))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy { allow_http: false, allow_private: false };

    #[test]
    fn special_purpose_addresses_are_named_in_every_form() {
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("192.168.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.9", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("::7f00:1", "IPv4-compatible"),
        ] {
            assert_eq!(special_purpose(ip.parse().unwrap()), Some(range), "{ip}");
        }
        for public in ["93.184.215.14", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(special_purpose(public.parse().unwrap()), None, "{public}");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials_or_fragment_unless_allowed() {
        assert!(STRICT.check_url("https://hooks.example.com/statements?tenant=7").is_ok());
        assert_eq!(STRICT.check_url("http://hooks.example.com/").unwrap_err(), Refused::Scheme);
        assert_eq!(STRICT.check_url("ftp://hooks.example.com/").unwrap_err(), Refused::Scheme);
        assert_eq!(STRICT.check_url("hooks.example.com").unwrap_err(), Refused::Malformed);
        assert_eq!(STRICT.check_url("https://u:p@hooks.example.com/").unwrap_err(), Refused::Credentials);
        assert_eq!(STRICT.check_url("https://hooks.example.com/#x").unwrap_err(), Refused::Fragment);
        assert_eq!(STRICT.check_url("https://127.0.0.1/").unwrap_err(), Refused::Address("loopback"));
        assert_eq!(STRICT.check_url("https://[::ffff:7f00:1]/").unwrap_err(), Refused::Address("loopback"));
        assert_eq!(STRICT.check_url("https://[fe80::1]:8443/").unwrap_err(), Refused::Address("link-local"));
        assert_eq!(
            STRICT.check_url(&format!("https://a.example/{}", "x".repeat(2100))),
            Err(Refused::TooLong)
        );
        let open = Policy { allow_http: true, allow_private: true };
        let url = open.check_url("http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.literal_address()),
            ("127.0.0.1", 9000, Some([127, 0, 0, 1].into()))
        );
        assert_eq!(open.check_url("https://[::1]/").unwrap().host(), "::1");
    }

    #[tokio::test]
    async fn names_are_checked_by_what_they_resolve_to() {
        assert_eq!(STRICT.resolve("localhost", 443).await.unwrap_err(), Refused::Address("loopback"));
        let open = Policy { allow_http: true, allow_private: true };
        let addrs = open.resolve("localhost", 8080).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{addrs:?}");
        assert_eq!(STRICT.resolve("no-such-host.invalid", 443).await.unwrap_err(), Refused::Unresolved);
    }
}
