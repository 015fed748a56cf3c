//! Server management through the admin API and the CLI: edit, pause/resume, retire, bulk
//! import, maintenance windows; each action's audit row (who, what) and the refusals for
//! `read`-scoped keys.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vigil::clock::format_rfc3339_ms;
use vigil::store::Scope;
use vigil_tests::{ADMIN_TOKEN, Agent, Answer, Cli, TestApp, now_ms, wait_until};

async fn call(app: &TestApp, method: Method, path: &str, body: Value, token: &str) -> Answer {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    app.send_raw(method, path, bytes, Some(token)).await
}

async fn audit(app: &TestApp, id: &str) -> Vec<Value> {
    let answer = call(
        app,
        Method::GET,
        &format!("/v1/admin/servers/{id}/audit"),
        Value::Null,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body["audit"].as_array().expect("audit").clone()
}

fn listed(answer: &Answer) -> Vec<String> {
    answer.body["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["server_id"].as_str().expect("id").to_owned())
        .collect()
}

async fn each_action_is_applied_and_audited_with_the_acting_key() {
    let app = TestApp::spawn().await;
    let ops = vigil::api::auth::create_key(&app.db, "ops", Scope::Admin, now_ms())
        .await
        .expect("key");
    let agent = Agent::new("managed-1");
    app.register(&agent).await;
    app.register(&Agent::new("managed-2")).await;

    // Edit: only the members given change; `null` clears.
    let path = "/v1/admin/servers/managed-1";
    let edit = json!({"display_name": "EU One", "cluster_id": "eu", "labels": {"region": "eu-west", "tier": "gold"}});
    let answer = call(&app, Method::PATCH, path, edit, &ops).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["display_name"], "EU One");
    assert_eq!(answer.body["cluster_id"], "eu");
    assert_eq!(answer.body["labels"]["tier"], "gold");
    let answer = call(
        &app,
        Method::PATCH,
        path,
        json!({"display_name": null}),
        &ops,
    )
    .await;
    assert_eq!(answer.body["display_name"], Value::Null);
    assert_eq!(
        answer.body["cluster_id"], "eu",
        "absent members are unchanged"
    );
    let in_eu = app.get("/v1/servers?cluster=eu").await;
    assert_eq!(listed(&in_eu), ["managed-1"]);
    // Bad edits change nothing.
    for bad in [
        json!({"labels": {"Bad Name": "x"}}),
        json!({"server_id": "other"}),
        json!({"display_name": "x".repeat(257)}),
    ] {
        let answer = call(&app, Method::PATCH, path, bad, &ops).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            answer.body
        );
    }
    let unknown = call(
        &app,
        Method::PATCH,
        "/v1/admin/servers/nope",
        json!({}),
        &ops,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "unknown_server");

    // Heartbeats while paused are stored and folded; the status shown is `paused`.
    let pause = "/v1/admin/servers/managed-1/pause";
    let answer = call(
        &app,
        Method::POST,
        pause,
        json!({"reason": "moving racks"}),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["effective_status"], "paused");
    assert!(answer.body["paused_at"].is_string());
    let sent = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let view = app.server("managed-1").await;
    assert_eq!(view["effective_status"], "paused");
    assert_eq!(view["policy_status"], "online");
    assert_eq!(
        listed(&app.get("/v1/servers?status=paused").await),
        ["managed-1"]
    );
    assert_eq!(
        listed(&app.get("/v1/servers?status=online").await),
        Vec::<String>::new()
    );
    let resume = "/v1/admin/servers/managed-1/resume";
    let answer = call(&app, Method::POST, resume, Value::Null, &ops).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["effective_status"], "online");
    assert_eq!(answer.body["paused_at"], Value::Null);

    // Retire: hidden from the directory, still readable by id, the id stays taken, and
    // nothing about it changes any more.
    let retire = "/v1/admin/servers/managed-1/retire";
    let answer = call(
        &app,
        Method::POST,
        retire,
        json!({"reason": "decommissioned"}),
        &ops,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.body["retired_at"].is_string());
    assert_eq!(listed(&app.get("/v1/servers?sort=id").await), ["managed-2"]);
    assert_eq!(app.server("managed-1").await["server_id"], "managed-1");
    let again = app
        .admin_post(
            "/v1/admin/servers",
            &json!({"server_id": "managed-1", "public_key": Agent::new("thief").public_key_b64()}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let answer = call(&app, Method::POST, pause, Value::Null, &ops).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.code(), "server_retired");
    assert!(app.count("heartbeats").await >= 1, "history is kept");

    // The audit trail, newest first: who did what.
    let trail = audit(&app, "managed-1").await;
    let actions: Vec<(&str, &str)> = trail
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("retire", "key:ops"),
            ("resume", "key:ops"),
            ("pause", "admin"),
            ("edit", "key:ops"),
            ("edit", "key:ops"),
        ]
    );
    assert_eq!(trail[0]["detail"]["reason"], "decommissioned");
    assert_eq!(trail[4]["detail"]["labels"]["region"], "eu-west");
    // The trail is history: the database refuses to rewrite it.
    assert!(
        app.execute("UPDATE server_audit SET actor = 'nobody'")
            .await
            .is_err()
    );
    assert!(app.execute("DELETE FROM server_audit").await.is_err());

    // A restart loads what operators set.
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    assert!(app.server("managed-1").await["retired_at"].is_string());
    assert_eq!(app.server("managed-2").await["labels"], json!({}));
    app.stop().await;
}

