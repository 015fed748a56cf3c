//! Each alert sink kind against a local server speaking that service's API shape: ntfy,
//! Discord, Telegram, PagerDuty Events v2, Microsoft Teams workflows, and email through an SMTP
//! receiver that requires STARTTLS (certificate from a test CA). The outbox, retries and dedup
//! are the same for every kind (tests/e2e/alerts.rs); PagerDuty's trigger/resolve pair also
//! runs through the real engine here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use vigil::alerts::sinks::{OutboxAlert, Sender};
use vigil::alerts::{RouteConfig, SinkConfig, SinkKind};
use vigil_tests::tls::TestCa;
use vigil_tests::{Agent, TestApp, wait_until};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One request the capture server saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Answers each path the way the real service does.
async fn service(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    log.lock().expect("not poisoned").push(Seen {
        path: path.clone(),
        headers,
        body,
    });
    if path.starts_with("/telegram-refuses/") {
        return axum::Json(
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
        )
        .into_response();
    }
    if path.starts_with("/telegram/") {
        return axum::Json(json!({"ok": true, "result": {"message_id": 1}})).into_response();
    }
    match path.as_str() {
        "/pagerduty" => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"status": "success", "message": "Event processed"})),
        )
            .into_response(),
        "/teams" => StatusCode::ACCEPTED.into_response(),
        "/discord" => StatusCode::NO_CONTENT.into_response(),
        "/ntfy/vigil-alerts" => axum::Json(json!({"id": "x", "event": "message"})).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_service() -> (Log, SocketAddr) {
    let log = Log::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds loopback");
    let address = listener.local_addr().expect("address");
    let app = Router::new().fallback(service).with_state(log.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    (log, address)
}

fn offline() -> OutboxAlert {
    OutboxAlert {
        id: 41,
        server_id: "eu-island-01".into(),
        cluster_id: Some("eu".into()),
        kind: "server_offline".into(),
        severity: "critical".into(),
        at_ms: 1_769_115_900_000,
        summary: "eu-island-01 went offline".into(),
        details: json!({"from": "online", "to": "offline"}),
        policy_digest: "sha256:abc".into(),
    }
}

fn online() -> OutboxAlert {
    OutboxAlert {
        id: 42,
        kind: "server_online".into(),
        severity: "recovery".into(),
        summary: "eu-island-01 is back online".into(),
        ..offline()
    }
}

fn sink(kind: SinkKind, url: String) -> SinkConfig {
    SinkConfig {
        name: format!("{kind:?}").to_lowercase(),
        kind,
        url,
        ..SinkConfig::default()
    }
}

fn last(log: &Log) -> Seen {
    log.lock()
        .expect("not poisoned")
        .last()
        .cloned()
        .expect("a request arrived")
}

#[tokio::test]
async fn ntfy_gets_the_text_with_title_priority_tags_and_bearer_token() {
    let (log, address) = start_service().await;
    let mut ntfy = sink(
        SinkKind::Ntfy,
        format!("http://{address}/ntfy/vigil-alerts"),
    );
    ntfy.token = Some("tk_secret".into());
    Sender::new()
        .send(&ntfy, &offline(), TIMEOUT)
        .await
        .expect("delivered");
    let seen = last(&log);
    assert_eq!(seen.path, "/ntfy/vigil-alerts");
    assert_eq!(
        std::str::from_utf8(&seen.body).expect("utf-8"),
        "eu-island-01 went offline (eu-island-01, 2026-01-22T21:05:00Z)"
    );
    assert_eq!(seen.header("title"), "vigil: server_offline eu-island-01");
    assert_eq!(seen.header("priority"), "5");
    assert_eq!(seen.header("tags"), "rotating_light,vigil");
    assert_eq!(seen.header("authorization"), "Bearer tk_secret");
}

#[tokio::test]
async fn discord_gets_content_that_can_mention_nobody() {
    let (log, address) = start_service().await;
    let discord = sink(SinkKind::Discord, format!("http://{address}/discord"));
    Sender::new()
        .send(&discord, &offline(), TIMEOUT)
        .await
        .expect("delivered on 204");
    let body = last(&log).json();
    assert_eq!(
        body["content"],
        "**server_offline** (critical) eu-island-01 went offline (eu-island-01, 2026-01-22T21:05:00Z)"
    );
    assert_eq!(body["username"], "Vigil");
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
}

#[tokio::test]
async fn telegram_posts_send_message_with_the_bot_token_and_checks_ok() {
    let (log, address) = start_service().await;
    let mut telegram = sink(SinkKind::Telegram, format!("http://{address}/telegram"));
    telegram.token = Some("123:ABC".into());
    telegram.chat_id = Some("-100200300".into());
    telegram.template = Some("{{vigil}} {server_id}: {summary}".into());
    Sender::new()
        .send(&telegram, &offline(), TIMEOUT)
        .await
        .expect("delivered");
    let seen = last(&log);
    assert_eq!(seen.path, "/telegram/bot123:ABC/sendMessage");
    assert_eq!(
        seen.json(),
        json!({"chat_id": "-100200300", "text": "{vigil} eu-island-01: eu-island-01 went offline",
               "disable_web_page_preview": true})
    );

    // `"ok": false` in a 200 is a failure, and the reason never carries the token.
    telegram.url = format!("http://{address}/telegram-refuses");
    let error = Sender::new()
        .send(&telegram, &offline(), TIMEOUT)
        .await
        .expect_err("refused");
    assert!(error.contains("chat not found"), "{error}");
    assert!(!error.contains("ABC"), "{error}");
}

#[tokio::test]
async fn pagerduty_triggers_then_resolves_with_one_dedup_key() {
    let (log, address) = start_service().await;
    let mut pd = sink(SinkKind::Pagerduty, format!("http://{address}/pagerduty"));
    pd.token = Some("R0UT1NGKEY".into());
    let sender = Sender::new();
    sender
        .send(&pd, &offline(), TIMEOUT)
        .await
        .expect("trigger");
    let trigger = last(&log).json();
    sender.send(&pd, &online(), TIMEOUT).await.expect("resolve");
    let resolve = last(&log).json();
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "vigil/eu-island-01/server_offline");
    let payload = &trigger["payload"];
    assert_eq!(payload["summary"], "eu-island-01 went offline");
    assert_eq!(payload["source"], "eu-island-01");
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["timestamp"], "2026-01-22T21:05:00Z");
    assert_eq!(payload["group"], "eu");
    assert_eq!(
        resolve,
        json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve",
               "dedup_key": "vigil/eu-island-01/server_offline"})
    );
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_message() {
    let (log, address) = start_service().await;
    let teams = sink(SinkKind::Teams, format!("http://{address}/teams"));
    Sender::new()
        .send(&teams, &offline(), TIMEOUT)
        .await
        .expect("delivered on 202");
    let body = last(&log).json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["body"][0]["color"], "Attention");
    assert!(
        card["body"][1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("eu-island-01 went offline"))
    );
}

