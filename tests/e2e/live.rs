//! Live streams over a real socket: SSE transitions (resumable with `Last-Event-ID`) and the
//! observe WebSocket.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use vigil_tests::{Agent, TestApp};

/// One parsed Server-Sent Event.
#[derive(Debug, Default, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A minimal SSE reader over a streaming HTTP response.
struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("connects");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event that is not a keep-alive comment (waits up to 20 s).
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.event.is_empty() {
                    continue;
                }
                event.data = serde_json::from_str(&data).expect("JSON data");
                return event;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("an event within 20 s")
                .expect("stream readable")
                .expect("stream still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `transition` event, skipping others.
    async fn next_transition(&mut self) -> SseEvent {
        loop {
            let event = self.next().await;
            if event.event == "transition" {
                return event;
            }
        }
    }
}

async fn an_sse_client_sees_a_transition_and_resumes_with_last_event_id() {
    let mut app = TestApp::spawn().await;
    let address = app.serve().await;
    let url = format!("http://{address}/v1/events");

    let mut stream = SseClient::connect(&url, None).await;
    let first = Agent::new("sse-first");
    app.register(&first).await;
    let registration = stream.next().await;
    assert_eq!(registration.event, "registration");
    assert_eq!(registration.data["server_id"], "sse-first");
    app.post_heartbeat(&first.heartbeat(json!({}))).await;
    let seen = stream.next_transition().await;
    assert_eq!(seen.data["server_id"], "sse-first");
    assert_eq!(seen.data["from_status"], "unknown");
    assert_eq!(seen.data["to_status"], "online");
    let seen_id = seen.id.clone().expect("transitions carry their log id");
    assert_eq!(seen.data["id"].to_string(), seen_id);
    drop(stream);

    // While nobody listens, another server comes online.
    let second = Agent::new("sse-second");
    app.register(&second).await;
    app.post_heartbeat(&second.heartbeat(json!({}))).await;

    let mut resumed = SseClient::connect(&url, Some(&seen_id)).await;
    let missed = resumed.next_transition().await;
    assert_eq!(
        missed.data["server_id"], "sse-second",
        "replays what it missed, not what it saw"
    );
    assert!(missed.id.as_deref().and_then(|i| i.parse::<i64>().ok()) > seen_id.parse::<i64>().ok());
    // And then the live tail: a filtered stream sees only its server.
    let mut filtered = SseClient::connect(&format!("{url}?server_id=sse-first"), None).await;
    app.post_heartbeat(&second.heartbeat(json!({"players_current": 500, "players_capacity": 10})))
        .await;
    app.post_heartbeat(&first.heartbeat(json!({"players_current": 500, "players_capacity": 10})))
        .await;
    let only_first = filtered.next_transition().await;
    assert_eq!(
        only_first.data["server_id"], "sse-first",
        "{:?}",
        only_first.data
    );
    drop(resumed);
    // Stopping the host ends streams still open (graceful shutdown does not wait on them).
    app.stop().await;
    drop(filtered);
}

async fn last_event_id_must_be_a_transition_id() {
    let app = TestApp::spawn().await;
    let request = axum::http::Request::get("/v1/events")
        .header("last-event-id", "yesterday")
        .body(axum::body::Body::empty())
        .expect("valid request");
    let problem = app.send(request).await;
    assert_eq!(problem.status, 422);
    assert_eq!(problem.content_type, "application/problem+json");
    assert_eq!(problem.body["code"], "invalid_last_event_id");
}

async fn a_websocket_observer_sees_each_accepted_heartbeat() {
    let mut app = TestApp::spawn().await;
    let address = app.serve().await;
    let agent = Agent::new("watched");
    app.register(&agent).await;
    let other = Agent::new("not-watched");
    app.register(&other).await;

    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{address}/v1/servers/watched/observe"))
            .await
            .expect("WebSocket handshake");
    let mut sent = Vec::new();
    for players in 0..3 {
        let body = agent.heartbeat(json!({"players_current": players, "players_capacity": 10}));
        app.post_heartbeat(&other.heartbeat(json!({}))).await;
        assert_eq!(app.post_heartbeat(&body).await.status, 202);
        sent.push(body["signature"].clone());
    }
    let mut heartbeats = Vec::new();
    while heartbeats.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")
            .expect("socket open")
            .expect("valid frame");
        let Message::Text(text) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).expect("JSON");
        assert_eq!(event["server_id"], "watched", "{event}");
        if event["type"] == "heartbeat" {
            assert_eq!(event["assessment"]["status"], "online");
            heartbeats.push(event);
        }
    }
    let signatures: Vec<Value> = heartbeats
        .iter()
        .map(|e| e["heartbeat"]["signature"].clone())
        .collect();
    assert_eq!(signatures, sent);
    assert_eq!(heartbeats[2]["heartbeat"]["players_current"], 2);

    let missing =
        tokio_tungstenite::connect_async(format!("ws://{address}/v1/servers/nobody/observe")).await;
    assert!(
        missing.is_err(),
        "unknown servers are refused before the upgrade"
    );
    app.stop().await;
    let last = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("closed within 20 s");
    assert!(
        matches!(last, Some(Ok(Message::Close(_))) | None | Some(Err(_))),
        "{last:?}"
    );
}

vigil_tests::on_both_backends!(
    an_sse_client_sees_a_transition_and_resumes_with_last_event_id,
    last_event_id_must_be_a_transition_id,
    a_websocket_observer_sees_each_accepted_heartbeat,
);
