//! Signing in to the dashboard with the admin token or an API key of either scope, and the
//! admin forms that act through the existing admin API.
//!
//! - `GET /sign-in` sets a pre-session cookie `vigil_signin` (random, `HttpOnly`,
//!   `SameSite=Strict`) and renders a form carrying the same value as its CSRF token;
//!   `POST /sign-in` (`key`, `csrf`) checks both, checks the key like the admin API does
//!   (read scope at least) and opens a session: cookie `vigil_session` (256 random bits,
//!   `HttpOnly`, `SameSite=Strict`, `Path=/`, 12 h), redirect to `/`.
//! - Every form of a signed-in page carries the session's CSRF token (random, compared in
//!   constant time); `POST /sign-out` ends the session.
//! - `POST /servers/{id}/pause|resume` and `POST /policies/rollback|activate|shadow|upload` run the
//!   admin API's own handlers with the session's credential (so scopes, validation, audit rows
//!   naming the acting key and refusals are exactly the API's), then redirect back.
//!
//! Sessions live in this process's memory (at most [`MAX_SESSIONS`], SHA-256 of the cookie
//! as the key): a restart signs everyone out and, with several hosts behind one address, a
//! session is valid on the host that opened it only. The credential is re-checked on every
//! action, so a revoked key stops acting at once.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::escape;
use crate::api::{ApiError, AppState};
use crate::clock::now_ms;

/// Most open sessions; a sign-in past that is refused (503) until some expire.
pub const MAX_SESSIONS: usize = 10_000;
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// The session cookie.
pub const SESSION_COOKIE: &str = "vigil_session";
/// The pre-session cookie of the sign-in form.
pub const SIGN_IN_COOKIE: &str = "vigil_signin";

/// Who is signed in on a request.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// `admin` or `key:<name>`.
    pub who: String,
    /// Whether the credential has the `admin` scope (the admin forms are shown).
    pub admin: bool,
    /// This session's CSRF token.
    pub csrf: String,
}

#[derive(Clone)]
struct Session {
    credential: String,
    viewer: Viewer,
    expires_at_ms: i64,
}

/// The open sessions of this process.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key_of(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn same(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

impl Sessions {
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let now = now_ms();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let key = key_of(id);
        match open.get(&key) {
            Some(s) if s.expires_at_ms > now => Some(s.clone()),
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Who is signed in on this request, if anyone.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        self.session(headers).map(|s| s.viewer)
    }

    fn open(&self, credential: String, viewer: Viewer) -> Option<String> {
        let now = now_ms();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, s| s.expires_at_ms > now);
            if open.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let id = random_token();
        open.insert(
            key_of(&id),
            Session {
                credential,
                viewer,
                expires_at_ms: now + SESSION_MS,
            },
        );
        Some(id)
    }

    fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(&key_of(id));
        }
    }

    /// The session's credential as an `Authorization` header, when the form's CSRF token is
    /// the session's; else 403 `csrf_mismatch` (or 401 `not_signed_in`).
    fn act(&self, headers: &HeaderMap, csrf: &str) -> Result<HeaderMap, ApiError> {
        let Some(session) = self.session(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not_signed_in",
                "sign in first",
            ));
        };
        if !same(&session.viewer.csrf, csrf) {
            tracing::warn!(target: "vigil::audit", who = %session.viewer.who, "dashboard form with a wrong CSRF token");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_mismatch",
                "this form is not from this session; reload the page and try again",
            ));
        }
        let mut out = HeaderMap::new();
        let value =
            HeaderValue::from_str(&format!("Bearer {}", session.credential)).map_err(|_| {
                ApiError::new(StatusCode::UNAUTHORIZED, "not_signed_in", "sign in first")
            })?;
        out.insert(header::AUTHORIZATION, value);
        Ok(out)
    }
}

fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// The navigation bar: sign-in link, or who is signed in and a sign-out form.
pub fn nav(viewer: Option<&Viewer>) -> String {
    let mut html = String::from(
        "<nav><a href=\"/\">Servers</a> \u{00b7} <a href=\"/policies\">Policies</a> \u{00b7} ",
    );
    match viewer {
        None => html.push_str("<a href=\"/sign-in\">Sign in</a>"),
        Some(v) => html.push_str(&format!(
            "Signed in as <strong>{}</strong> ({}) <form class=\"inline\" method=\"post\" \
             action=\"/sign-out\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            escape(&v.who),
            if v.admin { "admin" } else { "read only" },
            escape(&v.csrf),
        )),
    }
    html.push_str("</nav>");
    html
}

/// The hidden CSRF field of a form.
pub fn csrf_field(viewer: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(&viewer.csrf)
    )
}

