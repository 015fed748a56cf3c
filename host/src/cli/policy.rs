//! `vigil policy …`: ship versions through the admin API (push, activate, rollback), list
//! them, and sign components as an author.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::server::AdminTarget;
use crate::api::policies::SIGNATURE_HEADER;
use crate::policy::{digest_of, signing};

/// `vigil policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Upload a component (validated and stored; `--activate` also makes it active).
    Push {
        /// The `.wasm` component.
        file: PathBuf,
        /// Its signature file (default: `FILE.sig` when it exists).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Activate it once stored.
        #[arg(long)]
        activate: bool,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Activate a stored version: `sha256:<hex>` or `name@version`.
    Activate {
        /// Which version.
        policy: String,
        /// Recorded in the activation log.
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Activate the version that was active before the current one.
    Rollback {
        /// Recorded in the activation log.
        #[arg(long)]
        reason: Option<String>,
        /// Admin API.
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List stored versions, the active one and recent activations (public).
    List {
        /// The host's base URL.
        #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Sign a component as its author: writes `FILE.sig` (ed25519 over the digest).
    Sign {
        /// The author's private key (as written by `vigil keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The `.wasm` component.
        file: PathBuf,
    },
}

fn client(target: &AdminTarget, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
    let token = target
        .token
        .as_deref()
        .context("an admin token is needed: --token or VIGIL_ADMIN_TOKEN")?;
    Ok(reqwest::Client::new()
        .post(format!("{}{path}", target.url.trim_end_matches('/')))
        .bearer_auth(token))
}

fn sig_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// Runs a `vigil policy` subcommand.
pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    let answer = match command {
        PolicyCommand::Push {
            file,
            signature,
            activate,
            target,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let signature = match signature {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => std::fs::read_to_string(sig_path(&file)).ok(),
            };
            let path = if activate {
                "/v1/admin/policies?activate=true"
            } else {
                "/v1/admin/policies"
            };
            let mut request = client(&target, path)?
                .header("content-type", "application/wasm")
                .body(bytes);
            if let Some(sig) = signature {
                request = request.header(SIGNATURE_HEADER, sig.trim());
            }
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::Activate {
            policy,
            reason,
            target,
        } => {
            let body = serde_json::json!({ "policy": policy, "reason": reason });
            let request = client(&target, "/v1/admin/policies/activate")?.json(&body);
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::Rollback { reason, target } => {
            let body = serde_json::json!({ "reason": reason });
            let request = client(&target, "/v1/admin/policies/rollback")?.json(&body);
            super::read_response(request.send().await?).await?
        }
        PolicyCommand::List { url } => {
            let url = format!("{}/v1/policies", url.trim_end_matches('/'));
            super::read_response(reqwest::get(&url).await?).await?
        }
        PolicyCommand::Sign { key, file } => {
            let key = super::keys::read_key(&key)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let digest = digest_of(&bytes);
            let out = sig_path(&file);
            std::fs::write(&out, format!("{}\n", signing::sign(&key, &digest)))
                .with_context(|| format!("writing {}", out.display()))?;
            serde_json::json!({
                "signature": out.display().to_string(),
                "digest": digest,
                "signer": signing::signer_of(&key),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
