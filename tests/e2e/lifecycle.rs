//! Policy lifecycle: hot swap under load through the watched folder, broken modules refused,
//! automatic rollback, signatures on every path, the admin API and the config pin.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use vigil::policy::digest_of;
use vigil::policy::signing::sign;
use vigil_tests::{
    ADMIN_TOKEN, Agent, TestApp, default_policy_version, policy_variant, wait_for_active,
    wait_until, with_world_major_2,
};

/// Generous: these waits are for correctness, not speed (the benchmark measures speed).
const PATIENCE: Duration = Duration::from_secs(60);
/// How often those waits look again.
const POLL: Duration = Duration::from_millis(20);

async fn upload(
    app: &TestApp,
    bytes: &[u8],
    signature: Option<&str>,
    activate: bool,
) -> vigil_tests::Answer {
    let path = if activate {
        "/v1/admin/policies?activate=true"
    } else {
        "/v1/admin/policies"
    };
    let mut request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    if let Some(sig) = signature {
        request = request.header("vigil-policy-signature", sig);
    }
    let request = request
        .body(axum::body::Body::from(bytes.to_vec()))
        .expect("request");
    app.send(request).await
}

async fn wait_for_refusals(app: &TestApp, n: usize) -> Vec<Value> {
    let refused = async || {
        app.get("/v1/policies").await.body["refused"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_until(PATIENCE, POLL, refused, |refused| refused.len() >= n)
        .await
        .unwrap_or_else(|refused| panic!("only {refused:?} refused"))
}

async fn a_version_dropped_into_the_folder_under_load_swaps_without_failing_a_request() {
    let next = default_policy_version("1.9.0");
    let next_digest = digest_of(&next);
    let folder = tempfile::tempdir().expect("folder");
    let dir = folder.path().to_path_buf();
    let app = Arc::new(TestApp::spawn_with(|c| c.policy.dir = Some(dir)).await);
    let before = app.state.engine.policy().digest().to_owned();
    assert_ne!(before, next_digest);
    let agents: Vec<Agent> = (0..4).map(|i| Agent::new(&format!("load-{i}"))).collect();
    for agent in &agents {
        app.register(agent).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for agent in &agents {
                    let answer = app
                        .post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 30})))
                        .await;
                    statuses.push((answer.status, answer.body["policy"].clone()));
                }
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A copy in two writes: the watcher must not act on the first half.
    let file = folder.path().join("default-1.9.0.wasm");
    let half = next.len() / 2;
    std::fs::write(&file, &next[..half]).expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .expect("open");
        f.write_all(&next[half..]).expect("write");
    }
    wait_for_active(&app, &next_digest, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = sender.await.expect("sender");
    assert!(
        statuses.len() > 20,
        "the sender kept posting: {}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|(s, _)| *s == StatusCode::ACCEPTED),
        "every request got 202: {:?}",
        statuses
            .iter()
            .filter(|(s, _)| *s != StatusCode::ACCEPTED)
            .collect::<Vec<_>>()
    );
    assert_eq!(statuses.last().expect("some").1, "default@1.9.0");
    wait_for_active(&app, &next_digest, PATIENCE).await;
    for i in 0..4 {
        let server = app
            .store
            .get_server(&format!("load-{i}"))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            server.snapshot.policy.expect("computed").digest,
            next_digest,
            "load-{i} is computed by the new digest"
        );
    }
    // Determinism across the swap: replaying each server's window through the new version
    // gives exactly the snapshot that the rebuild plus the live events after it produced.
    for i in 0..4 {
        assert_equals_its_replay(&app, &format!("load-{i}")).await;
    }
    let log = app.store.activations(1).await.expect("log");
    assert_eq!(log[0].who, "watched-folder");
    assert_eq!(log[0].from_digest.as_deref(), Some(before.as_str()));
    assert_eq!(log[0].to_digest, next_digest);
}

