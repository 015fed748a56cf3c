//! Agents and jobs through the real binary: key files in every accepted form, the host's
//! suggested interval, `vigil run` and `vigil agent` against a real `vigil serve`.

use vigil_tests::{Cli, ServeProcess};

/// A served host on SQLite in `dir` with admin token `agents-token-0123456789abcdef012345`.
fn serve(vigil: &Cli) -> ServeProcess {
    ServeProcess::start(
        vigil,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://agents.db\"\n",
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn pem_keys_from_keygen_and_openssl_sign_and_the_host_suggests_the_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token-0123456789abcdef012345");
    let written = vigil.ok(["keygen", "--out", "agent.pem", "--format", "pem"]);
    assert!(written.contains("fingerprint: SHA256:"), "{written}");
    let pem = std::fs::read_to_string(dir.path().join("agent.pem")).expect("written");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let mut keys = vec!["agent.pem"];
    let openssl = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(dir.path().join("openssl.pem"))
        .status();
    match openssl {
        Ok(status) if status.success() => keys.push("openssl.pem"),
        // The PKCS#8 form openssl writes is also checked byte for byte in the unit tests.
        _ => eprintln!("NOTICE: openssl is not installed; only keygen's PEM is tried here"),
    }

    let host = serve(&vigil);
    let url = host.url();
    for (i, key) in keys.iter().enumerate() {
        let id = format!("pem-{i}");
        vigil.ok(["server", "add", &id, "--key", key, "--url", &url]);
        let plain = json(&vigil.ok(["send", "--url", &url, "--server-id", &id, "--key", key]));
        assert_eq!(plain["accepted"], true, "{key}");
        // No declared interval: half the default policy's 5-minute grace.
        assert_eq!(plain["next_heartbeat_seconds"], 150, "{plain}");
        let daily = json(&vigil.ok([
            "send",
            "--url",
            &url,
            "--server-id",
            &id,
            "--key",
            key,
            "--interval-seconds",
            "86400",
        ]));
        // A daily job is asked once a day (its grace is two days, not one hour).
        assert_eq!(daily["next_heartbeat_seconds"], 86_400, "{daily}");
        assert_eq!(daily["status"], "online");
    }
    let garbage = dir.path().join("bad.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let refused = vigil.run([
        "send",
        "--url",
        &url,
        "--server-id",
        "pem-0",
        "--key",
        "bad.pem",
    ]);
    assert!(!refused.success());
    assert!(refused.stderr.contains("PKCS#8"), "{}", refused.stderr);
    host.stop();
}

/// `GET url/path` as JSON.
fn get(url: &str, path: &str) -> serde_json::Value {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            reqwest::get(format!("{url}{path}"))
                .await
                .expect("get")
                .json()
                .await
                .expect("json")
        })
}

/// The `run` members of a server's stored heartbeats, oldest first.
fn runs(url: &str, id: &str) -> Vec<serde_json::Value> {
    let mut runs: Vec<_> = get(url, &format!("/v1/servers/{id}/heartbeats"))["heartbeats"]
        .as_array()
        .expect("heartbeats")
        .iter()
        .map(|h| h["body"].clone())
        .collect();
    runs.reverse();
    runs
}

