//! Badges: `/badge/{id}/{kind}.svg` for `status`, `uptime` (the policy's 24 h figure),
//! `confidence` and `quality`, and `/badge/{id}/score/{name}.svg` for any named score the
//! policy returns; `?format=shields` answers the shields.io endpoint JSON instead
//! (`schemaVersion`, `label`, `message`, `color`). Every answer is cacheable for a minute.
//! An unknown server, kind or score is a grey `unknown` badge (200), never an error page, and
//! the requested text is never echoed (only stored names are drawn).
//!
//! Hand-written: a flat badge is one fixed template (two rectangles, two texts); the width of
//! each text is estimated from per-character Verdana 11 px advances, as shields does.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::escape;
use crate::api::AppState;
use crate::store::ServerRecord;

/// How long a badge may be cached (browsers, CDNs, GitHub's image proxy).
pub const CACHE_CONTROL: &str = "public, max-age=60, stale-while-revalidate=60";

/// A badge's text and colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Badge {
    /// Left text.
    pub label: String,
    /// Right text.
    pub message: String,
    /// shields.io colour name (`brightgreen`, `green`, `yellowgreen`, `yellow`, `orange`,
    /// `red`, `lightgrey`).
    pub color: &'static str,
}

impl Badge {
    fn unknown(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            message: "unknown".to_owned(),
            color: "lightgrey",
        }
    }
}

/// The hex colour of a shields colour name.
fn hex(color: &str) -> &'static str {
    match color {
        "brightgreen" => "#4c1",
        "green" => "#97ca00",
        "yellowgreen" => "#a4a61d",
        "yellow" => "#dfb317",
        "orange" => "#fe7d37",
        "red" => "#e05d44",
        _ => "#9f9f9f",
    }
}

/// The colour of a 0–100 figure.
fn percent_color(value: f64) -> &'static str {
    match value {
        v if v >= 99.0 => "brightgreen",
        v if v >= 95.0 => "green",
        v if v >= 90.0 => "yellowgreen",
        v if v >= 75.0 => "yellow",
        v if v >= 50.0 => "orange",
        _ => "red",
    }
}

/// A figure with at most one decimal, without a trailing `.0`.
fn figure(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

/// What a server's badge of `kind` says.
pub fn badge_for(record: Option<&ServerRecord>, kind: &str) -> Badge {
    let label = match kind {
        "status" | "uptime" | "confidence" | "quality" => kind,
        _ => return Badge::unknown("vigil"),
    };
    let Some(record) = record else {
        return Badge::unknown(label);
    };
    if record.admin.retired_at_ms.is_some() {
        return Badge {
            label: label.to_owned(),
            message: "retired".to_owned(),
            color: "lightgrey",
        };
    }
    let s = &record.snapshot;
    let (message, color) = match kind {
        "status" if record.admin.paused_at_ms.is_some() => ("paused".to_owned(), "lightgrey"),
        "status" => (
            s.status.clone(),
            match s.status.as_str() {
                "online" => "brightgreen",
                "offline" => "red",
                _ => "lightgrey",
            },
        ),
        "confidence" => (
            s.confidence.clone(),
            match s.confidence.as_str() {
                "green" => "brightgreen",
                "yellow" => "yellow",
                "red" => "red",
                _ => "lightgrey",
            },
        ),
        "uptime" => (
            format!("{}%", figure(s.uptime_percent)),
            percent_color(s.uptime_percent),
        ),
        _ => (figure(s.quality_score), percent_color(s.quality_score)),
    };
    Badge {
        label: label.to_owned(),
        message,
        color,
    }
}

/// What a server's badge of the named score says (`unknown` when it has no such score).
pub fn score_badge(record: Option<&ServerRecord>, name: &str) -> Badge {
    match record.and_then(|r| r.snapshot.scores.iter().find(|(n, _)| *n == name)) {
        Some((name, value)) => Badge {
            label: name.to_owned(),
            message: figure(value),
            color: "blue",
        },
        None => Badge::unknown("score"),
    }
}

/// Verdana 11 px advance of a character, in tenths of a pixel (approximate).
fn advance(c: char) -> u32 {
    match c {
        'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '!' | '|' | '\'' => 35,
        'f' | 't' | 'r' | 'I' | ' ' | '(' | ')' | '[' | ']' | '-' | '/' => 45,
        'm' | 'w' => 100,
        'M' | 'W' | '@' | '%' => 110,
        'A'..='Z' => 75,
        '0'..='9' => 70,
        _ => 65,
    }
}

fn text_width(text: &str) -> u32 {
    text.chars().map(advance).sum::<u32>().div_ceil(10)
}

/// The flat SVG of a badge.
pub fn svg(badge: &Badge) -> String {
    let (label, message) = (escape(&badge.label), escape(&badge.message));
    let lw = text_width(&badge.label) + 10;
    let mw = text_width(&badge.message) + 10;
    let w = lw + mw;
    let color = if badge.color == "blue" {
        "#007ec6"
    } else {
        hex(badge.color)
    };
    let (lx, mx) = (lw * 5, lw * 10 + mw * 5);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" \
         aria-label=\"{label}: {message}\"><title>{label}: {message}</title>\
         <linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" \
         stop-opacity=\".1\"/><stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
         <clipPath id=\"r\"><rect width=\"{w}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
         <g clip-path=\"url(#r)\"><rect width=\"{lw}\" height=\"20\" fill=\"#555\"/>\
         <rect x=\"{lw}\" width=\"{mw}\" height=\"20\" fill=\"{color}\"/>\
         <rect width=\"{w}\" height=\"20\" fill=\"url(#s)\"/></g>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" \
         font-size=\"110\" transform=\"scale(.1)\">\
         <text x=\"{lx}\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\">{label}</text>\
         <text x=\"{lx}\" y=\"140\">{label}</text>\
         <text x=\"{mx}\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\">{message}</text>\
         <text x=\"{mx}\" y=\"140\">{message}</text></g></svg>"
    )
}

