//! Who the client is: the TCP peer, or the `X-Forwarded-For` hop a trusted proxy vouches for.
//! The admission gate asks this first; it never looks at the body.
//!
//! `X-Forwarded-For` is walked from the right, the only end the host can trust: the right-most
//! hop was written by the TCP peer (a trusted proxy), each hop further left by the hop to its
//! right, and only a trusted proxy's writing is believed. So the walk stops at the first hop
//! that is not a trusted proxy (that is the client: everything to its left is the client's own
//! writing) or at the first hop that does not parse as an address.
//!
//! An unparseable hop was written by a trusted proxy (the hop to its right) that could not or
//! would not name its peer (`unknown`, an obfuscated identifier) — an attacker's own garbage is
//! always left of its real address, which the proxy appended, so it is never reached. Then the
//! client is that trusted proxy's view of it: the hop to the right of the unparseable one (the
//! TCP peer when it is the right-most). Skipping the bad hop and reading on would believe text
//! the client wrote (pick any address: evade its bucket, frame another); giving up on the whole
//! header (this module's earlier rule) let any client behind a proxy become the proxy itself,
//! spending the bucket of everyone behind it and hiding its address from the audit.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// One hop: an address, optionally with a port (`1.2.3.4:5678`, `[::1]:5678`), as some proxies
/// write it. Anything else is unparseable.
fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` hop that is not itself a trusted proxy, stopping at the first
/// unparseable hop (then the trusted hop to its right is the client, see the module doc).
/// Several `X-Forwarded-For` lines are one list, in order; a line that is not visible ASCII is
/// one unparseable hop. The walk costs one step per trusted hop plus one.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    // `current` is trusted here: it wrote the hop the loop reads next.
    let mut current = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(current);
        };
        for part in text.rsplit(',') {
            if !is_trusted(&current) {
                return Some(current);
            }
            match hop(part) {
                Some(ip) => current = ip,
                None => return Some(current),
            }
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        #[derive(Deserialize)]
        struct W {
            #[serde(deserialize_with = "crate::config::access::deserialize_networks")]
            n: Vec<ipnet::IpNet>,
        }
        let toml = format!(
            "n = [{}]",
            list.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        toml::from_str::<W>(&toml).expect("valid").n
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8, 10.1.1.1"),
        );
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        // Untrusted peer: the header is ignored.
        assert_eq!(client_ip(ip("9.9.9.9"), &headers, &trusted), ip("9.9.9.9"));
        // Trusted peer: right-most untrusted hop.
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("5.6.7.8"));
        assert_eq!(
            client_ip(ip("192.168.1.1"), &headers, &trusted),
            ip("5.6.7.8")
        );
        // Trusted peer without a header, or a garbled one: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_or_unparseable_hop_from_the_right() {
        let trusted = nets(&["10.0.0.0/8"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        let walk = |lines: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(
                    "x-forwarded-for",
                    HeaderValue::from_bytes(line).expect("header"),
                );
            }
            client_ip(ip("10.0.0.2"), &headers, &trusted)
        };
        // The client's own garbage, left of the address the proxy appended, is never read.
        assert_eq!(walk(&[b"nonsense, 203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(walk(&[b"\xff\xfe", b"203.0.113.7"]), ip("203.0.113.7"));
        // Garbage a trusted proxy wrote: that proxy is the client as far as anyone knows,
        // never an address further left (the client wrote those).
        assert_eq!(walk(&[b"198.51.100.1, unknown, 10.0.0.5"]), ip("10.0.0.5"));
        assert_eq!(walk(&[b"198.51.100.1, unknown"]), ip("10.0.0.2"));
        assert_eq!(walk(&[b"198.51.100.1", b"\xff"]), ip("10.0.0.2"));
        // Lines are one list; ports and bracketed IPv6 parse.
        assert_eq!(walk(&[b"192.0.2.1", b"10.0.0.9"]), ip("192.0.2.1"));
        assert_eq!(
            walk(&[b"[2001:db8::1]:443, 10.1.1.1:80"]),
            ip("2001:db8::1")
        );
        // All trusted: the left-most.
        assert_eq!(walk(&[b"10.0.0.7, 10.0.0.8"]), ip("10.0.0.7"));
        assert_eq!(walk(&[b""]), ip("10.0.0.2"));
    }
}
