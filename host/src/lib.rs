//! # Vigil
//!
//! A heartbeat engine: agents post ed25519-signed heartbeats; the host verifies them, stores
//! them append-only and folds them through versioned WebAssembly scoring policies into each
//! server's derived status, confidence, uptime and quality.
//!
//! # Layout
//!
//! A heartbeat's path reads top to bottom once: [`api`] (`api/agent.rs`) → [`ingest::Gate`] →
//! [`engine`] (fold through the policy, group commit through [`store`]) → the answer. Rooms
//! import downwards only; a lower room that needs something of a higher one takes a trait
//! ([`ingest::Servers`], [`policy::activation::Activator`]).
//!
//! - [`cli`]: the `vigil` subcommands, one file per group, one admin HTTP client.
//! - [`api`]: axum handlers that translate HTTP only; [`api::auth`] (admin credentials and API
//!   keys), [`api::admission`] (the gate wired to the engine), `ops` (`/healthz`, `/readyz`,
//!   `/metrics`), and the one error type that maps every failure to RFC 9457 problem+json with
//!   a stable `code`.
//! - [`web`]: what people look at beside the JSON API, on the same floor as [`api`] (which
//!   routes it): SVG badges and shields.io JSON, public status pages per cluster.
//! - [`ingest`]: everything an agent request must pass, assembled once in [`ingest::Gate`]:
//!   client address, rate limits, decode (wire contract v1), identity, open registration, key
//!   version, JCS + ed25519 signature (batched), clock skew, trust rules; key rotation requests.
//! - [`engine`]: the single writer path — handle protocol, writer loop and ticks, group commit,
//!   stats, server admin; the fold through the active policy; policy swaps with background
//!   rebuild and probation; replay of stored history, backtests and shadow evaluation.
//! - [`alerts`], [`live`], [`metrics`], [`commands`]: what committed events feed — the alert
//!   outbox and its sinks (webhook, Alertmanager, Slack; retries, dedup, maintenance windows),
//!   the bus behind `GET /v1/events` and the observe WebSocket, the Prometheus registry, and
//!   pending commands signed with the host's key. Domain only: their SQL is in [`store`].
//! - [`policy`]: the wasmtime component runtime — types, runtime, loaded instances, output
//!   validation, WIT conversions (the only `bindgen!` lives in `policy::bindings`); the catalog
//!   and registry every shipped version goes through (validate, store, then activate through
//!   the engine's `Activator`), author signatures, the watched folder and config pin, vectors.
//! - [`store`]: the only room that sees a pool — the [`store::Store`] handle (shared reads and
//!   operations tables written once), row types, and the SQLite (embedded, one host) and
//!   PostgreSQL (several hosts: row locks per batch, LISTEN/NOTIFY, partitions) backends.
//! - [`config`]: `vigil.toml` → typed configuration with defaults and validation;
//!   [`config::access`] (who may do what) and [`config::reload`] (valid edits put in force
//!   without a restart).
//! - [`clock`] and [`crypto`]: the host clock and RFC 3339 text; ed25519 public keys and
//!   content digests (the ground floor: they import nothing of Vigil's).
//!
//! The server is [`run`]`(listener, config, shutdown)`; [`build`] gives the state and the
//! router for tests that drive [`api::app`] without a network.

pub mod alerts;
pub mod api;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod store;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::config::Config;
use crate::policy::catalog::PolicyCatalog;
use crate::policy::registry::PolicyRegistry;
use crate::policy::{PolicyLimits, PolicyRuntime};
use crate::store::Store;

/// A built host: the shared state and the writer task.
#[derive(Debug)]
pub struct Host {
    /// State for the router.
    pub state: AppState,
    /// The opened store (the same handle as `state.store`).
    pub store: Store,
    /// The writer; it ends after every [`AppState`] clone is dropped.
    pub writer: JoinHandle<()>,
    /// The alert dispatcher; it ends after the writer.
    pub dispatcher: JoinHandle<()>,
    /// The config file watch, when the host was built from a file ([`build_with`]); dropping
    /// it stops reloading.
    pub config_watcher: Option<config::reload::ConfigWatcher>,
}

/// Opens the store, loads and records the policy, and starts the engine.
pub async fn build(config: Config) -> anyhow::Result<Host> {
    build_with(config, None).await
}