async fn line<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>) -> String {
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("reads");
    line
}

async fn say<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>, text: &str) {
    stream
        .get_mut()
        .write_all(text.as_bytes())
        .await
        .expect("writes");
}

/// What the SMTP receiver saw after STARTTLS.
#[derive(Debug, Default, Clone)]
struct Mail {
    auth: String,
    envelope: Vec<String>,
    data: String,
    before_tls: Vec<String>,
}

/// The part of an SMTP session after STARTTLS (or all of it without).
async fn smtp_session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, mail: &Mutex<Mail>) {
    let mut stream = BufReader::new(stream);
    loop {
        let command = line(&mut stream).await;
        let verb = command.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => say(&mut stream, "250-localhost\r\n250 AUTH PLAIN\r\n").await,
            "AUTH" => {
                let encoded = command.trim().rsplit(' ').next().unwrap_or("");
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap_or_default();
                mail.lock().expect("ok").auth = String::from_utf8_lossy(&decoded).into();
                say(&mut stream, "235 2.7.0 Authentication successful\r\n").await;
            }
            "MAIL" | "RCPT" => {
                mail.lock()
                    .expect("ok")
                    .envelope
                    .push(command.trim().into());
                say(&mut stream, "250 2.1.0 Ok\r\n").await;
            }
            "DATA" => {
                say(&mut stream, "354 End data with <CR><LF>.<CR><LF>\r\n").await;
                let mut data = String::new();
                loop {
                    let l = line(&mut stream).await;
                    if l == ".\r\n" || l.is_empty() {
                        break;
                    }
                    data.push_str(&l);
                }
                mail.lock().expect("ok").data = data;
                say(&mut stream, "250 2.0.0 Ok: queued\r\n").await;
            }
            "QUIT" | "" => {
                say(&mut stream, "221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => say(&mut stream, "502 5.5.2 Error: command not recognized\r\n").await,
        }
    }
}

/// An SMTP receiver on 127.0.0.1 that offers only EHLO and STARTTLS before TLS.
async fn start_smtp(ca: &TestCa) -> (Arc<Mutex<Mail>>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds loopback");
    let address = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
    let mail = Arc::new(Mutex::new(Mail::default()));
    let seen = mail.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let mut stream = BufReader::new(socket);
            say(&mut stream, "220 localhost ESMTP test\r\n").await;
            loop {
                let command = line(&mut stream).await;
                let verb = command.get(..4).unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" => {
                        say(&mut stream, "250-localhost\r\n250 STARTTLS\r\n").await;
                    }
                    "STAR" => {
                        say(&mut stream, "220 2.0.0 Ready to start TLS\r\n").await;
                        let tls = acceptor.accept(stream.into_inner()).await;
                        if let Ok(tls) = tls {
                            smtp_session(tls, &seen).await;
                        }
                        break;
                    }
                    "" => break,
                    _ => {
                        seen.lock()
                            .expect("ok")
                            .before_tls
                            .push(command.trim().into());
                        say(
                            &mut stream,
                            "530 5.7.0 Must issue a STARTTLS command first\r\n",
                        )
                        .await;
                    }
                }
            }
        }
    });
    (mail, address)
}

