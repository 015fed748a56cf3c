//! `vigil server …`: register, verify and list servers, queue commands and manage keys
//! through the admin API. It never opens the database (`vigil admin` does).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::AdminTarget;
use crate::ingest::signature::public_key_of;

/// `vigil server` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Register a server with its agent's public key.
    Add {
        /// The server's identifier.
        server_id: String,
        /// The agent's public key (base64), as printed by `vigil keygen`.
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        public_key: Option<String>,
        /// Or the agent's private key file, to take its public half.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Human-friendly name.
        #[arg(long)]
        display_name: Option<String>,
        /// Cluster.
        #[arg(long)]
        cluster_id: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Mark a server as verified by an operator.
    Verify {
        /// The server's identifier.
        server_id: String,
        /// Withdraw verification instead.
        #[arg(long)]
        revoke: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Queue a command for a server; its next accepted heartbeat's reply carries it, signed
    /// by the host key.
    Command {
        /// The server's identifier.
        server_id: String,
        /// The command name (`^[a-z0-9][a-z0-9._-]{0,63}$`).
        command: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Seconds until the command expires undelivered.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Rotate a server's key as an operator: the new key becomes version N+1, heartbeats signed
    /// with older versions are refused (409 `key_version_mismatch`).
    RotateKey {
        /// The server's identifier.
        server_id: String,
        /// The new public key (base64).
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        public_key: Option<String>,
        /// Or the agent's new private key file, to take its public half.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Show a server's key history.
    Keys {
        /// The server's identifier.
        server_id: String,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List servers (public directory).
    List {
        /// The host's base URL.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

/// Runs a `vigil server` subcommand.
pub async fn run(command: ServerCommand) -> anyhow::Result<()> {
    let answer = match command {
        ServerCommand::Add {
            server_id,
            public_key,
            key,
            display_name,
            cluster_id,
            target,
        } => {
            let public_key = match (public_key, key) {
                (Some(k), _) => k,
                (None, Some(path)) => public_key_of(&super::keys::read_key(&path)?).to_base64(),
                (None, None) => anyhow::bail!("--public-key or --key is required"),
            };
            let body = serde_json::json!({
                "server_id": server_id, "public_key": public_key,
                "display_name": display_name, "cluster_id": cluster_id,
            });
            super::read_response(
                target
                    .client()?
                    .post("/v1/admin/servers")
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?
        }
        ServerCommand::Verify {
            server_id,
            revoke,
            target,
        } => {
            let path = format!("/v1/admin/servers/{server_id}/verify");
            let body = serde_json::json!({ "verified": !revoke });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Command {
            server_id,
            command,
            args,
            ttl_seconds,
            target,
        } => {
            let args: serde_json::Value =
                serde_json::from_str(&args).context("--args must be a JSON object")?;
            let path = format!("/v1/admin/servers/{server_id}/commands");
            let body =
                serde_json::json!({ "command": command, "args": args, "ttl_seconds": ttl_seconds });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::RotateKey {
            server_id,
            public_key,
            key,
            target,
        } => {
            let public_key = match (public_key, key) {
                (Some(k), _) => k,
                (None, Some(path)) => public_key_of(&super::keys::read_key(&path)?).to_base64(),
                (None, None) => anyhow::bail!("--public-key or --key is required"),
            };
            let path = format!("/v1/admin/servers/{server_id}/keys");
            let body = serde_json::json!({ "public_key": public_key });
            super::read_response(target.client()?.post(&path).json(&body).send().await?).await?
        }
        ServerCommand::Keys { server_id, target } => {
            let path = format!("/v1/admin/servers/{server_id}/keys");
            super::read_response(target.client()?.get(&path).send().await?).await?
        }
        ServerCommand::List { url } => {
            super::read_response(reqwest::get(super::endpoint(&url, "/v1/servers")).await?).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
