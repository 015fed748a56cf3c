//! Who may do what, as configured: `[trust] registration`, `[rate_limit]`, `[directory]` and
//! `[server] trusted_proxies`. Plain data read per request through [`super::ConfigHandle`];
//! the checks that use them live in the admission gate (`ingest`) and the API (`api::auth`).

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[trust] registration`: who may register a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Directory reads (`/v1/servers…`, `/v1/policies`, rankings, leaderboards, badges and
    /// status pages) need an API key (scope `read` or `admin`) or the bootstrap token. Default
    /// false: the directory is public.
    pub require_key: bool,
    /// What an unverified server's value counts for in rankings and leaderboards, 0–1
    /// (default 0.5): the ranking value is the value times this weight.
    pub unverified_weight: f64,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            require_key: false,
            unverified_weight: 0.5,
        }
    }
}

impl DirectoryConfig {
    /// Checks the weight.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.unverified_weight),
            "[directory] unverified_weight must be from 0 to 1"
        );
        Ok(())
    }
}

/// Serialises `[server] trusted_proxies` back as text (a single address without its `/32`).
pub fn serialize_networks<S: Serializer>(
    networks: &[ipnet::IpNet],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let texts: Vec<String> = networks
        .iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    texts.serialize(serializer)
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

#[cfg(test)]
mod tests {
    #[test]
    fn bad_proxy_entries_are_named() {
        let err = super::super::Config::from_toml("[server]\ntrusted_proxies = [\"nope\"]\n")
            .expect_err("invalid");
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        let err = super::super::Config::from_toml("[trust]\nregistration = \"anyone\"\n")
            .expect_err("invalid");
        assert!(format!("{err:#}").contains("anyone"), "{err:#}");
    }
}
