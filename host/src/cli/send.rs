//! `vigil send`: sign and post one heartbeat, as an agent does.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value};

use crate::clock::format_rfc3339_ms;
use crate::ingest::signature::sign_body;

/// Arguments of `vigil send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The host's base URL.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The agent's private key file (from `vigil keygen`).
    #[arg(long, default_value = "agent.key")]
    pub key: PathBuf,
    /// The server this agent reports for.
    #[arg(long)]
    pub server_id: String,
    /// The version of the key.
    #[arg(long, default_value_t = 1)]
    pub key_version: u32,
    /// Agent-claimed status.
    #[arg(long, default_value = "online")]
    pub status: String,
    /// Map or world name.
    #[arg(long)]
    pub map_name: Option<String>,
    /// Current players.
    #[arg(long)]
    pub players_current: Option<u32>,
    /// Player capacity.
    #[arg(long)]
    pub players_capacity: Option<u32>,
    /// Agent software version.
    #[arg(long)]
    pub agent_version: Option<String>,
    /// Agent mode (`emergency`, `idle`, `sleep`).
    #[arg(long)]
    pub mode: Option<String>,
    /// Declared interval between heartbeats, seconds.
    #[arg(long)]
    pub interval_seconds: Option<u32>,
    /// Uptime of the agent's host, seconds.
    #[arg(long)]
    pub uptime_seconds: Option<u64>,
    /// A metric, `name=value` (repeatable).
    #[arg(long = "metric", value_parser = parse_metric)]
    pub metrics: Vec<(String, f64)>,
}

fn parse_metric(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text.split_once('=').ok_or("expected name=value")?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    Ok((name.to_owned(), value))
}

/// Builds the body an agent would send (without `signature`).
pub fn body_of(args: &SendArgs, timestamp_ms: i64) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("server_id".into(), args.server_id.clone().into());
    body.insert("key_version".into(), args.key_version.into());
    body.insert("timestamp".into(), format_rfc3339_ms(timestamp_ms).into());
    body.insert("status".into(), args.status.clone().into());
    let optional = [
        ("map_name", args.map_name.clone().map(Value::from)),
        ("players_current", args.players_current.map(Value::from)),
        ("players_capacity", args.players_capacity.map(Value::from)),
        ("agent_version", args.agent_version.clone().map(Value::from)),
        ("mode", args.mode.clone().map(Value::from)),
        ("interval_seconds", args.interval_seconds.map(Value::from)),
        ("uptime_seconds", args.uptime_seconds.map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            body.insert(name.into(), value);
        }
    }
    if !args.metrics.is_empty() {
        let metrics: Map<String, Value> = args
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect();
        body.insert("metrics".into(), Value::Object(metrics));
    }
    body
}

/// Signs and posts one heartbeat; prints the host's answer.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let key = super::keys::read_key(&args.key)?;
    let mut body = body_of(&args, crate::clock::now_ms());
    let signature = sign_body(&key, &body)?;
    body.insert("signature".into(), signature.into());
    let url = format!("{}/v1/agent/heartbeat", args.url.trim_end_matches('/'));
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