#[tokio::test]
async fn email_goes_over_starttls_with_auth_to_every_recipient() {
    let ca = TestCa::new("vigil test SMTP CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (mail, address) = start_smtp(&ca).await;
    let mut email = sink(
        SinkKind::Email,
        format!("smtp://localhost:{}", address.port()),
    );
    email.from = Some("Vigil <vigil@example.com>".into());
    email.to = vec!["ops@example.com".into(), "oncall@example.com".into()];
    email.username = Some("vigil".into());
    email.token = Some("smtp-password".into());
    email.ca_file = Some(ca_file);
    Sender::new()
        .send(&email, &offline(), TIMEOUT)
        .await
        .expect("delivered");
    let mail = mail.lock().expect("ok").clone();
    assert!(mail.before_tls.is_empty(), "{:?}", mail.before_tls);
    assert_eq!(mail.auth, "\0vigil\0smtp-password");
    assert_eq!(
        mail.envelope,
        [
            "MAIL FROM:<vigil@example.com>",
            "RCPT TO:<ops@example.com>",
            "RCPT TO:<oncall@example.com>"
        ]
    );
    assert!(
        mail.data
            .contains("Subject: [vigil] critical: server_offline eu-island-01"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("server: eu-island-01"), "{}", mail.data);
    assert!(mail.data.contains("alert id: 41"), "{}", mail.data);

    // Without the CA the server's certificate is not trusted: nothing is sent.
    let (mail, address) = start_smtp(&ca).await;
    email.url = format!("smtp://localhost:{}", address.port());
    email.ca_file = None;
    let error = Sender::new()
        .send(&email, &offline(), TIMEOUT)
        .await
        .expect_err("untrusted");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(mail.lock().expect("ok").envelope.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pagerduty_through_the_outbox_resolves_the_incident_it_opened() {
    let (log, address) = start_service().await;
    let app = TestApp::spawn_with(|c| {
        let a = &mut c.alerts;
        a.poll_interval_ms = 50;
        let mut pd = sink(SinkKind::Pagerduty, format!("http://{address}/pagerduty"));
        pd.token = Some("R0UT1NGKEY".into());
        a.sinks.push(pd);
        a.routes.push(RouteConfig {
            kinds: vec!["server_offline".into(), "server_online".into()],
            severities: vec![],
            clusters: vec![],
            sink: "pagerduty".into(),
        });
    })
    .await;
    let agent = Agent::new("paged");
    app.register(&agent).await;
    let short = || agent.heartbeat(json!({"interval_seconds": 1}));
    app.post_heartbeat(&short()).await;
    let actions = async || {
        log.lock()
            .expect("ok")
            .iter()
            .map(|s| s.json()["event_action"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        actions,
        |a| a.len() == 1,
    )
    .await
    .expect("triggered");
    app.post_heartbeat(&short()).await;
    let seen = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        actions,
        |a| a.len() == 2,
    )
    .await
    .expect("resolved");
    assert_eq!(seen, ["trigger", "resolve"]);
    let keys: Vec<Value> = log
        .lock()
        .expect("ok")
        .iter()
        .map(|s| s.json()["dedup_key"].clone())
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], "vigil/paged/server_offline");
    app.stop().await;
}
