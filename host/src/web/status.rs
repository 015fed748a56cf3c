//! `GET /status/{cluster}`: a cluster's public status page — the current state of each server
//! (status and confidence as text, icon and colour), the open incidents (servers offline or
//! red now) and the latest transitions. Read-only and cacheable for 30 s; it shows what the
//! public directory shows and nothing of the admin API (no keys, labels, rejections, audit).
//! Retired servers are left out; paused ones are shown as paused.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{escape, when};
use crate::api::{ApiError, AppState};
use crate::store::{ServerQuery, ServerRecord, ServerSort, StoredTransition};

/// How long a status page may be cached.
pub const CACHE_CONTROL: &str = "public, max-age=30";
/// Most servers one page lists.
const MAX_SERVERS: u32 = 500;
/// Transitions shown.
const TIMELINE: u32 = 20;

/// The stylesheet every page shares: status by text and icon as well as colour, large enough
/// targets, readable at 200 % zoom and on a phone (fluid widths, no fixed layout).
pub const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;\
padding:1rem;color:#1b1b1b;background:#fff}h1{font-size:1.6rem}h2{font-size:1.25rem;\
margin-top:2rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;\
padding:.4rem .5rem;border-bottom:1px solid #d0d0d0;vertical-align:top}\
.st{font-weight:600;white-space:nowrap}.online{color:#0b6b1d}.offline{color:#b00020}\
.unknown,.paused{color:#4a4a4a}.green{color:#0b6b1d}.yellow{color:#7a5b00}.red{color:#b00020}\
.ok{padding:.6rem;border:2px solid #0b6b1d;color:#0b6b1d}.bad{padding:.6rem;\
border:2px solid #b00020;color:#b00020}@media(max-width:40rem){td,th{display:block;\
border:0;padding:.1rem .5rem}td[data-label]::before{content:attr(data-label) \": \";font-weight:400;\
color:#4a4a4a}tr{display:block;border-bottom:1px solid #d0d0d0;padding:.4rem 0}thead{display:none}}";

/// The icon shown beside a status (so it is never told by colour alone).
pub fn status_icon(status: &str) -> &'static str {
    match status {
        "online" => "\u{25CF}",  // ●
        "offline" => "\u{2716}", // ✖
        "paused" => "\u{275A}",  // ❚
        _ => "\u{25CC}",         // ◌
    }
}

/// The icon shown beside a confidence.
pub fn confidence_icon(confidence: &str) -> &'static str {
    match confidence {
        "green" => "\u{2714}", // ✔
        "red" => "\u{26A0}",   // ⚠
        _ => "\u{25B2}",       // ▲
    }
}

/// The status a page shows: `paused` while paused, else the policy's.
pub fn shown_status(r: &ServerRecord) -> &str {
    if r.admin.paused_at_ms.is_some() {
        "paused"
    } else {
        &r.snapshot.status
    }
}

fn name(r: &ServerRecord) -> String {
    escape(r.display_name.as_deref().unwrap_or(&r.server_id))
}

/// The page's HTML.
pub fn render(cluster: &str, servers: &[ServerRecord], timeline: &[StoredTransition]) -> String {
    let cluster = escape(cluster);
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{cluster} status</title><style>{STYLE}</style></head><body><main>\
         <h1>Status of {cluster}</h1>"
    );
    let incidents: Vec<&ServerRecord> = servers
        .iter()
        .filter(|r| {
            r.admin.paused_at_ms.is_none()
                && (r.snapshot.status == "offline" || r.snapshot.confidence == "red")
        })
        .collect();
    html.push_str("<h2>Open incidents</h2>");
    if incidents.is_empty() {
        html.push_str("<p class=\"ok\">\u{2714} No open incidents.</p>");
    } else {
        html.push_str("<ul class=\"bad\">");
        for r in &incidents {
            let what = if r.snapshot.status == "offline" {
                "offline"
            } else {
                "confidence red"
            };
            let since = r
                .snapshot
                .last_seen_at_ms
                .map(|at| format!(", last seen {}", when(at)))
                .unwrap_or_default();
            html.push_str(&format!("<li>\u{26A0} {}: {what}{since}</li>", name(r)));
        }
        html.push_str("</ul>");
    }
    html.push_str(
        "<h2>Servers</h2><table><thead><tr><th scope=\"col\">Server</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Confidence</th>\
         <th scope=\"col\">Uptime (24\u{a0}h)</th><th scope=\"col\">Last seen</th></tr></thead><tbody>",
    );
    for r in servers {
        let s = &r.snapshot;
        let status = shown_status(r);
        let seen = s
            .last_seen_at_ms
            .map(when)
            .unwrap_or_else(|| "never".into());
        html.push_str(&format!(
            "<tr><td>{}</td><td class=\"st {status}\" data-label=\"Status\">{} {status}</td>\
             <td class=\"st {c}\" data-label=\"Confidence\">{} {c}</td>\
             <td data-label=\"Uptime (24\u{a0}h)\">{:.1}%</td><td data-label=\"Last seen\">{seen}</td></tr>",
            name(r),
            status_icon(status),
            confidence_icon(&s.confidence),
            s.uptime_percent,
            c = escape(&s.confidence),
        ));
    }
    html.push_str("</tbody></table><h2>Latest changes</h2>");
    if timeline.is_empty() {
        html.push_str("<p>No changes recorded.</p>");
    } else {
        html.push_str("<ul>");
        for t in timeline {
            let r = &t.row;
            let shown = servers
                .iter()
                .find(|s| s.server_id == r.server_id)
                .map_or_else(|| escape(&r.server_id), name);
            html.push_str(&format!(
                "<li>{at} {shown}: {} {from} \u{2192} {} {to}, \
                 confidence {} \u{2192} {}</li>",
                status_icon(&r.from_status),
                status_icon(&r.to_status),
                escape(&r.from_confidence),
                escape(&r.to_confidence),
                at = when(r.at_ms),
                from = escape(&r.from_status),
                to = escape(&r.to_status),
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str("</main></body></html>");
    html
}

/// `GET /status/{cluster}`.
pub async fn page(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
) -> Result<Response, ApiError> {
    if cluster.is_empty() || cluster.chars().count() > 128 {
        return Err(ApiError::not_found("this cluster"));
    }
    let query = ServerQuery {
        status: None,
        confidence: None,
        verified: None,
        cluster: Some(cluster.clone()),
        paused: None,
        search: None,
        sort: ServerSort::Id,
        limit: MAX_SERVERS,
        after: None,
    };
    let mut servers = state.store.list_servers(&query).await?;
    if servers.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_cluster",
            "no server is in this cluster",
        ));
    }
    servers.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    let timeline = state.store.cluster_transitions(&cluster, TIMELINE).await?;
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render(&cluster, &servers, &timeline),
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}
