//! The dashboard at `/`: the server list (filters, sort by every ranking value, search,
//! pagination, live status over `GET /v1/events`) and a page per server (`/servers/{id}`:
//! state, uptime bars and sparklines from the rollups, scores and badges with the policy
//! version that computed them, runs, transitions, recent heartbeats with their bodies, and for
//! a signed-in admin the admin-only sections). Server-rendered HTML embedded in the binary with a few lines
//! of hand-written JS for the live updates; works without JS (reload for news). Status and
//! confidence are always text and icon as well as colour; native form controls with labels,
//! so the pages are usable by keyboard; fluid layout for 200 % zoom and phones.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::bars::{BARS_STYLE, figure, sparkline, uptime_bars};
use super::session::{Viewer, csrf_field};
use super::status::{STYLE, confidence_icon, shown_status, status_icon};
use super::{escape, when};
use crate::api::{ApiError, AppState};
use crate::store::{ServerQuery, ServerRecord, ServerSort};

/// Rows per page.
const PAGE: u32 = 50;

/// The live-update script: on each `transition` event, the row of that server gets its new
/// status and confidence (text, icon, colour class); the `#live` line says whether the stream
/// is connected (and `data-live="open"` on `<html>` tells tests the same).
const LIVE_JS: &str = r#"(function(){
var live=document.getElementById("live");
function say(t){if(live)live.textContent=t;}
if(!window.EventSource){say("Live updates: not supported by this browser; reload for news.");return;}
var icons={online:"\u25CF",offline:"\u2716",unknown:"\u25CC",paused:"\u275A",green:"\u2714",yellow:"\u25B2",red:"\u26A0"};
function set(cell,value,extra){if(!cell)return;cell.className="st "+value+" "+extra;cell.textContent=(icons[value]||"")+" "+value;}
var es=new EventSource("/v1/events");
es.onopen=function(){say("\u25CF Live updates: on");document.documentElement.setAttribute("data-live","open");};
es.onerror=function(){say("\u25CC Live updates: reconnecting\u2026");document.documentElement.setAttribute("data-live","closed");};
es.addEventListener("transition",function(e){
var t=JSON.parse(e.data);var row=document.querySelector('tr[data-server-id="'+CSS.escape(t.server_id)+'"]');
if(!row)return;if(row.getAttribute("data-paused")!=="1")set(row.querySelector(".status"),t.to_status,"status");
set(row.querySelector(".confidence"),t.to_confidence,"confidence");row.setAttribute("data-live","1");
var seen=row.querySelector(".seen"),at=new Date(t.at_ms);if(seen&&!isNaN(at)){var iso=at.toISOString();seen.innerHTML="";var el=document.createElement("time");el.setAttribute("datetime",iso);el.textContent=iso.slice(0,10)+" "+iso.slice(11,19)+"\u00a0UTC";seen.appendChild(el);}
});})();"#;

/// The server page's uptime: the last 24 hours by hour and the last 90 days by day, from the
/// rollups, with the 7- and 30-day figures in words.
async fn uptime_section(
    state: &AppState,
    record: &ServerRecord,
    now: i64,
) -> Result<String, ApiError> {
    use crate::engine::rollup::{Window, report};
    let id = &record.server_id;
    let hours = state
        .store
        .rollups(id, Window::Hours24.span(), Window::Hours24.from_ms(now))
        .await?;
    let days = state
        .store
        .rollups(id, Window::Days(90).span(), Window::Days(90).from_ms(now))
        .await?;
    let day = report(Window::Hours24, now, &hours, &record.snapshot);
    let quarter = report(Window::Days(90), now, &days, &record.snapshot);
    let last = |n: usize| {
        let mut sums = crate::store::RollupSums::default();
        for b in quarter.buckets.iter().rev().take(n) {
            sums.add(&b.sums);
        }
        figure(sums.uptime_percent())
    };
    let hour_label = |ms: i64| {
        let t = crate::clock::format_rfc3339_ms(ms);
        format!(
            "{} {}:00 UTC",
            &t[..10.min(t.len())],
            t.get(11..13).unwrap_or("")
        )
    };
    let day_label = |ms: i64| {
        let t = crate::clock::format_rfc3339_ms(ms);
        t.get(..10).unwrap_or(&t).to_owned()
    };
    Ok(format!(
        "<h2>Uptime</h2><p>Last 7 days: {} \u{b7} last 30 days: {} (the policy's status over \
         time; grey: not known).</p>{}{}",
        last(7),
        last(30),
        uptime_bars("24-hour uptime, by hour", &day, &hour_label),
        uptime_bars("90-day uptime, by day", &quarter, &day_label),
    ) + &sparkline(
        "Quality, last 24 hours by hour",
        &day.buckets
            .iter()
            .map(|b| b.sums.quality())
            .collect::<Vec<_>>(),
    ))
}

