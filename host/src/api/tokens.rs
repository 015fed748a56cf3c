//! Per-server ingest tokens under `/v1/admin/servers/{id}/tokens`: the credentials of compat
//! clients that cannot sign (a Healthchecks ping UUID, an Uptime Kuma push token, a HomelabCmd
//! agent token).
//!
//! - `POST /v1/admin/servers/{id}/tokens` `{"kind": "ping"|"push"|"agent"}` → 201 with the
//!   token, shown this once: only its SHA-256 is stored;
//! - `GET /v1/admin/servers/{id}/tokens` → the server's tokens without their secrets;
//! - `DELETE /v1/admin/servers/{id}/tokens/{token_id}` → 200; refused from the next request on.
//!
//! A token is weaker than a signature: it travels in a URL or a header, so whoever saw one
//! speaks for the server. The default policy never grants green to a heartbeat it carried.

use super::error::ApiPath;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::auth::{authorize, authorize_read, hash};
use super::{ApiError, AppState};
use crate::clock::{format_rfc3339_ms, now_ms};
use crate::store::{IngestToken, NewIngestToken, TokenKind};

/// Characters of a token kept to recognise it in listings.
const PREFIX_CHARS: usize = 8;

/// A fresh random token of `kind`: a ping token is a lowercase UUID (version 4, 122 random
/// bits), the shape Healthchecks clients put in their URL; a push token is 32 alphanumerics
/// (≈ 190 bits), the alphabet Uptime Kuma's push URLs use; an agent token is `vga_` + 256
/// random bits in URL-safe base64. Written here rather than with the `uuid` crate: a v4 UUID
/// is 16 random bytes with two fields set, and nothing else needs the crate.
pub fn generate(kind: TokenKind) -> String {
    let mut rng = rand::rngs::OsRng;
    match kind {
        TokenKind::Ping => {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            b[6] = (b[6] & 0x0f) | 0x40; // version 4
            b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
            let h = hex::encode(b);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }
        TokenKind::Push => {
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            // 62 letters: rejection sampling keeps every one equally likely.
            let mut out = String::with_capacity(32);
            while out.len() < 32 {
                let mut byte = [0u8; 1];
                rng.fill_bytes(&mut byte);
                if usize::from(byte[0]) < ALPHABET.len() * 4 {
                    out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
                }
            }
            out
        }
        TokenKind::Agent => {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            format!("vga_{}", URL_SAFE_NO_PAD.encode(b))
        }
    }
}

/// Body of `POST /v1/admin/servers/{id}/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddToken {
    /// Which route family accepts the token.
    pub kind: TokenKind,
}

/// One token as listed (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    /// What revocation names.
    pub id: i64,
    /// `ping`, `push` or `agent`.
    pub kind: TokenKind,
    /// The token's first characters.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// Who minted it.
    pub created_by: String,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

impl From<IngestToken> for TokenView {
    fn from(t: IngestToken) -> Self {
        Self {
            id: t.id,
            kind: t.kind,
            prefix: t.prefix,
            created_at: format_rfc3339_ms(t.created_at_ms),
            created_by: t.created_by,
            revoked_at: t.revoked_at_ms.map(format_rfc3339_ms),
            revoked_by: t.revoked_by,
        }
    }
}

async fn known_server(state: &AppState, id: &str) -> Result<(), ApiError> {
    if state.engine.identity(id).is_none() && state.store.get_server(id).await?.is_none() {
        return Err(ApiError::not_found(format!("server `{id}`")));
    }
    Ok(())
}

/// `POST /v1/admin/servers/{id}/tokens` → 201 `{"id", "kind", "token", "prefix", ...}`: the
/// token is in this answer only.
pub async fn add(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers).await?;
    let add: AddToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?;
    known_server(&state, &id).await?;
    let token = generate(add.kind);
    let now = now_ms();
    let row = NewIngestToken {
        server_id: id.clone(),
        kind: add.kind,
        token_sha256: hash(&token),
        prefix: token.chars().take(PREFIX_CHARS).collect(),
        created_at_ms: now,
        created_by: who.clone(),
    };
    let token_id = state.store.insert_ingest_token(&row).await?;
    tracing::info!(target: "vigil::audit", server_id = ?id, kind = add.kind.as_str(), token_id, by = %who, "ingest token minted");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "server_id": id,
            "id": token_id,
            "kind": add.kind,
            "token": token,
            "prefix": row.prefix,
            "created_at": format_rfc3339_ms(now),
            "created_by": who,
        })),
    )
        .into_response())
}

/// `GET /v1/admin/servers/{id}/tokens` → `{"server_id", "tokens": [...]}`, oldest first,
/// without secrets.
pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&state, &headers).await?;
    known_server(&state, &id).await?;
    let tokens: Vec<TokenView> = state
        .store
        .ingest_tokens(&id)
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(serde_json::json!({"server_id": id, "tokens": tokens})).into_response())
}

/// `DELETE /v1/admin/servers/{id}/tokens/{token_id}` → 200 `{"revoked": true}`; 404 when the
/// server has no such active token.
pub async fn revoke(
    State(state): State<AppState>,
    ApiPath((id, token_id)): ApiPath<(String, i64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers).await?;
    if !state
        .store
        .revoke_ingest_token(&id, token_id, &who, now_ms())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "active token {token_id} of server `{id}`"
        )));
    }
    tracing::info!(target: "vigil::audit", server_id = ?id, token_id, by = %who, "ingest token revoked");
    Ok(Json(serde_json::json!({"server_id": id, "id": token_id, "revoked": true})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_their_clients_shapes_and_differ() {
        let ping = generate(TokenKind::Ping);
        assert_eq!(ping.len(), 36);
        assert_eq!(ping.as_bytes()[14], b'4', "{ping}");
        assert!(
            matches!(ping.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{ping}"
        );
        assert!(
            ping.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_ne!(ping, generate(TokenKind::Ping));
        let push = generate(TokenKind::Push);
        assert_eq!(push.len(), 32);
        assert!(push.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(push, generate(TokenKind::Push));
        let agent = generate(TokenKind::Agent);
        assert!(agent.starts_with("vga_") && agent.len() == 47, "{agent}");
    }
}