/// An HTML page for a refused form (the problem's status, code and detail, a way back).
fn refused(e: ApiError, back: &str) -> Response {
    let body = format!(
        "<h1>Not done</h1><p role=\"alert\">{} ({}): {}</p><p><a href=\"{}\">Back</a></p>",
        e.status.as_u16(),
        e.code,
        escape(&e.detail),
        escape(back),
    );
    let mut response = super::dashboard::page("Not done", &body, false, None);
    *response.status_mut() = e.status;
    response
}

/// `GET /sign-in`.
pub async fn sign_in_page(headers: HeaderMap, State(state): State<AppState>) -> Response {
    let viewer = state.sessions.viewer(&headers);
    let token = random_token();
    let body = format!(
        "<h1>Sign in</h1><p>With the admin token or an API key (<code>vgl_…</code>). \
         A read key shows the pages behind <code>[directory] require_key</code>; an admin key \
         also shows the admin forms.</p>\
         <form method=\"post\" action=\"/sign-in\" class=\"stack\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <label>API key or admin token<input type=\"password\" name=\"key\" \
         autocomplete=\"current-password\" required autofocus></label>\
         <button type=\"submit\">Sign in</button></form>"
    );
    let mut response = super::dashboard::page("Sign in", &body, false, viewer.as_ref());
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, &token, "/sign-in", 600),
    );
    response
}

/// The sign-in form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignIn {
    key: String,
    csrf: String,
}

/// `POST /sign-in`.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(expected, &form.csrf) {
        return refused(
            ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_mismatch",
                "this sign-in form is stale or not from this site; open it again",
            ),
            "/sign-in",
        );
    }
    let mut with_key = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", form.key.trim())) else {
        return refused(
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not a valid key"),
            "/sign-in",
        );
    };
    with_key.insert(header::AUTHORIZATION, value);
    let who = match crate::api::auth::authorize_read(&state, &with_key).await {
        Ok(who) => who,
        Err(e) => return refused(e, "/sign-in"),
    };
    let admin = crate::api::auth::authorize(&state, &with_key).await.is_ok();
    let viewer = Viewer {
        who: who.clone(),
        admin,
        csrf: random_token(),
    };
    let Some(id) = state.sessions.open(form.key.trim().to_owned(), viewer) else {
        return refused(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "too many open sessions; try again later",
            ),
            "/sign-in",
        );
    };
    tracing::info!(target: "vigil::audit", who = %who, "dashboard sign-in");
    let mut response = see_other("/");
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &id, "/", SESSION_MS / 1000),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, "", "/sign-in", 0),
    );
    response
}

/// A form that only carries the CSRF token (and maybe a reason).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /sign-out`.
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(e) = state.sessions.act(&headers, &form.csrf) {
        return refused(e, "/");
    }
    state.sessions.close(&headers);
    let mut response = see_other("/");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", "/", 0));
    response
}

fn reason_body(reason: Option<String>) -> axum::body::Bytes {
    match reason.filter(|r| !r.trim().is_empty()) {
        Some(r) => serde_json::to_vec(&serde_json::json!({ "reason": r }))
            .unwrap_or_default()
            .into(),
        None => axum::body::Bytes::new(),
    }
}

/// `POST /servers/{id}/pause` and `/resume` (`action`): the admin API's handler with the
/// session's credential, then back to the server's page.
pub async fn server_action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = format!("/servers/{}", super::dashboard::percent(&id));
    let auth = match state.sessions.act(&headers, &form.csrf) {
        Ok(auth) => auth,
        Err(e) => return refused(e, &back),
    };
    let done = match action.as_str() {
        "pause" => {
            crate::api::manage::pause(
                State(state.clone()),
                crate::api::error::ApiPath(id),
                auth,
                reason_body(form.reason),
            )
            .await
        }
        "resume" => {
            crate::api::manage::resume(State(state.clone()), crate::api::error::ApiPath(id), auth)
                .await
        }
        _ => Err(ApiError::not_found("this action")),
    };
    match done {
        Ok(_) => see_other(&back),
        Err(e) => refused(e, &back),
    }
}

/// `POST /policies/rollback`: the admin API's rollback with the session's credential.
pub async fn policy_rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let auth = match state.sessions.act(&headers, &form.csrf) {
        Ok(auth) => auth,
        Err(e) => return refused(e, "/policies"),
    };
    match crate::api::policies::rollback(State(state.clone()), auth, reason_body(form.reason)).await
    {
        Ok(_) => see_other("/policies"),
        Err(e) => refused(e, "/policies"),
    }
}

