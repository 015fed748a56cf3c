//! The configuration as a daemon's: `vigil config check` (golden outputs for three bad files),
//! `vigil config show` (environment applied, secrets redacted), SIGHUP reloads.

use std::time::Duration;

use vigil_tests::{Cli, ServeProcess, wait_until, workspace_root};

#[test]
fn config_check_prints_line_and_column_and_exits_1_for_each_bad_file() {
    let fixtures = workspace_root().join("tests/fixtures/config-check");
    let cli = Cli::in_dir(&fixtures);
    for name in ["syntax", "unknown_key", "invalid_value"] {
        let run = cli.run(["config", "check", &format!("{name}.toml")]);
        assert_eq!(run.status.code(), Some(1), "{name}: {run:?}");
        let golden =
            std::fs::read_to_string(fixtures.join(format!("{name}.out"))).expect("golden output");
        assert_eq!(run.stdout, golden, "{name}");
    }
    let run = cli.run(["config", "check", "syntax.toml", "invalid_value.toml"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);

    let root = Cli::in_dir(&workspace_root());
    let run = root.run(["config", "check", "vigil.example.toml"]);
    assert!(run.success(), "{run:?}");
    assert_eq!(run.stdout, "ok: 1 file(s) valid\n");
}

#[test]
fn config_show_applies_the_environment_and_redacts_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("vigil.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\n[[alerts.sinks]]\nname = \"pd\"\nkind = \"pagerduty\"\ntoken = \"pd-routing-key\"\n",
    )
    .expect("config");
    let run = Cli::in_dir(dir.path())
        .env("VIGIL_SERVER__LISTEN", "0.0.0.0:9999")
        .env(
            "VIGIL_ADMIN_TOKEN",
            "admin-secret-0123456789abcdef0123456789",
        )
        .env(
            "VIGIL_STORAGE__URL",
            "postgres://vigil:db-password@db/vigil",
        )
        .run(["config", "show", "--config", "vigil.toml"]);
    assert!(run.success(), "{run:?}");
    let shown: toml::Table = run.stdout.parse().expect("show prints TOML");
    assert_eq!(shown["server"]["listen"].as_str(), Some("0.0.0.0:9999"));
    assert_eq!(shown["admin"]["token"].as_str(), Some("<redacted>"));
    assert_eq!(
        shown["storage"]["url"].as_str(),
        Some("postgres://vigil:<redacted>@db/vigil")
    );
    assert_eq!(
        shown["alerts"]["sinks"][0]["token"].as_str(),
        Some("<redacted>")
    );
    for secret in ["admin-secret-0123456789", "db-password", "pd-routing-key"] {
        assert!(
            !run.stdout.contains(secret),
            "{secret} leaked: {}",
            run.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_file_and_the_host_keeps_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = Cli::in_dir(dir.path());
    let mut serve = ServeProcess::start(&cli, "[storage]\nurl = \"sqlite://vigil.db\"\n");
    serve.signal("HUP");
    let log = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || serve.log(),
        |log| log.iter().any(|l| l.contains("config reloaded")),
    )
    .await
    .unwrap_or_else(|log| panic!("no reload after SIGHUP: {log:?}"));
    assert!(log.iter().any(|l| l.contains("SIGHUP")), "{log:?}");
    assert!(serve.running(), "SIGHUP must not end the host");
    let health = reqwest::get(format!("{}/healthz", serve.url()))
        .await
        .expect("answers");
    assert!(health.status().is_success());

    // A broken file on SIGHUP is refused, the host keeps running, and the metric says so.
    let reload_ok = async || {
        let text = reqwest::get(format!("{}/metrics", serve.url()))
            .await
            .expect("answers")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix("vigil_config_last_reload_successful "))
            .map(str::to_owned)
    };
    assert_eq!(reload_ok().await.as_deref(), Some("1"));
    std::fs::write(dir.path().join("vigil.toml"), "[storage\nurl = 1\n").expect("write");
    serve.signal("HUP");
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        reload_ok,
        |v| v.as_deref() == Some("0"),
    )
    .await
    .unwrap_or_else(|v| panic!("the refused reload is not in the metric: {v:?}"));
    assert!(serve.running(), "a refused reload must not end the host");
    serve.stop();
}

#[test]
fn completions_and_the_man_page_generate() {
    let cli = Cli::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef vigil"),
        ("fish", "complete -c vigil"),
    ] {
        let out = cli.ok(["completions", shell]);
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("serve") && out.contains("config"), "{shell}");
    }
    let man = cli.ok(["man"]);
    assert!(man.contains(".TH vigil 1"), "{man}");
    assert!(
        man.contains("Exit codes"),
        "the exit codes are in the man page"
    );
    let help = cli.ok(["--help"]);
    assert!(help.contains("Exit codes:"), "{help}");
}