async fn broken_modules_change_nothing_and_are_reported() {
    let folder = tempfile::tempdir().expect("folder");
    let dir = folder.path().to_path_buf();
    let app = TestApp::spawn_with(|c| c.policy.dir = Some(dir)).await;
    let active = app.state.engine.policy().digest().to_owned();
    let stored = app.count("policies").await;
    let garbage = b"\0asm definitely not a component".to_vec();
    let major2 = with_world_major_2(vigil::policy::DEFAULT_POLICY);
    let bad_describe = policy_variant(
        "vigil-test-policy-misbehaving",
        &[("VIGIL_TEST_POLICY_DESCRIBE", "trap")],
    );
    // Through the admin API: refused with a reason.
    for (bytes, needle) in [
        (&garbage, "not a valid component"),
        (&major2, "vigil:policy@2.0.0"),
        (&bad_describe, "trap"),
    ] {
        let answer = upload(&app, bytes, None, true).await;
        assert_eq!(answer.status, 422, "{:?}", answer.body);
        assert_eq!(answer.body["code"], "policy_invalid");
        let detail = answer.body["detail"].as_str().unwrap_or("");
        assert!(detail.contains(needle), "{needle}: {detail}");
    }
    // Through the watched folder: reported and ignored.
    std::fs::write(folder.path().join("garbage-1.0.0.wasm"), &garbage).expect("write");
    std::fs::write(folder.path().join("default-2.0.0.wasm"), &major2).expect("write");
    std::fs::write(folder.path().join("misbehaving-1.0.0.wasm"), &bad_describe).expect("write");
    let refused = wait_for_refusals(&app, 6).await;
    let folder_refusals: Vec<&Value> = refused
        .iter()
        .filter(|r| {
            r["source"]
                .as_str()
                .unwrap_or("")
                .starts_with("watched-folder:")
        })
        .collect();
    assert_eq!(folder_refusals.len(), 3, "{refused:#?}");
    assert!(
        folder_refusals.iter().any(|r| r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("vigil:policy@2.0.0")),
        "{refused:#?}"
    );
    assert_eq!(
        app.state.engine.policy().digest(),
        active,
        "nothing was activated"
    );
    assert_eq!(app.count("policies").await, stored, "nothing was stored");
    assert_eq!(app.count("policy_activations").await, 1);
}

async fn a_version_that_traps_on_every_heartbeat_is_rolled_back_and_the_log_says_why() {
    let app = TestApp::spawn_with(|c| {
        c.policy.probation_evaluations = 6;
        c.policy.max_failure_share = 0.5;
    })
    .await;
    let good = app.state.engine.policy().digest().to_owned();
    let agent = Agent::new("probation");
    app.register(&agent).await;
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        202
    );
    let bad = policy_variant(
        "vigil-test-policy-misbehaving",
        &[
            ("VIGIL_TEST_POLICY_BEHAVIOUR", "trap-live"),
            ("VIGIL_TEST_POLICY_VERSION", "6.6.6"),
        ],
    );
    let answer = upload(&app, &bad, None, true).await;
    assert_eq!(
        answer.status, 201,
        "it passes validation: {:?}",
        answer.body
    );
    assert_eq!(answer.body["activation"]["active"], digest_of(&bad));
    for _ in 0..10 {
        let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
    }
    wait_for_active(&app, &good, PATIENCE).await;
    let log = app.store.activations(1).await.expect("log");
    assert_eq!(log[0].who, "auto-rollback");
    assert_eq!(
        log[0].from_digest.as_deref(),
        Some(digest_of(&bad).as_str())
    );
    assert_eq!(log[0].to_digest, good);
    assert!(
        log[0].reason.contains("automatic rollback"),
        "{}",
        log[0].reason
    );
    assert!(log[0].reason.contains("trap"), "{}", log[0].reason);
    assert_eq!(app.state.engine.stats().policy_rollbacks, 1);
    // The answers and snapshots are the good version's again.
    let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(answer.body["policy"], "default@1.3.0");
    let server = app
        .store
        .get_server("probation")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(server.snapshot.policy.expect("computed").digest, good);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_require_signed_unsigned_and_tampered_modules_are_refused_and_a_signed_one_activates()
{
    let author = SigningKey::generate(&mut rand::rngs::OsRng);
    let stranger = SigningKey::generate(&mut rand::rngs::OsRng);
    let trusted = vigil::ingest::signature::public_key_of(&author).to_base64();
    let folder = tempfile::tempdir().expect("folder");
    let dir = folder.path().to_path_buf();
    let app = TestApp::spawn_with(|c| {
        c.policy.dir = Some(dir);
        c.policy.require_signed = true;
        c.policy.trusted_keys = vec![trusted];
    })
    .await;
    let active = app.state.engine.policy().digest().to_owned();
    let v2 = default_policy_version("1.2.0");
    let v3 = default_policy_version("1.3.0");
    let digest2 = digest_of(&v2);
    // Admin API: unsigned, signed by a stranger, signature of other bytes (tampered).
    let answer = upload(&app, &v2, None, true).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (403, "policy_unsigned")
    );
    let answer = upload(&app, &v2, Some(&sign(&stranger, &digest2)), true).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (403, "policy_signature_untrusted")
    );
    let answer = upload(&app, &v2, Some(&sign(&author, &digest_of(&v3))), true).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (403, "policy_signature_untrusted")
    );
    // Watched folder: unsigned, and a tampered component beside a valid signature.
    std::fs::write(folder.path().join("default-1.2.0.wasm"), &v2).expect("write");
    let mut tampered = v3.clone();
    tampered.extend_from_slice(b"\0"); // trailing bytes change the digest
    std::fs::write(
        folder.path().join("default-1.3.0.wasm.sig"),
        sign(&author, &digest_of(&v3)),
    )
    .expect("write");
    std::fs::write(folder.path().join("default-1.3.0.wasm"), &tampered).expect("write");
    let refused = wait_for_refusals(&app, 5).await;
    assert!(
        refused
            .iter()
            .any(|r| r["source"] == "watched-folder:default-1.2.0.wasm"
                && r["reason"].as_str().unwrap_or("").contains("not signed")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["source"] == "watched-folder:default-1.3.0.wasm"
                && r["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no trusted key")),
        "{refused:#?}"
    );
    assert_eq!(
        app.state.engine.policy().digest(),
        active,
        "nothing was activated"
    );
    assert_eq!(app.count("policy_activations").await, 1);
    // A signed one activates.
    let answer = upload(&app, &v2, Some(&sign(&author, &digest2)), true).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(
        answer.body["signer"],
        vigil::ingest::signature::public_key_of(&author).fingerprint()
    );
    wait_for_active(&app, &digest2, PATIENCE).await;
}

