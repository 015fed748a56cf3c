//! The Hermes marketplace read surface (`[compat.hermes]`) against a host running the bundled
//! reputation policy: the exact shapes of `trust-score`, `reputation` and `leaderboard`, with
//! the numbers of Hermes's formula for a known history (computed here independently, the way
//! Hermes's `reputation.py` does, two-pass), and 404 while the family is off.

use serde_json::{Value, json};
use vigil_tests::{Agent, TestApp};

/// Hermes's trust score and components of a list of tasks `(success, execution_ms,
/// promised_ms, rating)` for an agent registered less than a day ago (uptime 0).
fn hermes(tasks: &[(bool, f64, f64, f64)]) -> (f64, [f64; 5]) {
    let n = tasks.len() as f64;
    let success = tasks.iter().filter(|t| t.0).count() as f64 / n;
    let samples: Vec<f64> = tasks
        .iter()
        .map(|t| (1.0 - (t.1 / t.2 - 1.0)).clamp(0.0, 1.0))
        .collect();
    let latency = samples.iter().sum::<f64>() / n;
    let rating = (tasks.iter().map(|t| t.3).sum::<f64>() / n - 1.0) / 4.0;
    let variance = samples.iter().map(|x| (x - latency).powi(2)).sum::<f64>() / n;
    let consistency = (1.0 - variance).max(0.0);
    let trust = 0.4 * success + 0.2 * latency + 0.2 * rating + 0.1 * 0.0 + 0.1 * consistency;
    (trust, [success, latency, rating, 0.0, consistency])
}

/// `actual` equals `expected`: same keys everywhere, same strings, numbers within 1e-9.
fn assert_same(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (a.as_f64().expect("f64"), e.as_f64().expect("f64"));
            assert!((a - e).abs() < 1e-9, "{at}: {a} != {e}");
        }
        (Value::Object(a), Value::Object(e)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(a), keys(e), "{at}: keys");
            for (k, v) in e {
                assert_same(&a[k], v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{at}: {actual} vs {expected}");
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                assert_same(a, e, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at}"),
    }
}

fn round(v: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (v * scale).round() / scale
}

