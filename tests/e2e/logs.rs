//! Logs like a daemon's: `[log] format = "json"` gives one JSON object per line with the
//! documented fields, the access log names the route template (never the raw path), and every
//! answer carries a request id, echoed in problem+json bodies.

use axum::http::StatusCode;
use serde_json::Value;
use vigil_tests::{Cli, ServeProcess, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_and_the_access_log_names_the_route_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = ServeProcess::start(
        &Cli::in_dir(dir.path()),
        "[log]\nformat = \"json\"\naccess = true\n[storage]\nurl = \"sqlite://vigil.db\"\n",
    );
    let client = reqwest::Client::new();
    let missing = client
        .get(format!("{}/v1/servers/no-such-server", host.url()))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["x-request-id"], "trace-42");
    let log = host.stop();
    let lines: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(field).is_some(), "no `{field}` in {line}");
        }
    }
    let access = lines
        .iter()
        .find(|l| l["target"] == "vigil::access" && l["fields"]["request_id"] == "trace-42")
        .unwrap_or_else(|| panic!("no access line: {log:?}"));
    let fields = &access["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(
        fields["route"], "/v1/servers/{id}",
        "the template, not the path"
    );
    assert_eq!(fields["status"], 404);
    assert!(fields["duration_ms"].as_f64().is_some());
    assert!(
        fields["client"]
            .as_str()
            .is_some_and(|c| c.contains("127.0.0.1"))
    );
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_problems_carry_it() {
    let app = TestApp::spawn().await;
    let request = vigil_tests::request(axum::http::Method::GET, "/v1/servers/nope", None)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .expect("answers");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_owned();
    assert_eq!(id.len(), 16, "made here: {id}");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let problem: Value = serde_json::from_slice(&body).expect("problem+json");
    assert_eq!(problem["request_id"], id.as_str());
    assert_eq!(problem["code"], "unknown_server");
    // A client's id with characters outside the plain set is not echoed; a fresh one is made.
    let request = vigil_tests::request(axum::http::Method::GET, "/healthz", None)
        .header("x-request-id", "a b;c")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .expect("answers");
    let id = response.headers()["x-request-id"].to_str().expect("text");
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    app.stop().await;
}