async fn admin_api_uploads_activates_lists_rolls_back_and_follows_the_config_pin() {
    let app = TestApp::spawn().await;
    let first = app.state.engine.policy().digest().to_owned();
    let agent = Agent::new("admin-swap");
    app.register(&agent).await;
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        202
    );
    let v4 = default_policy_version("1.4.0");
    let v5 = default_policy_version("1.5.0");
    for bytes in [&v4, &v5] {
        let answer = upload(&app, bytes, None, false).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    assert_eq!(
        app.state.engine.policy().digest(),
        first,
        "upload alone activates nothing"
    );
    let mut live = app.state.live.subscribe();
    let answer = app
        .admin_post(
            "/v1/admin/policies/activate",
            &json!({"policy": "default@1.4.0", "reason": "try it"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["active"], digest_of(&v4));
    // The swap is announced: a live `policy_activation` event and the `policy_active` metric.
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let event = live.recv().await.expect("live bus open");
            if let vigil::live::LiveEvent::PolicyActivation { .. } = &*event {
                return event;
            }
        }
    })
    .await
    .expect("a policy_activation event");
    match &*event {
        vigil::live::LiveEvent::PolicyActivation {
            from_digest,
            to_digest,
            reason,
            ..
        } => {
            assert_eq!(from_digest.as_deref(), Some(first.as_str()));
            assert_eq!(*to_digest, digest_of(&v4));
            assert_eq!(reason, "try it");
        }
        _ => unreachable!(),
    }
    let metrics = app.get("/metrics").await.body;
    let metrics = metrics.as_str().expect("text body");
    let active: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("policy_active") && !l.starts_with('#'))
        .collect();
    assert_eq!(active.len(), 1, "{metrics}");
    assert!(active[0].contains(&digest_of(&v4)), "{metrics}");
    let list = app.get("/v1/policies").await.body;
    assert_eq!(list["active"]["version"], "1.4.0");
    assert_eq!(list["policies"].as_array().map(Vec::len), Some(3));
    assert_eq!(list["activations"][0]["reason"], "try it");
    let answer = app
        .admin_post("/v1/admin/policies/rollback", &json!({}))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["active"], first);
    let answer = app
        .admin_post(
            "/v1/admin/policies/activate",
            &json!({"policy": "nope@9.9.9"}),
        )
        .await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (404, "policy_not_found")
    );
    let answer = app
        .send_raw(
            Method::POST,
            "/v1/admin/policies/rollback",
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(answer.status, 401);
    // Editing `[policy] active` activates the pinned version.
    let mut config = (*app.state.config.current()).clone();
    config.policy.active = Some("default@1.5.0".into());
    app.state.config.replace(config);
    wait_for_active(&app, &digest_of(&v5), PATIENCE).await;
    assert_eq!(
        app.store.activations(1).await.expect("log")[0].who,
        "config"
    );
    let server = app
        .store
        .get_server("admin-swap")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        server.snapshot.policy.expect("computed").digest,
        digest_of(&v5)
    );
}

