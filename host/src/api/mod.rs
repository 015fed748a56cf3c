//! HTTP interface (axum): the agent, directory and admin routers and their shared state.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive the real router without
//! a network. Handlers translate between HTTP and the engine/store; they hold no logic of
//! their own beyond request shape.

pub mod admin;
pub mod admission;
pub mod agent;
pub mod auth;
pub mod commands;
pub mod compat;
pub mod directory;
pub mod error;
pub mod manage;
pub mod openapi;
pub mod ops;
pub mod policies;
pub mod rankings;
pub mod stream;
pub mod tokens;
pub mod trust;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::config::ConfigHandle;
use crate::engine::EngineHandle;
use crate::policy::registry::PolicyRegistry;
use crate::store::Store;
pub use error::ApiError;

/// Everything a handler needs: one shared [`Services`], so the clone each request takes
/// (axum clones the state for every handler and middleware) is one reference count, not one
/// per handle. Reads through to the services (`state.engine`, ...).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Shares `services` with every handler.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The handles behind [`AppState`].
pub struct Services {
    /// The writer path.
    pub engine: EngineHandle,
    /// Reads.
    pub store: Store,
    /// The configuration in force (reloadable).
    pub config: ConfigHandle,
    /// Policy versions: validation, storage, activation.
    pub policies: PolicyRegistry,
    /// The admission gate every agent request passes (rate limits, decode, signatures).
    pub gate: crate::ingest::Gate,
    /// This host's Prometheus registry.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Committed events for live streams.
    pub live: crate::live::LiveHub,
    /// Pending commands and the host's signing key.
    pub commands: crate::commands::Commands,
    /// The dashboard's signed-in sessions (this process's memory).
    pub sessions: crate::web::session::Sessions,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .finish()
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/agent/heartbeat", post(agent::heartbeat))
        .route("/v1/agent/heartbeats", post(agent::heartbeats))
        .route("/v1/servers", get(directory::list_servers))
        .route("/v1/servers/{id}", get(directory::get_server))
        .route("/v1/servers/{id}/heartbeats", get(directory::heartbeats))
        .route("/v1/servers/{id}/transitions", get(directory::transitions))
        .route("/v1/servers/{id}/uptime", get(directory::uptime))
        .route("/v1/policies", get(policies::list))
        .route("/v1/rankings", get(rankings::rankings))
        .route("/v1/leaderboard", get(rankings::leaderboard))
        // The Hermes marketplace's reads ([compat.hermes], off by default): directory reads in
        // another client's shape, so behind the same guard.
        .route(
            "/api/v1/marketplace/agents/{id}/trust-score",
            get(compat::hermes::trust_score),
        )
        .route(
            "/api/v1/marketplace/agents/{id}/reputation",
            get(compat::hermes::reputation),
        )
        .route(
            "/api/v1/marketplace/leaderboard",
            get(compat::hermes::leaderboard),
        )
        .route("/v1/admin/policies", post(policies::upload))
        .route("/v1/admin/policies/activate", post(policies::activate))
        .route("/v1/admin/policies/rollback", post(policies::rollback))
        .route("/v1/admin/policies/shadow", post(policies::start_shadow))
        .route("/v1/policies/shadow", get(policies::shadow_report))
        .route("/v1/admin/servers", post(admin::add_server))
        .route("/v1/admin/servers/{id}/verify", post(admin::verify_server))
        .route("/v1/admin/servers/{id}", axum::routing::patch(manage::edit))
        .route("/v1/admin/servers/{id}/pause", post(manage::pause))
        .route("/v1/admin/servers/{id}/resume", post(manage::resume))
        .route("/v1/admin/servers/{id}/retire", post(manage::retire))
        .route(
            "/v1/admin/servers/{id}/schedule",
            axum::routing::put(manage::set_schedule).delete(manage::clear_schedule),
        )
        .route("/v1/admin/servers/{id}/audit", get(manage::audit))
        .route(
            "/v1/admin/maintenance",
            get(manage::list_windows).post(manage::add_window),
        )
        .route("/v1/admin/maintenance/{id}", delete(manage::cancel_window))
        .route("/v1/agent/rotate-key", post(trust::rotate_key))
        .route(
            "/v1/admin/servers/{id}/keys",
            get(trust::list_keys).post(trust::add_key),
        )
        .route(
            "/v1/admin/servers/{id}/tokens",
            get(tokens::list).post(tokens::add),
        )
        .route(
            "/v1/admin/servers/{id}/tokens/{token_id}",
            delete(tokens::revoke),
        )
        .route("/v1/admin/rejections", get(trust::rejections))
        // The live streams read what the directory shows: the same guard covers them.
        .route("/v1/events", get(stream::events))
        .route("/v1/servers/{id}/observe", get(stream::observe))
        .route("/badge/{id}/{file}", get(crate::web::badge::kind))
        .route("/badge/{id}/score/{file}", get(crate::web::badge::score))
        .route("/status/{cluster}", get(crate::web::status::page))
        .route("/", get(crate::web::dashboard::servers))
        .route("/servers/{id}", get(crate::web::dashboard::server))
        .route(
            "/servers/{id}/{action}",
            post(crate::web::session::server_action),
        )
        .route("/policies", get(crate::web::dashboard::policies))
        .route(
            "/policies/rollback",
            post(crate::web::session::policy_rollback),
        )
        .route(
            "/policies/activate",
            post(crate::web::session::policy_activate),
        )
        .route("/policies/shadow", post(crate::web::session::policy_shadow))
        .route("/policies/upload", post(crate::web::session::policy_upload))
        .route(
            "/sign-in",
            get(crate::web::session::sign_in_page).post(crate::web::session::sign_in),
        )
        .route("/sign-out", post(crate::web::session::sign_out))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::directory_guard,
        ))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/admin/servers/{id}/commands", post(commands::queue))
        .route("/v1/agent/commands/{id}/result", post(commands::result))
        .route("/v1/host-key", get(commands::host_key))
        // Clients of other tools, each off by default ([compat.*]); outside the directory
        // guard: they are agent routes, each with its own credential.
        .route(
            "/ping/{uuid}",
            get(compat::healthchecks::ping).post(compat::healthchecks::ping),
        )
        .route(
            "/ping/{uuid}/{action}",
            get(compat::healthchecks::ping_action).post(compat::healthchecks::ping_action),
        )
        .route(
            "/api/push/{token}",
            get(compat::uptime_kuma::push).post(compat::uptime_kuma::push),
        )
        .route("/agent/heartbeat", post(compat::sprint4::heartbeat))
        .route(
            "/api/v1/agents/heartbeat",
            post(compat::homelabcmd::heartbeat),
        )
        .route("/heartbeat/{agent_id}", post(compat::pap::heartbeat))
        .route("/agents", get(compat::pap::agents))
        .route("/agents/{agent_id}", get(compat::pap::agent))
        .route("/health", get(compat::pap::health))
        .fallback(|| async { ApiError::not_found("this route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::source_budget,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::observe,
        ))
        .with_state(state)
}