/// [`build`], and when `config_path` is given, watch that file and put every valid edit in
/// force without a restart (see [`config::reload`]).
pub async fn build_with(
    config: Config,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<Host> {
    let store = Store::open(&config.storage.url, config.storage.max_connections)
        .await
        .with_context(|| format!("opening database {}", redact(&config.storage.url)))?;
    let shared = store.clone();

    let runtime = PolicyRuntime::new(PolicyLimits::from(&config.policy))
        .context("starting the policy runtime")?;
    let handle = config::ConfigHandle::new(config.clone());
    let catalog = PolicyCatalog::new(runtime, shared.clone(), handle.clone());
    // Files already in the watched folder are registered first, so a pin can name one.
    let seen = match &config.policy.dir {
        Some(dir) => policy::watch::scan(&catalog, dir).await,
        None => Default::default(),
    };
    let policy = policy::catalog::boot_policy(&catalog, &config.policy).await?;
    let description = policy.description().clone();
    tracing::info!(
        policy = %format!("{}@{}", description.name, description.version),
        digest = %description.digest,
        "policy active"
    );

    let metrics = Arc::new(metrics::Metrics::new());
    metrics.policy_activated(metrics::PolicyInfoLabels {
        name: description.name.clone(),
        version: description.version.clone(),
        digest: description.digest.clone(),
    });
    let live = live::LiveHub::new(&config.live);
    let (alerts_wake, wake) = tokio::sync::mpsc::channel(1);
    let dispatcher = alerts::dispatch::spawn(store.clone(), handle.clone(), metrics.clone(), wake);
    let observers = engine::Observers {
        metrics: metrics.clone(),
        live: live.clone(),
        alerts_wake,
    };
    let commands = commands::Commands::open(store.clone())
        .await
        .context("loading the host key")?;
    let current = handle.current();
    let (engine, writer) = engine::start(
        shared.clone(),
        policy,
        current.ingest.max_batch,
        current.ingest.queue_capacity,
        observers,
    )
    .await?;
    // Activations go through the running engine: the registry exists from here on.
    let policies = PolicyRegistry::new(catalog, engine.clone());
    if let Some(dir) = &config.policy.dir {
        policy::watch::spawn_folder_watcher(&policies, dir.clone(), seen)?;
    }
    policy::watch::spawn_pin_follower(&policies);
    if let Some(changes) = shared.subscribe_changes().await? {
        policy::watch::spawn_change_follower(&policies, changes);
    }
    let verifier = ingest::verifier::Verifier::start(current.ingest.queue_capacity)
        .context("starting the signature verifier")?;
    let gate = ingest::Gate::new(
        handle.clone(),
        verifier,
        Arc::new(api::admission::EngineServers {
            engine: engine.clone(),
            store: shared.clone(),
        }),
    );
    let state = AppState::new(api::Services {
        engine,
        store: shared,
        config: handle,
        policies,
        gate,
        metrics,
        live,
        commands,
        sessions: Default::default(),
    });
    let config_watcher = config_path
        .map(|path| config::reload::ConfigWatcher::start(path, state.config.clone()))
        .transpose()?;
    Ok(Host {
        state,
        store,
        writer,
        dispatcher,
        config_watcher,
    })
}

/// `url` without a password, for logs and errors.
pub fn redact(url: &str) -> String {
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
    serve(listener, config, None, shutdown).await
}

/// [`run`], reloading the configuration from `config_path` (when given) on every valid edit.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    config_path: Option<&std::path::Path>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Host {
        state,
        writer,
        config_watcher,
        dispatcher,
        ..
    } = build_with(config, config_path).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "vigil listening");
    // systemd `Type=notify` (deploy/vigil.service): ready once the store is open, the policy
    // loaded and the socket bound. Without NOTIFY_SOCKET this does nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    // Open live streams would hold graceful shutdown forever: end them when it begins.
    let live = state.live.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        live.close();
    };
    let store = state.store.clone();
    let limits = net::Limits::from(&state.config.current().server);
    net::serve(listener, api::app(state), limits, shutdown).await;
    drop(config_watcher);
    writer.await.context("engine writer")?;
    dispatcher.await.context("alert dispatcher")?;
    // Nothing writes any more: close the connections, so SQLite folds its WAL into the
    // database file. Bounded, in case a background task still holds a connection.
    if tokio::time::timeout(std::time::Duration::from_secs(5), store.close())
        .await
        .is_err()
    {
        tracing::warn!("the database connections did not close within 5 s; exiting anyway");
    }
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
