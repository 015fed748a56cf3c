//! What a client with no key can make the listener hold, against the real `vigil serve` over
//! TCP: a request head or body that never finishes, connections past the caps, and a slow
//! client at shutdown. Then the budget an unproven admin or command-result request spends
//! (the router, each request from its own peer address).
//!
//! The timeouts here are the host's own (`[server] …_seconds = 1`); the tests' bounds (20 s)
//! only stop a hung test, they measure nothing.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vigil_tests::{ADMIN_TOKEN, Agent, Cli, ServeProcess, TestApp, wait_until};

const BOUND: Duration = Duration::from_secs(20);

/// Starts `vigil serve` with `server` as the `[server]` table's extra keys.
fn serve(dir: &tempfile::TempDir, server: &str) -> ServeProcess {
    let config = format!("[server]\n{server}\n[storage]\nurl = \"sqlite://vigil.db\"\n");
    ServeProcess::start(&Cli::in_dir(dir.path()), &config)
}

/// Reads until the peer closes (or `BOUND` passes: then panics); returns what came.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    match tokio::time::timeout(BOUND, stream.read_to_end(&mut text)).await {
        Ok(Ok(_)) => {}
        // A reset after the answer still ends the connection.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("reading: {e}"),
        Err(_) => panic!(
            "the host still holds the connection after {BOUND:?}: {:?}",
            String::from_utf8_lossy(&text)
        ),
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_that_never_ends_is_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = serve(&dir, "header_read_timeout_seconds = 1");
    let mut slow = TcpStream::connect(host.address()).await.expect("connects");
    slow.write_all(b"POST /v1/agent/heartbeat HTTP/1.1\r\nhost: vigil\r\nx-slow: 1")
        .await
        .expect("writes");
    // Never the blank line: the host closes the connection by itself.
    read_to_close(&mut slow).await;
    // A connection that sends nothing at all is closed the same way.
    let mut silent = TcpStream::connect(host.address()).await.expect("connects");
    read_to_close(&mut silent).await;
    // Nor does a kept-alive connection idle past it after a whole request.
    let mut kept = TcpStream::connect(host.address()).await.expect("connects");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: vigil\r\n\r\n")
        .await
        .expect("writes");
    let answer = read_to_close(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("connection: close"),
        "kept alive: {answer}"
    );
    // And the host still serves everyone else.
    let health = reqwest::get(format!("{}/healthz", host.url()))
        .await
        .expect("answers");
    assert_eq!(health.status(), StatusCode::OK);
    host.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_in_gets_408_and_stores_only_a_bounded_rejection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = serve(&dir, "body_read_timeout_seconds = 1");
    let mut slow = TcpStream::connect(host.address()).await.expect("connects");
    slow.write_all(
        b"POST /v1/agent/heartbeat HTTP/1.1\r\nhost: vigil\r\ncontent-type: application/json\r\n\
          content-length: 400\r\n\r\n{\"server_id\":",
    )
    .await
    .expect("writes");
    let answer = read_to_close(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    let log = host.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("heartbeat rejected") && l.contains("body_timeout")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Long read timeouts: only the shutdown grace can end this client's request.
    let mut host = serve(
        &dir,
        "header_read_timeout_seconds = 300\nbody_read_timeout_seconds = 300\nshutdown_grace_seconds = 1",
    );
    let mut slow = TcpStream::connect(host.address()).await.expect("connects");
    slow.write_all(
        b"POST /v1/agent/heartbeat HTTP/1.1\r\nhost: vigil\r\ncontent-length: 400\r\n\r\n{",
    )
    .await
    .expect("writes");
    // The request is in the handler, waiting for its body, when shutdown begins.
    wait_until(
        BOUND,
        Duration::from_millis(20),
        async || {
            reqwest::get(format!("{}/healthz", host.url()))
                .await
                .is_ok()
        },
        |ok| *ok,
    )
    .await
    .expect("serving");
    host.signal("TERM");
    wait_until(
        BOUND,
        Duration::from_millis(50),
        async || host.running(),
        |running| !running,
    )
    .await
    .unwrap_or_else(|_| panic!("still running {BOUND:?} after SIGTERM: {:?}", host.log()));
    assert!(
        host.log()
            .iter()
            .any(|l| l.contains("still open after the shutdown grace period")),
        "{:?}",
        host.log()
    );
}