#[test]
fn vigil_run_reports_start_and_end_and_exits_with_the_commands_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token-0123456789abcdef012345");
    vigil.ok(["keygen", "--out", "agent.key"]);
    let host = serve(&vigil);
    let url = host.url();
    vigil.ok([
        "server",
        "add",
        "nightly",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]);
    let wrap = |command: &[&str]| {
        let mut args = vec!["run", "--url", &url, "--server-id", "nightly", "--"];
        args.extend_from_slice(command);
        vigil.run(args)
    };

    let failed = wrap(&["false"]);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(!failed.stderr.contains("warning"), "{}", failed.stderr);
    let noisy = wrap(&["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]);
    assert_eq!(noisy.status.code(), Some(3));
    assert_eq!(noisy.stdout, "to-stdout\n", "output passes through");
    assert!(noisy.stderr.contains("to-stderr"), "{}", noisy.stderr);
    let fine = wrap(&["true"]);
    assert_eq!(fine.status.code(), Some(0), "{}", fine.stderr);
    let missing = wrap(&["/no/such/command"]);
    assert_eq!(missing.status.code(), Some(127));

    let bodies = runs(&url, "nightly");
    let phases: Vec<_> = bodies
        .iter()
        .map(|b| b["run"]["phase"].as_str().expect("a run").to_owned())
        .collect();
    assert_eq!(
        phases,
        [
            "start", "fail", "start", "fail", "start", "success", "start", "fail"
        ]
    );
    assert_eq!(bodies[1]["run"]["exit_code"], 1);
    assert_eq!(bodies[1]["run"]["run_id"], bodies[0]["run"]["run_id"]);
    assert!(bodies[1]["run"]["duration_ms"].as_u64().is_some());
    assert_eq!(bodies[3]["run"]["exit_code"], 3);
    let tail = bodies[3]["payload"]["output_tail"][0]
        .as_str()
        .expect("tail");
    assert!(
        tail.contains("to-stdout") && tail.contains("to-stderr"),
        "{tail}"
    );
    assert_eq!(bodies[5]["run"]["exit_code"], 0);
    assert_eq!(bodies[7]["run"]["exit_code"], 127);
    host.stop();
    // Each failed run raised a job_failed alert (the default policy's `job-failed` signal);
    // the successful one none.
    let kinds = alert_kinds(dir.path(), "nightly");
    assert_eq!(
        kinds.iter().filter(|k| *k == "job_failed").count(),
        3,
        "{kinds:?}"
    );

    // The host is gone: the job still runs and its status still comes through, with a
    // warning per report (after a bounded number of tries).
    let offline = wrap(&["sh", "-c", "exit 7"]);
    assert_eq!(offline.status.code(), Some(7), "{}", offline.stderr);
    assert!(
        offline.stderr.contains("warning: the start report"),
        "{}",
        offline.stderr
    );
    assert!(
        offline.stderr.contains("warning: the fail report"),
        "{}",
        offline.stderr
    );
    let ok_offline = wrap(&["true"]);
    assert_eq!(ok_offline.status.code(), Some(0));
}

/// `vigil run --ping-url`: the Healthchecks protocol (as runitor speaks it) against the host's
/// `[compat.healthchecks]` routes, with a minted ping token and no key: `/start`, then
/// `/<exit status>` with the output tail as the body; the wrapper still exits with the
/// command's status, and a failure raises `job_failed`.
#[test]
fn vigil_run_pings_a_healthchecks_url_without_a_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token-0123456789abcdef012345");
    vigil.ok(["keygen", "--out", "agent.key"]);
    let host = ServeProcess::start(
        &vigil,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://agents.db\"\n\
         [compat.healthchecks]\nenabled = true\n",
    );
    let url = host.url();
    vigil.ok([
        "server",
        "add",
        "backup",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]);
    let minted = json(&vigil.ok([
        "server", "token", "add", "backup", "--kind", "ping", "--url", &url,
    ]));
    let ping_url = format!("{url}/ping/{}", minted["token"].as_str().expect("token"));
    // No key file is read: the ping URL is the credential.
    std::fs::remove_file(dir.path().join("agent.key")).expect("remove key");

    let failed = vigil.run([
        "run",
        "--ping-url",
        &ping_url,
        "--",
        "sh",
        "-c",
        "echo disk full; exit 4",
    ]);
    assert_eq!(failed.status.code(), Some(4), "{}", failed.stderr);
    assert!(!failed.stderr.contains("warning"), "{}", failed.stderr);
    let fine = vigil.run(["run", "--ping-url", &ping_url, "--", "true"]);
    assert_eq!(fine.status.code(), Some(0), "{}", fine.stderr);

    let bodies = runs(&url, "backup");
    let phases: Vec<_> = bodies
        .iter()
        .map(|b| b["run"]["phase"].as_str().expect("a run").to_owned())
        .collect();
    assert_eq!(phases, ["start", "fail", "start", "success"]);
    assert_eq!(bodies[1]["run"]["exit_code"], 4);
    assert_eq!(bodies[1]["run"]["run_id"], bodies[0]["run"]["run_id"]);
    assert_ne!(bodies[1]["run"]["run_id"], bodies[3]["run"]["run_id"]);
    assert_eq!(bodies[3]["run"]["exit_code"], 0);
    host.stop();
    let originals = original_bodies(dir.path(), "backup");
    assert_eq!(originals, ["", "disk full\n", "", ""]);
    assert_eq!(alert_kinds(dir.path(), "backup"), ["job_failed"]);

    // The host gone: the job's status still comes through, the warning hides the token.
    let offline = vigil.run(["run", "--ping-url", &ping_url, "--", "sh", "-c", "exit 9"]);
    assert_eq!(offline.status.code(), Some(9), "{}", offline.stderr);
    assert!(
        offline
            .stderr
            .contains("warning: the fail report did not reach http://127.0.0.1:"),
        "{}",
        offline.stderr
    );
    let token = minted["token"].as_str().expect("token");
    assert!(!offline.stderr.contains(token), "{}", offline.stderr);
}

/// What each of `id`'s stored heartbeats' clients sent (the compat routes keep it), oldest first.
fn original_bodies(dir: &std::path::Path, id: &str) -> Vec<String> {
    texts_of(
        dir,
        "SELECT COALESCE(original_body, '') FROM heartbeats WHERE server_id = ? ORDER BY seq",
        id,
    )
}

