//! `/openapi.json` documents exactly the routes of the router.
//!
//! The router's routes are read from the source of `api::app` (every `.route("path",
//! get(..).post(..))`), so a route added there without a declaration in `api/openapi.rs` fails
//! here; every documented route is then requested through the real router, so a documented
//! route that is not served fails too. The compat routes (other tools' protocols, off by
//! default, answered in those tools' own shapes) are documented in `docs/migrating.md`
//! instead, and left out here.
//!
//! Then schemathesis fuzzes the document against a live host (skipped when it is not
//! installed, unless `VIGIL_REQUIRE_SCHEMATHESIS=1`).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;
use tower::ServiceExt;
use vigil_tests::TestApp;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Paths of the compat route families (`[compat.*]`), not in the OpenAPI document.
const COMPAT: [&str; 9] = [
    "/ping/{uuid}",
    "/ping/{uuid}/{action}",
    "/api/push/{token}",
    "/agent/heartbeat",
    "/api/v1/agents/heartbeat",
    "/heartbeat/{agent_id}",
    "/agents",
    "/agents/{agent_id}",
    "/health",
];

/// `(method, path)` of every `.route(...)` in the source of `api::app`.
fn router_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../../host/src/api/mod.rs");
    let mut routes = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = &source[at + ".route(".len()..];
        // The call's text, up to its matching parenthesis.
        let mut depth = 1usize;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("balanced .route( call");
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a path literal").to_owned();
        if COMPAT.contains(&path.as_str()) {
            continue;
        }
        let methods = &call[call.find(',').expect("a method router")..];
        for method in METHODS {
            let found = methods.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0
                    || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && methods.as_bytes()[i - 1] != b'_'
            });
            if found {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

async fn openapi_json_lists_every_route_of_the_router_with_problem_errors() {
    // The Hermes reads are documented (they are reads, not another tool's way in): served
    // only when enabled.
    let app = TestApp::spawn_with(|c| c.compat.hermes.enabled = true).await;
    let answer = app.get("/openapi.json").await;
    assert_eq!(answer.status, 200);
    let doc = answer.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            documented.insert((method.to_owned(), path.clone()));
            // Every error an API operation declares is problem+json (the dashboard's forms
            // answer HTML pages, and axum's form refusals plain text).
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if path.starts_with("/v1/") && (status.starts_with('4') || status.starts_with('5'))
                {
                    assert!(
                        response["content"]
                            .get("application/problem+json")
                            .is_some(),
                        "{method} {path} {status} is not problem+json: {response}"
                    );
                }
            }
            if path.starts_with("/v1/") {
                let errors = operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .filter(|s| s.starts_with('4') || s.starts_with('5'))
                    .count();
                assert!(errors > 0, "{method} {path} documents no error");
            }
        }
    }
    let routes = router_routes();
    assert!(routes.len() >= 14, "parsed too few routes: {routes:?}");
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );

    // Every documented route is served (not the fallback's 404, not 405).
    for (method, path) in &documented {
        let uri = path
            .replace("{id}", "no-such-server")
            .replace("{token_id}", "1")
            .replace("{file}", "status.svg")
            .replace("{cluster}", "no-such-cluster");
        let request = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"))
            .uri(&uri)
            .body(Body::empty())
            .expect("request");
        let response = app.router.clone().oneshot(request).await.expect("answers");
        let status = response.status();
        // Only a 404 body is read: `/v1/events` answers 200 with an endless stream.
        let problem: Value = if status == 404 {
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert!(
            !(status == 404 && problem["code"] == "not_found"),
            "{method} {path} is documented but falls through to the fallback"
        );
    }
}

vigil_tests::on_both_backends!(openapi_json_lists_every_route_of_the_router_with_problem_errors,);

/// The schemathesis command: `$VIGIL_SCHEMATHESIS`, else `st` or `schemathesis` on `PATH`.
fn schemathesis() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("VIGIL_SCHEMATHESIS") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["st", "schemathesis"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// A schema-driven fuzz of `/openapi.json` against a live `vigil serve` (schemathesis, every
/// check, the allowances of tests/schemathesis/schemathesis.toml): no accepted invalid request,
/// no rejected valid one, no 5xx, no undocumented status or content type, every answer
/// matching its documented schema. A fixed seed and a few examples per operation keep it
/// deterministic and short. Skipped with a notice when schemathesis is not installed, unless
/// `VIGIL_REQUIRE_SCHEMATHESIS=1` (CI: `.ci/run` installs it) makes that a failure.
#[test]
fn schemathesis_finds_no_disagreement_between_the_document_and_the_host() {
    let Some(st) = schemathesis() else {
        assert!(
            !std::env::var("VIGIL_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1"),
            "VIGIL_REQUIRE_SCHEMATHESIS=1 but no schemathesis: set VIGIL_SCHEMATHESIS or put \
             `st` on PATH (pip install schemathesis)"
        );
        eprintln!(
            "\nNOTICE: the schemathesis fuzz is SKIPPED (no `st` on PATH, no \
             VIGIL_SCHEMATHESIS); `pip install schemathesis` to run it.\n"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        vigil_tests::Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", vigil_tests::ADMIN_TOKEN);
    // No rate limit: the fuzz sends hundreds of requests from one address.
    let host = vigil_tests::ServeProcess::start(
        &vigil,
        "[storage]\nurl = \"sqlite://vigil.db\"\n\
         [rate_limit]\nper_server_per_minute = 0\nper_ip_per_minute = 0\n",
    );
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemathesis/schemathesis.toml"
    );
    let output = std::process::Command::new(&st)
        .args(["--no-color", "--config-file", config, "run"])
        .arg(format!("{}/openapi.json", host.url()))
        .args(["--header"])
        .arg(format!(
            "Authorization: Bearer {}",
            vigil_tests::ADMIN_TOKEN
        ))
        .args(["--max-examples", "3", "--seed", "1", "--workers", "2"])
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found disagreements:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    host.stop();
}
