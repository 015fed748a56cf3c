//! Trust and abuse resistance: the operator's switches that are not about one heartbeat's shape.
//!
//! - [`limits`]: token buckets per server and per client IP (governor), checked before any
//!   signature check or database write.
//! - [`registration`]: open registration (trust on first use).
//! - [`rotation`]: the agent-initiated key rotation request and its signed message.
//! - [`admin_keys`]: named admin API keys (hashed at rest, scopes `admin` and `read`).
//! - [`client_ip`]: who the client is, believing `X-Forwarded-For` only from trusted proxies.
//!
//! Every switch is read from [`crate::config::ConfigHandle::current`] per request, so an edit
//! of the config file acts without a restart. This module never writes history itself: the
//! engine's single writer does.

pub mod admin_keys;
pub mod limits;
pub mod registration;
pub mod rotation;

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use serde::{Deserialize, Deserializer};

/// `[trust] registration`: who may register a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Only an operator registers servers (admin API); unknown servers get 404.
    #[default]
    Operator,
    /// Trust on first use: a first heartbeat carrying a `public_key` and signed by it registers
    /// the server, unverified.
    Open,
}

/// `[rate_limit]`: token buckets. A `*_per_minute` of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per minute one server may send (agent routes). Default 60.
    pub per_server_per_minute: u32,
    /// Requests one server may send at once before the sustained rate applies. Default 10.
    pub per_server_burst: u32,
    /// Sustained requests per minute from one client IP (agent routes). Default 600.
    pub per_ip_per_minute: u32,
    /// Burst per client IP. Default 120.
    pub per_ip_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_server_per_minute: 60,
            per_server_burst: 10,
            per_ip_per_minute: 600,
            per_ip_burst: 120,
        }
    }
}

impl RateLimitConfig {
    /// Checks the values (called by [`crate::config::Config`]'s validation).
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, rate, burst) in [
            (
                "per_server",
                self.per_server_per_minute,
                self.per_server_burst,
            ),
            ("per_ip", self.per_ip_per_minute, self.per_ip_burst),
        ] {
            anyhow::ensure!(
                rate == 0 || burst >= 1,
                "[rate_limit] {name}_burst must be at least 1 while {name}_per_minute is set"
            );
        }
        Ok(())
    }
}

/// `[directory]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Directory reads (`/v1/servers…`, `/v1/policies`) need an API key (scope `read` or
    /// `admin`) or the bootstrap token. Default false: the directory is public.
    pub require_key: bool,
}

/// Deserialises `[server] trusted_proxies`: addresses (`10.0.0.1`) or networks (`10.0.0.0/8`).
pub fn deserialize_networks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "trusted_proxies: `{text}` is not an IP address or CIDR network"
                    ))
                })
        })
        .collect()
}

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

/// Trust state shared by handlers (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TrustState {
    /// Token buckets.
    pub limits: Arc<limits::RateLimits>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        #[derive(Deserialize)]
        struct W {
            #[serde(deserialize_with = "deserialize_networks")]
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
    fn bad_proxy_entries_are_named() {
        let err = crate::config::Config::from_toml("[server]\ntrusted_proxies = [\"nope\"]\n")
            .expect_err("invalid");
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        let err = crate::config::Config::from_toml("[trust]\nregistration = \"anyone\"\n")
            .expect_err("invalid");
        assert!(format!("{err:#}").contains("anyone"), "{err:#}");
    }
}