/// The kinds of the alerts raised for `id`, oldest first, from the host's SQLite file.
fn alert_kinds(dir: &std::path::Path, id: &str) -> Vec<String> {
    texts_of(
        dir,
        "SELECT kind FROM alert_outbox WHERE server_id = ? ORDER BY id",
        id,
    )
}

/// One text column of `sql` (with `id` bound) over the host's SQLite file in `dir`.
fn texts_of(dir: &std::path::Path, sql: &'static str, id: &str) -> Vec<String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("agents.db").display());
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
            sqlx::query_scalar(sql)
                .bind(id)
                .fetch_all(&mut db)
                .await
                .expect("reads")
        })
}

/// A scheduled job through the real binary and clock: `vigil server schedule` (a 1 s period,
/// 1 s of grace, runs of at most 1 s), then `vigil run` around a command that takes longer
/// than its longest run. The run is overdue one second after its start (`run_overdue`), and
/// the server goes offline exactly at the close of its first unfilled slot (period + grace
/// after the report that filled the last one). Cron slots, a weekly period and DST are
/// covered on a paused clock by the default policy's vectors and unit tests.
#[test]
fn a_scheduled_job_is_overdue_then_offline_at_its_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token-0123456789abcdef012345");
    vigil.ok(["keygen", "--out", "agent.key"]);
    let host = serve(&vigil);
    let url = host.url();
    vigil.ok(["server", "add", "job", "--key", "agent.key", "--url", &url]);
    vigil.ok([
        "server",
        "schedule",
        "job",
        "--period",
        "1s",
        "--grace",
        "1s",
        "--max-run",
        "1s",
        "--url",
        &url,
    ]);
    let slow = vigil.run([
        "run",
        "--url",
        &url,
        "--server-id",
        "job",
        "--",
        "sleep",
        "1.3",
    ]);
    assert_eq!(slow.status.code(), Some(0), "{}", slow.stderr);
    let offline = wait_for(|| {
        let server = get(&url, "/v1/servers/job");
        (server["effective_status"] == "offline").then_some(server)
    });
    let transitions = get(&url, "/v1/servers/job/transitions");
    let to_offline: Vec<_> = transitions["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter(|t| t["to_status"] == "offline")
        .cloned()
        .collect();
    assert_eq!(to_offline.len(), 1, "{transitions}");
    let last_seen = offline["last_seen_at"]
        .as_str()
        .and_then(vigil::clock::parse_rfc3339_ms);
    let flipped_at = to_offline[0]["at_ms"].as_i64();
    // The success report filled its slot: the next one is a period later, late a grace after.
    assert_eq!(flipped_at.zip(last_seen).map(|(f, s)| f - s), Some(2_000));
    host.stop();
    let kinds = alert_kinds(dir.path(), "job");
    assert_eq!(
        kinds,
        ["run_overdue", "server_offline", "confidence_red"],
        "{kinds:?}"
    );
}

