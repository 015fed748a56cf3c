//! Several hosts, one PostgreSQL: two real `vigil serve` processes on one database.
//!
//! Policy activation across hosts is not tested here: the activation API (issue 3) is not on
//! this branch. The same LISTEN/NOTIFY path is tested with admin changes instead (a server
//! registered on one host is known by the other; a verification on one host is enforced by the
//! other within 1 s).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use vigil_tests::{ADMIN_TOKEN, Agent, Cli, ServeProcess, postgres, wait_until};

/// How long a change on one host may take to reach the other.
const WITHIN: Duration = Duration::from_secs(1);

/// A `vigil serve` process on the shared database, with an HTTP client.
struct Host {
    serve: ServeProcess,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start(database_url: &str, extra_config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let serve = ServeProcess::start(
            &Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN),
            &format!(
                "[storage]\nurl = \"{database_url}\"\n\
                 [rate_limit]\nper_server_per_minute = 0\nper_ip_per_minute = 0\n\
                 {extra_config}\n"
            ),
        );
        Self {
            url: serve.url(),
            serve,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: &Value, admin: bool) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(body);
        if admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = request.send().await.expect("host answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn heartbeat(&self, body: &Value) -> (u16, Value) {
        self.post("/v1/agent/heartbeat", body, false).await
    }

    async fn register(&self, agent: &Agent) {
        let body = json!({"server_id": agent.server_id, "public_key": agent.public_key_b64()});
        let (status, answer) = self.post("/v1/admin/servers", &body, true).await;
        assert_eq!(status, 201, "{answer}");
    }

    async fn server(&self, id: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/v1/servers/{id}", self.url))
            .send()
            .await
            .expect("host answers");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("json")
    }
}

/// Two hosts `config` adds to on a fresh database of the test PostgreSQL server, or `None`
/// (skipped) without one.
async fn two_hosts(name: &str, config: &str) -> Option<(Host, Host, PgPool)> {
    let server = postgres::server_url()?;
    let name = format!("vigil_scale_{name}_{}", std::process::id());
    let url = postgres::ensure_database(server, &name).await;
    let pool = PgPool::connect(&url).await.expect("connect");
    Some((Host::start(&url, config), Host::start(&url, config), pool))
}

/// Posts heartbeats of `agent` to `host` every 20 ms until an answer's status is `done`, at
/// most 1 s: `Ok` with that answer, or `Err` with the last one.
async fn heartbeats_until(
    host: &Host,
    agent: &Agent,
    done: impl Fn(u16) -> bool,
) -> Result<(u16, Value), (u16, Value)> {
    let heartbeat = async || host.heartbeat(&agent.heartbeat(json!({}))).await;
    let every = Duration::from_millis(20);
    wait_until(WITHIN, every, heartbeat, |(status, _)| done(*status)).await
}

/// Posts heartbeats of a server just registered elsewhere until `host` knows it (the NOTIFY of
/// the registration reached it), at most 1 s. Returns the last answer.
async fn until_known(host: &Host, agent: &Agent) -> (u16, Value) {
    heartbeats_until(host, agent, |status| status != 404)
        .await
        .unwrap_or_else(|last| last)
}

/// Whether `host` accepts a heartbeat of `agent` within 1 s.
async fn accepted_within_a_second(host: &Host, agent: &Agent) -> bool {
    heartbeats_until(host, agent, |status| status == 202)
        .await
        .is_ok()
}

