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