/// Polls `probe` every 50 ms until it answers (10 s at most).
fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(std::time::Instant::now() < until, "timed out");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A `vigil agent` child; SIGKILLed when dropped if still running (a failed test).
struct AgentProcess(std::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// While the host is down the agent backs off (jittered, doubling from 100 ms to the 1 s cap
/// here) instead of storming it, and resumes beating as soon as the host is back on its
/// address. "Down" is a listener that takes each connection and closes it at once, counting
/// them: every try of the agent is one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_backs_off_while_the_host_is_down_and_resumes_when_it_returns() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token-0123456789abcdef012345");
    vigil.ok(["keygen", "--out", "agent.key"]);
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://agents.db\"\n";
    let host = ServeProcess::start(&vigil, config);
    let address = host.address();
    let url = host.url();
    vigil.ok([
        "server",
        "add",
        "box-2",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]);
    host.stop();

    let down = std::net::TcpListener::bind(address).expect("the host's address is free again");
    let tries = std::sync::Arc::new(AtomicUsize::new(0));
    let closing = std::sync::Arc::new(AtomicBool::new(false));
    let counter = {
        let (tries, closing) = (tries.clone(), closing.clone());
        std::thread::spawn(move || {
            for connection in down.incoming() {
                if closing.load(Ordering::SeqCst) {
                    break;
                }
                drop(connection);
                tries.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "url = \"{url}\"\nserver_id = \"box-2\"\ninterval_seconds = 1\n\
             backoff_initial_ms = 100\nbackoff_max_seconds = 1\n"
        ),
    )
    .expect("agent config");
    let _agent = AgentProcess(
        vigil
            .command(["agent", "--config", "agent.toml"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agent starts"),
    );
    // 3 s of a dead host: a try, then waits of 50–100, 100–200, 200–400, 400–800 ms and
    // 0.5–1 s: about 6 to 9 tries. A retry loop without backoff would make thousands.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let during = tries.load(Ordering::SeqCst);
    assert!((3..=12).contains(&during), "{during} tries in 3 s");

    closing.store(true, Ordering::SeqCst);
    let _ = std::net::TcpStream::connect(address);
    counter.join().expect("counter thread");
    let host = ServeProcess::start_on(&vigil, config, &address.to_string());
    let beats = heartbeats_until(&url, "box-2", |b| !b.is_empty()).await;
    assert_eq!(beats[0]["status"], "online");
    host.stop();
}

/// Newest-first stored heartbeat bodies of `id` once `done` holds for them (30 s at most).
async fn heartbeats_until(
    url: &str,
    id: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    let probe = async || -> Vec<serde_json::Value> {
        let answer: serde_json::Value = match client
            .get(format!("{url}/v1/servers/{id}/heartbeats?limit=500"))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        answer["heartbeats"]
            .as_array()
            .map(|list| list.iter().map(|h| h["body"].clone()).collect())
            .unwrap_or_default()
    };
    vigil_tests::wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        probe,
        |bodies| done(bodies),
    )
    .await
    .unwrap_or_else(|last| panic!("not reached; last heartbeats: {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_beats_with_metrics_runs_allowed_commands_rotates_and_says_goodbye() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token-0123456789abcdef012345");
    vigil.ok(["keygen", "--out", "agent.key"]);
    vigil.ok(["keygen", "--out", "next.key", "--format", "pem"]);
    let host = serve(&vigil);
    let url = host.url();
    vigil.ok([
        "server",
        "add",
        "box-1",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]);
    std::fs::write(
        dir.path().join("game.json"),
        r#"{"players_current": 3, "players_capacity": 10, "map_name": "Isle", "tickrate": 64}"#,
    )
    .expect("game file");
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "url = \"{url}\"\nserver_id = \"box-1\"\ninterval_seconds = 1\n\
             [game]\nfile = \"game.json\"\n\
             [commands]\nhello = [\"sh\", \"-c\", \"echo hello from the agent\"]\n"
        ),
    )
    .expect("agent config");
    let mut agent = AgentProcess(
        vigil
            .command(["agent", "--config", "agent.toml"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agent starts"),
    );

    let beats = heartbeats_until(&url, "box-1", |b| !b.is_empty()).await;
    let beat = &beats[0];
    for metric in [
        "cpu_percent",
        "memory_percent",
        "memory_total_mb",
        "memory_used_mb",
        "disk_percent",
        "network_rx_bytes",
        "load_1m",
        "uptime_seconds",
        "tickrate",
    ] {
        assert!(beat["metrics"][metric].is_number(), "{metric}: {beat}");
    }
    for member in ["distribution", "version", "kernel", "architecture"] {
        assert!(beat["os_info"][member].is_string(), "{member}: {beat}");
    }
    assert_eq!(beat["players_current"], 3);
    assert_eq!(beat["map_name"], "Isle");
    assert_eq!(beat["status"], "online");

    // One command in the allow-list, one not: both answered, signed, and stored.
    vigil.ok(["server", "command", "box-1", "hello", "--url", &url]);
    vigil.ok(["server", "command", "box-1", "format-disk", "--url", &url]);
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("agents.db").display()
    ))
    .await
    .expect("the host's database");
    let results = vigil_tests::wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        async || -> Vec<(String, String, String)> {
            sqlx::query_as(
                "SELECT command, result_status, result_body FROM commands \
                 WHERE result_status IS NOT NULL ORDER BY command",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default()
        },
        |rows| rows.len() == 2,
    )
    .await
    .expect("both results recorded");
    assert_eq!(results[0].0, "format-disk");
    assert_eq!(results[0].1, "refused");
    assert_eq!(results[1].0, "hello");
    assert_eq!(results[1].1, "ok");
    assert!(
        results[1].2.contains("hello from the agent"),
        "{}",
        results[1].2
    );

    // Rotation mid-run: the agent's next beats use key version 2 and are accepted.
    let rotated = vigil.ok([
        "agent",
        "rotate",
        "--config",
        "agent.toml",
        "--next-key",
        "next.key",
    ]);
    assert!(rotated.contains("\"key_version\": 2"), "{rotated}");
    heartbeats_until(&url, "box-1", |b| b[0]["key_version"] == 2).await;

    // SIGTERM: a signed goodbye claiming offline, exit 0.
    let pid = agent.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = agent.0.wait().expect("agent exits");
    assert!(status.success(), "{status}");
    let beats = heartbeats_until(&url, "box-1", |b| b[0]["status"] == "offline").await;
    assert_eq!(beats[0]["key_version"], 2);
    let server: serde_json::Value = reqwest::get(format!("{url}/v1/servers/box-1"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(server["effective_status"], "offline", "{server}");
    host.stop();
}