async fn hermes_reads_answer_in_hermes_shapes_with_the_formula_s_numbers() {
    let app = TestApp::spawn().await;
    let paths = [
        "/api/v1/marketplace/agents/agent-a/trust-score",
        "/api/v1/marketplace/agents/agent-a/reputation",
        "/api/v1/marketplace/leaderboard",
    ];
    for path in paths {
        let answer = app.get(path).await;
        assert_eq!(answer.status, 404, "{path} while [compat.hermes] is off");
        assert_eq!(answer.code(), "not_found", "{path}: like any unknown route");
    }
    let mut config = (*app.state.config.current()).clone();
    config.compat.hermes.enabled = true;
    app.state.config.replace(config);

    // Bindings do not exist yet: the bundled reputation policy becomes the active one.
    let answer = app
        .admin_post(
            "/v1/admin/policies/activate",
            &json!({"policy": "reputation@2.0.0"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    // Hermes's own example (reputation.py): 2.5 s of 3, 1.8 s of 2, a failed 5 s of 3.
    let a_tasks = [
        (true, 2500.0, 3000.0, 5.0),
        (true, 1800.0, 2000.0, 4.0),
        (false, 5000.0, 3000.0, 2.0),
    ];
    let b_tasks = [(true, 800.0, 1000.0, 5.0), (true, 800.0, 1000.0, 4.0)];
    let agents = [
        (Agent::new("agent-a"), &a_tasks[..]),
        (Agent::new("agent-b"), &b_tasks[..]),
        (Agent::new("agent-c"), &[][..]),
    ];
    for (agent, tasks) in &agents {
        app.register(agent).await;
        let mut bodies: Vec<Value> = tasks
            .iter()
            .map(|t| {
                json!({"interval_seconds": 60, "metrics": {"task_success": u8::from(t.0),
                    "execution_ms": t.1, "promised_ms": t.2, "rating": t.3}})
            })
            .collect();
        if tasks.is_empty() {
            // Liveness only: no task, Hermes's neutral 0.5.
            bodies.push(json!({"interval_seconds": 60}));
        }
        for body in bodies {
            let answer = app.post_heartbeat(&agent.heartbeat(body)).await;
            assert_eq!(answer.status, 202, "{:?}", answer.body);
        }
    }
    app.verify("agent-b").await;

    let (a_trust, a_parts) = hermes(&a_tasks);
    let (b_trust, _) = hermes(&b_tasks);
    assert!((0.60..0.65).contains(&a_trust), "grade C: {a_trust}");
    assert!((0.85..0.90).contains(&b_trust), "grade A-: {b_trust}");

    let answer = app
        .get("/api/v1/marketplace/agents/agent-a/trust-score")
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_same(
        &answer.body,
        &json!({"agent_id": "agent-a", "trust_score": round(a_trust, 3), "grade": "C"}),
        "trust-score",
    );

    let answer = app
        .get("/api/v1/marketplace/agents/agent-a/reputation")
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let last_updated = answer.body["last_updated"].clone();
    assert!(last_updated.is_string(), "{last_updated}");
    assert_same(
        &answer.body,
        &json!({
            "agent_id": "agent-a",
            "trust_score": a_trust,
            "grade": "C",
            "breakdown": {
                "success_rate": a_parts[0],
                "latency_score": a_parts[1],
                "rating_score": a_parts[2],
                "uptime_score": a_parts[3],
                "consistency_score": a_parts[4],
            },
            "badges": [],
            "stats": {
                "total_contracts": 3,
                "successful_contracts": 2,
                "failed_contracts": 1,
                "success_percentage": 66.7,
                "avg_execution_time": 3.1,
            },
            "last_updated": last_updated,
        }),
        "reputation",
    );
    let b = app
        .get("/api/v1/marketplace/agents/agent-b/reputation")
        .await
        .body;
    assert_eq!(
        b["badges"],
        json!(["verified-pro", "perfect", "lightning-fast"])
    );
    assert_eq!(b["grade"], "A-");

    let answer = app.get("/api/v1/marketplace/leaderboard").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let entry = |rank: u32, id: &str, trust: f64, grade: &str, tasks: u32, success: f64| {
        json!({"rank": rank, "agent_id": id, "agent_name": id, "trust_score": round(trust, 3),
            "grade": grade, "total_contracts": tasks, "success_rate": success})
    };
    assert_same(
        &answer.body,
        &json!({"metric": "trust_score", "leaderboard": [
            entry(1, "agent-b", b_trust, "A-", 2, 100.0),
            entry(2, "agent-a", a_trust, "C", 3, 66.7),
            entry(3, "agent-c", 0.5, "D", 0, 50.0),
        ]}),
        "leaderboard",
    );
    let answer = app
        .get("/api/v1/marketplace/leaderboard?metric=total_contracts&limit=2")
        .await;
    let ids: Vec<&str> = answer.body["leaderboard"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["agent_id"].as_str())
        .collect();
    // agent-b is verified (2 tasks × 1.0); agent-a is not (3 × unverified_weight 0.5).
    assert_eq!(ids, ["agent-b", "agent-a"], "{:?}", answer.body);

    for (path, status, detail) in [
        (
            "/api/v1/marketplace/leaderboard?metric=total_earnings",
            400,
            "Invalid metric",
        ),
        (
            "/api/v1/marketplace/leaderboard?limit=51",
            422,
            "limit must be a whole number from 1 to 50",
        ),
        (
            "/api/v1/marketplace/agents/nobody/trust-score",
            404,
            "No reputation data found for this agent",
        ),
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.body, json!({"detail": detail}), "{path}");
    }
    app.stop().await;
}

vigil_tests::on_both_backends!(hermes_reads_answer_in_hermes_shapes_with_the_formula_s_numbers);
