//! A Web Bot Auth agent's key directory (`/.well-known/http-message-signatures-directory`, or a
//! configured JWKS URL): one configured URL behind its own timeout, size limit and circuit
//! breaker, fetched with no redirects and, unless allowed, never from a private, loopback or
//! link-local address.
//!
//! Only configured agents' directories are ever fetched: a request's `Signature-Agent` selects
//! one of them or is refused, so a caller cannot make the sidecar fetch a URL of its choosing.
//! The resolver below checks every address a name resolves to and hands reqwest only those it
//! accepted, so a name that resolves to a private address (DNS rebinding included) is refused
//! at the connection the fetch uses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Breaker, BreakerSettings};
use super::jwks::Jwks;
use crate::clock::Clock;
use crate::metrics::{Endpoint, Metrics};

/// An agent's directory endpoint (`endpoint="directory"`): a key set endpoint whose client
/// follows no redirect, ignores proxy variables and connects to public addresses only (all of
/// them with `allow_private`).
pub(crate) fn endpoint(
    url: String,
    timeout: Duration,
    limit: usize,
    allow_private: bool,
    breaker: BreakerSettings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Result<Jwks, reqwest::Error> {
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .user_agent(concat!("claw-authz/", env!("CARGO_PKG_VERSION")))
        // A redirect is the answer (a failed fetch), never followed.
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the name itself, past the address check below.
        .no_proxy()
        .dns_resolver(Arc::new(PublicOnly { allow_private }))
        .build()?;
    let breaker = Breaker::new(Endpoint::Directory, breaker, clock);
    Ok(Jwks::with_client(
        client, url, timeout, limit, breaker, metrics,
    ))
}

/// Resolves with the system resolver and keeps only public addresses (all of them when
/// `allow_private`, for tests on loopback).
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                tracing::warn!(%host, "agent directory host has no public address; not fetched");
                return Err("no public address".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether `ip` is a global unicast address: not loopback, private (RFC 1918, ULA), link-local,
/// unspecified, carrier-grade NAT, documentation, benchmarking, multicast or broadcast, nor an
/// IPv4-mapped or -compatible form of one.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            match seg {
                // IPv4-translated (SIIT, ::ffff:0:a.b.c.d) and NAT64 (64:ff9b::/96): the IPv4
                // address they reach decides.
                [0, 0, 0, 0, 0xffff, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
                    return embedded(hi, lo);
                }
                // 6to4 (2002:a.b.c.d::/48).
                [0x2002, hi, lo, ..] => return embedded(hi, lo),
                _ => {}
            }
            let first = seg[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                // Teredo (2001::/32), local-use NAT64 (64:ff9b:1::/48), discard-only (100::/64).
                || (seg[0] == 0x2001 && seg[1] == 0)
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1)
                || (seg[0] == 0x100 && seg[1..4] == [0, 0, 0])
                || seg[..6].iter().all(|s| *s == 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "2001:db8::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
            "::ffff:0:a00:1",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