async fn read_scoped_keys_are_refused_every_change() {
    let app = TestApp::spawn().await;
    let reader = vigil::api::auth::create_key(&app.db, "reader", Scope::Read, now_ms())
        .await
        .expect("key");
    let agent = Agent::new("guarded");
    app.register(&agent).await;
    let key = agent.public_key_b64();
    let now = format_rfc3339_ms(now_ms());
    let later = format_rfc3339_ms(now_ms() + 60_000);
    let writes = [
        (
            Method::PATCH,
            "/v1/admin/servers/guarded",
            json!({"display_name": "x"}),
        ),
        (Method::POST, "/v1/admin/servers/guarded/pause", Value::Null),
        (
            Method::POST,
            "/v1/admin/servers/guarded/resume",
            Value::Null,
        ),
        (
            Method::POST,
            "/v1/admin/servers/guarded/retire",
            Value::Null,
        ),
        (
            Method::POST,
            "/v1/admin/servers",
            json!([{"server_id": "bulk-x", "public_key": key}]),
        ),
        (
            Method::POST,
            "/v1/admin/maintenance",
            json!({"server_id": "guarded", "start": now, "end": later}),
        ),
        (Method::DELETE, "/v1/admin/maintenance/1", Value::Null),
    ];
    for (method, path, body) in writes {
        let answer = call(&app, method.clone(), path, body.clone(), &reader).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            answer.body
        );
        assert_eq!(answer.code(), "insufficient_scope");
        let anonymous = app
            .send_raw(method.clone(), path, body.to_string().into_bytes(), None)
            .await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    assert_eq!(app.count("server_audit").await, 0);
    assert_eq!(app.count("maintenance_windows").await, 0);
    assert_eq!(app.server("guarded").await["effective_status"], "unknown");
    // Reads are open to the read scope.
    let trail = call(
        &app,
        Method::GET,
        "/v1/admin/servers/guarded/audit",
        Value::Null,
        &reader,
    )
    .await;
    assert_eq!(trail.status, StatusCode::OK, "{:?}", trail.body);
    let windows = call(
        &app,
        Method::GET,
        "/v1/admin/maintenance",
        Value::Null,
        &reader,
    )
    .await;
    assert_eq!(windows.status, StatusCode::OK, "{:?}", windows.body);
    app.stop().await;
}

