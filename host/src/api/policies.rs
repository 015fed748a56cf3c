//! Policy routes: the public list (`GET /v1/policies`) and the admin upload, activate and
//! rollback routes. They only translate HTTP; the registry validates and the engine swaps.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::authorize;
use super::{ApiError, AppState};
use crate::engine::WriteError;
use crate::policy::PolicyError;
use crate::policy::registry::RegistryError;
use crate::policy::signing::SigningError;
use crate::store::StoreError;

/// The header carrying a detached signature (the text of a `.sig` file) on upload.
pub const SIGNATURE_HEADER: &str = "vigil-policy-signature";

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let detail = e.to_string();
        match e {
            RegistryError::Invalid(PolicyError::Params(_)) => {
                Self::invalid("policy_params", detail)
            }
            RegistryError::Invalid(_) => Self::invalid("policy_invalid", detail),
            RegistryError::Signature(SigningError::Unsigned) => {
                Self::new(StatusCode::FORBIDDEN, "policy_unsigned", detail)
            }
            RegistryError::Signature(SigningError::Untrusted(_)) => {
                Self::new(StatusCode::FORBIDDEN, "policy_signature_untrusted", detail)
            }
            RegistryError::Signature(SigningError::Malformed(_)) => {
                Self::invalid("policy_signature_malformed", detail)
            }
            RegistryError::Smoke(_) => Self::invalid("policy_smoke_failed", detail),
            RegistryError::FileName { .. } => Self::invalid("policy_file_name", detail),
            RegistryError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "policy_not_found", detail)
            }
            RegistryError::NoPrevious => {
                Self::new(StatusCode::CONFLICT, "no_previous_policy", detail)
            }
            RegistryError::Store(StoreError::Conflict(what)) => {
                Self::new(StatusCode::CONFLICT, "policy_version_taken", what)
            }
            RegistryError::Store(e) => e.into(),
            RegistryError::Engine(e) => WriteError::from(e).into(),
        }
    }
}

/// `GET /v1/policies` — stored versions, the active one, recent activations and refusals.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let active = state.engine.policy().description().clone();
    let policies = state.store.list_policies().await?;
    let activations = state.store.activations(50).await?;
    let stats = state.engine.stats();
    Ok(Json(json!({
        "active": active,
        "policies": policies,
        "activations": activations,
        "refused": state.policies.catalog().refusals(),
        "rebuild": {
            "pending": stats.rebuilds_pending,
            "rebuilt": stats.snapshots_rebuilt,
        },
    }))
    .into_response())
}

/// Query of `POST /v1/admin/policies`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Activate the version once stored.
    #[serde(default)]
    pub activate: bool,
}

/// `POST /v1/admin/policies` — body: the component bytes; optional signature header.
/// 201 with the stored version (and the activation, when `?activate=true`).
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    if body.is_empty() {
        return Err(ApiError::invalid(
            "invalid_body",
            "the body must be the component's bytes",
        ));
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::invalid(
                    "policy_signature_malformed",
                    "the signature header is not text",
                )
            })
        })
        .transpose()?;
    let validated = state
        .policies
        .register(body.to_vec(), signature.as_deref(), &who)
        .await?;
    let activation = if query.activate {
        Some(
            state
                .policies
                .activate_loaded(
                    validated.policy.clone(),
                    &who,
                    "uploaded with ?activate=true",
                )
                .await?,
        )
    } else {
        None
    };
    tracing::info!(digest = %validated.policy.digest(), "policy uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "policy": validated.policy.description(),
            "signer": validated.signer,
            "activation": activation,
        })),
    )
        .into_response())
}

/// Body of `POST /v1/admin/policies/activate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// `sha256:<hex>` or `name@version` of a stored version.
    pub policy: String,
    /// Recorded in the activation log.
    pub reason: Option<String>,
}

/// `POST /v1/admin/policies/activate` → 200 with the activation.
pub async fn activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Activate>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers).await?;
    let Json(request) = body.map_err(|e| ApiError::invalid("invalid_body", e.body_text()))?;
    let reason = request.reason.unwrap_or_else(|| "admin API".into());
    let outcome = state
        .policies
        .activate(&request.policy, &who, &reason)
        .await?;
    Ok(Json(outcome).into_response())
}

/// Optional body of `POST /v1/admin/policies/rollback`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Recorded in the activation log.
    pub reason: Option<String>,
}

/// `POST /v1/admin/policies/rollback` → 200 with the activation of the previous version.
pub async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers).await?;
    let request: Rollback = if body.is_empty() {
        Rollback::default()
    } else {
        // JSON `null` is no body too.
        serde_json::from_slice::<Option<Rollback>>(&body)
            .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?
            .unwrap_or_default()
    };
    let reason = request.reason.unwrap_or_else(|| "admin rollback".into());
    let outcome = state.policies.rollback(&who, &reason).await?;
    Ok(Json(outcome).into_response())
}

/// Body of `POST /v1/admin/policies/shadow`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// `sha256:<hex>` or `name@version` of a stored version; `null` stops the shadow.
    pub policy: Option<String>,
}

/// `POST /v1/admin/policies/shadow` → 200 with the (fresh) report, or 204 when stopped.
pub async fn start_shadow(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ShadowRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&state, &headers).await?;
    let Json(request) = body.map_err(|e| ApiError::invalid("invalid_body", e.body_text()))?;
    state.policies.shadow(request.policy.as_deref()).await?;
    tracing::info!(target: "vigil::audit", policy = ?request.policy, by = %who, "shadow set");
    Ok(match state.engine.shadow_report() {
        Some(report) => Json(report).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `GET /v1/policies/shadow` — agreement and differences of the running shadow so far.
pub async fn shadow_report(State(state): State<AppState>) -> Result<Response, ApiError> {
    state
        .engine
        .shadow_report()
        .map(|r| Json(r).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_shadow",
                "no shadow evaluation is running (POST /v1/admin/policies/shadow)",
            )
        })
}
