//! The floor server: what any signed-heartbeat collector must spend per request, and nothing
//! else, so `vigil bench` can measure the host beside it on the same machine.
//!
//! `POST /v1/agent/heartbeat` is read whole, parsed with `serde_json`, canonicalised (JCS, the
//! host's own [`signed_message`]) and verified with `verify_strict` against the key registered
//! for its `server_id`, then answered 202 (401 when the signature does not verify, 422 when
//! it cannot be read). No storage, no policy, no replay rules. `POST /v1/admin/servers`
//! (`{"server_id", "public_key"}`, any bearer token) registers a key in memory, and `GET
//! /readyz` answers 200, so `vigil bench --url` drives it exactly as a host:
//!
//! ```text
//! cargo run --release -p vigil --example floor -- 127.0.0.1:9090 &
//! vigil bench --url http://127.0.0.1:9090 --token x --servers 4000 --connections 64 --duration 10
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::Value;
use vigil::crypto::PublicKey;
use vigil::ingest::signature::{parse_signature, signed_message};

type Keys = Arc<RwLock<HashMap<String, PublicKey>>>;

async fn register(State(keys): State<Keys>, body: Bytes) -> StatusCode {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    let (Some(id), Some(key)) = (value["server_id"].as_str(), value["public_key"].as_str()) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    let Ok(key) = PublicKey::from_base64(key) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    match keys.write() {
        Ok(mut keys) => {
            keys.insert(id.to_owned(), key);
            StatusCode::CREATED
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn heartbeat(State(keys): State<Keys>, body: Bytes) -> StatusCode {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    let key = body
        .get("server_id")
        .and_then(Value::as_str)
        .and_then(|id| keys.read().ok()?.get(id).cloned());
    let signature = body
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| parse_signature(s).ok());
    let (Some(key), Some(signature), Ok(message)) = (key, signature, signed_message(&body)) else {
        return StatusCode::UNAUTHORIZED;
    };
    // `PublicKey::verify` is `verify_strict`, as in the host.
    match key.verify(&message, &signature) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let keys: Keys = Arc::default();
    let app = Router::new()
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/admin/servers", post(register))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .with_state(keys);
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("floor server on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