/// Sparklines of the players and the beat interval over the recent heartbeats (`recent`:
/// newest first).
fn trends(recent: &[crate::store::StoredHeartbeat]) -> String {
    let oldest_first: Vec<&crate::store::StoredHeartbeat> = recent.iter().rev().collect();
    let players: Vec<Option<f64>> = oldest_first
        .iter()
        .map(|h| {
            serde_json::from_str::<serde_json::Value>(&h.row.body)
                .ok()
                .and_then(|v| v.get("players_current").and_then(serde_json::Value::as_f64))
        })
        .collect();
    let intervals: Vec<Option<f64>> = oldest_first
        .windows(2)
        .map(|w| Some((w[1].row.received_at_ms - w[0].row.received_at_ms) as f64 / 1000.0))
        .collect();
    format!(
        "<h2>Trends</h2>{}{}",
        sparkline(
            &format!("Players, last {} heartbeats", players.len()),
            &players
        ),
        sparkline("Seconds between heartbeats", &intervals),
    )
}

/// The runs reported in the recent heartbeats (a heartbeat's `run` member: a scheduled job's
/// start, success or failure), newest first; shown when there are any or a schedule is set.
fn runs(recent: &[crate::store::StoredHeartbeat], scheduled: bool) -> String {
    let mut rows = String::new();
    for h in recent {
        let Some(run) = serde_json::from_str::<serde_json::Value>(&h.row.body)
            .ok()
            .and_then(|v| v.get("run").cloned())
        else {
            continue;
        };
        let text = |k: &str| {
            run.get(k)
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "–".to_owned())
        };
        let phase = text("phase");
        let icon = match phase.as_str() {
            "success" => "\u{2714}",
            "fail" => "\u{2716}",
            _ => "\u{25B6}",
        };
        rows.push_str(&format!(
            "<tr><td data-label=\"Received\">{}</td><td data-label=\"Phase\">{icon} {}</td>\
             <td data-label=\"Exit code\">{}</td><td data-label=\"Run\">{}</td></tr>",
            when(h.row.received_at_ms),
            escape(&phase),
            escape(&text("exit_code")),
            escape(&text("run_id")),
        ));
    }
    if rows.is_empty() && !scheduled {
        return String::new();
    }
    if rows.is_empty() {
        return "<h2>Recent runs</h2><p>No run reported in the recent heartbeats.</p>".to_owned();
    }
    format!(
        "<h2>Recent runs</h2><table><thead><tr><th>Received</th><th>Phase</th><th>Exit code</th>\
         <th>Run</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

/// What only a signed-in admin sees on a server's page: its schedule, refused requests, key
/// history, ingest tokens (prefixes only), commands and audit trail.
async fn admin_sections(state: &AppState, record: &ServerRecord) -> Result<String, ApiError> {
    let id = &record.server_id;
    let mut html = String::from("<section class=\"admin-data\" aria-label=\"Admin data\">");
    html.push_str("<h2>Schedule</h2>");
    match &record.admin.schedule {
        Some(schedule) => html.push_str(&format!(
            "<p><code>{}</code></p>",
            escape(&serde_json::to_string(schedule).unwrap_or_default())
        )),
        None => html.push_str("<p>None: the policy expects beats at their own interval.</p>"),
    }
    html.push_str("<h2>Refused requests</h2><ul>");
    let query = crate::store::RejectionQuery {
        server_id: Some(id.clone()),
        limit: 20,
        ..Default::default()
    };
    for r in state.store.rejections(&query).await? {
        html.push_str(&format!(
            "<li>{}: <code>{}</code> ({}) {} from {}</li>",
            when(r.received_at_ms),
            escape(&r.code),
            r.http_status,
            escape(&r.detail),
            escape(r.source_ip.as_deref().unwrap_or("–")),
        ));
    }
    html.push_str("</ul><h2>Key history</h2><ul>");
    for k in state.store.server_keys(id).await? {
        html.push_str(&format!(
            "<li>v{} <code>{}</code> added {} by {}</li>",
            k.key_version,
            escape(&k.fingerprint),
            when(k.added_at_ms),
            escape(&k.added_by),
        ));
    }
    html.push_str("</ul><h2>Ingest tokens</h2><ul>");
    for t in state.store.ingest_tokens(id).await? {
        html.push_str(&format!(
            "<li>#{} {} <code>{}\u{2026}</code> created {} by {}{}</li>",
            t.id,
            t.kind.as_str(),
            escape(&t.prefix),
            when(t.created_at_ms),
            escape(&t.created_by),
            t.revoked_at_ms
                .map(|at| format!(", revoked {}", when(at)))
                .unwrap_or_default(),
        ));
    }
    html.push_str("</ul><h2>Commands</h2><ul>");
    for c in state.store.server_commands(id, 20).await? {
        html.push_str(&format!(
            "<li><code>{}</code> {} queued {} by {}, {}</li>",
            escape(&c.command_id),
            escape(&c.command),
            when(c.issued_at_ms),
            escape(&c.created_by),
            match (&c.result_status, c.delivered_at_ms) {
                (Some(status), _) => format!("answered: {}", escape(status)),
                (None, Some(_)) => format!("delivered {} times, no answer yet", c.delivery_count),
                (None, None) => format!("pending until {}", when(c.expires_at_ms)),
            },
        ));
    }
    html.push_str("</ul><h2>Audit trail</h2><ul>");
    for a in state.store.server_audit(id, None, 20).await? {
        html.push_str(&format!(
            "<li>{}: {} by {} <code>{}</code></li>",
            when(a.row.at_ms),
            escape(&a.row.action),
            escape(&a.row.actor),
            escape(&a.row.detail),
        ));
    }
    html.push_str("</ul></section>");
    Ok(html)
}

/// A dashboard page: the shared style, the navigation (who is signed in), `body`, and the
/// live-update script when `script`.
pub(crate) fn page(title: &str, body: &str, script: bool, viewer: Option<&Viewer>) -> Response {
    let script = if script {
        format!("<script>{LIVE_JS}</script>")
    } else {
        String::new()
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Vigil</title><style>{STYLE}{BARS_STYLE}\
         form.filters{{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end}}\
         label{{display:flex;flex-direction:column;font-size:.9rem}}\
         input,select,button{{font:inherit;padding:.3rem;min-height:2.4rem;box-sizing:border-box}}\
         input{{border:1px solid #767676;border-radius:3px;appearance:none}}\
         dl{{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.5rem}}dd{{margin:0}}\
         #live{{color:#4a4a4a;margin:0 0 .5rem}}main p{{overflow-wrap:anywhere}}\
         a{{color:#0645ad}}:focus{{outline:3px solid #0645ad;outline-offset:2px}}\
         pre{{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:.5rem}}\
         nav{{margin-bottom:1rem}}form.inline{{display:inline}}\
         form.stack{{display:flex;flex-direction:column;gap:.5rem;max-width:30rem}}\
         .admin{{border:2px solid #0645ad;padding:.5rem 1rem;margin:1rem 0}}.admin h2{{margin-top:.5rem}}</style></head><body>{nav}\
         <main>{body}</main>{script}</body></html>",
        nav = super::session::nav(viewer),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

fn select(name: &str, label: &str, current: Option<&str>, options: &[(&str, &str)]) -> String {
    let mut html = format!("<label>{label}<select name=\"{name}\">");
    for (value, text) in options {
        let selected = if current == Some(*value) {
            " selected"
        } else {
            ""
        };
        html.push_str(&format!(
            "<option value=\"{value}\"{selected}>{text}</option>"
        ));
    }
    html.push_str("</select></label>");
    html
}

fn sort_of(name: Option<&str>) -> ServerSort {
    match name {
        Some("uptime") => ServerSort::Uptime,
        Some("players") => ServerSort::Players,
        Some("last_seen") => ServerSort::LastSeen,
        Some("id") => ServerSort::Id,
        _ => ServerSort::Quality,
    }
}

fn sort_value(r: &ServerRecord, sort: ServerSort) -> f64 {
    let s = &r.snapshot;
    match sort {
        ServerSort::Quality => s.quality_score,
        ServerSort::Uptime => s.uptime_percent,
        ServerSort::Players => s.players_current.map_or(-1.0, f64::from),
        ServerSort::LastSeen => s.last_seen_at_ms.map_or(-1.0, |v| v as f64),
        ServerSort::Id => 0.0,
    }
}

fn allowed<'a>(value: Option<&'a String>, values: &[&str]) -> Option<&'a str> {
    value.map(String::as_str).filter(|v| values.contains(v))
}

/// `GET /?status=&confidence=&verified=&cluster=&q=&sort=&cursor=`: the server list.
pub async fn servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let viewer = state.sessions.viewer(&headers);
    let status = allowed(q.get("status"), &["online", "offline", "unknown", "paused"]);
    let confidence = allowed(q.get("confidence"), &["green", "yellow", "red"]);
    let verified = allowed(q.get("verified"), &["true", "false"]);
    let sort_name = allowed(
        q.get("sort"),
        &["quality", "uptime", "players", "last_seen", "id"],
    );
    let sort = sort_of(sort_name);
    let cluster = q.get("cluster").filter(|c| !c.is_empty() && c.len() <= 128);
    let search = q.get("q").filter(|c| !c.is_empty() && c.len() <= 128);
    let after = q
        .get("cursor")
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|b| serde_json::from_slice::<(f64, String)>(&b).ok());
    let query = ServerQuery {
        status: status.filter(|s| *s != "paused").map(str::to_owned),
        confidence: confidence.map(str::to_owned),
        verified: verified.map(|v| v == "true"),
        cluster: cluster.cloned(),
        paused: status.map(|s| s == "paused"),
        search: search.cloned(),
        sort,
        limit: PAGE,
        after,
    };
    let rows = state.store.list_servers(&query).await?;
    let mut body = String::from(
        "<h1>Servers</h1><p id=\"live\" role=\"status\"></p>\
         <form class=\"filters\" method=\"get\" action=\"/\">",
    );
    body.push_str(&format!(
        "<label>Search id or name<input type=\"search\" name=\"q\" value=\"{}\"></label>",
        escape(search.map_or("", String::as_str))
    ));
    body.push_str(&select(
        "status",
        "Status",
        status,
        &[
            ("", "any"),
            ("online", "online"),
            ("offline", "offline"),
            ("unknown", "unknown"),
            ("paused", "paused"),
        ],
    ));
    body.push_str(&select(
        "confidence",
        "Confidence",
        confidence,
        &[
            ("", "any"),
            ("green", "green"),
            ("yellow", "yellow"),
            ("red", "red"),
        ],
    ));
    body.push_str(&select(
        "verified",
        "Verified",
        verified,
        &[("", "any"), ("true", "verified"), ("false", "unverified")],
    ));
    body.push_str(&format!(
        "<label>Cluster<input name=\"cluster\" value=\"{}\"></label>",
        escape(cluster.map_or("", String::as_str))
    ));
    body.push_str(&select(
        "sort",
        "Sort by",
        sort_name,
        &[
            ("quality", "quality"),
            ("uptime", "uptime"),
            ("players", "players"),
            ("last_seen", "last seen"),
            ("id", "id"),
        ],
    ));
    body.push_str("<button type=\"submit\">Apply</button></form>");
    body.push_str(
        "<table><thead><tr><th scope=\"col\">Server</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Confidence</th><th scope=\"col\">Uptime (24\u{a0}h)</th>\
         <th scope=\"col\">Quality</th><th scope=\"col\">Players</th><th scope=\"col\">Verified</th>\
         <th scope=\"col\">Last seen</th></tr></thead><tbody>",
    );
    for r in &rows {
        let s = &r.snapshot;
        let shown = shown_status(r);
        let name = r.display_name.as_deref().unwrap_or(&r.server_id);
        let players = match (s.players_current, s.players_capacity) {
            (Some(p), Some(c)) => format!("{p} / {c}"),
            (Some(p), None) => p.to_string(),
            _ => "–".to_owned(),
        };
        body.push_str(&format!(
            "<tr data-server-id=\"{id}\" data-paused=\"{paused}\"><td><a href=\"/servers/{id}\">{name}</a></td>\
             <td class=\"st {shown} status\" data-label=\"Status\">{} {shown}</td>\
             <td class=\"st {c} confidence\" data-label=\"Confidence\">{} {c}</td>\
             <td data-label=\"Uptime (24\u{a0}h)\">{:.1}%</td><td data-label=\"Quality\">{:.1}</td>\
             <td data-label=\"Players\">{players}</td><td data-label=\"Verified\">{}</td>\
             <td class=\"seen\" data-label=\"Last seen\">{}</td></tr>",
            status_icon(shown),
            confidence_icon(&s.confidence),
            s.uptime_percent,
            s.quality_score,
            if r.is_verified { "\u{2714} yes" } else { "no" },
            s.last_seen_at_ms.map_or_else(|| "never".to_owned(), when),
            id = escape(&r.server_id),
            paused = u8::from(r.admin.paused_at_ms.is_some()),
            name = escape(name),
            c = escape(&s.confidence),
        ));
    }
    body.push_str("</tbody></table>");
    if rows.is_empty() {
        body.push_str("<p>No server matches.</p>");
    }
    if rows.len() == PAGE as usize
        && let Some(last) = rows.last()
    {
        let cursor = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&(sort_value(last, sort), &last.server_id)).unwrap_or_default(),
        );
        let mut link: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "cursor")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        link.sort();
        link.push(("cursor".into(), cursor));
        let query: Vec<String> = link
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(&percent(v))))
            .collect();
        body.push_str(&format!(
            "<p><a href=\"/?{}\">Next page \u{2192}</a></p>",
            query.join("&amp;")
        ));
    }
    Ok(page("Servers", &body, true, viewer.as_ref()))
}

