//! Healthchecks-style pings (`[compat.healthchecks]`), for cron jobs that `curl` a ping URL or
//! run under runitor: `GET|POST|HEAD /ping/{uuid}` (success), `/ping/{uuid}/start`,
//! `/ping/{uuid}/fail`, `/ping/{uuid}/{exit_status}` (0 success, 1–255 fail), each with an
//! optional `?rid=` run id. The uuid is a per-server ingest token of kind `ping`; the request
//! body (the job's output) is stored as sent.
//!
//! Answers as Healthchecks does: 200 `OK` (text/plain), 404 `not found` for an unknown or
//! revoked uuid, 400 `invalid url format` for an exit status above 255 or a bad `rid`.
//! The phases become the heartbeat's `run` member (`start`, `success`, `fail`, `exit_code`,
//! `run_id`): the policy folds them like an agent's own run report.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::AppState;
use crate::ingest::Refusal;
use crate::ingest::decode::MAX_RUN_ID_CHARS;
use crate::ingest::gate::TokenClaim;
use crate::store::TokenKind;

/// Largest request body kept (Healthchecks keeps 100 kB of a ping's body too); 413 past it.
pub const MAX_PING_BODY_BYTES: usize = 100_000;

/// What a ping says about the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// `/ping/{uuid}`: the job succeeded (no exit status given).
    Success,
    /// `/ping/{uuid}/start`.
    Start,
    /// `/ping/{uuid}/fail`.
    Fail,
    /// `/ping/{uuid}/{exit_status}`: 0 success, 1–255 failure.
    Exit(u8),
}

/// What the segment after the uuid names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A ping.
    Ping(Ping),
    /// An exit status above 255 (400).
    BadExitStatus,
    /// Anything else: a `{ping_key}/{slug}` URL, not served (404).
    Slug,
}

impl Ping {
    /// What an action segment names.
    pub fn of_action(action: &str) -> Action {
        match action {
            "start" => Action::Ping(Ping::Start),
            "fail" => Action::Ping(Ping::Fail),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits
                .parse::<u8>()
                .map_or(Action::BadExitStatus, |code| Action::Ping(Ping::Exit(code))),
            _ => Action::Slug,
        }
    }

    /// The v1 `run` member of this ping.
    pub fn run(self, run_id: Option<&str>) -> Value {
        let (phase, exit_code) = match self {
            Ping::Success => ("success", None),
            Ping::Start => ("start", None),
            Ping::Fail => ("fail", None),
            Ping::Exit(0) => ("success", Some(0)),
            Ping::Exit(code) => ("fail", Some(code)),
        };
        let mut run = Map::new();
        run.insert("phase".into(), phase.into());
        if let Some(code) = exit_code {
            run.insert("exit_code".into(), code.into());
        }
        if let Some(id) = run_id {
            run.insert("run_id".into(), id.into());
        }
        Value::Object(run)
    }
}

/// A `rid` Healthchecks accepts here: 1 to 64 letters, digits and `-` (a UUID is 36).
fn valid_run_id(rid: &str) -> bool {
    (1..=MAX_RUN_ID_CHARS).contains(&rid.len())
        && rid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A refusal in Healthchecks' words.
fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = match refusal.status {
        404 => "not found",
        429 => "rate limited",
        413 => "request body too large",
        400 | 422 => "invalid url format",
        403 => "forbidden",
        409 => "conflict",
        _ => "service unavailable",
    };
    let mut response = text(status, body);
    if let Some((name, value)) = super::retry_after(refusal)
        && let Ok(value) = value.parse()
    {
        response.headers_mut().insert(name, value);
    }
    response
}

/// `GET|POST|HEAD /ping/{uuid}`: success.
pub async fn ping(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    request: Request,
) -> Response {
    handle(state, uuid, Ping::Success, request).await
}

/// `GET|POST|HEAD /ping/{uuid}/{action}`: `start`, `fail` or an exit status.
pub async fn ping_action(
    State(state): State<AppState>,
    Path((uuid, action)): Path<(String, String)>,
    request: Request,
) -> Response {
    match Ping::of_action(&action) {
        Action::Ping(ping) => handle(state, uuid, ping, request).await,
        // `/ping/{ping_key}/{slug}` (per-cluster ping keys) is not served.
        Action::Slug => {
            if !state.config.current().compat.healthchecks.enabled {
                return super::disabled().into_response();
            }
            text(StatusCode::NOT_FOUND, "not found")
        }
        Action::BadExitStatus => {
            if !state.config.current().compat.healthchecks.enabled {
                return super::disabled().into_response();
            }
            text(StatusCode::BAD_REQUEST, "invalid url format")
        }
    }
}

async fn handle(state: AppState, uuid: String, ping: Ping, request: Request) -> Response {
    if !state.config.current().compat.healthchecks.enabled {
        return super::disabled().into_response();
    }
    let rid = url_query(request.uri(), "rid");
    if rid.as_deref().is_some_and(|r| !valid_run_id(r)) {
        return text(StatusCode::BAD_REQUEST, "invalid url format");
    }
    let claim = TokenClaim {
        kind: TokenKind::Ping,
        token: &uuid,
    };
    let admitted = state
        .gate
        .admit_token(request, claim, MAX_PING_BODY_BYTES, |_body| {
            let mut members = Map::new();
            // Pinging at all says the job's host is up; the run says how the job went.
            members.insert("status".into(), "online".into());
            members.insert("run".into(), ping.run(rid.as_deref()));
            members.insert("payload".into(), json!({"source": "healthchecks"}));
            Ok(members)
        })
        .await;
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    match super::submit(&state, admitted).await {
        Ok(_) => text(StatusCode::OK, "OK"),
        Err(refusal) => refused(&refusal),
    }
}

/// The first value of `name` in the request's URL query (`+` and `%xx` decoded); none when
/// the query does not parse.
pub(crate) fn url_query(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_run_phases() {
        assert_eq!(Ping::of_action("start"), Action::Ping(Ping::Start));
        assert_eq!(Ping::of_action("fail"), Action::Ping(Ping::Fail));
        assert_eq!(Ping::of_action("0"), Action::Ping(Ping::Exit(0)));
        assert_eq!(Ping::of_action("255"), Action::Ping(Ping::Exit(255)));
        assert_eq!(Ping::of_action("256"), Action::BadExitStatus);
        assert_eq!(
            Ping::of_action("99999999999999999999"),
            Action::BadExitStatus
        );
        assert_eq!(Ping::of_action("backup-db"), Action::Slug);
        assert_eq!(
            Ping::Exit(3).run(Some("r1")),
            json!({"phase": "fail", "exit_code": 3, "run_id": "r1"})
        );
        assert_eq!(
            Ping::Exit(0).run(None),
            json!({"phase": "success", "exit_code": 0})
        );
        assert_eq!(Ping::Success.run(None), json!({"phase": "success"}));
        assert!(valid_run_id("5d5c1dd4-6a55-4c31-9c0d-1b2a3c4d5e6f"));
        assert!(!valid_run_id("a b") && !valid_run_id("") && !valid_run_id(&"a".repeat(65)));
    }
}
