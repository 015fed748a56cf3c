//! Who the client is: the TCP peer, or the `X-Forwarded-For` hop a trusted proxy vouches for.
//! The admission gate asks this first; it never looks at the body.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries to its left
/// are written by the client and prove nothing).
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // A garbled header: trust nothing it says.
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        hops.into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
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
}