async fn a_list_registers_a_fleet_with_one_answer_per_row() {
    let app = TestApp::spawn().await;
    app.register(&Agent::new("fleet-taken")).await;
    let key = |id: &str| Agent::new(id).public_key_b64();
    let rows = json!([
        {"server_id": "fleet-1", "public_key": key("fleet-1"), "cluster_id": "eu"},
        {"server_id": "fleet-taken", "public_key": key("fleet-taken")},
        {"server_id": "Bad Id", "public_key": key("x")},
        {"server_id": "fleet-2", "public_key": "not base64"},
        {"server_id": "fleet-1", "public_key": key("fleet-1")},
        {"server_id": "fleet-3", "public_key": key("fleet-3"), "extra": 1},
        {"server_id": "fleet-4", "public_key": key("fleet-4"), "display_name": "Four"},
    ]);
    let answer = app.admin_post("/v1/admin/servers", &rows).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let statuses: Vec<(String, i64)> = answer.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["server_id"].as_str().unwrap().to_owned(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect();
    let expect = [
        ("fleet-1", 201),
        ("fleet-taken", 409),
        ("Bad Id", 422),
        ("fleet-2", 422),
        ("fleet-1", 409),
        ("fleet-3", 422),
        ("fleet-4", 201),
    ];
    assert_eq!(
        statuses,
        expect.map(|(id, s)| (id.to_owned(), s)).to_vec(),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body["created"], 2);
    assert_eq!(answer.body["failed"], 5);
    assert_eq!(answer.body["results"][1]["code"], "server_exists");
    assert_eq!(app.server("fleet-4").await["display_name"], "Four");
    let added_by = app
        .scalar(
            "SELECT COUNT(*) FROM server_keys WHERE server_id = 'fleet-1' AND added_by = 'admin'",
        )
        .await;
    assert_eq!(added_by, 1, "the key history records who registered it");
    // More rows than one request takes: refused whole, nothing stored.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"server_id": format!("many-{i}"), "public_key": key("m")}))
        .collect();
    let answer = app
        .admin_post("/v1/admin/servers", &Value::Array(many))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "too_many_rows");
    assert_eq!(app.count("servers").await, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vigil_server_import_reads_csv_and_json_and_reports_each_row() {
    let mut app = TestApp::spawn().await;
    let address = app.serve().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = |id: &str| Agent::new(id).public_key_b64();
    let csv = format!(
        "server_id,public_key,display_name,cluster_id\n\
         csv-1,{},CSV One,eu\n\
         csv-2,{},,\n\
         csv-1,{},dup,\n",
        key("csv-1"),
        key("csv-2"),
        key("csv-1")
    );
    std::fs::write(dir.path().join("fleet.csv"), csv).expect("writes");
    let json = json!([{"server_id": "json-1", "public_key": key("json-1")}]);
    std::fs::write(dir.path().join("fleet.json"), json.to_string()).expect("writes");
    let cli = Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN);
    let url = format!("http://{address}");
    let (csv_run, json_run) = tokio::task::spawn_blocking(move || {
        (
            cli.run(["server", "import", "fleet.csv", "--url", &url]),
            cli.run(["server", "import", "fleet.json", "--url", &url]),
        )
    })
    .await
    .expect("runs");
    assert!(
        !csv_run.success(),
        "one row was refused: {}",
        csv_run.stderr
    );
    let lines: Vec<Value> = csv_run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON answer per row"))
        .collect();
    let statuses: Vec<i64> = lines
        .iter()
        .map(|l| l["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 201, 409], "{}", csv_run.stdout);
    assert!(
        csv_run.stderr.contains("2 registered, 1 refused"),
        "{}",
        csv_run.stderr
    );
    assert!(json_run.success(), "{}", json_run.stderr);
    let one = app.server("csv-1").await;
    assert_eq!(
        (one["display_name"].as_str(), one["cluster_id"].as_str()),
        (Some("CSV One"), Some("eu"))
    );
    assert_eq!(
        app.server("csv-2").await["cluster_id"],
        Value::Null,
        "empty cells are absent"
    );
    assert_eq!(app.server("json-1").await["server_id"], "json-1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_server_keeps_quiet_until_resumed() {
    let (receiver, address) = crate::alerts::Receiver::start(0).await;
    let app =
        TestApp::spawn_with(|c| crate::alerts::alerting(c, address, &["server_offline"])).await;
    let agent = Agent::new("pausable");
    app.register(&agent).await;
    let sent = app
        .post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let pause = app
        .admin_post("/v1/admin/servers/pausable/pause", &json!({}))
        .await;
    assert_eq!(pause.status, StatusCode::OK, "{:?}", pause.body);
    let deadline =
        vigil::clock::parse_rfc3339_ms(pause.body["next_check_at"].as_str().expect("a deadline"))
            .expect("rfc 3339");
    // Past the deadline: no tick fired, so no transition and no alert.
    let wait = u64::try_from(deadline - now_ms() + 300).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let transitions = "SELECT COUNT(*) FROM status_transitions WHERE to_status = 'offline'";
    assert_eq!(app.scalar(transitions).await, 0);
    assert_eq!(app.count("alert_outbox").await, 0);
    assert_eq!(app.server("pausable").await["effective_status"], "paused");
    // Resumed: the deadline that passed fires at once.
    let resume = app
        .admin_post("/v1/admin/servers/pausable/resume", &json!({}))
        .await;
    assert_eq!(resume.status, StatusCode::OK, "{:?}", resume.body);
    let status = async || app.server("pausable").await["effective_status"].clone();
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        status,
        |s| s == "offline",
    )
    .await
    .expect("offline once resumed");
    receiver.wait_for("server_offline").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_maintenance_window_set_through_the_api_mutes_alerts_and_can_be_cancelled() {
    let (_receiver, address) = crate::alerts::Receiver::start(0).await;
    let app =
        TestApp::spawn_with(|c| crate::alerts::alerting(c, address, &["server_offline"])).await;
    let agent = Agent::new("api-window");
    app.register(&agent).await;
    let now = now_ms();
    let window = json!({
        "server_id": "api-window",
        "start": format_rfc3339_ms(now - 60_000),
        "end": format_rfc3339_ms(now + 3_600_000),
        "reason": "kernel upgrade",
    });
    let created = app.admin_post("/v1/admin/maintenance", &window).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["created_by"], "admin");
    for bad in [
        json!({"start": window["start"], "end": window["end"]}),
        json!({"server_id": "api-window", "cluster_id": "eu", "start": window["start"], "end": window["end"]}),
        json!({"server_id": "api-window", "start": window["end"], "end": window["start"]}),
        json!({"server_id": "api-window", "start": "yesterday", "end": window["end"]}),
        json!({"server_id": "nobody", "start": window["start"], "end": window["end"]}),
    ] {
        let answer = app.admin_post("/v1/admin/maintenance", &bad).await;
        assert!(answer.status.is_client_error(), "{bad}: {:?}", answer.body);
    }
    let sent = app
        .post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let states = async || {
        vigil_tests::with_pool!(&app.db.pool_for_tests(), pool => sqlx::query_scalar::<_, String>(
            "SELECT d.state FROM alert_deliveries d JOIN alert_outbox a ON a.id = d.alert_id \
             WHERE a.kind = 'server_offline'",
        )
        .fetch_all(pool)
        .await)
        .expect("deliveries")
    };
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        states,
        |s| s == &["muted"],
    )
    .await
    .expect("the offline alert is muted");
    let id = created.body["id"].as_i64().expect("id");
    let listed = app.get("/v1/admin/maintenance").await;
    assert_eq!(
        listed.status,
        StatusCode::UNAUTHORIZED,
        "admin listing needs a credential"
    );
    let cancelled = app
        .send_raw(
            Method::DELETE,
            &format!("/v1/admin/maintenance/{id}"),
            Vec::new(),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["cancelled_by"], "admin");
    let listed = call(
        &app,
        Method::GET,
        "/v1/admin/maintenance",
        Value::Null,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(listed.body["windows"], json!([]));
    assert!(
        app.execute("DELETE FROM maintenance_windows")
            .await
            .is_err()
    );
    app.stop().await;
}

vigil_tests::on_both_backends!(
    each_action_is_applied_and_audited_with_the_acting_key,
    read_scoped_keys_are_refused_every_change,
    a_list_registers_a_fleet_with_one_answer_per_row,
    schedules_are_checked_stored_audited_and_survive_a_restart,
);

/// Schedules (issue 16): set through the admin API, checked, audited, kept across a restart,
/// cleared; the CLI sets one with durations.
async fn schedules_are_checked_stored_audited_and_survive_a_restart() {
    let app = TestApp::spawn().await;
    app.register(&Agent::new("nightly")).await;
    let path = "/v1/admin/servers/nightly/schedule";
    let daily = json!({"cron": "0 3 * * *", "tz": "Europe/Berlin", "grace_seconds": 3600, "max_run_seconds": 7200});
    let answer = call(&app, Method::PUT, path, daily.clone(), ADMIN_TOKEN).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["schedule"], daily);
    // Bad schedules change nothing.
    for bad in [
        json!({"cron": "0 3 * *", "grace_seconds": 60}),
        json!({"cron": "61 3 * * *", "grace_seconds": 60}),
        json!({"cron": "0 3 * * *", "tz": "Mars/Olympus", "grace_seconds": 60}),
        json!({"period_seconds": 0, "grace_seconds": 60}),
        json!({"period_seconds": 2_592_001, "grace_seconds": 60}),
        json!({"period_seconds": 60, "cron": "* * * * *", "grace_seconds": 60}),
        json!({"period_seconds": 60, "tz": "UTC", "grace_seconds": 60}),
        json!({"grace_seconds": 60}),
        json!({"period_seconds": 60, "grace_seconds": 60, "max_run_seconds": 0}),
        json!({"period_seconds": 60, "grace_seconds": 60, "extra": 1}),
    ] {
        let answer = call(&app, Method::PUT, path, bad.clone(), ADMIN_TOKEN).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schedule"),
            "{bad}: {:?}",
            answer.body
        );
    }
    let unknown = call(
        &app,
        Method::PUT,
        "/v1/admin/servers/nope/schedule",
        daily.clone(),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(unknown.code(), "unknown_server");
    let rows = audit(&app, "nightly").await;
    assert_eq!(rows[0]["action"], "schedule", "{rows:?}");
    // Stored: a host restarted on the same data shows it.
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    assert_eq!(app.server("nightly").await["schedule"], daily);
    let weekly = json!({"period_seconds": 604_800, "grace_seconds": 0});
    let answer = call(&app, Method::PUT, path, weekly.clone(), ADMIN_TOKEN).await;
    assert_eq!(answer.body["schedule"], weekly, "{:?}", answer.body);
    let cleared = call(&app, Method::DELETE, path, Value::Null, ADMIN_TOKEN).await;
    assert_eq!(cleared.status, StatusCode::OK, "{:?}", cleared.body);
    assert_eq!(cleared.body["schedule"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vigil_server_schedule_sets_a_cron_schedule_with_durations() {
    let mut app = TestApp::spawn().await;
    app.register(&Agent::new("backup")).await;
    let address = app.serve().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN);
    let url = format!("http://{address}");
    let run = tokio::task::spawn_blocking(move || {
        cli.run([
            "server",
            "schedule",
            "backup",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
            "--grace",
            "1h",
            "--max-run",
            "2h",
            "--url",
            &url,
        ])
    })
    .await
    .expect("runs");
    assert!(run.success(), "{}", run.stderr);
    assert_eq!(
        app.server("backup").await["schedule"],
        json!({"cron": "0 3 * * *", "tz": "Europe/Berlin", "grace_seconds": 3600, "max_run_seconds": 7200})
    );
    app.stop().await;
}

/// A path segment that does not parse (an id past `i64`, a token id that is not a number)
/// is a problem+json 422 `invalid_path`, not axum's plain-text 400.
#[tokio::test]
async fn an_unparsable_path_id_is_a_problem_not_plain_text() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("path-ids");
    app.register(&agent).await;
    for (method, path) in [
        (Method::DELETE, "/v1/admin/maintenance/9223372036854775808"),
        (
            Method::DELETE,
            "/v1/admin/servers/path-ids/tokens/not-a-number",
        ),
    ] {
        let answer = call(&app, method, path, Value::Null, ADMIN_TOKEN).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert!(
            answer.content_type.starts_with("application/problem+json"),
            "{path}: {}",
            answer.content_type
        );
        assert_eq!(answer.code(), "invalid_path", "{path}: {:?}", answer.body);
    }
}