async fn scalar(pool: &PgPool, sql: &'static str, id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("query")
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_alternated_between_two_hosts_keep_one_consistent_snapshot() {
    let Some((a, b, pool)) = two_hosts("alternate", "").await else {
        return;
    };
    let agent = std::sync::Arc::new(Agent::new("shared-1"));
    a.register(&agent).await;
    let (status, answer) = until_known(&b, &agent).await;
    assert_eq!(
        status, 202,
        "a server registered on A is known by B: {answer}"
    );

    // In turn: each host must fold on top of what the other just committed.
    for i in 0..12u32 {
        let host = if i % 2 == 0 { &a } else { &b };
        let (status, answer) = host
            .heartbeat(&agent.heartbeat(json!({"players_current": i})))
            .await;
        assert_eq!(status, 202, "heartbeat {i}: {answer}");
        assert_eq!(answer["duplicate"], false);
    }
    let seq = "SELECT event_seq FROM servers WHERE server_id = $1";
    assert_eq!(scalar(&pool, seq, "shared-1").await, 13);
    assert_eq!(a.server("shared-1").await["players_current"], 11);

    // At the same time: heartbeats with increasing timestamps sent to both hosts at once.
    let hosts = std::sync::Arc::new((a, b));
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let (hosts, agent) = (hosts.clone(), agent.clone());
        tasks.push(tokio::spawn(async move {
            let host = if i % 2 == 0 { &hosts.0 } else { &hosts.1 };
            host.heartbeat(&agent.heartbeat(json!({"players_current": 100 + i})))
                .await
                .0
        }));
    }
    let mut accepted = 13;
    for task in tasks {
        match task.await.expect("task") {
            202 => accepted += 1,
            // Reached the writers out of timestamp order: refused as a replay, never stored.
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    let id = "shared-1";
    let stored = scalar(
        &pool,
        "SELECT COUNT(*) FROM heartbeats WHERE server_id = $1",
        id,
    )
    .await;
    assert_eq!(stored, accepted, "one stored heartbeat per acceptance");
    // Every event (heartbeat or folded rejection) has its own sequence number, 1..=event_seq:
    // no update was lost and no event was folded twice.
    let event_seq = scalar(
        &pool,
        "SELECT event_seq FROM servers WHERE server_id = $1",
        id,
    )
    .await;
    let distinct = scalar(
        &pool,
        "SELECT COUNT(DISTINCT seq) FROM (SELECT seq FROM heartbeats WHERE server_id = $1 \
         UNION ALL SELECT seq FROM rejections WHERE claimed_server_id = $1 AND seq IS NOT NULL) e",
        id,
    )
    .await;
    let all = scalar(
        &pool,
        "SELECT COUNT(*) FROM (SELECT seq FROM heartbeats WHERE server_id = $1 \
         UNION ALL SELECT seq FROM rejections WHERE claimed_server_id = $1 AND seq IS NOT NULL) e",
        id,
    )
    .await;
    assert_eq!((distinct, all), (event_seq, event_seq));
    // The snapshot is the fold of the latest accepted heartbeat.
    let last_sent = scalar(
        &pool,
        "SELECT MAX(sent_at_ms) FROM heartbeats WHERE server_id = $1",
        id,
    )
    .await;
    assert_eq!(
        scalar(
            &pool,
            "SELECT last_sent_at_ms FROM servers WHERE server_id = $1",
            id
        )
        .await,
        last_sent
    );
    let (a, b) = &*hosts;
    assert_eq!(a.server(id).await, b.server(id).await);
    // Both hosts keep folding on the same snapshot afterwards.
    for host in [a, b] {
        let (status, answer) = host.heartbeat(&agent.heartbeat(json!({}))).await;
        assert_eq!(status, 202, "{answer}");
    }
    assert_eq!(
        scalar(
            &pool,
            "SELECT event_seq FROM servers WHERE server_id = $1",
            id
        )
        .await,
        event_seq + 2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_produces_exactly_one_offline_transition_across_two_hosts() {
    let Some((a, b, pool)) = two_hosts("silent", "").await else {
        return;
    };
    let agent = Agent::new("silent-1");
    a.register(&agent).await;
    // B folds one heartbeat, then A the next: both hosts now hold a deadline for the server
    // (B's stale one makes it re-read the row and take A's), so both wake at the same moment.
    let (status, answer) = until_known(&b, &agent).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = a
        .heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = b
        .heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = a
        .heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(status, 202, "{answer}");

    let offline_now = "SELECT COUNT(*) FROM servers WHERE server_id = $1 AND status = 'offline'";
    let offline_count = async || scalar(&pool, offline_now, "silent-1").await;
    let every = Duration::from_millis(100);
    let flipped = wait_until(Duration::from_secs(10), every, offline_count, |n| *n == 1)
        .await
        .is_ok();
    assert!(flipped, "the stored status flipped to offline");
    // Give a second firing every chance to happen before counting.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let offline = scalar(
        &pool,
        "SELECT COUNT(*) FROM status_transitions WHERE server_id = $1 AND to_status = 'offline'",
        "silent-1",
    )
    .await;
    assert_eq!(offline, 1, "exactly one offline transition");
    assert_eq!(a.server("silent-1").await, b.server("silent-1").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verification_on_one_host_is_enforced_by_the_other_within_a_second() {
    let config = "[trust]\nrequire_verified = true";
    let Some((a, b, _pool)) = two_hosts("verify", config).await else {
        return;
    };
    let agent = Agent::new("verify-1");
    a.register(&agent).await;
    let (status, answer) = until_known(&b, &agent).await;
    assert_eq!(
        status, 403,
        "B knows the server and refuses it unverified: {answer}"
    );
    assert_eq!(answer["code"], "server_unverified");

    let (status, answer) = a
        .post("/v1/admin/servers/verify-1/verify", &json!({}), true)
        .await;
    assert_eq!(status, 200, "{answer}");
    let accepted = accepted_within_a_second(&b, &agent).await;
    assert!(
        accepted,
        "B accepts the server within 1 s of its verification on A"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_under_load_loses_no_acknowledged_heartbeat_and_leaves_no_lock() {
    let Some((mut a, b, pool)) = two_hosts("killed", "").await else {
        return;
    };
    let agents: Vec<_> = (0..8)
        .map(|i| std::sync::Arc::new(Agent::new(&format!("killed-{i}"))))
        .collect();
    for agent in &agents {
        a.register(agent).await;
    }
    // Senders hammer A; A is killed (SIGKILL) in the middle of it.
    let mut tasks = Vec::new();
    for agent in &agents {
        let (agent, client, base) = (agent.clone(), a.client.clone(), a.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for _ in 0..400 {
                let body = agent.heartbeat(json!({}));
                let sent = client
                    .post(format!("{base}/v1/agent/heartbeat"))
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().as_u16() == 202 => {
                        acknowledged.push(body["signature"].as_str().unwrap_or("").to_owned());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.serve.kill();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("task"));
    }
    assert!(
        !acknowledged.is_empty(),
        "A acknowledged heartbeats before it died"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM heartbeats WHERE signature = ANY($1)")
            .bind(&acknowledged)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored, acknowledged.len() as i64, "every 202 is stored");
    // B folds on top of whatever A committed, without waiting for any lock A held.
    for agent in &agents {
        let (status, answer) = until_known(&b, agent).await;
        assert_eq!(status, 202, "{answer}");
        let id = agent.server_id.as_str();
        let event_seq = scalar(
            &pool,
            "SELECT event_seq FROM servers WHERE server_id = $1",
            id,
        )
        .await;
        let distinct = scalar(
            &pool,
            "SELECT COUNT(DISTINCT seq) FROM heartbeats WHERE server_id = $1",
            id,
        )
        .await;
        assert_eq!(
            distinct, event_seq,
            "{id}: one heartbeat per sequence number"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_activated_on_one_host_is_live_on_the_other_within_a_second() {
    let Some((a, b, pool)) = two_hosts("activation", "").await else {
        return;
    };
    let agent = Agent::new("swap-1");
    a.register(&agent).await;
    let (status, _) = until_known(&b, &agent).await;
    assert_eq!(status, 202);

    let bytes = vigil_tests::default_policy_version("9.8.7");
    let digest = vigil::policy::digest_of(&bytes);
    let response = a
        .client
        .post(format!("{}/v1/admin/policies?activate=true", a.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(bytes)
        .send()
        .await
        .expect("A answers");
    assert!(response.status().is_success(), "{}", response.status());
    let listing = async || -> Value {
        b.client
            .get(format!("{}/v1/policies", b.url))
            .send()
            .await
            .expect("B answers")
            .json()
            .await
            .expect("json")
    };
    let every = Duration::from_millis(10);
    let active_on_b = wait_until(WITHIN, every, listing, |listing| {
        listing["active"]["digest"] == digest.as_str()
    })
    .await
    .ok();
    assert!(
        active_on_b.is_some(),
        "B runs the version activated on A within 1 s"
    );
    // B folds with it, and the activation is recorded once (by A), not once per host.
    let (status, answer) = b.heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(status, 202, "{answer}");
    let folded_by = sqlx::query_scalar::<_, String>(
        "SELECT policy_digest FROM heartbeats WHERE server_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind("swap-1")
    .fetch_one(&pool)
    .await
    .expect("the heartbeat");
    assert_eq!(folded_by, digest);
    let recorded = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM policy_activations WHERE to_digest = $1",
    )
    .bind(&digest)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(recorded, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotated_on_one_host_is_enforced_by_the_other_within_a_second() {
    let Some((a, b, _pool)) = two_hosts("rotation", "").await else {
        return;
    };
    let old = Agent::new("rot-shared");
    a.register(&old).await;
    let (status, _) = until_known(&b, &old).await;
    assert_eq!(status, 202);
    let new = Agent::with_key(
        "rot-shared",
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        2,
    );
    let (status, answer) = a
        .post(
            "/v1/admin/servers/rot-shared/keys",
            &json!({"public_key": new.public_key_b64()}),
            true,
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let enforced = accepted_within_a_second(&b, &new).await;
    assert!(
        enforced,
        "B accepts the new key within 1 s of the rotation on A"
    );
    let (status, answer) = b.heartbeat(&old.heartbeat(json!({}))).await;
    assert_eq!(status, 409, "B refuses the old key: {answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_queued_on_one_host_is_delivered_through_the_other_until_answered() {
    let Some((a, b, _pool)) = two_hosts("commands", "").await else {
        return;
    };
    let agent = Agent::new("cmd-shared");
    a.register(&agent).await;
    let (status, _) = until_known(&b, &agent).await;
    assert_eq!(status, 202);
    let (status, queued) = a
        .post(
            "/v1/admin/servers/cmd-shared/commands",
            &json!({"command": "restart", "args": {}, "ttl_seconds": 600}),
            true,
        )
        .await;
    assert_eq!(status, 201, "{queued}");
    let pending = async || {
        let (status, answer) = b.heartbeat(&agent.heartbeat(json!({}))).await;
        assert_eq!(status, 202, "{answer}");
        answer["pending_commands"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let every = Duration::from_millis(100);
    let delivered = wait_until(Duration::from_secs(10), every, pending, |p| !p.is_empty())
        .await
        .unwrap_or_else(|_| {
            panic!("B delivers the command queued on A (pending commands are re-read every second)")
        });
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["command_id"], queued["command_id"]);
    // At least once: until the agent's signed result (sent to A), both keep offering it.
    let command_id = queued["command_id"].as_str().expect("an id");
    let (_, again) = a.heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(
        again["pending_commands"][0]["command_id"], command_id,
        "{again}"
    );
    let mut result = serde_json::Map::new();
    result.insert("command_id".into(), json!(command_id));
    result.insert("server_id".into(), json!("cmd-shared"));
    result.insert("key_version".into(), json!(1));
    result.insert(
        "timestamp".into(),
        json!(vigil::clock::format_rfc3339_ms(vigil_tests::now_ms())),
    );
    result.insert("status".into(), json!("ok"));
    let signature =
        vigil::commands::sign(vigil::commands::RESULT_PREFIX, &agent.key, &result).expect("signs");
    result.insert("signature".into(), json!(signature));
    let (status, recorded) = a
        .post(
            &format!("/v1/agent/commands/{command_id}/result"),
            &Value::Object(result),
            false,
        )
        .await;
    assert_eq!(status, 200, "{recorded}");
    // Answered: neither host hands it out again.
    for host in [&a, &b] {
        let (_, answer) = host.heartbeat(&agent.heartbeat(json!({}))).await;
        assert!(
            answer["pending_commands"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{answer}"
        );
    }
}