/// The shields.io endpoint JSON of a badge.
pub fn shields(badge: &Badge) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 1,
        "label": badge.label,
        "message": badge.message,
        "color": badge.color,
    })
}

fn answer(badge: &Badge, query: &HashMap<String, String>) -> Response {
    let mut response = if query.get("format").is_some_and(|f| f == "shields") {
        axum::Json(shields(badge)).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
            svg(badge),
        )
            .into_response()
    };
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}

async fn record(state: &AppState, id: &str) -> Option<ServerRecord> {
    // Only a syntactically valid id is looked up; anything else is simply unknown.
    if !crate::ingest::decode::valid_server_id(id) {
        return None;
    }
    match state.store.get_server(id).await {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(error = %e, "badge read failed; answering unknown");
            None
        }
    }
}

/// `GET /badge/{id}/{file}` where `file` is `status.svg`, `uptime.svg`, `confidence.svg` or
/// `quality.svg`.
pub async fn kind(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let kind = file.strip_suffix(".svg").unwrap_or("");
    let record = record(&state, &id).await;
    answer(&badge_for(record.as_ref(), kind), &query)
}

/// `GET /badge/{id}/score/{file}` where `file` is `NAME.svg`.
pub async fn score(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let name = file.strip_suffix(".svg").unwrap_or("");
    let record = record(&state, &id).await;
    let record = record.filter(|r| r.admin.retired_at_ms.is_none());
    answer(&score_badge(record.as_ref(), name), &query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_round_to_one_decimal() {
        assert_eq!(figure(99.95), "100");
        assert_eq!(figure(87.25), "87.3");
        assert_eq!(figure(0.0), "0");
    }

    #[test]
    fn unknown_kinds_and_servers_are_grey() {
        assert_eq!(badge_for(None, "status").message, "unknown");
        assert_eq!(badge_for(None, "status").color, "lightgrey");
        assert_eq!(badge_for(None, "<script>").label, "vigil");
        assert_eq!(score_badge(None, "<x>").label, "score");
    }

    #[test]
    fn percent_colours_step_down() {
        let colours: Vec<_> = [100.0, 96.0, 91.0, 80.0, 60.0, 10.0]
            .into_iter()
            .map(percent_color)
            .collect();
        assert_eq!(
            colours,
            [
                "brightgreen",
                "green",
                "yellowgreen",
                "yellow",
                "orange",
                "red"
            ]
        );
    }
}
