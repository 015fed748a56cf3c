//! Live streams: `GET /v1/events` (Server-Sent Events) and `GET /v1/servers/{id}/observe`
//! (WebSocket).
//!
//! Both read the [`LiveHub`](crate::live::LiveHub) the writer feeds after each commit. A
//! subscriber that falls behind the bus's buffer is dropped (SSE: the stream ends; WebSocket:
//! close code 1013), so a slow client never slows ingestion. `/v1/events` sends transitions
//! (SSE `id` = the transition's id in the stored log), registrations and policy activations;
//! a client reconnecting with `Last-Event-ID` first gets the stored transitions after that id
//! (with the same filters), then the live tail, without gaps or repeats. One connection replays
//! at most [`CATCH_UP_LIMIT`] stored transitions: a client further behind gets those, then the
//! stream ends and it reconnects from the last id it saw, so what one request makes the host
//! read is bounded and a far-behind client is paced by its own reconnects.
//!
//! Open subscribers are capped (`[live] max_event_streams`, `[live] max_observers`); one more
//! is answered 503 `too_many_subscribers`. Observers have nothing to say, so the WebSocket
//! refuses any client message or frame over [`MAX_CLIENT_MESSAGE`] bytes by closing the socket
//! (the length is checked from the frame header, before the payload is buffered).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use super::error::ApiPath;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, AppState};
use crate::live::LiveEvent;
use crate::store::Store;

/// Transitions read per page while replaying after `Last-Event-ID`.
const REPLAY_PAGE: u32 = 500;

/// Stored transitions one `/v1/events` connection replays at most (two pages). About the
/// live buffer's default (1024), so a client dropped for lagging catches up in one reconnect;
/// each replayed transition is a few hundred bytes, so a connection costs at most ≈ 0.5 MB of
/// reads however old its `Last-Event-ID`.
pub const CATCH_UP_LIMIT: usize = 1000;

/// Largest message or frame an observer may send (pings, pongs and close frames are at most
/// 125 bytes; nothing else is read).
pub const MAX_CLIENT_MESSAGE: usize = 4096;

fn too_many_subscribers(what: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_subscribers",
        format!("the host serves as many {what} as it is configured to; retry later"),
    );
    error.retry_after = Some(5);
    error
}

/// Filters of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only this server's events.
    pub server_id: Option<String>,
    /// Only events of servers in this cluster.
    pub cluster_id: Option<String>,
}

impl EventFilter {
    fn admits(&self, event: &LiveEvent) -> bool {
        if matches!(event, LiveEvent::Heartbeat { .. }) {
            return false;
        }
        if matches!(event, LiveEvent::PolicyActivation { .. }) {
            return true;
        }
        self.server_id
            .as_deref()
            .is_none_or(|id| event.server_id() == Some(id))
            && self
                .cluster_id
                .as_deref()
                .is_none_or(|c| event.cluster_id() == Some(c))
    }
}

fn sse_event(event: &LiveEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_default();
    let sse = Event::default().event(event.name()).data(data);
    match event {
        LiveEvent::Transition { id, .. } => sse.id(id.to_string()),
        _ => sse,
    }
}