/// The activate and shadow forms: a stored version (digest or `name@version`) and a reason.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PolicyForm {
    csrf: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// The shadow form's `stop` button.
    #[serde(default)]
    stop: Option<String>,
}

/// `POST /policies/activate`: the admin API's activation with the session's credential.
pub async fn policy_activate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PolicyForm>,
) -> Response {
    let auth = match state.sessions.act(&headers, &form.csrf) {
        Ok(auth) => auth,
        Err(e) => return refused(e, "/policies"),
    };
    let request = crate::api::policies::Activate {
        policy: form.policy.unwrap_or_default(),
        reason: form
            .reason
            .filter(|r| !r.trim().is_empty())
            .or_else(|| Some("dashboard".into())),
    };
    match crate::api::policies::activate(State(state.clone()), auth, Ok(axum::Json(request))).await
    {
        Ok(_) => see_other("/policies"),
        Err(e) => refused(e, "/policies"),
    }
}

/// `POST /policies/shadow`: starts a shadow of a stored version (or stops it, `stop`).
pub async fn policy_shadow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PolicyForm>,
) -> Response {
    let auth = match state.sessions.act(&headers, &form.csrf) {
        Ok(auth) => auth,
        Err(e) => return refused(e, "/policies"),
    };
    let policy = if form.stop.is_some() {
        None
    } else {
        form.policy
    };
    let request = crate::api::policies::ShadowRequest { policy };
    match crate::api::policies::start_shadow(State(state.clone()), auth, Ok(axum::Json(request)))
        .await
    {
        Ok(_) => see_other("/policies"),
        Err(e) => refused(e, "/policies"),
    }
}

/// `POST /policies/upload` (`multipart/form-data`: `csrf`, `component` (the file),
/// optional `signature` and `activate` = `yes`): the admin API's upload with the session's
/// credential. Nothing of the body is read before the session is known to be an admin's.
pub async fn policy_upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    if !state.sessions.viewer(&headers).is_some_and(|v| v.admin) {
        return refused(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not_signed_in",
                "sign in with an admin key first",
            ),
            "/policies",
        );
    }
    let bad = |detail: String| refused(ApiError::invalid("invalid_body", detail), "/policies");
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => return bad(e.body_text()),
    };
    let (mut csrf, mut component, mut signature, mut activate) =
        (String::new(), axum::body::Bytes::new(), None, false);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return bad(e.body_text()),
        };
        let name = field.name().unwrap_or("").to_owned();
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return bad(e.body_text()),
        };
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match name.as_str() {
            "csrf" => csrf = text(),
            "component" => component = bytes.clone(),
            "signature" => signature = Some(text()).filter(|s| !s.is_empty()),
            "activate" => activate = text() == "yes",
            _ => {}
        }
    }
    let mut auth = match state.sessions.act(&headers, &csrf) {
        Ok(auth) => auth,
        Err(e) => return refused(e, "/policies"),
    };
    if let Some(signature) = signature {
        match HeaderValue::from_str(&signature) {
            Ok(v) => {
                auth.insert(crate::api::policies::SIGNATURE_HEADER, v);
            }
            Err(_) => return bad("the signature is not header text".into()),
        }
    }
    let query = crate::api::policies::UploadQuery { activate };
    match crate::api::policies::upload(
        State(state.clone()),
        auth,
        Ok(axum::extract::Query(query)),
        component,
    )
    .await
    {
        Ok(_) => see_other("/policies"),
        Err(e) => refused(e, "/policies"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = with_cookie("a=1; vigil_session=abc; vigil_session_x=no");
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "vigil"), None);
    }

    #[test]
    fn a_session_acts_only_with_its_csrf_token_and_ends_on_close() {
        let sessions = Sessions::default();
        let viewer = Viewer {
            who: "key:ops".into(),
            admin: true,
            csrf: "token-1".into(),
        };
        let id = sessions.open("vgl_secret".into(), viewer).unwrap();
        let h = with_cookie(&format!("{SESSION_COOKIE}={id}"));
        assert_eq!(sessions.viewer(&h).unwrap().who, "key:ops");
        assert_eq!(sessions.act(&h, "wrong").unwrap_err().code, "csrf_mismatch");
        assert_eq!(
            sessions.act(&h, "token-1").unwrap()[header::AUTHORIZATION],
            "Bearer vgl_secret"
        );
        let other = with_cookie(&format!("{SESSION_COOKIE}=guess"));
        assert_eq!(
            sessions.act(&other, "token-1").unwrap_err().code,
            "not_signed_in"
        );
        sessions.close(&h);
        assert!(sessions.viewer(&h).is_none());
    }
}