/// Percent-encodes a query value.
pub(crate) fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /servers/{id}`: one server's page.
pub async fn server(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let viewer = state.sessions.viewer(&headers);
    let record = match state.store.get_server(&id).await? {
        Some(r) if r.admin.retired_at_ms.is_none() => r,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_server",
                "no such server",
            ));
        }
    };
    let s = &record.snapshot;
    let shown = shown_status(&record);
    let name = escape(record.display_name.as_deref().unwrap_or(&record.server_id));
    let mut body = format!(
        "<h1>{name}</h1><p><code>{}</code>{}</p><dl>\
         <dt>Status</dt><dd class=\"st {shown}\">{} {shown}</dd>\
         <dt>Confidence</dt><dd class=\"st {c}\">{} {c}</dd>\
         <dt>Uptime (24\u{a0}h)</dt><dd>{:.1}%</dd><dt>Quality</dt><dd>{:.1}</dd>\
         <dt>Players</dt><dd>{}</dd><dt>Map</dt><dd>{}</dd><dt>Verified</dt><dd>{}</dd></dl>",
        escape(&record.server_id),
        record
            .cluster_id
            .as_deref()
            .map(|c| format!(" in cluster <a href=\"/status/{0}\">{0}</a>", escape(c)))
            .unwrap_or_default(),
        status_icon(shown),
        confidence_icon(&s.confidence),
        s.uptime_percent,
        s.quality_score,
        s.players_current
            .map_or_else(|| "–".to_owned(), |p| p.to_string()),
        escape(s.map_name.as_deref().unwrap_or("–")),
        if record.is_verified {
            "\u{2714} yes"
        } else {
            "no"
        },
        c = escape(&s.confidence),
    );
    if let Some(v) = viewer.as_ref().filter(|v| v.admin) {
        let action = format!("/servers/{}/", escape(&percent(&record.server_id)));
        if record.admin.paused_at_ms.is_some() {
            body.push_str(&format!(
                "<section class=\"admin\" aria-label=\"Admin\"><h2>Admin</h2>\
                 <form method=\"post\" action=\"{action}resume\">{}\
                 <button type=\"submit\">Resume</button></form></section>",
                csrf_field(v)
            ));
        } else {
            body.push_str(&format!(
                "<section class=\"admin\" aria-label=\"Admin\"><h2>Admin</h2>\
                 <form method=\"post\" action=\"{action}pause\" class=\"stack\">{}\
                 <label>Reason (recorded in the audit trail)<input name=\"reason\" maxlength=\"256\"></label>\
                 <button type=\"submit\">Pause (no alerts, deadlines off)</button></form></section>",
                csrf_field(v)
            ));
        }
    }
    let now = crate::clock::now_ms();
    body.push_str(&uptime_section(&state, &record, now).await?);
    let recent = state.store.heartbeats(&id, None, 60).await?;
    body.push_str(&trends(&recent));
    let by = s.policy.as_deref().map_or_else(
        || "no policy yet".to_owned(),
        |p| {
            format!(
                "{}@{} ({})",
                escape(&p.name),
                escape(&p.version),
                escape(&p.digest)
            )
        },
    );
    body.push_str(&format!(
        "<h2>Scores and badges</h2><p>Computed by {by}.</p><ul>"
    ));
    for (n, v) in s.scores.iter() {
        body.push_str(&format!("<li>{}: {v:.2}</li>", escape(n)));
    }
    for b in &s.badges {
        body.push_str(&format!("<li>\u{2605} badge: {}</li>", escape(b)));
    }
    body.push_str("</ul>");
    body.push_str(&runs(&recent, record.admin.schedule.is_some()));
    body.push_str("<h2>Transitions</h2><ul>");
    for t in state.store.transitions(&id, None, 20).await? {
        let r = &t.row;
        body.push_str(&format!(
            "<li>{}: {} {} \u{2192} {} {}, confidence {} \u{2192} {} ({})</li>",
            when(r.at_ms),
            status_icon(&r.from_status),
            escape(&r.from_status),
            status_icon(&r.to_status),
            escape(&r.to_status),
            escape(&r.from_confidence),
            escape(&r.to_confidence),
            escape(&r.cause),
        ));
    }
    body.push_str("</ul><h2>Recent heartbeats</h2>");
    for h in recent.iter().take(10) {
        let r = &h.row;
        let pretty = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| r.body.clone());
        body.push_str(&format!(
            "<details><summary>#{} received {}{}</summary><pre>{}</pre></details>",
            r.seq,
            when(r.received_at_ms),
            if r.signature.is_empty() {
                " (unsigned)"
            } else {
                ""
            },
            escape(&pretty),
        ));
    }
    if viewer.as_ref().is_some_and(|v| v.admin) {
        body.push_str(&admin_sections(&state, &record).await?);
    }
    Ok(page(&name, &body, false, viewer.as_ref()))
}

/// `GET /policies`: the stored versions, the active one, the activation log (who and why) and,
/// for an admin session, the rollback form.
pub async fn policies(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let viewer = state.sessions.viewer(&headers);
    let active = state.engine.policy().description().clone();
    let versions = state.store.list_policies().await?;
    let log = state.store.activations(50).await?;
    let mut body = format!(
        "<h1>Policies</h1><p id=\"active\">Active: <strong>{}@{}</strong> <code>{}</code></p>",
        escape(&active.name),
        escape(&active.version),
        escape(&active.digest),
    );
    if let Some(v) = viewer.as_ref().filter(|v| v.admin) {
        let options: String = versions
            .iter()
            .map(|p| {
                format!(
                    "<option value=\"{d}\">{}@{} ({})</option>",
                    escape(&p.name),
                    escape(&p.version),
                    escape(p.digest.get(..19).unwrap_or(&p.digest)),
                    d = escape(&p.digest),
                )
            })
            .collect();
        let shadow = state.engine.shadow_report().is_some();
        body.push_str(&format!(
            "<section class=\"admin\" aria-label=\"Admin\"><h2>Roll back</h2>\
             <form method=\"post\" action=\"/policies/rollback\" class=\"stack\">{csrf}\
             <label>Reason (recorded in the activation log)<input name=\"reason\" maxlength=\"256\"></label>\
             <button type=\"submit\">Roll back to the previous version</button></form>\
             <h2>Activate a stored version</h2>\
             <form method=\"post\" action=\"/policies/activate\" class=\"stack\">{csrf}\
             <label>Version<select name=\"policy\">{options}</select></label>\
             <label>Reason (recorded in the activation log)<input name=\"reason\" maxlength=\"256\"></label>\
             <button type=\"submit\">Activate</button></form>\
             <h2>Shadow evaluation</h2><p>{}</p>\
             <form method=\"post\" action=\"/policies/shadow\" class=\"stack\">{csrf}\
             <label>Version to evaluate beside the active one<select name=\"policy\">{options}</select></label>\
             <button type=\"submit\">Start shadow</button>\
             <button type=\"submit\" name=\"stop\" value=\"1\">Stop shadow</button></form>\
             <h2>Upload a version</h2>\
             <form method=\"post\" action=\"/policies/upload\" enctype=\"multipart/form-data\" class=\"stack\">{csrf}\
             <label>Component (a .wasm file, at most 2\u{a0}MiB)<input type=\"file\" name=\"component\" accept=\".wasm,application/wasm\" required></label>\
             <label>Author signature (base64, optional)<input name=\"signature\" maxlength=\"200\"></label>\
             <label>Activate once stored<select name=\"activate\"><option value=\"no\">No, only store it</option><option value=\"yes\">Yes</option></select></label>\
             <button type=\"submit\">Upload</button></form></section>",
            if shadow {
                "A shadow is running: <a href=\"/v1/policies/shadow\">its report</a>."
            } else {
                "No shadow is running."
            },
            csrf = csrf_field(v),
        ));
    }
    body.push_str(
        "<h2>Versions</h2><table><thead><tr><th scope=\"col\">Version</th>\
         <th scope=\"col\">Digest</th><th scope=\"col\">Uploaded</th><th scope=\"col\">By</th>\
         <th scope=\"col\">Signed</th></tr></thead><tbody>",
    );
    for p in &versions {
        let is_active = p.digest == active.digest;
        body.push_str(&format!(
            "<tr data-digest=\"{d}\"><td>{}@{}{}</td><td data-label=\"Digest\"><code title=\"{d}\">{}\u{2026}</code></td>\
             <td data-label=\"Uploaded\">{}</td><td data-label=\"By\">{}</td><td data-label=\"Signed\">{}</td></tr>",
            escape(&p.name),
            escape(&p.version),
            if is_active { " <strong>\u{2714} active</strong>" } else { "" },
            escape(p.digest.get(..23).unwrap_or(&p.digest)),
            when(p.uploaded_at_ms),
            escape(&p.uploaded_by),
            p.signer.as_deref().map_or_else(|| "no".to_owned(), |s| format!("\u{2714} {}", escape(s))),
            d = escape(&p.digest),
        ));
    }
    body.push_str(
        "</tbody></table><h2>Activation log</h2><table><thead><tr><th scope=\"col\">When</th>\
         <th scope=\"col\">Who</th><th scope=\"col\">From \u{2192} to</th><th scope=\"col\">Why</th>\
         </tr></thead><tbody id=\"activations\">",
    );
    let short = |d: &str| escape(d.get(..19).unwrap_or(d));
    for a in &log {
        body.push_str(&format!(
            "<tr><td>{}</td><td data-label=\"Who\" class=\"who\">{}</td>\
             <td data-label=\"From \u{2192} to\"><code>{}</code> \u{2192} <code>{}</code></td>\
             <td data-label=\"Why\" class=\"why\">{}</td></tr>",
            when(a.at_ms),
            escape(&a.who),
            a.from_digest
                .as_deref()
                .map_or_else(|| "none".to_owned(), short),
            short(&a.to_digest),
            escape(&a.reason),
        ));
    }
    body.push_str("</tbody></table>");
    Ok(page("Policies", &body, false, viewer.as_ref()))
}
