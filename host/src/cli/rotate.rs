//! `vigil rotate-key`: the agent asks the host to move it to a new key, signing the request with
//! its current key (`POST /v1/agent/rotate-key`; see [`crate::ingest::rotation`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value};

use crate::clock::format_rfc3339_ms;
use crate::ingest::rotation;
use crate::ingest::signature::public_key_of;

/// Arguments of `vigil rotate-key`.
#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// The host's base URL.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The agent's current private key file.
    #[arg(long, default_value = "agent.key")]
    pub key: PathBuf,
    /// The new private key file (from `vigil keygen`); its public half is sent.
    #[arg(long)]
    pub next_key: PathBuf,
    /// The server this agent reports for.
    #[arg(long)]
    pub server_id: String,
    /// The current key's version.
    #[arg(long, default_value_t = 1)]
    pub key_version: u32,
}

/// Signs and posts the rotation; prints the host's answer (the new `key_version`).
pub async fn run(args: RotateKeyArgs) -> anyhow::Result<()> {
    let current = super::keys::read_key(&args.key)?;
    let next = super::keys::read_key(&args.next_key)?;
    let mut body = Map::new();
    body.insert("server_id".into(), args.server_id.clone().into());
    body.insert("key_version".into(), args.key_version.into());
    body.insert(
        "timestamp".into(),
        format_rfc3339_ms(crate::clock::now_ms()).into(),
    );
    body.insert(
        "next_public_key".into(),
        public_key_of(&next).to_base64().into(),
    );
    let signature = rotation::sign(&current, &body)?;
    body.insert("signature".into(), Value::from(signature));
    let url = format!("{}/v1/agent/rotate-key", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let answer = super::read_response(response).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
