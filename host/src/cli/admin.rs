//! `vigil admin key create|list|revoke`: named admin API keys.
//!
//! These talk to the database directly (found through the same config file as `vigil serve`),
//! not through the API: creating the first key must work before any credential exists, and a
//! key can be revoked while the host is down or when the only admin credential has leaked. The
//! host looks keys up per request, so a change acts on the next request without a restart.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::api::auth;
use crate::config::Config;
use crate::store::Scope;
use crate::store::Store;

/// `vigil admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage named admin API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// The database to act on.
#[derive(Debug, Args)]
pub struct Database {
    /// Configuration file naming the database (`[storage] url`).
    #[arg(long, short, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `vigil admin key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// A unique name (who or what uses the key).
        name: String,
        /// `admin` (every admin route) or `read` (read-only routes).
        #[arg(long, value_enum, default_value = "admin")]
        scope: Scope,
        /// Database.
        #[command(flatten)]
        db: Database,
    },
    /// List keys (names, scopes, prefixes, revocation; never secrets).
    List {
        /// Database.
        #[command(flatten)]
        db: Database,
        /// `table` or `json`.
        #[command(flatten)]
        output: super::output::OutputArg,
    },
    /// Revoke a key by name; it is refused from the next request on.
    Revoke {
        /// The key's name.
        name: String,
        /// Database.
        #[command(flatten)]
        db: Database,
    },
}

async fn open(db: &Database) -> anyhow::Result<Store> {
    let config = match &db.config {
        Some(path) => Config::load(path)?,
        None => Config::from_toml("")?,
    };
    Store::open(&config.storage.url, 2)
        .await
        .with_context(|| format!("opening database {}", crate::redact(&config.storage.url)))
}

/// Runs a `vigil admin` subcommand.
pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::Key(command) = command;
    let now = crate::clock::now_ms();
    match command {
        KeyCommand::Create { name, scope, db } => {
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 64,
                "a key name is 1 to 64 characters"
            );
            let store = open(&db).await?;
            let token = auth::create_key(&store, &name, scope, now).await?;
            tracing::info!(target: "vigil::audit", key = %name, scope = scope.as_str(), "admin API key created");
            eprintln!(
                "Created {} key `{name}`. It is shown once; store it now:",
                scope.as_str()
            );
            println!("{token}");
        }
        KeyCommand::List { db, output } => {
            use super::output::col;
            let store = open(&db).await?;
            let keys = serde_json::to_value(store.admin_keys().await?)?;
            super::output::print(
                &keys,
                output.format(),
                "",
                &[
                    col("NAME", "name"),
                    col("SCOPE", "scope"),
                    col("PREFIX", "prefix"),
                    col("CREATED", "created_at_ms"),
                    col("REVOKED", "revoked_at_ms"),
                ],
            )?;
        }
        KeyCommand::Revoke { name, db } => {
            let store = open(&db).await?;
            anyhow::ensure!(
                store.revoke_admin_key(&name, now).await?,
                "no active key named `{name}`"
            );
            tracing::info!(target: "vigil::audit", key = %name, "admin API key revoked");
            eprintln!("Revoked `{name}`.");
        }
    }
    Ok(())
}
