//! # Vigil
//!
//! A heartbeat engine: agents post ed25519-signed heartbeats; the host verifies them, stores
//! them append-only and folds them through versioned WebAssembly scoring policies into each
//! server's derived status, confidence, uptime and quality.
//!
//! # Layout
//!
//! - [`config`]: `vigil.toml` → typed configuration with defaults and validation.
//! - [`api`]: the axum routers (agent, directory, admin) and the one error type that maps every
//!   failure to RFC 9457 problem+json with a stable `code`.
//! - [`ingest`]: the checks a request can pass alone — decode (wire contract v1), key, JCS
//!   signature, clock skew, trust rules.
//! - [`engine`]: the single writer path — replay rules, the fold through the active policy,
//!   deadlines (ticks), group commit; and replay of stored history.
//! - [`policy`]: the wasmtime component runtime — loading, limits, validated outputs. The only
//!   `bindgen!` lives in `policy::bindings`.
//! - [`store`]: the append-only storage trait and its backends: SQLite (embedded, one host) and
//!   PostgreSQL (shared by several hosts: row locks per batch, NOTIFY for admin changes).
//! - [`cli`]: the `vigil` subcommands.
//!
//! The server is [`run`]`(listener, config, shutdown)`; [`build`] gives the state and the
//! router for tests that drive [`api::app`] without a network.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod ingest;
pub mod policy;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::config::Config;
use crate::policy::{PolicyLimits, PolicyRuntime};
use crate::store::{ActivationRow, Backend, PolicyRecord, Store};

/// A built host: the shared state and the writer task.
#[derive(Debug)]
pub struct Host {
    /// State for the router.
    pub state: AppState,
    /// The opened backend (tests inspect tables through its pool).
    pub store: Backend,
    /// The writer; it ends after every [`AppState`] clone is dropped.
    pub writer: JoinHandle<()>,
}

/// Opens the store, loads and records the policy, and starts the engine.
pub async fn build(config: Config) -> anyhow::Result<Host> {
    let store = Backend::open(&config.storage.url, config.storage.max_connections)
        .await
        .with_context(|| format!("opening database {}", redact(&config.storage.url)))?;
    let shared: Arc<dyn Store> = store.shared();

    let runtime = PolicyRuntime::new(PolicyLimits::from(&config.policy))
        .context("starting the policy runtime")?;
    let (bytes, origin) = match &config.policy.component {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("reading policy {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            policy::DEFAULT_POLICY.to_vec(),
            "bundled default policy".to_owned(),
        ),
    };
    let policy = runtime
        .load(&bytes, &config.policy.params)
        .with_context(|| format!("loading the {origin}"))?;
    let description = policy.description().clone();
    shared
        .save_policy(&PolicyRecord {
            digest: description.digest.clone(),
            name: description.name.clone(),
            version: description.version.clone(),
            component: bytes,
            uploaded_by: "config".into(),
            uploaded_at_ms: engine::now_ms(),
            signer: None,
        })
        .await?;
    let previous = shared.active_policy_digest().await?;
    if previous.as_deref() != Some(description.digest.as_str()) {
        shared
            .append_activation(&ActivationRow {
                at_ms: engine::now_ms(),
                who: "config".into(),
                from_digest: previous,
                to_digest: description.digest.clone(),
                reason: format!("start-up with the {origin}"),
            })
            .await?;
    }
    tracing::info!(
        policy = %format!("{}@{}", description.name, description.version),
        digest = %description.digest,
        "policy active"
    );

    let (engine, writer) = engine::start(
        shared.clone(),
        policy,
        config.ingest.max_batch,
        config.ingest.queue_capacity,
    )
    .await?;
    let state = AppState {
        engine,
        store: shared,
        config: config::ConfigHandle::new(config),
    };
    Ok(Host {
        state,
        store,
        writer,
    })
}

/// `url` without a password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets the writer finish what is
/// queued.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Host { state, writer, .. } = build(config).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "vigil listening");
    let router = api::app(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving HTTP")?;
    writer.await.context("engine writer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_never_reach_the_logs() {
        assert_eq!(
            super::redact("postgres://vigil:s3cret@db:5432/vigil"),
            "postgres://vigil:***@db:5432/vigil"
        );
        assert_eq!(super::redact("postgres://db/vigil"), "postgres://db/vigil");
        assert_eq!(super::redact("sqlite://vigil.db"), "sqlite://vigil.db");
    }
}
