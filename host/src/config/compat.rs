//! `[compat]`: route families for clients already deployed that speak another tool's protocol
//! (see `docs/migrating.md`). Each is off by default; each table holds its source's options.

use serde::{Deserialize, Serialize};

/// `[compat]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// `[compat.healthchecks]`: Healthchecks-style pings (`/ping/{uuid}…`).
    pub healthchecks: Toggle,
    /// `[compat.uptime_kuma]`: Uptime Kuma push monitors (`/api/push/{token}`).
    pub uptime_kuma: Toggle,
    /// `[compat.homelabcmd]`: HomelabCmd agents (`POST /api/v1/agents/heartbeat`).
    pub homelabcmd: HomelabCmdConfig,
    /// `[compat.sprint4]`: the Sprint-4 directory agents' `POST /agent/heartbeat` (the v1
    /// signed body at its old path).
    pub sprint4: Toggle,
    /// `[compat.pap]`: PAP agents (PAP-RFC-001 §8.1, `POST /heartbeat/{agentId}`) and the
    /// collector's query routes.
    pub pap: PapConfig,
    /// `[compat.hermes]`: the Hermes agent marketplace's read surface
    /// (`GET /api/v1/marketplace/agents/{id}/trust-score`, `…/reputation`,
    /// `/api/v1/marketplace/leaderboard`), read from what the `reputation` policy scored.
    pub hermes: Toggle,
}

/// A compat source with no option but whether it is on.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Toggle {
    /// Serve this source's routes. Default false: they answer 404 like any unknown route.
    pub enabled: bool,
}

/// `[compat.homelabcmd]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomelabCmdConfig {
    /// Serve `POST /api/v1/agents/heartbeat`. Default false (404 like any unknown route).
    pub enabled: bool,
    /// Register an unknown `server_id` sent under a valid shared `X-API-Key` (an admin key
    /// with the `ingest` scope), unverified, within `[trust]`'s hourly registration caps.
    /// Default false: an unknown server is refused 404.
    pub auto_register: bool,
}

/// `[compat.pap]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PapConfig {
    /// Serve `POST /heartbeat/{agentId}`, `GET /agents`, `GET /agents/{id}` and the PAP
    /// `GET /health`. Default false (404 like any unknown route).
    pub enabled: bool,
    /// PAP agents carry no credential: only clients in these networks (addresses or CIDRs,
    /// the client address as `[server] trusted_proxies` resolves it) may send heartbeats.
    /// Default loopback only (`127.0.0.0/8`, `::1`).
    #[serde(
        deserialize_with = "super::access::deserialize_networks",
        serialize_with = "super::access::serialize_networks"
    )]
    pub allow_from: Vec<ipnet::IpNet>,
    /// The cluster unknown agent ids are registered into (unverified), and the
    /// `cluster_id` of `GET /agents`. Default `pap`.
    pub cluster_id: String,
    /// The `cluster_name` of `GET /agents`. Default empty: the cluster id.
    pub cluster_name: String,
    /// The collector key (PAP's `COLLECTOR_API_KEY`): `GET /agents` and `GET /agents/{id}`
    /// then need it as `X-Collector-Key` or `Authorization: Bearer`, from any address.
    /// Without one they answer only `allow_from` clients. Prefer
    /// `VIGIL_COMPAT__PAP__COLLECTOR_KEY`.
    pub collector_key: Option<String>,
}

impl Default for PapConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_from: vec![
                ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8)
                        .expect("8 is a valid IPv4 prefix length"),
                ),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            cluster_id: "pap".into(),
            cluster_name: String::new(),
            collector_key: None,
        }
    }
}

impl PapConfig {
    /// `cluster_name`, or the cluster id when it is empty.
    pub fn cluster_name(&self) -> &str {
        if self.cluster_name.is_empty() {
            &self.cluster_id
        } else {
            &self.cluster_name
        }
    }

    /// The collector key in force (an empty one is none).
    pub fn collector_key(&self) -> Option<&str> {
        self.collector_key.as_deref().filter(|k| !k.is_empty())
    }

    /// Whether `ip` may send PAP heartbeats.
    pub fn allows(&self, ip: Option<std::net::IpAddr>) -> bool {
        ip.is_some_and(|ip| self.allow_from.iter().any(|net| net.contains(&ip)))
    }
}