struct Feed {
    rx: tokio::sync::broadcast::Receiver<Arc<LiveEvent>>,
    store: Store,
    filter: EventFilter,
    /// Highest transition id sent; `Some` while still replaying the stored log.
    last_id: i64,
    replaying: bool,
    /// Stored transitions replayed so far; at [`CATCH_UP_LIMIT`] the stream ends.
    replayed: usize,
    buffer: VecDeque<Event>,
    /// This stream's slot under `[live] max_event_streams`, released when it ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<crate::metrics::Metrics>,
    /// Resolves at host shutdown.
    closed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(event);
            }
            if self.replaying && self.replayed >= CATCH_UP_LIMIT {
                // Bounded catch-up: the client resumes from the last id it got.
                return None;
            }
            if self.replaying {
                let page_size = REPLAY_PAGE
                    .min(u32::try_from(CATCH_UP_LIMIT - self.replayed).unwrap_or(REPLAY_PAGE));
                let page = self
                    .store
                    .transitions_after(
                        self.last_id,
                        self.filter.server_id.as_deref(),
                        self.filter.cluster_id.as_deref(),
                        page_size,
                    )
                    .await;
                match page {
                    Ok(rows) if rows.is_empty() => self.replaying = false,
                    Ok(rows) => {
                        self.replayed += rows.len();
                        for row in rows {
                            self.last_id = row.transition.id;
                            self.buffer.push_back(sse_event(&LiveEvent::Transition {
                                id: row.transition.id,
                                cluster_id: row.cluster_id,
                                transition: row.transition.row,
                            }));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "replaying transitions for an event stream");
                        return None;
                    }
                }
                continue;
            }
            let received = tokio::select! {
                received = self.rx.recv() => received,
                () = &mut self.closed => return None,
            };
            match received {
                Ok(event) => {
                    if let LiveEvent::Transition { id, .. } = *event {
                        if id <= self.last_id {
                            continue;
                        }
                        self.last_id = id;
                    }
                    if self.filter.admits(&event) {
                        return Some(sse_event(&event));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    self.metrics.live_lagged.inc();
                    tracing::info!(missed, "event stream subscriber fell behind; dropping it");
                    return None;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `GET /v1/events?server_id=&cluster_id=` as Server-Sent Events.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventFilter>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(filter) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_last_event_id",
                        "Last-Event-ID must be a transition id (a non-negative integer)",
                    )
                })?,
        ),
    };
    let slot = state
        .live
        .slot(crate::live::Subscriber::EventStream)
        .ok_or_else(|| too_many_subscribers("event streams"))?;
    // Subscribe before replaying, so nothing committed meanwhile is missed.
    let feed = Feed {
        rx: state.live.subscribe(),
        store: state.store.clone(),
        filter,
        last_id: resume.unwrap_or(0),
        replaying: resume.is_some(),
        replayed: 0,
        buffer: VecDeque::new(),
        _slot: slot,
        metrics: state.metrics.clone(),
        closed: Box::pin(state.live.closed()),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|event| (Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /v1/servers/{id}/observe`: a WebSocket streaming the server's accepted heartbeats
/// (each with the assessment it produced) and its transitions, as JSON text messages.
pub async fn observe(
    State(state): State<AppState>,
    ApiPath(server_id): ApiPath<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("this route speaks WebSocket only: {}", e.body_text()),
        )
    })?;
    if state.store.get_server(&server_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_server",
            format!("server `{server_id}` is not registered"),
        ));
    }
    let slot = state
        .live
        .slot(crate::live::Subscriber::Observer)
        .ok_or_else(|| too_many_subscribers("observers"))?;
    let rx = state.live.subscribe();
    let closed = state.live.closed();
    let metrics = state.metrics.clone();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            observe_socket(socket, rx, server_id, metrics, closed).await;
            drop(slot);
        })
        .into_response())
}

async fn observe_socket(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<LiveEvent>>,
    server_id: String,
    metrics: Arc<crate::metrics::Metrics>,
    closed: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => {
                let close = CloseFrame { code: 1001, reason: "host shutting down".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
            received = rx.recv() => match received {
                Ok(event) => {
                    let ours = event.server_id() == Some(server_id.as_str())
                        && matches!(*event, LiveEvent::Heartbeat { .. } | LiveEvent::Transition { .. });
                    if !ours {
                        continue;
                    }
                    let text = serde_json::to_string(&*event).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics.live_lagged.inc();
                    tracing::info!(%server_id, missed, "observer fell behind; closing");
                    let close = CloseFrame { code: 1013, reason: "lagged: reconnect".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Clients have nothing to say; pings are answered by the library. A message
                // over the limit is an error here: the socket closes.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