/// Opens `n` connections that send nothing yet (each one counts against the caps).
async fn idle_connections(host: &ServeProcess, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(TcpStream::connect(host.address()).await.expect("connects"));
    }
    open
}

/// The answer a connection gets without sending anything: a refusal past a cap.
async fn refused(host: &ServeProcess) -> String {
    let mut extra = TcpStream::connect(host.address()).await.expect("connects");
    read_to_close(&mut extra).await
}

async fn healthz_ok(host: &ServeProcess) -> bool {
    matches!(
        reqwest::get(format!("{}/healthz", host.url())).await,
        Ok(r) if r.status() == StatusCode::OK
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_per_address_cap_get_503_and_a_freed_slot_serves_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = serve(&dir, "max_connections_per_ip = 2");
    let mut open = idle_connections(&host, 2).await;
    let answer = refused(&host).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"code\":\"too_many_connections\"") && answer.contains("retry-after: 1"),
        "{answer}"
    );
    // Closing one gives its slot back.
    drop(open.pop());
    wait_until(
        BOUND,
        Duration::from_millis(20),
        async || healthz_ok(&host).await,
        |ok| *ok,
    )
    .await
    .expect("a freed slot serves again");
    drop(open);
    host.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_is_exempt_from_the_per_address_cap_but_not_from_the_total() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = serve(
        &dir,
        "max_connections_per_ip = 1\nmax_connections = 3\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let open = idle_connections(&host, 3).await;
    let answer = refused(&host).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(open);
    host.stop();
}

/// A router host whose per-address bucket allows `burst` requests, then one a minute.
async fn budgeted_app() -> TestApp {
    TestApp::spawn_with(|config| {
        config.rate_limit.per_ip_per_minute = 1;
        config.rate_limit.per_ip_burst = 3;
    })
    .await
}

#[tokio::test]
async fn guessing_the_admin_token_spends_only_the_guessers_budget() {
    let app = budgeted_app().await;
    let guesser = "203.0.113.7:40000";
    let wrong = [("authorization", "Bearer vgl_not-a-key-at-all")];
    for _ in 0..3 {
        let answer = app
            .send_from(
                Method::GET,
                "/v1/admin/rejections",
                Vec::new(),
                guesser,
                &wrong,
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    }
    let spent = app
        .send_from(
            Method::GET,
            "/v1/admin/rejections",
            Vec::new(),
            guesser,
            &wrong,
        )
        .await;
    assert_eq!(
        spent.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        spent.body
    );
    assert_eq!(spent.code(), "rate_limited");
    assert!(spent.retry_after.is_some());
    // Even the right token from the spent address waits: the budget is the address's.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = [("authorization", bearer.as_str())];
    let answer = app
        .send_from(
            Method::GET,
            "/v1/admin/rejections",
            Vec::new(),
            guesser,
            &admin,
        )
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    // The operator elsewhere is not affected.
    let answer = app
        .send_from(
            Method::GET,
            "/v1/admin/rejections",
            Vec::new(),
            "198.51.100.2:1",
            &admin,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    app.stop().await;
}

#[tokio::test]
async fn forged_command_results_spend_only_the_forgers_budget_and_record_nothing() {
    let app = budgeted_app().await;
    let agent = Agent::new("edge-results");
    assert_eq!(app.register(&agent).await.status, StatusCode::CREATED);
    let queued = app
        .admin_post(
            "/v1/admin/servers/edge-results/commands",
            &json!({ "command": "restart" }),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{:?}", queued.body);
    let id = queued.body["command_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let path = format!("/v1/agent/commands/{id}/result");
    let forged = serde_json::to_vec(&json!({
        "command_id": id, "server_id": "edge-results", "key_version": 1,
        "timestamp": "2026-12-01T00:00:00Z", "status": "ok",
        "signature": "A".repeat(86) + "==",
    }))
    .expect("json");
    let forger = "203.0.113.8:40000";
    let json_type = [("content-type", "application/json")];
    for _ in 0..3 {
        let answer = app
            .send_from(Method::POST, &path, forged.clone(), forger, &json_type)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    }
    let spent = app
        .send_from(Method::POST, &path, forged.clone(), forger, &json_type)
        .await;
    assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(spent.code(), "rate_limited");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM commands WHERE result_status IS NOT NULL")
            .await,
        0,
        "a forged result records nothing"
    );
    app.stop().await;
}