async fn the_last_activated_version_survives_a_restart() {
    let app = TestApp::spawn().await;
    let v8 = default_policy_version("1.8.0");
    assert_eq!(upload(&app, &v8, None, true).await.status, 201);
    wait_for_active(&app, &digest_of(&v8), PATIENCE).await;
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    assert_eq!(app.state.engine.policy().digest(), digest_of(&v8));
    assert_eq!(
        app.count("policy_activations").await,
        2,
        "a resume is not a new activation"
    );
}

async fn wait_for_comparisons(app: &TestApp, n: u64) -> Value {
    let report = async || app.get("/v1/policies/shadow").await.body;
    wait_until(PATIENCE, POLL, report, |report| {
        report["comparisons"].as_u64().unwrap_or(0) >= n
    })
    .await
    .unwrap_or_else(|report| panic!("shadow stalled: {report:#}"))
}

async fn shadow_evaluation_never_changes_a_live_answer_or_snapshot() {
    let app = TestApp::spawn().await;
    let active = app.state.engine.policy();
    assert_eq!(app.get("/v1/policies/shadow").await.code(), "no_shadow");
    // A candidate that disagrees (always online/green) and one that traps on live servers.
    let agreeable = policy_variant(
        "vigil-test-policy-misbehaving",
        &[("VIGIL_TEST_POLICY_VERSION", "7.0.0")],
    );
    let trapping = policy_variant(
        "vigil-test-policy-misbehaving",
        &[
            ("VIGIL_TEST_POLICY_BEHAVIOUR", "trap-live"),
            ("VIGIL_TEST_POLICY_VERSION", "7.0.1"),
        ],
    );
    for bytes in [&agreeable, &trapping] {
        assert_eq!(upload(&app, bytes, None, false).await.status, 201);
    }
    let agent = Agent::new("shadowed");
    let spoofer = Agent::new("shadowed");
    app.register(&agent).await;
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        202
    );

    let mut sent = 0;
    for (candidate, expect_errors) in [("misbehaving@7.0.0", false), ("misbehaving@7.0.1", true)] {
        let answer = app
            .admin_post("/v1/admin/policies/shadow", &json!({"policy": candidate}))
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        for i in 0..6 {
            let answer = app
                .post_heartbeat(&agent.heartbeat(json!({"players_current": i})))
                .await;
            assert_eq!(answer.status, 202, "{:?}", answer.body);
            assert_eq!(answer.body["policy"], "default@1.3.0");
            assert_eq!(
                answer.body["confidence"], "yellow",
                "a new unverified server"
            );
            sent += 1;
        }
        assert_eq!(
            app.post_heartbeat(&spoofer.heartbeat(json!({})))
                .await
                .status,
            401
        );
        let report = wait_for_comparisons(&app, 7).await;
        assert_eq!(report["policy"], candidate);
        if expect_errors {
            assert!(
                report["policy_errors"].as_u64().unwrap_or(0) > 0,
                "{report:#}"
            );
        } else {
            assert_eq!(report["policy_errors"], 0, "{report:#}");
            let d = &report["disagreements"][0];
            assert_eq!(d["live"]["confidence"], "yellow", "{report:#}");
            assert_eq!(d["shadow"]["confidence"], "green", "{report:#}");
            assert!(report["agreement_rate"].as_f64().unwrap_or(1.0) < 1.0);
        }
    }
    assert_eq!(sent, 12);
    let answer = app
        .admin_post("/v1/admin/policies/shadow", &json!({"policy": null}))
        .await;
    assert_eq!(answer.status, 204);
    // Live state is exactly what the active version alone computes from the stored history.
    let live = app
        .store
        .get_server("shadowed")
        .await
        .expect("read")
        .expect("exists");
    let history = app.store.history("shadowed", 0).await.expect("history");
    let (alone, _) =
        vigil::engine::replay::replay(&active, &live, &history, live.snapshot.evaluated_at_ms)
            .expect("replays");
    assert_eq!(alone.snapshot, live.snapshot);
    assert_eq!(
        live.snapshot.policy.expect("computed").digest,
        active.digest()
    );
    assert_eq!(live.snapshot.policy_errors, 0);
    assert_eq!(app.state.engine.stats().policy_errors, 0);
    assert_eq!(app.state.engine.policy().digest(), active.digest());
}

async fn a_swap_rebuilds_long_histories_two_at_a_time_and_each_equals_its_replay() {
    let app = TestApp::spawn().await;
    let agents: Vec<Agent> = (0..5).map(|i| Agent::new(&format!("long-{i}"))).collect();
    for agent in &agents {
        app.register(agent).await;
    }
    // More than 512 events per pair of servers, so the rebuild replays two servers at once on
    // two threads; distinct players per server, so results swapped between servers would show.
    for round in 0..300u32 {
        for (i, agent) in agents.iter().enumerate() {
            let players = i as u32 * 3 + round % 2;
            let body = agent.heartbeat(json!({
                "interval_seconds": 30, "players_current": players, "players_capacity": 20,
            }));
            assert_eq!(app.post_heartbeat(&body).await.status, 202);
        }
    }
    let rebuilt_before = app.state.engine.stats().snapshots_rebuilt;
    let next = default_policy_version("1.6.0");
    let answer = upload(&app, &next, None, true).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    wait_for_active(&app, &digest_of(&next), PATIENCE).await;
    assert!(
        app.state.engine.stats().snapshots_rebuilt >= rebuilt_before + 5,
        "every server was rebuilt"
    );
    for i in 0..5 {
        let id = format!("long-{i}");
        let live = assert_equals_its_replay(&app, &id).await;
        assert_eq!(
            live.snapshot.policy.as_ref().expect("computed").digest,
            digest_of(&next)
        );
        assert_eq!(
            live.snapshot.scores.get("activity"),
            Some(f64::from(i as u32 * 3 + 1) * 5.0),
            "{id} has its own snapshot"
        );
        let history = app.store.history(&id, 0).await.expect("history");
        assert_eq!(history.len(), 300);
    }
}

/// Replaying `id`'s history window through the active policy up to its last evaluation gives
/// exactly its stored snapshot. Returns the stored record.
async fn assert_equals_its_replay(app: &TestApp, id: &str) -> vigil::store::ServerRecord {
    let policy = app.state.engine.policy();
    let window_ms = policy.description().history_window_seconds as i64 * 1000;
    let live = app
        .store
        .get_server(id)
        .await
        .expect("read")
        .expect("exists");
    let history = app
        .store
        .replay_history(id, window_ms)
        .await
        .expect("history");
    let (replayed, _) =
        vigil::engine::replay::replay(&policy, &live, &history, live.snapshot.evaluated_at_ms)
            .expect("replays");
    assert_eq!(replayed.snapshot, live.snapshot, "{id}");
    live
}

vigil_tests::on_both_backends!(
    a_swap_rebuilds_long_histories_two_at_a_time_and_each_equals_its_replay,
    a_version_dropped_into_the_folder_under_load_swaps_without_failing_a_request,
    broken_modules_change_nothing_and_are_reported,
    a_version_that_traps_on_every_heartbeat_is_rolled_back_and_the_log_says_why,
    admin_api_uploads_activates_lists_rolls_back_and_follows_the_config_pin,
    the_last_activated_version_survives_a_restart,
    shadow_evaluation_never_changes_a_live_answer_or_snapshot,
);
